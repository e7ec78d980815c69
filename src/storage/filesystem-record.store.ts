import { readdir, unlink } from 'node:fs/promises';
import { isUploadId } from '../core/upload-id.js';
import { join } from 'node:path';
import { UploadRecord } from '../core/upload-record.js';
import { readSmallFile, sweepTempFiles, writeFileAtomic } from './durable-file.js';
import { isRefusedFile, quarantineFile, warnToConsole } from './safe-file.js';
import type { UploadRecordStore } from './storage.interfaces.js';

export interface FilesystemRecordStoreOptions {
  /** Mode of the record files created (the umask applies). @default 0o600 */
  fileMode?: number;
  /**
   * Where each record refused as unsafe (a symlink, FIFO, directory or hard link planted under
   * its name, moved aside) is reported, one line each. @default console.warn
   */
  log?: (message: string) => void;
}

/**
 * Records as `{directory}/{id}.meta` JSON files, replaced atomically on every update. A record
 * is only read from a regular file with one link that parses as a record: anything else under
 * its name is moved aside (one log line) and the upload has no record.
 */
export class FilesystemRecordStore implements UploadRecordStore {
  private readonly fileMode: number;
  private readonly log: (message: string) => void;

  constructor(
    readonly directory: string,
    private readonly fsync = true,
    options: FilesystemRecordStoreOptions = {},
  ) {
    this.fileMode = options.fileMode ?? 0o600;
    this.log = options.log ?? warnToConsole;
  }

  pathOf(id: string): string {
    return join(this.directory, `${id}.meta`);
  }

  async get(id: string): Promise<UploadRecord | null> {
    let text: string;
    const path = this.pathOf(id);
    try {
      text = await readSmallFile(path);
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code === 'ENOENT') return null;
      if (!isRefusedFile(e)) throw e;
      await quarantineFile(path, e, this.log);
      return null;
    }
    try {
      return UploadRecord.fromJSON(JSON.parse(text));
    } catch (e) {
      if (!(e instanceof SyntaxError)) throw e;
      // Records are replaced atomically, so this is no torn write: damage from outside. Moved
      // aside for inspection (one log line); the upload has no record (404), and the janitor
      // takes its data as an orphan.
      await quarantineFile(path, 'unreadable', this.log, `not an upload record (${e.message})`);
      return null;
    }
  }

  async put(id: string, record: UploadRecord): Promise<void> {
    await writeFileAtomic(this.pathOf(id), JSON.stringify(record), this.fsync, {
      mode: this.fileMode,
      log: this.log,
    });
  }

  async remove(id: string): Promise<void> {
    await unlink(this.pathOf(id)).catch((e: NodeJS.ErrnoException) => {
      if (e.code !== 'ENOENT') throw e;
    });
  }

  async list(): Promise<string[]> {
    const names = await readdir(this.directory);
    return names
      .filter((n) => n.endsWith('.meta') && isUploadId(n.slice(0, -5)))
      .map((n) => n.slice(0, -5));
  }

  sweep(ageMs: number): Promise<number> {
    return sweepTempFiles(this.directory, ageMs);
  }
}

import { readdir, unlink } from 'node:fs/promises';
import { isUploadId } from '../core/upload-id.js';
import { join } from 'node:path';
import { UploadRecord } from '../core/upload-record.js';
import { readSmallFile, sweepTempFiles, updateInPlace, writeFileAtomic } from './durable-file.js';
import { isRefusedFile, quarantineFile, warnToConsole } from './safe-file.js';
import {
  asciiJson,
  decodeRecordFile,
  encodeRecordFile,
  encodeSlot,
  slotPrefix,
  type SlotState,
} from '../core/slotted-record.js';
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

/** Reads of a record that holds no valid slot before it is taken for damaged. */
const READ_ATTEMPTS = 3;

/**
 * Records as `{directory}/{id}.meta` files of two slots (see `src/core/slotted-record.ts`): created
 * atomically (temp file and rename), then updated in place, one slot at a time, so an update is
 * one write and no file creation. A record is only read from a regular file with one link that
 * holds a valid slot (or, written by an earlier version, a plain JSON record): anything else
 * under its name is moved aside (one log line) and the upload has no record.
 */
export class FilesystemRecordStore implements UploadRecordStore {
  private readonly fileMode: number;
  private readonly log: (message: string) => void;
  /**
   * The slots of each record object as last read or written here. Records are updated under
   * the upload's lock, by the request that read them under it: the slot to write next is the
   * other one, with the next number. A record object without (new, or read from elsewhere) is
   * written as a new file.
   */
  private readonly slots = new WeakMap<UploadRecord, SlotState>();

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
    const path = this.pathOf(id);
    for (let attempt = 1; ; attempt++) {
      let text: string;
      try {
        text = await readSmallFile(path);
      } catch (e) {
        if ((e as NodeJS.ErrnoException).code === 'ENOENT') return null;
        if (!isRefusedFile(e)) throw e;
        await quarantineFile(path, e, this.log);
        return null;
      }
      const decoded = decodeRecordFile(text);
      try {
        if (!decoded) throw new SyntaxError('no valid slot');
        const record = UploadRecord.fromJSON(JSON.parse(decoded.json));
        if (decoded.state) this.slots.set(record, decoded.state);
        return record;
      } catch (e) {
        if (!(e instanceof SyntaxError)) throw e;
        // While one slot is written the other is whole, but a read without the lock may
        // overlap two updates (or read a large record in pieces): read again before calling
        // it damage.
        if (attempt < READ_ATTEMPTS) {
          await new Promise((resolve) => setTimeout(resolve, attempt * 5));
          continue;
        }
        // Damage from outside. Moved aside for inspection (one log line); the upload has no
        // record (404), and the janitor takes its data as an orphan.
        await quarantineFile(path, 'unreadable', this.log, `not an upload record (${e.message})`);
        return null;
      }
    }
  }

  async put(id: string, record: UploadRecord): Promise<void> {
    const json = asciiJson(record);
    const path = this.pathOf(id);
    const known = this.slots.get(record);
    const slot = known && encodeSlot(known.seq + 1, json, known.size);
    if (known && slot) {
      const next = known.slot === 0 ? 1 : 0;
      try {
        // Only over the file as it was read: the same size, its newest slot still the one
        // seen (not so after a lock lost to another replica, or a record rewritten anew).
        const written = await updateInPlace(path, next * known.size, slot, this.fsync, {
          size: 2 * known.size,
          at: known.slot * known.size,
          bytes: slotPrefix(known.seq),
        });
        if (written) {
          this.slots.set(record, { seq: known.seq + 1, slot: next, size: known.size });
          return;
        }
      } catch (e) {
        // Gone, or something planted under its name: replaced by a new file, as ever.
        if ((e as NodeJS.ErrnoException).code !== 'ENOENT' && !isRefusedFile(e)) throw e;
      }
    }
    // A new record, one read elsewhere, one grown past its slots or whose file changed: a new
    // file, replacing whatever is there (the last writer wins, as with every new file).
    const file = encodeRecordFile((known?.seq ?? 0) + 1, json);
    await writeFileAtomic(path, file.text, this.fsync, { mode: this.fileMode, log: this.log });
    this.slots.set(record, file.state);
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

import { readdir, stat, unlink } from 'node:fs/promises';
import { isUploadId } from '../protocol/headers.js';
import { join } from 'node:path';
import { UploadRecord } from '../protocol/upload-record.js';
import { TEMP_FILE, readSmallFile, writeFileAtomic } from './durable-file.js';
import type { UploadRecordStore } from './storage.interfaces.js';

/** Records as `{directory}/{id}.meta` JSON files, replaced atomically on every update. */
export class FilesystemRecordStore implements UploadRecordStore {
  constructor(
    readonly directory: string,
    private readonly fsync = true,
  ) {}

  pathOf(id: string): string {
    return join(this.directory, `${id}.meta`);
  }

  async get(id: string): Promise<UploadRecord | null> {
    let text: string;
    try {
      text = await readSmallFile(this.pathOf(id));
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code === 'ENOENT') return null;
      throw e;
    }
    return UploadRecord.fromJSON(JSON.parse(text));
  }

  async put(id: string, record: UploadRecord): Promise<void> {
    await writeFileAtomic(this.pathOf(id), JSON.stringify(record), this.fsync);
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

  async sweep(ageMs: number): Promise<number> {
    const now = Date.now();
    let removed = 0;
    for (const name of await readdir(this.directory)) {
      if (!TEMP_FILE.test(name)) continue;
      const path = join(this.directory, name);
      const info = await stat(path).catch(() => null);
      // A young temp file may be a record being written right now: never touch it.
      if (!info || now - info.mtimeMs < ageMs) continue;
      await unlink(path).catch(() => {});
      removed++;
    }
    return removed;
  }
}

import { constants } from 'node:buffer';
import { Readable } from 'node:stream';
import { UploadRecord } from '../core/upload-record.js';
import { KeyedMutex } from './keyed-mutex.js';
import type {
  BodySink,
  UploadLock,
  UploadLocker,
  UploadRecordStore,
  UploadStorage,
} from './storage.interfaces.js';

/**
 * Uploads held in memory, for tests and examples: the reference for how an `UploadStorage`
 * behaves, and proof that the protocol needs nothing from the filesystem.
 */
export class MemoryStorage implements UploadStorage {
  readonly files = new Map<string, Buffer>();
  private readonly changed = new Map<string, number>();

  async create(id: string, length: number | null): Promise<void> {
    if (this.files.has(id)) throw Object.assign(new Error(`${id} exists`), { code: 'EEXIST' });
    this.files.set(id, bufferOf(length ?? 0));
    this.changed.set(id, Date.now());
  }

  async openWrite(id: string, offset: number): Promise<BodySink> {
    let position = offset;
    return {
      write: async (chunks, bytes) => {
        const file = this.files.get(id);
        if (!file) throw Object.assign(new Error(`${id} is gone`), { code: 'ENOENT' });
        const grown = position + bytes > file.length ? bufferOf(position + bytes) : file;
        if (grown !== file) file.copy(grown);
        Buffer.concat(chunks, bytes).copy(grown, position);
        this.files.set(id, grown);
        this.changed.set(id, Date.now());
        position += bytes;
      },
      finish: async (written) => ({ bytes: written }),
    };
  }

  read(id: string, start: number, length: number): Readable {
    const file = this.files.get(id) ?? Buffer.alloc(0);
    return Readable.from([Buffer.from(file.subarray(start, start + length))]);
  }

  async allocate(id: string, length: number): Promise<void> {
    const file = this.files.get(id);
    if (file && file.length < length) {
      const grown = bufferOf(length);
      file.copy(grown);
      this.files.set(id, grown);
    }
  }

  async remove(id: string): Promise<void> {
    this.files.delete(id);
    this.changed.delete(id);
  }

  async list(): Promise<{ id: string; ageMs: number }[]> {
    const now = Date.now();
    return [...this.files.keys()].map((id) => ({ id, ageMs: now - (this.changed.get(id) ?? now) }));
  }
}

/** Records held in memory (as JSON, so a caller never shares an object with the store). */
export class MemoryRecordStore implements UploadRecordStore {
  readonly records = new Map<string, string>();

  async get(id: string): Promise<UploadRecord | null> {
    const json = this.records.get(id);
    return json === undefined ? null : UploadRecord.fromJSON(JSON.parse(json));
  }

  async put(id: string, record: UploadRecord): Promise<void> {
    this.records.set(id, JSON.stringify(record));
  }

  async remove(id: string): Promise<void> {
    this.records.delete(id);
  }

  async list(): Promise<string[]> {
    return [...this.records.keys()];
  }
}

/** Locks that hold within one process only. */
export class MemoryUploadLocker implements UploadLocker {
  private readonly mutex = new KeyedMutex();

  async acquire(id: string, waitMs: number): Promise<UploadLock> {
    const release = await this.mutex.acquire(id, waitMs);
    return { release: async () => release() };
  }
}

/**
 * A zeroed Buffer of `length` bytes. A length no Buffer can hold is refused as a file system
 * refuses a file too large (EFBIG): past the runtime's `MAX_LENGTH` (4 GiB on Node 20, 2^53 − 1
 * since Node 22) and also when the allocation itself fails (V8's own limit, or no memory left).
 */
function bufferOf(length: number): Buffer {
  const tooLarge = () => Object.assign(new Error('file too large for memory'), { code: 'EFBIG' });
  if (length > constants.MAX_LENGTH) throw tooLarge();
  try {
    return Buffer.alloc(length);
  } catch (e) {
    // By name: the allocation's RangeError may come from another realm (a VM context).
    if ((e as Error | undefined)?.name === 'RangeError')
      throw Object.assign(tooLarge(), { cause: e });
    throw e;
  }
}

import type { UploadRecord } from '../protocol/upload-record.js';
import type {
  UploadLock,
  UploadLocker,
  UploadRecordStore,
  UploadStorage,
} from './storage.interfaces.js';

/**
 * The uploads as one service: the bytes (`storage`), their records (`records`) and their locks
 * (`locker`). Injectable in Nest as `UploadStorageService`; the protocol handlers use only this.
 */
export class UploadStorageService {
  constructor(
    readonly storage: UploadStorage,
    readonly records: UploadRecordStore,
    readonly locker: UploadLocker,
  ) {}

  /** The record of an upload, or `null`. */
  getRecord(id: string): Promise<UploadRecord | null> {
    return this.records.get(id);
  }

  /** Creates an upload: reserves its bytes, then stores its record. On failure nothing is left. */
  async create(id: string, record: UploadRecord): Promise<void> {
    await this.storage.create(id, record.length);
    try {
      await this.records.put(id, record);
    } catch (e) {
      await this.storage.remove(id).catch(() => {});
      throw e;
    }
  }

  /** Runs `work` holding the upload's exclusive lock (waits up to `waitMs` for it). */
  async withLock<T>(
    id: string,
    waitMs: number,
    work: (lock: UploadLock) => Promise<T>,
  ): Promise<T> {
    const lock = await this.locker.acquire(id, waitMs);
    try {
      return await work(lock);
    } finally {
      await lock.release();
    }
  }

  /** Removes an upload's record, then its bytes. */
  async remove(id: string): Promise<void> {
    await this.records.remove(id);
    await this.storage.remove(id);
  }
}

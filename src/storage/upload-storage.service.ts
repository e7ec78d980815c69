import type { UploadRecord } from '../core/upload-record.js';
import type { SpaceAccounting } from './space-accounting.js';
import {
  LockTimeoutError,
  type UploadLock,
  type UploadLocker,
  type UploadRecordStore,
  type UploadStorage,
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
    /**
     * The promises of open uploads against the volume's free space (the filesystem default);
     * without it, a storage that runs out answers 507 when a write fails.
     */
    readonly space?: SpaceAccounting,
  ) {}

  /**
   * Promises `bytes` more to an upload (a deferred length declared): throws an ENOSPC error
   * (507) when they do not fit, EFBIG (413) when they never could.
   */
  async promise(bytes: number): Promise<void> {
    await this.space?.reserve(bytes);
  }

  /**
   * Gives back promised bytes: written (the record moved over them), or never coming (the
   * upload removed). A ledger that cannot be reached keeps them (too many promised until it is
   * rebuilt is safe; the request that stored the bytes is not failed for it).
   */
  async settle(bytes: number): Promise<void> {
    await this.space?.release(bytes).catch(() => {});
  }

  /** The bytes all open uploads may still bring, from their records (to rebuild the ledger). */
  async promisedByRecords(): Promise<number> {
    let total = 0;
    for (const id of await this.records.list()) {
      const record = await this.records.get(id).catch(() => null);
      if (record) total += record.promised;
    }
    return total;
  }

  /** Starts the space accounting: the ledger is rebuilt from the records if this is the first. */
  async start(): Promise<void> {
    await this.space?.join(() => this.promisedByRecords());
  }

  /** Stops the space accounting (after the last request). */
  async close(): Promise<void> {
    await this.space?.close();
    await this.storage.close?.();
  }

  /** The record of an upload, or `null`. */
  getRecord(id: string): Promise<UploadRecord | null> {
    return this.records.get(id);
  }

  /**
   * Creates an upload: promises its bytes (ENOSPC when they do not fit beside the other
   * promises), creates its data, then stores its record. On failure nothing is left.
   */
  async create(id: string, record: UploadRecord): Promise<void> {
    const promised = record.promised;
    await this.promise(promised);
    try {
      const state = await this.storage.create(id, record.length, record.metadata);
      if (state) record.storage = state;
      try {
        await this.records.put(id, record);
      } catch (e) {
        await this.storage.remove(id, record.storage).catch(() => {});
        throw e;
      }
    } catch (e) {
      await this.settle(promised);
      throw e;
    }
  }

  /** Runs `work` holding the upload's exclusive lock (waits up to `waitMs` for it). */
  /**
   * Told how long each lock a request waited for took to get (`acquired` false: it was not
   * free within the wait). Try-locks (a zero wait: the janitor, recovery) are not reported.
   */
  lockObserver?: (seconds: number, acquired: boolean) => void;

  async withLock<T>(
    id: string,
    waitMs: number,
    work: (lock: UploadLock) => Promise<T>,
  ): Promise<T> {
    const lock =
      this.lockObserver && waitMs > 0
        ? await this.observedAcquire(id, waitMs)
        : await this.locker.acquire(id, waitMs);
    try {
      return await work(lock);
    } finally {
      await lock.release();
    }
  }

  private async observedAcquire(id: string, waitMs: number): Promise<UploadLock> {
    const start = performance.now();
    const seconds = () => (performance.now() - start) / 1000;
    try {
      const lock = await this.locker.acquire(id, waitMs);
      this.lockObserver?.(seconds(), true);
      return lock;
    } catch (e) {
      if (e instanceof LockTimeoutError) this.lockObserver?.(seconds(), false);
      throw e;
    }
  }

  /** Removes an upload's record, then its bytes, then what was promised to it. */
  async remove(id: string, record?: UploadRecord | null): Promise<void> {
    const known = record === undefined ? await this.records.get(id).catch(() => null) : record;
    await this.records.remove(id);
    await this.storage.remove(id, known?.storage);
    if (known) await this.settle(known.promised);
  }
}

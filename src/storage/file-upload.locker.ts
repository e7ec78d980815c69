import { lockFile } from './file-lock.js';
import { KeyedMutex } from './keyed-mutex.js';
import type { UploadLock, UploadLocker } from './storage.interfaces.js';

/**
 * Per-upload locks that hold across every process of one host: an in-process queue first, then
 * an exclusive `flock` on the upload's data file (`pathOf(id)`), polled without blocking.
 */
export class FileUploadLocker implements UploadLocker {
  private readonly local = new KeyedMutex();

  constructor(private readonly pathOf: (id: string) => string) {}

  async acquire(id: string, waitMs: number): Promise<UploadLock> {
    const started = Date.now();
    const releaseLocal = await this.local.acquire(id, waitMs);
    try {
      const path = this.pathOf(id);
      const file = await lockFile(path, Math.max(0, waitMs - (Date.now() - started)));
      return {
        file: { path, fd: file.fd },
        release: async () => {
          try {
            await file.release();
          } finally {
            releaseLocal();
          }
        },
      };
    } catch (e) {
      releaseLocal();
      throw e;
    }
  }
}

import { lockFile } from './file-lock.js';
import { KeyedMutex } from './keyed-mutex.js';
import type { UploadLock, UploadLocker } from './storage.interfaces.js';

export interface FileUploadLockerOptions {
  /**
   * Where a data file refused as unsafe (a symlink, FIFO, directory or hard link planted in its
   * place, moved aside) is reported, one line each. @default console.warn
   */
  log?: (message: string) => void;
}

/**
 * Per-upload locks that hold across every process of one host: an in-process queue first, then
 * an exclusive `flock` on the upload's data file (`pathOf(id)`), polled without blocking. The
 * data file is opened only as a regular file with one link; anything else under its name is
 * moved aside and the upload reported missing (`LockTargetMissingError`).
 */
export class FileUploadLocker implements UploadLocker {
  private readonly local = new KeyedMutex();
  private readonly log: ((message: string) => void) | undefined;
  /** The descriptors of the files this process holds locked, by path. */
  private readonly held = new Map<string, number>();

  constructor(
    private readonly pathOf: (id: string) => string,
    options: FileUploadLockerOptions = {},
  ) {
    this.log = options.log;
  }

  /**
   * The read-write descriptor of `path` while this process holds its lock (the storage writes
   * through it), else `undefined`. The in-process queue makes the holder the only writer.
   */
  heldFile(path: string): number | undefined {
    return this.held.get(path);
  }

  async acquire(id: string, waitMs: number): Promise<UploadLock> {
    const started = Date.now();
    const releaseLocal = await this.local.acquire(id, waitMs);
    try {
      const path = this.pathOf(id);
      const wait = Math.max(0, waitMs - (Date.now() - started));
      const file = await lockFile(path, wait, undefined, undefined, this.log);
      this.held.set(path, file.fd);
      let detached = false;
      return {
        file: { path, fd: file.fd },
        detachFile: () => {
          detached = true;
          this.held.delete(path);
          return file.fd;
        },
        release: async () => {
          this.held.delete(path);
          try {
            if (!detached) await file.release();
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

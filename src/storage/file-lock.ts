import fsExt from 'fs-ext';
import { open, stat, type FileHandle } from 'node:fs/promises';
import { setTimeout as sleep } from 'node:timers/promises';
import { LockTargetMissingError, LockTimeoutError } from './storage.interfaces.js';

/** An exclusive `flock` on a file, held through an open handle. */
export interface FileLock {
  readonly handle: FileHandle;
  release(): Promise<void>;
}

const isBusy = (e: unknown) =>
  ['EWOULDBLOCK', 'EAGAIN'].includes((e as NodeJS.ErrnoException).code ?? '');
const isMissing = (e: unknown) => (e as NodeJS.ErrnoException).code === 'ENOENT';

/**
 * One non-blocking attempt at an exclusive `flock` on `path`: the lock, or `null` when another
 * holder has it. `LOCK_NB` keeps the attempt off the libuv threadpool (a blocking `flock` would
 * pin a pool thread for the whole wait and stall every fs call of the process).
 *
 * The lock is only returned if `path` still names the locked inode: a file renamed or unlinked
 * by the previous holder (finalize, delete) is reported as missing, never locked by mistake.
 */
export async function tryLockFile(path: string): Promise<FileLock | null> {
  let handle: FileHandle;
  try {
    handle = await open(path, 'r+');
  } catch (e) {
    if (isMissing(e)) throw new LockTargetMissingError(path);
    throw e;
  }
  try {
    fsExt.flockSync(handle.fd, 'exnb');
  } catch (e) {
    await handle.close();
    if (isBusy(e)) return null;
    throw e;
  }
  const lock: FileLock = {
    handle,
    release: async () => {
      // Closing the descriptor drops the flock; close only once.
      lock.release = async () => {};
      await handle.close();
    },
  };
  try {
    const [held, named] = await Promise.all([handle.stat(), stat(path)]);
    if (held.ino === named.ino && held.dev === named.dev) return lock;
  } catch (e) {
    if (!isMissing(e)) {
      await lock.release();
      throw e;
    }
  }
  await lock.release();
  throw new LockTargetMissingError(path);
}

/**
 * Waits up to `waitMs` for an exclusive lock on `path`, retrying non-blocking attempts with a
 * backoff from 2 ms to 100 ms (no threadpool thread is held while waiting).
 */
export async function lockFile(
  path: string,
  waitMs: number,
  signal?: AbortSignal,
): Promise<FileLock> {
  const deadline = Date.now() + waitMs;
  for (let delay = 2; ; delay = Math.min(delay * 2, 100)) {
    signal?.throwIfAborted();
    const lock = await tryLockFile(path);
    if (lock) return lock;
    const left = deadline - Date.now();
    if (left <= 0) throw new LockTimeoutError(`lock on ${path} not free within ${waitMs} ms`);
    await sleep(Math.min(delay, left), undefined, { signal });
  }
}

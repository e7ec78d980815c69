import fsExt from 'fs-ext';
import { setTimeout as sleep } from 'node:timers/promises';
import { fdCall } from './fd.js';
import { nativeAddon } from './native.js';
import { LockTargetMissingError, LockTimeoutError } from './storage.interfaces.js';

/** An exclusive `flock` on a file, held through an open read-write descriptor. */
export interface FileLock {
  /** The descriptor the lock is held through, open until `release()`. */
  readonly fd: number;
  release(): Promise<void>;
}

/**
 * One non-blocking attempt at the lock: the descriptor holding it, `'busy'` when another holder
 * has it, `'moved'` when `path` no longer names the inode locked. A missing file rejects with
 * ENOENT.
 */
export type LockAttempt = (path: string) => Promise<number | 'busy' | 'moved'>;

const isBusy = (e: unknown) =>
  ['EWOULDBLOCK', 'EAGAIN'].includes((e as NodeJS.ErrnoException).code ?? '');
const isMissing = (e: unknown) => (e as NodeJS.ErrnoException).code === 'ENOENT';

/** open, flock, fstat and stat as one threadpool job of the native addon. */
const nativeAttempt: LockAttempt | null = nativeAddon
  ? async (path) => {
      const fd = await nativeAddon!.lockFile(path);
      return fd === -1 ? 'busy' : fd === -2 ? 'moved' : fd;
    }
  : null;

/** The same with fs calls (three threadpool jobs); `flock` itself is synchronous. */
export const portableLockAttempt: LockAttempt = async (path) => {
  const fd = await fdCall.open(path, 'r+');
  try {
    fsExt.flockSync(fd, 'exnb');
  } catch (e) {
    await fdCall.close(fd);
    if (isBusy(e)) return 'busy';
    throw e;
  }
  try {
    const [held, named] = await Promise.all([fdCall.fstat(fd), fdCall.stat(path)]);
    if (held.ino === named.ino && held.dev === named.dev) return fd;
  } catch (e) {
    if (!isMissing(e)) {
      await fdCall.close(fd);
      throw e;
    }
  }
  await fdCall.close(fd);
  return 'moved';
};

/**
 * One non-blocking attempt at an exclusive `flock` on `path`: the lock, or `null` when another
 * holder has it. `LOCK_NB` keeps the attempt off the libuv threadpool (a blocking `flock` would
 * pin a pool thread for the whole wait and stall every fs call of the process).
 *
 * The lock is only returned if `path` still names the locked inode: a file renamed or unlinked
 * by the previous holder (finalize, delete) is reported as missing, never locked by mistake.
 */
export async function tryLockFile(
  path: string,
  attempt: LockAttempt = nativeAttempt ?? portableLockAttempt,
): Promise<FileLock | null> {
  let result: Awaited<ReturnType<LockAttempt>>;
  try {
    result = await attempt(path);
  } catch (e) {
    if (isMissing(e)) throw new LockTargetMissingError(path);
    throw e;
  }
  if (result === 'busy') return null;
  if (result === 'moved') throw new LockTargetMissingError(path);
  const fd = result;
  const lock: FileLock = {
    fd,
    release: async () => {
      // Closing the descriptor drops the flock; close only once.
      lock.release = async () => {};
      await fdCall.close(fd);
    },
  };
  return lock;
}

/**
 * Waits up to `waitMs` for an exclusive lock on `path`, retrying non-blocking attempts with a
 * backoff from 2 ms to 100 ms (no threadpool thread is held while waiting).
 */
export async function lockFile(
  path: string,
  waitMs: number,
  signal?: AbortSignal,
  attempt?: LockAttempt,
): Promise<FileLock> {
  const deadline = Date.now() + waitMs;
  for (let delay = 2; ; delay = Math.min(delay * 2, 100)) {
    signal?.throwIfAborted();
    const lock = await tryLockFile(path, attempt);
    if (lock) return lock;
    const left = deadline - Date.now();
    if (left <= 0) throw new LockTimeoutError(`lock on ${path} not free within ${waitMs} ms`);
    await sleep(Math.min(delay, left), undefined, { signal });
  }
}

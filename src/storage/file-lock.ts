import fsExt from 'fs-ext';
import { lstat } from 'node:fs/promises';
import { setTimeout as sleep } from 'node:timers/promises';
import { fdCall } from './fd.js';
import { nativeAddon } from './native.js';
import {
  isRefusedFile,
  openRegularFilePortable,
  quarantineFile,
  warnToConsole,
} from './safe-file.js';
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
 * ENOENT; anything but a regular file with one link (a symlink, FIFO, directory, hard link)
 * with ELOOP, EFTYPE, EISDIR or EMLINK, before it is locked (see `safe-file.ts`).
 */
export type LockAttempt = (path: string) => Promise<number | 'busy' | 'moved'>;

const isBusy = (e: unknown) =>
  ['EWOULDBLOCK', 'EAGAIN'].includes((e as NodeJS.ErrnoException).code ?? '');
const isMissing = (e: unknown) => (e as NodeJS.ErrnoException).code === 'ENOENT';

/** open, fstat, flock and lstat as one threadpool job of the native addon. */
const nativeAttempt: LockAttempt | null = nativeAddon
  ? async (path) => {
      const fd = await nativeAddon!.lockFile(path);
      return fd === -1 ? 'busy' : fd === -2 ? 'moved' : fd;
    }
  : null;

/** The same with fs calls (four threadpool jobs); `flock` itself is synchronous. */
export const portableLockAttempt: LockAttempt = async (path) => {
  const fd = await openRegularFilePortable(path, true);
  try {
    fsExt.flockSync(fd, 'exnb');
  } catch (e) {
    await fdCall.close(fd);
    if (isBusy(e)) return 'busy';
    throw e;
  }
  try {
    // lstat: whatever now sits under the name is compared, never followed.
    const [held, named] = await Promise.all([fdCall.fstat(fd), lstat(path)]);
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
 * Neither is anything but a regular file with one link: a symlink, FIFO, directory or hard link
 * planted under the name is moved aside (one line to `log`) and reported as missing too.
 */
export async function tryLockFile(
  path: string,
  attempt: LockAttempt = nativeAttempt ?? portableLockAttempt,
  log: (message: string) => void = warnToConsole,
): Promise<FileLock | null> {
  let result: Awaited<ReturnType<LockAttempt>>;
  try {
    result = await attempt(path);
  } catch (e) {
    if (isMissing(e)) throw new LockTargetMissingError(path);
    if (isRefusedFile(e)) {
      await quarantineFile(path, e, log);
      throw new LockTargetMissingError(path);
    }
    throw e;
  }
  if (result === 'busy') return null;
  if (result === 'moved') throw new LockTargetMissingError(path);
  return fileLockOn(result);
}

/** The lock a descriptor holding a `flock` stands for: `release()` closes it, once. */
export function fileLockOn(fd: number): FileLock {
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
  log?: (message: string) => void,
): Promise<FileLock> {
  const deadline = Date.now() + waitMs;
  for (let delay = 2; ; delay = Math.min(delay * 2, 100)) {
    signal?.throwIfAborted();
    const lock = await tryLockFile(path, attempt, log);
    if (lock) return lock;
    const left = deadline - Date.now();
    if (left <= 0) throw new LockTimeoutError(`lock on ${path} not free within ${waitMs} ms`);
    await sleep(Math.min(delay, left), undefined, { signal });
  }
}

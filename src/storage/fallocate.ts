import { open, unlink } from 'node:fs/promises';
import { syncDirectory } from './durable-file.js';
import { fdCall } from './fd.js';
import { nativeAddon as addon } from './native.js';
import { CREATE_EXCLUSIVE } from './safe-file.js';

let warned = false;

/** Where pre-allocation is real, or why it is not. */
export const preallocation = addon ? 'fallocate' : 'ftruncate (native addon not built)';

/**
 * Reserves `length` bytes of disk for the file open as `fd` so a full disk is refused at
 * creation, not in the middle of an upload. Falls back to a sparse `ftruncate` (with one log
 * line) where the addon is missing or the filesystem cannot reserve blocks (EOPNOTSUPP: tmpfs on
 * old kernels, some NFS). ENOSPC and other errors are thrown.
 */
export async function preallocate(
  fd: number,
  length: number,
  log: (message: string) => void,
): Promise<void> {
  if (length === 0) return;
  if (addon) {
    try {
      await addon.fallocate(fd, 0, length);
      return;
    } catch (e) {
      const code = (e as NodeJS.ErrnoException).code;
      if (code !== 'EOPNOTSUPP' && code !== 'ENOSYS') throw e;
      if (!warned) log(`fallocate is not supported here (${code}); pre-allocating with ftruncate`);
    }
  } else if (!warned) {
    log('native fallocate addon is not built; pre-allocating with ftruncate');
  }
  warned = true;
  await fdCall.ftruncate(fd, length);
}

/**
 * Reserves blocks for `[offset, offset + length)` of the file open as `fd` (the file grows to
 * cover it). False where blocks cannot be reserved (no addon, a filesystem without fallocate):
 * writes then simply allocate as they go. ENOSPC and other errors are thrown.
 */
export async function allocateRange(fd: number, offset: number, length: number): Promise<boolean> {
  if (!addon || length <= 0) return false;
  try {
    await addon.fallocate(fd, offset, length);
    return true;
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    if (code === 'EOPNOTSUPP' || code === 'ENOSYS') return false;
    throw e;
  }
}

/**
 * Creates the file `path` in `dir` exclusively (O_EXCL and O_NOFOLLOW: whatever is already under
 * the name, a planted symlink included, is refused with EEXIST) with `mode` (the umask applies;
 * 0600 by default) and reserves `length` bytes for it (none when `null`), fsync'ing the file and
 * the directory when `durable`. A refused creation (ENOSPC, EFBIG, ...) leaves nothing behind.
 * With the addon, one threadpool job.
 */
export async function createReserved(
  ...args: Parameters<typeof createReservedPortable>
): Promise<void> {
  if (!addon) return createReservedPortable(...args);
  const [path, dir, length, durable, log, mode = 0o600] = args;
  const how = await addon.createFile(path, dir, length ?? 0, durable, mode);
  if (how === 'ftruncate' && !warned) {
    log('fallocate is not supported on this filesystem; pre-allocating with ftruncate');
    warned = true;
  }
}

/** {@link createReserved} with fs calls (one threadpool job each), where the addon is not built. */
export async function createReservedPortable(
  path: string,
  dir: string,
  length: number | null,
  durable: boolean,
  log: (message: string) => void,
  mode = 0o600,
): Promise<void> {
  const handle = await open(path, CREATE_EXCLUSIVE, mode);
  try {
    if (length !== null) await preallocate(handle.fd, length, log);
    if (durable) await handle.sync();
    await handle.close();
    if (durable) await syncDirectory(dir);
  } catch (e) {
    await handle.close().catch(() => {});
    await unlink(path).catch(() => {});
    throw e;
  }
}

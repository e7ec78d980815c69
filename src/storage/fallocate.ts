import { open, unlink, type FileHandle } from 'node:fs/promises';
import { syncDirectory } from './durable-file.js';
import { nativeAddon as addon } from './native.js';

let warned = false;

/** Where pre-allocation is real, or why it is not. */
export const preallocation = addon ? 'fallocate' : 'ftruncate (native addon not built)';

/**
 * Reserves `length` bytes of disk for `handle` so a full disk is refused at creation, not in the
 * middle of an upload. Falls back to a sparse `ftruncate` (with one log line) where the addon is
 * missing or the filesystem cannot reserve blocks (EOPNOTSUPP: tmpfs on old kernels, some NFS).
 * ENOSPC and other errors are thrown.
 */
export async function preallocate(
  handle: FileHandle,
  length: number,
  log: (message: string) => void,
): Promise<void> {
  if (length === 0) return;
  if (addon) {
    try {
      await addon.fallocate(handle.fd, 0, length);
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
  await handle.truncate(length);
}

/**
 * Creates the file `path` in `dir` exclusively and reserves `length` bytes for it (none when
 * `null`), fsync'ing the file and the directory when `durable`. A refused creation (ENOSPC,
 * EFBIG, ...) leaves nothing behind. With the addon, one threadpool job.
 */
export async function createReserved(
  ...args: Parameters<typeof createReservedPortable>
): Promise<void> {
  if (!addon) return createReservedPortable(...args);
  const [path, dir, length, durable, log] = args;
  const how = await addon.createFile(path, dir, length ?? 0, durable);
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
): Promise<void> {
  const handle = await open(path, 'wx', 0o644);
  try {
    if (length !== null) await preallocate(handle, length, log);
    if (durable) await handle.sync();
    await handle.close();
    if (durable) await syncDirectory(dir);
  } catch (e) {
    await handle.close().catch(() => {});
    await unlink(path).catch(() => {});
    throw e;
  }
}

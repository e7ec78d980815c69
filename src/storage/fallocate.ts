import { createRequire } from 'node:module';
import type { FileHandle } from 'node:fs/promises';

interface NativeAddon {
  fallocate(fd: number, offset: number, length: number): Promise<number>;
}

function loadAddon(): NativeAddon | null {
  const require = createRequire(import.meta.url);
  // dist/storage/ and src/storage/ are both two levels below the package root.
  for (const candidate of [
    '../../build/Release/tussi_native.node',
    '../../build/Debug/tussi_native.node',
  ]) {
    try {
      return require(candidate) as NativeAddon;
    } catch {
      // try the next location
    }
  }
  return null;
}

const addon = loadAddon();
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

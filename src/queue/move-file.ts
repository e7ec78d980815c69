import { copyFile, open, rename, unlink } from 'node:fs/promises';
import { dirname } from 'node:path';
import { syncDirectory } from '../storage/durable-file.js';

/**
 * Moves a file: an atomic rename on one filesystem; across filesystems (EXDEV) a copy, fsync'ed,
 * then the source removed. With `durable`, the destination is on disk before the call returns.
 */
export async function moveFile(from: string, to: string, durable = true): Promise<void> {
  try {
    await rename(from, to);
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code !== 'EXDEV') throw e;
    await copyFile(from, to);
    // The copy is made durable before the source goes, whatever `durable` says.
    const handle = await open(to, 'r+');
    try {
      await handle.sync();
    } finally {
      await handle.close();
    }
    await unlink(from);
  }
  if (durable) await syncDirectory(dirname(to));
}

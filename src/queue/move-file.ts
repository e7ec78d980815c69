import { copyFile, open, rename, unlink } from 'node:fs/promises';
import { dirname } from 'node:path';
import { syncDirectory } from '../storage/durable-file.js';

/**
 * Moves a file: an atomic rename on one filesystem; across filesystems (EXDEV) a copy, fsync'ed,
 * then the source removed. The destination is durable before the source goes.
 */
export async function moveFile(from: string, to: string): Promise<void> {
  try {
    await rename(from, to);
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code !== 'EXDEV') throw e;
    await copyFile(from, to);
    const handle = await open(to, 'r+');
    try {
      await handle.sync();
    } finally {
      await handle.close();
    }
    await unlink(from);
  }
  await syncDirectory(dirname(to));
}

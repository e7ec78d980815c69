import { randomBytes } from 'node:crypto';
import { open, rename, unlink } from 'node:fs/promises';
import { basename, dirname, join } from 'node:path';

/** Temp files of atomic writes: `.{name}.{random}.tmp`, never mistaken for an upload. */
export const TEMP_FILE = /^\..+\.[0-9a-f]{12}\.tmp$/;

/** fsync a directory, so a rename or unlink in it survives a crash. */
export async function syncDirectory(path: string): Promise<void> {
  const handle = await open(path, 'r');
  try {
    await handle.sync();
  } finally {
    await handle.close();
  }
}

/**
 * Replaces `path` with `data` atomically: a temp file in the same directory, fsync'ed, renamed
 * over the target, then the directory fsync'ed. A reader sees the old or the new content, never
 * a mix, and after a crash the new content is there only if it is whole.
 */
export async function writeFileAtomic(path: string, data: string, durable: boolean): Promise<void> {
  const temp = join(dirname(path), `.${basename(path)}.${randomBytes(6).toString('hex')}.tmp`);
  const handle = await open(temp, 'wx', 0o644);
  try {
    await handle.writeFile(data);
    if (durable) await handle.sync();
  } catch (e) {
    await handle.close();
    await unlink(temp).catch(() => {});
    throw e;
  }
  await handle.close();
  try {
    await rename(temp, path);
  } catch (e) {
    await unlink(temp).catch(() => {});
    throw e;
  }
  if (durable) await syncDirectory(dirname(path));
}

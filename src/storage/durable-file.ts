import { randomBytes } from 'node:crypto';
import { close, fsync, open as openFd, write } from 'node:fs';
import { open, rename, unlink } from 'node:fs/promises';
import { basename, dirname, join } from 'node:path';
import { promisify } from 'node:util';

// Plain descriptors, not FileHandles: records are written on every PATCH, and a FileHandle
// (an object with a GC finalizer) costs more than the tiny write it wraps.
const openFile = promisify(openFd);
const writeFile = promisify(write);
const syncFile = promisify(fsync);
const closeFile = promisify(close);

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
  const fd = await openFile(temp, 'wx', 0o644);
  try {
    const bytes = Buffer.from(data);
    for (let done = 0; done < bytes.length;) {
      done += (await writeFile(fd, bytes, done, bytes.length - done, done)).bytesWritten;
    }
    if (durable) await syncFile(fd);
  } catch (e) {
    await closeFile(fd);
    await unlink(temp).catch(() => {});
    throw e;
  }
  await closeFile(fd);
  try {
    await rename(temp, path);
  } catch (e) {
    await unlink(temp).catch(() => {});
    throw e;
  }
  if (durable) await syncDirectory(dirname(path));
}

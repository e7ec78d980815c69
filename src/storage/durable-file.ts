import { randomBytes } from 'node:crypto';
import { open, rename, unlink } from 'node:fs/promises';
import { basename, dirname, join } from 'node:path';
import { fdCall } from './fd.js';
import { nativeAddon } from './native.js';

/**
 * The pure-Node versions of the functions below, used where the native addon is not built. The
 * addon runs each function's syscalls as one threadpool job; these make one job per syscall.
 */
export const portable = {
  readSmallFile: readSmallFilePortable,
  writeFileAtomic: (path: string, data: string, durable: boolean) =>
    writeFileAtomicPortable(tempPathFor(path), path, data, durable),
  syncDirectory: syncDirectoryPortable,
};

/**
 * Reads a small file (a record) as UTF-8: open, read, close, and no `fstat` for the size as
 * `readFile` does, which counts when it happens on every request.
 */
export function readSmallFile(path: string): Promise<string> {
  return nativeAddon ? nativeAddon.readSmallFile(path) : readSmallFilePortable(path);
}

/** fsync a directory, so a rename or unlink in it survives a crash. */
export function syncDirectory(path: string): Promise<void> {
  return nativeAddon ? nativeAddon.syncDirectory(path) : syncDirectoryPortable(path);
}

/**
 * Replaces `path` with `data` atomically: a temp file in the same directory, fsync'ed, renamed
 * over the target, then the directory fsync'ed. A reader sees the old or the new content, never
 * a mix, and after a crash the new content is there only if it is whole.
 */
export function writeFileAtomic(path: string, data: string, durable: boolean): Promise<void> {
  const temp = tempPathFor(path);
  return nativeAddon
    ? nativeAddon.writeFileAtomic(temp, path, dirname(path), data, durable)
    : writeFileAtomicPortable(temp, path, data, durable);
}

/**
 * Temp names: 24 random bits drawn once per process, then a counter (12 hex digits in all). No
 * call into the CSPRNG per record write; two processes sharing a directory differ by the
 * prefix, and the exclusive create (O_EXCL) refuses, never overwrites, in the unlikely clash.
 */
const tempPrefix = randomBytes(3).toString('hex');
let tempCounter = 0;

/** `.{name}.{prefix}{counter}.tmp` beside `path` (see {@link TEMP_FILE}). */
function tempPathFor(path: string): string {
  tempCounter = (tempCounter + 1) % 0x1000000;
  const suffix = `${tempPrefix}${tempCounter.toString(16).padStart(6, '0')}`;
  return join(dirname(path), `.${basename(path)}.${suffix}.tmp`);
}

/** Through one plain descriptor (a FileHandle costs more than the tiny read it wraps). */
async function readSmallFilePortable(path: string): Promise<string> {
  const fd = await fdCall.open(path, 'r');
  try {
    let buffer = Buffer.allocUnsafe(16 * 1024);
    let size = 0;
    for (;;) {
      if (size === buffer.length) {
        const larger = Buffer.allocUnsafe(buffer.length * 2);
        buffer.copy(larger, 0, 0, size);
        buffer = larger;
      }
      const { bytesRead } = await fdCall.read(fd, buffer, size, buffer.length - size, size);
      if (bytesRead === 0) break;
      size += bytesRead;
      // A short read of a regular file means its end: no second call to learn it.
      if (size < buffer.length) break;
    }
    return buffer.toString('utf8', 0, size);
  } finally {
    // Not waited for: the content is read, and a read-only descriptor's close has nothing to
    // report. One threadpool round trip less on every HEAD and PATCH.
    fdCall.close(fd).catch(() => {});
  }
}

/** Temp files of atomic writes: `.{name}.{random}.tmp`, never mistaken for an upload. */
export const TEMP_FILE = /^\..+\.[0-9a-f]{12}\.tmp$/;

async function syncDirectoryPortable(path: string): Promise<void> {
  const handle = await open(path, 'r');
  try {
    await handle.sync();
  } finally {
    await handle.close();
  }
}

async function writeFileAtomicPortable(
  temp: string,
  path: string,
  data: string,
  durable: boolean,
): Promise<void> {
  const fd = await fdCall.open(temp, 'wx', 0o644);
  try {
    const bytes = Buffer.from(data);
    for (let done = 0; done < bytes.length;) {
      done += (await fdCall.write(fd, bytes, done, bytes.length - done, done)).bytesWritten;
    }
    if (durable) await fdCall.fsync(fd);
  } catch (e) {
    await fdCall.close(fd);
    await unlink(temp).catch(() => {});
    throw e;
  }
  await fdCall.close(fd);
  try {
    await rename(temp, path);
  } catch (e) {
    await unlink(temp).catch(() => {});
    throw e;
  }
  if (durable) await syncDirectoryPortable(dirname(path));
}

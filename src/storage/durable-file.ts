import { randomBytes } from 'node:crypto';
import { randomSuffix } from '../core/upload-id.js';
import { constants } from 'node:fs';
import { lstat, open, readdir, rename, unlink } from 'node:fs/promises';
import { basename, dirname, join } from 'node:path';
import { fdCall } from './fd.js';
import { nativeAddon } from './native.js';
import {
  CREATE_EXCLUSIVE,
  OPEN_EXISTING,
  checkRegularFile,
  openRegularFile,
  quarantineFile,
} from './safe-file.js';

/** How {@link writeFileAtomic} creates its file, and what it does with a target it cannot replace. */
export interface AtomicWriteOptions {
  /** Mode the file is created with (the process umask applies). @default 0o600 */
  mode?: number;
  /**
   * Where a target that a rename cannot replace (a directory planted under its name) is
   * reported: with it, that entry is moved aside (see `quarantineFile`) and the write done
   * again; without it, the rename's error (EISDIR, ENOTEMPTY, EEXIST) is thrown.
   */
  log?: (message: string) => void;
}

/**
 * The pure-Node versions of the functions below, used where the native addon is not built. The
 * addon runs each function's syscalls as one threadpool job; these make one job per syscall.
 */
export const portable = {
  readSmallFile: readSmallFilePortable,
  writeFileAtomic: (path: string, data: string, durable: boolean, options?: AtomicWriteOptions) =>
    writeAtomicWith(writeFileAtomicPortable, path, data, durable, options),
  syncDirectory: syncDirectoryPortable,
  updateInPlace: updateInPlacePortable,
};

/**
 * Reads a small file (a record) as UTF-8: open, read, close, with no `fstat` for the size as
 * `readFile` does, which counts when it happens on every request. Only a regular file with one
 * link is read: a symlink (ELOOP), FIFO (EFTYPE, and no wait for a writer), directory (EISDIR)
 * or hard link (EMLINK) planted under the name is refused (see `safe-file.ts`).
 */
export function readSmallFile(path: string): Promise<string> {
  return nativeAddon ? nativeAddon.readSmallFile(path) : readSmallFilePortable(path);
}

/** What an update in place expects to find: the file's size and some bytes at a position. */
export interface InPlaceExpectation {
  size: number;
  at: number;
  /** ASCII. */
  bytes: string;
}

/**
 * Writes `data` (ASCII) at `offset` of the existing file `path`, in place, [fdatasync'ed]: no
 * file created, nothing renamed; but only if the file is still as `expect` says (its size, and
 * the bytes at a position): false, with nothing written, when it changed. Only a regular file
 * of one link is opened (see `safe-file.ts`). What the write replaces may be seen half-written
 * by a reader at the same moment or after a power loss, so the caller's format must tell (see
 * `src/core/slotted-record.ts`).
 */
export function updateInPlace(
  path: string,
  offset: number,
  data: string,
  durable: boolean,
  expect: InPlaceExpectation,
): Promise<boolean> {
  return nativeAddon?.updateInPlace
    ? nativeAddon.updateInPlace(path, offset, data, durable, expect.size, expect.at, expect.bytes)
    : updateInPlacePortable(path, offset, data, durable, expect);
}

async function updateInPlacePortable(
  path: string,
  offset: number,
  data: string,
  durable: boolean,
  expect: InPlaceExpectation,
): Promise<boolean> {
  const fd = await openRegularFile(path, true);
  let written = false;
  try {
    if ((await fdCall.fstat(fd)).size !== expect.size) return false;
    const seen = Buffer.alloc(expect.bytes.length);
    const { bytesRead } = await fdCall.read(fd, seen, 0, seen.length, expect.at);
    if (bytesRead !== seen.length || seen.toString('latin1') !== expect.bytes) return false;
    await writeFully(fd, Buffer.from(data, 'latin1'), offset, path);
    if (durable) await fdCall.fdatasync(fd);
    written = true;
    return true;
  } finally {
    // After a write, a failed close means the bytes may not be there; otherwise it is only let go.
    if (written) await fdCall.close(fd);
    else await fdCall.close(fd).catch(() => {});
  }
}

/** All of `bytes` at `position`, short writes retried; a write of nothing is EIO (no endless loop). */
async function writeFully(
  fd: number,
  bytes: Buffer,
  position: number,
  path: string,
): Promise<void> {
  for (let done = 0; done < bytes.length;) {
    const { bytesWritten } = await fdCall.write(
      fd,
      bytes,
      done,
      bytes.length - done,
      position + done,
    );
    if (bytesWritten === 0) throw Object.assign(new Error(`EIO: write, ${path}`), { code: 'EIO' });
    done += bytesWritten;
  }
}

/** fsync a directory, so a rename or unlink in it survives a crash. */
export function syncDirectory(path: string): Promise<void> {
  return nativeAddon ? nativeAddon.syncDirectory(path) : syncDirectoryPortable(path);
}

/**
 * Replaces `path` with `data` atomically: a temp file in the same directory (created with
 * O_EXCL and O_NOFOLLOW, mode 0600 unless `options.mode` says otherwise), fsync'ed, renamed
 * over the target, then the directory fsync'ed. A reader sees the old or the new content, never
 * a mix, and after a crash the new content is there only if it is whole. The rename replaces a
 * symlink or FIFO planted at `path`; it never follows or opens it.
 */
export function writeFileAtomic(
  path: string,
  data: string,
  durable: boolean,
  options?: AtomicWriteOptions,
): Promise<void> {
  return writeAtomicWith(
    nativeAddon ? writeFileAtomicNative : writeFileAtomicPortable,
    path,
    data,
    durable,
    options,
  );
}

type AtomicWrite = (
  temp: string,
  path: string,
  data: string,
  durable: boolean,
  mode: number,
) => Promise<void>;

const writeFileAtomicNative: AtomicWrite = (temp, path, data, durable, mode) =>
  nativeAddon!.writeFileAtomic(temp, path, dirname(path), data, durable, mode);

/** Renames that fail because the target is a directory (empty or not). */
export const CANNOT_REPLACE = new Set(['EISDIR', 'ENOTEMPTY', 'EEXIST']);

async function writeAtomicWith(
  write: AtomicWrite,
  path: string,
  data: string,
  durable: boolean,
  { mode = 0o600, log }: AtomicWriteOptions = {},
): Promise<void> {
  let temp = tempPathFor(path);
  for (let attempt = 0; ; attempt++) {
    try {
      return await write(temp, path, data, durable, mode);
    } catch (e) {
      const { code = '', syscall } = e as NodeJS.ErrnoException;
      if (attempt >= 2) throw e;
      if (syscall === 'open' && code === 'EEXIST') {
        // Something sits under the temp name: the counter is easy to guess from the names
        // seen in the directory. The exclusive create refused it; a name nobody can guess now.
        temp = randomTempPath(path);
      } else if (syscall === 'rename' && CANNOT_REPLACE.has(code) && log) {
        await quarantineFile(path, e, log);
        temp = tempPathFor(path);
      } else {
        throw e;
      }
    }
  }
}

/**
 * Temp names: 24 random bits drawn once per process, then a counter (12 hex digits in all). No
 * call into the CSPRNG per record write; two processes sharing a directory differ by the
 * prefix, and the exclusive create (O_EXCL) refuses, never overwrites, in the unlikely clash.
 */
const tempPrefix = randomBytes(3).toString('hex');
let tempCounter = 0;

/**
 * `.{name}.{random}.tmp` beside `path` (see {@link TEMP_FILE}): a temp name nobody can guess,
 * for a file that only a rename publishes.
 */
export function randomTempPath(path: string): string {
  return join(dirname(path), `.${basename(path)}.${randomSuffix()}.tmp`);
}

/** `.{name}.{prefix}{counter}.tmp` beside `path` (see {@link TEMP_FILE}). */
function tempPathFor(path: string): string {
  tempCounter = (tempCounter + 1) % 0x1000000;
  const suffix = `${tempPrefix}${tempCounter.toString(16).padStart(6, '0')}`;
  return join(dirname(path), `.${basename(path)}.${suffix}.tmp`);
}

/**
 * Through one plain descriptor (a FileHandle costs more than the tiny read it wraps). The fstat
 * the addon makes in the same job is one more here: a FIFO or symlink must never be read.
 */
async function readSmallFilePortable(path: string): Promise<string> {
  const fd = await fdCall.open(path, constants.O_RDONLY | OPEN_EXISTING);
  try {
    checkRegularFile(await fdCall.fstat(fd), path);
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

/**
 * Deletes the temp files in `directory` older than `ageMs` (leftovers of writes a crash cut
 * short); a young one may be a write under way and is never touched. Returns how many.
 */
export async function sweepTempFiles(directory: string, ageMs: number): Promise<number> {
  const now = Date.now();
  let removed = 0;
  for (const name of await readdir(directory)) {
    if (!TEMP_FILE.test(name)) continue;
    const path = join(directory, name);
    const info = await lstat(path).catch(() => null);
    if (!info || now - info.mtimeMs < ageMs) continue;
    await unlink(path).catch(() => {});
    removed++;
  }
  return removed;
}

async function syncDirectoryPortable(path: string): Promise<void> {
  // O_DIRECTORY: anything else under the name is refused (ENOTDIR), a FIFO never waited on.
  const handle = await open(path, constants.O_RDONLY | constants.O_DIRECTORY);
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
  mode: number,
): Promise<void> {
  const fd = await fdCall.open(temp, CREATE_EXCLUSIVE, mode);
  try {
    await writeFully(fd, Buffer.from(data), 0, temp);
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

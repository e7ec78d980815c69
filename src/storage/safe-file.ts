import { randomBytes } from 'node:crypto';
import { constants, type Stats } from 'node:fs';
import { lstat, readlink, rename } from 'node:fs/promises';
import { getSystemErrorMap } from 'node:util';
import { fdCall } from './fd.js';
import { nativeAddon } from './native.js';
import { UnsafeFileError } from './storage.interfaces.js';

// Whoever can write to the upload or completed directory can put anything under the name of a
// file the server is about to open: a symlink to a file elsewhere (the server would write or
// read that file with its own rights), a FIFO (an open blocks a libuv threadpool thread until
// a writer comes; four of them stall every fs call of the process), a device, a directory, or a
// hard link to a file elsewhere. So every file is opened as a file: never followed, never
// waited on, and checked to be a regular file with one link before a byte moves.

const { O_RDONLY, O_RDWR, O_WRONLY, O_CREAT, O_EXCL, O_NOFOLLOW, O_NONBLOCK, O_NOCTTY } = constants;

/**
 * Flags added to every open of an existing file: a symlink is refused (ELOOP), a FIFO opens at
 * once instead of waiting for a writer (then the fstat check refuses it), and a terminal never
 * becomes the controlling one. O_NONBLOCK has no effect on the I/O of a regular file (Linux
 * ignores it there), so descriptors of the pure-Node path keep it; the native addon clears it.
 */
export const OPEN_EXISTING = O_NOFOLLOW | O_NONBLOCK | O_NOCTTY;

/** Flags of every file created: O_EXCL (plus O_NOFOLLOW) refuses whatever is already there. */
export const CREATE_EXCLUSIVE = O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_NOCTTY;

/** The codes of a name that holds something other than a regular file of its own. */
const REFUSED = new Set(['ELOOP', 'EISDIR', 'EFTYPE', 'EMLINK', 'ENXIO']);

/**
 * True for an error that refuses a file for what it is (see {@link checkRegularFile}): ELOOP (a
 * symlink), EISDIR, EFTYPE (a FIFO, socket or device), EMLINK (a hard link), ENXIO (a socket).
 */
export function isRefusedFile(error: unknown): boolean {
  return REFUSED.has((error as NodeJS.ErrnoException | null)?.code ?? '');
}

const errnoOf = (name: string) =>
  [...getSystemErrorMap()].find(([, [code]]) => code === name) ?? [0, [name, name]];

/** An error shaped as Node's (and the addon's) fs errors: `EMLINK: too many links, open '…'`. */
function refusal(name: 'EISDIR' | 'EFTYPE' | 'EMLINK', path: string): NodeJS.ErrnoException {
  const [errno, [code, message]] = errnoOf(name);
  return Object.assign(new Error(`${code}: ${message}, open '${path}'`), {
    errno,
    code,
    syscall: 'open',
    path,
  });
}

/**
 * Throws unless `info` (an fstat of what was opened as `path`) is a regular file with one link:
 * EISDIR for a directory, EFTYPE for a FIFO, socket or device, EMLINK for a hard link (its
 * other name may be a file outside the directory: writing would change that file, reading
 * would hand it out). A file with no link left was removed or replaced by a rename after it was
 * opened: it is still the one that was named, and is accepted. The addon makes the same checks.
 */
export function checkRegularFile(info: Stats, path: string): void {
  if (info.isDirectory()) throw refusal('EISDIR', path);
  if (!info.isFile()) throw refusal('EFTYPE', path);
  if (info.nlink > 1) throw refusal('EMLINK', path);
}

/** {@link openRegularFile} with fs calls (open, fstat: two threadpool jobs). */
export async function openRegularFilePortable(path: string, writable: boolean): Promise<number> {
  const fd = await fdCall.open(path, (writable ? O_RDWR : O_RDONLY) | OPEN_EXISTING);
  try {
    checkRegularFile(await fdCall.fstat(fd), path);
  } catch (e) {
    await fdCall.close(fd).catch(() => {});
    throw e;
  }
  return fd;
}

/**
 * Opens an existing file, read-only or read-write, only if it is a regular file with one link
 * (never following a symlink, never waiting on a FIFO): its descriptor, for the caller to
 * close. Refusals reject with ELOOP, EISDIR, EFTYPE or EMLINK ({@link isRefusedFile}).
 */
export function openRegularFile(path: string, writable: boolean): Promise<number> {
  return nativeAddon
    ? nativeAddon.openFile(path, writable)
    : openRegularFilePortable(path, writable);
}

/** What `path` is, for the log line, from an lstat (never followed). */
async function describe(path: string): Promise<string> {
  let info: Stats;
  try {
    info = await lstat(path);
  } catch {
    return 'gone';
  }
  if (info.isSymbolicLink()) {
    const target = await readlink(path).catch(() => '?');
    return `a symbolic link to ${target}`;
  }
  if (info.isFIFO()) return 'a FIFO';
  if (info.isSocket()) return 'a socket';
  if (info.isCharacterDevice() || info.isBlockDevice()) return 'a device';
  if (info.isDirectory()) return 'a directory';
  if (info.nlink > 1) return `a hard link (${info.nlink} names)`;
  return 'a regular file now';
}

/** The name a refused entry is moved aside to; no sweep of the server ever deletes it. */
export const QUARANTINED = /\.quarantined-[0-9a-f]{12}$/;

/**
 * Moves what is at `path` aside, in its own directory, to `{path}.quarantined-{random}` (a
 * rename moves the entry itself: a symlink is never followed, a FIFO never opened) and says so
 * in one log line. Left for an administrator: no server sweep matches that name. Nothing is
 * logged when the entry is already gone (another request moved it aside first).
 */
export async function quarantineFile(
  path: string,
  reason: unknown,
  log: (message: string) => void,
  why = 'not a regular file of its own',
): Promise<void> {
  const what = await describe(path);
  if (what === 'gone') return;
  const aside = `${path}.quarantined-${randomBytes(6).toString('hex')}`;
  const code = (reason as NodeJS.ErrnoException | null)?.code ?? String(reason);
  try {
    await rename(path, aside);
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') return;
    log(`refused ${path} (${what}, ${code}); it could not be moved aside: ${String(e)}`);
    return;
  }
  log(`refused ${path} (${what}, ${code}): ${why}; moved aside to ${aside}`);
}

/**
 * For an error an open of `path` failed with: when it refused the file for what it is, the
 * entry is quarantined ({@link quarantineFile}) and an {@link UnsafeFileError} returned to be
 * thrown; any other error is returned as it is.
 */
export async function refusedFileError(
  error: unknown,
  path: string,
  log: (message: string) => void,
): Promise<unknown> {
  if (!isRefusedFile(error)) return error;
  await quarantineFile(path, error, log);
  return new UnsafeFileError(path, { cause: error });
}

/** The module's default log sink for components created without one. */
export const warnToConsole = (message: string): void => console.warn(`[nestjs-tussi] ${message}`);

import { createRequire } from 'node:module';

/**
 * The optional native addon (`native/*.cc`, built by `node-gyp` at install). Each function runs
 * on the libuv threadpool as one job and rejects as Node's fs functions do (`code`, `errno`,
 * `syscall`, `path`). Existing files are opened with O_NOFOLLOW and O_NONBLOCK and refused
 * unless they are regular files with one link (ELOOP, EISDIR, EFTYPE, EMLINK), as
 * `safe-file.ts` does on the pure-Node path; created files are O_EXCL and O_NOFOLLOW.
 */
export interface NativeAddon {
  fallocate(fd: number, offset: number, length: number): Promise<number>;
  /**
   * Creates `temp` (O_EXCL, `mode`), writes `data`, [fsync], renames it over `target`, [fsyncs
   * `dir`].
   */
  writeFileAtomic(
    temp: string,
    target: string,
    dir: string,
    data: string,
    durable: boolean,
    mode: number,
  ): Promise<void>;
  /** The whole file as UTF-8: open, check, read, close in one job. */
  readSmallFile(path: string): Promise<string>;
  /**
   * Opens `path` (an existing regular file of one link) and, if it is `size` bytes long with
   * `check` at `checkAt`, writes `data` at `offset`, [fdatasyncs it]; closes it. False (nothing
   * written) when the file is not as expected. Missing from an addon built by an older version.
   */
  updateInPlace?(
    path: string,
    offset: number,
    data: string,
    durable: boolean,
    size: number,
    checkAt: number,
    check: string,
  ): Promise<boolean>;
  /** Opens, fsyncs and closes a directory in one job. */
  syncDirectory(path: string): Promise<void>;
  /**
   * open, `flock(LOCK_EX | LOCK_NB)`, and a check that `path` still names the locked inode:
   * the descriptor holding the lock, -1 when busy, -2 when the path names another inode now.
   */
  lockFile(path: string): Promise<number>;
  /**
   * Creates `path` (O_EXCL, `mode`), reserves `length` bytes (fallocate, or ftruncate where the
   * filesystem cannot), [fsyncs it and `dir`]; removes it on failure.
   */
  createFile(
    path: string,
    dir: string,
    length: number,
    durable: boolean,
    mode: number,
  ): Promise<'fallocate' | 'ftruncate' | 'none'>;
  /** Opens an existing regular file of one link (read-only or read-write): its descriptor. */
  openFile(path: string, writable: boolean): Promise<number>;
  /**
   * Moves `from` to `to` through `temp`, publishing only the inode opened and checked (see
   * `moveFile` in `move-file.ts`); `mode` -1 keeps the mode; [fsyncs `dir`]. `'exdev'`: on
   * different filesystems, nothing done; `'replaced'`: something was swapped in, not moved.
   * Missing from an addon built by an older version.
   */
  moveFile?(
    from: string,
    temp: string,
    to: string,
    dir: string,
    mode: number,
    durable: boolean,
  ): Promise<'moved' | 'exdev' | 'replaced'>;
  /**
   * Opens and checks `from`, renames it over `to`, compares the inode now at `to` (`'replaced'`
   * when it is another: nothing more done), sets its times to now, [fsyncs `toDir` and
   * `fromDir`]: the arrival of a data file in the completed queue. Missing from an addon built
   * by an older version.
   */
  arriveFile?(
    from: string,
    to: string,
    fromDir: string,
    toDir: string,
    durable: boolean,
  ): Promise<'moved' | 'replaced'>;
}

function loadAddon(): NativeAddon | null {
  const require = createRequire(import.meta.url);
  // dist/storage/ and src/storage/ are both two levels below the package root.
  for (const candidate of [
    '../../build/Release/tussi_native.node',
    '../../build/Debug/tussi_native.node',
  ]) {
    try {
      const addon = require(candidate) as Partial<NativeAddon>;
      // An addon built from an older checkout lacks the newer functions (and takes older
      // arguments, and follows symlinks): not used at all.
      if (typeof addon.openFile === 'function') return addon as NativeAddon;
    } catch {
      // try the next location
    }
  }
  return null;
}

/** The addon, or null where it was not built (every caller has a pure-Node fallback). */
export const nativeAddon = loadAddon();

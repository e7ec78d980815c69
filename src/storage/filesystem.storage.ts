import { close, createReadStream, mkdirSync, read } from 'node:fs';
import { lstat, readdir, unlink } from 'node:fs/promises';
import { isUploadId } from '../core/upload-id.js';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import { allocateRange, createReserved } from './fallocate.js';
import { fdCall } from './fd.js';
import { FileUploadLocker } from './file-upload.locker.js';
import { openRegularFile, refusedFileError, warnToConsole } from './safe-file.js';
import {
  PartialBatchError,
  type BodySink,
  type UploadStorage,
  type WriteOptions,
  type WriteOutcome,
} from './storage.interfaces.js';

export interface FilesystemStorageOptions {
  /** Staging directory: `{directory}/{id}` holds the bytes of an unfinished upload. */
  directory: string;
  /** fsync data before the offset that claims it is stored. @default true */
  fsync?: boolean;
  /** Mode of directories created (the umask applies). @default 0o700 */
  directoryMode?: number;
  /**
   * Mode of the data files created (the umask applies); they keep it in the completed
   * directory. @default 0o600
   */
  fileMode?: number;
  /**
   * Where notices go: the missing-fallocate fallback, and each data file refused as unsafe (a
   * symlink, FIFO, directory or hard link planted in its place, moved aside). @default console.warn
   */
  log?: (message: string) => void;
}

/** Blocks reserved ahead of a body's bytes while it arrives (fewer, larger extents). */
const WINDOW_BYTES = 64 << 20;
/**
 * Reserved beyond the last byte written, and given back when the body ends: when the disk
 * fills up under a write (another process took the space), this is what the upload's record
 * is then written into, so the bytes already written are counted.
 */
const SLACK_BYTES = 256 << 10;
/**
 * A body that says it has at most this many bytes (its Content-Length) is written with no
 * room reserved ahead: two syscalls (fallocate, then ftruncate back) would cost more than the
 * extents they save, and the space accounting's margin covers the record after it.
 */
const SMALL_BODY_BYTES = 64 << 10;

/**
 * Upload bytes as files, tussi's layout: `{directory}/{id}`, written in place at each offset.
 *
 * Nothing is reserved at creation (a creation costs the server no more than it costs the
 * client; promised space is accounted for instead, see `SpaceAccounting`): while a body
 * arrives, blocks are reserved with `fallocate` a bounded window ahead of it, and what the body
 * did not fill is given back when it ends.
 *
 * A data file is only ever opened as a regular file with one link (O_NOFOLLOW, O_NONBLOCK, then
 * fstat): anything else planted under its name is moved aside with one log line, and the
 * operation fails with `UnsafeFileError` (the request answers 404).
 */
export class FilesystemStorage implements UploadStorage {
  readonly directory: string;
  readonly fsync: boolean;
  private readonly fileMode: number;
  private readonly log: (message: string) => void;
  /**
   * Locks that hold across the host's processes: `flock` on the data file, whose descriptor a
   * write under the lock goes through.
   */
  readonly locker: FileUploadLocker;

  constructor(options: FilesystemStorageOptions) {
    this.directory = options.directory;
    this.fsync = options.fsync ?? true;
    this.fileMode = options.fileMode ?? 0o600;
    this.log = options.log ?? warnToConsole;
    this.locker = new FileUploadLocker((id) => this.pathOf(id), { log: this.log });
    mkdirSync(this.directory, { recursive: true, mode: options.directoryMode ?? 0o700 });
  }

  /** Path of the data file of `id`. */
  pathOf(id: string): string {
    return join(this.directory, id);
  }

  localPath(id: string): string {
    return this.pathOf(id);
  }

  get volume(): string {
    return this.directory;
  }

  async create(id: string, _length?: number | null): Promise<void> {
    // Empty: the bytes are reserved as they arrive. A refused creation leaves nothing behind.
    await createReserved(
      this.pathOf(id),
      this.directory,
      null,
      this.fsync,
      this.log,
      this.fileMode,
    );
  }

  /** The data file of `id` opened as a regular file; anything else is moved aside and refused. */
  private async open(path: string, writable: boolean): Promise<number> {
    try {
      return await openRegularFile(path, writable);
    } catch (e) {
      throw await refusedFileError(e, path, this.log);
    }
  }

  async openWrite(id: string, offset: number, options: WriteOptions): Promise<BodySink> {
    const path = this.pathOf(id);
    // Under this storage's lock on this very file, its descriptor is ours to write through
    // (one open and close less per PATCH); it stays open for the lock.
    const locked = this.locker.heldFile(path);
    const fd = locked ?? (await this.open(path, true));
    let position = offset;
    const small = options.expected !== undefined && options.expected <= SMALL_BODY_BYTES;
    const window = new AllocationWindow(fd, offset, offset + options.limit, !small);
    // The `written` bytes made durable: with fsync, nothing of them counts when it fails.
    const sync = async (written: number): Promise<WriteOutcome> => {
      if (this.fsync && written > 0) {
        try {
          await fdCall.fdatasync(fd);
        } catch (e) {
          return { bytes: 0, error: e as Error };
        }
      }
      return { bytes: written };
    };
    return {
      write: async (chunks, bytes) => {
        await window.cover(position, bytes);
        let done = 0;
        try {
          while (done < bytes) {
            done += (await fdCall.writev(fd, remaining(chunks, done), position + done))
              .bytesWritten;
          }
        } catch (e) {
          // A short write then ENOSPC: the bytes before the failure are on disk and count.
          position += done;
          throw done > 0 ? new PartialBatchError(e as Error, done) : e;
        }
        position += bytes;
      },
      checkpoint: sync,
      finish: async (written) => {
        try {
          const synced = await sync(written);
          // Nothing of this request can be claimed durable.
          if (synced.error) return synced;
          // What the body did not fill goes back to the disk (the slack first of all, which
          // the record about to be written may need).
          await window.release(position).catch(() => {});
          return synced;
        } finally {
          if (locked === undefined) await fdCall.close(fd);
        }
      },
    };
  }

  read(id: string, start: number, length: number): Readable {
    if (length === 0) return Readable.from([]);
    return createReadStream(this.pathOf(id), {
      start,
      end: start + length - 1,
      highWaterMark: 1 << 20,
      // The stream's own open would follow a symlink (concatenation would copy whatever file it
      // points to into the final upload) and wait on a FIFO: it opens through the same check.
      fs: {
        open: (path: string, _flags: unknown, _mode: unknown, done: OpenCallback) =>
          this.open(path, false).then(
            (fd) => done(null, fd),
            (e: Error) => done(e),
          ),
        read,
        close,
      },
    });
  }

  async list(): Promise<{ id: string; ageMs: number }[]> {
    const now = Date.now();
    const ids = (await readdir(this.directory)).filter((name) => isUploadId(name));
    const found = await Promise.all(
      ids.map(async (id) => {
        // lstat: the age of what is under the name, never of a file a symlink points to.
        const info = await lstat(this.pathOf(id)).catch(() => null);
        return info && { id, ageMs: now - info.mtimeMs };
      }),
    );
    return found.filter((entry) => entry !== null);
  }

  async truncate(id: string, length: number): Promise<void> {
    const fd = await this.open(this.pathOf(id), true);
    try {
      await fdCall.ftruncate(fd, length);
      if (this.fsync) await fdCall.fsync(fd);
    } finally {
      await fdCall.close(fd);
    }
  }

  async remove(id: string): Promise<void> {
    await unlink(this.pathOf(id)).catch((e: NodeJS.ErrnoException) => {
      if (e.code !== 'ENOENT') throw e;
    });
  }
}

/**
 * The blocks reserved ahead of one body's bytes: a window of up to {@link WINDOW_BYTES} (never
 * past what the body may bring) plus {@link SLACK_BYTES}, extended as the bytes arrive. When
 * the disk cannot give a whole window, it takes what the next batch needs; when it cannot give
 * that, the batch fails with ENOSPC and the slack is still there for the record.
 */
class AllocationWindow {
  private end: number;
  private reserved = false;

  constructor(
    private readonly fd: number,
    private readonly start: number,
    private readonly limit: number,
    /** False: nothing is reserved (a small body). */
    private reserving = true,
  ) {
    this.end = start;
  }

  /** Makes sure `[position, position + bytes)` and the slack after it are reserved. */
  async cover(position: number, bytes: number): Promise<void> {
    const needed = position + bytes + SLACK_BYTES;
    if (!this.reserving || needed <= this.end) return;
    const wanted = Math.max(needed, Math.min(position + WINDOW_BYTES, this.limit) + SLACK_BYTES);
    let end = wanted;
    try {
      this.reserving = await allocateRange(this.fd, this.end, end - this.end);
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== 'ENOSPC' || wanted === needed) throw e;
      end = needed;
      this.reserving = await allocateRange(this.fd, this.end, end - this.end);
    }
    if (this.reserving) {
      this.end = end;
      this.reserved = true;
    }
  }

  /**
   * Gives back everything past `position`, where the bytes written end: what was reserved and
   * not filled, and what an earlier write cut by a crash left past the offset it got to (never
   * counted, and it must not trail the upload's bytes when it completes).
   */
  async release(position: number): Promise<void> {
    // With nothing reserved, a body that filled its limit may have brought the upload's last
    // byte: whatever an earlier write left past it goes too.
    if (this.reserved || (position === this.limit && position > this.start)) {
      await fdCall.ftruncate(this.fd, position);
    }
  }
}

type OpenCallback = (error: Error | null, fd?: number) => void;

/** The chunks past the first `skip` bytes (after a short write). */
function remaining(chunks: Buffer[], skip: number): Buffer[] {
  if (skip === 0) return chunks;
  const rest: Buffer[] = [];
  for (const chunk of chunks) {
    if (skip >= chunk.length) {
      skip -= chunk.length;
      continue;
    }
    rest.push(skip > 0 ? chunk.subarray(skip) : chunk);
    skip = 0;
  }
  return rest;
}

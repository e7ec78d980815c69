import type { UploadRecord } from '../core/upload-record.js';
import { createReadStream, createWriteStream } from 'node:fs';
import { chmod, rename, unlink } from 'node:fs/promises';
import { dirname } from 'node:path';
import type { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { randomTempPath, syncDirectory, writeFileAtomic } from '../storage/durable-file.js';
import { isRefusedFile, openRegularFile } from '../storage/safe-file.js';
import { UnsafeFileError } from '../storage/storage.interfaces.js';
import type { ObjectLocation, StoredObjects } from './completed-upload.queue.js';
import { moveFile, type SaveOptions } from './move-file.js';

/** Where the bytes of a finished upload are while it is in the queue. */
export type UploadLocation =
  | { kind: 'file'; path: string }
  /** An object of an object store (the S3 storage): its bucket and key. */
  | ({ kind: 'object' } & ObjectLocation);

/** A finished upload whose bytes stayed in an object store. */
export interface StoredObject {
  location: ObjectLocation;
  objects: StoredObjects;
}

/** What a queue does when a claim ends; given by the queue that made the claim. */
export interface ClaimRelease {
  /** Deletes what the consumer left behind, keeps a receipt, then lets go of the claim. */
  (upload: CompletedUpload): Promise<void>;
}

/**
 * A finished upload claimed by one consumer. Move its files out with `save` / `saveRecord`;
 * `release()` (or `await using`) deletes whatever is left in the queue and ends the claim.
 */
export class CompletedUpload implements AsyncDisposable {
  private saved = false;
  private recordSaved = false;
  private dataMoved = false;
  private recordMoved = false;
  private released = false;

  constructor(
    /** The upload id (a UUID), also the file name in the completed directory. */
    readonly name: string,
    /**
     * The data file in the queue (for an object, an empty file the claim is held on); `null`
     * when the queue keeps no file for it (the bytes are an object, the entry is elsewhere).
     */
    private readonly dataPath: string | null,
    /** The record (`.meta`) file in the queue; `null` when the queue keeps it elsewhere. */
    private readonly recordFile: string | null,
    /** The upload's record: metadata, server metadata, length, timestamps. */
    readonly record: UploadRecord,
    private readonly onRelease: ClaimRelease,
    /** fsync the destination directory of each move (the queue's `fsync` option). */
    private readonly durable = true,
    /** Bytes that stayed in an object store. */
    private readonly stored?: StoredObject,
  ) {}

  /**
   * Path of the data file while it is in the queue. An upload whose bytes are an object (see
   * `location`) has no such file: use `save` or `stream`.
   */
  get path(): string {
    if (this.stored) {
      const { bucket, key } = this.stored.location;
      throw new Error(
        `${this.name}: the bytes are object ${key} of bucket ${bucket}; use save() or stream()`,
      );
    }
    return this.dataPath!;
  }

  /**
   * Path of the record (`.meta` JSON) while it is in the queue. A queue that keeps records
   * elsewhere (in an object store) has none: use `record` or `saveRecord`.
   */
  get recordPath(): string {
    if (this.recordFile === null) {
      throw new Error(`${this.name}: the record is not a file of the queue; use saveRecord()`);
    }
    return this.recordFile;
  }

  /**
   * Moves the data file to `dest` (rename; across filesystems copy, fsync, unlink). Once only.
   * The file keeps the mode it had in the queue (0o600 unless the module's `fileMode` widened
   * it) unless `options.mode` sets another. Only a regular file with one link is moved: if
   * something else was planted under its name, `UnsafeFileError` is thrown and nothing is
   * followed or copied.
   */
  async save(dest: string, options?: SaveOptions): Promise<void> {
    this.assertHeld();
    if (this.saved) throw new Error(`${this.name}: save() was already called`);
    this.saved = true;
    if (this.stored) {
      await this.download(dest, options);
      return;
    }
    await moveFile(this.path, dest, this.durable, options);
    this.dataMoved = true;
  }

  /**
   * An object is streamed into a temp file beside `dest` (created exclusively, never through
   * a symlink), made durable, then renamed into place; it is deleted from the store on release.
   */
  private async download(dest: string, options?: SaveOptions): Promise<void> {
    const temp = randomTempPath(dest);
    try {
      const source = await this.stored!.objects.read(this.stored!.location);
      const out = createWriteStream(temp, {
        flags: 'wx',
        mode: options?.mode ?? 0o600,
        flush: true,
      });
      await pipeline(source, out);
      await rename(temp, dest);
    } catch (e) {
      await unlink(temp).catch(() => {});
      throw e;
    }
    if (this.durable) await syncDirectory(dirname(dest));
  }

  /** Where the bytes are while the upload is in the queue: a local file, or an object. */
  get location(): UploadLocation {
    if (this.stored) return { kind: 'object', ...this.stored.location };
    return { kind: 'file', path: this.path };
  }

  /**
   * The bytes, as a stream (to hash, scan or forward them without moving the file). Only a
   * regular file with one link is read (`UnsafeFileError` otherwise); not after `save`.
   */
  async stream(): Promise<Readable> {
    this.assertHeld();
    if (this.dataMoved) throw new Error(`${this.name}: the data was saved elsewhere`);
    if (this.stored) return this.stored.objects.read(this.stored.location);
    let fd: number;
    try {
      fd = await openRegularFile(this.path, false);
    } catch (e) {
      throw isRefusedFile(e) ? new UnsafeFileError(this.path, { cause: e }) : e;
    }
    return createReadStream('', { fd, highWaterMark: 1 << 20 });
  }

  /** Moves the record (`.meta` JSON) to `dest`, as `save` moves the data. Once only. */
  async saveRecord(dest: string, options?: SaveOptions): Promise<void> {
    this.assertHeld();
    if (this.recordSaved) throw new Error(`${this.name}: saveRecord() was already called`);
    this.recordSaved = true;
    if (this.recordFile === null) {
      // Written out: a temp file beside `dest` (never through a symlink), then renamed.
      await writeFileAtomic(dest, JSON.stringify(this.record), this.durable, {
        mode: options?.mode ?? 0o600,
      });
      if (options?.mode !== undefined) await chmod(dest, options.mode);
      return;
    }
    await moveFile(this.recordFile, dest, this.durable, options);
    this.recordMoved = true;
  }

  /** The paths still in the queue (not moved out by a successful `save` / `saveRecord`). */
  get leftInQueue(): string[] {
    return [
      ...(this.dataMoved || this.dataPath === null ? [] : [this.dataPath]),
      ...(this.recordMoved || this.recordFile === null ? [] : [this.recordFile]),
    ];
  }

  /**
   * The object the bytes are, when they stayed in an object store (for the queue, which
   * deletes it with what else is left when the claim ends).
   */
  get storedObject(): StoredObject | undefined {
    return this.stored;
  }

  /** True once `release()` ran. */
  get isReleased(): boolean {
    return this.released;
  }

  /** Deletes the files still in the queue and ends the claim. Safe to call more than once. */
  async release(): Promise<void> {
    if (this.released) return;
    this.released = true;
    await this.onRelease(this);
  }

  async [Symbol.asyncDispose](): Promise<void> {
    await this.release();
  }

  private assertHeld(): void {
    if (this.released) throw new Error(`${this.name}: the upload was released`);
  }
}

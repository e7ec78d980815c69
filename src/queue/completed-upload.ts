import type { UploadRecord } from '../core/upload-record.js';
import { createReadStream } from 'node:fs';
import type { Readable } from 'node:stream';
import { isRefusedFile, openRegularFile } from '../storage/safe-file.js';
import { UnsafeFileError } from '../storage/storage.interfaces.js';
import { moveFile, type SaveOptions } from './move-file.js';

/** Where the bytes of a finished upload are while it is in the queue. */
export type UploadLocation = { kind: 'file'; path: string };

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
    /** Path of the data file while it is in the queue. */
    readonly path: string,
    /** Path of the record (`.meta`) while it is in the queue. */
    readonly recordPath: string,
    /** The upload's record: metadata, server metadata, length, timestamps. */
    readonly record: UploadRecord,
    private readonly onRelease: ClaimRelease,
    /** fsync the destination directory of each move (the queue's `fsync` option). */
    private readonly durable = true,
  ) {}

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
    await moveFile(this.path, dest, this.durable, options);
    this.dataMoved = true;
  }

  /** Where the bytes are while the upload is in the queue (today: a local file). */
  get location(): UploadLocation {
    return { kind: 'file', path: this.path };
  }

  /**
   * The bytes, as a stream (to hash, scan or forward them without moving the file). Only a
   * regular file with one link is read (`UnsafeFileError` otherwise); not after `save`.
   */
  async stream(): Promise<Readable> {
    this.assertHeld();
    if (this.dataMoved) throw new Error(`${this.name}: the data was saved elsewhere`);
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
    await moveFile(this.recordPath, dest, this.durable, options);
    this.recordMoved = true;
  }

  /** The paths still in the queue (not moved out by a successful `save` / `saveRecord`). */
  get leftInQueue(): string[] {
    return [...(this.dataMoved ? [] : [this.path]), ...(this.recordMoved ? [] : [this.recordPath])];
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

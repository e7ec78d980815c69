import type { Readable } from 'node:stream';
import type { StorageState, UploadMetadata, UploadRecord } from '../core/upload-record.js';
import type { CompletedEntries } from '../queue/completed-entries.js';
import type { ObjectLocation, StoredObjects } from '../queue/completed-upload.queue.js';

/** A file held open read-write by a lock on it (the filesystem locker locks the data file). */
export interface LockedFile {
  readonly path: string;
  /** The read-write descriptor, open until the lock's `release()`. */
  readonly fd: number;
}

/** What a write of bytes into an upload is told when it opens. */
export interface WriteOptions {
  /** The most bytes it will be given (a storage may reserve room ahead with it). */
  limit: number;
  /**
   * The bytes the body says it has (its Content-Length), when it says: a hint, never trusted
   * beyond `limit` (a storage may skip reserving room ahead for a small body).
   */
  expected?: number;
  /** The upload's storage state as its record has it (`UploadRecord.storage`). */
  state?: StorageState | null;
  /**
   * Fires when the write stops counting whatever it stores (its lock, a lease, was lost and
   * another holder may write): a storage sends nothing more that could land on the new holder's.
   */
  lost?: AbortSignal;
}

/**
 * One write of bytes into an upload. The protocol reads the request body (limits, idle cuts,
 * checksums, progress are its own) and hands the bytes over in order; the storage only writes
 * what it is given.
 */
export interface BodySink {
  /**
   * Writes a batch after every earlier one. One that fails after writing the start of the
   * batch throws a `PartialBatchError` saying how much, so that start still counts.
   */
  write(chunks: Buffer[], bytes: number): Promise<void>;
  /**
   * Called once after the last batch, whatever ended the body (also when nothing was
   * written): `written` bytes were written. Makes them durable and says how many count.
   */
  finish(written: number): Promise<WriteOutcome>;
  /**
   * Makes the `written` bytes so far durable in the middle of a body (the write goes on), so
   * the protocol can count them before the body ends. A storage without it counts a body's
   * bytes only at its end.
   */
  checkpoint?(written: number): Promise<WriteOutcome>;
}

/** What a write stored. */
export interface WriteOutcome {
  /** Bytes that count (durable when the storage syncs). */
  bytes: number;
  /**
   * The storage state that counts these `bytes` (a storage that keeps one): the protocol
   * stores it in the record with the new offset, or drops it with the bytes.
   */
  state?: StorageState;
  /** Making the bytes durable failed (then none of them count), or storing them did. */
  error?: Error;
}

/** A batch failed after its first `bytesWritten` bytes were written (a disk that filled up). */
export class PartialBatchError extends Error {
  constructor(
    override readonly cause: Error,
    readonly bytesWritten: number,
  ) {
    super(cause.message);
    this.name = 'PartialBatchError';
  }
}

/** Where the bytes of uploads live. The filesystem is the default; implement this for others. */
export interface UploadStorage {
  /**
   * Creates the (empty) data of a new upload of `length` bytes (`null`: deferred). Whether the
   * upload fits is decided before, by the space accounting: a storage need not reserve anything.
   * `metadata` is the client's (an object store names the finished object's type with it).
   * Returns the upload's first storage state, for a storage that keeps one in the record.
   */
  create(
    id: string,
    length: number | null,
    metadata?: UploadMetadata,
  ): Promise<StorageState | void>;
  /** Opens a write of bytes at `offset` (the protocol feeds it the body's bytes). */
  openWrite(id: string, offset: number, options: WriteOptions): Promise<BodySink>;
  /**
   * Reads `length` bytes of an upload's data from `start` (concatenation assembles with it).
   * A storage whose `readsOpenUploads` is false reads only an upload that was `complete`d.
   */
  read(id: string, start: number, length: number, state?: StorageState | null): Readable;
  /**
   * False when the bytes of an upload still open cannot be read back (an object store before
   * `complete`): a checksum sent as a trailer is then computed while the body streams.
   * @default true
   */
  readonly readsOpenUploads?: boolean;
  /**
   * Told once every byte of an upload is stored, before it is finalized or assembled from
   * (an object store completes its multipart upload). Called again after a crash: idempotent.
   */
  complete?(id: string, state?: StorageState | null): Promise<void>;
  /**
   * Where a complete upload's bytes stay for the completed queue, when they are an object of
   * the storage's own (an object store): the queue keeps the location, not the bytes, and
   * reads and deletes them through `objects`.
   */
  finishedObject?(id: string): ObjectLocation;
  /** How the completed queue reads and deletes finished objects (with `finishedObject`). */
  readonly objects?: StoredObjects;
  /**
   * Deletes leftovers of writes a crash interrupted, older than `ageMs` (an object store's
   * multipart uploads and pieces no upload names); returns how many. For the janitor.
   */
  sweep?(ageMs: number): Promise<number>;
  /**
   * The storage's own per-upload locks, when it has them (the filesystem's `flock` on the data
   * file, whose descriptor its writes then go through). @default in-process locks
   */
  readonly locker?: UploadLocker;
  /** Where the records are when the storage keeps them beside its bytes (an object store). */
  readonly recordStore?: UploadRecordStore;
  /**
   * Where a completed queue that claims elsewhere (Redis) keeps its entries, when the storage
   * keeps them beside its bytes (an object store: no directory shared by the replicas).
   */
  readonly completedEntries?: CompletedEntries;
  /**
   * Appends the bytes of another upload (a `complete`d one) to `id` at `offset` without
   * streaming them through the server, as concatenation assembles a final from its partials
   * (an object store copies inside itself). Returns the new state, or
   * `null` when it cannot here (the caller streams the bytes).
   */
  copyFrom?(
    id: string,
    offset: number,
    sourceId: string,
    length: number,
    state?: StorageState | null,
    sourceState?: StorageState | null,
  ): Promise<StorageState | null>;
  /** Lets go of what the storage holds open (clients, scratch files), after the last request. */
  close?(): Promise<void>;
  /**
   * Told the length of an upload created with a deferred length, once it is known (a storage
   * that sizes its data ahead may do it here).
   */
  allocate?(id: string, length: number, state?: StorageState | null): Promise<StorageState | void>;
  /** Removes the data of an upload; a missing upload is not an error. */
  remove(id: string, state?: StorageState | null): Promise<void>;
  /** Shortens an upload's data to `length` bytes (frees space a full disk needs for records). */
  truncate?(id: string, length: number): Promise<void>;
  /**
   * Where the upload's bytes are as one local file, when they are (the completed queue then
   * moves the file); without it, a finished upload's bytes are read and copied.
   */
  localPath?(id: string): string;
  /**
   * A directory on the local volume the bytes are written to, when they are: creations are then
   * accounted for against its free space (see `SpaceAccounting`).
   */
  readonly volume?: string;
  /** The ids of every upload with data, and how old the data is (ms since its last change). */
  list(): Promise<{ id: string; ageMs: number }[]>;
  /**
   * Whether the storage is reachable now (an object store's bucket); throws a one-line reason
   * when it is not. Health checks call it; storages on a local directory need none.
   */
  check?(): Promise<void>;
}

/** Where the records of uploads live (`{id}.meta` on the filesystem). */
export interface UploadRecordStore {
  /** The record, or `null` when there is none. */
  get(id: string): Promise<UploadRecord | null>;
  /** Stores a record, replacing any other atomically: a reader sees the old or the new one. */
  put(id: string, record: UploadRecord): Promise<void>;
  /** Removes a record; a missing one is not an error. */
  remove(id: string): Promise<void>;
  /** The ids of every stored record (for recovery and the janitor). */
  list(): Promise<string[]>;
  /** Deletes leftovers of interrupted writes older than `ageMs` (temp files); returns how many. */
  sweep?(ageMs: number): Promise<number>;
}

/** A held lock. */
export interface UploadLock {
  release(): Promise<void>;
  /**
   * Locks with a lease (Redis) only: fires when the lock is lost before `release()` (its lease
   * could not be renewed, or another holder has it). Whoever writes under the lock must stop.
   */
  readonly signal?: AbortSignal;
  /** File locks only: the locked file, open read-write until `release()`. */
  readonly file?: LockedFile;
  /**
   * File locks only: takes the locked file's descriptor out of the lock, its `flock` still
   * held (the completed queue hands a finished upload to a consumer with it). `release()`
   * then lets go of the rest and leaves it open; closing it drops the `flock`.
   */
  detachFile?(): number;
}

/** Thrown by `UploadLocker.acquire` when the lock was not free within the wait. */
export class LockTimeoutError extends Error {
  override readonly name = 'LockTimeoutError';
}

/** Thrown by `UploadLocker.acquire` when there is no such upload to lock. */
export class LockTargetMissingError extends Error {
  override readonly name = 'LockTargetMissingError';
}

/**
 * A file of an upload is not a regular file of its own: a symlink, FIFO, socket, device,
 * directory or hard link was planted under its name. It was refused (never followed, never
 * waited on) and moved aside with one log line; the upload answers as missing (404).
 */
export class UnsafeFileError extends Error {
  override readonly name = 'UnsafeFileError';

  constructor(
    /** The name that held the refused entry. */
    readonly path: string,
    options?: ErrorOptions,
  ) {
    super(`${path} is not a regular file of its own; refused`, options);
  }
}

/** Exclusive per-upload locks; the filesystem locker holds across processes of one host. */
export interface UploadLocker {
  /** Waits up to `waitMs` for the lock of `id`. */
  acquire(id: string, waitMs: number): Promise<UploadLock>;
}

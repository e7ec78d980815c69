import { createWriteStream, lstatSync, mkdirSync, statSync, watch, type FSWatcher } from 'node:fs';
import { lstat, readdir, rename, unlink, writeFile } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import type { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { isUploadId } from '../core/upload-id.js';
import { UploadRecord } from '../core/upload-record.js';
import {
  CANNOT_REPLACE,
  TEMP_FILE,
  randomTempPath,
  readSmallFile,
  sweepTempFiles,
  syncDirectory,
  writeFileAtomic,
} from '../storage/durable-file.js';
import { fdCall } from '../storage/fd.js';
import { nativeAddon } from '../storage/native.js';
import { fileLockOn, tryLockFile, type FileLock } from '../storage/file-lock.js';
import {
  isRefusedFile,
  openRegularFile,
  quarantineFile,
  refusedFileError,
  warnToConsole,
} from '../storage/safe-file.js';
import { LockTargetMissingError, UnsafeFileError } from '../storage/storage.interfaces.js';
import type { CompletedEntries, OpenedEntry } from './completed-entries.js';
import { CompletedUpload } from './completed-upload.js';
import { WakeSignal } from './wake-signal.js';
import {
  CompletedUploadQueue,
  type FinishedBytes,
  type HeldFileLock,
  objectLocationOf,
  type ObjectLocation,
  type StoredObjects,
  type WaitForFileOptions,
} from './completed-upload.queue.js';

export interface FilesystemCompletedQueueOptions {
  /** The completed directory: `{id}` data and `{id}.meta` record of each finished upload. */
  directory: string;
  /**
   * The staging directory finished data files are renamed from (same filesystem); not needed
   * when every upload's bytes are copied or stay in an object store.
   */
  stagingDirectory?: string;
  /** fsync the record and the directories of each move. @default true */
  fsync?: boolean;
  /** Mode of the directories when created (the umask applies). @default 0o700 */
  directoryMode?: number;
  /**
   * Mode of the records and receipts written (the umask applies); data files keep the mode
   * they were created with in staging. @default 0o600
   */
  fileMode?: number;
  /** Rescan at least this often when the directory watch says nothing. @default 2000 */
  pollIntervalMs?: number;
  /**
   * The object store of uploads whose bytes stay in it (`FinishedBytes.object`): the queue then
   * holds their records and claims, and hands out where the bytes are.
   */
  objects?: StoredObjects;
  /**
   * Where quarantined records are reported, and files refused as unsafe (a symlink, FIFO,
   * directory or hard link planted under the name of a data file, record or receipt, moved
   * aside), one line each. @default console.warn
   */
  log?: (message: string) => void;
}

/** Suffix of the small record kept after a consumer took an upload (HEAD still answers). */
export const RECEIPT_SUFFIX = '.done';
/** Where unreadable records and their data are moved aside. */
export const QUARANTINE_DIR = '.quarantine';

/**
 * An upload finished by a request of this process waits this long for a consumer of this
 * process with its claim held (no other process's consumer can take it meanwhile); then the
 * claim is let go and any consumer may take it.
 */
const ADOPTED_MS = 1000;
/** At most this many uploads wait with their claim held for this process's consumers. */
const ADOPTED_MAX = 64;
/** A consumer of this process counts as there this long after its last `waitForFile` ended. */
const CONSUMER_GRACE_MS = 1000;

/** A finished upload whose claim this process holds, for its own consumers. */
interface Adopted {
  record: UploadRecord;
  lock: FileLock;
  at: number;
}

const ignoreMissing = (e: NodeJS.ErrnoException) => {
  if (e.code !== 'ENOENT') throw e;
};

/**
 * The completed queue on a directory shared by every process of a host. A claim is an exclusive
 * non-blocking `flock` on the data file, held until release: a consumer that dies loses its
 * lock with its process, and the upload goes back to the queue. Waiters wake on a directory
 * watch, with a slow rescan as fallback, never in a busy loop.
 *
 * Data files, records and receipts are opened only as regular files with one link (never
 * following a symlink, never waiting on a FIFO); anything else planted under their names is
 * moved aside with one log line, and the upload is not handed out.
 */
export class FilesystemCompletedQueue extends CompletedUploadQueue implements CompletedEntries {
  readonly directory: string;
  private readonly stagingDirectory: string | undefined;
  private readonly fsync: boolean;
  private readonly directoryMode: number;
  private readonly fileMode: number;
  private readonly pollIntervalMs: number;
  private readonly log: (message: string) => void;
  private readonly objects: StoredObjects | undefined;
  private readonly closing = new AbortController();
  private readonly wakeSignal = new WakeSignal();
  private watcher: FSWatcher | undefined;
  /** Candidates of the last directory read not yet tried or still held by others. */
  private pending: string[] = [];
  private lastScan = 0;
  /**
   * Something may have changed in the directory that this process did not do itself since the
   * last scan began (the watch said so, or there is no watch): only then is a scan that found
   * nothing worth repeating before the poll interval.
   */
  private news = true;
  /** Arrival time (mtime) of each data file seen in the directory. */
  private readonly arrivals = new Map<string, number>();
  /** Finished here with the finalizing request's lock kept as their claim (oldest first). */
  private readonly adopted = new Map<string, Adopted>();
  private adoptedTimer: NodeJS.Timeout | undefined;
  /** Alternates claims between adopted uploads and those found in the directory. */
  private adoptedTurn = false;
  /** `waitForFile` calls of this process under way, and when the last one ended. */
  private waiters = 0;
  private lastWaitEnd = 0;
  /**
   * Uploads this process handed to its own consumers: their files' comings and goings in the
   * directory (the watch reports each) are no news to wake for. Two generations, bounded.
   */
  private ownIds = new Set<string>();
  private ownIdsBefore = new Set<string>();

  constructor(options: FilesystemCompletedQueueOptions) {
    super();
    this.directory = options.directory;
    this.stagingDirectory = options.stagingDirectory;
    this.fsync = options.fsync ?? true;
    this.pollIntervalMs = options.pollIntervalMs ?? 2000;
    this.log = options.log ?? warnToConsole;
    this.objects = options.objects;
    this.directoryMode = options.directoryMode ?? 0o700;
    this.fileMode = options.fileMode ?? 0o600;
    mkdirSync(this.directory, { recursive: true, mode: this.directoryMode });
    if (this.stagingDirectory === undefined) return;
    mkdirSync(this.stagingDirectory, { recursive: true, mode: this.directoryMode });
    if (statSync(this.directory).dev !== statSync(this.stagingDirectory).dev) {
      throw new Error(
        `completedDir (${this.directory}) and uploadDir (${this.stagingDirectory}) must be on the same ` +
          'filesystem: finished uploads are moved between them with an atomic rename',
      );
    }
  }

  get description(): string {
    return this.directory;
  }

  dataPath(id: string): string {
    return join(this.directory, id);
  }

  recordPath(id: string): string {
    return join(this.directory, `${id}.meta`);
  }

  private receiptPath(id: string): string {
    return join(this.directory, `${id}${RECEIPT_SUFFIX}`);
  }

  /**
   * Record first, then the data: a consumer only looks at data files, so it never finds one
   * without its whole record. A crash in between leaves the staging record, which recovery uses
   * to finish the move.
   *
   * The data file moved is the regular file checked (opened first, its inode compared after
   * the rename); anything else planted in staging is moved aside, the record taken back, and
   * `UnsafeFileError` thrown. Its timestamps are set through that descriptor, never by name.
   */
  async enqueue(
    id: string,
    record: UploadRecord,
    bytes?: FinishedBytes,
    held?: HeldFileLock,
  ): Promise<void> {
    if (bytes && 'read' in bytes) return this.enqueueCopy(id, record, bytes.read);
    if (bytes && 'object' in bytes) return this.enqueueObject(id, record, bytes.object);
    // A consumer of this process will take it with the finalizing request's lock, as soon as
    // it is in place: no wake-up of the waiters for a file they would find locked.
    const adopting = held !== undefined && this.adopts();
    if (adopting) this.markOwn(id);
    const staged = bytes?.path ?? join(this.stagingDirectory ?? '', id);
    try {
      await this.writeRecordFile(this.recordPath(id), JSON.stringify(record), this.fsync);
      if (!bytes && this.stagingDirectory === undefined) throw new Error('no staging directory');
      if (!(await this.arriveNative(id, staged))) await this.arrivePortable(id, staged);
    } catch (e) {
      // Not adopted after all: this process's scans must see it like any other.
      this.unmarkOwn(id);
      throw e;
    }
    if (adopting) this.adopt(id, record, held);
    // Adopted: a waiter of this process takes it without reading the directory.
    this.wake(!adopting);
  }

  /**
   * The data file's move into the queue as one job of the native addon: false when there is
   * none, or when a directory planted under its name needs the portable path's quarantine.
   */
  private async arriveNative(id: string, staged: string): Promise<boolean> {
    if (!nativeAddon?.arriveFile) return false;
    let result: 'moved' | 'replaced';
    try {
      result = await nativeAddon.arriveFile(
        staged,
        this.dataPath(id),
        dirname(staged),
        this.directory,
        this.fsync,
      );
    } catch (e) {
      const { syscall, code = '' } = e as NodeJS.ErrnoException;
      if (syscall === 'rename' && CANNOT_REPLACE.has(code)) return false;
      if (syscall === 'open') await this.refuseStaged(id, staged, e);
      throw e;
    }
    if (result === 'replaced') await this.refuseArrived(id, staged);
    return true;
  }

  /**
   * The staged data file could not be opened (gone, or not a regular file of its own: moved
   * aside): the record written for it is taken back.
   */
  private async refuseStaged(id: string, staged: string, error: unknown): Promise<never> {
    await unlink(this.recordPath(id)).catch(() => {});
    throw await refusedFileError(error, staged, this.log);
  }

  /** Swapped in staging between the check and the rename: never handed to a consumer. */
  private async refuseArrived(id: string, staged: string): Promise<never> {
    await quarantineFile(this.dataPath(id), 'replaced after its check', this.log);
    await unlink(this.recordPath(id)).catch(() => {});
    throw new UnsafeFileError(staged);
  }

  /** {@link arriveNative} with fs calls. */
  private async arrivePortable(id: string, staged: string): Promise<void> {
    let fd: number;
    try {
      fd = await openRegularFile(staged, false);
    } catch (e) {
      return this.refuseStaged(id, staged, e);
    }
    try {
      const checked = await fdCall.fstat(fd);
      await this.renameInto(staged, this.dataPath(id));
      const arrived = await lstat(this.dataPath(id));
      if (arrived.ino !== checked.ino || arrived.dev !== checked.dev) {
        await this.refuseArrived(id, staged);
      }
      // Age in the queue counts from now (expiry, oldest-first order), not from the last write.
      const now = new Date();
      await fdCall.futimes(fd, now, now);
    } finally {
      await fdCall.close(fd);
    }
    if (this.fsync) {
      await syncDirectory(this.directory);
      await syncDirectory(dirname(staged));
    }
  }

  /** Whether an upload finished now would be taken by a consumer of this process soon. */
  private adopts(): boolean {
    if (this.closing.signal.aborted || this.adopted.size >= ADOPTED_MAX) return false;
    return this.waiters > 0 || Date.now() - this.lastWaitEnd < CONSUMER_GRACE_MS;
  }

  /**
   * Keeps the finalizing request's `flock` on the data file (same inode, now in the queue) as
   * this process's claim, for its next `waitForFile`; let go after {@link ADOPTED_MS}.
   */
  private adopt(id: string, record: UploadRecord, held: HeldFileLock): void {
    const lock = fileLockOn(held());
    // A copy: the request and its event listeners keep the record they have.
    this.adopted.set(id, { record: UploadRecord.fromJSON(record.toJSON()), lock, at: Date.now() });
    this.adoptedTimer ??= setTimeout(() => this.letGoOfAdopted(), ADOPTED_MS).unref();
  }

  /** Lets go of the claims adopted longer than {@link ADOPTED_MS} ago: any consumer may take them. */
  private letGoOfAdopted(): void {
    this.adoptedTimer = undefined;
    const now = Date.now();
    let released = false;
    for (const [id, entry] of this.adopted) {
      if (now - entry.at < ADOPTED_MS) {
        this.adoptedTimer = setTimeout(
          () => this.letGoOfAdopted(),
          ADOPTED_MS - (now - entry.at),
        ).unref();
        break;
      }
      this.adopted.delete(id);
      // Anyone's now, this process's scans included.
      this.unmarkOwn(id);
      entry.lock.release().catch(() => {});
      released = true;
    }
    if (released) this.wake();
  }

  /** The adopted claim of `id`, taken out of the waiting ones, if this process holds it. */
  private takeAdopted(id?: string): [string, Adopted] | undefined {
    const key = id ?? this.adopted.keys().next().value;
    const entry = key === undefined ? undefined : this.adopted.get(key);
    if (entry === undefined) return undefined;
    this.adopted.delete(key!);
    return [key!, entry];
  }

  private markOwn(id: string): void {
    if (this.ownIds.size >= 1024) {
      this.ownIdsBefore = this.ownIds;
      this.ownIds = new Set();
    }
    this.ownIds.add(id);
  }

  private unmarkOwn(id: string): void {
    this.ownIds.delete(id);
    this.ownIdsBefore.delete(id);
  }

  private isOwn(id: string): boolean {
    return this.ownIds.has(id) || this.ownIdsBefore.has(id);
  }

  /**
   * The bytes of another storage: copied into a temp file of the queue (a name no consumer
   * looks at), made durable, then the record written and the file renamed into place: the same
   * order as a move, so a consumer never finds data without its record.
   */
  private async enqueueCopy(id: string, record: UploadRecord, read: () => Readable): Promise<void> {
    // A temp file's name (see TEMP_FILE): the janitor sweeps one a crash left behind.
    await this.arrive(id, async (temp) => {
      const out = createWriteStream(temp, { flags: 'wx', mode: this.fileMode, flush: this.fsync });
      await pipeline(read(), out);
      await this.writeRecordFile(this.recordPath(id), JSON.stringify(record), this.fsync);
    });
  }

  /**
   * A data file arrives: `fill` writes it under a temp name of the queue (one no consumer looks
   * at; the janitor sweeps one a crash left), then it is renamed into place and waiters woken.
   */
  private async arrive(id: string, fill: (temp: string) => Promise<void>): Promise<void> {
    const temp = randomTempPath(this.dataPath(id));
    try {
      await fill(temp);
      await this.renameInto(temp, this.dataPath(id));
    } catch (e) {
      await unlink(temp).catch(() => {});
      throw e;
    }
    if (this.fsync) await syncDirectory(this.directory);
    this.wake();
  }

  /**
   * Bytes that stay in an object store: the record says where (`object`), and an empty data
   * file arrives in the directory as for any upload, to be claimed (its lock is the claim).
   */
  private async enqueueObject(
    id: string,
    record: UploadRecord,
    location: ObjectLocation,
  ): Promise<void> {
    if (!this.objects) throw new Error('this queue has no object store for finished objects');
    const json = JSON.stringify({ ...record.toJSON(), object: location });
    await this.writeRecordFile(this.recordPath(id), json, this.fsync);
    await this.arrive(id, (temp) => writeFile(temp, '', { flag: 'wx', mode: this.fileMode }));
  }

  /** Where the bytes of a queued upload are when they stayed in an object store. */
  private async objectOf(id: string): Promise<ObjectLocation | undefined> {
    try {
      return objectLocationOf(JSON.parse(await readSmallFile(this.recordPath(id))));
    } catch {
      return undefined;
    }
  }

  /** Deletes the object of a queued upload, if its bytes are one. */
  private async removeObject(id: string): Promise<void> {
    const location = await this.objectOf(id);
    if (location) await this.requireObjects().remove(location);
  }

  private requireObjects(): StoredObjects {
    if (!this.objects) throw new Error('this queue has no object store for finished objects');
    return this.objects;
  }

  async lookup(id: string): Promise<UploadRecord | null> {
    if (!isUploadId(id)) return null;
    for (const path of [this.recordPath(id), this.receiptPath(id)]) {
      try {
        return UploadRecord.fromJSON(JSON.parse(await readSmallFile(path)));
      } catch (e) {
        if (isRefusedFile(e)) await quarantineFile(path, e, this.log);
        else if ((e as NodeJS.ErrnoException).code !== 'ENOENT' && !(e instanceof SyntaxError)) {
          throw e;
        }
      }
    }
    return null;
  }

  /** A record or receipt, replacing (never following) what is under its name. */
  private writeRecordFile(path: string, data: string, durable: boolean): Promise<void> {
    return writeFileAtomic(path, data, durable, { mode: this.fileMode, log: this.log });
  }

  /**
   * rename(2) replaces a symlink, FIFO or file at `to` and never follows it; only a directory
   * planted there makes it fail: that one is moved aside (one log line) and the rename retried.
   */
  private async renameInto(from: string, to: string): Promise<void> {
    try {
      await rename(from, to);
    } catch (e) {
      const code = (e as NodeJS.ErrnoException).code ?? '';
      if (!CANNOT_REPLACE.has(code)) throw e;
      await quarantineFile(to, e, this.log);
      await rename(from, to);
    }
  }

  async remove(id: string): Promise<'removed' | 'held' | 'missing'> {
    if (!isUploadId(id)) return 'missing';
    let lock: FileLock | null = this.takeAdopted(id)?.[1].lock ?? null;
    try {
      lock ??= await tryLockFile(this.dataPath(id), undefined, this.log);
      if (!lock) return 'held';
    } catch (e) {
      if (!(e instanceof LockTargetMissingError)) throw e;
    }
    try {
      return (await this.removeEntry(id)) || lock !== null ? 'removed' : 'missing';
    } finally {
      await lock?.release();
    }
  }

  /** Deletes an entry's object (if its bytes are one), record, receipt and data file. */
  async removeEntry(id: string): Promise<boolean> {
    let found = false;
    await this.removeObject(id);
    for (const path of [this.recordPath(id), this.receiptPath(id), this.dataPath(id)]) {
      await unlink(path).then(
        () => (found = true),
        (e: NodeJS.ErrnoException) => ignoreMissing(e),
      );
    }
    return found;
  }

  override async depth(): Promise<number> {
    return (await this.listIds()).length;
  }

  /** Uploads with their data and record in the directory. */
  async listIds(): Promise<string[]> {
    const names = new Set(await readdir(this.directory));
    return [...names].filter((n) => isUploadId(n) && names.has(`${n}.meta`));
  }

  /**
   * An entry claimed elsewhere (the Redis queue). Its data must be a regular file of its own
   * (the consumer is handed its path): anything else planted under the name is moved aside,
   * never handed out; an unreadable record is quarantined.
   */
  async open(id: string): Promise<OpenedEntry | null> {
    const dataPath = this.dataPath(id);
    const recordPath = this.recordPath(id);
    try {
      await fdCall.close(await openRegularFile(dataPath, false));
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code === 'ENOENT') return null;
      if (!isRefusedFile(e)) throw e;
      await quarantineFile(dataPath, e, this.log);
      return null;
    }
    let json: unknown;
    let record: UploadRecord;
    try {
      json = JSON.parse(await readSmallFile(recordPath));
      record = UploadRecord.fromJSON(json);
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code === 'ENOENT') return null;
      await this.quarantine(id, e);
      return null;
    }
    await this.writeReceipt(id, record);
    const object = objectLocationOf(json);
    return {
      record,
      dataPath,
      recordPath,
      stored: object && { location: object, objects: this.requireObjects() },
    };
  }

  /**
   * Deletes what a consumer left in the queue: the object its bytes are (always: `save`
   * downloads a copy), then the files it did not move. An object the store failed to delete
   * is left to the store's own clean-up; the claim still ends (never handed out twice).
   */
  async discard(upload: CompletedUpload): Promise<void> {
    try {
      const object = upload.storedObject;
      if (object) await object.objects.remove(object.location);
    } finally {
      for (const path of upload.leftInQueue) await unlink(path).catch(ignoreMissing);
    }
  }

  override sweep(ageMs: number): Promise<number> {
    return sweepTempFiles(this.directory, ageMs);
  }

  async expire(ageMs: number): Promise<number> {
    // Data only under its lock, so a consumer's claim is never pulled away.
    return this.sweepExpired(ageMs, async (id) => {
      const lock = await tryLockFile(this.dataPath(id), undefined, this.log).catch(() => null);
      return lock && (() => lock.release());
    });
  }

  /**
   * Deletes what has been in the directory longer than `ageMs`: finished uploads (data and
   * record) that `hold` lets go of, receipts, temp files and records without data. `hold(id)`
   * returns a release function once the upload may be deleted, or `null` while someone holds it;
   * the Redis queue claims through Redis instead of `flock`. Returns how many uploads it deleted.
   */
  async sweepExpired(
    ageMs: number,
    hold: (id: string) => Promise<(() => Promise<void>) | null>,
  ): Promise<number> {
    const now = Date.now();
    const names = await readdir(this.directory);
    let expired = 0;
    for (const name of names) {
      const path = join(this.directory, name);
      // lstat: what is under the name, never a file a symlink points to.
      const info = await lstat(path).catch(() => null);
      if (!info?.isFile() || now - info.mtimeMs < ageMs) continue;
      const isData: boolean = isUploadId(name);
      if (isData) {
        const release = await hold(name);
        if (!release) continue;
        try {
          await this.removeObject(name);
          await unlink(this.recordPath(name)).catch(ignoreMissing);
          await unlink(path).catch(ignoreMissing);
          expired++;
        } finally {
          await release();
        }
      } else if (name.endsWith(RECEIPT_SUFFIX) || TEMP_FILE.test(name)) {
        await unlink(path).catch(ignoreMissing);
      } else if (name.endsWith('.meta') && !names.includes(name.slice(0, -5))) {
        // A record whose data a consumer saved before dying, or never got.
        await unlink(path).catch(ignoreMissing);
      }
    }
    return expired;
  }

  async waitForFile(options: WaitForFileOptions = {}): Promise<CompletedUpload> {
    this.startWatching();
    // A file skipped because it was locked is usually one whose finalizing request has not let
    // go yet (the watch fired on its rename): look again soon, backing off to the poll interval.
    let busyRetry = 25;
    this.waiters++;
    try {
      return await this.waitLoop(
        options,
        this.closing.signal,
        this.wakeSignal,
        this.pollIntervalMs,
        async () => {
          const { upload, skippedBusy } = await this.tryClaim();
          const retryMs = skippedBusy ? busyRetry : undefined;
          busyRetry = skippedBusy ? Math.min(busyRetry * 2, this.pollIntervalMs) : 25;
          return { upload, retryMs };
        },
      );
    } finally {
      this.waiters--;
      this.lastWaitEnd = Date.now();
    }
  }

  async close(): Promise<void> {
    this.closing.abort(new Error('the completed-upload queue is closed'));
    this.watcher?.close();
    this.watcher = undefined;
    clearTimeout(this.adoptedTimer);
    this.adoptedTimer = undefined;
    for (const { lock } of this.adopted.values()) await lock.release().catch(() => {});
    this.adopted.clear();
  }

  /**
   * A claim: an upload finished here with its claim kept (no lock to take, no record to read),
   * else one pass over the directory for the oldest finished upload nobody holds.
   */
  private async tryClaim(): Promise<{ upload?: CompletedUpload; skippedBusy: boolean }> {
    // This process's own first; but uploads found in the directory (another process's, or a
    // backlog from before a restart) get every other claim, and the directory is read at least
    // every poll interval: a steady flow of this process's uploads never starves them.
    this.adoptedTurn = !this.adoptedTurn;
    const scanDue = Date.now() - this.lastScan >= this.pollIntervalMs;
    const othersWaiting = this.pending.length > 0 || this.news;
    if (!scanDue && (this.adoptedTurn || !othersWaiting)) {
      const adopted = this.takeAdopted();
      if (adopted) return { upload: await this.handOut(...adopted), skippedBusy: false };
    }
    const found = await this.claimFromDirectory();
    if (found.upload) return found;
    const adopted = this.takeAdopted();
    if (adopted) return { upload: await this.handOut(...adopted), skippedBusy: found.skippedBusy };
    return found;
  }

  /** One pass over the directory: the oldest finished upload nobody holds, claimed. */
  private async claimFromDirectory(): Promise<{ upload?: CompletedUpload; skippedBusy: boolean }> {
    let skippedBusy = false;
    // Not those this process holds: its adopted ones, and those its consumers have.
    const candidates = (await this.candidates()).filter(
      (id) => !this.adopted.has(id) && !this.isOwn(id),
    );
    const keep: string[] = [];
    for (const [index, id] of candidates.entries()) {
      let lock: FileLock | null;
      try {
        // A data file that is not a regular file of its own is moved aside here, never claimed.
        lock = await tryLockFile(this.dataPath(id), undefined, this.log);
      } catch (e) {
        if (e instanceof LockTargetMissingError) continue;
        throw e;
      }
      if (!lock) {
        skippedBusy = true;
        keep.push(id);
        continue;
      }
      this.pending = [...keep, ...candidates.slice(index + 1)];
      const claimed = await this.readClaimedRecord(id, lock);
      if (claimed) {
        const { record, object } = claimed;
        return { upload: await this.handOut(id, { record, lock }, object), skippedBusy };
      }
    }
    this.pending = keep;
    return { skippedBusy };
  }

  /** A claimed upload, its receipt written (HEAD answers from it once the files are moved). */
  private async handOut(
    id: string,
    { record, lock }: { record: UploadRecord; lock: FileLock },
    object?: ObjectLocation,
  ): Promise<CompletedUpload> {
    try {
      await this.writeReceipt(id, record);
    } catch (e) {
      await lock.release();
      throw e;
    }
    // Its files leave the directory under this claim: no news for the waiters.
    this.markOwn(id);
    return new CompletedUpload(
      id,
      this.dataPath(id),
      this.recordPath(id),
      record,
      (u) => this.endClaim(u, lock),
      this.fsync,
      object && { location: object, objects: this.requireObjects() },
    );
  }

  /**
   * Data files with a record, oldest first. The directory is read again when the last list is
   * used up, or at most every 250 ms while a backlog is being worked through: a queue of
   * thousands must not cost a directory read per claim.
   */
  private async candidates(): Promise<string[]> {
    const sinceScan = Date.now() - this.lastScan;
    if (this.pending.length > 0 && sinceScan < 250) return this.pending;
    // Found nothing last time, and the watch has seen nothing new since.
    if (
      this.pending.length === 0 &&
      !this.news &&
      this.watcher &&
      sinceScan < this.pollIntervalMs
    ) {
      return [];
    }
    this.news = false;
    this.lastScan = Date.now();
    const names = new Set(await readdir(this.directory));
    const ids = [...names].filter(
      (n) => n.length === 36 && isUploadId(n) && names.has(`${n}.meta`),
    );
    this.pending = (await this.oldestFirst(ids)).map((entry) => entry.id);
    return this.pending;
  }

  /**
   * The ids, oldest arrival first. Each file is `stat`ed once, when first seen: a backlog of
   * thousands must not cost thousands of `stat` calls per claim.
   */
  private async oldestFirst(ids: string[]): Promise<{ id: string; arrived: number }[]> {
    const present = new Set(ids);
    for (const id of this.arrivals.keys()) if (!present.has(id)) this.arrivals.delete(id);
    const unseen = ids.filter((id) => !this.arrivals.has(id));
    await Promise.all(
      unseen.map(async (id) => {
        const info = await lstat(this.dataPath(id)).catch(() => null);
        if (info) this.arrivals.set(id, info.mtimeMs);
      }),
    );
    return ids
      .filter((id) => this.arrivals.has(id))
      .map((id) => ({ id, arrived: this.arrivals.get(id)! }))
      .sort((a, b) => a.arrived - b.arrived);
  }

  /** The record of a claimed upload; an unreadable one is quarantined and the claim dropped. */
  private async readClaimedRecord(
    id: string,
    lock: FileLock,
  ): Promise<{ record: UploadRecord; object?: ObjectLocation } | null> {
    try {
      const json: unknown = JSON.parse(await readSmallFile(this.recordPath(id)));
      return { record: UploadRecord.fromJSON(json), object: objectLocationOf(json) };
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code === 'ENOENT') {
        await lock.release();
        return null;
      }
      try {
        await this.quarantine(id, e);
      } finally {
        await lock.release();
      }
      return null;
    }
  }

  /**
   * Moves an upload whose record cannot be used (unparsable, or not a regular file of its own)
   * to `{directory}/.quarantine/`, with one log line. Renames move the entries themselves,
   * never what a symlink points to. (The Redis queue uses it too.)
   */
  async quarantine(id: string, reason: unknown): Promise<void> {
    const dir = join(this.directory, QUARANTINE_DIR);
    try {
      mkdirSync(dir, { recursive: true, mode: this.directoryMode });
    } catch {
      // Checked below.
    }
    if (!lstatSync(dir, { throwIfNoEntry: false })?.isDirectory()) {
      // Something planted as the quarantine directory (a symlink) would take the files
      // elsewhere: each is set aside in place instead.
      await quarantineFile(this.recordPath(id), reason, this.log);
      await quarantineFile(this.dataPath(id), reason, this.log);
      return;
    }
    await rename(this.recordPath(id), join(dir, `${id}.meta`)).catch(ignoreMissing);
    await rename(this.dataPath(id), join(dir, id)).catch(ignoreMissing);
    this.log(`quarantined completed upload ${id} (unreadable record: ${String(reason)}) in ${dir}`);
  }

  /**
   * The small record HEAD answers from once the consumer moved the files away; written when the
   * claim is made, so there is no moment (save, then release) when a client would get 404.
   * (The Redis queue uses it too.)
   */
  async writeReceipt(id: string, record: UploadRecord): Promise<void> {
    await this.writeRecordFile(this.receiptPath(id), JSON.stringify(record.toReceipt()), false);
  }

  /** Deletes what the consumer left, then lets go of the lock. */
  private async endClaim(upload: CompletedUpload, lock: FileLock): Promise<void> {
    try {
      // Only what the consumer did not move: no unlink that can only fail.
      await this.discard(upload);
    } finally {
      await lock.release();
    }
  }

  private startWatching(): void {
    if (this.watcher || this.closing.signal.aborted) return;
    try {
      // Only a data file's arrival (its rename into the directory, the last step of enqueue)
      // can make an upload claimable. Records, receipts, temp files and timestamps change
      // around it several times per upload; waking on each would rescan the directory as often.
      this.watcher = watch(this.directory, { persistent: false }, (event, name) => {
        if (name === null) return this.wake();
        if (event === 'rename' && isUploadId(String(name)) && !this.isOwn(String(name))) {
          this.wake();
        }
      });
      this.watcher.on('error', () => {
        // The rescan interval keeps the queue going without the watch.
        this.watcher?.close();
        this.watcher = undefined;
      });
    } catch {
      this.watcher = undefined;
    }
  }

  /** Wakes the waiters; `news`: for something a scan of the directory would find. */
  private wake(news = true): void {
    if (news) this.news = true;
    this.wakeSignal.wake();
  }
}

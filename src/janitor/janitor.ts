import { recoverFinalizes } from '../protocol/recovery.js';
import type { TusContext } from '../protocol/tus-context.js';
import type { UploadRecord } from '../core/upload-record.js';
import { DEFAULT_EXPIRE_AFTER_MS } from '../protocol/expiration.js';
import { LockTargetMissingError, LockTimeoutError } from '../storage/storage.interfaces.js';

export interface JanitorOptions {
  /** Delete unfinished uploads with no write for this many seconds. @default expireAfterMs / 1000 (86400) */
  staleUploadAge?: number;
  /** Delete finished uploads no consumer took (and receipts) after this many seconds. @default 604800 */
  completedFileAge?: number;
  /** Delete data without a record, and temp files, after this many seconds. @default 3600 */
  orphanAge?: number;
  /**
   * An unfinished upload with no write for this many seconds stops holding its remaining bytes
   * in the space accounting (creations that never send a byte cannot keep the room from others
   * until they expire); it is promised again when its client resumes, or refused with 507 if
   * the room is gone by then. @default 3600
   */
  promiseLapseAge?: number;
}

/** What one run did, per case. */
export interface JanitorSummary {
  /** Complete uploads a crash left unfinalized, now handed to the queue. */
  finalized: number;
  /** Unfinished uploads deleted for inactivity. */
  stale: number;
  /** Records whose data is gone, deleted. */
  orphanedRecords: number;
  /** Data files without a record (a creation cut short), deleted. */
  orphanedData: number;
  /** Finished uploads nobody took within `completedFileAge`, deleted. */
  expiredCompleted: number;
  /** Leftover temp files of interrupted record writes, deleted. */
  tempFiles: number;
  /** Idle unfinished uploads whose remaining bytes are no longer promised. */
  lapsedPromises: number;
}

/**
 * Keeps the janitor to one replica at a time when several share the directories (the Redis
 * coordination gives one). `acquire` answers the right to run now, or `null` when another
 * replica is running (or, for a scheduled run, ran within the schedule's interval).
 */
export interface JanitorLock {
  acquire(scheduled: boolean): Promise<{ release(): Promise<void> } | null>;
}

/**
 * tussi's janitor without its races: every deletion happens under the lock writers and consumers
 * take, with a zero wait, so an upload being written or a file a consumer holds is skipped, not
 * deleted. A complete upload that a crash left unfinalized is finalized (its bytes are all
 * there; deleting it would lose a finished upload), where tussi deletes it.
 */
export class Janitor {
  readonly staleUploadAge: number;
  readonly completedFileAge: number;
  readonly orphanAge: number;
  readonly promiseLapseAge: number;
  private running: Promise<JanitorSummary> | undefined;

  constructor(
    private readonly context: TusContext,
    options: JanitorOptions = {},
    /** With several replicas: the janitor runs on one at a time (skipped runs report zeros). */
    private readonly lock?: JanitorLock,
  ) {
    // One lifetime for an unfinished upload: what `Upload-Expires` announces is what happens.
    this.staleUploadAge =
      options.staleUploadAge ?? (context.options.expireAfterMs ?? DEFAULT_EXPIRE_AFTER_MS) / 1000;
    this.completedFileAge = options.completedFileAge ?? 604_800;
    this.orphanAge = options.orphanAge ?? 3_600;
    this.promiseLapseAge = options.promiseLapseAge ?? 3_600;
  }

  /**
   * Runs every case once. A call while a run is under way joins that run. With a `JanitorLock`,
   * a run another replica is doing (or, when `scheduled`, did within the interval) is skipped,
   * and the summary is all zeros.
   */
  run(options: { scheduled?: boolean } = {}): Promise<JanitorSummary> {
    this.running ??= this.exclusiveSweep(options.scheduled === true).finally(
      () => (this.running = undefined),
    );
    return this.running;
  }

  /**
   * Told of every run that swept (not one skipped for another replica's), scheduled or manual,
   * with its summary: the module logs and counts it. Must not throw.
   */
  onRun?: (summary: JanitorSummary) => void;

  private async exclusiveSweep(scheduled: boolean): Promise<JanitorSummary> {
    if (!this.lock) return this.reported(await this.sweep());
    const held = await this.lock.acquire(scheduled);
    if (!held) {
      return {
        finalized: 0,
        stale: 0,
        orphanedRecords: 0,
        orphanedData: 0,
        expiredCompleted: 0,
        tempFiles: 0,
        lapsedPromises: 0,
      };
    }
    try {
      return this.reported(await this.sweep());
    } finally {
      await held.release();
    }
  }

  private reported(summary: JanitorSummary): JanitorSummary {
    this.onRun?.(summary);
    return summary;
  }

  private async sweep(): Promise<JanitorSummary> {
    const { store, queue } = this.context;
    const summary: JanitorSummary = {
      finalized: await recoverFinalizes(this.context),
      stale: 0,
      orphanedRecords: 0,
      orphanedData: 0,
      expiredCompleted: 0,
      tempFiles: 0,
      lapsedPromises: 0,
    };
    const now = Date.now() / 1000;
    const data = new Map((await store.storage.list()).map((d) => [d.id, d.ageMs]));
    const recordIds = await store.records.list();

    for (const id of recordIds) {
      if (!data.has(id)) {
        summary.orphanedRecords += await this.removeOrphanRecord(id);
        continue;
      }
      const record = await store.getRecord(id).catch(() => null);
      // (One about to be deleted as stale gives its promise back with its files.)
      if (record && !this.isStale(record, now) && this.promiseLapses(record, now)) {
        summary.lapsedPromises += await this.lapsePromise(id, now);
      }
      if (!record || !this.isStale(record, now)) continue;
      const expired = await this.removeUnderLock(
        id,
        (current) => current !== null && this.isStale(current, now),
      );
      if (expired > 0)
        this.context.logger.info?.(`expired ${id}: no write for ${this.staleUploadAge} s`);
      summary.stale += expired;
    }

    const recorded = new Set(recordIds);
    for (const [id, ageMs] of data) {
      if (recorded.has(id) || ageMs < this.orphanAge * 1000) continue;
      summary.orphanedData += await this.removeUnderLock(id, (current) => current === null);
    }

    if (queue) summary.expiredCompleted = await queue.expire(this.completedFileAge * 1000);
    summary.tempFiles =
      ((await store.records.sweep?.(this.orphanAge * 1000)) ?? 0) +
      ((await store.storage.sweep?.(this.orphanAge * 1000)) ?? 0) +
      ((await queue?.sweep(this.orphanAge * 1000)) ?? 0);
    return summary;
  }

  /**
   * Unfinished (or a complete partial, which never leaves staging on its own) and without a
   * write for `staleUploadAge`: expired, in the terms of the expiration extension.
   */
  private isStale(record: UploadRecord, now: number): boolean {
    return (
      (!record.isComplete || record.isPartial) && now - record.lastWrite >= this.staleUploadAge
    );
  }

  /**
   * Runs `work` on the current record of `id` under the upload's lock, taken with no wait: an
   * upload a request holds (or one gone meanwhile) is skipped (0). Returns what `work` counts.
   */
  private async underIdleLock(
    id: string,
    work: (current: UploadRecord | null) => Promise<number>,
  ): Promise<number> {
    const { store } = this.context;
    try {
      return await store.withLock(id, 0, async () => work(await store.getRecord(id)));
    } catch (e) {
      if (e instanceof LockTimeoutError || e instanceof LockTargetMissingError) return 0;
      throw e;
    }
  }

  /** Removes an upload if, under its lock, `stillDue` holds for its current record. */
  private removeUnderLock(
    id: string,
    stillDue: (record: UploadRecord | null) => boolean,
  ): Promise<number> {
    return this.underIdleLock(id, async (current) => {
      if (!stillDue(current)) return 0;
      await this.context.store.remove(id, current);
      return 1;
    });
  }

  /** Idle, unfinished, of a known length, still promised (finals keep theirs: see assembly). */
  private promiseLapses(record: UploadRecord, now: number): boolean {
    return !record.isFinal && record.promised > 0 && now - record.lastWrite >= this.promiseLapseAge;
  }

  /** Lets the promise of an idle upload lapse, under its lock (skipped while it is written). */
  private lapsePromise(id: string, now: number): Promise<number> {
    const { store } = this.context;
    return this.underIdleLock(id, async (current) => {
      if (!current || !this.promiseLapses(current, now)) return 0;
      const promised = current.promised;
      current.promiseLapsed = true;
      await store.records.put(id, current);
      await store.settle(promised);
      return 1;
    });
  }

  /** A record whose data is gone: finished (the queue has it) or lost; either way it goes. */
  private async removeOrphanRecord(id: string): Promise<number> {
    const { store } = this.context;
    const record = await store.getRecord(id).catch(() => null);
    // A young record may belong to a creation in progress (data is created first, but the
    // listing of data may have been taken just before it).
    if (record && Date.now() / 1000 - record.createdAt < 60) return 0;
    await store.remove(id, record);
    return 1;
  }
}

import { randomUUID } from 'node:crypto';
import { performance } from 'node:perf_hooks';
import { isUploadId } from '../protocol/headers.js';
import type { TusLogger } from '../protocol/tus-context.js';
import type { UploadRecord } from '../core/upload-record.js';
import type { CompletedEntries, OpenedEntry } from '../queue/completed-entries.js';
import { CompletedUpload } from '../queue/completed-upload.js';
import {
  CompletedUploadQueue,
  type FinishedBytes,
  type WaitForFileOptions,
} from '../queue/completed-upload.queue.js';
import {
  FilesystemCompletedQueue,
  type FilesystemCompletedQueueOptions,
} from '../queue/filesystem-completed.queue.js';
import { LuaScript, isRedisUnavailable, type RedisConnection } from './redis-connection.js';
import { EPOCH_LUA, graceArgs, type GraceDurations, type RedisKeys } from './redis-keys.js';
import { WakeSignal } from '../queue/wake-signal.js';

// Every queue script: KEYS[1..3] epoch keys, KEYS[4] pending, KEYS[5] processing, KEYS[6] owners;
// ARGV[1..2] grace durations.

/**
 * ARGV[3] token, ARGV[4] claim timeout. Returns claims whose deadline passed to the queue, then
 * pops the oldest waiting upload and claims it: the id, or false when none waits.
 */
const CLAIM = new LuaScript(`${EPOCH_LUA}
local now = now_ms()
local expired = redis.call('ZRANGEBYSCORE', KEYS[5], '-inf', now, 'LIMIT', 0, 100)
for _, id in ipairs(expired) do
  redis.call('ZREM', KEYS[5], id)
  redis.call('HDEL', KEYS[6], id)
  redis.call('ZADD', KEYS[4], 'NX', 0, id)
end
local popped = redis.call('ZPOPMIN', KEYS[4])
if #popped == 0 then return false end
local id = popped[1]
redis.call('ZADD', KEYS[5], now + tonumber(ARGV[4]), id)
redis.call('HSET', KEYS[6], id, ARGV[3])
return id
`);

/**
 * ARGV[3] id, ARGV[4] token, ARGV[5] claim timeout. 1 when the claim was extended (or taken
 * back in the grace period after Redis lost its data), 0 when another token has it.
 */
const RENEW = new LuaScript(`${EPOCH_LUA}
local owner = redis.call('HGET', KEYS[6], ARGV[3])
if owner == ARGV[4] then
  redis.call('ZADD', KEYS[5], now_ms() + tonumber(ARGV[5]), ARGV[3])
  return 1
end
if owner == false and redis.call('EXISTS', KEYS[3]) == 1 then
  redis.call('ZREM', KEYS[4], ARGV[3])
  redis.call('ZADD', KEYS[5], now_ms() + tonumber(ARGV[5]), ARGV[3])
  redis.call('HSET', KEYS[6], ARGV[3], ARGV[4])
  return 1
end
return 0
`);

/** KEYS[1] processing, KEYS[2] owners; ARGV[1] id, ARGV[2] token. Ends a claim (holder only). */
const ACK = new LuaScript(`
if redis.call('HGET', KEYS[2], ARGV[1]) == ARGV[2] then
  redis.call('ZREM', KEYS[1], ARGV[1])
  redis.call('HDEL', KEYS[2], ARGV[1])
  return 1
end
return 0
`);

/**
 * ARGV[3] id, ARGV[4] token, ARGV[5] claim timeout. Claims one given upload to delete it
 * (termination, expiry): 'taken', or 'held' when a consumer's claim is alive, or 'grace' right
 * after a Redis data loss (a consumer may not have taken its claim back yet).
 */
const TAKE = new LuaScript(`${EPOCH_LUA}
if redis.call('EXISTS', KEYS[3]) == 1 then return 'grace' end
local now = now_ms()
if redis.call('HEXISTS', KEYS[6], ARGV[3]) == 1 then
  local deadline = redis.call('ZSCORE', KEYS[5], ARGV[3])
  if deadline and tonumber(deadline) > now then return 'held' end
end
redis.call('ZREM', KEYS[4], ARGV[3])
redis.call('ZADD', KEYS[5], now + tonumber(ARGV[5]), ARGV[3])
redis.call('HSET', KEYS[6], ARGV[3], ARGV[4])
return 'taken'
`);

/**
 * ARGV[3] 'enqueue' or 'rebuild', ARGV[4] score, ARGV[5..] ids. Adds the ids nobody claims and
 * that do not wait already; a rebuild waits for the grace period to end (-1).
 */
const ADD = new LuaScript(`${EPOCH_LUA}
if ARGV[3] == 'rebuild' and redis.call('EXISTS', KEYS[3]) == 1 then return -1 end
local added = 0
for i = 5, #ARGV do
  if redis.call('HEXISTS', KEYS[6], ARGV[i]) == 0 then
    added = added + redis.call('ZADD', KEYS[4], 'NX', ARGV[4], ARGV[i])
  end
end
return added
`);

export interface RedisCompletedQueueOptions extends Partial<FilesystemCompletedQueueOptions> {
  /**
   * Where the entries live (records, data or where the bytes are, receipts). @default the files
   * of `directory` (a FilesystemCompletedQueue on it)
   */
  entries?: CompletedEntries;
  /** A claim whose consumer stopped renewing it (a dead replica) goes back after this. @default 30000 */
  claimTimeoutMs?: number;
  /** Grace durations after a Redis data loss. */
  grace: GraceDurations;
  /** Rebuild the queue from the completed directory this often (and after every reconnect). @default 30000 */
  rebuildIntervalMs?: number;
  /** Where problems are reported. */
  logger: TusLogger;
}

/**
 * A finished upload claimed through Redis. `signal` fires if the claim is lost (Redis says
 * another consumer has it, after this one failed to renew it for a whole claim timeout): stop
 * working on it; its release then leaves the files to the new holder.
 */
export class RedisCompletedUpload extends CompletedUpload {
  constructor(
    name: string,
    entry: OpenedEntry,
    onRelease: (upload: CompletedUpload) => Promise<void>,
    readonly signal: AbortSignal,
  ) {
    super(name, entry.dataPath, entry.recordPath, entry.record, onRelease, true, entry.stored);
  }
}

/** One claim held by this process: its token and the renewal of its deadline. */
class Claim {
  readonly lost = new AbortController();
  confirmedAt: number;
  private timer: NodeJS.Timeout | undefined;
  private renewing = false;

  constructor(
    readonly id: string,
    readonly token: string,
    grantedAt: number,
    private readonly renew: (claim: Claim) => Promise<boolean>,
    private readonly timeoutMs: number,
  ) {
    this.confirmedAt = grantedAt;
    this.timer = setInterval(() => void this.tick(), timeoutMs / 4);
    this.timer.unref();
  }

  /** Still ours by its deadline, as far as this process can tell without Redis. */
  get withinDeadline(): boolean {
    return (
      !this.lost.signal.aborted && performance.now() < this.confirmedAt + (this.timeoutMs * 2) / 3
    );
  }

  stop(): void {
    clearInterval(this.timer);
  }

  /** Asks Redis; `undefined` when it cannot answer. */
  async check(): Promise<boolean | undefined> {
    const sent = performance.now();
    try {
      const held = await this.renew(this);
      if (held) this.confirmedAt = Math.max(this.confirmedAt, sent);
      else this.lose();
      return held;
    } catch {
      return undefined;
    }
  }

  private async tick(): Promise<void> {
    if (this.renewing || this.lost.signal.aborted) return;
    this.renewing = true;
    try {
      await this.check();
    } finally {
      this.renewing = false;
    }
  }

  lose(): void {
    this.stop();
    if (!this.lost.signal.aborted) {
      this.lost.abort(new Error(`claim of completed upload ${this.id} lost`));
    }
  }
}

/**
 * The completed queue across replicas. The files stay where the filesystem queue puts them (the
 * shared `completedDir`: `{id}` data, `{id}.meta` record, `{id}.done` receipt); Redis decides
 * who gets which: a reliable queue of ids, waiting (`pending`) and claimed (`processing`, with a
 * deadline the holder renews). Claiming is one atomic step, so each upload goes to exactly one
 * consumer across every replica; the claim of a consumer that dies runs out after
 * `claimTimeoutMs` and the upload is handed to another. Releasing deletes what is left of the
 * files, then ends the claim.
 *
 * The directory is the truth: the queue is rebuilt from it (uploads that have data and record
 * and that nobody claims are added) after every reconnect and every `rebuildIntervalMs`, so a
 * Redis that restarted empty, or an enqueue that could not reach Redis, loses nothing.
 */
export class RedisCompletedQueue extends CompletedUploadQueue {
  private readonly files: CompletedEntries;
  private readonly log: (message: string) => void;
  private readonly claimTimeoutMs: number;
  private readonly pollIntervalMs: number;
  private readonly rebuildIntervalMs: number;
  private readonly closing = new AbortController();
  private readonly wakeSignal = new WakeSignal();
  private readonly claims = new Set<Claim>();
  private rebuildTimer: NodeJS.Timeout | undefined;
  private rebuildEvery: NodeJS.Timeout | undefined;
  private subscribed = false;
  private warnedUnavailable = false;
  private readonly offReady: () => void;

  constructor(
    private readonly redis: RedisConnection,
    private readonly keys: RedisKeys,
    private readonly options: RedisCompletedQueueOptions,
  ) {
    super();
    // The files' notices (quarantines, refused files) go where this queue's problems go.
    this.log = options.log ?? ((m) => options.logger.warn(m));
    if (options.entries) {
      this.files = options.entries;
    } else {
      if (options.directory === undefined) throw new Error('a directory or entries is needed');
      this.files = new FilesystemCompletedQueue({
        ...options,
        directory: options.directory,
        log: this.log,
      });
    }
    this.claimTimeoutMs = options.claimTimeoutMs ?? 30_000;
    this.pollIntervalMs = options.pollIntervalMs ?? 2000;
    this.rebuildIntervalMs = options.rebuildIntervalMs ?? 30_000;
    this.offReady = redis.onReadyEvent(() => this.scheduleRebuild(0));
    this.rebuildEvery = setInterval(() => this.scheduleRebuild(0), this.rebuildIntervalMs);
    this.rebuildEvery.unref();
    if (redis.isReady) this.scheduleRebuild(0);
  }

  private get queueKeys(): string[] {
    return [...this.keys.epochKeys, this.keys.pending, this.keys.processing, this.keys.owners];
  }

  private get graceArgs(): number[] {
    return graceArgs(this.options.grace);
  }

  /**
   * The filesystem queue's move (record, then data, both durable), then the id into Redis. If
   * Redis cannot be reached the upload is still safely finished: the next rebuild adds it.
   */
  async enqueue(id: string, record: UploadRecord, bytes?: FinishedBytes): Promise<void> {
    await this.files.enqueue(id, record, bytes);
    try {
      await this.redis.eval(ADD, this.queueKeys, [...this.graceArgs, 'enqueue', Date.now(), id]);
      await this.redis.run((c) => c.publish(this.keys.wake, id), 0).catch(() => {});
    } catch (e) {
      this.options.logger.warn(
        `completed upload ${id} is not in the Redis queue yet (${String(e)}); the next rebuild adds it`,
      );
    }
    this.wake();
  }

  lookup(id: string): Promise<UploadRecord | null> {
    return this.files.lookup(id);
  }

  async remove(id: string): Promise<'removed' | 'held' | 'missing'> {
    if (!isUploadId(id)) return 'missing';
    const token = randomUUID();
    const outcome = await this.take(id, token);
    if (outcome !== 'taken') return 'held';
    try {
      return (await this.files.removeEntry(id)) ? 'removed' : 'missing';
    } finally {
      await this.ack(id, token).catch(() => {});
    }
  }

  override sweep(ageMs: number): Promise<number> {
    return this.files.sweep(ageMs);
  }

  async expire(ageMs: number): Promise<number> {
    // Only when claimed for deletion: a consumer's claim is never pulled away.
    return this.files.sweepExpired(ageMs, async (id) => {
      const token = randomUUID();
      if ((await this.take(id, token)) !== 'taken') return null;
      return () => this.ack(id, token).catch(() => {});
    });
  }

  override async depth(): Promise<number> {
    return (await this.files.listIds()).length;
  }

  async waitForFile(options: WaitForFileOptions = {}): Promise<CompletedUpload> {
    this.subscribe();
    return this.waitLoop(
      options,
      this.closing.signal,
      this.wakeSignal,
      this.pollIntervalMs,
      async () => {
        try {
          const upload = await this.tryClaim();
          this.warnedUnavailable = false;
          return { upload: upload ?? undefined };
        } catch (e) {
          // Redis away: keep waiting (the consumer's loop must not spin), say it once.
          if (!isRedisUnavailable(e)) throw e;
          if (!this.warnedUnavailable) {
            this.warnedUnavailable = true;
            this.options.logger.warn('completed queue: Redis unreachable, consumers wait for it');
          }
          return {};
        }
      },
    );
  }

  async close(): Promise<void> {
    if (this.closing.signal.aborted) return;
    this.closing.abort(new Error('the completed-upload queue is closed'));
    this.offReady();
    clearTimeout(this.rebuildTimer);
    clearInterval(this.rebuildEvery);
    for (const claim of this.claims) claim.stop();
    if (this.subscribed) {
      await this.redis
        .subscriber()
        .unsubscribe(this.keys.wake)
        .catch(() => {});
    }
    await this.files.close();
  }

  /**
   * Adds to the queue every upload in the directory that has its data and record and that
   * nobody claims: after a Redis restart the queue is whole again. Returns how many were added,
   * or -1 while the grace period after a Redis data loss lasts (claims may come back in it).
   */
  async rebuild(): Promise<number> {
    const ids = await this.files.listIds();
    let added = 0;
    // One call even with no id: it checks the epoch (and opens the grace period of a Redis
    // that came back empty) as soon as a replica starts or reconnects.
    for (let i = 0; i === 0 || i < ids.length; i += 500) {
      const batch = ids.slice(i, i + 500);
      const answer = Number(
        await this.redis.eval(ADD, this.queueKeys, [...this.graceArgs, 'rebuild', 0, ...batch]),
      );
      if (answer < 0) return -1;
      added += answer;
    }
    if (added > 0) {
      this.options.logger.warn(
        `completed queue: ${added} finished upload(s) put back from ${this.files.description}`,
      );
      await this.redis.run((c) => c.publish(this.keys.wake, 'rebuild'), 0).catch(() => {});
      this.wake();
    }
    return added;
  }

  private scheduleRebuild(delayMs: number): void {
    if (this.closing.signal.aborted) return;
    clearTimeout(this.rebuildTimer);
    this.rebuildTimer = setTimeout(() => void this.runRebuild(), delayMs);
    this.rebuildTimer.unref();
  }

  private async runRebuild(): Promise<void> {
    try {
      if ((await this.rebuild()) >= 0) return;
      // In the grace period: try again when it ends.
      const left = await this.redis.run((c) => c.pttl(this.keys.queueGrace), 0);
      this.scheduleRebuild(Math.max(50, Number(left) + 50));
    } catch (e) {
      if (!isRedisUnavailable(e))
        this.options.logger.error('rebuilding the completed queue failed', e);
      // Unreachable: the reconnect runs it again.
    }
  }

  /** One claim attempt: the oldest waiting upload, claimed for this caller, or null. */
  private async tryClaim(): Promise<RedisCompletedUpload | null> {
    // Bounded: entries whose files are gone are dropped, a few per attempt.
    for (let attempt = 0; attempt < 20; attempt++) {
      const token = randomUUID();
      const sent = performance.now();
      const id = await this.redis.eval(CLAIM, this.queueKeys, [
        ...this.graceArgs,
        token,
        this.claimTimeoutMs,
      ]);
      if (typeof id !== 'string') return null;
      const claim = new Claim(id, token, sent, (c) => this.renew(c), this.claimTimeoutMs);
      this.claims.add(claim);
      try {
        const upload = await this.open(claim);
        if (upload) return upload;
      } catch (e) {
        await this.endClaim(claim).catch(() => {});
        throw e;
      }
      await this.endClaim(claim).catch(() => {});
    }
    return null;
  }

  /**
   * The claimed upload, or null (and the entry dropped) when its entry is gone or unusable
   * (the entries move an unusable one aside; see `CompletedEntries.open`).
   */
  private async open(claim: Claim): Promise<RedisCompletedUpload | null> {
    const entry = await this.files.open(claim.id);
    if (!entry) return null;
    return new RedisCompletedUpload(
      claim.id,
      entry,
      (upload) => this.release(upload, claim),
      claim.lost.signal,
    );
  }

  /**
   * Ends a consumer's claim: if it is still this consumer's (Redis says so, or Redis cannot be
   * asked and the deadline has not passed), deletes what is left of the files, then the claim.
   */
  private async release(upload: CompletedUpload, claim: Claim): Promise<void> {
    claim.stop();
    const held = await claim.check();
    if (held === false || (held === undefined && !claim.withinDeadline)) {
      this.claims.delete(claim);
      this.options.logger.warn(
        `completed upload ${claim.id}: the claim was lost before release; its files are left to the new holder`,
      );
      return;
    }
    // Only what the consumer did not move.
    await this.files.discard(upload);
    await this.endClaim(claim).catch(() => {
      // Unreachable: the claim's deadline passes, and the next claimer finds no files.
    });
  }

  private async endClaim(claim: Claim): Promise<void> {
    claim.stop();
    this.claims.delete(claim);
    await this.ack(claim.id, claim.token);
  }

  private async renew(claim: Claim): Promise<boolean> {
    const answer = await this.redis.eval(
      RENEW,
      this.queueKeys,
      [...this.graceArgs, claim.id, claim.token, this.claimTimeoutMs],
      0,
    );
    return answer === 1;
  }

  private async ack(id: string, token: string): Promise<void> {
    await this.redis.eval(ACK, [this.keys.processing, this.keys.owners], [id, token], 0);
  }

  private async take(id: string, token: string): Promise<'taken' | 'held' | 'grace'> {
    const answer = await this.redis.eval(TAKE, this.queueKeys, [
      ...this.graceArgs,
      id,
      token,
      this.claimTimeoutMs,
    ]);
    return answer as 'taken' | 'held' | 'grace';
  }

  private subscribe(): void {
    if (this.subscribed || this.closing.signal.aborted) return;
    this.subscribed = true;
    const sub = this.redis.subscriber();
    sub.on('message', (channel: string) => {
      if (channel === this.keys.wake) this.wake();
    });
    sub.subscribe(this.keys.wake).catch(() => {
      // The poll interval keeps consumers going without the channel.
    });
  }

  private wake(): void {
    this.wakeSignal.wake();
  }
}

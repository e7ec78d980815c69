/**
 * The Redis keys of one deployment (every replica must use the same prefix and the same leases):
 *
 * | Key | Type | What |
 * | --- | --- | --- |
 * | `{p}epoch` | string | set once per Redis dataset; its absence means Redis lost its data |
 * | `{p}grace:locks`, `{p}grace:queue` | string with TTL | after a data loss, one lease during which only former holders get their lock / claim back |
 * | `{p}lock:{id}` | string with TTL | the upload lock: holder's token, lease |
 * | `{p}record:{id}` | string with TTL | cached `.meta` record (or a tombstone) |
 * | `{p}queue:pending` | sorted set | finished uploads waiting, by enqueue time |
 * | `{p}queue:processing` | sorted set | claimed uploads, by claim deadline |
 * | `{p}queue:owners` | hash | claimed upload → claim token |
 * | `{p}queue:wake` | channel | published on enqueue, wakes waiting consumers |
 * | `{p}janitor:lock`, `{p}janitor:done` | string with TTL | the janitor's lock; a recent scheduled run |
 * | `{p}rate:{key}`, `{p}rate:{key}:blocked` | string with TTL | a client's requests in the window; blocked until |
 * | `{p}space:promised` | string | bytes promised to open uploads (the space ledger) |
 * | `{p}space:instances` | sorted set | live replicas, by the end of their lease |
 */
export class RedisKeys {
  constructor(readonly prefix: string) {}

  get epoch(): string {
    return `${this.prefix}epoch`;
  }
  get lockGrace(): string {
    return `${this.prefix}grace:locks`;
  }
  get queueGrace(): string {
    return `${this.prefix}grace:queue`;
  }
  rate(key: string): string {
    return `${this.prefix}rate:${key}`;
  }
  lock(id: string): string {
    return `${this.prefix}lock:${id}`;
  }
  record(id: string): string {
    return `${this.prefix}record:${id}`;
  }
  get pending(): string {
    return `${this.prefix}queue:pending`;
  }
  get processing(): string {
    return `${this.prefix}queue:processing`;
  }
  get owners(): string {
    return `${this.prefix}queue:owners`;
  }
  get wake(): string {
    return `${this.prefix}queue:wake`;
  }
  get janitorLock(): string {
    return `${this.prefix}janitor:lock`;
  }
  get janitorDone(): string {
    return `${this.prefix}janitor:done`;
  }
  get spacePromised(): string {
    return `${this.prefix}space:promised`;
  }
  get spaceInstances(): string {
    return `${this.prefix}space:instances`;
  }

  /** The keys every script that checks the epoch starts with (KEYS[1..3]). */
  get epochKeys(): string[] {
    return [this.epoch, this.lockGrace, this.queueGrace];
  }
}

/** How long, after Redis lost its data, only former holders may take back locks and claims. */
export interface GraceDurations {
  /** The lock lease: every lock granted before the loss has expired after it. */
  locksMs: number;
  /** The claim timeout of the completed queue. */
  queueMs: number;
}

/** The arguments every script that checks the epoch starts with (ARGV[1..2]). */
export function graceArgs(grace: GraceDurations): number[] {
  return [grace.locksMs, grace.queueMs];
}

/**
 * Lua prelude: KEYS[1..3] = epoch, lock grace, queue grace; ARGV[1..2] = their durations.
 *
 * Redis runs without persistence here, so a restart comes back empty: every lock and claim is
 * forgotten at once, while their holders may still be writing. The first script to notice
 * (no epoch key) opens a grace period of one lease: holders renewing in it get their lock or
 * claim back, nobody else gets a new one, and once it ends every lease granted before the loss
 * has run out. Two holders of one upload never overlap, even across a Redis restart.
 */
export const EPOCH_LUA = `
local function check_epoch()
  if redis.call('EXISTS', KEYS[1]) == 0 then
    redis.call('SET', KEYS[1], '1')
    redis.call('SET', KEYS[2], '1', 'PX', ARGV[1])
    redis.call('SET', KEYS[3], '1', 'PX', ARGV[2])
  end
end
local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end
check_epoch()
`;

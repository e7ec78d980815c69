import { randomUUID } from 'node:crypto';
import type { JanitorLock } from '../janitor/janitor.js';
import { LuaScript, type RedisConnection } from './redis-connection.js';
import type { RedisKeys } from './redis-keys.js';

/**
 * KEYS[1] lock, KEYS[2] done; ARGV[1] token, ARGV[2] lease, ARGV[3] '1' for a scheduled run.
 * 1 granted, 0 when another replica runs (or, scheduled, one ran within the interval).
 */
const ACQUIRE = new LuaScript(`
if ARGV[3] == '1' and redis.call('EXISTS', KEYS[2]) == 1 then return 0 end
if redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then return 1 end
return 0
`);

/** KEYS[1] lock; ARGV[1] token, ARGV[2] lease. */
const RENEW = new LuaScript(`
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('PEXPIRE', KEYS[1], ARGV[2]) end
return 0
`);

/** KEYS[1] lock, KEYS[2] done; ARGV[1] token, ARGV[2] cooldown. */
const RELEASE = new LuaScript(`
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('DEL', KEYS[1])
  if tonumber(ARGV[2]) > 0 then redis.call('SET', KEYS[2], '1', 'PX', ARGV[2]) end
  return 1
end
return 0
`);

export interface RedisJanitorLockOptions {
  /** Lease of the janitor's lock, renewed during a run. @default 60000 */
  leaseMs?: number;
  /**
   * After a run, scheduled runs of every replica are skipped for this long, so the janitor
   * runs about once per interval in the whole deployment. @default 90% of the janitor interval
   */
  cooldownMs: number;
}

/**
 * The janitor on one replica at a time: a Redis lock with a lease, renewed while the janitor
 * runs (a replica that dies mid-run frees it after the lease), and a cooldown after each run
 * so every replica's schedule does not repeat the work of the one that just ran.
 */
export class RedisJanitorLock implements JanitorLock {
  private readonly leaseMs: number;

  constructor(
    private readonly redis: RedisConnection,
    private readonly keys: RedisKeys,
    private readonly options: RedisJanitorLockOptions,
  ) {
    this.leaseMs = options.leaseMs ?? 60_000;
  }

  async acquire(scheduled: boolean): Promise<{ release(): Promise<void> } | null> {
    const token = randomUUID();
    const lockKeys = [this.keys.janitorLock, this.keys.janitorDone];
    const granted = await this.redis.eval(ACQUIRE, lockKeys, [
      token,
      this.leaseMs,
      scheduled ? '1' : '0',
    ]);
    if (granted !== 1) return null;
    const timer = setInterval(() => {
      this.redis.eval(RENEW, [this.keys.janitorLock], [token, this.leaseMs], 0).catch(() => {});
    }, this.leaseMs / 3);
    timer.unref();
    let released = false;
    return {
      release: async () => {
        if (released) return;
        released = true;
        clearInterval(timer);
        await this.redis
          .eval(RELEASE, lockKeys, [token, Math.max(0, Math.round(this.options.cooldownMs))], 0)
          .catch(() => {});
      },
    };
  }
}

import type { RateLimitRecord, RateLimitStorage } from '../nest/tus-rate-limit.storage.js';
import { LuaScript, type RedisConnection } from './redis-connection.js';
import type { RedisKeys } from './redis-keys.js';

/**
 * KEYS[1] hits, KEYS[2] blocked; ARGV[1] window (ms), ARGV[2] limit, ARGV[3] block (ms).
 * A fixed window per key: {hits, ms left in the window, blocked (0/1), ms left blocked}. A
 * request while blocked is not counted.
 */
const HIT = new LuaScript(`
local blocked = redis.call('PTTL', KEYS[2])
if blocked > 0 then
  return {tonumber(redis.call('GET', KEYS[1]) or '0'), redis.call('PTTL', KEYS[1]), 1, blocked}
end
local hits = redis.call('INCR', KEYS[1])
if hits == 1 then redis.call('PEXPIRE', KEYS[1], ARGV[1]) end
local left = redis.call('PTTL', KEYS[1])
if hits > tonumber(ARGV[2]) then
  redis.call('SET', KEYS[2], '1', 'PX', ARGV[3])
  return {hits, left, 1, tonumber(ARGV[3])}
end
return {hits, left, 0, 0}
`);

/**
 * Rate limits counted in Redis, so that they hold across replicas: one script per request,
 * fixed windows, keys that expire by themselves.
 */
export class RedisRateLimitStorage implements RateLimitStorage {
  constructor(
    private readonly redis: RedisConnection,
    private readonly keys: RedisKeys,
  ) {}

  async increment(
    key: string,
    ttl: number,
    limit: number,
    blockDuration: number,
    throttlerName: string,
  ): Promise<RateLimitRecord> {
    const base = this.keys.rate(`${throttlerName}:${key}`);
    const reply = (await this.redis.eval(
      HIT,
      [base, `${base}:blocked`],
      [ttl, limit, blockDuration > 0 ? blockDuration : ttl],
    )) as [number, number, number, number];
    const [totalHits, leftMs, blocked, blockedMs] = reply;
    return {
      totalHits,
      timeToExpire: Math.max(0, Math.ceil(leftMs / 1000)),
      isBlocked: blocked === 1,
      timeToBlockExpire: Math.max(0, Math.ceil(blockedMs / 1000)),
    };
  }
}

import { randomUUID } from 'node:crypto';
import type { SpaceLedger } from '../storage/space-accounting.js';
import { LuaScript, type RedisConnection } from './redis-connection.js';
import type { RedisKeys } from './redis-keys.js';

/** KEYS[1] promised; ARGV[1] bytes, ARGV[2] capacity. 1 taken, 0 no room, -1 no total (lost). */
const RESERVE = new LuaScript(`
local total = redis.call('GET', KEYS[1])
if not total then return -1 end
if tonumber(total) + tonumber(ARGV[1]) > tonumber(ARGV[2]) then return 0 end
redis.call('INCRBY', KEYS[1], ARGV[1])
return 1
`);

/** KEYS[1] promised; ARGV[1] bytes. Never below 0; a lost total stays lost (it is rebuilt). */
const RELEASE = new LuaScript(`
local total = redis.call('GET', KEYS[1])
if not total then return 0 end
local left = tonumber(total) - tonumber(ARGV[1])
if left < 0 then left = 0 end
redis.call('SET', KEYS[1], left)
return left
`);

/** KEYS[1] instances; ARGV[1] member, ARGV[2] now, ARGV[3] lease: how many replicas are live. */
const JOIN = new LuaScript(`
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', ARGV[2])
redis.call('ZADD', KEYS[1], tonumber(ARGV[2]) + tonumber(ARGV[3]), ARGV[1])
return redis.call('ZCARD', KEYS[1])
`);

/**
 * The ledger of replicas that share one upload volume and one Redis: the total in
 * `{p}space:promised`, the live replicas in `{p}space:instances` (each renews its entry every
 * third of a lease). The first replica to start when none is live rebuilds the total from the
 * records, and so does a reservation that finds it gone (Redis lost its data).
 */
export class RedisSpaceLedger implements SpaceLedger {
  private readonly member = randomUUID();
  private heartbeat: NodeJS.Timeout | undefined;
  private rebuild: (() => Promise<number>) | undefined;

  constructor(
    private readonly redis: RedisConnection,
    private readonly keys: RedisKeys,
    private readonly leaseMs = 15_000,
  ) {}

  async reserve(bytes: number, capacity: number): Promise<boolean> {
    for (let attempt = 0; ; attempt++) {
      const taken = (await this.redis.eval(
        RESERVE,
        [this.keys.spacePromised],
        [bytes, capacity],
      )) as number;
      if (taken !== -1) return taken === 1;
      if (!this.rebuild || attempt > 0) return false;
      // Redis lost the total: every replica sees the same records; the first to store wins.
      // (The records are read before the command, not inside it: a scan is not a Redis wait.)
      const total = await this.rebuild();
      await this.redis.run((client) => client.set(this.keys.spacePromised, total, 'NX'));
    }
  }

  async release(bytes: number): Promise<void> {
    await this.redis.eval(RELEASE, [this.keys.spacePromised], [bytes]);
  }

  async total(): Promise<number> {
    const value = await this.redis.run((client) => client.get(this.keys.spacePromised));
    return Number(value ?? 0);
  }

  async join(rebuild: () => Promise<number>): Promise<boolean> {
    this.rebuild = rebuild;
    const live = await this.beat();
    this.heartbeat = setInterval(() => void this.beat().catch(() => {}), this.leaseMs / 3);
    this.heartbeat.unref();
    if (live !== 1) return false;
    const total = await rebuild();
    await this.redis.run((client) => client.set(this.keys.spacePromised, total));
    return true;
  }

  async close(): Promise<void> {
    clearInterval(this.heartbeat);
    this.heartbeat = undefined;
    await this.redis
      .run((client) => client.zrem(this.keys.spaceInstances, this.member))
      .catch(() => {});
  }

  private async beat(): Promise<number> {
    return (await this.redis.eval(
      JOIN,
      [this.keys.spaceInstances],
      [this.member, Date.now(), this.leaseMs],
    )) as number;
  }
}

import { describe, expect, it } from '@jest/globals';
import { freshKeys, redisForSuite } from '../../test/support/redis-fixtures.js';
import { RedisSpaceLedger } from './redis-space.ledger.js';

const redis = redisForSuite();

describe('RedisSpaceLedger', () => {
  it('the first replica rebuilds; others share its total; the promises hold across them', async () => {
    const keys = freshKeys();
    const a = new RedisSpaceLedger(redis.connection, keys, 1000);
    const b = new RedisSpaceLedger(redis.connection, keys, 1000);
    expect(await a.join(async () => 300)).toBe(true);
    expect(await b.join(async () => 999_999)).toBe(false);
    expect(await b.total()).toBe(300);
    expect(await a.reserve(600, 1000)).toBe(true);
    expect(await b.reserve(101, 1000)).toBe(false);
    expect(await b.reserve(100, 1000)).toBe(true);
    await a.release(5000);
    expect(await b.total()).toBe(0);
    await Promise.all([a.close(), b.close()]);
  });

  it('a replica whose lease ran out (killed) does not count: the next start is alone and rebuilds', async () => {
    const keys = freshKeys();
    const killed = new RedisSpaceLedger(redis.connection, keys, 300);
    expect(await killed.join(async () => 10)).toBe(true);
    // Killed: it renews no more (its heartbeat is stopped without leaving).
    clearInterval((killed as unknown as { heartbeat: NodeJS.Timeout }).heartbeat);
    await new Promise((resolve) => setTimeout(resolve, 400));
    const restarted = new RedisSpaceLedger(redis.connection, keys, 300);
    expect(await restarted.join(async () => 42)).toBe(true);
    expect(await restarted.total()).toBe(42);
    await restarted.close();
  });

  it('a total Redis lost is rebuilt from the records at the next reservation', async () => {
    const keys = freshKeys();
    const ledger = new RedisSpaceLedger(redis.connection, keys, 1000);
    await ledger.join(async () => 500);
    await redis.connection.run((client) => client.del(keys.spacePromised));
    let rebuilt = 0;
    (ledger as unknown as { rebuild: () => Promise<number> }).rebuild = async () => {
      rebuilt++;
      return 700;
    };
    expect(await ledger.reserve(400, 1000)).toBe(false);
    expect(rebuilt).toBe(1);
    expect(await ledger.reserve(300, 1000)).toBe(true);
    expect(await ledger.total()).toBe(1000);
    await ledger.close();
  });
});

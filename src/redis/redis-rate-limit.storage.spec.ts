import { describe, expect, it } from '@jest/globals';
import { connect, freshKeys, redisForSuite } from '../../test/support/redis-fixtures.js';
import { MemoryRateLimitStorage, type RateLimitStorage } from '../nest/tus-rate-limit.storage.js';
import { RedisRateLimitStorage } from './redis-rate-limit.storage.js';

const redis = redisForSuite();

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

// The same behaviour from both storages: replicas on Redis limit as one process does.
describe.each<[string, () => RateLimitStorage]>([
  ['memory', () => new MemoryRateLimitStorage()],
  ['Redis', () => new RedisRateLimitStorage(redis.connection, freshKeys())],
])('%s rate-limit storage', (_name, make) => {
  it('counts hits in a window, blocks past the limit for the block duration, then starts over', async () => {
    const storage = make();
    const hit = () => storage.increment('client', 400, 2, 400, 'requests');
    expect(await hit()).toMatchObject({ totalHits: 1, isBlocked: false });
    expect(await hit()).toMatchObject({ totalHits: 2, isBlocked: false });
    const third = await hit();
    expect(third).toMatchObject({ totalHits: 3, isBlocked: true });
    expect(third.timeToBlockExpire).toBe(1);
    // Retries while blocked are not counted (nor do they extend the block).
    for (let i = 0; i < 5; i++) expect((await hit()).isBlocked).toBe(true);
    await sleep(450);
    expect(await hit()).toMatchObject({ totalHits: 1, isBlocked: false });
  });

  it('keeps clients and limits apart', async () => {
    const storage = make();
    await storage.increment('a', 60_000, 1, 60_000, 'requests');
    expect((await storage.increment('a', 60_000, 1, 60_000, 'requests')).isBlocked).toBe(true);
    expect((await storage.increment('b', 60_000, 1, 60_000, 'requests')).isBlocked).toBe(false);
    expect((await storage.increment('a', 60_000, 1, 60_000, 'creations')).isBlocked).toBe(false);
  });
});

it('two Redis storages (two replicas) share one count', async () => {
  const keys = freshKeys();
  const one = new RedisRateLimitStorage(redis.connection, keys);
  const other = connect(redis.server.url);
  try {
    const two = new RedisRateLimitStorage(other, keys);
    expect((await one.increment('c', 60_000, 2, 60_000, 'requests')).isBlocked).toBe(false);
    expect((await two.increment('c', 60_000, 2, 60_000, 'requests')).isBlocked).toBe(false);
    expect((await one.increment('c', 60_000, 2, 60_000, 'requests')).isBlocked).toBe(true);
  } finally {
    await other.close();
  }
});

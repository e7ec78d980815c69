/** One client's count in the current window (times in seconds, as `@nestjs/throttler` has them). */
export interface RateLimitRecord {
  totalHits: number;
  timeToExpire: number;
  isBlocked: boolean;
  timeToBlockExpire: number;
}

/**
 * Where rate limits count. The same contract as `@nestjs/throttler`'s `ThrottlerStorage`, so
 * its storages (Redis, Mongo, ...) plug in as they are.
 */
export interface RateLimitStorage {
  increment(
    key: string,
    ttl: number,
    limit: number,
    blockDuration: number,
    throttlerName: string,
  ): Promise<RateLimitRecord>;
}

/** Injection token of the module's `RateLimitStorage`. */
export const TUS_RATE_LIMIT_STORAGE = Symbol('TUS_RATE_LIMIT_STORAGE');

interface Window {
  hits: number;
  expiresAt: number;
  blockedUntil: number;
}

/**
 * Rate limits counted in this process: fixed windows per key. Windows past their end are swept
 * once per window, so the map holds only the clients of the current one.
 */
export class MemoryRateLimitStorage implements RateLimitStorage {
  private readonly windows = new Map<string, Window>();
  private nextSweep = 0;

  async increment(
    key: string,
    ttl: number,
    limit: number,
    blockDuration: number,
    name: string,
  ): Promise<RateLimitRecord> {
    const now = Date.now();
    this.sweep(now, ttl);
    const id = `${name}:${key}`;
    let window = this.windows.get(id);
    // A request refused while blocked does not count: a client retrying during its block is
    // served once the block ends, not kept blocked by its own retries.
    if (window && window.blockedUntil > now) {
      return {
        totalHits: window.hits,
        timeToExpire: Math.ceil((window.expiresAt - now) / 1000),
        isBlocked: true,
        timeToBlockExpire: Math.ceil((window.blockedUntil - now) / 1000),
      };
    }
    if (!window || window.expiresAt <= now) {
      window = { hits: 0, expiresAt: now + ttl, blockedUntil: 0 };
      this.windows.set(id, window);
    }
    window.hits++;
    if (window.blockedUntil <= now && window.hits > limit) {
      window.blockedUntil = now + (blockDuration > 0 ? blockDuration : ttl);
    }
    const blocked = window.blockedUntil > now;
    return {
      totalHits: window.hits,
      timeToExpire: Math.ceil((window.expiresAt - now) / 1000),
      isBlocked: blocked,
      timeToBlockExpire: blocked ? Math.ceil((window.blockedUntil - now) / 1000) : 0,
    };
  }

  private sweep(now: number, ttl: number): void {
    if (now < this.nextSweep) return;
    this.nextSweep = now + ttl;
    for (const [id, window] of this.windows) {
      if (window.expiresAt <= now && window.blockedUntil <= now) this.windows.delete(id);
    }
  }
}

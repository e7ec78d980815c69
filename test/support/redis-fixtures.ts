import { afterAll, beforeAll } from '@jest/globals';
import { randomUUID } from 'node:crypto';
import { startRedisServer, type RedisServer } from './redis-server.js';
import { RedisConnection } from '../../src/redis/redis-connection.js';
import { RedisKeys } from '../../src/redis/redis-keys.js';
import type { TusLogger } from '../../src/protocol/tus-context.js';

/** A logger that keeps what it is told (and prints nothing). */
export function quietLogger(): TusLogger & { warnings: string[]; errors: string[] } {
  const warnings: string[] = [];
  const errors: string[] = [];
  return {
    warnings,
    errors,
    warn: (m) => warnings.push(m),
    error: (m, e) => errors.push(`${m}: ${String(e)}`),
  };
}

/** A connection like a replica's, with short timeouts fit for tests. */
export function connect(url: string, logger: TusLogger = quietLogger()): RedisConnection {
  return new RedisConnection({ url, commandTimeoutMs: 500, unavailableAfterMs: 300 }, logger);
}

/**
 * A real redis-server and one connection to it for the suite that calls this (started in
 * beforeAll, stopped in afterAll).
 */
export function redisForSuite(): {
  readonly server: RedisServer;
  readonly connection: RedisConnection;
} {
  let server: RedisServer;
  let connection: RedisConnection;
  beforeAll(async () => {
    server = await startRedisServer();
    connection = connect(server.url);
    // Connected before the tests: a fresh connection on a loaded machine can take longer than
    // the short outage window every command gets.
    await connection.run((c) => c.ping(), 10_000);
  });
  afterAll(async () => {
    await connection?.close();
    await server?.dispose();
  });
  return {
    get server() {
      return server;
    },
    get connection() {
      return connection;
    },
  };
}

/** Keys no other test shares. */
export function freshKeys(): RedisKeys {
  return new RedisKeys(`t${randomUUID().slice(0, 8)}:`);
}

/** Waits until `check` holds (polling every 10 ms), or fails after `ms`. */
export async function until(
  check: () => boolean | Promise<boolean>,
  ms: number,
  what = 'condition',
): Promise<void> {
  const deadline = Date.now() + ms;
  while (!(await check())) {
    if (Date.now() > deadline) throw new Error(`${what} not met within ${ms} ms`);
    await new Promise((r) => setTimeout(r, 10));
  }
}

/** Resolves when `signal` fires; the time it fired (ms since epoch). */
export function firedAt(signal: AbortSignal): Promise<number> {
  return new Promise((resolve) => {
    if (signal.aborted) resolve(Date.now());
    else signal.addEventListener('abort', () => resolve(Date.now()), { once: true });
  });
}

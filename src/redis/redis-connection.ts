import { createHash } from 'node:crypto';
import { createRequire } from 'node:module';
import type { Redis, RedisOptions } from 'ioredis';
import type { TusLogger } from '../protocol/tus-context.js';
import { TusErrors, type TusError } from '../protocol/tus-error.js';

// ioredis is loaded when a connection is made, not when the package is imported: servers
// without Redis do not carry it (a few MiB of memory and start-up time).
const requireModule = createRequire(import.meta.url);
const loadRedis = () => (requireModule('ioredis') as typeof import('ioredis')).Redis;

/** How to reach Redis. */
export interface RedisConnectionOptions {
  /** `redis://[[user]:password@]host[:port][/db]` or `rediss://` (TLS). */
  url: string;
  /** More ioredis options (TLS, password, ...); the coordination's own settings win where they overlap. */
  client?: RedisOptions;
  /** A command with no answer within this many ms fails (Redis counts as unreachable). @default 2000 */
  commandTimeoutMs?: number;
  /** While the connection is down, a request waits this long for it before answering 503. @default 1000 */
  unavailableAfterMs?: number;
}

/** A Lua script run with EVALSHA, falling back to EVAL once Redis lost its script cache. */
export class LuaScript {
  readonly sha: string;

  constructor(readonly source: string) {
    this.sha = createHash('sha1').update(source).digest('hex');
  }
}

/** True for errors that mean "Redis cannot serve now", as opposed to a bug in a command. */
function isUnavailability(error: unknown): boolean {
  if (!(error instanceof Error)) return true;
  if (error.name !== 'ReplyError') return true;
  // Replies of a server that is starting, failing over, or busy running a script.
  return /^(LOADING|BUSY|MASTERDOWN|READONLY|TRYAGAIN|CLUSTERDOWN)\b/.test(error.message);
}

/** The 503 the protocol answers when Redis cannot be reached (the cause kept for the logs). */
export function redisUnavailable(cause?: unknown): TusError {
  return Object.assign(TusErrors.redisUnavailable(), { cause });
}

/** True for the error `redisUnavailable()` makes. */
export function isRedisUnavailable(error: unknown): boolean {
  return (error as TusError | null)?.code === 'ERR_REDIS_UNAVAILABLE';
}

/**
 * One Redis connection shared by the locker, the record cache, the queue and the janitor lock,
 * plus (lazily) a second one for the queue's wake-up channel. Commands are never queued while
 * the connection is down: they wait a little (`unavailableAfterMs`) for it to come back and
 * then fail with a 503 `TusError`, so a request gets a clear answer instead of hanging.
 */
export class RedisConnection {
  readonly client: Redis;
  private sub: Redis | undefined;
  private readonly unavailableAfterMs: number;
  private readonly readyListeners = new Set<() => void>();
  private closed = false;
  private everReady = false;
  private downSince: number | undefined;

  constructor(
    options: RedisConnectionOptions,
    private readonly logger: TusLogger,
  ) {
    this.unavailableAfterMs = options.unavailableAfterMs ?? 1000;
    const RedisClient = loadRedis();
    this.client = new RedisClient(options.url, {
      ...options.client,
      // Fail fast instead of piling commands up while Redis is away: requests get a 503.
      enableOfflineQueue: false,
      maxRetriesPerRequest: 0,
      commandTimeout: options.commandTimeoutMs ?? 2000,
      retryStrategy: (attempt) => Math.min(50 * attempt, 1000),
      connectionName: options.client?.connectionName ?? 'nestjs-tussi',
      // A socket still open when closing is destroyed soon (it would keep the process alive).
      disconnectTimeout: options.client?.disconnectTimeout ?? 200,
    });
    this.client.on('ready', () => this.onReady());
    this.client.on('error', (e: Error) => this.onDown(e));
    this.client.on('close', () => this.onDown());
  }

  /** Called each time the connection (re)becomes ready, after the first time too. */
  onReadyEvent(listener: () => void): () => void {
    this.readyListeners.add(listener);
    return () => this.readyListeners.delete(listener);
  }

  get isReady(): boolean {
    return this.client.status === 'ready';
  }

  /** The connection for SUBSCRIBE (a subscribed connection can send nothing else). */
  subscriber(): Redis {
    if (!this.sub) {
      this.sub = this.client.duplicate({
        // SUBSCRIBE may be sent before the connection is up; it is resent after reconnects.
        enableOfflineQueue: true,
        maxRetriesPerRequest: null,
        connectionName: 'nestjs-tussi-wake',
      });
      this.sub.on('error', () => {});
    }
    return this.sub;
  }

  /**
   * Runs `op` once the connection is ready (waiting at most `waitMs`). Connection problems and
   * transient server states become the 503 `redisUnavailable` error.
   */
  async run<T>(op: (client: Redis) => Promise<T>, waitMs = this.unavailableAfterMs): Promise<T> {
    if (this.closed) throw redisUnavailable(new Error('the Redis connection is closed'));
    if (!this.isReady) await this.waitReady(waitMs);
    try {
      return await op(this.client);
    } catch (e) {
      if (isUnavailability(e)) throw redisUnavailable(e);
      throw e;
    }
  }

  /** Runs a script (EVALSHA, then EVAL when Redis does not know it, e.g. after a restart). */
  eval(
    script: LuaScript,
    keys: string[],
    args: (string | number)[],
    waitMs?: number,
  ): Promise<unknown> {
    return this.run(async (client) => {
      try {
        return await client.evalsha(script.sha, keys.length, ...keys, ...args);
      } catch (e) {
        if (!(e instanceof Error) || !e.message.startsWith('NOSCRIPT')) throw e;
        return await client.eval(script.source, keys.length, ...keys, ...args);
      }
    }, waitMs);
  }

  /** Closes both connections; later commands fail with `redisUnavailable`. */
  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    this.readyListeners.clear();
    const quit = async (client: Redis | undefined) => {
      if (!client) return;
      if (client.status === 'ready') await client.quit().catch(() => client.disconnect());
      else client.disconnect();
    };
    await Promise.all([quit(this.client), quit(this.sub)]);
  }

  private waitReady(waitMs: number): Promise<void> {
    return new Promise((resolve, reject) => {
      const done = (ok: boolean) => {
        clearTimeout(timer);
        this.client.off('ready', onReady);
        if (ok) resolve();
        else
          reject(
            redisUnavailable(
              new Error(`Redis not reachable within ${waitMs} ms (${this.client.status})`),
            ),
          );
      };
      const onReady = () => done(true);
      const timer = setTimeout(() => done(false), waitMs);
      this.client.on('ready', onReady);
    });
  }

  private onReady(): void {
    if (this.downSince !== undefined) {
      const s = ((Date.now() - this.downSince) / 1000).toFixed(1);
      this.logger.warn(`Redis is reachable again (after ${s} s): coordination resumes`);
    }
    this.downSince = undefined;
    this.everReady = true;
    for (const listener of [...this.readyListeners]) {
      try {
        listener();
      } catch (e) {
        this.logger.error('a Redis reconnect handler failed', e);
      }
    }
  }

  private onDown(error?: Error): void {
    if (this.closed || this.downSince !== undefined) return;
    // Before the first connection, only an actual error is news; after it, any close is.
    if (!this.everReady && !error) return;
    this.downSince = Date.now();
    this.logger.warn(
      `Redis is unreachable${error ? ` (${error.message})` : ''}: uploads answer 503 until it is back`,
    );
  }
}

import { spawn, type ChildProcess } from 'node:child_process';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';
import { ROOT } from './child-server.js';

const DIST_INDEX = join(ROOT, 'dist', 'index.js');

/** What a replica is started with. */
export interface ReplicaConfig {
  uploadDir: string;
  completedDir: string;
  /** Where its consumer moves each finished upload (as `{id}`). */
  destDir: string;
  redisUrl: string;
  keyPrefix: string;
  lockLeaseMs: number;
  claimTimeoutMs: number;
  lockWaitMs: number;
}

/**
 * A replica: the built package (dist/) in its own node process, `TusModule` with the Redis
 * coordination on an ephemeral port of 127.0.0.1, and a consumer that moves each finished
 * upload it gets from the queue to `destDir`. Ownership is on, the principal taken from an
 * `X-Test-Principal` header (a function of the request, as an application may give). It reports on stdout, one JSON line each:
 * `{event:'listening',port}`, `{event:'claimed',id}`, `{event:'delivered',id}`.
 */
const REPLICA_SOURCE = `
import 'reflect-metadata';
import { Module } from '@nestjs/common';
import { NestFactory } from '@nestjs/core';
import { join } from 'node:path';
const { TusModule, CompletedUploadQueue, AbortError, TimeoutError } = await import(${JSON.stringify(
  pathToFileURL(DIST_INDEX).href,
)});
const cfg = JSON.parse(process.argv[1]);
const emit = (o) => process.stdout.write(JSON.stringify(o) + '\\n');
class AppModule {}
Module({
  imports: [
    TusModule.forRoot({
      uploadDir: cfg.uploadDir,
      completedDir: cfg.completedDir,
      fsync: false,
      lockWaitMs: cfg.lockWaitMs,
      queuePollIntervalMs: 200,
      janitor: false,
      // Uploads belong to the principal a test names; without one they are anonymous.
      ownership: (req) => req.headers['x-test-principal'],
      coordination: {
        redis: {
          url: cfg.redisUrl,
          keyPrefix: cfg.keyPrefix,
          lockLeaseMs: cfg.lockLeaseMs,
          claimTimeoutMs: cfg.claimTimeoutMs,
          queueRebuildIntervalMs: 1000,
        },
      },
    }),
  ],
})(AppModule);
const app = await NestFactory.create(AppModule, { logger: ['error', 'warn'] });
await app.listen(0, '127.0.0.1');
emit({ event: 'listening', port: app.getHttpServer().address().port });
const queue = app.get(CompletedUploadQueue);
const stop = new AbortController();
const consuming = (async () => {
  while (!stop.signal.aborted) {
    try {
      await queue.withFile(
        async (upload) => {
          emit({ event: 'claimed', id: upload.name });
          await upload.save(join(cfg.destDir, upload.name));
          emit({ event: 'delivered', id: upload.name });
        },
        { timeout: 1000, signal: stop.signal },
      );
    } catch (e) {
      if (e instanceof AbortError) return;
      if (e instanceof TimeoutError) continue;
      process.stderr.write('consumer: ' + (e && e.stack ? e.stack : String(e)) + '\\n');
      await new Promise((r) => setTimeout(r, 200));
    }
  }
})();
let stopping = false;
const shutdown = () => {
  if (stopping) return;
  stopping = true;
  stop.abort();
  consuming.then(() => app.close()).finally(() => process.exit(0));
};
process.on('SIGTERM', shutdown);
process.stdin.on('end', shutdown);
process.stdin.resume();
`;

export interface Replica {
  name: string;
  child: ChildProcess;
  port: number;
  baseUrl: string;
  claimed: string[];
  delivered: string[];
  stderr(): string;
  exited: Promise<void>;
  /** SIGTERM, then SIGKILL after 5 s. */
  stop(): Promise<void>;
  /** SIGKILL, at once. */
  kill(): Promise<void>;
}

/** Starts one replica and waits (bounded) until it listens. */
export async function startReplica(name: string, config: ReplicaConfig): Promise<Replica> {
  const child = spawn(
    process.execPath,
    ['--input-type=module', '-e', REPLICA_SOURCE, JSON.stringify(config)],
    { cwd: ROOT, stdio: ['pipe', 'pipe', 'pipe'], env: { ...process.env, NODE_OPTIONS: '' } },
  );
  let err = '';
  child.stderr.on('data', (c: Buffer) => (err += c.toString()));
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
  const claimed: string[] = [];
  const delivered: string[] = [];
  let buffered = '';
  let onListening: ((port: number) => void) | undefined;
  child.stdout.on('data', (chunk: Buffer) => {
    buffered += chunk.toString();
    const lines = buffered.split('\n');
    buffered = lines.pop()!;
    for (const line of lines) {
      if (!line.startsWith('{')) continue;
      const message = JSON.parse(line) as { event: string; id?: string; port?: number };
      if (message.event === 'listening') onListening?.(message.port!);
      if (message.event === 'claimed') claimed.push(message.id!);
      if (message.event === 'delivered') delivered.push(message.id!);
    }
  });
  const alive = () => child.exitCode === null && child.signalCode === null;
  const stop = async () => {
    if (!alive()) return;
    child.kill('SIGTERM');
    const timer = setTimeout(() => child.kill('SIGKILL'), 5000);
    await exited;
    clearTimeout(timer);
  };
  const kill = async () => {
    if (alive()) child.kill('SIGKILL');
    await exited;
  };
  try {
    const port = await new Promise<number>((resolve, reject) => {
      const timer = setTimeout(
        () => reject(new Error(`replica ${name} not listening in 20 s:\n${err}`)),
        20_000,
      );
      onListening = (p) => {
        clearTimeout(timer);
        resolve(p);
      };
      child.once('exit', (code) => {
        clearTimeout(timer);
        reject(new Error(`replica ${name} exited (${code}) before listening:\n${err}`));
      });
    });
    return {
      name,
      child,
      port,
      baseUrl: `http://127.0.0.1:${port}`,
      claimed,
      delivered,
      stderr: () => err,
      exited,
      stop,
      kill,
    };
  } catch (e) {
    await stop();
    throw e;
  }
}

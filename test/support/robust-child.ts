import { spawn, type ChildProcess } from 'node:child_process';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';
import { testPlatform } from './app.js';
import { PLATFORM_ADAPTER_SOURCE, ROOT, listeningPort } from './child-server.js';

/**
 * A server child process for the robustness suites (crash, faults, load): the built package
 * (dist/) in a plain Node process, with options of our choosing, which can be SIGKILLed,
 * measured through /proc and watched for crashes. Unlike `startChildServer` it takes module
 * options, logs the module's `TusLogger` lines to stderr with a `[tus:error]` / `[tus:warn]`
 * prefix, and can be started ahead of time as a "standby": modules imported, no app yet, so a
 * restart after a SIGKILL takes only the app's bootstrap (recovery included).
 */
const DIST_INDEX = join(ROOT, 'dist', 'index.js');

/** JSON-serialisable `TusModule.forRoot` options (directories are given separately). */
export interface RobustServerOptions {
  fsync?: boolean;
  lockWaitMs?: number;
  bodyIdleTimeoutMs?: number;
  headersTimeoutMs?: number;
  checkpointBytes?: number;
  checkpointIntervalMs?: number;
  shutdownTimeoutMs?: number;
  maxSize?: number;
  maxChunkSize?: number;
  maxMetadataSize?: number;
  trustedProxies?: string[];
  trustForwardedHost?: boolean;
  queuePollIntervalMs?: number;
  janitor?: false;
  /**
   * Guard the upload routes: `Authorization: Bearer <name>` with a name of this list makes
   * `name` the request's principal (anything else is 401), and ownership is on.
   */
  principals?: string[];
}

const CHILD_SOURCE = `
import 'reflect-metadata';
import { Module, UnauthorizedException } from '@nestjs/common';
import { NestFactory } from '@nestjs/core';
${PLATFORM_ADAPTER_SOURCE}
import { createInterface } from 'node:readline';
const { TusModule } = await import(${JSON.stringify(pathToFileURL(DIST_INDEX).href)});
const [uploadDir, completedDir, optionsJson, standby] = process.argv.slice(1);
const { principals, ...options } = JSON.parse(optionsJson);
const guards = principals
  ? [{
      canActivate(context) {
        const req = context.switchToHttp().getRequest();
        const match = /^Bearer +(\\S+)$/i.exec(req.headers.authorization ?? '');
        if (!match || !principals.includes(match[1])) throw new UnauthorizedException();
        req.user = match[1];
        return true;
      },
    }]
  : [];
const line = (level, text) => process.stderr.write('[tus:' + level + '] ' + text.replace(/\\n/g, '\\n    ') + '\\n');
const logger = {
  error: (message, error) => line('error', message + ': ' + (error instanceof Error ? (error.stack ?? error.message) : String(error))),
  warn: (message) => line('warn', message),
};
let app;
let stopping = false;
const stop = () => {
  if (stopping) return;
  stopping = true;
  (app ? app.close() : Promise.resolve()).finally(() => process.exit(0));
};
process.on('SIGTERM', stop);
async function start() {
  class AppModule {}
  const tus = TusModule.forRoot({
    ...options,
    ...(principals ? { ownership: true, guards } : {}),
    uploadDir,
    completedDir,
    logger,
  });
  Module({ imports: [tus] })(AppModule);
  // Errors logged through Nest's Logger (its exception handler's) count as failures too.
  const nestLogger = {
    log() {},
    error: (message, ...rest) => line('error', 'Nest: ' + [message, ...rest].map((r) => (r instanceof Error ? (r.stack ?? r.message) : String(r))).join(' ')),
    warn: (message) => line('warn', 'Nest: ' + String(message)),
  };
  app = await NestFactory.create(AppModule, ...(await platformAdapter()), { logger: nestLogger });
  await app.listen(0, '127.0.0.1');
  process.stdout.write(JSON.stringify({ port: app.getHttpServer().address().port, platform: app.getHttpAdapter().getType() }) + '\\n');
}
const input = createInterface({ input: process.stdin });
input.on('close', stop);
if (standby === 'standby') {
  process.stdout.write(JSON.stringify({ standby: true }) + '\\n');
  let started = false;
  input.on('line', (l) => {
    if (l.trim() === 'go' && !started) {
      started = true;
      start().catch((e) => { line('error', 'start failed: ' + (e?.stack ?? e)); process.exit(3); });
    }
  });
} else {
  await start();
}
`;

export interface RobustChild {
  child: ChildProcess;
  pid: number;
  port: number;
  baseUrl: string;
  /** Everything the child wrote (stdout and stderr, interleaved as received). */
  output(): string;
  /** The `[tus:error]` lines the module logged. */
  errors(): string[];
  /** Resolves with the exit code / signal once the process is gone. */
  exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
  /** True while the process runs. */
  alive(): boolean;
  /** SIGKILL, and wait until it is gone. */
  kill(): Promise<void>;
  /** SIGTERM (graceful), SIGKILL after 5 s. */
  stop(): Promise<void>;
}

/** A child whose modules are loaded, waiting to be told to start. */
export interface Standby {
  /** Starts the app (bootstrap, recovery, listen); resolves once it listens. */
  start(timeoutMs?: number): Promise<RobustChild>;
  /** Ends the process if it was never started. */
  dispose(): Promise<void>;
}

function spawnChild(
  uploadDir: string,
  completedDir: string,
  options: RobustServerOptions,
  standby: boolean,
) {
  const child = spawn(
    process.execPath,
    [
      '--input-type=module',
      '-e',
      CHILD_SOURCE,
      uploadDir,
      completedDir,
      JSON.stringify(options),
      standby ? 'standby' : 'direct',
    ],
    {
      cwd: ROOT,
      stdio: ['pipe', 'pipe', 'pipe'],
      env: { ...process.env, NODE_OPTIONS: '', TUS_CHILD_PLATFORM: testPlatform() },
    },
  );
  let out = '';
  const lines: Array<(line: string) => void> = [];
  let pending = '';
  child.stdout.on('data', (c: Buffer) => {
    const text = c.toString();
    out += text;
    pending += text;
    const parts = pending.split('\n');
    pending = parts.pop()!;
    for (const part of parts) for (const listener of lines) listener(part);
  });
  child.stderr.on('data', (c: Buffer) => (out += c.toString()));
  // A pipe to a SIGKILLed child may fail on write: never an uncaught error in the test process.
  child.stdin.on('error', () => {});
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) =>
    child.once('exit', (code, signal) => resolve({ code, signal })),
  );
  const alive = () => child.exitCode === null && child.signalCode === null;
  const waitFor = <T>(
    pick: (line: string) => T | undefined,
    timeoutMs: number,
    what: string,
  ): Promise<T> =>
    new Promise<T>((resolve, reject) => {
      const timer = setTimeout(() => {
        reject(new Error(`child server: ${what} not within ${timeoutMs} ms:\n${out}`));
      }, timeoutMs);
      const listener = (line: string) => {
        let value: T | undefined;
        try {
          value = pick(line);
        } catch {
          value = undefined;
        }
        if (value !== undefined) {
          clearTimeout(timer);
          lines.splice(lines.indexOf(listener), 1);
          resolve(value);
        }
      };
      lines.push(listener);
      void exited.then(({ code, signal }) => {
        clearTimeout(timer);
        reject(new Error(`child server exited (${code ?? signal}) before ${what}:\n${out}`));
      });
    });
  const kill = async () => {
    if (alive()) child.kill('SIGKILL');
    await exited;
  };
  const stop = async () => {
    if (!alive()) return;
    child.kill('SIGTERM');
    const timer = setTimeout(() => child.kill('SIGKILL'), 5000);
    await exited;
    clearTimeout(timer);
  };
  const handle = (port: number): RobustChild => ({
    child,
    pid: child.pid!,
    port,
    baseUrl: `http://127.0.0.1:${port}`,
    output: () => out,
    errors: () => out.split('\n').filter((l) => l.startsWith('[tus:error]')),
    exited,
    alive,
    kill,
    stop,
  });
  const portOf = listeningPort;
  return { child, waitFor, handle, portOf, kill, out: () => out };
}

/** Starts a server child and waits (bounded) until it listens. */
export async function startRobustServer(
  uploadDir: string,
  completedDir: string,
  options: RobustServerOptions = {},
  timeoutMs = 30_000,
): Promise<RobustChild> {
  const spawned = spawnChild(uploadDir, completedDir, options, false);
  try {
    const port = await spawned.waitFor(spawned.portOf, timeoutMs, 'listening');
    return spawned.handle(port);
  } catch (e) {
    await spawned.kill();
    throw e;
  }
}

/**
 * Spawns a child that imports everything and then waits for `start()`: restarts after a kill
 * then cost only the application's bootstrap. Resolves once the modules are loaded.
 */
export async function spawnStandby(
  uploadDir: string,
  completedDir: string,
  options: RobustServerOptions = {},
  timeoutMs = 30_000,
): Promise<Standby> {
  const spawned = spawnChild(uploadDir, completedDir, options, true);
  try {
    await spawned.waitFor(
      (line) => ((JSON.parse(line) as { standby?: boolean }).standby ? true : undefined),
      timeoutMs,
      'standby',
    );
  } catch (e) {
    await spawned.kill();
    throw e;
  }
  let started = false;
  return {
    start: async (startTimeoutMs = 20_000) => {
      started = true;
      const port = spawned.waitFor(spawned.portOf, startTimeoutMs, 'listening');
      spawned.child.stdin.write('go\n');
      try {
        return spawned.handle(await port);
      } catch (e) {
        await spawned.kill();
        throw e;
      }
    },
    dispose: async () => {
      if (!started) await spawned.kill();
    },
  };
}

import { execFile, spawn, type ChildProcess } from 'node:child_process';
import { existsSync, readdirSync, statSync } from 'node:fs';
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { promisify } from 'node:util';
import { testPlatform } from './app.js';

export const ROOT = fileURLToPath(new URL('../..', import.meta.url));

/**
 * For a child's program: `platformAdapter()` gives the arguments `NestFactory.create` takes
 * before its options for the platform of the tests that started it (`TUS_CHILD_PLATFORM`).
 */
export const PLATFORM_ADAPTER_SOURCE = `
const platformAdapter = async () =>
  process.env.TUS_CHILD_PLATFORM === 'fastify'
    ? [new (await import('@nestjs/platform-fastify')).FastifyAdapter()]
    : [];
`;
const DIST_INDEX = join(ROOT, 'dist', 'index.js');

/**
 * The child's program: plain ESM over the built package, so the child needs no TypeScript
 * loader. Kept as a string (run with `node --input-type=module -e`) rather than as an .mjs file
 * the type-aware lint cannot parse. argv: uploadDir completedDir. Prints one JSON line with the
 * port once listening; stops on SIGTERM or when its stdin closes (the parent went away).
 */
const CHILD_SOURCE = `
import 'reflect-metadata';
import { Module } from '@nestjs/common';
import { NestFactory } from '@nestjs/core';
${PLATFORM_ADAPTER_SOURCE}
const { TusModule } = await import(${JSON.stringify(pathToFileURL(DIST_INDEX).href)});
const [uploadDir, completedDir] = process.argv.slice(1);
class AppModule {}
Module({ imports: [TusModule.forRoot({ uploadDir, completedDir })] })(AppModule);
const app = await NestFactory.create(AppModule, ...(await platformAdapter()), { logger: ['error', 'warn'] });
await app.listen(0, '127.0.0.1');
process.stdout.write(JSON.stringify({ port: app.getHttpServer().address().port, platform: app.getHttpAdapter().getType() }) + '\\n');
let stopping = false;
const stop = () => {
  if (stopping) return;
  stopping = true;
  app.close().finally(() => process.exit(0));
};
process.on('SIGTERM', stop);
process.stdin.on('end', stop);
process.stdin.resume();
`;

/**
 * The port of a child's "listening" line (`{ port, platform }`), after checking that it runs on
 * the platform of the tests that started it.
 */
export function listeningPort(line: string): number | undefined {
  const { port, platform } = JSON.parse(line) as { port?: number; platform?: string };
  if (port !== undefined && platform !== testPlatform()) {
    throw new Error(`the child server runs on ${platform}, the tests on ${testPlatform()}`);
  }
  return port;
}

/** Newest modification time of the package's non-test sources. */
function newestSource(dir = join(ROOT, 'src')): number {
  let newest = 0;
  for (const entry of readdirSync(dir, { withFileTypes: true })) {
    const path = join(dir, entry.name);
    if (entry.isDirectory()) newest = Math.max(newest, newestSource(path));
    else if (entry.name.endsWith('.ts') && !entry.name.endsWith('.spec.ts')) {
      newest = Math.max(newest, statSync(path).mtimeMs);
    }
  }
  return newest;
}

/** Builds dist/ (as the global setup does) when it is missing or older than src/. */
export async function ensureBuilt(): Promise<void> {
  if (existsSync(DIST_INDEX) && statSync(DIST_INDEX).mtimeMs >= newestSource()) return;
  try {
    await promisify(execFile)('npx', ['tsc', '-p', 'tsconfig.build.json'], {
      cwd: ROOT,
      timeout: 120_000,
    });
  } catch (e) {
    const { stdout = '', stderr = '' } = e as { stdout?: string; stderr?: string };
    throw new Error(`building dist/ for the child server failed:\n${stdout}${stderr}`, {
      cause: e,
    });
  }
}

export interface ChildServer {
  child: ChildProcess;
  pid: number;
  port: number;
  baseUrl: string;
  /** Whatever the child wrote to stderr so far. */
  stderr(): string;
  stop(): Promise<void>;
}

/** Starts the built server in a child process and waits (bounded) until it listens. */
export async function startChildServer(
  uploadDir: string,
  completedDir: string,
): Promise<ChildServer> {
  const child = spawn(
    process.execPath,
    ['--input-type=module', '-e', CHILD_SOURCE, uploadDir, completedDir],
    {
      cwd: ROOT,
      stdio: ['pipe', 'pipe', 'pipe'],
      env: { ...process.env, NODE_OPTIONS: '', TUS_CHILD_PLATFORM: testPlatform() },
    },
  );
  let err = '';
  child.stderr.on('data', (c: Buffer) => (err += c.toString()));
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
  const stop = async () => {
    if (child.exitCode === null && child.signalCode === null) {
      child.kill('SIGTERM');
      const timer = setTimeout(() => child.kill('SIGKILL'), 5000);
      await exited;
      clearTimeout(timer);
    }
  };
  try {
    const port = await new Promise<number>((resolve, reject) => {
      let out = '';
      const timer = setTimeout(
        () => reject(new Error(`child server not ready in 20 s:\n${err}`)),
        20_000,
      );
      child.stdout.on('data', (c: Buffer) => {
        out += c.toString();
        const line = out.split('\n')[0];
        if (out.includes('\n') && line) {
          clearTimeout(timer);
          try {
            const port = listeningPort(line);
            if (port === undefined) throw new Error(`child server said: ${line}`);
            resolve(port);
          } catch (e) {
            reject(e instanceof Error ? e : new Error(String(e)));
          }
        }
      });
      child.once('exit', (code) => {
        clearTimeout(timer);
        reject(new Error(`child server exited (${code}) before listening:\n${err}`));
      });
    });
    return {
      child,
      pid: child.pid!,
      port,
      baseUrl: `http://127.0.0.1:${port}`,
      stderr: () => err,
      stop,
    };
  } catch (e) {
    await stop();
    throw e;
  }
}

/** `VmRSS` and `VmHWM` (peak RSS) of a process, in bytes, from /proc/<pid>/status. */
export async function memoryOf(pid: number): Promise<{ rss: number; hwm: number }> {
  const status = await readFile(`/proc/${pid}/status`, 'utf8');
  const kib = (field: string) => {
    const match = new RegExp(`^${field}:\\s+(\\d+) kB$`, 'm').exec(status);
    if (!match) throw new Error(`no ${field} in /proc/${pid}/status`);
    return Number(match[1]) * 1024;
  };
  return { rss: kib('VmRSS'), hwm: kib('VmHWM') };
}

import { execFile, spawn, type ChildProcess } from 'node:child_process';
import { createHash } from 'node:crypto';
import { createReadStream, existsSync, readdirSync, statSync } from 'node:fs';
import { readdir } from 'node:fs/promises';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import type { bootstrap } from '../../sample/src/bootstrap.js';
import type { SampleBootstrap } from '../../src/cli/server.js';
import { UploadRecord } from '../../src/core/upload-record.js';

/**
 * tussi-server imports dist/sample/bootstrap.js at run time, typed by its own SampleBootstrap:
 * this fails the type check (`tsc -p tsconfig.json`) when the sample's bootstrap drifts from it.
 */
type Assignable<T extends U, U> = T;
export type SampleBootstrapMatches = Assignable<typeof bootstrap, SampleBootstrap['bootstrap']>;

export const ROOT = fileURLToPath(new URL('../..', import.meta.url));
export const SERVER_BIN = join(ROOT, 'bin', 'tussi-server.js');
export const UPLOAD_BIN = join(ROOT, 'bin', 'tussi-upload.js');

/** Strips ANSI colour and cursor sequences. */
export function plain(text: string): string {
  // eslint-disable-next-line no-control-regex
  return text.replace(/\x1b\[[0-9;?]*[A-Za-z]/g, '');
}

/**
 * The environment of a CLI child: this process's, without jest's NODE_OPTIONS and without any
 * variable the server or uploader reads (so a developer's shell cannot change the tests).
 */
export function cliEnv(extra: Record<string, string> = {}): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = { ...process.env, NODE_OPTIONS: '', NO_COLOR: '1' };
  for (const name of Object.keys(env)) {
    if (/^(HOST|PORT|TUS_.*|TUSSI_.*|XDG_CACHE_HOME|FORCE_COLOR)$/.test(name)) delete env[name];
  }
  return { ...env, ...extra };
}

function newestMtime(dir: string, suffix: string): number {
  let newest = 0;
  for (const entry of readdirSync(dir, { withFileTypes: true })) {
    const path = join(dir, entry.name);
    if (entry.isDirectory()) newest = Math.max(newest, newestMtime(path, suffix));
    else if (entry.name.endsWith(suffix) && !entry.name.endsWith('.spec.ts')) {
      newest = Math.max(newest, statSync(path).mtimeMs);
    }
  }
  return newest;
}

async function tsc(args: string[]): Promise<void> {
  try {
    await promisify(execFile)('npx', ['tsc', ...args], { cwd: ROOT, timeout: 180_000 });
  } catch (e) {
    const { stdout = '', stderr = '' } = e as { stdout?: string; stderr?: string };
    throw new Error(`tsc ${args.join(' ')} failed:\n${stdout}${stderr}`, { cause: e });
  }
}

/**
 * What the bins run: dist/cli (built with the package by the global setup, rebuilt here when
 * older than src/) and the sample application in dist/sample (`npm run build:cli-sample`).
 */
export async function ensureCliBuilt(): Promise<void> {
  const cli = join(ROOT, 'dist', 'cli', 'server.js');
  if (!existsSync(cli) || statSync(cli).mtimeMs < newestMtime(join(ROOT, 'src'), '.ts')) {
    await tsc(['-p', 'tsconfig.build.json']);
  }
  const sample = join(ROOT, 'dist', 'sample', 'bootstrap.js');
  if (
    !existsSync(sample) ||
    statSync(sample).mtimeMs < newestMtime(join(ROOT, 'sample', 'src'), '.ts')
  ) {
    await tsc(['-p', 'sample/tsconfig.json', '--outDir', 'dist/sample']);
  }
  // The upload page the sample serves, bundled from sample/ui (`npm run build:ui`).
  const page = join(ROOT, 'dist', 'sample', 'ui', 'app.js');
  const newestUi = Math.max(
    ...['.mjs', '.css', '.html'].map((suffix) => newestMtime(join(ROOT, 'sample', 'ui'), suffix)),
  );
  if (!existsSync(page) || statSync(page).mtimeMs < newestUi) {
    await promisify(execFile)(process.execPath, ['sample/ui/build.mjs', 'dist/sample/ui'], {
      cwd: ROOT,
      timeout: 120_000,
    });
  }
}

/** Collected output of a child, with a bounded wait for a line. */
export class Output {
  text = '';
  private waiters: (() => void)[] = [];

  constructor(...streams: (NodeJS.ReadableStream | null)[]) {
    for (const stream of streams) {
      stream?.on('data', (chunk: Buffer) => {
        this.text += plain(chunk.toString());
        for (const wake of this.waiters.splice(0)) wake();
      });
    }
  }

  /** Resolves with the first match of `pattern` in the output; rejects after `ms`. */
  async waitFor(pattern: RegExp, ms: number, exited?: Promise<unknown>): Promise<RegExpMatchArray> {
    const deadline = Date.now() + ms;
    let gone = false;
    void exited?.then(() => {
      gone = true;
      for (const wake of this.waiters.splice(0)) wake();
    });
    for (;;) {
      const match = pattern.exec(this.text);
      if (match) return match;
      const left = deadline - Date.now();
      if (left <= 0 || gone) {
        throw new Error(
          `${gone ? 'process exited' : `no ${pattern} within ${ms} ms`}; output:\n${this.text}`,
        );
      }
      await new Promise<void>((resolve) => {
        const timer = setTimeout(resolve, Math.min(left, 250));
        this.waiters.push(() => {
          clearTimeout(timer);
          resolve();
        });
      });
    }
  }
}

export interface Exit {
  code: number | null;
  signal: NodeJS.Signals | null;
}

function exitOf(child: ChildProcess): Promise<Exit> {
  if (child.exitCode !== null || child.signalCode !== null) {
    return Promise.resolve({ code: child.exitCode, signal: child.signalCode });
  }
  return new Promise((resolve) =>
    child.once('exit', (code, signal) => resolve({ code, signal: signal })),
  );
}

/** Waits (bounded) for a child to exit; SIGKILLs it when it does not. */
export async function waitExit(
  child: ChildProcess,
  ms: number,
): Promise<Exit & { timedOut: boolean }> {
  const exited = exitOf(child);
  let timer: NodeJS.Timeout | undefined;
  const timedOut = await Promise.race([
    exited.then(() => false),
    new Promise<boolean>((resolve) => (timer = setTimeout(() => resolve(true), ms))),
  ]);
  clearTimeout(timer);
  if (timedOut) child.kill('SIGKILL');
  return { ...(await exited), timedOut };
}

export interface ServerProcess {
  child: ChildProcess;
  output: Output;
  /** `http://127.0.0.1:PORT/files/` as printed. */
  url: string;
  exited: Promise<Exit>;
  /** SIGTERM, then SIGKILL after `ms`; resolves with how it ended. */
  stop(ms?: number): Promise<Exit & { timedOut: boolean }>;
}

/**
 * Starts `tussi-server` (node bin/tussi-server.js) on a free port (`--port 0`) and waits until
 * it prints its URL. stdin is a pipe that is never written: not a terminal.
 */
export async function startServer(
  args: string[],
  options: { cwd: string; env?: Record<string, string>; readyMs?: number },
): Promise<ServerProcess> {
  const child = spawn(process.execPath, [SERVER_BIN, '--port', '0', ...args], {
    cwd: options.cwd,
    env: cliEnv(options.env),
    stdio: ['pipe', 'pipe', 'pipe'],
  });
  const output = new Output(child.stdout, child.stderr);
  const exited = exitOf(child);
  const stop = async (ms = 15_000) => {
    if (child.exitCode === null && child.signalCode === null) child.kill('SIGTERM');
    return waitExit(child, ms);
  };
  try {
    const [, url] = await output.waitFor(
      /TUS upload URL: (http:\/\/\S+)/,
      options.readyMs ?? 30_000,
      exited,
    );
    return { child, output, url, exited, stop };
  } catch (e) {
    await stop(2000);
    throw e;
  }
}

/**
 * `tussi-server` on `base/uploads`, `base/completed` and `base/dest` (created by the server),
 * started in `cwd`, with `extra` flags.
 */
export async function startServerIn(
  base: string,
  extra: string[] = [],
  cwd = base,
): Promise<{ srv: ServerProcess; uploads: string; completed: string; dest: string }> {
  const dirs = {
    uploads: join(base, 'uploads'),
    completed: join(base, 'completed'),
    dest: join(base, 'dest'),
  };
  const srv = await startServer(
    [
      '--upload-dir',
      dirs.uploads,
      '--completed-dir',
      dirs.completed,
      '--dest-dir',
      dirs.dest,
      ...extra,
    ],
    { cwd },
  );
  return { srv, ...dirs };
}

export interface UploadRun {
  code: number | null;
  signal: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
}

/** A running `tussi-upload`. */
export interface UploadProcess {
  child: ChildProcess;
  output: Output;
  done: Promise<UploadRun>;
}

export function spawnUpload(
  args: string[],
  options: { cwd: string; cacheDir: string },
): UploadProcess {
  const child = spawn(process.execPath, [UPLOAD_BIN, ...args], {
    cwd: options.cwd,
    env: cliEnv({ TUSSI_UPLOAD_CACHE_DIR: options.cacheDir }),
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let stdout = '';
  let stderr = '';
  child.stdout.on('data', (c: Buffer) => (stdout += c.toString()));
  child.stderr.on('data', (c: Buffer) => (stderr += c.toString()));
  const output = new Output(child.stdout, child.stderr);
  const done = exitOf(child).then(({ code, signal }) => ({ code, signal, stdout, stderr }));
  return { child, output, done };
}

/** Runs `tussi-upload` to its end (killed after `ms`). */
export async function runUpload(
  args: string[],
  options: { cwd: string; cacheDir: string; ms?: number },
): Promise<UploadRun> {
  const run = spawnUpload(args, options);
  const timer = setTimeout(() => run.child.kill('SIGKILL'), options.ms ?? 60_000);
  try {
    return await run.done;
  } finally {
    clearTimeout(timer);
  }
}

export async function sha256File(path: string): Promise<string> {
  const hash = createHash('sha256');
  for await (const chunk of createReadStream(path)) hash.update(chunk as Buffer);
  return hash.digest('hex');
}

/** Polls `probe` until it returns a value that is not undefined; throws after `ms`. */
export async function until<T>(
  probe: () => Promise<T | undefined> | T | undefined,
  ms: number,
  what: string,
  intervalMs = 25,
): Promise<T> {
  const deadline = Date.now() + ms;
  for (;;) {
    const value = await probe();
    if (value !== undefined) return value;
    if (Date.now() > deadline) throw new Error(`${what}: not reached within ${ms} ms`);
    await new Promise((r) => setTimeout(r, intervalMs));
  }
}

/** The offset of the (only) unfinished upload's staging record, or undefined. */
export async function stagingOffset(uploadDir: string): Promise<number | undefined> {
  let names: string[];
  try {
    names = await readdir(uploadDir);
  } catch {
    return undefined;
  }
  for (const name of names.filter((n) => n.endsWith('.meta'))) {
    try {
      const { offset } = await UploadRecord.fromFile(join(uploadDir, name));
      if (offset > 0) return offset;
    } catch {
      // Replaced while read: look again next time.
    }
  }
  return undefined;
}

/**
 * Data files of a destination directory whose delivery is done: the consumer saves the data,
 * then its record (`{name}.meta`, written through a temp file); a file counts once both are in.
 */
export async function delivered(destDir: string): Promise<string[]> {
  try {
    const names = new Set(await readdir(destDir));
    return [...names]
      .filter((n) => !n.endsWith('.meta') && !n.startsWith('.') && names.has(`${n}.meta`))
      .sort();
  } catch {
    return [];
  }
}

/** The upload id of an upload URL. */
export function idOfUrl(url: string): string {
  return url.replace(/\/+$/, '').split('/').pop()!;
}

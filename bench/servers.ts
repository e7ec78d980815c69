/**
 * The servers under test, each started in its own child process on 127.0.0.1 with its own data
 * directories, and what the bench does around a trial: wait until the server has finished with
 * the uploads (nestjs-tussi's consumer delivers each one), check the bytes stored, clean up.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdirSync } from 'node:fs';
import { readdir, rm, stat } from 'node:fs/promises';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';

/** bench/dist/servers/*.js, next to this module once compiled. */
const SERVERS_DIR = fileURLToPath(new URL('./servers/', import.meta.url));
export const ROOT = fileURLToPath(new URL('../..', import.meta.url));

export type ServerKey = 'nestjs' | 'nestjs-fsync' | 'tus' | 'raw';

export const SERVER_LABELS: Record<ServerKey, string> = {
  nestjs: 'nestjs-tussi',
  'nestjs-fsync': 'nestjs-tussi (fsync)',
  tus: '@tus/server',
  raw: 'raw node:http',
};

export interface StartOptions {
  /** Largest upload, the same limit for every TUS server. */
  maxSize: number;
  /** Directory for `--cpu-prof` profiles of the server; none when undefined. */
  cpuProfDir?: string;
}

export interface RunningServer {
  key: ServerKey;
  label: string;
  pid: number;
  /** The creation URL, `http://127.0.0.1:PORT/files`. */
  endpoint: string;
  /** Waits until the server is done with `uploads` finished uploads (bounded). */
  settle(uploads: number): Promise<void>;
  /** Bytes of upload data on disk now (records, receipts and temp files left out). */
  storedBytes(): Promise<number>;
  /** Deletes every upload the server stored. */
  clean(): Promise<void>;
  /** Whatever the child printed (stdout is drained so the logging never blocks it). */
  output(): string;
  stop(): Promise<void>;
}

/** The environment of a server child: no variable of the caller's that the servers read. */
function childEnv(extra: Record<string, string>): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = { ...process.env, NODE_OPTIONS: '', NO_COLOR: '1' };
  for (const name of Object.keys(env)) {
    if (/^(HOST|PORT|TUS_.*|TUSSI_.*|FORCE_COLOR|DEBUG)$/.test(name)) delete env[name];
  }
  return { ...env, ...extra };
}

const RECORD = /\.(meta|json|done|tmp|lock)$|^\./;

async function dataFiles(dir: string): Promise<string[]> {
  const names = await readdir(dir).catch(() => [] as string[]);
  return names.filter((name) => !RECORD.test(name) && !name.includes('.tmp'));
}

async function sumSizes(dirs: string[]): Promise<number> {
  let total = 0;
  for (const dir of dirs) {
    for (const name of await dataFiles(dir)) {
      const info = await stat(join(dir, name)).catch(() => null);
      if (info?.isFile()) total += info.size;
    }
  }
  return total;
}

async function emptyDir(dir: string): Promise<void> {
  const names = await readdir(dir).catch(() => [] as string[]);
  await Promise.all(names.map((name) => rm(join(dir, name), { recursive: true, force: true })));
}

/** Starts one server and waits (bounded) for its `BENCH_READY {"port":N}` line. */
export async function startServer(
  key: ServerKey,
  baseDir: string,
  options: StartOptions,
): Promise<RunningServer> {
  const dir = join(baseDir, key);
  let args: string[];
  let env: Record<string, string> = {};
  let dataDirs: string[];
  let settle: (uploads: number) => Promise<void> = async () => {};
  if (key === 'nestjs' || key === 'nestjs-fsync') {
    const uploads = join(dir, 'uploads');
    const completed = join(dir, 'completed');
    const dest = join(dir, 'dest');
    for (const d of [uploads, completed, dest]) mkdirSync(d, { recursive: true });
    args = [join(SERVERS_DIR, 'nestjs-server.js')];
    env = {
      TUS_UPLOAD_DIR: uploads,
      TUS_COMPLETED_DIR: completed,
      TUS_DEST_DIR: dest,
      TUS_FSYNC: key === 'nestjs-fsync' ? 'true' : 'false',
      TUS_MAX_SIZE: String(options.maxSize),
      // Neither of the other servers writes a line per upload; the sample's logs stay on for
      // warnings and errors.
      LOG_LEVEL: 'warn',
    };
    dataDirs = [uploads, completed, dest];
    // The sample's consumer moves each finished upload from completed/ to dest/: the trial's
    // uploads are all handled once dest/ holds every one of them.
    settle = async (count) => {
      const deadline = Date.now() + 120_000;
      // Often at first, then gently: a readdir of thousands of names is not free either.
      for (let i = 0; (await dataFiles(dest)).length < count; i++) {
        if (Date.now() > deadline) {
          throw new Error(`${key}: ${count} uploads not delivered to ${dest} in 120 s`);
        }
        await new Promise((r) => setTimeout(r, i < 20 ? 10 : 50));
      }
    };
  } else if (key === 'tus') {
    mkdirSync(dir, { recursive: true });
    args = [join(SERVERS_DIR, 'tus-server.js'), dir, String(options.maxSize)];
    dataDirs = [dir];
  } else {
    mkdirSync(dir, { recursive: true });
    args = [join(SERVERS_DIR, 'raw-server.js'), dir];
    dataDirs = [dir];
  }
  const nodeArgs = options.cpuProfDir
    ? ['--cpu-prof', `--cpu-prof-dir=${options.cpuProfDir}`, `--cpu-prof-name=${key}.cpuprofile`]
    : [];

  const child: ChildProcess = spawn(process.execPath, [...nodeArgs, ...args], {
    cwd: ROOT,
    env: childEnv(env),
    stdio: ['pipe', 'pipe', 'pipe'],
  });
  let out = '';
  // Keep the start of the output and its last lines: enough to explain a failure.
  const keep = (chunk: Buffer) => {
    out += chunk.toString();
    if (out.length > 200_000) out = out.slice(0, 20_000) + '\n[...]\n' + out.slice(-100_000);
  };
  child.stdout!.on('data', keep);
  child.stderr!.on('data', keep);
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));

  const stop = async () => {
    if (child.exitCode !== null || child.signalCode !== null) return;
    child.kill('SIGTERM');
    const timer = setTimeout(() => child.kill('SIGKILL'), 10_000);
    await exited;
    clearTimeout(timer);
  };

  try {
    const port = await new Promise<number>((resolve, reject) => {
      const timer = setTimeout(
        () => reject(new Error(`${key} not listening in 30 s:\n${out}`)),
        30_000,
      );
      const onData = () => {
        const match = /BENCH_READY (\{.*\})/.exec(out);
        if (match) {
          clearTimeout(timer);
          child.stdout!.off('data', onData);
          resolve((JSON.parse(match[1]) as { port: number }).port);
        }
      };
      child.stdout!.on('data', onData);
      child.once('exit', (code, signal) => {
        clearTimeout(timer);
        reject(new Error(`${key} exited (${code ?? signal}) before listening:\n${out}`));
      });
    });
    return {
      key,
      label: SERVER_LABELS[key],
      pid: child.pid!,
      endpoint: `http://127.0.0.1:${port}/files`,
      settle,
      storedBytes: () => sumSizes(dataDirs),
      clean: async () => {
        for (const d of dataDirs) await emptyDir(d);
      },
      output: () => out,
      stop,
    };
  } catch (e) {
    await stop();
    throw e;
  }
}

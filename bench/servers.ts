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
import {
  CreateBucketCommand,
  DeleteObjectCommand,
  ListObjectsV2Command,
  type S3Client,
} from '@aws-sdk/client-s3';
import type { Protocol } from './client.js';

/** bench/dist/servers/*.js, next to this module once compiled. */
const SERVERS_DIR = fileURLToPath(new URL('./servers/', import.meta.url));
export const ROOT = fileURLToPath(new URL('../..', import.meta.url));

export type ServerKey =
  | 'nestjs'
  | 'nestjs-fsync'
  | 'nestjs-v8'
  | 'nestjs-fastify'
  | 'nestjs-draft'
  | 'tus'
  | 'raw'
  | 'nestjs-s3'
  | 'tus-s3';

export const SERVER_LABELS: Record<ServerKey, string> = {
  nestjs: 'nestjs-tussi',
  'nestjs-fsync': 'nestjs-tussi (fsync)',
  // The sample as the two others run: no V8 flag (the sample sets --heap-growing-percent=200).
  'nestjs-v8': 'nestjs-tussi (V8 defaults)',
  // The same sample on @nestjs/platform-fastify (the others run it on Express).
  'nestjs-fastify': 'nestjs-tussi (Fastify)',
  // The same sample on Express, its client speaking the IETF draft instead of TUS 1.0.0.
  'nestjs-draft': 'nestjs-tussi (IETF draft)',
  tus: '@tus/server',
  raw: 'raw node:http',
  'nestjs-s3': 'nestjs-tussi on S3',
  'tus-s3': '@tus/server + @tus/s3-store',
};

/** The order servers are shown in, in the tables and the chart. */
export const SERVER_ORDER: ServerKey[] = [
  'nestjs',
  'nestjs-fastify',
  'nestjs-draft',
  'nestjs-fsync',
  'nestjs-v8',
  'tus',
  'raw',
];

/** The servers that store into S3 (the bench starts a gateway for them). */
export const S3_SERVERS: ServerKey[] = ['nestjs-s3', 'tus-s3'];

/** The S3 server the S3 servers use, one bucket each. */
export interface S3Target {
  endpoint: string;
  accessKeyId: string;
  secretAccessKey: string;
  client: S3Client;
}

export interface StartOptions {
  /** Largest upload, the same limit for every TUS server. */
  maxSize: number;
  /** Directory for `--cpu-prof` profiles of the server; none when undefined. */
  cpuProfDir?: string;
  /** The S3 server, for the S3 servers. */
  s3?: S3Target;
}

export interface RunningServer {
  key: ServerKey;
  label: string;
  pid: number;
  /** The creation URL, `http://127.0.0.1:PORT/files`. */
  endpoint: string;
  /** The protocol the bench's client speaks to it. */
  protocol: Protocol;
  /** Waits until the server is done with `uploads` finished uploads (bounded). */
  settle(uploads: number): Promise<void>;
  /** Bytes of upload data on disk now (records, receipts and temp files left out). */
  storedBytes(): Promise<number>;
  /** Deletes every upload the server stored. */
  clean(): Promise<void>;
  /** Whatever the child printed (stdout is drained so the logging never blocks it). */
  output(): string;
  /** Garbage collections the server ran since it started (from `--trace-gc`). */
  gcCounts(): { full: number; minor: number };
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
  let storedBytes = () => sumSizes(dataDirs);
  let cleanS3 = async () => {};
  let bucket: string | undefined;
  if (S3_SERVERS.includes(key)) {
    const s3 = options.s3;
    if (!s3) throw new Error(`${key} needs an S3 server`);
    bucket = `bench-${key}-${process.pid}`;
    await s3.client.send(new CreateBucketCommand({ Bucket: bucket }));
    env = {
      AWS_ACCESS_KEY_ID: s3.accessKeyId,
      AWS_SECRET_ACCESS_KEY: s3.secretAccessKey,
      BENCH_S3_ENDPOINT: s3.endpoint,
    };
    const b = bucket;
    cleanS3 = async () => {
      for (const o of await listObjects(s3.client, b)) {
        await s3.client.send(new DeleteObjectCommand({ Bucket: b, Key: o.key }));
      }
    };
    // @tus/s3-store: the finished objects (its records are `.info`, pieces `.part`).
    if (key === 'tus-s3') {
      storedBytes = async () =>
        (await listObjects(s3.client, b))
          .filter((o) => !/\.(info|part)$/.test(o.key))
          .reduce((sum, o) => sum + o.size, 0);
    }
  }
  if (key.startsWith('nestjs')) {
    const uploads = join(dir, 'uploads');
    const completed = join(dir, 'completed');
    const dest = join(dir, 'dest');
    for (const d of [uploads, completed, dest]) mkdirSync(d, { recursive: true });
    args = [join(SERVERS_DIR, 'nestjs-server.js')];
    env = {
      ...env,
      ...(key === 'nestjs-s3' && {
        TUS_S3_BUCKET: bucket!,
        TUS_S3_ENDPOINT: env.BENCH_S3_ENDPOINT,
        TUS_S3_FORCE_PATH_STYLE: 'true',
        TUS_S3_SCRATCH_DIR: join(dir, 'scratch'),
      }),
      TUS_UPLOAD_DIR: uploads,
      TUS_COMPLETED_DIR: completed,
      TUS_DEST_DIR: dest,
      TUS_FSYNC: key === 'nestjs-fsync' ? 'true' : 'false',
      TUS_MAX_SIZE: String(options.maxSize),
      ...(key === 'nestjs-v8' && { TUS_HEAP_GROWING_PERCENT: 'default' }),
      TUS_PLATFORM: key === 'nestjs-fastify' ? 'fastify' : 'express',
      // Neither of the other servers writes a line per upload; the sample's logs stay on for
      // warnings and errors.
      LOG_LEVEL: 'warn',
    };
    // On S3 the sample's consumer downloads each finished object into dest/.
    dataDirs = key === 'nestjs-s3' ? [dest] : [uploads, completed, dest];
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
  } else if (key === 'tus-s3') {
    args = [join(SERVERS_DIR, 'tus-s3-server.js'), bucket!, String(options.maxSize)];
    dataDirs = [];
  } else {
    mkdirSync(dir, { recursive: true });
    args = [join(SERVERS_DIR, 'raw-server.js'), dir];
    dataDirs = [dir];
  }
  // Every server runs with the same V8 flags: `--trace-gc` (one line per GC, counted per
  // trial; it changes nothing of how V8 collects), and the profiler when asked.
  const nodeArgs = [
    '--trace-gc',
    ...(options.cpuProfDir
      ? ['--cpu-prof', `--cpu-prof-dir=${options.cpuProfDir}`, `--cpu-prof-name=${key}.cpuprofile`]
      : []),
  ];

  const child: ChildProcess = spawn(process.execPath, [...nodeArgs, ...args], {
    cwd: ROOT,
    env: childEnv(env),
    stdio: ['pipe', 'pipe', 'pipe'],
  });
  let out = '';
  const gcs = { full: 0, minor: 0 };
  let partial = '';
  // Keep the start of the output and its last lines: enough to explain a failure. GC trace
  // lines are counted, not kept.
  const keep = (chunk: Buffer) => {
    const lines = (partial + chunk.toString()).split('\n');
    partial = lines.pop() ?? '';
    for (const line of lines) {
      if (/ms: (Mark-Compact|Mark-Sweep)/.test(line)) gcs.full++;
      else if (/ms: (Scavenge|Minor)/.test(line)) gcs.minor++;
      else out += `${line}\n`;
    }
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
      protocol: key === 'nestjs-draft' ? 'ietf' : 'tus',
      settle,
      storedBytes,
      clean: async () => {
        for (const d of dataDirs) await emptyDir(d);
        await cleanS3();
      },
      output: () => out + partial,
      gcCounts: () => ({ ...gcs }),
      stop,
    };
  } catch (e) {
    await stop();
    throw e;
  }
}

/** Every object of a bucket, with its size. */
async function listObjects(client: S3Client, bucket: string) {
  const found: { key: string; size: number }[] = [];
  let token: string | undefined;
  do {
    const page = await client.send(
      new ListObjectsV2Command({ Bucket: bucket, ContinuationToken: token }),
    );
    for (const o of page.Contents ?? []) found.push({ key: o.Key!, size: o.Size ?? 0 });
    token = page.IsTruncated ? page.NextContinuationToken : undefined;
  } while (token);
  return found;
}

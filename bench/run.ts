/**
 * nestjs-tussi against @tus/server and a raw node:http baseline, in one bounded run.
 *
 *   npm run bench            full run (< 9 minutes on 2 cores): bench/results/latest.{md,json,svg}
 *   npm run bench:smoke      tiny sizes (< 30 s): bench/results/tmp/smoke/latest.*
 *
 * Options (after `--`): --smoke, --rounds N, --only ID,ID (workload ids: single-8m, single-64m,
 * small, parallel-1, parallel-4, parallel-16, parallel-64, single-256m), --servers KEY,KEY
 * (nestjs, nestjs-fastify, nestjs-draft, nestjs-fsync, nestjs-v8, tus, raw, …), --out DIR,
 * --cpu-prof (profile each server; summary in the report), --budget-seconds N (start no round that would end past N s; default 600, smoke
 * 60), --max-seconds N (abort past it; default 900, smoke 120).
 *
 * Each server runs in its own child process on 127.0.0.1; the client runs here. Each round runs
 * every workload on every server, the servers taking turns in an order that rotates from round
 * to round; the report gives the median over the rounds.
 */
import { execFile, spawn } from 'node:child_process';
import { existsSync, mkdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import { join, relative, resolve } from 'node:path';
import { promisify } from 'node:util';
import { parseArgs } from 'node:util';
import { renderSvg } from './chart.js';
import { TusClient, runPool } from './client.js';
import { machineInfo } from './machine.js';
import { memoryOf, ProcessWatch } from './proc.js';
import { profileMarkdown } from './profile.js';
import { markdown } from './report.js';
import { S3Client } from '@aws-sdk/client-s3';
import {
  ROOT,
  S3_SERVERS,
  SERVER_LABELS,
  startServer,
  type RunningServer,
  type S3Target,
  type ServerKey,
} from './servers.js';
import { GiB, median, MiB, quantile } from './stats.js';
import {
  plan,
  type BenchResults,
  type LongRun,
  type Summary,
  type Trial,
  type Workload,
  type WorkloadResult,
} from './workloads.js';

const { values: args } = parseArgs({
  options: {
    smoke: { type: 'boolean', default: false },
    rounds: { type: 'string' },
    only: { type: 'string' },
    servers: { type: 'string' },
    out: { type: 'string' },
    'cpu-prof': { type: 'boolean', default: false },
    syscalls: { type: 'boolean', default: false },
    long: { type: 'boolean', default: false },
    'max-seconds': { type: 'string' },
    'budget-seconds': { type: 'string' },
    quiet: { type: 'boolean', default: false },
    help: { type: 'boolean', default: false },
  },
});

if (args.help) {
  process.stdout.write(`node bench/dist/run.js [options]   (npm run bench -- [options] builds first)

  --smoke               tiny sizes, one round (< 30 s); results in bench/results/tmp/smoke/
  --rounds N            rounds (default 3; smoke 1)
  --only IDS            comma-separated workloads: single-8m, single-64m, small, parallel-1,
                        parallel-4, parallel-16, parallel-64, single-256m
  --servers KEYS        comma-separated servers: nestjs, nestjs-fastify, nestjs-draft, nestjs-fsync, nestjs-v8, tus, raw,
                        nestjs-s3, tus-s3
  --out DIR             where latest.{md,json,svg} go (default bench/results/; a partial run,
                        with --only or --servers: bench/results/tmp/partial/)
  --cpu-prof            profile each server (node --cpu-prof); top functions in the report
  --syscalls            after the rounds, count each server's syscalls per small upload
                        (strace -c -f, one unmeasured trial of 200 uploads each; needs strace)
  --long                after the rounds, a long run through nestjs-tussi: 20 phases of 1,000
                        small uploads and one 1 GiB upload (smoke: 4 of 50 and 8 MiB), RSS
                        sampled every 250 ms: growth from the first quarter to the last
  --budget-seconds N    start no round that would end past N s (default 600; smoke 60)
  --max-seconds N       abort past N s (default 900; smoke 120)
  --quiet               no progress lines, no report on stdout
`);
  process.exit(0);
}

const mode = args.smoke ? 'smoke' : 'full';
const started = performance.now();
const elapsed = () => (performance.now() - started) / 1000;
const log = (message: string) => {
  if (!args.quiet) process.stderr.write(`[${elapsed().toFixed(1).padStart(6)} s] ${message}\n`);
};

const setup = plan(mode, args.rounds ? Number(args.rounds) : undefined);
const only = args.only?.split(',').map((s) => s.trim());
const onlyServers = args.servers?.split(',').map((s) => s.trim()) as ServerKey[] | undefined;
for (const key of onlyServers ?? []) {
  if (!(key in SERVER_LABELS))
    throw new Error(`unknown server ${key}: ${Object.keys(SERVER_LABELS).join(', ')}`);
}
const workloads: Workload[] = setup.workloads
  .filter((w) => !only || only.includes(w.id))
  .map((w) => ({ ...w, servers: w.servers.filter((s) => !onlyServers || onlyServers.includes(s)) }))
  .filter((w) => w.servers.length > 0);
if (workloads.length === 0) throw new Error(`no workload left (--only ${args.only})`);
const partial = Boolean(only || onlyServers);

const RESULTS = join(ROOT, 'bench', 'results');
const outDir = resolve(
  args.out ??
    (mode === 'smoke'
      ? join(RESULTS, 'tmp', 'smoke')
      : partial
        ? join(RESULTS, 'tmp', 'partial')
        : RESULTS),
);
const workDir = join(RESULTS, 'tmp', `run-${process.pid}`);
const maxSeconds = Number(args['max-seconds'] ?? (mode === 'smoke' ? 120 : 900));
/** No round starts unless the last one's duration says it ends within this many seconds. */
const budgetSeconds = Number(args['budget-seconds'] ?? (mode === 'smoke' ? 60 : 600));

const servers = new Map<ServerKey, RunningServer>();
let gateway: { dir: string; s3: S3Target } | undefined;
let cleanedUp = false;
async function cleanup(): Promise<void> {
  if (cleanedUp) return;
  cleanedUp = true;
  await Promise.all([...servers.values()].map((s) => s.stop()));
  if (gateway) {
    gateway.s3.client.destroy();
    await promisify(execFile)('bash', [CEPH_SCRIPT, 'stop', gateway.dir], {
      timeout: 60_000,
    }).catch(() => {});
  }
  rmSync(workDir, { recursive: true, force: true });
}

const CEPH_SCRIPT = join(ROOT, 'test', 'support', 'ceph-rgw.sh');

/** A local S3 server (Ceph RADOS Gateway, the tests' script) for the S3 section. */
async function startGateway(): Promise<{ dir: string; s3: S3Target }> {
  const dir = join(workDir, 'ceph');
  mkdirSync(dir, { recursive: true });
  const { stdout } = await promisify(execFile)('bash', [CEPH_SCRIPT, 'start', dir], {
    timeout: 120_000,
  });
  const info = JSON.parse(stdout.trim().split('\n').pop()!) as {
    endpoint: string;
    accessKeyId: string;
    secretAccessKey: string;
    region: string;
  };
  const client = new S3Client({
    endpoint: info.endpoint,
    region: info.region,
    credentials: { accessKeyId: info.accessKeyId, secretAccessKey: info.secretAccessKey },
    forcePathStyle: true,
    requestChecksumCalculation: 'WHEN_REQUIRED',
    responseChecksumValidation: 'WHEN_REQUIRED',
  });
  return { dir, s3: { ...info, client } };
}
for (const signal of ['SIGINT', 'SIGTERM'] as const) {
  process.once(signal, () => {
    void cleanup().finally(() => process.exit(130));
  });
}
const deadline = setTimeout(() => {
  process.stderr.write(`bench: over --max-seconds ${maxSeconds}, stopping\n`);
  void cleanup().finally(() => process.exit(1));
}, maxSeconds * 1000);
deadline.unref();

/** Pushes the page cache of the data directory to disk, so no trial pays for another's writeback. */
async function syncDisk(): Promise<void> {
  await promisify(execFile)('sync', ['-f', workDir], { timeout: 120_000 }).catch(async () => {
    await promisify(execFile)('sync', [], { timeout: 120_000 });
  });
}

async function trial(server: RunningServer, w: Workload, round: number): Promise<Trial> {
  const client = new TusClient(server.endpoint, server.protocol);
  const watch = new ProcessWatch(server.pid);
  const clientStart = process.cpuUsage();
  const gcBefore = server.gcCounts();
  const start = performance.now();
  try {
    const durations =
      w.kind === 'single'
        ? await client.upload(w.size, w.chunk).then(() => [performance.now() - start])
        : await runPool(w.count, w.concurrency, () => client.upload(w.size, w.chunk));
    const seconds = (performance.now() - start) / 1000;
    const client_ = process.cpuUsage(clientStart);
    const cpuSeconds = watch.cpu();
    await server.settle(w.count);
    const settleSeconds = (performance.now() - start) / 1000 - seconds;
    const cpuSecondsSettled = watch.cpu();
    const peakRssBytes = watch.peakRss();
    // The trace lines of the last GCs may still be on their way: a moment for them.
    await new Promise((r) => setTimeout(r, 20));
    const gcAfter = server.gcCounts();
    const bytes = w.size * w.count;
    const stored = await server.storedBytes();
    if (stored !== bytes) {
      throw new Error(`${server.label}: ${stored} bytes stored after ${w.id}, ${bytes} sent`);
    }
    const mibPerSecond = bytes / MiB / seconds;
    const uploadsPerSecond = w.count / seconds;
    return {
      round,
      seconds,
      bytes,
      uploads: w.count,
      value: w.unit === 'MiB/s' ? mibPerSecond : uploadsPerSecond,
      mibPerSecond,
      uploadsPerSecond,
      ...(w.kind !== 'single'
        ? { p50Ms: quantile(durations, 0.5), p99Ms: quantile(durations, 0.99) }
        : {}),
      cpuSeconds,
      cpuSecondsSettled,
      settleSeconds,
      peakRssBytes,
      fullGcs: gcAfter.full - gcBefore.full,
      minorGcs: gcAfter.minor - gcBefore.minor,
      clientCpuSeconds: (client_.user + client_.system) / 1e6,
    };
  } catch (e) {
    const tail = server.output().slice(-4000);
    throw new Error(
      `${w.id} on ${server.label} failed: ${(e as Error).message}\nserver output (end):\n${tail}`,
      {
        cause: e,
      },
    );
  } finally {
    watch.stop();
    client.close();
    await server.clean();
    await syncDisk();
  }
}

/**
 * Syscalls per small upload of each server (POST + 4 KiB PATCH, 32 at once, until the server is
 * done with them): one more trial of 200 uploads, not measured, with `strace -c -f` attached to
 * the server and all its threads. strace slows the server a lot: only the counts are read.
 */
async function countSyscalls(keys: ServerKey[]): Promise<BenchResults['syscalls']> {
  const counted: NonNullable<BenchResults['syscalls']> = {};
  const uploads = 200;
  for (const key of keys.filter((k) => !S3_SERVERS.includes(k))) {
    const server = servers.get(key)!;
    const file = join(workDir, `strace-${key}.txt`);
    const strace = spawn('strace', ['-c', '-f', '-o', file, '-p', String(server.pid)], {
      stdio: 'ignore',
    });
    const ended = new Promise<void>((resolve) => strace.once('exit', () => resolve()));
    const failed = await Promise.race([
      ended.then(() => true),
      new Promise<boolean>((r) => setTimeout(() => r(false), 500)),
    ]);
    if (failed) {
      log(`strace could not attach to ${key}: no syscall count`);
      continue;
    }
    const client = new TusClient(server.endpoint, server.protocol);
    try {
      await runPool(uploads, 32, () => client.upload(4096, 4096));
      await server.settle(uploads);
    } finally {
      client.close();
      strace.kill('SIGINT');
      await ended;
      await server.clean();
    }
    // strace -c rows: % time, seconds, usecs/call, calls, [errors,] syscall; then `total`.
    const rows = [
      ...readFileSync(file, 'utf8').matchAll(
        /^\s*[\d.]+\s+[\d.]+\s+\d+\s+(\d+)\s+(?:\d+\s+)?(\w+)$/gm,
      ),
    ].map((m) => ({ name: m[2], calls: Number(m[1]) / uploads }));
    const total = rows.find((r) => r.name === 'total');
    if (total) {
      const top = rows
        .filter((r) => r.name !== 'total')
        .sort((a, b) => b.calls - a.calls)
        .slice(0, 6);
      counted[key] = { perUpload: total.calls, top };
    }
    log(`syscalls per small upload, ${SERVER_LABELS[key]}: ${total?.calls.toFixed(1) ?? '?'}`);
  }
  return counted;
}

/**
 * The leak check: 20 phases through one server process, each 1,000 small uploads (POST and a
 * 4 KiB PATCH, 32 at once) then one 1 GiB upload in 64 MiB PATCHes (20,000 and 20 GiB in all),
 * the server done with each phase's uploads before the next. RSS is sampled every 250 ms; a
 * leak shows as the last quarter's RSS above the first's.
 */
async function longRun(key: ServerKey): Promise<LongRun> {
  const server = servers.get(key)!;
  const phases = mode === 'smoke' ? 4 : 20;
  const small = mode === 'smoke' ? 50 : 1000;
  const big = mode === 'smoke' ? 8 * MiB : GiB;
  const sampleMs = 250;
  const samples: number[] = [];
  const phaseEndRss: number[] = [];
  const sampler = setInterval(() => samples.push(memoryOf(server.pid).rss), sampleMs);
  const start = performance.now();
  try {
    for (let phase = 0; phase < phases; phase++) {
      const client = new TusClient(server.endpoint, server.protocol);
      try {
        await runPool(small, 32, () => client.upload(4096, 4096));
        await client.upload(big, Math.min(big, 64 * MiB));
        await server.settle(small + 1);
      } finally {
        client.close();
        await server.clean();
      }
      phaseEndRss.push(memoryOf(server.pid).rss);
      log(`long run ${phase + 1}/${phases}: RSS ${(phaseEndRss.at(-1)! / MiB).toFixed(0)} MiB`);
    }
  } finally {
    clearInterval(sampler);
  }
  const quarter = Math.max(1, Math.floor(samples.length / 4));
  return {
    server: key,
    seconds: (performance.now() - start) / 1000,
    smallUploads: phases * small,
    bigBytes: phases * big,
    bigUpload: big,
    sampleMs,
    rssSamples: samples,
    firstQuarterRss: median(samples.slice(0, quarter)),
    lastQuarterRss: median(samples.slice(-quarter)),
    peakRss: Math.max(...samples),
    phaseEndRss,
  };
}

function summarize(w: Workload, trials: Trial[]): Summary {
  const values = trials.map((t) => t.value);
  const pick = (f: (t: Trial) => number) => median(trials.map(f));
  return {
    value: median(values),
    min: Math.min(...values),
    max: Math.max(...values),
    mibPerSecond: pick((t) => t.mibPerSecond),
    uploadsPerSecond: pick((t) => t.uploadsPerSecond),
    ...(w.kind !== 'single' ? { p50Ms: pick((t) => t.p50Ms!), p99Ms: pick((t) => t.p99Ms!) } : {}),
    cpuSecondsPerGiB: pick((t) => t.cpuSeconds / (t.bytes / GiB)),
    cpuMsPerUpload: pick((t) => (1000 * t.cpuSeconds) / t.uploads),
    peakRssBytes: pick((t) => t.peakRssBytes),
    fullGcs: pick((t) => t.fullGcs),
    minorGcs: pick((t) => t.minorGcs),
    clientCores: pick((t) => t.clientCpuSeconds / t.seconds),
    settleSeconds: pick((t) => t.settleSeconds),
  };
}

async function main(): Promise<void> {
  for (const dir of [
    'dist/index.js',
    'dist/sample/bootstrap.js',
    'bench/dist/servers/tus-server.js',
  ]) {
    if (!existsSync(join(ROOT, dir))) {
      throw new Error(
        `${dir} is missing: run the bench through \`npm run bench\` (it builds first)`,
      );
    }
  }
  mkdirSync(workDir, { recursive: true });
  mkdirSync(outDir, { recursive: true });
  const profDir = args['cpu-prof'] ? join(outDir, 'profiles') : undefined;
  if (profDir) mkdirSync(profDir, { recursive: true });
  const loadStart = os.loadavg();
  const machine = machineInfo(workDir, ROOT);
  const date = new Date().toISOString();
  log(
    `${mode} run: ${workloads.map((w) => w.id).join(', ')}; ${setup.rounds} round(s); data in ${relative(ROOT, workDir)}`,
  );

  const keys = [...new Set(workloads.flatMap((w) => w.servers))];
  if (keys.some((k) => S3_SERVERS.includes(k))) {
    gateway = await startGateway();
    log(`S3 server (Ceph RADOS Gateway) at ${gateway.s3.endpoint}`);
  }
  for (const key of keys) {
    servers.set(
      key,
      await startServer(key, workDir, {
        maxSize: setup.maxSize,
        cpuProfDir: profDir,
        s3: gateway?.s3,
      }),
    );
  }
  log(`servers up: ${keys.map((k) => `${k} (pid ${servers.get(k)!.pid})`).join(', ')}`);

  // Warm-up, not measured: JIT, connection handling, first files in each directory.
  const warm: Workload = {
    ...workloads[0],
    id: 'warm-up',
    kind: 'small',
    size: 4096,
    chunk: 4096,
    count: setup.warmup.small,
    concurrency: 32,
  };
  const warmBig: Workload = {
    ...warm,
    kind: 'single',
    size: setup.warmup.size,
    chunk: setup.warmup.size,
    count: 1,
    concurrency: 1,
  };
  for (const key of keys) {
    // Small uploads on S3 cost several S3 requests each: fewer warm the same code paths.
    const s3 = S3_SERVERS.includes(key);
    await trial(servers.get(key)!, s3 ? { ...warm, count: Math.min(warm.count, 100) } : warm, 0);
    await trial(servers.get(key)!, warmBig, 0);
  }
  const idleRss = new Map(keys.map((k) => [k, memoryOf(servers.get(k)!.pid).rss]));
  log('warm-up done');

  // Rounds outermost: each round runs every workload on every server, the servers taking turns
  // (the order rotates from round to round), so a slow spell of the machine falls on all of
  // them alike, and each workload's trials are spread over the whole run. A round is only
  // started when the previous one says it fits in the time budget.
  const trials = new Map(
    workloads.map((w) => [w, new Map<ServerKey, Trial[]>(w.servers.map((k) => [k, []]))]),
  );
  let rounds = 0;
  for (let round = 1; round <= setup.rounds; round++) {
    const roundStart = elapsed();
    for (const w of workloads) {
      const shift = (round - 1) % w.servers.length;
      const order = [...w.servers.slice(shift), ...w.servers.slice(0, shift)];
      for (const key of order) {
        const t = await trial(servers.get(key)!, w, round);
        trials.get(w)!.get(key)!.push(t);
        log(
          `${w.id.padEnd(12)} round ${round} ${SERVER_LABELS[key].padEnd(22)} ` +
            `${t.value.toFixed(1).padStart(8)} ${w.unit}  cpu ${t.cpuSeconds.toFixed(2)} s  ` +
            `peak ${(t.peakRssBytes / MiB).toFixed(0)} MiB  client ${((100 * t.clientCpuSeconds) / t.seconds).toFixed(0)} %`,
        );
      }
    }
    rounds = round;
    const took = elapsed() - roundStart;
    if (round < setup.rounds && elapsed() + took > budgetSeconds) {
      log(
        `round ${round} took ${took.toFixed(0)} s: another would pass the ${budgetSeconds} s budget, stopping`,
      );
      break;
    }
  }

  const results: WorkloadResult[] = workloads.map((w) => {
    const res: WorkloadResult['results'] = {};
    for (const [key, list] of trials.get(w)!)
      res[key] = { summary: summarize(w, list), trials: list };
    const over = (a: ServerKey, b: ServerKey) =>
      res[a] && res[b] ? res[a].summary.value / res[b].summary.value : undefined;
    // Every workload's value is "higher is better" (MiB/s, uploads/s).
    return {
      ...w,
      results: res,
      ratios: {
        vsTus: over('nestjs', 'tus'),
        vsRaw: over('nestjs', 'raw'),
        fsyncVsTus: over('nestjs-fsync', 'tus'),
        fsyncVsRaw: over('nestjs-fsync', 'raw'),
        s3VsTus: over('nestjs-s3', 'tus-s3'),
        v8VsTus: over('nestjs-v8', 'tus'),
        v8VsRaw: over('nestjs-v8', 'raw'),
        fastifyVsTus: over('nestjs-fastify', 'tus'),
        fastifyVsRaw: over('nestjs-fastify', 'raw'),
        draftVsTus: over('nestjs-draft', 'tus'),
        draftVsRaw: over('nestjs-draft', 'raw'),
        draftVsNestjs: over('nestjs-draft', 'nestjs'),
      },
    };
  });

  const syscalls = args.syscalls ? await countSyscalls(keys) : undefined;
  const long = args.long && keys.includes('nestjs') ? await longRun('nestjs') : undefined;

  const serverInfo: BenchResults['servers'] = {};
  for (const key of keys) {
    const peaks = results.flatMap((w) => w.results[key]?.trials.map((t) => t.peakRssBytes) ?? []);
    serverInfo[key] = {
      label: SERVER_LABELS[key],
      idleRssBytes: idleRss.get(key)!,
      peakRssBytes: Math.max(...peaks),
    };
  }
  await cleanup();

  let profiles: BenchResults['profiles'];
  if (profDir) {
    profiles = {};
    for (const key of keys) {
      const file = join(profDir, `${key}.cpuprofile`);
      profiles[key] = existsSync(file)
        ? profileMarkdown(SERVER_LABELS[key], file.startsWith(ROOT) ? relative(ROOT, file) : file)
        : undefined;
    }
  }

  const report: BenchResults = {
    version: 1,
    mode,
    partial,
    date,
    command: `node bench/dist/run.js ${process.argv.slice(2).join(' ')}`.trim(),
    durationSeconds: elapsed(),
    rounds,
    machine,
    loadAverage: { start: loadStart, end: os.loadavg() },
    servers: serverInfo,
    workloads: results,
    ...(profiles ? { profiles } : {}),
    ...(syscalls ? { syscalls } : {}),
    ...(long ? { longRun: long } : {}),
  };
  writeFileSync(join(outDir, 'latest.json'), JSON.stringify(report, null, 2) + '\n');
  writeFileSync(join(outDir, 'latest.md'), markdown(report));
  writeFileSync(join(outDir, 'latest.svg'), await renderSvg(report));
  log(
    `wrote ${['md', 'json', 'svg'].map((e) => relative(process.cwd(), join(outDir, `latest.${e}`))).join(', ')}`,
  );
  if (!args.quiet) process.stdout.write(markdown(report) + '\n');
}

try {
  await main();
  clearTimeout(deadline);
} catch (e) {
  process.stderr.write(`bench failed: ${(e as Error).stack ?? String(e)}\n`);
  await cleanup();
  process.exit(1);
}

/** The workloads of a full run and of the smoke run, and the shape of the results. */
import type { MachineInfo } from './machine.js';
import type { ServerKey } from './servers.js';
import { formatBytes, GiB, MiB } from './stats.js';

export interface Workload {
  id: string;
  title: string;
  /** `single`: one upload in PATCHes of `chunk`; `parallel`: `count` uploads at once, one PATCH each; `small`: `count` uploads of `size`, `concurrency` at once. */
  kind: 'single' | 'parallel' | 'small';
  /** Bytes of each upload. */
  size: number;
  /** Bytes per PATCH. */
  chunk: number;
  count: number;
  concurrency: number;
  servers: ServerKey[];
  /** The figure of merit: `MiB/s` (bytes) or `uploads/s`. */
  unit: 'MiB/s' | 'uploads/s';
}

export interface Plan {
  mode: 'full' | 'smoke';
  rounds: number;
  maxSize: number;
  workloads: Workload[];
  /** Uploads every server takes before the first measured trial (JIT, caches, files). */
  warmup: { small: number; size: number };
}

/**
 * nestjs-tussi runs on both Nest platforms: Express (`nestjs`) and Fastify; and on Express with
 * the client speaking the IETF draft (`nestjs-draft`).
 */
const TUS: ServerKey[] = ['nestjs', 'nestjs-fastify', 'nestjs-draft', 'tus', 'raw'];
/** Where memory and GC matter most, nestjs-tussi also runs with V8's defaults, as the others do. */
const WITH_V8: ServerKey[] = [
  'nestjs',
  'nestjs-fastify',
  'nestjs-draft',
  'nestjs-v8',
  'tus',
  'raw',
];
const WITH_FSYNC_V8: ServerKey[] = [
  'nestjs',
  'nestjs-fastify',
  'nestjs-draft',
  'nestjs-fsync',
  'nestjs-v8',
  'tus',
  'raw',
];
const S3: ServerKey[] = ['nestjs-s3', 'tus-s3'];

/** The S3 section: both servers on one S3 server (a local Ceph RADOS Gateway), a bucket each. */
function s3Workloads(big: number, chunk: number, parallelSize: number, smallCount: number) {
  return [
    {
      ...single(big, chunk, S3),
      id: 's3-single',
      title: `S3: 1 × ${formatBytes(big)}, ${formatBytes(chunk)} PATCHes`,
    },
    {
      ...parallel(16, parallelSize),
      id: 's3-parallel-16',
      title: `S3: 16 × ${formatBytes(parallelSize)}, concurrent`,
      servers: S3,
    },
    {
      ...small(smallCount, 32),
      id: 's3-small',
      title: `S3: ${smallCount} × 4 KiB, 32 concurrent`,
      servers: S3,
    },
  ];
}
const WITH_FSYNC: ServerKey[] = ['nestjs', 'nestjs-draft', 'nestjs-fsync', 'tus', 'raw'];

function single(size: number, chunk: number, servers: ServerKey[]): Workload {
  return {
    id: `single-${chunk / MiB}m`,
    title: `1 × ${formatBytes(size)}, ${formatBytes(chunk)} PATCHes`,
    kind: 'single',
    size,
    chunk,
    count: 1,
    concurrency: 1,
    servers,
    unit: 'MiB/s',
  };
}

function parallel(count: number, size: number): Workload {
  return {
    id: `parallel-${count}`,
    title: `${count} × ${formatBytes(size)}, concurrent`,
    kind: 'parallel',
    size,
    chunk: size,
    count,
    concurrency: count,
    servers: TUS,
    unit: 'MiB/s',
  };
}

function small(count: number, concurrency: number): Workload {
  return {
    id: 'small',
    title: `${count.toLocaleString('en-US')} × 4 KiB, ${concurrency} concurrent`,
    kind: 'small',
    size: 4096,
    chunk: 4096,
    count,
    concurrency,
    servers: TUS,
    unit: 'uploads/s',
  };
}

/**
 * The full run (< 5 minutes on 2 cores): the workloads, each trial of each server
 * `rounds` times. The smoke run has the same shape with tiny sizes (`big` 8 MiB, PATCHes of
 * 1 MiB, 4 MiB and 8 MiB standing for 8, 64 and 256 MiB; 50 small uploads; 1 MiB uploads at
 * 1-64 at once), one round.
 */
export function plan(mode: 'full' | 'smoke', rounds?: number): Plan {
  if (mode === 'smoke') {
    const big = 8 * MiB;
    return {
      mode,
      rounds: rounds ?? 1,
      maxSize: 4 * GiB,
      warmup: { small: 4, size: 1 * MiB },
      // Fastify and the draft in two workloads only: the smoke run proves the bench works, not
      // the numbers.
      workloads: [
        { ...single(big, 1 * MiB, WITH_FSYNC), id: 'single-8m' },
        { ...single(big, 4 * MiB, WITH_FSYNC_V8), id: 'single-64m' },
        { ...small(50, 32), servers: WITH_FSYNC_V8 },
        ...[1, 4, 16].map((n) => parallel(n, 1 * MiB)),
        { ...parallel(64, 1 * MiB), servers: WITH_V8 },
        { ...single(big, 8 * MiB, WITH_V8), id: 'single-256m' },
        ...s3Workloads(8 * MiB, 4 * MiB, MiB, 20),
      ].map((w) =>
        w.id === 'small' || w.id === 'parallel-16'
          ? w
          : {
              ...w,
              servers: w.servers.filter((s) => s !== 'nestjs-fastify' && s !== 'nestjs-draft'),
            },
      ),
    };
  }
  return {
    mode,
    rounds: rounds ?? 3,
    maxSize: 4 * GiB,
    // Long enough for the JIT to settle on every server (a production server runs for days): a
    // NestJS app still optimizes its hot paths after the first thousand requests.
    warmup: { small: 2000, size: 64 * MiB },
    workloads: [
      single(GiB, 8 * MiB, WITH_FSYNC),
      single(GiB, 64 * MiB, WITH_FSYNC_V8),
      { ...small(2000, 32), servers: WITH_FSYNC_V8 },
      ...[1, 4, 16].map((n) => parallel(n, 32 * MiB)),
      { ...parallel(64, 32 * MiB), servers: WITH_V8 },
      single(GiB, 256 * MiB, WITH_V8),
      ...s3Workloads(GiB, 64 * MiB, 32 * MiB, 300),
    ],
  };
}

/** One trial: one workload on one server. */
export interface Trial {
  round: number;
  /** Wall seconds from the first request to the last answer. */
  seconds: number;
  bytes: number;
  uploads: number;
  /** MiB/s or uploads/s, as the workload's unit says. */
  value: number;
  mibPerSecond: number;
  uploadsPerSecond: number;
  /** Per-upload latency (POST to last PATCH answer), small and parallel workloads. */
  p50Ms?: number;
  p99Ms?: number;
  /** Server CPU (utime + stime) during the requests. */
  cpuSeconds: number;
  /** Server CPU until it was done with the uploads (nestjs-tussi: its consumer delivered them). */
  cpuSecondsSettled: number;
  /** Seconds after the last answer until the server was done with the uploads. */
  settleSeconds: number;
  /** Peak RSS of the server process during the trial. */
  peakRssBytes: number;
  /** Full (Mark-Compact) and minor (Scavenge) GCs of the server, until it was done. */
  fullGcs: number;
  minorGcs: number;
  /** CPU of the bench process (the client) during the requests. */
  clientCpuSeconds: number;
}

export interface Summary {
  /** Medians over the rounds. */
  value: number;
  min: number;
  max: number;
  mibPerSecond: number;
  uploadsPerSecond: number;
  p50Ms?: number;
  p99Ms?: number;
  cpuSecondsPerGiB: number;
  cpuMsPerUpload: number;
  peakRssBytes: number;
  /** Medians of the trials' GC counts. */
  fullGcs: number;
  minorGcs: number;
  /** Client CPU seconds per wall second (1 = one core busy). */
  clientCores: number;
  /** Seconds after the last answer until the server was done (nestjs-tussi's consumer). */
  settleSeconds: number;
}

export interface WorkloadResult extends Workload {
  results: Partial<Record<ServerKey, { summary: Summary; trials: Trial[] }>>;
  /** nestjs-tussi's median value divided by the other server's (fsync: the fsync variant's). */
  ratios: {
    vsTus?: number;
    vsRaw?: number;
    fsyncVsTus?: number;
    fsyncVsRaw?: number;
    /** nestjs-tussi on S3 over @tus/server with @tus/s3-store. */
    s3VsTus?: number;
    /** nestjs-tussi with V8's defaults (as the others run) over @tus/server, and over raw. */
    v8VsTus?: number;
    v8VsRaw?: number;
    /** nestjs-tussi on Fastify over @tus/server, and over raw. */
    fastifyVsTus?: number;
    fastifyVsRaw?: number;
    /** nestjs-tussi serving the IETF draft over @tus/server, over raw, over itself serving TUS 1.0.0. */
    draftVsTus?: number;
    draftVsRaw?: number;
    draftVsNestjs?: number;
  };
}

export interface ServerInfo {
  label: string;
  /** RSS once started and warmed up. */
  idleRssBytes: number;
  /** The highest peak RSS of any trial. */
  peakRssBytes: number;
}

export interface BenchResults {
  version: 1;
  mode: 'full' | 'smoke';
  /** True when only some workloads or servers were run (`--only`, `--servers`). */
  partial: boolean;
  date: string;
  command: string;
  durationSeconds: number;
  rounds: number;
  machine: MachineInfo;
  /** 1, 5 and 15 minute load averages at the start and end: a busy machine gives noisy numbers. */
  loadAverage: { start: number[]; end: number[] };
  servers: Partial<Record<ServerKey, ServerInfo>>;
  workloads: WorkloadResult[];
  profiles?: Partial<Record<ServerKey, string>>;
  /** Syscalls per small upload (`--syscalls`), by server, with the most frequent. */
  syscalls?: Partial<
    Record<ServerKey, { perUpload: number; top: { name: string; calls: number }[] }>
  >;
  /** The long run through one process (`--long`): RSS over many uploads, a leak check. */
  longRun?: LongRun;
}

/** Many uploads through one server process, its RSS sampled throughout. */
export interface LongRun {
  server: ServerKey;
  seconds: number;
  smallUploads: number;
  bigBytes: number;
  /** Size of each big upload. */
  bigUpload: number;
  /** RSS every `sampleMs` from the first upload to the last. */
  sampleMs: number;
  rssSamples: number[];
  /** Median RSS of the first and of the last quarter of the samples. */
  firstQuarterRss: number;
  lastQuarterRss: number;
  peakRss: number;
  /** RSS after each phase (small uploads, then one big upload), the server done with them. */
  phaseEndRss: number[];
}

import cluster, { type Worker } from 'node:cluster';
import type { Server, ServerResponse } from 'node:http';
import { readFileSync } from 'node:fs';
import { homedir } from 'node:os';
import { resolve } from 'node:path';
import { createInterface } from 'node:readline/promises';
import { Command, Option } from 'commander';
import { commaList, formatBytes, integerIn, packageVersion, parseSize } from './parse.js';

/** Everything the server needs, resolved from flags, environment, prompts and defaults. */
export interface ServerConfig {
  host: string;
  port: number;
  uploadDir: string;
  completedDir: string;
  destDir: string;
  maxSize?: number;
  maxChunkSize?: number;
  /** Free space kept beyond the bytes promised to open uploads (module default when undefined). */
  spaceMargin?: number;
  /** Bearer tokens (`name:token` names the principal); each is its own principal. */
  tokens: string[];
  /** A file of tokens, one a line (kept out of `ps`). */
  tokenFile?: string;
  /** Rate limits per client and minute (none when undefined). */
  maxCreationsPerMinute?: number;
  maxRequestsPerMinute?: number;
  trustedProxies: string[];
  corsOrigins: string[];
  fsync: boolean;
  /** The IETF draft (Resumable Uploads for HTTP) on the same endpoint. */
  ietfDraft: boolean;
  /** Where Prometheus metrics are served (`/metrics`); none when undefined. */
  metricsPath?: string;
  /** Where health checks are served (`/health`, and `/health/live`). */
  healthPath: string;
  /** At shutdown, PATCHes under way get this long (ms), then are cut with their bytes kept. */
  shutdownTimeoutMs: number;
  /** `json`: one JSON object per log line; `text`: Nest's lines. */
  logFormat: 'text' | 'json';
  /** When the janitor runs (a cron expression); hourly when undefined. */
  janitorCron?: string;
  /** Serve the upload page at `/`. */
  ui: boolean;
  workers: number;
  /** The Nest HTTP platform. */
  platform: 'express' | 'fastify';
  redisUrl?: string;
  /** Uploads straight into this S3 bucket (no upload directory). */
  s3?: S3Config;
}

/** The S3 settings (credentials come from the AWS SDK's chain, never from a flag). */
export interface S3Config {
  bucket: string;
  endpoint?: string;
  region: string;
  prefix?: string;
  forcePathStyle: boolean;
  scratchDir?: string;
}

/** What commander parses: the config, with the repeatable flags under their flag names. */
type ParsedOptions = Omit<
  ServerConfig,
  'trustedProxies' | 'corsOrigins' | 'tokens' | 's3' | 'metricsPath' | 'shutdownTimeoutMs'
> & {
  shutdownTimeout: number;
  metrics: boolean;
  metricsPath: string;
  s3Bucket?: string;
  s3Endpoint?: string;
  s3Region: string;
  s3Prefix?: string;
  s3ForcePathStyle?: boolean;
  s3ScratchDir?: string;
  token?: string[];
  trustedProxy?: string[];
  corsOrigin?: string[];
  prompt: boolean;
};

/** The sample application's entry (dist/sample/bootstrap.js), typed where it is used. */
export interface SampleBootstrap {
  bootstrap: (options: {
    host?: string;
    port?: number;
    shutdownHooks?: { signals?: string[]; useProcessExit?: boolean } | false;
    abortOnError?: boolean;
    platform?: 'express' | 'fastify';
  }) => Promise<{
    app: { close(): Promise<void> };
    server: Server;
    port: number;
    url: string;
    pageUrl?: string;
  }>;
}

/**
 * A server on the internet needs a bound on what one client may ask it to store: 10 GiB, unless
 * `--max-size` says otherwise (`0` for none).
 */
export const DEFAULT_MAX_SIZE = 10 * 1024 ** 3;

/** The directories that can be asked for, with their flag, variable and default. */
const DIRECTORIES = [
  {
    key: 'uploadDir',
    env: 'TUS_UPLOAD_DIR',
    fallback: './data/uploads',
    question: 'Directory for unfinished uploads',
  },
  {
    key: 'completedDir',
    env: 'TUS_COMPLETED_DIR',
    fallback: './data/completed',
    question: 'Directory for finished uploads waiting for the consumer',
  },
  {
    key: 'destDir',
    env: 'TUS_DEST_DIR',
    fallback: './data/dest',
    question: 'Destination directory of delivered files',
  },
] as const;

/**
 * Past the module's shutdown deadline (`--shutdown-timeout`, which cuts the uploads still
 * receiving), connections still open are closed after this much more, and a shutdown that
 * still hangs ends the process after this much more again.
 */
const SHUTDOWN_CLOSE_AFTER_MS = 2_000;
const SHUTDOWN_HARD_AFTER_MS = 10_000;
const SIGNALS = ['SIGINT', 'SIGTERM', 'SIGHUP'] as const;
/** The resolved configuration, handed from the primary to `--workers` processes. */
const WORKER_CONFIG_ENV = 'TUSSI_SERVER_WORKER_CONFIG';

export function serverProgram(): Command {
  return new Command('tussi-server')
    .description(
      'Serve TUS 1.0.0 uploads with the nestjs-tussi sample application: uploads are stored ' +
        'durably, and each finished upload is moved to the destination directory as ' +
        '{uuid}-{filename}. Every option can also be given by its environment variable.',
    )
    .version(packageVersion(), '-V, --version')
    .addOption(
      new Option('--host <address>', 'address to listen on').default('127.0.0.1').env('HOST'),
    )
    .addOption(
      new Option('-p, --port <port>', 'port to listen on (0: any free port)')
        .default(1080)
        .env('PORT')
        .argParser(integerIn(0, 65535)),
    )
    .addOption(
      new Option('--upload-dir <dir>', 'directory of unfinished uploads')
        .default(DIRECTORIES[0].fallback)
        .env(DIRECTORIES[0].env),
    )
    .addOption(
      new Option('--completed-dir <dir>', 'directory of finished uploads waiting for the consumer')
        .default(DIRECTORIES[1].fallback)
        .env(DIRECTORIES[1].env),
    )
    .addOption(
      new Option('--dest-dir <dir>', 'where finished uploads are moved, as {uuid}-{filename}')
        .default(DIRECTORIES[2].fallback)
        .env(DIRECTORIES[2].env),
    )
    .addOption(
      new Option('--max-size <bytes>', 'largest upload (bytes, or 512M, 10G, ...); 0 for no limit')
        .default(DEFAULT_MAX_SIZE, '10G')
        .env('TUS_MAX_SIZE')
        .argParser(optionalSize),
    )
    .addOption(
      new Option('--max-chunk-size <bytes>', 'largest PATCH body (bytes, or 64M, ...)')
        .env('TUS_MAX_CHUNK_SIZE')
        .argParser(optionalSize),
    )
    .addOption(
      new Option(
        '--space-margin <bytes>',
        'free space kept beyond what open uploads were promised (bytes, or 1G, ...); default the smaller of 64M and 5% of the volume',
      )
        .env('TUS_SPACE_MARGIN')
        .argParser(optionalSize),
    )
    .addOption(
      new Option(
        '--token <token>',
        'require "Authorization: Bearer <token>" on uploads; each token is its own principal and ' +
          'owns its uploads; name:token names it (repeatable; the variable is comma-separated)',
      )
        .env('TUS_TOKEN')
        .argParser(commaList),
    )
    .addOption(
      new Option(
        '--token-file <file>',
        'tokens one a line (name:token or token; # comments), kept out of the process list',
      ).env('TUS_TOKEN_FILE'),
    )
    .addOption(
      new Option(
        '--max-creations-per-minute <n>',
        'uploads one client (its token, else its address) may create per minute; 429 beyond',
      )
        .env('TUS_MAX_CREATIONS_PER_MINUTE')
        .argParser(integerIn(1, 1_000_000)),
    )
    .addOption(
      new Option(
        '--max-requests-per-minute <n>',
        'requests one client may make per minute (HEAD and OPTIONS not counted); 429 beyond',
      )
        .env('TUS_MAX_REQUESTS_PER_MINUTE')
        .argParser(integerIn(1, 10_000_000)),
    )
    .addOption(
      new Option(
        '--trusted-proxy <ip-or-cidr>',
        'proxy whose X-Forwarded-Proto is believed (repeatable; the variable is comma-separated)',
      )
        .env('TUS_TRUSTED_PROXIES')
        .argParser(commaList),
    )
    .addOption(
      new Option(
        '--cors-origin <origin>',
        'origin allowed to upload from a browser, * for any (repeatable; comma-separated variable)',
      )
        .env('TUS_CORS_ORIGINS')
        .argParser(commaList),
    )
    .addOption(
      new Option(
        '--no-fsync',
        'do not fsync before acknowledging bytes: faster, not crash-safe (env: TUS_FSYNC=false)',
      ),
    )
    .addOption(
      new Option(
        '--no-ietf-draft',
        'serve TUS 1.0.0 only, not the IETF draft Resumable Uploads for HTTP (env: TUS_IETF_DRAFT=false)',
      ),
    )
    .addOption(
      new Option('--metrics-path <path>', 'where Prometheus metrics are served')
        .default('/metrics')
        .env('TUS_METRICS_PATH'),
    )
    .addOption(
      new Option(
        '--health-path <path>',
        'where health checks are served (and PATH/live: the process answers)',
      )
        .default('/health')
        .env('TUS_HEALTH_PATH'),
    )
    .addOption(
      new Option(
        '--shutdown-timeout <ms>',
        'on SIGTERM, uploads in progress get this long to finish, then are cut (bytes kept)',
      )
        .default(30_000)
        .env('TUS_SHUTDOWN_TIMEOUT_MS')
        .argParser(integerIn(0, 3_600_000)),
    )
    .addOption(
      new Option(
        '--log-format <format>',
        'json: one JSON object per log line (time, level, message, requestId, uploadId)',
      )
        .choices(['text', 'json'])
        .default('text')
        .env('TUS_LOG_FORMAT'),
    )
    .addOption(
      new Option(
        '--janitor-cron <expression>',
        "when the janitor cleans up, as a cron expression (e.g. '0 3 * * *'); default hourly",
      ).env('TUS_JANITOR_CRON'),
    )
    .addOption(new Option('--no-ui', 'serve no upload page at / (env: TUS_UI=false)'))
    .addOption(
      new Option('--no-metrics', 'serve no metrics and keep none (env: TUS_METRICS=false)'),
    )
    .addOption(
      new Option(
        '-w, --workers <n>',
        'server processes sharing the port (node:cluster); each upload is delivered once',
      )
        .default(1)
        .env('TUS_WORKERS')
        .argParser(integerIn(1, 256)),
    )
    .addOption(
      new Option(
        '--platform <name>',
        'the Nest HTTP platform (fastify needs @nestjs/platform-fastify)',
      )
        .choices(['express', 'fastify'])
        .default('express')
        .env('TUS_PLATFORM'),
    )
    .addOption(
      new Option(
        '--redis-url <url>',
        'coordinate replicas on several hosts through Redis (redis://host:6379)',
      ).env('TUS_REDIS_URL'),
    )
    .addOption(
      new Option(
        '--s3-bucket <bucket>',
        'upload straight into this S3 bucket (it must exist); credentials from the AWS SDK chain',
      ).env('TUS_S3_BUCKET'),
    )
    .addOption(
      new Option('--s3-endpoint <url>', 'an S3-compatible server (MinIO, Ceph, R2)').env(
        'TUS_S3_ENDPOINT',
      ),
    )
    .addOption(
      new Option('--s3-region <region>', "the bucket's region")
        .default('us-east-1')
        .env('TUS_S3_REGION'),
    )
    .addOption(
      new Option('--s3-prefix <prefix>', 'put before every key (e.g. uploads/)').env(
        'TUS_S3_PREFIX',
      ),
    )
    .addOption(
      new Option(
        '--s3-force-path-style',
        'address the bucket in the path, not the host name (env: TUS_S3_FORCE_PATH_STYLE=true)',
      ),
    )
    .addOption(
      new Option(
        '--s3-scratch-dir <dir>',
        'where parts are spooled on their way to S3 (default: the OS temp directory)',
      ).env('TUS_S3_SCRATCH_DIR'),
    )
    .addOption(
      new Option(
        '--no-prompt',
        'never ask for the directories (asked only on a terminal, when not given)',
      ),
    )
    .showHelpAfterError('(run tussi-server --help for the options)');
}

/** How many tokens a token file holds; a file that cannot be read stops the start. */
function readTokenFile(path: string): number {
  let text: string;
  try {
    text = readFileSync(path, 'utf8');
  } catch (e) {
    throw new Error(`tussi-server: --token-file: ${(e as Error).message}`, { cause: e });
  }
  return text.split('\n').filter((l) => l.trim() !== '' && !l.trim().startsWith('#')).length;
}

function optionalSize(text: string): number | undefined {
  return text.trim() === '' ? undefined : parseSize(text);
}

function expandHome(path: string): string {
  return path === '~' || path.startsWith('~/') ? homedir() + path.slice(1) : path;
}

/**
 * Parses flags and environment, then, on a terminal only (stdin and stdout both TTYs), asks
 * for each directory given neither by flag nor by variable. Never asks otherwise: scripts and
 * CI get the defaults.
 */
export async function resolveConfig(argv: string[]): Promise<ServerConfig> {
  const program = serverProgram();
  program.parse(argv);
  const options = program.opts<ParsedOptions>();
  const dirs = {
    uploadDir: options.uploadDir,
    completedDir: options.completedDir,
    destDir: options.destDir,
  };

  const s3Bucket = options.s3Bucket?.trim();
  // With S3 there are no unfinished uploads on this host.
  const missing = DIRECTORIES.filter(
    (d) =>
      program.getOptionValueSource(d.key) === 'default' && !(s3Bucket && d.key === 'uploadDir'),
  );
  const interactive = process.stdin.isTTY === true && process.stdout.isTTY === true;
  if (options.prompt && interactive && missing.length > 0) {
    const rl = createInterface({ input: process.stdin, output: process.stdout });
    rl.on('SIGINT', () => {
      rl.close();
      process.stdout.write('\n');
      process.exit(130);
    });
    try {
      for (const dir of missing) {
        const answer = (await rl.question(`${dir.question} [${dir.fallback}]: `)).trim();
        dirs[dir.key] = answer || dir.fallback;
      }
    } finally {
      rl.close();
    }
  }

  // A --no-X flag wins; otherwise its variable set to false turns it off, as in the sample.
  const onUnlessOff = (key: 'fsync' | 'metrics' | 'ui' | 'ietfDraft', variable: string) =>
    program.getOptionValueSource(key) === 'cli'
      ? options[key]
      : (process.env[variable] ?? 'true').trim().toLowerCase() !== 'false';
  const fsync = onUnlessOff('fsync', 'TUS_FSYNC');
  const metrics = onUnlessOff('metrics', 'TUS_METRICS');
  const ui = onUnlessOff('ui', 'TUS_UI');
  const ietfDraft = onUnlessOff('ietfDraft', 'TUS_IETF_DRAFT');

  if (options.tokenFile) {
    // Read now, so a missing or empty file stops the start with one line, not a stack trace.
    const tokens = readTokenFile(resolve(expandHome(options.tokenFile)));
    if (tokens === 0)
      program.error(`tussi-server: --token-file ${options.tokenFile} holds no token`);
  }
  let s3: S3Config | undefined;
  if (s3Bucket) {
    // Without Redis its locks hold within one process: several would each think they hold them.
    if (options.workers > 1 && !options.redisUrl) {
      program.error(
        'tussi-server: --workers above 1 with --s3-bucket needs --redis-url (without Redis, ' +
          'the locks of S3 uploads hold within one process)',
      );
    }
    const forcePathStyle =
      program.getOptionValueSource('s3ForcePathStyle') === 'cli'
        ? true
        : (process.env.TUS_S3_FORCE_PATH_STYLE ?? '').trim().toLowerCase() === 'true';
    s3 = {
      bucket: s3Bucket,
      endpoint: options.s3Endpoint?.trim() || undefined,
      region: options.s3Region,
      prefix: options.s3Prefix || undefined,
      forcePathStyle,
      scratchDir: options.s3ScratchDir ? resolve(expandHome(options.s3ScratchDir)) : undefined,
    };
  }
  return {
    host: options.host,
    port: options.port,
    uploadDir: resolve(expandHome(dirs.uploadDir)),
    completedDir: resolve(expandHome(dirs.completedDir)),
    destDir: resolve(expandHome(dirs.destDir)),
    // 0 is "no limit", as an empty variable is.
    maxSize: options.maxSize || undefined,
    maxChunkSize: options.maxChunkSize,
    spaceMargin: options.spaceMargin,
    tokens: options.token ?? [],
    maxCreationsPerMinute: options.maxCreationsPerMinute,
    maxRequestsPerMinute: options.maxRequestsPerMinute,
    tokenFile: options.tokenFile ? resolve(expandHome(options.tokenFile)) : undefined,
    trustedProxies: options.trustedProxy ?? [],
    corsOrigins: options.corsOrigin ?? [],
    fsync,
    ietfDraft,
    metricsPath: metrics ? routePath(options.metricsPath) : undefined,
    healthPath: routePath(options.healthPath),
    shutdownTimeoutMs: options.shutdownTimeout,
    logFormat: options.logFormat,
    janitorCron: options.janitorCron?.trim() || undefined,
    ui,
    workers: options.workers,
    platform: options.platform,
    redisUrl: options.redisUrl || undefined,
    s3,
  };
}

/**
 * The sample application reads its settings from the environment (through ConfigService):
 * put the resolved configuration there, for this process and the workers it forks.
 */
function exportToEnvironment(config: ServerConfig): void {
  const set = (name: string, value: string | number | undefined) => {
    if (value === undefined || value === '') delete process.env[name];
    else process.env[name] = String(value);
  };
  set('HOST', config.host);
  set('PORT', config.port);
  set('TUS_UPLOAD_DIR', config.uploadDir);
  set('TUS_COMPLETED_DIR', config.completedDir);
  set('TUS_DEST_DIR', config.destDir);
  set('TUS_MAX_SIZE', config.maxSize);
  set('TUS_MAX_CHUNK_SIZE', config.maxChunkSize);
  set('TUS_SPACE_MARGIN', config.spaceMargin);
  set('TUS_TOKEN', config.tokens.join(','));
  set('TUS_MAX_CREATIONS_PER_MINUTE', config.maxCreationsPerMinute);
  set('TUS_MAX_REQUESTS_PER_MINUTE', config.maxRequestsPerMinute);
  set('TUS_TOKEN_FILE', config.tokenFile);
  set('TUS_TRUSTED_PROXIES', config.trustedProxies.join(','));
  set('TUS_CORS_ORIGINS', config.corsOrigins.join(','));
  set('TUS_FSYNC', config.fsync ? 'true' : 'false');
  set('TUS_IETF_DRAFT', config.ietfDraft ? 'true' : 'false');
  set('TUS_METRICS', config.metricsPath ? 'true' : 'false');
  set('TUS_METRICS_PATH', config.metricsPath);
  set('TUS_HEALTH_PATH', config.healthPath);
  set('TUS_SHUTDOWN_TIMEOUT_MS', config.shutdownTimeoutMs);
  set('TUS_LOG_FORMAT', config.logFormat);
  set('TUS_JANITOR_CRON', config.janitorCron);
  set('TUS_UI', config.ui ? 'true' : 'false');
  set('TUS_WORKERS', config.workers);
  set('TUS_PLATFORM', config.platform);
  set('TUS_REDIS_URL', config.redisUrl);
  set('TUS_S3_BUCKET', config.s3?.bucket);
  set('TUS_S3_ENDPOINT', config.s3?.endpoint);
  set('TUS_S3_REGION', config.s3?.region);
  set('TUS_S3_PREFIX', config.s3?.prefix);
  set('TUS_S3_FORCE_PATH_STYLE', config.s3?.forcePathStyle ? 'true' : undefined);
  set('TUS_S3_SCRATCH_DIR', config.s3?.scratchDir);
}

/** `/path`, from `path`, `/path/` or `path/`. */
function routePath(value: string): string {
  return `/${value.trim().replace(/^\/+|\/+$/g, '')}`;
}

function describe(config: ServerConfig): string {
  const lines = [
    `tussi-server ${packageVersion()}`,
    config.s3
      ? `  unfinished uploads: s3://${config.s3.bucket}/${config.s3.prefix ?? ''}${config.s3.endpoint ? ` at ${config.s3.endpoint}` : ''}`
      : `  unfinished uploads: ${config.uploadDir}`,
    `  finished uploads:   ${config.completedDir}`,
    `  delivered to:       ${config.destDir} (as {uuid}-{filename})`,
  ];
  const limits = [
    config.maxSize !== undefined ? `max size ${formatBytes(config.maxSize)}` : '',
    config.maxChunkSize !== undefined ? `max chunk ${formatBytes(config.maxChunkSize)}` : '',
    config.fsync ? '' : 'fsync off',
    config.ietfDraft ? '' : 'TUS 1.0.0 only (no IETF draft)',
    config.metricsPath ? `metrics at ${config.metricsPath}` : 'no metrics',
    `health at ${config.healthPath}`,
    config.maxCreationsPerMinute ? `${config.maxCreationsPerMinute} creations/min per client` : '',
    config.maxRequestsPerMinute ? `${config.maxRequestsPerMinute} requests/min per client` : '',
    config.tokens.length > 0 || config.tokenFile
      ? 'bearer token required, each token owns its uploads'
      : 'no authentication',
    config.trustedProxies.length ? `trusted proxies ${config.trustedProxies.join(', ')}` : '',
    config.corsOrigins.length ? `CORS origins ${config.corsOrigins.join(', ')}` : '',
    config.workers > 1 ? `${config.workers} worker processes` : '',
    config.platform === 'express' ? '' : `on ${config.platform}`,
    config.redisUrl ? `coordinated through Redis at ${maskPassword(config.redisUrl)}` : '',
  ].filter(Boolean);
  lines.push(`  ${limits.join(', ')}`);
  return lines.join('\n');
}

async function loadSample(): Promise<SampleBootstrap> {
  const url = new URL('../sample/bootstrap.js', import.meta.url);
  try {
    return (await import(url.href)) as SampleBootstrap;
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ERR_MODULE_NOT_FOUND') {
      throw new Error(
        `the sample application is not built (${url.pathname} is missing): run npm run build`,
        { cause: e },
      );
    }
    throw e;
  }
}

function errorLine(e: unknown): string {
  const message = e instanceof Error ? e.message : String(e);
  return message.split('\n')[0];
}

/**
 * Starts the application in this process (the single process, or one `--workers` process):
 * Nest's shutdown hooks close the HTTP server (in-flight PATCHes finish; after a grace period
 * they are cut, and the server keeps the bytes received) and stop the consumer.
 */
async function serve(
  config: ServerConfig,
  role: 'single' | 'worker',
): Promise<{ url: string; pageUrl?: string }> {
  const { bootstrap } = await loadSample();
  const { server, url, pageUrl } = await bootstrap({
    host: config.host,
    port: config.port,
    shutdownHooks: { signals: [...SIGNALS], useProcessExit: true },
    abortOnError: false,
    platform: config.platform,
  });
  // Responses in progress: at shutdown they end their connection once sent, rather than
  // keeping it alive (which would hold the closing server open until the client lets go).
  const inFlight = new Set<ServerResponse>();
  server.on('request', (_req, res: ServerResponse) => {
    inFlight.add(res);
    res.once('close', () => inFlight.delete(res));
  });
  let stopping = false;
  const onSignal = (signal: string) => {
    if (stopping) {
      // A second Ctrl-C on a single process: stop waiting. Workers get each signal twice
      // (from the terminal and from the primary) and leave the decision to the primary.
      if (role === 'single') {
        process.stderr.write('tussi-server: stopping now\n');
        process.exit(130);
      }
      return;
    }
    stopping = true;
    for (const res of inFlight) {
      if (!res.headersSent) res.shouldKeepAlive = false;
      else res.once('finish', () => res.socket?.end());
    }
    console.log(
      role === 'single'
        ? `tussi-server: ${signal}, shutting down (waiting for uploads in progress, Ctrl-C again to stop now)`
        : `tussi-server: worker ${process.pid} shutting down`,
    );
    setTimeout(() => {
      console.log(`tussi-server: closing the connections still open (${process.pid})`);
      server.closeAllConnections();
    }, config.shutdownTimeoutMs + SHUTDOWN_CLOSE_AFTER_MS).unref();
    setTimeout(() => {
      process.stderr.write(`tussi-server: shutdown did not finish, exiting (${process.pid})\n`);
      process.exit(1);
    }, config.shutdownTimeoutMs + SHUTDOWN_HARD_AFTER_MS).unref();
  };
  for (const signal of SIGNALS) process.on(signal, onSignal);
  return { url, pageUrl };
}

/**
 * The primary of `--workers N`: forks the workers (which share the listening socket through
 * node:cluster and coordinate through the upload locks and the completed queue), prints the
 * URL once all listen, replaces a worker that dies, and stops them all on a signal.
 */
async function runPrimary(config: ServerConfig): Promise<void> {
  cluster.setupPrimary({ exec: process.argv[1], args: [] });
  const env = { [WORKER_CONFIG_ENV]: JSON.stringify(config) };
  const workers = new Set<Worker>();
  let ready = false;
  let stopping: { code: number } | undefined;
  let crashes: number[] = [];
  const shown = config.host.includes(':') ? `[${config.host}]` : config.host;

  const fork = () => {
    const worker = cluster.fork(env);
    workers.add(worker);
    return worker;
  };
  const stopAll = (code: number) => {
    stopping = { code };
    for (const worker of workers) worker.process.kill('SIGTERM');
    setTimeout(
      () => {
        for (const worker of workers) worker.process.kill('SIGKILL');
      },
      config.shutdownTimeoutMs + SHUTDOWN_HARD_AFTER_MS + 2000,
    ).unref();
    if (workers.size === 0) process.exit(code);
  };

  let listening = 0;
  cluster.on('listening', (_worker, address) => {
    if (ready || ++listening < config.workers) return;
    ready = true;
    const pids = [...workers].map((w) => w.process.pid).join(', ');
    console.log(`tussi-server: ${config.workers} workers listening (pids ${pids})`);
    if (config.ui) console.log(`Upload page: http://${shown}:${address.port}/`);
    console.log(`TUS upload URL: http://${shown}:${address.port}/files/`);
  });

  cluster.on('exit', (worker, code, signal) => {
    workers.delete(worker);
    if (stopping) {
      if (workers.size === 0) process.exit(stopping.code);
      return;
    }
    const how = signal ?? `exit code ${code}`;
    if (!ready) {
      // Before every worker listens, a worker that exits means the configuration cannot work.
      process.stderr.write(`tussi-server: a worker exited before listening (${how})\n`);
      stopAll(1);
      return;
    }
    process.stderr.write(`tussi-server: worker ${worker.process.pid} died (${how})\n`);
    const now = Date.now();
    crashes = [...crashes.filter((t) => now - t < 60_000), now];
    if (crashes.length > 5) {
      process.stderr.write('tussi-server: workers keep dying, giving up\n');
      stopAll(1);
      return;
    }
    const replacement = fork();
    replacement.once('listening', () =>
      console.log(`tussi-server: worker ${replacement.process.pid} replaces it`),
    );
  });

  for (const signal of SIGNALS) {
    process.on(signal, () => {
      if (stopping) {
        process.stderr.write('tussi-server: stopping now\n');
        for (const worker of workers) worker.process.kill('SIGKILL');
        process.exit(130);
      }
      console.log(
        `tussi-server: ${signal}, shutting down ${workers.size} workers (Ctrl-C again to stop now)`,
      );
      stopAll(0);
    });
  }

  for (let i = 0; i < config.workers; i++) fork();
}

/** `tussi-server`: the entry point of the command, for the primary and the workers alike. */
export async function main(argv: string[] = process.argv): Promise<void> {
  // Nest colours its log lines even into files and pipes; keep them plain there.
  if (!process.stdout.isTTY && process.env.FORCE_COLOR === undefined) process.env.NO_COLOR ??= '1';
  try {
    if (cluster.isWorker) {
      const config = JSON.parse(process.env[WORKER_CONFIG_ENV] ?? '{}') as ServerConfig;
      await serve(config, 'worker');
      console.log(`tussi-server: worker ${process.pid} listening`);
      return;
    }
    const config = await resolveConfig(argv);
    exportToEnvironment(config);
    console.log(describe(config));
    if (config.s3) await checkBucket(config.s3);
    if (config.workers > 1) {
      await runPrimary(config);
      return;
    }
    const { url, pageUrl } = await serve(config, 'single');
    if (pageUrl) console.log(`Upload page: ${pageUrl}`);
    console.log(`TUS upload URL: ${url}`);
  } catch (e) {
    process.stderr.write(`tussi-server: ${errorLine(e)}\n`);
    process.exit(1);
  }
}

/**
 * The bucket is reached before the application starts, so that a missing bucket or refused
 * credentials stop the start with one line rather than the application's error log.
 */
async function checkBucket(s3: S3Config): Promise<void> {
  const { S3Storage } = await import('../s3/s3.storage.js');
  const storage = new S3Storage(s3);
  try {
    await storage.check();
  } finally {
    await storage.close();
  }
}

/** A Redis URL fit for a log line: its password replaced by `***`. */
function maskPassword(url: string): string {
  try {
    const parsed = new URL(url);
    if (parsed.password) parsed.password = '***';
    return parsed.toString();
  } catch {
    return 'the configured URL';
  }
}

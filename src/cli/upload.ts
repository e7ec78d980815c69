import { Command, Option } from 'commander';
import { MultiBar, type SingleBar } from 'cli-progress';
import { createHash, randomBytes } from 'node:crypto';
import { createReadStream } from 'node:fs';
import { mkdtemp, open, rm, stat } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { basename, join, resolve } from 'node:path';
import { pipeline } from 'node:stream/promises';
import {
  defaultOptions,
  Upload,
  type DetailedError,
  type HttpRequest,
  type HttpResponse,
  type PreviousUpload,
} from 'tus-js-client';
import {
  formatBytes,
  formatDuration,
  integerIn,
  packageVersion,
  parseChunkSize,
  parseHeader,
  parseMetadataPair,
  parseRetryDelays,
  parseSize,
} from './parse.js';
import { defaultCacheDir, JsonFileUrlStorage } from './url-storage.js';

interface UploadOptions {
  endpoint: string;
  size: number;
  chunkSize: number;
  metadata?: Record<string, string>;
  header?: [string, string][];
  token?: string;
  parallel: number;
  retryDelays: number[];
  resume: boolean;
  protocol: 'tus' | 'ietf';
}

/** tus-js-client's name of each protocol (the IETF draft as interop version 6). */
const CLIENT_PROTOCOLS = { tus: 'tus-v1', ietf: 'ietf-draft-05' } as const;

/** One file to send: where it is and what it is called. */
interface Job {
  path: string;
  label: string;
  size: number;
  mtimeMs: number;
  /** sha256, when known before the upload (generated data). */
  sha256?: string;
}

interface Outcome {
  job: Job;
  ok: boolean;
  url?: string;
  reason?: string;
}

export function uploadProgram(): Command {
  return new Command('tussi-upload')
    .description(
      'Upload files to a TUS 1.0.0 server (or, with --protocol ietf, one of the IETF draft) with ' +
        'tus-js-client. With no file, uploads --size ' +
        'bytes of random data from a temp file. An interrupted upload resumes where it stopped ' +
        'when the same command runs again (unless --no-resume).',
    )
    .version(packageVersion(), '-V, --version')
    .argument('[files...]', 'files to upload (none: generated random data)')
    .addOption(
      new Option('-e, --endpoint <url>', 'the server’s upload creation URL').default(
        'http://127.0.0.1:1080/files/',
      ),
    )
    .addOption(
      new Option('-s, --size <bytes>', 'size of the random data sent when no file is given')
        .default(10 * 1024 * 1024, '10M')
        .argParser(parseSize),
    )
    .addOption(
      new Option('-c, --chunk-size <bytes>', 'largest PATCH body (bytes, 1M, ...; Infinity: one)')
        .default(Infinity, 'Infinity')
        .argParser(parseChunkSize),
    )
    .addOption(
      new Option(
        '-m, --metadata <key=value>',
        'upload metadata (repeatable; filename defaults to the file’s name)',
      ).argParser(parseMetadataPair),
    )
    .addOption(
      new Option(
        '-H, --header <"Name: value">',
        'HTTP header sent with every request (repeatable), e.g. authentication',
      ).argParser(parseHeader),
    )
    .addOption(
      new Option('-t, --token <token>', 'shorthand for --header "Authorization: Bearer <token>"'),
    )
    .addOption(
      new Option('-P, --parallel <n>', 'files uploaded at the same time')
        .default(1)
        .argParser(integerIn(1, 64)),
    )
    .addOption(
      new Option(
        '-r, --retry-delays <ms,ms,...>',
        'pauses before each retry after a network or server error ("none": no retry)',
      )
        .default([0, 1000, 3000, 5000], '0,1000,3000,5000')
        .argParser(parseRetryDelays),
    )
    .addOption(
      new Option(
        '--protocol <name>',
        'tus (TUS 1.0.0) or ietf (the IETF draft, Resumable Uploads for HTTP, interop 6)',
      )
        .choices(['tus', 'ietf'])
        .default('tus'),
    )
    .addOption(
      new Option(
        '--no-resume',
        'start a new upload even if an earlier run of this file did not finish',
      ),
    )
    .addHelpText(
      'after',
      '\nResume data is kept in $TUSSI_UPLOAD_CACHE_DIR, else $XDG_CACHE_HOME/tussi-upload,\n' +
        'else ~/.cache/tussi-upload. Exit status: 0 when every file is uploaded, 1 when one\n' +
        'failed (the reason on stderr), 130 when interrupted.',
    )
    .showHelpAfterError('(run tussi-upload --help for the options)');
}

/** Progress display: bars on a terminal, plain lines otherwise. */
interface Reporter {
  info(line: string): void;
  start(job: Job, total: number): void;
  progress(job: Job, sent: number, total: number): void;
  finish(job: Job): void;
  stop(): void;
}

/** Bytes per second over the last few seconds. */
class RateMeter {
  private samples: [number, number][] = [];
  add(bytes: number): void {
    const now = Date.now();
    this.samples.push([now, bytes]);
    while (this.samples.length > 2 && now - this.samples[0][0] > 5000) this.samples.shift();
  }
  rate(): number {
    if (this.samples.length < 2) return 0;
    const [t0, b0] = this.samples[0];
    const [t1, b1] = this.samples[this.samples.length - 1];
    return t1 > t0 ? ((b1 - b0) * 1000) / (t1 - t0) : 0;
  }
}

function describeProgress(sent: number, total: number, rate: number): string {
  const percent = total > 0 ? ((100 * sent) / total).toFixed(1) : '100.0';
  const eta = rate > 0 ? formatDuration((total - sent) / rate) : '?';
  return `${formatBytes(sent)} / ${formatBytes(total)} (${percent}%), ${formatBytes(rate)}/s, ETA ${eta}`;
}

class LineReporter implements Reporter {
  private readonly meters = new Map<Job, { meter: RateMeter; last: number; done: boolean }>();
  info(line: string): void {
    process.stdout.write(`${line}\n`);
  }
  start(job: Job): void {
    this.meters.set(job, { meter: new RateMeter(), last: Date.now(), done: false });
  }
  progress(job: Job, sent: number, total: number): void {
    const state = this.meters.get(job);
    if (!state || state.done) return;
    state.meter.add(sent);
    const now = Date.now();
    // One line a second, and the last one.
    if (now - state.last < 1000 && sent < total) return;
    state.last = now;
    state.done = sent >= total;
    this.info(`${job.label}: ${describeProgress(sent, total, state.meter.rate())}`);
  }
  finish(job: Job): void {
    this.meters.delete(job);
  }
  stop(): void {}
}

class BarReporter implements Reporter {
  private readonly multibar = new MultiBar({
    stream: process.stdout,
    format: '{label} [{bar}] {percentage}% {sent}/{size} {rate}/s ETA {eta}',
    barsize: 20,
    hideCursor: true,
    autopadding: true,
    clearOnComplete: false,
    fps: 8,
  });
  private readonly bars = new Map<Job, { bar: SingleBar; meter: RateMeter }>();

  info(line: string): void {
    // Lines logged while the bars are drawn go above them at the next redraw.
    if (this.multibar.isActive) this.multibar.log(`${line}\n`);
    else process.stdout.write(`${line}\n`);
  }
  start(job: Job, total: number): void {
    if (this.bars.has(job)) return;
    const bar = this.multibar.create(total, 0, this.payload(job, 0, total, 0));
    this.bars.set(job, { bar, meter: new RateMeter() });
  }
  progress(job: Job, sent: number, total: number): void {
    const state = this.bars.get(job);
    if (!state) return;
    state.meter.add(sent);
    state.bar.update(sent, this.payload(job, sent, total, state.meter.rate()));
  }
  finish(): void {
    // The bar stays, at its last value, until the run ends.
  }
  stop(): void {
    if (!this.multibar.isActive) return;
    this.multibar.update();
    this.multibar.stop();
  }
  private payload(job: Job, sent: number, total: number, rate: number) {
    return {
      label: job.label,
      sent: formatBytes(sent),
      size: formatBytes(total),
      rate: formatBytes(rate),
      eta: rate > 0 ? formatDuration((total - sent) / rate) : '?',
    };
  }
}

async function sha256File(path: string): Promise<string> {
  const hash = createHash('sha256');
  await pipeline(createReadStream(path), hash);
  return hash.digest('hex');
}

/** Writes `size` random bytes to a new temp file; returns it and the sha256 of its content. */
async function generateRandomFile(size: number): Promise<{ dir: string; job: Job }> {
  const dir = await mkdtemp(join(tmpdir(), 'tussi-upload-'));
  const path = join(dir, `random-${size}-bytes.bin`);
  const hash = createHash('sha256');
  const file = await open(path, 'w');
  try {
    for (let written = 0; written < size;) {
      const chunk = randomBytes(Math.min(1024 * 1024, size - written));
      hash.update(chunk);
      await file.write(chunk);
      written += chunk.length;
    }
  } finally {
    await file.close();
  }
  const info = await stat(path);
  return {
    dir,
    job: { path, label: basename(path), size, mtimeMs: info.mtimeMs, sha256: hash.digest('hex') },
  };
}

/** A one-line reason from a tus-js-client error. */
export function reasonOf(error: unknown): string {
  const e = error as Partial<DetailedError> & Error;
  const response = e.originalResponse;
  const request = e.originalRequest;
  if (response) {
    const body = response.getBody()?.toString().trim().split('\n')[0] ?? '';
    return `the server refused ${request?.getMethod() ?? 'the request'} ${request?.getURL() ?? ''}: ${response.getStatus()}${body ? ` ${body}` : ''}`;
  }
  const cause = e.causingError;
  if (cause) {
    const code = (cause as NodeJS.ErrnoException).code;
    const target = request ? `${request.getMethod()} ${request.getURL()}` : 'the server';
    return `${target} failed: ${code ?? cause.message}`;
  }
  return (e.message ?? String(error)).split('\n')[0];
}

/** Newest first by creation time. */
function newest(uploads: PreviousUpload[]): PreviousUpload | undefined {
  return [...uploads]
    .filter((u) => u.uploadUrl)
    .sort((a, b) => (Date.parse(b.creationTime) || 0) - (Date.parse(a.creationTime) || 0))[0];
}

/** Everything one run needs besides the options. */
interface Context {
  options: UploadOptions;
  headers: Record<string, string>;
  storage: JsonFileUrlStorage;
  reporter: Reporter;
  /** Uploads in flight, aborted on Ctrl-C. */
  active: Set<Upload>;
}

async function uploadOne(ctx: Context, job: Job): Promise<Outcome> {
  const { options, reporter } = ctx;
  const absolute = resolve(job.path);
  const fingerprint = ['tussi-upload', absolute, job.size, job.mtimeMs, options.endpoint].join('|');
  const hashing = job.sha256 ? Promise.resolve(job.sha256) : sha256File(absolute);
  hashing.catch(() => undefined);
  const started = Date.now();
  let resumedFrom: number | undefined;

  reporter.info(`${job.label}: uploading ${job.size} bytes to ${options.endpoint}`);
  return new Promise<Outcome>((settle) => {
    const upload: Upload = new Upload(createReadStream(absolute), {
      endpoint: options.endpoint,
      chunkSize: options.chunkSize,
      retryDelays: options.retryDelays,
      // Not in tus-js-client's types, which lag behind its options.
      ...({ protocol: CLIENT_PROTOCOLS[options.protocol] } as object),
      headers: ctx.headers,
      metadata: { filename: basename(absolute), ...options.metadata },
      fingerprint: async () => fingerprint,
      urlStorage: ctx.storage,
      storeFingerprintForResuming: options.resume,
      removeFingerprintOnSuccess: true,
      onUploadUrlAvailable: () => {
        reporter.info(`${job.label}: upload URL ${upload.url}`);
        reporter.start(job, job.size);
      },
      onAfterResponse: (req: HttpRequest, res: HttpResponse) => {
        // HEAD is only sent to resume: it tells where the server stands.
        if (req.getMethod() !== 'HEAD') return;
        const status = res.getStatus();
        const offset = Number(res.getHeader('Upload-Offset'));
        if (status >= 200 && status < 300 && Number.isFinite(offset)) {
          resumedFrom = offset;
          reporter.info(
            offset >= job.size
              ? `${job.label}: already complete on the server`
              : `${job.label}: resuming from offset ${offset} (${formatBytes(offset)} already on the server)`,
          );
        } else if (status >= 400 && status < 500 && status !== 423) {
          reporter.info(`${job.label}: the earlier upload is gone (${status}), starting over`);
        }
      },
      onProgress: (sent, total) => reporter.progress(job, sent, total),
      onShouldRetry: (error, attempt, opts) => {
        const retry = defaultOptions.onShouldRetry?.(error, attempt, opts) ?? false;
        if (retry) {
          const delay = options.retryDelays[attempt] ?? 0;
          reporter.info(`${job.label}: ${reasonOf(error)}; retrying in ${delay} ms`);
        }
        return retry;
      },
      onSuccess: () => {
        ctx.active.delete(upload);
        reporter.progress(job, job.size, job.size);
        reporter.finish(job);
        const seconds = (Date.now() - started) / 1000;
        const sent = job.size - (resumedFrom ?? 0);
        void hashing.then(
          (sha256) => {
            reporter.info(
              `${job.label}: done, ${formatBytes(sent)} sent in ${seconds.toFixed(1)} s` +
                (seconds > 0 ? ` (${formatBytes(sent / seconds)}/s)` : ''),
            );
            reporter.info(`${job.label}: sha256 ${sha256}`);
            settle({ job, ok: true, url: upload.url ?? undefined });
          },
          (e: unknown) => settle({ job, ok: false, reason: `reading it failed: ${reasonOf(e)}` }),
        );
      },
      onError: (error) => {
        ctx.active.delete(upload);
        reporter.finish(job);
        settle({ job, ok: false, url: upload.url ?? undefined, reason: reasonOf(error) });
      },
    });
    ctx.active.add(upload);
    const begin = async () => {
      if (options.resume) {
        const previous = newest(await upload.findPreviousUploads());
        if (previous) {
          reporter.info(`${job.label}: found an unfinished upload ${previous.uploadUrl}`);
          upload.resumeFromPreviousUpload(previous);
        }
      }
      upload.start();
    };
    begin().catch((e: unknown) => {
      ctx.active.delete(upload);
      settle({ job, ok: false, reason: reasonOf(e) });
    });
  });
}

/** Runs `tasks` with at most `limit` at a time; results in order. */
async function pool<T, R>(items: T[], limit: number, task: (item: T) => Promise<R>): Promise<R[]> {
  const results: R[] = new Array<R>(items.length);
  let next = 0;
  const lane = async () => {
    while (next < items.length) {
      const index = next++;
      results[index] = await task(items[index]);
    }
  };
  await Promise.all(Array.from({ length: Math.min(limit, items.length) }, lane));
  return results;
}

/** `tussi-upload`: resolves with the exit status. */
export async function main(argv: string[] = process.argv): Promise<number> {
  const program = uploadProgram();
  program.parse(argv);
  const options = program.opts<UploadOptions>();
  const files = program.args;

  try {
    const endpoint = new URL(options.endpoint);
    if (endpoint.protocol !== 'http:' && endpoint.protocol !== 'https:') throw new Error();
  } catch {
    process.stderr.write(`tussi-upload: "${options.endpoint}" is not an http(s) URL\n`);
    return 1;
  }

  const headers = Object.fromEntries(options.header ?? []);
  if (options.token) headers.Authorization = `Bearer ${options.token}`;

  // Every file must be there before anything is sent.
  const jobs: Job[] = [];
  for (const file of files) {
    try {
      const info = await stat(file);
      if (!info.isFile()) throw Object.assign(new Error(), { code: 'EISDIR' });
      jobs.push({ path: file, label: file, size: info.size, mtimeMs: info.mtimeMs });
    } catch (e) {
      const code = (e as NodeJS.ErrnoException).code;
      const why =
        code === 'ENOENT' ? 'no such file' : code === 'EISDIR' ? 'not a regular file' : code;
      process.stderr.write(`tussi-upload: ${file}: ${why}\n`);
      return 1;
    }
  }
  let tempDir: string | undefined;
  if (jobs.length === 0) {
    const generated = await generateRandomFile(options.size);
    tempDir = generated.dir;
    jobs.push(generated.job);
  }

  const reporter: Reporter = process.stdout.isTTY ? new BarReporter() : new LineReporter();
  const ctx: Context = {
    options,
    headers,
    storage: new JsonFileUrlStorage(join(defaultCacheDir(), 'uploads.json')),
    reporter,
    active: new Set(),
  };

  const cleanup = async () => {
    reporter.stop();
    if (tempDir) await rm(tempDir, { recursive: true, force: true });
  };
  const interrupted = (signal: NodeJS.Signals) => {
    const code = signal === 'SIGINT' ? 130 : 143;
    void Promise.allSettled([...ctx.active].map((upload) => upload.abort(false)))
      .then(() => ctx.storage.flush())
      .then(cleanup)
      .finally(() => {
        process.stderr.write(
          `tussi-upload: interrupted (${signal}); run the same command again to resume\n`,
        );
        process.exit(code);
      });
  };
  process.once('SIGINT', interrupted);
  process.once('SIGTERM', interrupted);

  const outcomes = await pool(jobs, options.parallel, (job) => uploadOne(ctx, job));
  await ctx.storage.flush();
  await cleanup();
  for (const outcome of outcomes) {
    if (outcome.ok) process.stdout.write(`Upload URL: ${outcome.url}\n`);
  }
  const failed = outcomes.filter((o) => !o.ok);
  for (const outcome of failed) {
    process.stderr.write(`tussi-upload: ${outcome.job.label}: ${outcome.reason}\n`);
  }
  return failed.length === 0 ? 0 : 1;
}

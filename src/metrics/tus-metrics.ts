import type { IncomingMessage, ServerResponse } from 'node:http';
import {
  Counter,
  Gauge,
  Histogram,
  Registry,
  collectDefaultMetrics,
  type Registry as PromRegistry,
} from 'prom-client';
import type { JanitorSummary } from '../janitor/janitor.js';
import type { TusObserver } from '../protocol/tus-context.js';
import { TusEvents, type TusEvent } from '../protocol/tus-events.js';
import type { CompletedUpload } from '../queue/completed-upload.js';
import type { CompletedUploadQueue } from '../queue/completed-upload.queue.js';
import type { UploadStorageService } from '../storage/upload-storage.service.js';

/** The `metrics` option: where the metrics go, and whether Node's own are collected there. */
export interface TusMetricsOptions {
  /**
   * The prom-client registry to register in (e.g. prom-client's global `register`, beside the
   * application's own metrics). @default a registry of the module's own
   */
  registry?: PromRegistry;
  /**
   * Also collect prom-client's default Node process metrics (CPU, memory, event loop lag, GC)
   * in the registry. @default true with the module's own registry, false with one given
   */
  defaultMetrics?: boolean;
}

/** The methods a label may name; anything else is `OTHER` (a label never takes client text). */
const METHODS = new Set(['OPTIONS', 'POST', 'HEAD', 'PATCH', 'DELETE', 'GET']);

/** What a janitor run removes, as the `what` label of `tus_janitor_removed_total`. */
const JANITOR_KINDS: Record<
  Exclude<keyof JanitorSummary, 'finalized' | 'lapsedPromises'>,
  string
> = {
  stale: 'stale_upload',
  orphanedRecords: 'orphaned_record',
  orphanedData: 'orphaned_data',
  expiredCompleted: 'expired_completed',
  tempFiles: 'temp_file',
};

/** How long the count of unfinished uploads is reused: listing them is not free. */
const ACTIVE_COUNT_TTL_MS = 10_000;

/**
 * The module's Prometheus metrics (prom-client). Injectable as `TusMetrics`; serve `text()`
 * with `contentType` from a route of your own (guarded like any), or list
 * `TusMetricsController` among a module's controllers. Labels carry methods, statuses and
 * kinds only: never an upload id or anything a client chooses.
 */
export class TusMetrics implements TusObserver {
  readonly registry: PromRegistry;

  private readonly created: Counter;
  private readonly completed: Counter;
  private readonly terminated: Counter;
  private readonly expired: Counter;
  private readonly bytes: Counter;
  private readonly requests: Counter<'method' | 'status'>;
  private readonly duration: Histogram<'method' | 'status'>;
  private readonly patches: Gauge;
  private readonly lockWait: Histogram<'outcome'>;
  private readonly lockConflicts: Counter;
  private readonly claimSeconds: Histogram;
  private readonly janitorRemoved: Counter<'what'>;
  private readonly janitorRuns: Counter;

  private store?: UploadStorageService;
  private queue?: CompletedUploadQueue;
  private activeCount?: { at: number; count: Promise<number | undefined> };

  constructor(options: TusMetricsOptions = {}) {
    const own = options.registry === undefined;
    this.registry = options.registry ?? new Registry();
    if (options.defaultMetrics ?? own) collectDefaultMetrics({ register: this.registry });
    const registers = [this.registry];
    const counter = <L extends string = never>(name: string, help: string, labelNames?: L[]) =>
      new Counter<L>({ name, help, labelNames: labelNames ?? [], registers });

    this.created = counter('tus_uploads_created_total', 'Uploads created.');
    this.completed = counter(
      'tus_uploads_completed_total',
      'Uploads whose last byte was stored (handed to the completed queue).',
    );
    this.terminated = counter('tus_uploads_terminated_total', 'Uploads terminated (DELETE).');
    this.expired = counter(
      'tus_uploads_expired_total',
      'Unfinished uploads the janitor deleted after their expiry.',
    );
    this.bytes = counter(
      'tus_bytes_received_total',
      'Bytes stored durably and counted in upload offsets (PATCH, creation-with-upload).',
    );
    this.requests = counter('tus_requests_total', 'Requests on the upload routes.', [
      'method',
      'status',
    ]);
    this.duration = new Histogram({
      name: 'tus_request_duration_seconds',
      help: 'Time from the request to the end of its response, on the upload routes.',
      labelNames: ['method', 'status'],
      buckets: [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 1800],
      registers,
    });
    this.patches = new Gauge({
      name: 'tus_patches_in_flight',
      help: 'PATCH requests being served now.',
      registers,
    });
    this.lockWait = new Histogram({
      name: 'tus_lock_wait_seconds',
      help: "Time requests waited for an upload's lock (outcome: acquired, or busy when the wait ran out).",
      labelNames: ['outcome'],
      buckets: [0.001, 0.005, 0.01, 0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10],
      registers,
    });
    this.lockConflicts = counter(
      'tus_lock_conflicts_total',
      "Requests refused because another request held the upload's lock for the whole wait (423).",
    );
    this.claimSeconds = new Histogram({
      name: 'tus_completed_claim_seconds',
      help: "Time from an upload's completion to a consumer's claim of it (claims in this process).",
      buckets: [0.01, 0.05, 0.1, 0.5, 1, 5, 10, 30, 60, 300, 1800, 3600, 86_400],
      registers,
    });
    this.janitorRemoved = counter(
      'tus_janitor_removed_total',
      'What janitor runs removed, by kind.',
      ['what'],
    );
    this.janitorRuns = counter('tus_janitor_runs_total', 'Janitor runs.');
    for (const what of Object.values(JANITOR_KINDS)) this.janitorRemoved.inc({ what }, 0);

    const countActive = () => this.countActive();
    const depth = () => this.queue?.depth().catch(() => undefined);
    new Gauge({
      name: 'tus_uploads_active',
      help: 'Unfinished uploads in staging (counted at most every 10 s).',
      registers,
      async collect() {
        const count = await countActive();
        if (count !== undefined) this.set(count);
      },
    });
    new Gauge({
      name: 'tus_completed_queue_depth',
      help: 'Finished uploads in the completed queue, waiting for a consumer or held by one.',
      registers,
      async collect() {
        const n = await depth();
        if (n !== undefined) this.set(n);
      },
    });
  }

  /** The content type of `text()`, for the response. */
  get contentType(): string {
    return this.registry.contentType;
  }

  /** The metrics in Prometheus' text format. */
  text(): Promise<string> {
    return this.registry.metrics();
  }

  /** Watches the storage's locks and the queue's claims (the module calls this). */
  attach(store: UploadStorageService, queue: CompletedUploadQueue): void {
    this.store = store;
    this.queue = queue;
    store.lockObserver = (seconds, acquired) => {
      this.lockWait.observe({ outcome: acquired ? 'acquired' : 'busy' }, seconds);
      if (!acquired) this.lockConflicts.inc();
    };
    queue.claimObserver = (upload) => this.claimed(upload);
  }

  event(event: TusEvent): void {
    if (event.name === TusEvents.Created) this.created.inc();
    else if (event.name === TusEvents.Completed) this.completed.inc();
    else if (event.name === TusEvents.Terminated) this.terminated.inc();
  }

  bytesStored(bytes: number): void {
    this.bytes.inc(bytes);
  }

  /** Counts a janitor run and what it removed. */
  janitorRan(summary: JanitorSummary): void {
    this.janitorRuns.inc();
    this.expired.inc(summary.stale);
    for (const [key, what] of Object.entries(JANITOR_KINDS)) {
      const n = summary[key as keyof typeof JANITOR_KINDS];
      if (n > 0) this.janitorRemoved.inc({ what }, n);
    }
  }

  /**
   * Times one request on an upload route until its response ends: `status` is the code sent,
   * or `aborted` when the connection closed first.
   */
  observeRequest(req: IncomingMessage, res: ServerResponse): void {
    const start = performance.now();
    const method = METHODS.has(req.method ?? '') ? req.method! : 'OTHER';
    const patch = method === 'PATCH';
    if (patch) this.patches.inc();
    res.once('close', () => {
      if (patch) this.patches.dec();
      const labels = { method, status: res.writableFinished ? String(res.statusCode) : 'aborted' };
      this.requests.inc(labels);
      this.duration.observe(labels, (performance.now() - start) / 1000);
    });
  }

  private claimed(upload: CompletedUpload): void {
    const finished = upload.record.finishedAt?.getTime();
    if (finished !== undefined)
      this.claimSeconds.observe(Math.max(0, Date.now() - finished) / 1000);
  }

  /** The staging records, counted at most every 10 s (scrapes meanwhile share the count). */
  private countActive(): Promise<number | undefined> {
    const store = this.store;
    if (!store) return Promise.resolve(undefined);
    const now = Date.now();
    if (this.activeCount && now - this.activeCount.at < ACTIVE_COUNT_TTL_MS) {
      return this.activeCount.count;
    }
    const count = store.records.list().then(
      (ids) => ids.length,
      () => {
        // Not kept: the next scrape counts again.
        this.activeCount = undefined;
        return undefined;
      },
    );
    this.activeCount = { at: now, count };
    return count;
  }
}

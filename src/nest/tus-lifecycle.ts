import {
  Inject,
  Injectable,
  Logger,
  Optional,
  type BeforeApplicationShutdown,
  type OnApplicationBootstrap,
  type OnApplicationShutdown,
} from '@nestjs/common';
import { HttpAdapterHost } from '@nestjs/core';
import { SchedulerRegistry } from '@nestjs/schedule';
import { CronJob } from 'cron';
import type { IncomingMessage, Server, ServerResponse } from 'node:http';
import { TusHealthIndicator } from '../health/tus-health.indicator.js';
import { Janitor } from '../janitor/janitor.js';
import { recoverFinalizes } from '../protocol/recovery.js';
import { TusHandler } from '../protocol/tus-handler.js';
import { CompletedUploadQueue } from '../queue/completed-upload.queue.js';
import type { ResolvedTusOptions } from '../tus.options-validation.js';
import { limitConnections } from './connection-limits.js';
import { TUS_OPTIONS } from './tus.constants.js';

/** Name of the janitor's interval (or cron job) in `SchedulerRegistry`. */
export const TUS_JANITOR_INTERVAL = 'tus-janitor';

/**
 * What happens around the requests: HTTP server timeouts fit for long uploads, finishing
 * finalizes a crash interrupted, the janitor's schedule, and closing the queue at shutdown.
 */
@Injectable()
export class TusLifecycle
  implements OnApplicationBootstrap, BeforeApplicationShutdown, OnApplicationShutdown
{
  private readonly logger = new Logger('TusModule');
  private timer: NodeJS.Timeout | undefined;
  private cron: CronJob | undefined;

  constructor(
    @Inject(TUS_OPTIONS) private readonly options: ResolvedTusOptions,
    @Inject(TusHandler) private readonly handler: TusHandler,
    @Inject(CompletedUploadQueue) private readonly queue: CompletedUploadQueue,
    @Inject(Janitor) private readonly janitor: Janitor,
    @Inject(TusHealthIndicator) private readonly health: TusHealthIndicator,
    @Optional() private readonly adapterHost?: HttpAdapterHost,
    @Optional() private readonly scheduler?: SchedulerRegistry,
  ) {}

  async onApplicationBootstrap(): Promise<void> {
    this.configureHttpServer();
    // Before any request: the first process (or replica) rebuilds the promises from the records.
    await this.handler.context.store.start();
    const finished = await recoverFinalizes(this.handler.context);
    if (finished > 0) this.logger.log(`finished ${finished} finalize(s) interrupted by a restart`);
    this.scheduleJanitor();
  }

  /** Responses of the upload routes under way (see `track`). */
  private readonly inFlight = new Set<ServerResponse>();

  /** Tracks a response of an upload route until it closes (the middleware calls this). */
  track(res: ServerResponse): void {
    if (this.handler.context.lifecycle.draining) res.shouldKeepAlive = false;
    this.inFlight.add(res);
    res.once('close', () => this.inFlight.delete(res));
  }

  /**
   * A graceful shutdown, before the HTTP server closes: readiness turns down (balancers send
   * uploads elsewhere), new requests answer 503 with `Retry-After`, the responses under way
   * end their connection once sent, and body writes under way get `shutdownTimeoutMs` to end;
   * then they are cut, their bytes kept, so their clients resume on another replica.
   */
  async beforeApplicationShutdown(): Promise<void> {
    this.health.markShuttingDown();
    for (const res of this.inFlight) {
      if (!res.headersSent) res.shouldKeepAlive = false;
      else res.once('finish', () => res.socket?.end());
    }
    const timeoutMs = this.options.shutdownTimeoutMs ?? 30_000;
    const cut = await this.handler.drain(timeoutMs);
    if (cut > 0) {
      this.logger.warn(
        `shutdown: ${cut} upload(s) still receiving after ${timeoutMs} ms were cut; their bytes are kept`,
      );
    }
  }

  async onApplicationShutdown(): Promise<void> {
    if (this.timer) {
      clearInterval(this.timer);
      if (this.scheduler?.doesExist('interval', TUS_JANITOR_INTERVAL)) {
        this.scheduler.deleteInterval(TUS_JANITOR_INTERVAL);
      }
    }
    if (this.cron) {
      await this.cron.stop();
      if (this.scheduler?.doesExist('cron', TUS_JANITOR_INTERVAL)) {
        this.scheduler.deleteCronJob(TUS_JANITOR_INTERVAL);
      }
    }
    await this.queue.close();
    await this.handler.context.store.close();
  }

  /**
   * No total-request limit (Node's default 300 s `requestTimeout` cuts any longer PATCH) and
   * headers within `headersTimeoutMs`; a stalled body is cut by the PATCH's own idle timeout;
   * open connections capped in all and per client.
   */
  private configureHttpServer(): void {
    if (!this.options.configureHttpServer) return;
    const server = this.adapterHost?.httpAdapter?.getHttpServer() as Server | undefined;
    if (!server || typeof server.headersTimeout !== 'number') return;
    server.requestTimeout = 0;
    server.headersTimeout = this.options.headersTimeoutMs;
    // Node checks the timeout only this often (30 s by default): a short headersTimeoutMs would
    // otherwise be enforced late. Read when the server starts listening, which comes after this.
    (server as Server & { connectionsCheckingInterval: number }).connectionsCheckingInterval =
      Math.min(30_000, Math.max(100, Math.floor(this.options.headersTimeoutMs / 4)));
    limitConnections(server, {
      maxConnections: this.options.maxConnections ?? 10_000,
      maxConnectionsPerClient: this.options.maxConnectionsPerClient ?? 256,
      trustedProxies: this.options.trustedProxies ?? [],
    });
    if (server.listenerCount('checkContinue') === 0) {
      server.on('checkContinue', (req: IncomingMessage, res: ServerResponse) =>
        continueOnRead(server, req, res),
      );
    }
  }

  private scheduleJanitor(): void {
    if (this.options.janitor === false) return;
    const cron = this.options.janitor?.cron;
    if (cron !== undefined) {
      // A cron job of @nestjs/schedule's (listed in SchedulerRegistry with ScheduleModule).
      this.cron = new CronJob(cron, () => this.runJanitor());
      this.scheduler?.addCronJob(TUS_JANITOR_INTERVAL, this.cron);
      this.cron.start();
      return;
    }
    const every = this.options.janitor?.intervalMs ?? 3_600_000;
    this.timer = setInterval(() => void this.runJanitor(), every);
    this.timer.unref();
    this.scheduler?.addInterval(TUS_JANITOR_INTERVAL, this.timer);
  }

  private async runJanitor(): Promise<void> {
    try {
      // (The module logs and counts each run's summary.)
      await this.janitor.run({ scheduled: true });
    } catch (e) {
      this.logger.error('janitor run failed', e instanceof Error ? e.stack : e);
    }
  }
}

/**
 * `Expect: 100-continue` answered when something starts reading the body, as Go's servers do,
 * rather than at once as Node does: a PATCH refused before its body (409 offset mismatch, 412,
 * 404, 415, a guard's 401) is answered before the client sends a byte of it, which matters for
 * a phone about to send a large chunk over a slow link. Any reader counts (a `data` or
 * `readable` listener, `pipe`, `resume`), so the application's other routes keep working.
 */
function continueOnRead(server: Server, req: IncomingMessage, res: ServerResponse): void {
  let sent = false;
  const proceed = () => {
    if (sent || res.headersSent || res.writableEnded) return;
    sent = true;
    res.writeContinue();
  };
  req.on('newListener', (event: string) => {
    if (event === 'data' || event === 'readable') proceed();
  });
  req.once('resume', proceed);
  server.emit('request', req, res);
}

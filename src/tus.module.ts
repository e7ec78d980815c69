import {
  Inject,
  Logger,
  Module,
  type DynamicModule,
  type MiddlewareConsumer,
  type NestModule,
} from '@nestjs/common';
import { HttpAdapterHost, ModuleRef, ModulesContainer } from '@nestjs/core';
import { EventEmitter2 } from '@nestjs/event-emitter';
import { CronJob } from 'cron';
import { TusHealthIndicator } from './health/tus-health.indicator.js';
import { Janitor } from './janitor/janitor.js';
import { TusMetrics } from './metrics/tus-metrics.js';
import { LogBudget } from './nest/log-budget.js';
import { TusForwardedInterceptor } from './nest/tus-forwarded.interceptor.js';
import { TusLifecycle } from './nest/tus-lifecycle.js';
import { TusRequestMiddleware } from './nest/tus-request.middleware.js';
import { MemoryRateLimitStorage, TUS_RATE_LIMIT_STORAGE } from './nest/tus-rate-limit.storage.js';
import { TusRateLimitGuard } from './nest/tus-rate-limit.guard.js';
import { RedisRateLimitStorage } from './redis/redis-rate-limit.storage.js';
import {
  installFastifySupport,
  installMalformedPathCatch,
  mountPaths,
  resolveTusRoutes,
} from './nest/tus-routes.js';
import { TUS_OPTIONS, TUS_STORAGE } from './nest/tus.constants.js';
import type { UploadStorage } from './storage/storage.interfaces.js';
import type { TusLogger } from './protocol/tus-context.js';
import type { TusEvent } from './protocol/tus-events.js';
import { TusHandler } from './protocol/tus-handler.js';
import { CompletedUploadQueue } from './queue/completed-upload.queue.js';
import { FilesystemCompletedQueue } from './queue/filesystem-completed.queue.js';
import {
  TUS_COORDINATION,
  redisCoordination,
  type RedisCoordination,
} from './redis/redis-coordination.js';
import { FilesystemRecordStore } from './storage/filesystem-record.store.js';
import { FilesystemStorage } from './storage/filesystem.storage.js';
import { FileSpaceLedger, SpaceAccounting } from './storage/space-accounting.js';
import { MemoryUploadLocker } from './storage/memory.storage.js';
import { UploadStorageService } from './storage/upload-storage.service.js';
import {
  ASYNC_OPTIONS_TYPE,
  ConfigurableModuleClass,
  TUS_MODULE_OPTIONS,
} from './tus.module-definition.js';
import type { TusModuleAsyncOptions, TusModuleOptions } from './tus.options.js';
import { resolveTusOptions, type ResolvedTusOptions } from './tus.options-validation.js';

function nestLogger(): TusLogger {
  const logger = new Logger('TusModule');
  // Refusals are the clients' doing: at most 50 lines a second, then one line says how many
  // were left out (a client cannot grow the log faster than that).
  const budget = new LogBudget(logger);
  return {
    error: (message, error) => logger.error(message, error instanceof Error ? error.stack : error),
    warn: (message) => logger.warn(message),
    info: (message) => budget.write('log', message),
  };
}

/**
 * How often the janitor runs: `intervalMs`, or the time between a cron expression's next two
 * runs (replicas sharing Redis run it once per period between them).
 */
function janitorPeriodMs(janitor: ResolvedTusOptions['janitor']): number | undefined {
  if (!janitor) return undefined;
  if (janitor.cron === undefined) return janitor.intervalMs;
  const [next, after] = new CronJob(janitor.cron, () => {}).nextDates(2);
  return after.toMillis() - next.toMillis();
}

/**
 * TUS 1.0.0 uploads for a Nest application.
 *
 * ```ts
 * TusModule.forRoot({ uploadDir: './data/uploads', completedDir: './data/completed' })
 * ```
 *
 * Provides (and exports) `UploadStorageService`, `CompletedUploadQueue`, `TusHandler` and
 * `Janitor`. Lifecycle events go to EventEmitter2 when the application imports
 * `EventEmitterModule.forRoot()`.
 */
@Module({
  providers: [
    {
      provide: TUS_OPTIONS,
      inject: [TUS_MODULE_OPTIONS],
      useFactory: (options: TusModuleOptions) => resolveTusOptions(options),
    },
    {
      // The one place the backend of the bytes is picked: the option, or files in uploadDir.
      // Everything else asks it what it can do (local files to lock, a volume to account for).
      provide: TUS_STORAGE,
      inject: [TUS_OPTIONS],
      useFactory: async (options: ResolvedTusOptions): Promise<UploadStorage> => {
        const logger = options.logger ?? nestLogger();
        if (options.storage && 's3' in options.storage) {
          // Loaded only when asked for: the SDK costs start-up time and memory.
          const { S3Storage } = await import('./s3/s3.storage.js');
          const storage = new S3Storage({
            ...options.storage.s3,
            maxSize: options.maxSize,
            log: (m) => logger.warn(m),
          });
          try {
            await storage.check();
          } catch (e) {
            await storage.close();
            throw e;
          }
          return storage;
        }
        return (
          options.storage ??
          new FilesystemStorage({
            directory: options.uploadDir!,
            fsync: options.fsync,
            directoryMode: options.directoryMode,
            fileMode: options.fileMode,
            log: (m) => logger.warn(m),
          })
        );
      },
    },
    {
      // Several replicas: locks, the completed queue's claims, a record cache and the
      // janitor's lock in Redis (`coordination` option); null for one host (flock).
      provide: TUS_COORDINATION,
      inject: [TUS_OPTIONS, TUS_STORAGE],
      useFactory: (
        options: ResolvedTusOptions,
        storage: UploadStorage,
      ): RedisCoordination | null => {
        if (!options.coordination) return null;
        return redisCoordination(options.coordination.redis, {
          uploadDir: options.uploadDir,
          completedDir: options.completedDir,
          // A storage that keeps records and entries beside its bytes (S3) needs no directory.
          records: storage.recordStore,
          entries: storage.completedEntries,
          fsync: options.fsync,
          directoryMode: options.directoryMode,
          fileMode: options.fileMode,
          queuePollIntervalMs: options.queuePollIntervalMs,
          janitorIntervalMs: janitorPeriodMs(options.janitor),
          dataPath: storage.localPath ? (id) => storage.localPath!(id) : null,
          logger: options.logger ?? nestLogger(),
        });
      },
    },
    {
      provide: UploadStorageService,
      inject: [TUS_OPTIONS, TUS_STORAGE, TUS_COORDINATION],
      useFactory: (
        options: ResolvedTusOptions,
        files: UploadStorage,
        coordination: RedisCoordination | null,
      ) => {
        const logger = options.logger ?? nestLogger();
        const records =
          options.recordStore ??
          coordination?.recordStore ??
          files.recordStore ??
          new FilesystemRecordStore(options.uploadDir!, options.fsync, {
            fileMode: options.fileMode,
            log: (m) => logger.warn(m),
          });
        // Bytes that are local files are locked with flock on them (across the host's
        // processes); other bytes get locks that hold within this process only.
        const locker =
          options.locker ?? coordination?.locker ?? files.locker ?? new MemoryUploadLocker();
        // Promises of open uploads against the free space of the volume the bytes go to.
        const space =
          files.volume !== undefined
            ? new SpaceAccounting(
                coordination?.spaceLedger ?? new FileSpaceLedger(files.volume),
                files.volume,
                { marginBytes: options.spaceMargin },
              )
            : undefined;
        return new UploadStorageService(files, records, locker, space);
      },
    },
    {
      provide: CompletedUploadQueue,
      inject: [TUS_OPTIONS, TUS_COORDINATION, TUS_STORAGE],
      useFactory: (
        options: ResolvedTusOptions,
        coordination: RedisCoordination | null,
        storage: UploadStorage,
      ) =>
        options.completedQueue ??
        coordination?.completedQueue ??
        new FilesystemCompletedQueue({
          directory: options.completedDir,
          // Only bytes that are local files are moved from staging.
          stagingDirectory: storage.localPath ? options.uploadDir : undefined,
          objects: storage.objects,
          fsync: options.fsync,
          directoryMode: options.directoryMode,
          fileMode: options.fileMode,
          pollIntervalMs: options.queuePollIntervalMs,
          log: (m) => (options.logger ?? nestLogger()).warn(m),
        }),
    },
    {
      // Health checks for @nestjs/terminus: the directories, the disk, Redis, the bucket.
      provide: TusHealthIndicator,
      inject: [TUS_OPTIONS, TUS_STORAGE, TUS_COORDINATION],
      useFactory: (
        options: ResolvedTusOptions,
        storage: UploadStorage,
        coordination: RedisCoordination | null,
      ) =>
        new TusHealthIndicator(
          {
            uploadDir: storage.localPath ? options.uploadDir : undefined,
            // The completed queue's files, unless its entries live elsewhere (a custom queue;
            // with Redis, the bucket of a storage that keeps them).
            completedDir:
              !options.completedQueue && !(coordination && storage.completedEntries)
                ? options.completedDir
                : undefined,
            storage,
            coordination,
          },
          options.health,
        ),
    },
    {
      // Prometheus metrics; null with `metrics: false`.
      provide: TusMetrics,
      inject: [TUS_OPTIONS],
      useFactory: (options: ResolvedTusOptions): TusMetrics | null =>
        options.metrics === false ? null : new TusMetrics(options.metrics ?? {}),
    },
    {
      provide: TusHandler,
      inject: [
        TUS_OPTIONS,
        UploadStorageService,
        CompletedUploadQueue,
        { token: EventEmitter2, optional: true },
        TUS_COORDINATION,
        TusMetrics,
      ],
      useFactory: (
        options: ResolvedTusOptions,
        store: UploadStorageService,
        queue: CompletedUploadQueue,
        bus: EventEmitter2 | undefined,
        coordination: RedisCoordination | null,
        metrics: TusMetrics | null,
      ) => {
        metrics?.attach(store, queue);
        // Bus listeners and the callback are independent: one failing never keeps an event from
        // the other, and every failure, sync or async, reaches TusHandler, which logs it.
        const onEvent = async (event: TusEvent) => {
          const outcomes = await Promise.allSettled([
            Promise.resolve().then(() => bus?.emitAsync(event.name, event)),
            Promise.resolve().then(() => options.onEvent?.(event)),
          ]);
          const failure = outcomes.find((o) => o.status === 'rejected');
          if (failure) throw failure.reason;
        };
        const handler = new TusHandler({
          options: { ...options, ownership: Boolean(options.ownership) },
          store,
          queue,
          logger: options.logger ?? nestLogger(),
          onCreate: options.onCreate,
          onEvent: bus || options.onEvent ? onEvent : undefined,
          observer: metrics ?? undefined,
        });
        // A write whose Redis lock is lost stops at once (lease renewal failed).
        if (store.locker === coordination?.locker) coordination.attach(handler.context);
        return handler;
      },
    },
    {
      provide: Janitor,
      inject: [TUS_OPTIONS, TusHandler, TUS_COORDINATION, TusMetrics],
      useFactory: (
        options: ResolvedTusOptions,
        handler: TusHandler,
        coordination: RedisCoordination | null,
        metrics: TusMetrics | null,
      ) => {
        const janitor = new Janitor(
          handler.context,
          options.janitor || {},
          coordination?.janitorLock,
        );
        // Every run, scheduled or by hand, logged and counted.
        const logger = new Logger('TusModule');
        janitor.onRun = (summary) => {
          metrics?.janitorRan(summary);
          const work = Object.entries(summary).filter(([, n]) => n > 0);
          logger.log(
            `janitor: ${work.length > 0 ? work.map(([k, n]) => `${k} ${n}`).join(', ') : 'nothing to do'}`,
          );
        };
        return janitor;
      },
    },
    {
      // Limits that hold across replicas when they coordinate through Redis.
      provide: TUS_RATE_LIMIT_STORAGE,
      inject: [TUS_OPTIONS, TUS_COORDINATION],
      useFactory: (options: ResolvedTusOptions, coordination: RedisCoordination | null) =>
        options.rateLimitStorage ??
        (coordination
          ? new RedisRateLimitStorage(coordination.connection, coordination.keys)
          : new MemoryRateLimitStorage()),
    },
    TusRateLimitGuard,
    TusForwardedInterceptor,
    TusLifecycle,
    TusRequestMiddleware,
  ],
  exports: [
    TUS_OPTIONS,
    TUS_STORAGE,
    UploadStorageService,
    CompletedUploadQueue,
    TusHandler,
    Janitor,
    TusMetrics,
    TusHealthIndicator,
  ],
})
export class TusModule extends ConfigurableModuleClass implements NestModule {
  constructor(
    @Inject(ModulesContainer) private readonly modules: ModulesContainer,
    @Inject(ModuleRef) private readonly moduleRef: ModuleRef,
    @Inject(HttpAdapterHost) private readonly adapterHost: HttpAdapterHost,
  ) {
    super();
  }

  /**
   * `forRoot` with options from a factory (injected config, providers). `guards`, `path` and
   * `isGlobal` go beside `useFactory`: in the factory's result they are a compile error (and,
   * from JavaScript, a start-up error), never silently ignored.
   */
  static override forRootAsync(options: TusModuleAsyncOptions): DynamicModule {
    return super.forRootAsync(options as typeof ASYNC_OPTIONS_TYPE);
  }

  /**
   * Runs before the router mounts any route: finds the TUS controllers (a user's subclass
   * replaces the default routes), puts `TusRequestMiddleware` in front of them (effective
   * method, OPTIONS before any guard), and lets malformed paths below them reach the guards.
   */
  configure(consumer: MiddlewareConsumer): void {
    const { controllers, replacing } = resolveTusRoutes(this.modules, this);
    if (controllers.length === 0) return;
    if (replacing.length > 0) {
      new Logger('TusModule').log(
        `${replacing.map((c) => c.name).join(', ')} serve(s) the uploads; the default routes are not mounted`,
      );
    }
    consumer.apply(TusRequestMiddleware).forRoutes(...controllers);
    const paths = mountPaths(controllers, this.moduleRef);
    installMalformedPathCatch(this.adapterHost, paths);
    installFastifySupport(this.adapterHost, paths, (m) => new Logger('TusModule').warn(m));
  }
}

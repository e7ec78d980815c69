import { Module } from '@nestjs/common';
import { ConfigModule, ConfigService } from '@nestjs/config';
import { EventEmitterModule } from '@nestjs/event-emitter';
import { ScheduleModule } from '@nestjs/schedule';
import { TerminusModule } from '@nestjs/terminus';
import { TusModule, type TusModuleOptions } from 'nestjs-tussi';
import { BearerAuthGuard, credentialsFrom } from './bearer-auth.guard.js';
import { operationsControllers } from './operations.controllers.js';
import { UploadFeed, uploadPageControllers } from './upload-page.js';
import { UploadConsumer } from './upload-consumer.service.js';
import { UploadEventsListener } from './upload-events.listener.js';
import { switchedOn } from './env.js';

const list = (value: string | undefined) =>
  value
    ?.split(',')
    .map((s) => s.trim())
    .filter(Boolean) ?? [];
const number = (value: string | undefined) => (value ? Number(value) : undefined);
/** Several replicas on several hosts: locks, queue claims and the janitor's lock in Redis. */
const redisUrl = (url: string | undefined) =>
  url?.trim() ? { redis: { url: url.trim() } } : undefined;

/**
 * Uploads straight into an S3 bucket when `TUS_S3_BUCKET` is set; credentials come from the
 * AWS SDK's own chain (`AWS_ACCESS_KEY_ID`/`AWS_SECRET_ACCESS_KEY`, profiles, roles).
 */
function s3From(config: ConfigService): TusModuleOptions['storage'] {
  const bucket = config.get<string>('TUS_S3_BUCKET')?.trim();
  if (!bucket) return undefined;
  const text = (name: string) => config.get<string>(name)?.trim() || undefined;
  return {
    s3: {
      bucket,
      endpoint: text('TUS_S3_ENDPOINT'),
      region: text('TUS_S3_REGION') ?? 'us-east-1',
      prefix: text('TUS_S3_PREFIX'),
      forcePathStyle: text('TUS_S3_FORCE_PATH_STYLE')?.toLowerCase() === 'true',
      scratchDir: text('TUS_S3_SCRATCH_DIR'),
    },
  };
}

/** The module options from the environment (see the README for each variable). */
export function tusOptionsFrom(config: ConfigService): TusModuleOptions {
  const origins = list(config.get<string>('TUS_CORS_ORIGINS'));
  const storage = s3From(config);
  return {
    storage,
    uploadDir: storage ? undefined : config.get<string>('TUS_UPLOAD_DIR', './data/uploads'),
    completedDir: config.get<string>('TUS_COMPLETED_DIR', './data/completed'),
    maxSize: number(config.get<string>('TUS_MAX_SIZE')),
    maxChunkSize: number(config.get<string>('TUS_MAX_CHUNK_SIZE')),
    spaceMargin: number(config.get<string>('TUS_SPACE_MARGIN')),
    fsync: switchedOn(config.get<string>('TUS_FSYNC')),
    // The IETF draft (Resumable Uploads for HTTP) beside TUS 1.0.0, unless switched off.
    ietfDraft: switchedOn(config.get<string>('TUS_IETF_DRAFT')),
    // Prometheus metrics, served by the sample at TUS_METRICS_PATH (operations.controllers.ts).
    metrics: switchedOn(config.get<string>('TUS_METRICS')) ? {} : false,
    health: { minFreeBytes: number(config.get<string>('TUS_MIN_FREE_BYTES')) },
    // SIGTERM: PATCHes under way get this long, then are cut with their bytes kept.
    shutdownTimeoutMs: number(config.get<string>('TUS_SHUTDOWN_TIMEOUT_MS')),
    // The janitor on a cron expression (e.g. '0 * * * *'), else hourly.
    janitor: config.get<string>('TUS_JANITOR_CRON')?.trim()
      ? { cron: config.get<string>('TUS_JANITOR_CRON')!.trim() }
      : undefined,
    trustedProxies: list(config.get<string>('TUS_TRUSTED_PROXIES')),
    cors: origins.length > 0 ? { origins: origins.includes('*') ? '*' : origins } : undefined,
    coordination: redisUrl(config.get<string>('TUS_REDIS_URL')),
    rateLimits: {
      creationsPerMinute: number(config.get<string>('TUS_MAX_CREATIONS_PER_MINUTE')),
      requestsPerMinute: number(config.get<string>('TUS_MAX_REQUESTS_PER_MINUTE')),
    },
    // With tokens, each token's principal owns its uploads: no other token reaches them.
    ownership: credentialsFrom(config).length > 0,
    // Records who uploaded, as the guard established it: the server metadata of each upload.
    onCreate: (_headers, _metadata, { owner }) => ({ uploaded_by: owner ?? 'anonymous' }),
  };
}

@Module({
  imports: [
    ConfigModule.forRoot({ isGlobal: true }),
    EventEmitterModule.forRoot(),
    ScheduleModule.forRoot(),
    TerminusModule.forRoot({ logger: false }),
    TusModule.forRootAsync({
      path: 'files',
      guards: [BearerAuthGuard],
      inject: [ConfigService],
      useFactory: tusOptionsFrom,
    }),
  ],
  controllers: [...uploadPageControllers(), ...operationsControllers()],
  providers: [UploadConsumer, UploadEventsListener, UploadFeed],
})
export class AppModule {}

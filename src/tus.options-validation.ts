import { validateCronExpression } from 'cron';
import { plainToInstance } from 'class-transformer';
import {
  Allow,
  IsArray,
  IsBoolean,
  IsInt,
  IsNotEmpty,
  IsOptional,
  IsString,
  Max,
  Min,
  ValidateIf,
  validateSync,
} from 'class-validator';
import { TrustedProxies } from './nest/trusted-proxies.js';
import { coordinationProblems } from './redis/redis-coordination.js';
import type { TusModuleOptions } from './tus.options.js';

/** The checks applied to the options when the application starts. */
class TusOptionsSchema {
  @ValidateIf((o: { storage?: unknown }) => o.storage === undefined)
  @IsString()
  @IsNotEmpty()
  uploadDir?: string;
  @IsString() @IsNotEmpty() completedDir!: string;
  @IsOptional() @IsInt() @Min(0) maxSize?: number;
  @IsOptional() @IsInt() @Min(1) maxChunkSize?: number;
  @IsOptional() @IsInt() @Min(1) maxMetadataSize?: number;
  @IsOptional() @IsBoolean() fsync?: boolean;
  @IsOptional() @IsInt() @Min(0) @Max(0o7777) directoryMode?: number;
  @IsOptional() @IsInt() @Min(0) @Max(0o7777) fileMode?: number;
  @IsOptional() @IsInt() @Min(0) lockWaitMs?: number;
  @IsOptional() @IsInt() @Min(0) bodyIdleTimeoutMs?: number;
  @IsOptional() @IsInt() @Min(0) checkpointBytes?: number;
  @IsOptional() @IsInt() @Min(0) checkpointIntervalMs?: number;
  @IsOptional() @IsInt() @Min(0) shutdownTimeoutMs?: number;
  @IsOptional() @IsInt() @Min(1) headersTimeoutMs?: number;
  @IsOptional() @IsInt() @Min(1) maxConnections?: number;
  @IsOptional() @IsInt() @Min(1) maxConnectionsPerClient?: number;
  @IsOptional() @IsBoolean() configureHttpServer?: boolean;
  @IsOptional() @IsInt() @Min(0) spaceMargin?: number;
  @IsOptional() @IsInt() @Min(10) queuePollIntervalMs?: number;
  @IsOptional() @IsInt() @Min(0) progressIntervalMs?: number;
  @IsOptional() @IsArray() @IsString({ each: true }) trustedProxies?: string[];
  @IsOptional() @IsBoolean() trustForwardedHost?: boolean;
  @IsOptional() @IsInt() @Min(1) expireAfterMs?: number;
  @IsOptional() @IsBoolean() removePartials?: boolean;
  @IsOptional() @IsInt() @Min(1) maxPartsPerFinal?: number;
  @IsOptional() @IsInt() @Min(1) maxFinalsPerPartial?: number;
  @IsOptional() @IsBoolean() allowDuplicateParts?: boolean;
  @IsOptional() @IsBoolean() ietfDraft?: boolean;
  @IsOptional() @IsInt() @Min(0) minBytesPerSecond?: number;
  // Objects and functions, checked below or by their own types.
  @Allow() storage?: unknown;
  @Allow() recordStore?: unknown;
  @Allow() locker?: unknown;
  @Allow() extensions?: unknown;
  @Allow() completedQueue?: unknown;
  @Allow() onCreate?: unknown;
  @Allow() onEvent?: unknown;
  @Allow() metrics?: unknown;
  @Allow() health?: unknown;
  @Allow() cors?: unknown;
  @Allow() janitor?: unknown;
  @Allow() logger?: unknown;
  @Allow() coordination?: unknown;
  @Allow() ownership?: unknown;
  @Allow() rateLimits?: unknown;
  @Allow() rateLimitStorage?: unknown;
}

/** Options of the module definition itself, which `forRootAsync` takes beside `useFactory`. */
const EXTRAS = ['guards', 'path', 'isGlobal'];

/** The options with their defaults filled in. */
export type ResolvedTusOptions = TusModuleOptions &
  Required<
    Pick<
      TusModuleOptions,
      | 'maxMetadataSize'
      | 'fsync'
      | 'directoryMode'
      | 'fileMode'
      | 'lockWaitMs'
      | 'bodyIdleTimeoutMs'
      | 'headersTimeoutMs'
      | 'configureHttpServer'
    >
  >;

/** Checks the options and fills in defaults; throws one error that names every bad option. */
export function resolveTusOptions(options: TusModuleOptions): ResolvedTusOptions {
  // A guard placed in the factory's result would be ignored and the routes left open: say where
  // it belongs instead of starting without it.
  const misplaced = EXTRAS.filter((key) => Object.hasOwn(options, key));
  if (misplaced.length > 0) {
    const keys = misplaced.map((k) => `\`${k}\``).join(', ');
    throw new Error(
      `Invalid TusModule options: ${keys} must be given beside useFactory, as ` +
        `TusModule.forRootAsync({ ${misplaced.join(', ')}, useFactory }), not in the options the ` +
        'factory returns (there it would be ignored)',
    );
  }
  const schema = plainToInstance(TusOptionsSchema, { ...options });
  const errors = validateSync(schema, {
    forbidUnknownValues: false,
    whitelist: true,
    forbidNonWhitelisted: true,
  });
  if (errors.length > 0) {
    const detail = errors
      .map((e) =>
        e.constraints?.whitelistValidation
          ? `unknown option \`${e.property}\``
          : `${e.property}: ${Object.values(e.constraints ?? {}).join(', ')}`,
      )
      .join('; ');
    throw new Error(`Invalid TusModule options: ${detail}`);
  }
  for (const [name, value] of Object.entries(options.rateLimits ?? {})) {
    if (!['creationsPerMinute', 'requestsPerMinute', 'windowMs'].includes(name)) {
      throw new Error(`Invalid TusModule options: rateLimits: unknown limit \`${name}\``);
    }
    if (value !== undefined && !(Number.isInteger(value) && (value as number) >= 1)) {
      throw new Error(`Invalid TusModule options: rateLimits.${name} must be an integer >= 1`);
    }
  }
  if (
    options.ownership !== undefined &&
    typeof options.ownership !== 'boolean' &&
    typeof options.ownership !== 'function'
  ) {
    throw new Error('Invalid TusModule options: ownership must be a boolean or a function');
  }
  // Parsed here so a bad entry stops the application at start, not at the first request.
  new TrustedProxies(options.trustedProxies ?? []);
  checkJanitor(options.janitor);
  checkS3(options);
  const coordination = coordinationProblems(options.coordination);
  if (coordination.length > 0) {
    throw new Error(`Invalid TusModule options: coordination: ${coordination.join('; ')}`);
  }
  const origins = options.cors?.origins;
  if (
    options.cors &&
    origins !== '*' &&
    !(Array.isArray(origins) && origins.every((o) => typeof o === 'string'))
  ) {
    throw new Error('Invalid TusModule options: cors.origins must be "*" or an array of origins');
  }
  if (options.cors?.credentials && options.cors.origins === '*') {
    throw new Error('Invalid TusModule options: cors: credentials need explicit origins, not "*"');
  }
  return {
    ...options,
    maxMetadataSize: options.maxMetadataSize ?? 4096,
    fsync: options.fsync ?? true,
    directoryMode: options.directoryMode ?? 0o700,
    fileMode: options.fileMode ?? 0o600,
    lockWaitMs: options.lockWaitMs ?? 3000,
    bodyIdleTimeoutMs: options.bodyIdleTimeoutMs ?? 60_000,
    headersTimeoutMs: options.headersTimeoutMs ?? 60_000,
    configureHttpServer: options.configureHttpServer ?? true,
  };
}

function checkJanitor(janitor: TusModuleOptions['janitor']): void {
  if (janitor === undefined || janitor === false) return;
  const problems: string[] = [];
  if (typeof janitor !== 'object' || janitor === null) problems.push('must be false or an object');
  else {
    const { intervalMs, staleUploadAge, completedFileAge, orphanAge, promiseLapseAge } = janitor;
    if (intervalMs !== undefined && !(Number.isInteger(intervalMs) && intervalMs >= 1000)) {
      problems.push('intervalMs must be an integer >= 1000');
    }
    const { cron } = janitor;
    if (cron !== undefined && !(typeof cron === 'string' && validateCronExpression(cron).valid)) {
      problems.push(
        `cron must be a cron expression (e.g. '0 * * * *'), not ${JSON.stringify(cron)}`,
      );
    }
    for (const [name, value] of Object.entries({
      staleUploadAge,
      completedFileAge,
      orphanAge,
      promiseLapseAge,
    })) {
      if (value !== undefined && !(typeof value === 'number' && value >= 0)) {
        problems.push(`${name} must be a number of seconds >= 0`);
      }
    }
  }
  if (problems.length > 0)
    throw new Error(`Invalid TusModule options: janitor: ${problems.join('; ')}`);
}

/** `storage: { s3 }`: a bucket, and a part size S3 takes. */
function checkS3(options: TusModuleOptions): void {
  const storage = options.storage as { s3?: { bucket?: unknown; partSize?: unknown } } | undefined;
  if (!storage || !('s3' in storage)) return;
  const s3 = storage.s3;
  if (typeof s3?.bucket !== 'string' || s3.bucket === '') {
    throw new Error('Invalid TusModule options: storage.s3.bucket must be a bucket name');
  }
  if (
    s3.partSize !== undefined &&
    !(Number.isInteger(s3.partSize) && (s3.partSize as number) >= 5 * 1024 * 1024)
  ) {
    throw new Error('Invalid TusModule options: storage.s3.partSize must be at least 5 MiB');
  }
}

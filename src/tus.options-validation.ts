import { validateCronExpression } from 'cron';
import { TrustedProxies } from './nest/trusted-proxies.js';
import { coordinationProblems } from './redis/redis-coordination.js';
import type { TusModuleOptions } from './tus.options.js';

/** A rule for one scalar option: a problem with `value`, or undefined when it is fine. */
type Rule = (value: unknown) => string | undefined;

const integer =
  (min: number, max = Number.MAX_SAFE_INTEGER): Rule =>
  (value) =>
    Number.isInteger(value) && (value as number) >= min && (value as number) <= max
      ? undefined
      : max === Number.MAX_SAFE_INTEGER
        ? `must be an integer >= ${min}`
        : `must be an integer from ${min} to ${max}`;
const boolean: Rule = (value) => (typeof value === 'boolean' ? undefined : 'must be a boolean');
const nonEmptyString: Rule = (value) =>
  typeof value === 'string' && value !== '' ? undefined : 'must be a non-empty string';
const strings: Rule = (value) =>
  Array.isArray(value) && value.every((v) => typeof v === 'string')
    ? undefined
    : 'must be an array of strings';
/** Objects and functions, checked below or by their own types. */
const anything: Rule = () => undefined;

/**
 * Every option the module reads, with the check applied when the application starts (an
 * absent option is not checked: its default applies). A name not in here is refused, so a
 * misspelt option stops the start-up instead of being ignored.
 */
const RULES: Record<keyof TusModuleOptions, Rule> = {
  uploadDir: nonEmptyString,
  completedDir: nonEmptyString,
  maxSize: integer(0),
  maxChunkSize: integer(1),
  maxMetadataSize: integer(1),
  fsync: boolean,
  directoryMode: integer(0, 0o7777),
  fileMode: integer(0, 0o7777),
  lockWaitMs: integer(0),
  bodyIdleTimeoutMs: integer(0),
  checkpointBytes: integer(0),
  checkpointIntervalMs: integer(0),
  shutdownTimeoutMs: integer(0),
  headersTimeoutMs: integer(1),
  maxConnections: integer(1),
  maxConnectionsPerClient: integer(1),
  configureHttpServer: boolean,
  spaceMargin: integer(0),
  queuePollIntervalMs: integer(10),
  progressIntervalMs: integer(0),
  trustedProxies: strings,
  trustForwardedHost: boolean,
  expireAfterMs: integer(1),
  removePartials: boolean,
  maxPartsPerFinal: integer(1),
  maxFinalsPerPartial: integer(1),
  allowDuplicateParts: boolean,
  ietfDraft: boolean,
  minBytesPerSecond: integer(0),
  storage: anything,
  recordStore: anything,
  locker: anything,
  extensions: anything,
  completedQueue: anything,
  onCreate: anything,
  onEvent: anything,
  metrics: anything,
  health: anything,
  cors: anything,
  janitor: anything,
  logger: anything,
  coordination: anything,
  ownership: anything,
  rateLimits: anything,
  rateLimitStorage: anything,
};

/** The problems of the scalar options and the unknown names, one string each. */
function scalarProblems(options: TusModuleOptions): string[] {
  const problems: string[] = [];
  const given = options as unknown as Record<string, unknown>;
  // Without a storage of its own, the module writes to uploadDir: it is required then.
  const required = [...(options.storage === undefined ? ['uploadDir'] : []), 'completedDir'];
  for (const name of required as (keyof TusModuleOptions)[]) {
    if (given[name] == null) problems.push(`${name}: ${RULES[name](undefined)}`);
  }
  for (const [name, value] of Object.entries(given)) {
    if (!Object.hasOwn(RULES, name)) {
      problems.push(`unknown option \`${name}\``);
      continue;
    }
    // null is absent, as undefined; a storage of its own makes uploadDir unused.
    if (value === undefined || value === null) continue;
    if (name === 'uploadDir' && options.storage !== undefined) continue;
    const problem = RULES[name as keyof TusModuleOptions](value);
    if (problem) problems.push(`${name}: ${problem}`);
  }
  return problems;
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
  const problems = scalarProblems(options);
  if (problems.length > 0) {
    throw new Error(`Invalid TusModule options: ${problems.join('; ')}`);
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

import { randomUUID } from 'node:crypto';
import { open, statfs, unlink } from 'node:fs/promises';
import { join } from 'node:path';
import type { HealthIndicatorResult } from '@nestjs/terminus';
import type { RedisCoordination } from '../redis/redis-coordination.js';
import type { UploadStorage } from '../storage/storage.interfaces.js';

/** The `health` option. */
export interface TusHealthOptions {
  /** Below this many free bytes on the uploads' volume the disk check is down. @default 64 MiB */
  minFreeBytes?: number;
  /** A check that has not answered in this long is down (a hung mount, an unreachable Redis). @default 3000 */
  timeoutMs?: number;
}

type Status = { status: 'up' | 'down'; [detail: string]: unknown };

/**
 * The module's health checks, as `@nestjs/terminus` indicator results (one key per check, so a
 * 503 names the check that failed):
 *
 * - `tus_upload_dir`, `tus_completed_dir`: the directories take a new file (created, then removed);
 * - `tus_disk`: free bytes on the uploads' volume above `minFreeBytes`;
 * - `tus_redis`: Redis answers a PING, with `coordination`;
 * - `tus_s3`: the bucket answers, with the S3 storage;
 * - `tus_accepting` (readiness): down from the moment the application starts shutting down.
 *
 * ```ts
 * @Get('health') @HealthCheck()
 * check() { return this.health.check([() => this.tus.check(), () => this.tus.readiness()]); }
 * ```
 */
export class TusHealthIndicator {
  private shuttingDown = false;

  constructor(
    private readonly targets: {
      uploadDir?: string;
      completedDir?: string;
      storage: UploadStorage;
      coordination: RedisCoordination | null;
    },
    private readonly options: TusHealthOptions = {},
  ) {}

  /** Every check of the uploads' dependencies. */
  async check(): Promise<HealthIndicatorResult> {
    const { uploadDir, completedDir, storage, coordination } = this.targets;
    const checks: [string, () => Promise<Record<string, unknown>>][] = [];
    if (uploadDir) checks.push(['tus_upload_dir', () => writable(uploadDir)]);
    if (completedDir) checks.push(['tus_completed_dir', () => writable(completedDir)]);
    if (storage.volume) checks.push(['tus_disk', () => this.freeSpace(storage.volume!)]);
    if (coordination) {
      checks.push([
        'tus_redis',
        async () => {
          await coordination.connection.client.ping();
          return {};
        },
      ]);
    }
    if (storage.check) {
      checks.push([
        'tus_s3',
        async () => {
          await storage.check!();
          return {};
        },
      ]);
    }
    const results = await Promise.all(
      checks.map(async ([key, run]): Promise<[string, Status]> => {
        try {
          return [key, { status: 'up', ...(await this.inTime(run())) }];
        } catch (e) {
          return [key, { status: 'down', message: e instanceof Error ? e.message : String(e) }];
        }
      }),
    );
    return Object.fromEntries(results);
  }

  /** Readiness: down once the application is shutting down (new uploads go elsewhere). */
  readiness(): HealthIndicatorResult {
    return {
      tus_accepting: this.shuttingDown
        ? { status: 'down', message: 'shutting down' }
        : { status: 'up' },
    };
  }

  /** Called when the application begins to shut down (the module does). */
  markShuttingDown(): void {
    this.shuttingDown = true;
  }

  get isShuttingDown(): boolean {
    return this.shuttingDown;
  }

  private async freeSpace(volume: string): Promise<Record<string, unknown>> {
    const stats = await statfs(volume);
    const free = stats.bavail * stats.bsize;
    const min = this.options.minFreeBytes ?? 64 * 1024 * 1024;
    if (free < min) throw new Error(`${free} bytes free, below ${min}`);
    return { freeBytes: free };
  }

  private inTime<T>(work: Promise<T>): Promise<T> {
    const ms = this.options.timeoutMs ?? 3000;
    let timer: NodeJS.Timeout | undefined;
    const late = new Promise<never>((_, reject) => {
      timer = setTimeout(() => reject(new Error(`no answer within ${ms} ms`)), ms);
    });
    return Promise.race([work, late]).finally(() => clearTimeout(timer));
  }
}

/** A directory that takes a new file (created exclusively, then removed). */
async function writable(directory: string): Promise<Record<string, unknown>> {
  const probe = join(directory, `.health-${randomUUID()}.tmp`);
  const handle = await open(probe, 'wx');
  await handle.close();
  await unlink(probe);
  return {};
}

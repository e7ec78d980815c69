import {
  Controller,
  Get,
  Header,
  Inject,
  Injectable,
  NotFoundException,
  Req,
  ServiceUnavailableException,
  Sse,
  UseGuards,
  type BeforeApplicationShutdown,
  type MessageEvent,
  type Type,
} from '@nestjs/common';
import { ConfigService } from '@nestjs/config';
import { OnEvent } from '@nestjs/event-emitter';
import { createHash } from 'node:crypto';
import { createReadStream, readFileSync } from 'node:fs';
import { readdir, stat } from 'node:fs/promises';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import {
  TusEvents,
  UploadRecord,
  type PlatformRequest,
  type UploadCompletedEvent,
  type UploadCreatedEvent,
  type UploadProgressEvent,
  type UploadTerminatedEvent,
} from 'nestjs-tussi';
import { Observable, Subject, interval, map, merge, takeUntil } from 'rxjs';
import { BearerAuthGuard, credentialsFrom } from './bearer-auth.guard.js';
import { destinationDir, switchedOn } from './env.js';

/** One finished upload in the destination directory, as the page lists it. */
export interface DeliveredFile {
  id: string;
  /** The file's name in the destination directory. */
  name: string;
  size: number;
  /** When it was delivered (ISO 8601). */
  at: string;
  /** Computed by the consumer while somebody watched the page; absent otherwise. */
  sha256?: string;
  /** The principal that uploaded it (with tokens), which alone sees it. */
  owner?: string | null;
}

/** What the page is told, in order, for each upload. */
export type FeedEvent =
  | {
      type: 'created';
      owner: string | null;
      data: { id: string; name: string; size: number | null };
    }
  | {
      type: 'progress';
      owner: string | null;
      data: { id: string; offset: number; size: number | null };
    }
  | { type: 'completed'; owner: string | null; data: { id: string } }
  | { type: 'terminated'; owner: string | null; data: { id: string } }
  | { type: 'delivered'; owner: string | null; data: DeliveredFile };

/** The most files a snapshot lists (the newest). */
const SNAPSHOT_LIMIT = 200;
/** A snapshot is read from the directory at most this often (per principal). */
const SNAPSHOT_TTL_MS = 2000;
/** Pages watching at once; more are refused (503), so watching cannot be made to cost. */
const MAX_WATCHERS = 100;

/**
 * The upload page's view of the server: the module's lifecycle events and the consumer's
 * deliveries as one stream, and the destination directory as the list of delivered files.
 */
@Injectable()
export class UploadFeed implements BeforeApplicationShutdown {
  private readonly events = new Subject<FeedEvent>();
  /** Ends every page's stream at shutdown: an open stream would hold the server open. */
  private readonly closing = new Subject<void>();
  private readonly hashes = new Map<string, string>();
  private watchers = 0;
  private readonly snapshots = new Map<string, { at: number; files: Promise<DeliveredFile[]> }>();
  readonly destDir: string;

  constructor(@Inject(ConfigService) config: ConfigService) {
    this.destDir = destinationDir(config);
  }

  beforeApplicationShutdown(): void {
    this.closing.next();
  }

  /** True while a page is connected: the consumer then computes each delivery's sha256. */
  get watched(): boolean {
    return this.watchers > 0;
  }

  @OnEvent(TusEvents.Created)
  created(event: UploadCreatedEvent): void {
    const name = event.record.metadata.filename ?? event.uploadId;
    this.events.next({
      type: 'created',
      owner: event.owner,
      data: { id: event.uploadId, name: name.slice(0, 255), size: event.record.length },
    });
  }

  @OnEvent(TusEvents.Progress)
  progress(event: UploadProgressEvent): void {
    this.events.next({
      type: 'progress',
      owner: event.owner,
      data: { id: event.uploadId, offset: event.offset, size: event.length },
    });
  }

  @OnEvent(TusEvents.Completed)
  completed(event: UploadCompletedEvent): void {
    this.events.next({ type: 'completed', owner: event.owner, data: { id: event.uploadId } });
  }

  @OnEvent(TusEvents.Terminated)
  terminated(event: UploadTerminatedEvent): void {
    this.events.next({ type: 'terminated', owner: event.owner, data: { id: event.uploadId } });
  }

  /** The consumer delivered a file (with its sha256 when it computed one). */
  delivered(file: DeliveredFile): void {
    // The next page to connect reads the directory again: it holds this file now.
    this.snapshots.clear();
    if (file.sha256) {
      this.hashes.set(file.id, file.sha256);
      if (this.hashes.size > 10_000) this.hashes.delete(this.hashes.keys().next().value!);
    }
    this.events.next({ type: 'delivered', owner: file.owner ?? null, data: file });
  }

  /** The sha256 of a file the consumer is about to report, when a page is watching. */
  async sha256Of(path: string): Promise<string | undefined> {
    if (!this.watched) return undefined;
    const hash = createHash('sha256');
    for await (const chunk of createReadStream(path)) hash.update(chunk as Buffer);
    return hash.digest('hex');
  }

  /** True when no more pages may watch now. */
  get full(): boolean {
    return this.watchers >= MAX_WATCHERS;
  }

  /**
   * The delivered files (newest first) that `principal` may see, read from the directory at
   * most every 2 s between deliveries: pages connecting at once share one read.
   */
  snapshot(principal: string | null): Promise<DeliveredFile[]> {
    const key = principal ?? '';
    const cached = this.snapshots.get(key);
    if (cached && Date.now() - cached.at < SNAPSHOT_TTL_MS) {
      return cached.files.then((files) =>
        files.map((f) => ({ ...f, sha256: f.sha256 ?? this.hashes.get(f.id) })),
      );
    }
    const files = this.readSnapshot(principal);
    if (this.snapshots.size > 1000) this.snapshots.clear();
    this.snapshots.set(key, { at: Date.now(), files });
    files.catch(() => this.snapshots.delete(key));
    return files;
  }

  private async readSnapshot(principal: string | null): Promise<DeliveredFile[]> {
    const names = await readdir(this.destDir).catch(() => [] as string[]);
    const files: DeliveredFile[] = [];
    for (const meta of names.filter((n) => n.endsWith('.meta'))) {
      const name = meta.slice(0, -'.meta'.length);
      const [record, info] = await Promise.all([
        UploadRecord.fromFile(join(this.destDir, meta)).catch(() => null),
        stat(join(this.destDir, name)).catch(() => null),
      ]);
      if (!record || !info?.isFile()) continue;
      if (principal !== null && record.owner !== principal) continue;
      const id = name.slice(0, 36);
      files.push({
        id,
        name,
        size: info.size,
        at: (record.finishedAt ?? info.mtime).toISOString(),
        sha256: this.hashes.get(id),
        owner: record.owner,
      });
    }
    return files.sort((a, b) => b.at.localeCompare(a.at)).slice(0, SNAPSHOT_LIMIT);
  }

  /**
   * What one page receives: the list first, then every event of the uploads `principal` may
   * see (every upload without tokens), and a ping every 15 s so proxies keep the stream open.
   * Events that come while the list is read are kept and sent after it, none lost.
   */
  stream(principal: string | null): Observable<MessageEvent> {
    const visible = (e: FeedEvent) => principal === null || e.owner === principal;
    const live = new Observable<MessageEvent>((subscriber) => {
      this.watchers++;
      const early: FeedEvent[] = [];
      let ready = false;
      const send = (e: FeedEvent) => subscriber.next({ type: e.type, data: e.data });
      const subscription = this.events.subscribe((e) => {
        if (!visible(e)) return;
        if (ready) send(e);
        else early.push(e);
      });
      this.snapshot(principal).then(
        (delivered) => {
          subscriber.next({ type: 'snapshot', data: { delivered } });
          ready = true;
          for (const e of early.splice(0)) send(e);
        },
        (error: unknown) => subscriber.error(error),
      );
      return () => {
        this.watchers--;
        subscription.unsubscribe();
      };
    });
    const pings = interval(15_000).pipe(map(() => ({ type: 'ping', data: {} })));
    return merge(live, pings).pipe(takeUntil(this.closing));
  }
}

/** The page's files, built by `npm run build` next to this module (`ui/`). */
function pageFiles(): Record<string, { type: string; body: Buffer }> | undefined {
  const dir = fileURLToPath(new URL('./ui/', import.meta.url));
  try {
    return {
      'index.html': {
        type: 'text/html; charset=utf-8',
        body: readFileSync(join(dir, 'index.html')),
      },
      'app.js': { type: 'text/javascript; charset=utf-8', body: readFileSync(join(dir, 'app.js')) },
      'app.css': { type: 'text/css; charset=utf-8', body: readFileSync(join(dir, 'app.css')) },
    };
  } catch {
    return undefined;
  }
}

/** The principal the bearer guard established, or null (no tokens: one shared view). */
function principalOf(req: PlatformRequest): string | null {
  const user = (req as PlatformRequest & { user?: { id?: string } }).user;
  return typeof user?.id === 'string' ? user.id : null;
}

/**
 * The upload page's routes (`TUS_UI=false` removes them): the page at `/`, its script, style and
 * settings under `/ui/`, and the server's events at `/ui/events` (guarded like the uploads; the
 * page sends the token it asked for once).
 */
export function uploadPageControllers(env: NodeJS.ProcessEnv = process.env): Type[] {
  if (!switchedOn(env.TUS_UI)) return [];
  const files = pageFiles();
  const file = (name: string) => {
    const found = files?.[name];
    if (!found) throw new NotFoundException('the upload page is not built: run npm run build');
    return found.body.toString('utf8');
  };

  @Controller()
  class UploadPageController {
    constructor(@Inject(ConfigService) private readonly config: ConfigService) {}

    @Get()
    @Header('Content-Type', 'text/html; charset=utf-8')
    @Header('Cache-Control', 'no-cache')
    // The page loads nothing from another origin, and nothing may frame it.
    @Header(
      'Content-Security-Policy',
      "default-src 'self'; img-src 'self' data: blob:; style-src 'self' 'unsafe-inline'; frame-ancestors 'none'",
    )
    page(): string {
      return file('index.html');
    }

    @Get('ui/app.js')
    @Header('Content-Type', 'text/javascript; charset=utf-8')
    @Header('Cache-Control', 'no-cache')
    script(): string {
      return file('app.js');
    }

    @Get('ui/app.css')
    @Header('Content-Type', 'text/css; charset=utf-8')
    @Header('Cache-Control', 'no-cache')
    style(): string {
      return file('app.css');
    }

    /** What the page needs to know: where to upload, whether a token is needed, how. */
    @Get('ui/config.json')
    @Header('Cache-Control', 'no-store')
    settings(): Record<string, unknown> {
      return {
        endpoint: '/files/',
        events: '/ui/events',
        auth: credentialsFrom(this.config).length > 0,
        // Big enough that a large file takes few requests, small enough that a retry after a
        // drop resends little (offsets are committed as the bytes arrive, too).
        chunkSize: 64 * 1024 * 1024,
        parallel: 3,
      };
    }
  }

  @Controller('ui')
  @UseGuards(BearerAuthGuard)
  class UploadEventsController {
    constructor(@Inject(UploadFeed) private readonly feed: UploadFeed) {}

    @Sse('events')
    events(@Req() req: PlatformRequest): Observable<MessageEvent> {
      if (this.feed.full) throw new ServiceUnavailableException('too many pages watching');
      return this.feed.stream(principalOf(req));
    }
  }

  return [UploadPageController, UploadEventsController];
}

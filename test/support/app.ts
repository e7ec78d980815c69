import {
  ConsoleLogger,
  type DynamicModule,
  type INestApplication,
  type NestApplicationOptions,
  type LogLevel,
  type Type,
} from '@nestjs/common';
import type { AbstractHttpAdapter } from '@nestjs/core';
import { Test, type TestingModule } from '@nestjs/testing';
import { afterAll, beforeAll, describe } from '@jest/globals';
import { mkdtemp, readdir, rm } from 'node:fs/promises';
import type { AddressInfo } from 'node:net';
import type { Server } from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import {
  TusModule,
  type TusLogger,
  type TusModuleExtras,
  type TusModuleOptions,
} from '../../src/index.js';
import { request, type RawRequestOptions, type RawResponse } from './http.js';

export const TUS = { 'Tus-Resumable': '1.0.0' } as const;
export const OCTETS = 'application/offset+octet-stream';

/** Options of `TusModule.forRoot` (directories default to fresh temp dirs) plus app shape. */
export interface TestAppOptions extends Partial<TusModuleOptions> {
  /** `TusModule`'s `path` extra. @default 'files' */
  path?: string;
  /** `app.setGlobalPrefix(...)`. */
  globalPrefix?: string;
  /** `TusModule`'s `guards` extra. */
  guards?: TusModuleExtras['guards'];
}

export interface TestApp {
  app: INestApplication;
  server: Server;
  port: number;
  /** `http://127.0.0.1:PORT` (no trailing slash). */
  baseUrl: string;
  uploadDir: string;
  completedDir: string;
  /** What the module logged through its `TusLogger` (server-side failures). */
  logged: { errors: string[]; warnings: string[] };
  request(options: RawRequestOptions): Promise<RawResponse>;
  close(): Promise<void>;
}

/** Fresh `uploads/` and `completed/` paths below a new temp dir (the dirs are not created). */
export async function tempDirs(prefix = 'tussi-e2e-'): Promise<{
  root: string;
  uploadDir: string;
  completedDir: string;
}> {
  const root = await mkdtemp(join(tmpdir(), prefix));
  return { root, uploadDir: join(root, 'uploads'), completedDir: join(root, 'completed') };
}

function collectingLogger(): { logger: TusLogger; logged: TestApp['logged'] } {
  const logged = { errors: [] as string[], warnings: [] as string[] };
  return {
    logged,
    logger: {
      error: (message, error) =>
        logged.errors.push(
          `${message}: ${error instanceof Error ? (error.stack ?? error.message) : String(error)}`,
        ),
      warn: (message) => logged.warnings.push(message),
    },
  };
}

/**
 * A real Nest application with `TusModule.forRoot(...)`, listening on an ephemeral port of
 * 127.0.0.1. Without `uploadDir`/`completedDir` it gets temp dirs, removed by `close()`.
 */
export async function createTestApp(options: TestAppOptions = {}): Promise<TestApp> {
  const { path, globalPrefix, ...tus } = options;
  const owned =
    tus.uploadDir === undefined || tus.completedDir === undefined ? await tempDirs() : undefined;
  const uploadDir = tus.uploadDir ?? owned!.uploadDir;
  const completedDir = tus.completedDir ?? owned!.completedDir;
  const { logger, logged } = collectingLogger();
  const module = TusModule.forRoot({
    logger,
    ...tus,
    uploadDir,
    completedDir,
    ...(path ? { path } : {}),
  });
  return startApp([module], {
    uploadDir,
    completedDir,
    globalPrefix,
    removeOnClose: owned?.root,
    logged,
  });
}

/** The Nest HTTP platforms the module runs on. */
export const PLATFORMS = ['express', 'fastify'] as const;
export type Platform = (typeof PLATFORMS)[number];

let currentPlatform: Platform | undefined;

/**
 * The platform the apps of the running tests get: set by `forEachPlatform`, else
 * `TUS_TEST_PLATFORM`, else Express.
 */
export function testPlatform(): Platform {
  if (currentPlatform) return currentPlatform;
  const wanted = process.env.TUS_TEST_PLATFORM;
  return wanted === 'fastify' ? 'fastify' : 'express';
}

/**
 * Runs `suite` once per platform, each in a `describe` named after it, with every app the suite
 * starts through these helpers (`createTestApp`, `startApp`, `listenOnEphemeralPort`) on that
 * platform.
 */
export function forEachPlatform(suite: (platform: Platform) => void): void {
  for (const platform of PLATFORMS) {
    describe(platform, () => {
      beforeAll(() => {
        currentPlatform = platform;
      });
      afterAll(() => {
        currentPlatform = undefined;
      });
      suite(platform);
    });
  }
}

/** A Nest application of `moduleRef` on the platform of the running tests (not listening yet). */
export async function createPlatformApp(
  moduleRef: TestingModule,
  options: NestApplicationOptions = {},
): Promise<INestApplication> {
  return testPlatform() === 'fastify'
    ? moduleRef.createNestApplication(await fastifyAdapter(), options)
    : moduleRef.createNestApplication(options);
}

async function fastifyAdapter(): Promise<AbstractHttpAdapter> {
  const { FastifyAdapter } = await import('@nestjs/platform-fastify');
  return new FastifyAdapter();
}

/** The `logged` of every app of this test file still open. */
const openSinks = new Set<TestApp['logged']>();

/**
 * Nest's console logger that also records every error logged through Nest's `Logger` (an
 * exception Nest's own handler caught, a failure of another layer), so the suites' "logged no
 * failure" checks see those as well as the module's own. Nest's `Logger` is one per process
 * (the last app created sets it): an error is recorded for every app open at the time.
 */
class RecordingLogger extends ConsoleLogger {
  constructor(levels: LogLevel[]) {
    super();
    this.setLogLevels(levels);
  }

  override error(message: unknown, ...rest: unknown[]): void {
    const detail = rest.map((r) => (r instanceof Error ? (r.stack ?? r.message) : String(r)));
    const line = `[Nest] ${[String(message), ...detail].join(' ')}`;
    for (const sink of openSinks) sink.errors.push(line);
    super.error(message, ...rest);
  }
}

/** A Nest application listening on an ephemeral port of 127.0.0.1. */
export interface ListeningApp {
  app: INestApplication;
  server: Server;
  port: number;
  /** `http://127.0.0.1:PORT` (no trailing slash). */
  baseUrl: string;
  /** Closes the application (once), then deletes `removeOnClose`. */
  close: () => Promise<void>;
}

/**
 * Compiles a testing module importing `imports` and listens on 127.0.0.1:0. `removeOnClose` is
 * deleted (recursively) when the app is closed, or at once when it fails to start.
 */
export async function listenOnEphemeralPort(
  imports: Array<Type | DynamicModule>,
  {
    logger: levels,
    globalPrefix,
    removeOnClose,
    platform = testPlatform(),
    logged,
  }: {
    logger: LogLevel[];
    globalPrefix?: string;
    removeOnClose?: string;
    platform?: Platform;
    /** Where errors logged through Nest's `Logger` are recorded too (besides the console). */
    logged?: TestApp['logged'];
  },
): Promise<ListeningApp> {
  if (logged) openSinks.add(logged);
  const logger = logged ? new RecordingLogger(levels) : levels;
  let app: INestApplication | undefined;
  try {
    const moduleRef = await Test.createTestingModule({ imports }).compile();
    app =
      platform === 'fastify'
        ? moduleRef.createNestApplication(await fastifyAdapter(), { logger })
        : moduleRef.createNestApplication({ logger });
    if (globalPrefix) app.setGlobalPrefix(globalPrefix);
    await app.listen(0, '127.0.0.1');
    const type = app.getHttpAdapter().getType();
    if (type !== platform) throw new Error(`the app runs on ${type}, the tests on ${platform}`);
  } catch (e) {
    await app?.close().catch(() => {});
    if (logged) openSinks.delete(logged);
    if (removeOnClose) await rm(removeOnClose, { recursive: true, force: true });
    throw e;
  }
  const started = app;
  const server = started.getHttpServer() as Server;
  const { port } = server.address() as AddressInfo;
  let closed = false;
  return {
    app: started,
    server,
    port,
    baseUrl: `http://127.0.0.1:${port}`,
    close: async () => {
      if (closed) return;
      closed = true;
      // Keep-alive sockets (tus-js-client) or a stalled request must not hold the close.
      server.closeAllConnections();
      await started.close();
      if (logged) openSinks.delete(logged);
      if (removeOnClose) await rm(removeOnClose, { recursive: true, force: true });
    },
  };
}

/**
 * Starts a Nest application importing `imports` (e.g. the sample's `AppModule`) on 127.0.0.1:0.
 * `removeOnClose` is deleted (recursively) when the app is closed.
 */
export async function startApp(
  imports: Array<Type | DynamicModule>,
  shape: {
    uploadDir: string;
    completedDir: string;
    globalPrefix?: string;
    removeOnClose?: string;
    logged?: TestApp['logged'];
  },
): Promise<TestApp> {
  const logged = shape.logged ?? { errors: [], warnings: [] };
  const listening = await listenOnEphemeralPort(imports, {
    logger: ['error', 'warn'],
    globalPrefix: shape.globalPrefix,
    removeOnClose: shape.removeOnClose,
    logged,
  });
  return {
    ...listening,
    uploadDir: shape.uploadDir,
    completedDir: shape.completedDir,
    logged,
    request: (options) => request(listening.baseUrl, options),
  };
}

/** The last path segment of an upload URL: its id. */
export function idOf(location: string): string {
  return new URL(location).pathname.split('/').pop()!;
}

/** POST a creation request; returns the response and the id of the new upload (if any). */
export async function createUpload(
  app: TestApp,
  length: number,
  { path = '/files', headers = {} }: { path?: string; headers?: Record<string, string> } = {},
): Promise<{ res: RawResponse; id: string; location: string }> {
  const res = await app.request({
    method: 'POST',
    path,
    headers: { ...TUS, 'Upload-Length': String(length), ...headers },
  });
  const location = typeof res.headers.location === 'string' ? res.headers.location : '';
  return { res, location, id: location ? idOf(location) : '' };
}

/** HEAD an upload; `offset` is `Upload-Offset` as a number (NaN when absent). */
export async function headUpload(
  app: TestApp,
  id: string,
  path = '/files',
): Promise<{ res: RawResponse; offset: number }> {
  const res = await app.request({ method: 'HEAD', path: `${path}/${id}`, headers: { ...TUS } });
  return { res, offset: Number(res.headers['upload-offset'] ?? Number.NaN) };
}

/** PATCH bytes at `offset` with `Content-Length` (or as `body` says). */
export function patchUpload(
  app: TestApp,
  id: string,
  offset: number,
  body: Buffer | AsyncIterable<Buffer>,
  extra: Partial<RawRequestOptions> & { headers?: Record<string, string> } = {},
): Promise<RawResponse> {
  return app.request({
    method: 'PATCH',
    path: `/files/${id}`,
    body,
    ...extra,
    headers: { ...TUS, 'Content-Type': OCTETS, 'Upload-Offset': String(offset), ...extra.headers },
  });
}

/**
 * Where a finished upload lives once finalized: `${completedDir}/${id}` (data) and
 * `${completedDir}/${id}.meta` (record). Unfinished uploads stay in `uploadDir`.
 */
export function completedPaths(
  dirs: { completedDir: string },
  id: string,
): { data: string; record: string; receipt: string } {
  return {
    data: join(dirs.completedDir, id),
    record: join(dirs.completedDir, `${id}.meta`),
    receipt: join(dirs.completedDir, `${id}.done`),
  };
}

/** The entries of an upload directory that belong to uploads (not the space ledger). */
export async function uploadEntries(dir: string): Promise<string[]> {
  return (await readdir(dir)).filter((name) => name !== '.tussi-space');
}

/** Every entry of `dir` that belongs to upload `id` (data, record, temp files of its record). */
export async function entriesOf(dir: string, id: string): Promise<string[]> {
  return (await readdir(dir)).filter((name) => name.includes(id)).sort();
}

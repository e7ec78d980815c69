import 'reflect-metadata';
import type { INestApplication, LogLevel } from '@nestjs/common';
import { NestFactory, type AbstractHttpAdapter } from '@nestjs/core';
import type { Server } from 'node:http';
import v8 from 'node:v8';
import { TusJsonLogger } from 'nestjs-tussi';
import { AppModule } from './app.module.js';
import { switchedOn } from './env.js';

export interface BootstrapOptions {
  /** Address to listen on. @default '127.0.0.1' */
  host?: string;
  /** Port to listen on; 0 picks a free one. @default 1080 */
  port?: number;
  /** Nest log levels. @default ['log', 'warn', 'error'] */
  logLevels?: LogLevel[];
  /**
   * `app.enableShutdownHooks(signals, { useProcessExit })`; `false` leaves signals alone.
   * @default {} (every signal Nest knows, then the signal is raised again)
   */
  shutdownHooks?: { signals?: string[]; useProcessExit?: boolean } | false;
  /** Nest's `abortOnError`: `false` makes a failed start reject instead of aborting. @default true */
  abortOnError?: boolean;
  /**
   * The Nest HTTP platform: `fastify` needs `@nestjs/platform-fastify` installed.
   * @default the `TUS_PLATFORM` variable, else 'express'
   */
  platform?: 'express' | 'fastify';
}

export interface BootstrapResult {
  app: INestApplication;
  server: Server;
  /** The port actually bound (the chosen one when `port` was 0). */
  port: number;
  /** `http://HOST:PORT/files/`, where clients create uploads. */
  url: string;
  /** `http://HOST:PORT/`, the upload page; undefined with `TUS_UI=false`. */
  pageUrl?: string;
}

/**
 * Creates the sample application (`AppModule`, configured from the environment) and listens.
 * `sample/src/main.ts` and the `tussi-server` command both start the server through it.
 */
export async function bootstrap(options: BootstrapOptions = {}): Promise<BootstrapResult> {
  const host = options.host ?? '127.0.0.1';
  tuneGarbageCollector();
  const settings = {
    // No global JSON/urlencoded parsers: they would read an upload route's body before TUS
    // does and answer a mislabelled PATCH with their own 400 instead of the protocol's 415.
    // An app with JSON routes of its own re-enables them per route or with a path filter.
    bodyParser: false,
    logger: loggerFromEnv(options.logLevels ?? logLevelsFromEnv()),
    abortOnError: options.abortOnError,
  };
  const platform = options.platform ?? platformFromEnv();
  const app =
    platform === 'fastify'
      ? await NestFactory.create(AppModule, await fastifyAdapter(), settings)
      : await NestFactory.create(AppModule, settings);
  if (options.shutdownHooks !== false) {
    const { signals, useProcessExit } = options.shutdownHooks ?? {};
    app.enableShutdownHooks(signals, { useProcessExit });
  }
  // TusModule already lifts Node's 300 s requestTimeout (which would cut long PATCHes); keep idle
  // keep-alive connections a little longer than typical proxies do.
  await app.listen(options.port ?? 1080, host);
  const server = app.getHttpServer() as Server;
  server.keepAliveTimeout = 65_000;
  const address = server.address();
  const port = typeof address === 'object' && address ? address.port : (options.port ?? 1080);
  const shown = host.includes(':') ? `[${host}]` : host;
  const origin = `http://${shown}:${port}`;
  const ui = switchedOn(process.env.TUS_UI);
  return { app, server, port, url: `${origin}/files/`, pageUrl: ui ? `${origin}/` : undefined };
}

/**
 * V8 sets the old generation's next full-GC threshold from its live size, ~20 MB for a NestJS
 * app, and counts against that headroom the memory of every Buffer allocated since the last full
 * GC. While uploads stream hundreds of MiB/s of request Buffers through the process, the
 * headroom fills before young-generation GCs free them, and V8 runs full GCs back to back:
 * measured at ~70 per GiB uploaded, halving throughput and tripling CPU per GiB. A fixed growing
 * factor of 3 keeps the headroom clear of it (0–1 full GCs per GiB), at the price of memory. A
 * process started with its own `--heap-growing-percent` keeps it.
 */
function tuneGarbageCollector(): void {
  if (process.execArgv.some((arg) => arg.startsWith('--heap-growing-percent'))) return;
  // TUS_HEAP_GROWING_PERCENT: another percentage, or `default` for V8's own (the benchmark
  // runs the sample both ways).
  const wanted = process.env.TUS_HEAP_GROWING_PERCENT?.trim() || '200';
  if (wanted === 'default') return;
  if (!/^\d+$/.test(wanted))
    throw new Error(`TUS_HEAP_GROWING_PERCENT=${wanted}: a number or default`);
  v8.setFlagsFromString(`--heap-growing-percent=${wanted}`);
}

function platformFromEnv(): 'express' | 'fastify' {
  const wanted = process.env.TUS_PLATFORM?.trim() || 'express';
  if (wanted !== 'express' && wanted !== 'fastify')
    throw new Error(`TUS_PLATFORM=${wanted}: express or fastify`);
  return wanted;
}

/**
 * Fastify's adapter, loaded only when asked for (an Express user installs nothing of it). TusModule
 * registers what it needs of Fastify itself (the upload bodies' parsers, its routes).
 */
async function fastifyAdapter(): Promise<AbstractHttpAdapter> {
  try {
    const { FastifyAdapter } = await import('@nestjs/platform-fastify');
    return new FastifyAdapter();
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ERR_MODULE_NOT_FOUND') {
      throw new Error(
        'the fastify platform needs @nestjs/platform-fastify: npm i @nestjs/platform-fastify',
        {
          cause: e,
        },
      );
    }
    throw e;
  }
}

/**
 * `TUS_LOG_FORMAT=json`: one JSON object per line (Nest's JSON logger, with `time`, and the
 * request's `requestId` and `uploadId` where there is one); `text` (the default): Nest's lines.
 */
function loggerFromEnv(levels: LogLevel[]): LogLevel[] | TusJsonLogger {
  const format = process.env.TUS_LOG_FORMAT?.trim().toLowerCase() || 'text';
  if (format === 'text') return levels;
  if (format !== 'json') throw new Error(`TUS_LOG_FORMAT=${format}: text or json`);
  return new TusJsonLogger({ logLevels: levels });
}

/** `LOG_LEVEL=warn` keeps warnings and errors only (no line per upload); default `log`. */
function logLevelsFromEnv(): LogLevel[] {
  const order: LogLevel[] = ['error', 'warn', 'log', 'debug', 'verbose'];
  const wanted = (process.env.LOG_LEVEL ?? 'log') as LogLevel;
  const index = order.indexOf(wanted);
  return order.slice(0, index < 0 ? 3 : index + 1);
}

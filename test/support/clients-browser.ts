import { execFile } from 'node:child_process';
import { existsSync } from 'node:fs';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { chromium, type BrowserContext, type Page } from 'playwright-core';

/** Debian's Chromium (package `chromium`); Playwright downloads no browser of its own here. */
export const CHROMIUM = '/usr/bin/chromium';

const browserDir = (name: string) => fileURLToPath(new URL(`./browser/${name}`, import.meta.url));

/** Why the browser suite cannot run here (a sentence naming the package), or undefined. */
export function chromiumMissing(): string | undefined {
  return existsSync(CHROMIUM)
    ? undefined
    : `${CHROMIUM} not found (Debian package chromium: apt-get install -y chromium)`;
}

/**
 * Bundles test/support/browser/uppy-page.mjs (Uppy, the Dashboard, @uppy/tus, their CSS) with
 * esbuild, in a child process, into a temp dir; returns the page's three files.
 */
export async function buildUppyPage(): Promise<Record<string, { type: string; body: Buffer }>> {
  const outdir = await mkdtemp(join(tmpdir(), 'tussi-uppy-bundle-'));
  try {
    await new Promise<void>((resolve, reject) => {
      execFile(
        process.execPath,
        [browserDir('bundle-uppy.mjs'), outdir],
        { timeout: 60_000 },
        (error, _stdout, stderr) =>
          error
            ? reject(new Error(`bundling the Uppy page: ${error.message}\n${stderr}`))
            : resolve(),
      );
    });
    return {
      '/': { type: 'text/html; charset=utf-8', body: await readFile(browserDir('uppy.html')) },
      '/uppy-page.js': {
        type: 'text/javascript; charset=utf-8',
        body: await readFile(join(outdir, 'uppy-page.js')),
      },
      '/uppy-page.css': {
        type: 'text/css; charset=utf-8',
        body: await readFile(join(outdir, 'uppy-page.css')),
      },
    };
  } finally {
    await rm(outdir, { recursive: true, force: true });
  }
}

export interface StaticServer {
  /** `http://127.0.0.1:PORT`: the origin of the pages it serves. */
  origin: string;
  /** Paths requested, in order. */
  requested: string[];
  close(): Promise<void>;
}

/** A static node:http server on 127.0.0.1 serving `files` by path (query strings ignored). */
export async function startStaticServer(
  files: Record<string, { type: string; body: Buffer }>,
): Promise<StaticServer> {
  const requested: string[] = [];
  const server = http.createServer((req, res) => {
    const path = new URL(req.url ?? '/', 'http://x').pathname;
    requested.push(path);
    const file = files[path];
    if (!file || (req.method !== 'GET' && req.method !== 'HEAD')) {
      res.writeHead(404, { 'Content-Type': 'text/plain' }).end('not found');
      return;
    }
    res
      .writeHead(200, {
        'Content-Type': file.type,
        'Content-Length': file.body.length,
        'Cache-Control': 'no-store',
      })
      .end(req.method === 'HEAD' ? undefined : file.body);
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(0, '127.0.0.1', resolve);
  });
  const { port } = server.address() as AddressInfo;
  return {
    origin: `http://127.0.0.1:${port}`,
    requested,
    close: async () => {
      server.closeAllConnections();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
}

export interface Browser {
  context: BrowserContext;
  newPage(): Promise<Page>;
  /** Closes Chromium and removes its profile. */
  close(): Promise<void>;
}

/**
 * Headless Debian Chromium driven by playwright-core, with a fresh profile (user data dir) in a
 * temp dir and no network of its own besides what the pages ask for.
 */
export async function launchChromium(): Promise<Browser> {
  const profile = await mkdtemp(join(tmpdir(), 'tussi-chromium-'));
  let context: BrowserContext;
  try {
    context = await chromium.launchPersistentContext(profile, {
      executablePath: CHROMIUM,
      headless: true,
      args: [
        '--headless',
        '--no-sandbox',
        '--disable-gpu',
        '--disable-quic',
        '--no-first-run',
        '--disable-background-networking',
        '--disable-component-update',
        '--disable-sync',
      ],
      viewport: { width: 820, height: 560 },
      timeout: 60_000,
    });
  } catch (e) {
    await rm(profile, { recursive: true, force: true });
    throw e;
  }
  return {
    context,
    newPage: () => context.newPage(),
    close: async () => {
      await context.close().catch(() => {});
      await rm(profile, { recursive: true, force: true });
    },
  };
}

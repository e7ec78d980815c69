import { afterAll, beforeAll, describe, expect, it } from '@jest/globals';
import { mkdir, mkdtemp, readdir, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import type { Page } from 'playwright-core';
import { chromiumMissing, launchChromium, type Browser } from '../support/clients-browser.js';
import { MiB, KiB, randomFile, type SourceFile } from '../support/clients-server.js';
import {
  ensureCliBuilt,
  sha256File,
  startServerIn,
  until,
  type ServerProcess,
} from '../support/cli-process.js';

/** Screenshots of the page (gitignored), for a person to look at. */
const ARTIFACTS = fileURLToPath(new URL('../../test-artifacts/', import.meta.url));

interface Seen {
  method: string;
  url: string;
}

/**
 * The upload page of `tussi-server` (the sample built as `npm start` builds it) in headless
 * Chromium, used as a person would: files picked through the page's file input, a reload in the
 * middle of a large upload, the same file picked again.
 */
describe('the upload page in Chromium', () => {
  let browser: Browser;
  let root: string;
  const servers: ServerProcess[] = [];

  beforeAll(async () => {
    const missing = chromiumMissing();
    if (missing) throw new Error(missing);
    await ensureCliBuilt();
    root = await mkdtemp(join(tmpdir(), 'tussi-upload-page-'));
    await mkdir(ARTIFACTS, { recursive: true });
    browser = await launchChromium();
  }, 180_000);
  afterAll(async () => {
    await browser?.close();
    for (const s of servers) await s.stop(15_000);
    if (root) await rm(root, { recursive: true, force: true });
  }, 60_000);

  async function server(name: string, extra: string[] = []) {
    const started = await startServerIn(join(root, name), extra, root);
    const { srv } = started;
    servers.push(srv);
    const [, pageUrl] = /Upload page: (http:\/\/\S+)/.exec(srv.output.text) ?? [];
    return { ...started, pageUrl };
  }

  /** Opens the page; records every request it makes (all origins) and its errors. */
  async function open(url: string): Promise<{ page: Page; seen: Seen[]; errors: string[] }> {
    const page = await browser.newPage();
    const seen: Seen[] = [];
    const errors: string[] = [];
    page.on('request', (r) => seen.push({ method: r.method(), url: r.url() }));
    page.on('pageerror', (e) => errors.push(String(e)));
    await page.goto(url);
    await page
      .getByText('Connected: the server reports what it receives.')
      .waitFor({ timeout: 20_000 });
    return { page, seen, errors };
  }

  const pick = (page: Page, files: SourceFile[]) =>
    page
      .locator('input[type=file]')
      .first()
      .setInputFiles(files.map((f) => f.path));

  const deliveredNames = (page: Page) =>
    page.locator('#delivered tbody tr td:first-child').allTextContents();

  it('two files picked, a reload during the large one, picked again: each delivered once, the large one resumed', async () => {
    const { srv, pageUrl, dest } = await server('people');
    expect(pageUrl).toBeDefined();
    // The page's URL is the first line after start-up, beside the TUS endpoint.
    const lines = srv.output.text.split('\n');
    const at = lines.findIndex((l) => l.startsWith('Upload page: '));
    expect(lines[at + 1]).toMatch(/^TUS upload URL: /);
    const origin = new URL(pageUrl).origin;

    const sources = join(root, 'sources');
    await mkdir(sources, { recursive: true });
    const small = await randomFile(sources, 'notes.txt', 100 * KiB + 7);
    const big = await randomFile(sources, 'video.bin', 160 * MiB);

    const first = await open(pageUrl);
    // A slow uplink (about 40 MB/s), so the reload comes while the large file is on its way.
    const cdp = await first.page.context().newCDPSession(first.page);
    await cdp.send('Network.enable');
    await cdp.send('Network.emulateNetworkConditions', {
      offline: false,
      latency: 5,
      downloadThroughput: -1,
      uploadThroughput: 40 * 1024 * 1024,
    });
    await pick(first.page, [small, big]);

    // The small one arrives and is listed; the large one is partly stored on the server.
    await first.page
      .locator('#delivered tbody tr', { hasText: 'notes.txt' })
      .waitFor({ timeout: 30_000 });
    const receiving = first.page.locator('#receiving li', { hasText: 'video.bin' });
    await receiving.waitFor({ timeout: 30_000 });
    await until(
      async () => {
        const value = Number(await receiving.locator('progress').getAttribute('value'));
        return value >= 64 * MiB ? value : undefined;
      },
      60_000,
      'the server received a first chunk of the large file',
    );
    expect(await deliveredNames(first.page)).toHaveLength(1);

    // Reload: the upload in flight is cut. The same file picked again goes on where it stopped.
    await first.page.reload();
    await first.page
      .getByText('Connected: the server reports what it receives.')
      .waitFor({ timeout: 20_000 });
    // The delivered list survived the reload (read from the destination directory).
    expect(await deliveredNames(first.page)).toEqual(['notes.txt']);
    await pick(first.page, [big]);
    await first.page
      .locator('#delivered tbody tr', { hasText: 'video.bin' })
      .waitFor({ timeout: 120_000 });

    // Both delivered once, byte-identical, both names in the page's list.
    const names = (await readdir(dest)).filter((n) => !n.endsWith('.meta'));
    expect(names.map((n) => n.slice(37)).sort()).toEqual(['notes.txt', 'video.bin']);
    for (const source of [small, big]) {
      const name = names.find((n) => n.endsWith(`-${source.name}`))!;
      expect(await sha256File(join(dest, name))).toBe(source.sha256);
    }
    expect(await deliveredNames(first.page)).toEqual(['video.bin', 'notes.txt']);
    // The sha256 the consumer computed while the page watched is shown for the large one.
    await expect(
      first.page
        .locator('#delivered tbody tr', { hasText: 'video.bin' })
        .locator('td.hash')
        .textContent(),
    ).resolves.toBe(big.sha256);

    // Created once each (the large one resumed, after a HEAD), nothing asked of another origin.
    const creations = first.seen.filter(
      (r) => r.method === 'POST' && r.url.startsWith(`${origin}/files`),
    );
    expect(creations).toHaveLength(2);
    expect(first.seen.filter((r) => r.method === 'HEAD').length).toBeGreaterThanOrEqual(1);
    const elsewhere = first.seen.filter(
      (r) => !r.url.startsWith(`${origin}/`) && !/^(data|blob):/.test(r.url),
    );
    expect(elsewhere).toEqual([]);
    expect(first.errors).toEqual([]);

    await first.page.setViewportSize({ width: 900, height: 820 });
    await first.page.screenshot({ path: join(ARTIFACTS, 'upload-page.png'), fullPage: true });
    await first.page.close();
  }, 240_000);

  it('with --token: asks for the token once, says so clearly on a 401, then uploads', async () => {
    const { pageUrl, dest } = await server('token', ['--token', 'alice:s3cret']);
    const page = await browser.newPage();
    const errors: string[] = [];
    page.on('pageerror', (e) => errors.push(String(e)));
    await page.goto(pageUrl);
    const form = page.locator('#auth');
    await form.waitFor({ state: 'visible', timeout: 20_000 });
    await page.getByLabel('Bearer token').fill('wrong');
    await page.getByRole('button', { name: 'Use this token' }).click();
    await page
      .getByText('The server refused the token (401 Unauthorized)')
      .waitFor({ timeout: 20_000 });

    await page.getByLabel('Bearer token').fill('s3cret');
    await page.getByRole('button', { name: 'Use this token' }).click();
    await page
      .getByText('Connected: the server reports what it receives.')
      .waitFor({ timeout: 20_000 });
    const file = await randomFile(join(root, 'sources'), 'secret-plan.txt', 10 * KiB);
    await pick(page, [file]);
    await page
      .locator('#delivered tbody tr', { hasText: 'secret-plan.txt' })
      .waitFor({ timeout: 30_000 });
    const [name] = (await readdir(dest)).filter((n) => !n.endsWith('.meta'));
    expect(await sha256File(join(dest, name))).toBe(file.sha256);
    expect(errors).toEqual([]);
    await page.close();
  }, 120_000);
});

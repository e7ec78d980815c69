import { afterAll, beforeAll, describe, expect, it } from '@jest/globals';
import { randomBytes } from 'node:crypto';
import { mkdir, readdir } from 'node:fs/promises';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import type { Page } from 'playwright-core';
import {
  buildUppyPage,
  chromiumMissing,
  launchChromium,
  startStaticServer,
  type Browser,
  type StaticServer,
} from '../support/clients-browser.js';
import {
  KiB,
  MiB,
  randomFile,
  startSampleServer,
  type SampleServer,
  type SourceFile,
} from '../support/clients-server.js';
import { forEachPlatform } from '../support/app.js';
import { sha256 } from '../support/http.js';

/** Screenshots of the dashboard (gitignored), for a person to look at. */
const ARTIFACTS = fileURLToPath(new URL('../../test-artifacts/', import.meta.url));

/** What the page's script (test/support/browser/uppy-page.mjs) leaves in `window.tussiTest`. */
interface PageReport {
  result: {
    successful: Array<{ name: string; size: number; uploadURL: string | null }>;
    failed: Array<{ name: string; error: string }>;
  } | null;
  errors: Array<{ name: string; error: string }>;
}

interface SeenResponse {
  method: string;
  status: number;
  allowOrigin: string | undefined;
}

forEachPlatform(() => {
  describe('Uppy (@uppy/dashboard + @uppy/tus) in headless Chromium, cross-origin', () => {
    let server: SampleServer;
    /** Serves the page on an origin the TUS server allows. */
    let site: StaticServer;
    /** Serves the same page on an origin the TUS server does not allow. */
    let foreignSite: StaticServer;
    let browser: Browser;
    let sourceDir: string;

    beforeAll(async () => {
      const missing = chromiumMissing();
      if (missing) throw new Error(missing);
      const files = await buildUppyPage();
      site = await startStaticServer(files);
      foreignSite = await startStaticServer(files);
      server = await startSampleServer({
        corsOrigins: [site.origin],
        prefix: 'tussi-clients-uppy-',
      });
      sourceDir = join(server.root, 'sources');
      await mkdir(sourceDir);
      await mkdir(ARTIFACTS, { recursive: true });
      browser = await launchChromium();
    }, 120_000);
    afterAll(async () => {
      await browser?.close();
      await Promise.all([site?.close(), foreignSite?.close()]);
      await server?.close();
    }, 60_000);

    /** Opens the page of `origin`, records the TUS server's answers and the page's errors. */
    async function openPage(origin: string, query: Record<string, string>) {
      const page = await browser.newPage();
      const responses: SeenResponse[] = [];
      const pageErrors: string[] = [];
      const consoleErrors: string[] = [];
      page.on('pageerror', (error) => pageErrors.push(String(error)));
      page.on('console', (message) => {
        if (message.type() === 'error') consoleErrors.push(message.text());
      });
      page.on('response', (res) => {
        if (!res.url().startsWith(server.endpoint)) return;
        responses.push({
          method: res.request().method(),
          status: res.status(),
          allowOrigin: res.headers()['access-control-allow-origin'],
        });
      });
      const search = new URLSearchParams({ endpoint: server.endpoint, ...query });
      await page.goto(`${origin}/?${search.toString()}`);
      await page.locator('.uppy-Dashboard').waitFor({ timeout: 30_000 });
      return { page, responses, pageErrors, consoleErrors };
    }

    /** What a person does: picks the files in the dashboard, presses "Upload N files". */
    async function pickAndUpload(page: Page, files: SourceFile[]): Promise<PageReport> {
      await page
        .locator('input.uppy-Dashboard-input[type="file"]:not([webkitdirectory])')
        .first()
        .setInputFiles(files.map((file) => file.path));
      const label = files.length === 1 ? 'Upload 1 file' : `Upload ${files.length} files`;
      await page.getByRole('button', { name: label }).click();
      await page.waitForFunction('window.tussiTest.result !== null', undefined, {
        timeout: 60_000,
      });
      return page.evaluate<PageReport>('window.tussiTest');
    }

    it('a user picks two files, Uppy uploads them, they arrive byte-identical', async () => {
      const files = [
        await randomFile(sourceDir, 'holiday-video.bin', 3 * MiB + 333),
        await randomFile(sourceDir, 'notes.txt', 200 * KiB + 1),
      ];
      expect(new URL(server.endpoint).origin).not.toBe(site.origin);
      const { page, responses, pageErrors, consoleErrors } = await openPage(site.origin, {
        chunkSize: String(1 * MiB),
      });
      try {
        const report = await pickAndUpload(page, files);
        expect(report.errors).toEqual([]);
        expect(report.result!.failed).toEqual([]);
        expect(report.result!.successful.map((f) => f.name).sort()).toEqual(
          files.map((f) => f.name).sort(),
        );
        // The dashboard says so: the status bar is in its "complete" state.
        await page.locator('.uppy-StatusBar.is-complete').waitFor({ timeout: 10_000 });
        await page.screenshot({ path: join(ARTIFACTS, 'uppy-dashboard-complete.png') });

        for (const file of files) {
          const uploaded = report.result!.successful.find((f) => f.name === file.name)!;
          expect(uploaded.size).toBe(file.data.length);
          expect(uploaded.uploadURL).toMatch(new RegExp(`^${server.endpoint}[0-9a-f-]{36}$`));
          await server.expectDelivered(uploaded.uploadURL!, {
            sha256: file.sha256,
            length: file.data.length,
            filename: file.name,
          });
        }
        // Real CORS: every answer the page read came with the page's origin allowed.
        const methods = new Set(responses.map((r) => r.method));
        expect(methods).toContain('POST');
        expect(methods).toContain('PATCH');
        for (const seen of responses) {
          expect(seen).toMatchObject({ allowOrigin: site.origin });
          expect([201, 204]).toContain(seen.status);
        }
        // 3 MiB in 1 MiB chunks and 200 KiB in one: 5 PATCHes, 2 creations.
        expect(responses.filter((r) => r.method === 'PATCH')).toHaveLength(5);
        expect(responses.filter((r) => r.method === 'POST')).toHaveLength(2);
        expect(pageErrors).toEqual([]);
        expect(consoleErrors).toEqual([]);
        expect(site.requested).toEqual(expect.arrayContaining(['/', '/uppy-page.js']));
      } finally {
        await page.close();
      }
    });

    it('filenames of the world: delivered under a safe name, metadata given back as sent', async () => {
      // A file input hands Uppy the names as they are: two of other scripts, and one a crafted
      // file list could give (a path, and a U+202E that makes `.exe` read as `.jpg`).
      const files = new Map<string, { data: Buffer; deliveredAs: string }>([
        ['résumé.pdf', { data: randomBytes(30 * KiB + 1), deliveredAs: 'résumé.pdf' }],
        ['日本.txt', { data: randomBytes(30 * KiB + 2), deliveredAs: '日本.txt' }],
        ['../../x\u202Egpj.exe', { data: randomBytes(30 * KiB + 3), deliveredAs: 'xgpj.exe' }],
      ]);
      const { page, pageErrors } = await openPage(site.origin, {});
      // What Chromium sent on each creation, by the upload URL it got back.
      const sent = new Map<string, Promise<string | null>>();
      page.on('response', (res) => {
        const location = res.headers().location;
        if (res.request().method() !== 'POST' || !location) return;
        sent.set(
          new URL(location, server.endpoint).href,
          res.request().headerValue('upload-metadata'),
        );
      });
      try {
        await page
          .locator('input.uppy-Dashboard-input[type="file"]:not([webkitdirectory])')
          .first()
          .setInputFiles(
            [...files].map(([name, { data }]) => ({
              name,
              mimeType: 'application/octet-stream',
              buffer: data,
            })),
          );
        await page.getByRole('button', { name: 'Upload 3 files' }).click();
        await page.waitForFunction('window.tussiTest.result !== null', undefined, {
          timeout: 60_000,
        });
        const report = await page.evaluate<PageReport>('window.tussiTest');
        expect(report.errors).toEqual([]);
        expect(report.result!.failed).toEqual([]);
        expect(report.result!.successful.map((f) => f.name).sort()).toEqual(
          [...files.keys()].sort(),
        );
        for (const uploaded of report.result!.successful) {
          const { data, deliveredAs } = files.get(uploaded.name)!;
          const metadata = (await sent.get(uploaded.uploadURL!)) ?? undefined;
          // Uppy sends the name twice (`name`, and `filename` for tusd), both as given.
          const name = Buffer.from(uploaded.name).toString('base64');
          expect(metadata?.split(',')).toEqual(
            expect.arrayContaining([`name ${name}`, `filename ${name}`]),
          );
          await server.expectDelivered(uploaded.uploadURL!, {
            sha256: sha256(data),
            length: data.length,
            filename: uploaded.name,
            deliveredAs,
            metadata,
          });
        }
        expect(pageErrors).toEqual([]);
      } finally {
        await page.close();
      }
    });

    it('the same page from an origin the server does not allow cannot upload', async () => {
      const file = await randomFile(sourceDir, 'refused.bin', 100 * KiB);
      const staged = await readdir(server.app.uploadDir);
      const delivered = await readdir(server.destDir);
      const { page, consoleErrors } = await openPage(foreignSite.origin, { noRetry: '1' });
      try {
        const report = await pickAndUpload(page, [file]);
        expect(report.result!.successful).toEqual([]);
        expect(report.result!.failed.map((f) => f.name)).toEqual([file.name]);
        expect(report.errors.map((e) => e.error).join()).toMatch(/network error/);
        // Chromium's word for it: the preflight of the creation request got no allowed origin.
        expect(consoleErrors.join('\n')).toMatch(/blocked by CORS policy/);
        await page.locator('.uppy-StatusBar.is-error').waitFor({ timeout: 10_000 });
        await page.screenshot({ path: join(ARTIFACTS, 'uppy-dashboard-cors-refused.png') });
      } finally {
        await page.close();
      }
      // The preflight was refused: the creation request never reached the server.
      expect(await readdir(server.app.uploadDir)).toEqual(staged);
      expect(await readdir(server.destDir)).toEqual(delivered);
    });
  });
});

import { afterAll, beforeAll, describe, expect, it } from '@jest/globals';
import { Module } from '@nestjs/common';
import { Registry } from 'prom-client';
import {
  CompletedUploadQueue,
  Janitor,
  TusMetrics,
  TusMetricsController,
  TusModule,
  UploadStorageService,
} from '../../src/index.js';
import {
  TUS,
  createUpload,
  forEachPlatform,
  patchUpload,
  startApp,
  tempDirs,
  type TestApp,
} from '../support/app.js';

/** The value of one sample of the scrape: `name{labels}` exactly as prom-client writes them. */
function sample(text: string, name: string, labels: Record<string, string> = {}): number {
  const wanted = Object.entries(labels)
    .map(([k, v]) => `${k}="${v}"`)
    .join(',');
  const line = text.split('\n').find((l) => {
    if (l.startsWith('#')) return false;
    const m = /^([a-zA-Z_:][\w:]*)(\{([^}]*)\})? (\S+)$/.exec(l);
    if (!m || m[1] !== name) return false;
    const got = (m[3] ?? '')
      .split(',')
      .filter((p) => !p.startsWith('le='))
      .join(',');
    return got === wanted && !(m[3] ?? '').includes('le=');
  });
  if (line === undefined) return Number.NaN;
  return Number(line.slice(line.lastIndexOf(' ') + 1));
}

forEachPlatform(() => {
  describe('Prometheus metrics', () => {
    let app: TestApp;
    const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

    beforeAll(async () => {
      const dirs = await tempDirs('tussi-metrics-');
      @Module({
        imports: [
          TusModule.forRoot({
            uploadDir: dirs.uploadDir,
            completedDir: dirs.completedDir,
            lockWaitMs: 300,
            janitor: { staleUploadAge: 1, intervalMs: 3_600_000 },
          }),
        ],
        controllers: [TusMetricsController],
      })
      class AppModule {}
      app = await startApp([AppModule], { ...dirs, removeOnClose: dirs.root });
    });
    afterAll(async () => {
      await app?.close();
    });

    const scrape = async () => {
      const res = await app.request({ method: 'GET', path: '/metrics' });
      expect(res.status).toBe(200);
      expect(res.headers['content-type']).toBe(Registry.PROMETHEUS_CONTENT_TYPE);
      return res.body.toString();
    };

    it('counts a scripted sequence: creations, PATCHes, a 409, a 423, a DELETE, a claim, a janitor run', async () => {
      const queue = app.app.get(CompletedUploadQueue);
      const store = app.app.get(UploadStorageService);

      // One upload: created, two PATCHes (4 + 6 bytes) with a 409 between them; it completes.
      const first = await createUpload(app, 10);
      expect(first.res.status).toBe(201);
      expect((await patchUpload(app, first.id, 0, Buffer.alloc(4, 1))).status).toBe(204);
      expect((await patchUpload(app, first.id, 0, Buffer.alloc(4, 1))).status).toBe(409);
      expect((await patchUpload(app, first.id, 4, Buffer.alloc(6, 2))).status).toBe(204);
      expect(sample(await scrape(), 'tus_completed_queue_depth')).toBe(1);

      // A consumer claims it.
      const claimed = await queue.waitForFile({ timeout: 5000 });
      expect(claimed.name).toBe(first.id);
      await claimed.release();

      // Another: its lock held elsewhere for longer than lockWaitMs (423), then terminated.
      const second = await createUpload(app, 5);
      const held = await store.locker.acquire(second.id, 1000);
      const busy = await patchUpload(app, second.id, 0, Buffer.alloc(5));
      await held.release();
      expect(busy.status).toBe(423);
      const removed = await app.request({
        method: 'DELETE',
        path: `/files/${second.id}`,
        headers: { ...TUS },
      });
      expect(removed.status).toBe(204);

      // A third, left unfinished until the janitor expires it (staleUploadAge 1 s).
      const third = await createUpload(app, 100);
      expect((await patchUpload(app, third.id, 0, Buffer.alloc(7))).status).toBe(204);
      await sleep(1100);
      const summary = await app.app.get(Janitor).run();
      expect(summary.stale).toBe(1);

      const text = await scrape();
      expect(sample(text, 'tus_uploads_created_total')).toBe(3);
      expect(sample(text, 'tus_uploads_completed_total')).toBe(1);
      expect(sample(text, 'tus_uploads_terminated_total')).toBe(1);
      expect(sample(text, 'tus_uploads_expired_total')).toBe(1);
      expect(sample(text, 'tus_bytes_received_total')).toBe(17);
      expect(sample(text, 'tus_requests_total', { method: 'POST', status: '201' })).toBe(3);
      expect(sample(text, 'tus_requests_total', { method: 'PATCH', status: '204' })).toBe(3);
      expect(sample(text, 'tus_requests_total', { method: 'PATCH', status: '409' })).toBe(1);
      expect(sample(text, 'tus_requests_total', { method: 'PATCH', status: '423' })).toBe(1);
      expect(sample(text, 'tus_requests_total', { method: 'DELETE', status: '204' })).toBe(1);
      expect(
        sample(text, 'tus_request_duration_seconds_count', { method: 'PATCH', status: '204' }),
      ).toBe(3);
      expect(
        sample(text, 'tus_request_duration_seconds_count', { method: 'POST', status: '201' }),
      ).toBe(3);
      // Locks requests waited for: 4 PATCHes that got it, the DELETE; the 423's wait ran out.
      expect(sample(text, 'tus_lock_wait_seconds_count', { outcome: 'acquired' })).toBe(5);
      expect(sample(text, 'tus_lock_wait_seconds_count', { outcome: 'busy' })).toBe(1);
      expect(sample(text, 'tus_lock_wait_seconds_sum', { outcome: 'busy' })).toBeGreaterThan(0.25);
      expect(sample(text, 'tus_lock_conflicts_total')).toBe(1);
      expect(sample(text, 'tus_completed_claim_seconds_count')).toBe(1);
      expect(sample(text, 'tus_completed_queue_depth')).toBe(0);
      expect(sample(text, 'tus_patches_in_flight')).toBe(0);
      expect(sample(text, 'tus_uploads_active')).toBe(0);
      expect(sample(text, 'tus_janitor_runs_total')).toBe(1);
      expect(sample(text, 'tus_janitor_removed_total', { what: 'stale_upload' })).toBe(1);
      expect(sample(text, 'tus_janitor_removed_total', { what: 'orphaned_data' })).toBe(0);
      // Node's own process metrics, in the module's registry.
      expect(sample(text, 'process_cpu_user_seconds_total')).toBeGreaterThan(0);
      // No label carries an upload id.
      for (const id of [first.id, second.id, third.id]) expect(text).not.toContain(id);
      // The scrapes themselves are not on an upload route: not counted.
      expect(sample(text, 'tus_requests_total', { method: 'GET', status: '200' })).toBeNaN();
      expect(app.logged.errors).toEqual([]);
    });

    it('counts a request the protocol refused (412) by its effective method', async () => {
      const before = sample(await scrape(), 'tus_requests_total', {
        method: 'HEAD',
        status: '412',
      });
      // A HEAD without Tus-Resumable, sent as a POST overridden to HEAD.
      const res = await app.request({
        method: 'POST',
        path: '/files/00000000-0000-4000-8000-000000000000',
        headers: { 'X-HTTP-Method-Override': 'HEAD' },
      });
      expect(res.status).toBe(412);
      const after = sample(await scrape(), 'tus_requests_total', { method: 'HEAD', status: '412' });
      expect(after).toBe((Number.isNaN(before) ? 0 : before) + 1);
    });
  });
});

describe('metrics: false', () => {
  it('provides no TusMetrics and keeps none', async () => {
    const dirs = await tempDirs('tussi-metrics-off-');
    const app = await startApp(
      [
        TusModule.forRoot({
          uploadDir: dirs.uploadDir,
          completedDir: dirs.completedDir,
          metrics: false,
        }),
      ],
      { ...dirs, removeOnClose: dirs.root },
    );
    try {
      expect(app.app.get(TusMetrics)).toBeNull();
      expect((await createUpload(app, 1)).res.status).toBe(201);
    } finally {
      await app.close();
    }
  });

  it('registers in a registry the application gives, without default metrics there', async () => {
    const registry = new Registry();
    const dirs = await tempDirs('tussi-metrics-reg-');
    const app = await startApp(
      [
        TusModule.forRoot({
          uploadDir: dirs.uploadDir,
          completedDir: dirs.completedDir,
          metrics: { registry },
        }),
      ],
      { ...dirs, removeOnClose: dirs.root },
    );
    try {
      expect((await createUpload(app, 1)).res.status).toBe(201);
      const text = await registry.metrics();
      expect(sample(text, 'tus_uploads_created_total')).toBe(1);
      expect(text).not.toContain('process_cpu_user_seconds_total');
    } finally {
      await app.close();
    }
  });
});

import { afterAll, afterEach, beforeAll, describe, expect, it } from '@jest/globals';
import { mkdir, rm } from 'node:fs/promises';
import { join } from 'node:path';
import { TusHealthIndicator, TusModule } from '../../src/index.js';
import { forEachPlatform, startApp, tempDirs, type TestApp } from '../support/app.js';
import { startSampleApp } from '../support/clients-server.js';
import { startRedisServer, type RedisServer } from '../support/redis-server.js';

interface HealthBody {
  status: 'ok' | 'error';
  info: Record<string, { status: string }>;
  error: Record<string, { status: string; message?: string }>;
}

/** The sample application (its /health routes) on fresh directories, with `env`. */
async function startSample(env: { TUS_REDIS_URL?: string } = {}) {
  const { app, root } = await startSampleApp(env, 'tussi-health-');
  return { app, dirs: { uploadDir: join(root, 'uploads'), completedDir: join(root, 'completed') } };
}

async function health(app: TestApp, path = '/health') {
  const res = await app.request({ method: 'GET', path });
  return { status: res.status, body: JSON.parse(res.body.toString()) as HealthBody };
}

forEachPlatform(() => {
  describe('health (the sample, @nestjs/terminus)', () => {
    let app: TestApp;
    let dirs: { uploadDir: string; completedDir: string };
    beforeAll(async () => {
      ({ app, dirs } = await startSample());
    });
    afterAll(async () => {
      await app?.close();
    });

    it('200 when healthy, every check named; /health/live answers', async () => {
      const { status, body } = await health(app);
      expect(status).toBe(200);
      expect(body.status).toBe('ok');
      for (const key of ['tus_upload_dir', 'tus_completed_dir', 'tus_disk', 'tus_accepting']) {
        expect({ key, status: body.info[key]?.status }).toEqual({ key, status: 'up' });
      }
      expect(body.info.tus_redis).toBeUndefined();
      expect((await health(app, '/health/live')).status).toBe(200);
    });

    it('503 naming the upload directory when it is gone; 200 again once it is back', async () => {
      await rm(dirs.uploadDir, { recursive: true, force: true });
      try {
        const { status, body } = await health(app);
        expect(status).toBe(503);
        expect(body.status).toBe('error');
        // (The free space of a directory that is gone cannot be read either.)
        expect(Object.keys(body.error).sort()).toEqual(['tus_disk', 'tus_upload_dir']);
        expect(body.error.tus_upload_dir.message).toMatch(/ENOENT/);
        expect(body.info.tus_completed_dir.status).toBe('up');
        // Liveness is not readiness: the process is fine.
        expect((await health(app, '/health/live')).status).toBe(200);
      } finally {
        await mkdir(dirs.uploadDir, { recursive: true });
      }
      expect((await health(app)).status).toBe(200);
    });

    it('readiness turns 503 when the application starts shutting down', async () => {
      const indicator = app.app.get(TusHealthIndicator);
      expect(indicator.readiness()).toEqual({ tus_accepting: { status: 'up' } });
      // What beforeApplicationShutdown does (checked on a real close below).
      indicator.markShuttingDown();
      const { status, body } = await health(app);
      expect(status).toBe(503);
      expect(body.error.tus_accepting).toEqual({ status: 'down', message: 'shutting down' });
    });
  });
});

describe('health checks of the module', () => {
  let app: TestApp | undefined;
  afterEach(async () => {
    await app?.close();
    app = undefined;
  });

  it('the disk is down below minFreeBytes', async () => {
    const dirs = await tempDirs('tussi-health-disk-');
    app = await startApp(
      [
        TusModule.forRoot({
          uploadDir: dirs.uploadDir,
          completedDir: dirs.completedDir,
          health: { minFreeBytes: 2 ** 60 },
        }),
      ],
      { ...dirs, removeOnClose: dirs.root },
    );
    const result = await app.app.get(TusHealthIndicator).check();
    expect(result.tus_disk.status).toBe('down');
    expect(String(result.tus_disk.message)).toMatch(/bytes free, below/);
    expect(result.tus_upload_dir.status).toBe('up');
  });

  it('closing the application turns readiness down before the server closes', async () => {
    const dirs = await tempDirs('tussi-health-close-');
    const started = await startApp(
      [TusModule.forRoot({ uploadDir: dirs.uploadDir, completedDir: dirs.completedDir })],
      { ...dirs, removeOnClose: dirs.root },
    );
    const indicator = started.app.get(TusHealthIndicator);
    let readyWhenServerClosed: boolean | undefined;
    started.server.once('close', () => {
      readyWhenServerClosed = !indicator.isShuttingDown;
    });
    await started.close();
    expect(indicator.isShuttingDown).toBe(true);
    expect(readyWhenServerClosed).toBe(false);
  });
});

describe('health with Redis', () => {
  let redis: RedisServer;
  let app: TestApp;
  beforeAll(async () => {
    redis = await startRedisServer();
    ({ app } = await startSample({ TUS_REDIS_URL: redis.url }));
  });
  afterAll(async () => {
    await app?.close();
    await redis?.dispose();
  });

  it('503 naming Redis while it is stopped; 200 once it is back', async () => {
    const healthy = await health(app);
    expect(healthy.status).toBe(200);
    expect(healthy.body.info.tus_redis.status).toBe('up');
    await redis.stop();
    try {
      const { status, body } = await health(app);
      expect(status).toBe(503);
      expect(Object.keys(body.error)).toEqual(['tus_redis']);
    } finally {
      await redis.start();
    }
    const deadline = Date.now() + 15_000;
    let back = await health(app);
    while (back.status !== 200 && Date.now() < deadline) {
      await new Promise((r) => setTimeout(r, 250));
      back = await health(app);
    }
    expect(back.status).toBe(200);
  }, 40_000);
});

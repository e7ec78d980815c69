import { afterAll, beforeAll, describe, expect, it } from '@jest/globals';
import { createHash, randomBytes } from 'node:crypto';
import { readdir, rm } from 'node:fs/promises';
import { join } from 'node:path';
import { tempDirs } from '../support/app.js';
import { ensureBuilt, memoryOf } from '../support/child-server.js';
import { sha256File } from '../support/http.js';
import { startRobustServer, type RobustChild } from '../support/robust-child.js';
import { KiB, MiB, createOn, patchOn } from '../support/robust-http.js';

/**
 * Load: 200 uploads at once (1 MiB each, four 256 KiB PATCHes each) against one server child
 * process (dist/, fsync on), in four waves. Every upload completes with no error and the exact bytes;
 * the server's RSS, sampled from /proc every 20 ms, stays flat: its peak under a generous
 * bound, and the peaks of the waves after the second close to the second's (no growth per
 * upload). The first wave is the warm-up: the heap grows to its working size then or in the next
 * wave (tens of MiB more when the machine is loaded and the uploads overlap longer).
 */
const UPLOADS = 200;
const SIZE = 1 * MiB;
const PATCH_SIZE = 256 * KiB;
const PEAK_BOUND = 300 * MiB;
/** A later wave may peak a little higher (allocator noise), not by a leak's worth. */
const LATER_WAVE_MARGIN = 80 * MiB;
const WAVES = 4;
const POOL = randomBytes(4 * MiB);

describe(`load: ${UPLOADS} concurrent uploads against one server process`, () => {
  let dirs: Awaited<ReturnType<typeof tempDirs>>;
  let server: RobustChild;

  beforeAll(async () => {
    await ensureBuilt();
    dirs = await tempDirs('tussi-load-');
    server = await startRobustServer(dirs.uploadDir, dirs.completedDir, { fsync: true });
  });
  afterAll(async () => {
    await server?.stop();
    if (dirs) await rm(dirs.root, { recursive: true, force: true });
  });

  /** One wave: every upload created, then sent in PATCHes, all uploads concurrently. */
  async function wave(): Promise<{
    failures: string[];
    uploads: Array<{ id: string; sha: string }>;
  }> {
    const failures: string[] = [];
    const uploads = await Promise.all(
      Array.from({ length: UPLOADS }, async (_, i) => {
        const start = (i * 7919 * 13) % (POOL.length - SIZE);
        const data = POOL.subarray(start, start + SIZE);
        const sha = createHash('sha256').update(data).digest('hex');
        let id = '';
        try {
          id = await createOn(server.baseUrl, SIZE);
          for (let offset = 0; offset < SIZE; offset += PATCH_SIZE) {
            const res = await patchOn(
              server.baseUrl,
              id,
              offset,
              data.subarray(offset, offset + PATCH_SIZE),
              {
                timeoutMs: 60_000,
              },
            );
            if (
              res.status !== 204 ||
              res.headers['upload-offset'] !== String(offset + PATCH_SIZE)
            ) {
              failures.push(`${id} at ${offset}: ${res.status} ${res.body.toString()}`);
              break;
            }
          }
        } catch (e) {
          failures.push(`upload ${i}: ${(e as Error).message}`);
        }
        return { id, sha };
      }),
    );
    return { failures, uploads };
  }

  it('every upload completes with its exact bytes and the RSS stays flat', async () => {
    const { pid } = server;
    const idle = (await memoryOf(pid)).rss;
    let peak = idle;
    const sampler = setInterval(() => {
      memoryOf(pid).then(
        (m) => (peak = Math.max(peak, m.rss)),
        () => {},
      );
    }, 20);
    const peaks: number[] = [];
    const started = Date.now();
    const results = [];
    try {
      for (let i = 0; i < WAVES; i++) {
        peak = (await memoryOf(pid)).rss;
        results.push(await wave());
        peaks.push(Math.max(peak, (await memoryOf(pid)).rss));
      }
    } finally {
      clearInterval(sampler);
    }
    const { hwm } = await memoryOf(pid);
    const report = {
      uploads: UPLOADS * WAVES,
      seconds: (Date.now() - started) / 1000,
      idleRssMiB: +(idle / MiB).toFixed(1),
      peakRssMiB: peaks.map((p) => +(p / MiB).toFixed(1)),
      vmHwmMiB: +(hwm / MiB).toFixed(1),
    };
    console.log(`load suite: ${JSON.stringify(report)}`);

    expect(results.flatMap((r) => r.failures)).toEqual([]);
    for (const { uploads } of results) {
      for (const { id, sha } of uploads) {
        expect(await sha256File(join(dirs.completedDir, id))).toBe(sha);
      }
    }
    // Nothing left in staging: every upload was finalized.
    expect((await readdir(dirs.uploadDir)).filter((n) => !n.startsWith('.'))).toEqual([]);
    expect({ peakUnderBound: Math.max(...peaks, hwm) < PEAK_BOUND, report }).toEqual({
      peakUnderBound: true,
      report,
    });
    const warm = peaks[1];
    expect({ flat: peaks.slice(2).every((p) => p < warm + LATER_WAVE_MARGIN), report }).toEqual({
      flat: true,
      report,
    });
    expect(server.alive()).toBe(true);
    expect(server.errors()).toEqual([]);
  }, 180_000);
});

import { afterAll, beforeAll, describe, expect, it } from '@jest/globals';
import { randomBytes } from 'node:crypto';
import { readFile, rm } from 'node:fs/promises';
import { join } from 'node:path';
import { OCTETS, TUS, forEachPlatform, tempDirs } from '../support/app.js';
import { ensureBuilt } from '../support/child-server.js';
import { pollUntil, sha256 } from '../support/http.js';
import { startRobustServer, type RobustChild } from '../support/robust-child.js';
import { createOn, tusRequest } from '../support/robust-http.js';

const KiB = 1024;
const UPLOADS = 8;
const SIZE = 768 * KiB;
/** What each client sends before its connection stalls (a phone gone quiet, a long chunk). */
const SENT = 320 * KiB;
const SHUTDOWN_TIMEOUT_MS = 1500;

forEachPlatform(() => {
  describe('SIGTERM during concurrent uploads (graceful shutdown)', () => {
    let dirs: Awaited<ReturnType<typeof tempDirs>>;
    const servers: RobustChild[] = [];
    beforeAll(async () => {
      await ensureBuilt();
      dirs = await tempDirs('tussi-shutdown-');
    });
    afterAll(async () => {
      for (const s of servers) await s.kill();
      if (dirs) await rm(dirs.root, { recursive: true, force: true });
    });

    it('answers 503 to new requests, cuts the PATCHes at the deadline with their bytes kept, exits 0; a second process finishes every upload', async () => {
      const options = {
        fsync: true,
        janitor: false as const,
        shutdownTimeoutMs: SHUTDOWN_TIMEOUT_MS,
        // Only what the shutdown keeps, not a checkpoint, may carry the bytes.
        checkpointBytes: 0,
        checkpointIntervalMs: 0,
      };
      const first = await startRobustServer(dirs.uploadDir, dirs.completedDir, options);
      servers.push(first);
      const data = Array.from({ length: UPLOADS }, () => randomBytes(SIZE));
      const ids = await Promise.all(data.map(() => createOn(first.baseUrl, SIZE)));
      const patches = ids.map((id, i) =>
        tusRequest(first.baseUrl, {
          method: 'PATCH',
          path: `/files/${id}`,
          headers: { ...TUS, 'Content-Type': OCTETS, 'Upload-Offset': '0' },
          body: data[i],
          stallAfterBytes: SENT,
          timeoutMs: 20_000,
        }),
      );
      // Every PATCH is under way (its bytes arrived) before the signal.
      await new Promise((r) => setTimeout(r, 500));

      const signalled = Date.now();
      first.child.kill('SIGTERM');
      // New requests are refused at once, with Retry-After, while the PATCHes drain.
      const refused = await pollUntil(
        () =>
          tusRequest(first.baseUrl, {
            method: 'POST',
            path: '/files',
            headers: { ...TUS, 'Upload-Length': '1' },
          }),
        (r) => r.status === 503,
        { timeoutMs: 1000, what: 'a 503 to a new upload' },
      );
      expect(refused.headers['retry-after']).toBe('5');
      expect(refused.body.toString()).toContain('ERR_SHUTTING_DOWN');

      const exit = await first.exited;
      const took = Date.now() - signalled;
      expect(exit).toEqual({ code: 0, signal: null });
      expect(took).toBeGreaterThanOrEqual(SHUTDOWN_TIMEOUT_MS - 100);
      expect(took).toBeLessThan(SHUTDOWN_TIMEOUT_MS + 3000);
      // Each stalled PATCH was answered 503 (or lost its connection with the process).
      for (const res of await Promise.all(patches)) {
        expect([503, 0]).toContain(res.status);
      }
      expect(first.errors()).toEqual([]);

      // A second process over the same directories: every upload resumes where the bytes end.
      const second = await startRobustServer(dirs.uploadDir, dirs.completedDir, options);
      servers.push(second);
      for (const [i, id] of ids.entries()) {
        const head = await tusRequest(second.baseUrl, {
          method: 'HEAD',
          path: `/files/${id}`,
          headers: TUS,
        });
        const offset = Number(head.headers['upload-offset']);
        // The bytes received before the cut are kept: nothing to send twice.
        expect({ i, offset }).toEqual({ i, offset: SENT });
        const rest = await tusRequest(second.baseUrl, {
          method: 'PATCH',
          path: `/files/${id}`,
          headers: { ...TUS, 'Content-Type': OCTETS, 'Upload-Offset': String(offset) },
          body: data[i].subarray(offset),
        });
        expect(rest.status).toBe(204);
        expect(rest.headers['upload-offset']).toBe(String(SIZE));
        const stored = await readFile(join(dirs.completedDir, id));
        expect(sha256(stored)).toBe(sha256(data[i]));
      }
      expect(second.errors()).toEqual([]);
    }, 60_000);
  });
});

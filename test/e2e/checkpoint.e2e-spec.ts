import { afterAll, beforeAll, describe, expect, it } from '@jest/globals';
import { createHash, randomBytes } from 'node:crypto';
import { open, rm } from 'node:fs/promises';
import { join } from 'node:path';
import {
  OCTETS,
  TUS,
  createTestApp,
  createUpload,
  forEachPlatform,
  headUpload,
  tempDirs,
  type TestApp,
} from '../support/app.js';
import { ensureBuilt } from '../support/child-server.js';
import { pollUntil, sha256 } from '../support/http.js';
import { startRobustServer, type RobustChild } from '../support/robust-child.js';
import { createOn, tusRequest } from '../support/robust-http.js';

const KiB = 1024;
const MiB = 1024 * KiB;

/** A body that sends `first`, then waits for `release()` before it sends `rest`. */
function pausedBody(first: Buffer, rest: Buffer) {
  let release!: () => void;
  const released = new Promise<void>((resolve) => (release = resolve));
  async function* body(): AsyncGenerator<Buffer> {
    for (let at = 0; at < first.length; at += 64 * KiB) yield first.subarray(at, at + 64 * KiB);
    await released;
    for (let at = 0; at < rest.length; at += 64 * KiB) yield rest.subarray(at, at + 64 * KiB);
  }
  return { body: body(), release };
}

async function fileBytes(path: string, length: number): Promise<Buffer> {
  const handle = await open(path, 'r');
  try {
    const buffer = Buffer.alloc(length);
    await handle.read(buffer, 0, length, 0);
    return buffer;
  } finally {
    await handle.close();
  }
}

forEachPlatform(() => {
  describe('offsets committed during a long PATCH (checkpoints)', () => {
    let app: TestApp;
    beforeAll(async () => {
      app = await createTestApp({ checkpointBytes: 256 * KiB, checkpointIntervalMs: 0 });
    });
    afterAll(async () => {
      await app?.close();
    });

    /** One PATCH of all of `data` at offset 0, its body paused after `first` bytes. */
    function pausedPatch(id: string, data: Buffer, first: number, extra = {}) {
      const { body, release } = pausedBody(data.subarray(0, first), data.subarray(first));
      const patch = app.request({
        method: 'PATCH',
        path: `/files/${id}`,
        headers: {
          ...TUS,
          'Content-Type': OCTETS,
          'Upload-Offset': '0',
          'Content-Length': String(data.length),
          ...extra,
        },
        body,
      });
      return { patch, release };
    }

    it('HEAD sees the durable bytes of a PATCH still under way; the PATCH ends where it should', async () => {
      const data = randomBytes(2 * MiB);
      const { id } = await createUpload(app, data.length);
      const { patch, release } = pausedPatch(id, data, MiB);
      // While the body is paused after 1 MiB: at least the last checkpoint (768 KiB) is counted.
      const mid = await pollUntil(
        () => headUpload(app, id),
        (h) => h.offset >= 768 * KiB,
        { timeoutMs: 10_000, what: 'a checkpointed offset' },
      );
      expect(mid.offset).toBeLessThanOrEqual(MiB);
      release();
      const res = await patch;
      expect(res.status).toBe(204);
      expect(res.headers['upload-offset']).toBe(String(data.length));
      expect(app.logged.errors).toEqual([]);
    });

    it('no checkpoint for a body with a checksum: its bytes count only once verified', async () => {
      const data = randomBytes(MiB);
      const { id } = await createUpload(app, 2 * MiB);
      const digest = createHash('sha1').update(data).digest('base64');
      const { patch, release } = pausedPatch(id, data, 768 * KiB, {
        'Upload-Checksum': `sha1 ${digest}`,
      });
      await new Promise((r) => setTimeout(r, 500));
      expect((await headUpload(app, id)).offset).toBe(0);
      release();
      expect((await patch).headers['upload-offset']).toBe(String(MiB));
    });
  });
});

describe('a SIGKILL during one long PATCH', () => {
  let dirs: Awaited<ReturnType<typeof tempDirs>>;
  let server: RobustChild | undefined;
  beforeAll(async () => {
    await ensureBuilt();
    dirs = await tempDirs('tussi-checkpoint-kill-');
  });
  afterAll(async () => {
    await server?.kill();
    if (dirs) await rm(dirs.root, { recursive: true, force: true });
  });

  it('loses at most the bytes since the last checkpoint: the client resumes from there', async () => {
    const options = { fsync: true, janitor: false as const, checkpointIntervalMs: 200 };
    server = await startRobustServer(dirs.uploadDir, dirs.completedDir, options);
    const data = randomBytes(4 * MiB);
    const id = await createOn(server.baseUrl, data.length);
    // One PATCH for the whole file (tus-js-client's chunkSize: Infinity), stalled after 3 MiB.
    void tusRequest(server.baseUrl, {
      method: 'PATCH',
      path: `/files/${id}`,
      headers: { ...TUS, 'Content-Type': OCTETS, 'Upload-Offset': '0' },
      body: data,
      stallAfterBytes: 3 * MiB,
      timeoutMs: 30_000,
    });
    const head = (base: string) =>
      tusRequest(base, { method: 'HEAD', path: `/files/${id}`, headers: TUS }).then((r) =>
        Number(r.headers['upload-offset'] ?? -1),
      );
    const live = server;
    await pollUntil(
      () => head(live.baseUrl),
      (o) => o >= 3 * MiB,
      {
        timeoutMs: 15_000,
        what: 'the stalled PATCH checkpointed',
      },
    );
    await server.kill();

    server = await startRobustServer(dirs.uploadDir, dirs.completedDir, options);
    const offset = await head(server.baseUrl);
    // Before checkpoints, the resume point went back to 0.
    expect(offset).toBe(3 * MiB);
    expect(sha256(await fileBytes(join(dirs.uploadDir, id), offset))).toBe(
      sha256(data.subarray(0, offset)),
    );
    const rest = await tusRequest(server.baseUrl, {
      method: 'PATCH',
      path: `/files/${id}`,
      headers: { ...TUS, 'Content-Type': OCTETS, 'Upload-Offset': String(offset) },
      body: data.subarray(offset),
    });
    expect(rest.status).toBe(204);
    expect(rest.headers['upload-offset']).toBe(String(data.length));
    expect(server.errors()).toEqual([]);
  }, 60_000);
});

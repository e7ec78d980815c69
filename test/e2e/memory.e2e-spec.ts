import { afterAll, beforeAll, describe, expect, it } from '@jest/globals';
import { createHash, randomBytes } from 'node:crypto';
import { rm } from 'node:fs/promises';
import { TUS, OCTETS, completedPaths, entriesOf, idOf, tempDirs } from '../support/app.js';
import {
  ensureBuilt,
  memoryOf,
  startChildServer,
  type ChildServer,
} from '../support/child-server.js';
import { request, sha256File } from '../support/http.js';

/**
 * A PATCH body is streamed to disk, never held: the server's peak RSS while it takes a 256 MiB
 * PATCH stays near its idle RSS. The server runs in a child process so its RSS is its own.
 */
const MiB = 1024 * 1024;
const SIZE = 256 * MiB;
const MARGIN = 96 * MiB;

/** SIZE bytes, generated a MiB at a time (never held whole), hashed as they go. */
function generated(hash: ReturnType<typeof createHash>): AsyncGenerator<Buffer> {
  const seed = randomBytes(MiB);
  return (async function* () {
    for (let i = 0; i < SIZE / MiB; i++) {
      const chunk = Buffer.from(seed);
      chunk.writeUInt32BE(i, 0);
      chunk.writeUInt32BE(i ^ 0x5a5a5a5a, MiB - 4);
      hash.update(chunk);
      yield chunk;
    }
  })();
}

describe('memory while streaming a 256 MiB PATCH', () => {
  let dirs: Awaited<ReturnType<typeof tempDirs>>;
  let server: ChildServer | undefined;

  beforeAll(async () => {
    await ensureBuilt();
    dirs = await tempDirs('tussi-memory-');
    server = await startChildServer(dirs.uploadDir, dirs.completedDir);
  });
  afterAll(async () => {
    await server?.stop();
    if (dirs) await rm(dirs.root, { recursive: true, force: true });
  });

  async function create(length: number): Promise<string> {
    const res = await request(server!.baseUrl, {
      method: 'POST',
      path: '/files',
      headers: { ...TUS, 'Upload-Length': String(length) },
    });
    expect(res.status).toBe(201);
    return idOf(String(res.headers.location));
  }

  it('keeps peak RSS under idle RSS + 96 MiB and stores the exact bytes', async () => {
    const { baseUrl, pid } = server!;
    // Warm the code paths first so the baseline is the server's working set, not its start-up.
    const warm = await create(4 * MiB);
    const warmed = await request(baseUrl, {
      method: 'PATCH',
      path: `/files/${warm}`,
      headers: { ...TUS, 'Content-Type': OCTETS, 'Upload-Offset': '0' },
      body: randomBytes(4 * MiB),
    });
    expect(warmed.status).toBe(204);
    const baseline = (await memoryOf(pid)).rss;

    const id = await create(SIZE);
    let sampled = baseline;
    const sampler = setInterval(() => {
      memoryOf(pid).then(
        (m) => (sampled = Math.max(sampled, m.rss)),
        () => {},
      );
    }, 25);
    const hash = createHash('sha256');
    let res;
    try {
      res = await request(baseUrl, {
        method: 'PATCH',
        path: `/files/${id}`,
        headers: {
          ...TUS,
          'Content-Type': OCTETS,
          'Upload-Offset': '0',
          'Content-Length': String(SIZE),
        },
        body: generated(hash),
        timeoutMs: 45_000,
      });
    } finally {
      clearInterval(sampler);
    }
    const { hwm } = await memoryOf(pid);
    const report = `baseline ${(baseline / MiB).toFixed(1)} MiB, sampled peak ${(sampled / MiB).toFixed(1)} MiB, VmHWM ${(hwm / MiB).toFixed(1)} MiB`;

    expect(res.status).toBe(204);
    expect(res.headers['upload-offset']).toBe(String(SIZE));
    expect(res.bytesSent).toBe(SIZE);
    // A server that buffered the body would need at least SIZE more.
    const bound = baseline + MARGIN;
    expect({ peakUnderBound: hwm < bound && sampled < bound, report }).toEqual({
      peakUnderBound: true,
      report,
    });

    // The last PATCH finalized the upload: its bytes are in completedDir, none left in staging.
    expect(await sha256File(completedPaths(dirs, id).data)).toBe(hash.digest('hex'));
    expect(await entriesOf(dirs.uploadDir, id)).toEqual([]);
    expect(server!.stderr()).not.toMatch(/ERROR/);
  });
});

import { afterAll, beforeAll, describe, expect, it } from '@jest/globals';
import { createHash, randomBytes } from 'node:crypto';
import { mkdir, open, readdir, readFile, rm, statfs } from 'node:fs/promises';
import { join } from 'node:path';
import { tempDirs, uploadEntries } from '../support/app.js';
import { forEachPlatform } from '../support/app.js';
import { ensureBuilt } from '../support/child-server.js';
import { sha256File } from '../support/http.js';
import {
  startRobustServer,
  type RobustChild,
  type RobustServerOptions,
} from '../support/robust-child.js';
import {
  KiB,
  MiB,
  OCTET_STREAM,
  RawConnection,
  TUS_HEADERS,
  answersOptions,
  createOn,
  filePrefix,
  headOn,
  mountTmpfs,
  patchOn,
  probeMount,
  randomInt,
  remount,
  skipRootRequested,
  sleep,
  tusRequest,
  unmountQuietly,
} from '../support/robust-http.js';

/**
 * Faults: clients that go away at every stage of a request, slowloris clients, a full disk, a
 * read-only or vanished upload directory. The server runs as a child process (dist/, fsync on):
 * whatever happens it must keep running (still answer OPTIONS), keep its state consistent
 * (HEAD's offset is what the data file holds) and let every upload resume to completion.
 */
const sha = (data: Buffer) => createHash('sha256').update(data).digest('hex');
let faultsInjected = 0;

/** HEAD until the offset settles at `expected` (a cut body is committed after the cut). */
async function offsetSettles(baseUrl: string, id: string, expected: number): Promise<number> {
  const deadline = Date.now() + 5000;
  let offset = NaN;
  while (Date.now() < deadline) {
    offset = (await headOn(baseUrl, id)).offset;
    if (offset === expected) return offset;
    await sleep(20);
  }
  return offset;
}

/** The head of a PATCH as raw text, for byte-level clients. */
const patchHead = (id: string, offset: number, length: number, extra = '') =>
  `PATCH /files/${id} HTTP/1.1\r\nHost: 127.0.0.1\r\nTus-Resumable: 1.0.0\r\n` +
  `Content-Type: ${OCTET_STREAM}\r\nUpload-Offset: ${offset}\r\nContent-Length: ${length}\r\n` +
  `Connection: close\r\n${extra}\r\n`;

afterAll(() => {
  console.log(`faults suite: ${faultsInjected} faults injected`);
});

/** A server child over fresh temp dirs for the enclosing describe: up before its tests, gone after. */
function serverOverTempDirs(prefix: string, options: RobustServerOptions) {
  const fx = {} as { dirs: Awaited<ReturnType<typeof tempDirs>>; server: RobustChild };
  beforeAll(async () => {
    await ensureBuilt();
    fx.dirs = await tempDirs(prefix);
    fx.server = await startRobustServer(fx.dirs.uploadDir, fx.dirs.completedDir, options);
  });
  afterAll(async () => {
    await fx.server?.stop();
    if (fx.dirs) await rm(fx.dirs.root, { recursive: true, force: true });
  });
  return fx;
}

const mountUnavailable = await probeMount();
if (mountUnavailable && skipRootRequested) {
  console.warn(
    `faults e2e: full-disk and read-only tests skipped (TUS_SKIP_ROOT_TESTS=1): ${mountUnavailable}`,
  );
}
const describeRoot = mountUnavailable && skipRootRequested ? describe.skip : describe;
const requireMount = () => {
  if (mountUnavailable) {
    throw new Error(
      `${mountUnavailable}. These tests need root to mount a tmpfs; set TUS_SKIP_ROOT_TESTS=1 to skip them.`,
    );
  }
};

forEachPlatform(() => {
  describe('clients that disconnect at every stage', () => {
    const fx = serverOverTempDirs('tussi-faults-', { fsync: true });

    /** The upload holds exactly `data`'s first `offset` bytes; then it completes by resuming. */
    async function expectConsistentThenComplete(id: string, data: Buffer, offset: number) {
      expect((await headOn(fx.server.baseUrl, id)).offset).toBe(offset);
      expect(
        (await filePrefix(join(fx.dirs.uploadDir, id), offset)).equals(data.subarray(0, offset)),
      ).toBe(true);
      // The lock was let go: the next PATCH is served at once, not refused with 423.
      const resumed = await patchOn(fx.server.baseUrl, id, offset, data.subarray(offset));
      expect(resumed.status).toBe(204);
      expect(resumed.headers['upload-offset']).toBe(String(data.length));
      expect(await sha256File(join(fx.dirs.completedDir, id))).toBe(sha(data));
    }

    it('a request line cut in the middle', async () => {
      const id = await createOn(fx.server.baseUrl, 1000);
      const c = new RawConnection(fx.server.port);
      await c.write(`PATCH /files/${id} HT`);
      c.destroy();
      faultsInjected++;
      await expectConsistentThenComplete(id, randomBytes(1000), 0);
    });

    it('headers cut in the middle, and headers sent whole with no body', async () => {
      const data = randomBytes(1000);
      const id = await createOn(fx.server.baseUrl, data.length);
      const half = new RawConnection(fx.server.port);
      await half.write(patchHead(id, 0, 1000).slice(0, 60));
      half.destroy();
      const whole = new RawConnection(fx.server.port);
      await whole.write(patchHead(id, 0, 1000));
      await sleep(100); // the server has begun the PATCH (lock taken, body awaited)
      whole.destroy();
      faultsInjected += 2;
      expect(await offsetSettles(fx.server.baseUrl, id, 0)).toBe(0);
      await expectConsistentThenComplete(id, data, 0);
    });

    it('a body cut in the middle keeps the bytes received', async () => {
      const data = randomBytes(2 * MiB + 17);
      const id = await createOn(fx.server.baseUrl, data.length);
      const cut = await patchOn(fx.server.baseUrl, id, 0, data, { abortAfterBytes: MiB + 5 });
      expect(cut.status).toBe(0);
      faultsInjected++;
      expect(await offsetSettles(fx.server.baseUrl, id, MiB + 5)).toBe(MiB + 5);
      await expectConsistentThenComplete(id, data, MiB + 5);
    });

    it('a body cut just before its last byte', async () => {
      const data = randomBytes(300 * KiB);
      const id = await createOn(fx.server.baseUrl, data.length);
      await patchOn(fx.server.baseUrl, id, 0, data, { abortAfterBytes: data.length - 1 });
      faultsInjected++;
      expect(await offsetSettles(fx.server.baseUrl, id, data.length - 1)).toBe(data.length - 1);
      // Not finalized: the last byte is missing.
      expect(await readdir(fx.dirs.completedDir)).not.toContain(id);
      await expectConsistentThenComplete(id, data, data.length - 1);
    });

    it('a creation-with-upload cut mid-body leaves a consistent upload', async () => {
      const data = randomBytes(256 * KiB);
      const before = new Set(await readdir(fx.dirs.uploadDir));
      const c = new RawConnection(fx.server.port);
      await c.write(
        `POST /files HTTP/1.1\r\nHost: 127.0.0.1\r\nTus-Resumable: 1.0.0\r\n` +
          `Upload-Length: ${data.length}\r\nContent-Type: ${OCTET_STREAM}\r\n` +
          `Content-Length: ${data.length}\r\n\r\n`,
      );
      await c.write(data.subarray(0, 100 * KiB));
      c.destroy();
      faultsInjected++;
      let id: string | undefined;
      for (let i = 0; i < 100 && !id; i++) {
        id = (await readdir(fx.dirs.uploadDir)).find((n) => n.endsWith('.meta') && !before.has(n));
        if (!id) await sleep(20);
      }
      expect(id).toBeDefined();
      id = id!.slice(0, -'.meta'.length);
      const offset = await offsetSettles(fx.server.baseUrl, id, 100 * KiB);
      expect(offset).toBe(100 * KiB);
      await expectConsistentThenComplete(id, data, offset);
    });

    it('40 uploads cut at random points at once: every one consistent and resumable', async () => {
      const uploads = await Promise.all(
        Array.from({ length: 40 }, async () => {
          const data = randomBytes(randomInt(64 * KiB, 1 * MiB));
          const id = await createOn(fx.server.baseUrl, data.length);
          return { id, data, cutAt: randomInt(0, data.length - 1) };
        }),
      );
      await Promise.all(
        uploads.map((u) =>
          patchOn(fx.server.baseUrl, u.id, 0, u.data, { abortAfterBytes: u.cutAt }),
        ),
      );
      faultsInjected += uploads.length;
      for (const u of uploads) {
        const offset = await offsetSettles(fx.server.baseUrl, u.id, u.cutAt);
        // The server may have read fewer bytes than we handed to our kernel, never more.
        expect(offset).toBeLessThanOrEqual(u.cutAt);
        await expectConsistentThenComplete(u.id, u.data, offset);
      }
    });

    it('kept running all along and logged no failure', async () => {
      expect(await answersOptions(fx.server.baseUrl)).toBe(true);
      expect(fx.server.alive()).toBe(true);
      expect(fx.server.errors()).toEqual([]);
    });
  });

  describe('slowloris', () => {
    const HEADERS_TIMEOUT = 1000;
    const IDLE_TIMEOUT = 1000;
    const fx = serverOverTempDirs('tussi-slowloris-', {
      headersTimeoutMs: HEADERS_TIMEOUT,
      bodyIdleTimeoutMs: IDLE_TIMEOUT,
    });

    it(`headers trickled a byte every 100 ms are cut by headersTimeoutMs (${HEADERS_TIMEOUT} ms)`, async () => {
      const id = await createOn(fx.server.baseUrl, 100);
      const head = patchHead(id, 0, 10) + 'X-Padding: ' + 'a'.repeat(200);
      const c = new RawConnection(fx.server.port, { timeoutMs: 8000 });
      faultsInjected++;
      let sent = 0;
      const trickle = (async () => {
        while (!c.destroyed && sent < head.length) {
          if (!(await c.write(head[sent]))) break;
          sent++;
          await sleep(100);
        }
      })();
      const result = await c.result;
      c.destroy();
      await trickle;
      // Cut (408 or a close) near the timeout, long before the trickle would have ended (~26 s).
      expect(result.timedOut).toBe(false);
      expect([408, 0]).toContain(result.status);
      expect(result.elapsedMs).toBeLessThan(HEADERS_TIMEOUT + 2500);
      expect(result.elapsedMs).toBeGreaterThanOrEqual(HEADERS_TIMEOUT - 50);
      expect((await headOn(fx.server.baseUrl, id)).offset).toBe(0);
    }, 20_000);

    it(`a stalled body is cut after bodyIdleTimeoutMs (${IDLE_TIMEOUT} ms) and its bytes are kept`, async () => {
      const data = randomBytes(100);
      const id = await createOn(fx.server.baseUrl, data.length);
      const c = new RawConnection(fx.server.port, { timeoutMs: 8000 });
      await c.write(patchHead(id, 0, data.length));
      await c.write(data.subarray(0, 10));
      const stalledAt = Date.now();
      faultsInjected++;
      const result = await c.result;
      const cutAfter = Date.now() - stalledAt;
      c.destroy();
      expect(result.timedOut).toBe(false);
      expect(cutAfter).toBeGreaterThanOrEqual(IDLE_TIMEOUT - 50);
      expect(cutAfter).toBeLessThan(IDLE_TIMEOUT + 2500);
      expect(await offsetSettles(fx.server.baseUrl, id, 10)).toBe(10);
      expect((await filePrefix(join(fx.dirs.uploadDir, id), 10)).equals(data.subarray(0, 10))).toBe(
        true,
      );
      const rest = await patchOn(fx.server.baseUrl, id, 10, data.subarray(10));
      expect(rest.status).toBe(204);
    }, 20_000);

    it('a body trickled a byte every 200 ms (slow but moving) is not cut', async () => {
      const data = randomBytes(20);
      const id = await createOn(fx.server.baseUrl, 1000);
      const c = new RawConnection(fx.server.port, { timeoutMs: 15_000 });
      await c.write(patchHead(id, 0, data.length));
      for (const byte of data) {
        await sleep(200);
        expect(await c.write(Buffer.from([byte]))).toBe(true);
      }
      const result = await c.result;
      c.destroy();
      // 4 s in all, four times the idle timeout: moving bytes keep it alive.
      expect(result.status).toBe(204);
      expect(result.headers['upload-offset']).toBe('20');
      expect((await filePrefix(join(fx.dirs.uploadDir, id), 20)).equals(data)).toBe(true);
    }, 20_000);

    it('50 stalled bodies at once do not keep the server from answering others', async () => {
      const ids = await Promise.all(
        Array.from({ length: 50 }, () => createOn(fx.server.baseUrl, 100)),
      );
      const stalled = await Promise.all(
        ids.map(async (id) => {
          const c = new RawConnection(fx.server.port, { timeoutMs: 8000 });
          await c.write(patchHead(id, 0, 100));
          await c.write(Buffer.alloc(5, 1));
          return c;
        }),
      );
      faultsInjected += stalled.length;
      const t = Date.now();
      expect(await answersOptions(fx.server.baseUrl)).toBe(true);
      const fresh = await createOn(fx.server.baseUrl, 3);
      expect((await patchOn(fx.server.baseUrl, fresh, 0, Buffer.from('abc'))).status).toBe(204);
      expect(Date.now() - t).toBeLessThan(IDLE_TIMEOUT);
      const results = await Promise.all(stalled.map((c) => c.result));
      for (const c of stalled) c.destroy();
      expect(results.every((r) => !r.timedOut)).toBe(true);
      for (const id of ids) expect(await offsetSettles(fx.server.baseUrl, id, 5)).toBe(5);
    }, 30_000);

    it('kept running and logged no failure', async () => {
      expect(await answersOptions(fx.server.baseUrl)).toBe(true);
      expect(fx.server.errors()).toEqual([]);
    });
  });

  async function freeBytes(dir: string): Promise<number> {
    const s = await statfs(dir);
    return s.bavail * s.bsize;
  }

  /** Fills the filesystem of `dir` with a file, leaving about `leave` bytes free. */
  async function fill(dir: string, leave: number): Promise<string> {
    const path = join(dir, `filler-${randomBytes(4).toString('hex')}`);
    const handle = await open(path, 'w');
    const block = Buffer.alloc(64 * KiB, 1);
    try {
      for (;;) {
        const free = await freeBytes(dir);
        if (free <= leave) break;
        await handle.write(block.subarray(0, Math.min(block.length, free - leave)));
      }
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== 'ENOSPC') throw e;
    } finally {
      await handle.close();
    }
    return path;
  }

  /**
   * A server child writing to a fresh tmpfs of `size` for the enclosing describe (root only):
   * mounted and started before its tests; stopped, `beforeUnmount` run, unmounted after.
   */
  function serverOverTmpfs(size: string, beforeUnmount?: (mounted: string) => Promise<void>) {
    const fx = {} as {
      mounted?: string;
      uploadDir: string;
      completedDir: string;
      server?: RobustChild;
    };
    beforeAll(async () => {
      requireMount();
      await ensureBuilt();
      fx.mounted = await mountTmpfs(size);
      fx.uploadDir = join(fx.mounted, 'uploads');
      fx.completedDir = join(fx.mounted, 'completed');
      await mkdir(fx.completedDir);
      fx.server = await startRobustServer(fx.uploadDir, fx.completedDir, { fsync: true });
    });
    afterAll(async () => {
      await fx.server?.stop();
      if (fx.mounted) {
        await beforeUnmount?.(fx.mounted);
        await unmountQuietly(fx.mounted);
      }
    });
    return fx;
  }

  describeRoot('a full disk (8 MiB tmpfs)', () => {
    const fx = serverOverTmpfs('8m');

    it('a creation larger than the free space is refused with 507 (space accounting)', async () => {
      const res = await tusRequest(fx.server!.baseUrl, {
        method: 'POST',
        path: '/files',
        headers: { ...TUS_HEADERS, 'Upload-Length': String(Math.floor(7.9 * MiB)) },
      });
      faultsInjected++;
      expect(res.status).toBe(507);
      expect(res.body.toString()).toContain('ERR_INSUFFICIENT_STORAGE');
      expect(await uploadEntries(fx.uploadDir)).toEqual([]);
    });

    it('a deferred-length upload that fills the disk WHILE WRITING: 507, honest offset, then completes', async () => {
      const data = randomBytes(3 * MiB);
      const id = await createOn(fx.server!.baseUrl, 'deferred');
      const filler = await fill(fx.mounted!, 1 * MiB);
      try {
        const refused = await patchOn(fx.server!.baseUrl, id, 0, data);
        faultsInjected++;
        expect(refused.status).toBe(507);
        expect(refused.headers['tus-resumable']).toBe('1.0.0');
        const { status, offset } = await headOn(fx.server!.baseUrl, id);
        expect(status).toBe(200);
        // HEAD claims exactly what is durable: the data file's first `offset` bytes are the source.
        const stored = await filePrefix(join(fx.uploadDir, id), offset);
        expect(stored.length).toBe(offset);
        expect(stored.equals(data.subarray(0, offset))).toBe(true);
        // Store as much as possible: about 1 MiB was free, and what was written is kept.
        expect(offset).toBeGreaterThan(0);
        await rm(filler);
        const rest = await patchOn(fx.server!.baseUrl, id, offset, data.subarray(offset), {
          headers: { 'Upload-Length': String(data.length) },
        });
        expect(rest.status).toBe(204);
        expect(rest.headers['upload-offset']).toBe(String(data.length));
        expect(await sha256File(join(fx.completedDir, id))).toBe(sha(data));
      } finally {
        await rm(filler, { force: true });
        await rm(join(fx.completedDir, id), { force: true });
        await rm(join(fx.completedDir, `${id}.meta`), { force: true });
      }
    });

    it('kept running', async () => {
      expect(await answersOptions(fx.server!.baseUrl)).toBe(true);
      expect(fx.server!.alive()).toBe(true);
    });
  });

  describeRoot('a read-only upload directory (tmpfs remounted ro)', () => {
    let readOnly = false;
    const fx = serverOverTmpfs('16m', async (mounted) => {
      if (readOnly) await remount(mounted, 'rw').catch(() => {});
    });

    it('POST and PATCH answer a clear 5xx with a log line, reads still work, and writes resume after rw', async () => {
      const data = randomBytes(64 * KiB);
      const id = await createOn(fx.server!.baseUrl, data.length);
      expect((await patchOn(fx.server!.baseUrl, id, 0, data.subarray(0, 1000))).status).toBe(204);
      await remount(fx.mounted!, 'ro');
      readOnly = true;
      try {
        const errorsBefore = fx.server!.errors().length;
        const post = await tusRequest(fx.server!.baseUrl, {
          method: 'POST',
          path: '/files',
          headers: { ...TUS_HEADERS, 'Upload-Length': '10' },
        });
        const patch = await patchOn(fx.server!.baseUrl, id, 1000, data.subarray(1000, 2000));
        faultsInjected += 2;
        for (const res of [post, patch]) {
          expect(res.status).toBeGreaterThanOrEqual(500);
          expect(res.status).toBeLessThan(600);
          expect(res.headers['tus-resumable']).toBe('1.0.0');
          expect(res.body.toString()).toMatch(/^ERR_[A-Z_]+: /);
        }
        const head = await headOn(fx.server!.baseUrl, id);
        expect(head.status).toBe(200);
        expect(head.offset).toBe(1000);
        expect(await answersOptions(fx.server!.baseUrl)).toBe(true);
        const logged = fx.server!.errors().slice(errorsBefore).join('\n');
        expect(logged).toMatch(/POST failed.*EROFS/s);
        expect(logged).toMatch(/PATCH failed.*EROFS/s);
      } finally {
        await remount(fx.mounted!, 'rw');
        readOnly = false;
      }
      const rest = await patchOn(fx.server!.baseUrl, id, 1000, data.subarray(1000));
      expect(rest.status).toBe(204);
      expect(await sha256File(join(fx.completedDir, id))).toBe(sha(data));
      expect(fx.server!.alive()).toBe(true);
    });
  });

  describe('an upload directory that vanishes while the server runs', () => {
    const fx = serverOverTempDirs('tussi-vanish-', { fsync: true });

    it('rm -rf uploadDir: a clear 5xx and a log line for a creation, never a crash', async () => {
      const data = randomBytes(10 * KiB);
      const id = await createOn(fx.server.baseUrl, data.length);
      expect((await patchOn(fx.server.baseUrl, id, 0, data.subarray(0, 100))).status).toBe(204);
      await rm(fx.dirs.uploadDir, { recursive: true, force: true });
      faultsInjected++;
      const errorsBefore = fx.server.errors().length;
      const post = await tusRequest(fx.server.baseUrl, {
        method: 'POST',
        path: '/files',
        headers: { ...TUS_HEADERS, 'Upload-Length': '10' },
      });
      expect(post.status).toBeGreaterThanOrEqual(500);
      expect(post.status).toBeLessThan(600);
      expect(post.body.toString()).toMatch(/^ERR_[A-Z_]+: /);
      expect(fx.server.errors().slice(errorsBefore).join('\n')).toMatch(/POST failed.*ENOENT/s);
      // The upload's files are gone: it is unknown now (a 4xx, not a 5xx), on every method.
      expect((await headOn(fx.server.baseUrl, id)).status).toBe(404);
      expect((await patchOn(fx.server.baseUrl, id, 100, data.subarray(100))).status).toBe(404);
      expect(await answersOptions(fx.server.baseUrl)).toBe(true);
      expect(fx.server.alive()).toBe(true);
    });

    it('serves again once the directory is back', async () => {
      await mkdir(fx.dirs.uploadDir, { recursive: true });
      const data = randomBytes(1000);
      const id = await createOn(fx.server.baseUrl, data.length);
      expect((await patchOn(fx.server.baseUrl, id, 0, data)).status).toBe(204);
      expect(await readFile(join(fx.dirs.completedDir, id))).toEqual(data);
      expect(fx.server.alive()).toBe(true);
    });
  });
});

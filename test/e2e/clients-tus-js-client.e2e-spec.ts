import { afterAll, afterEach, beforeAll, describe, expect, it } from '@jest/globals';
import { createReadStream } from 'node:fs';
import { mkdir, open, readdir } from 'node:fs/promises';
import { join } from 'node:path';
import { TUS, idOf } from '../support/app.js';
import { forEachPlatform } from '../support/app.js';
import {
  KiB,
  MiB,
  randomFile,
  startSampleServer,
  withConcurrency,
  type SampleServer,
  type SourceFile,
} from '../support/clients-server.js';
import { startFaultyProxy, type FaultyProxy } from '../support/clients-tcp-proxy.js';
import {
  MemoryUrlStorage,
  deferred,
  findPreviousUploads,
  startUpload,
  summary,
  type UploadRun,
} from '../support/clients-tus-js.js';
import { pollUntil } from '../support/http.js';

const INF = Number.POSITIVE_INFINITY;

/** Whether the staging data file of upload `id` starts with `prefix` (the server has the bytes). */
async function stagedPrefixIs(uploadDir: string, id: string, prefix: Buffer): Promise<boolean> {
  const handle = await open(join(uploadDir, id), 'r').catch(() => undefined);
  if (!handle) return false;
  try {
    const buffer = Buffer.alloc(prefix.length);
    const { bytesRead } = await handle.read(buffer, 0, prefix.length, 0);
    return bytesRead === prefix.length && buffer.equals(prefix);
  } finally {
    await handle.close();
  }
}

forEachPlatform(() => {
  describe('tus-js-client (Node) against the sample app', () => {
    let server: SampleServer;
    let sourceDir: string;
    const proxies: FaultyProxy[] = [];
    let fileNumber = 0;

    beforeAll(async () => {
      server = await startSampleServer({ prefix: 'tussi-clients-tusjs-' });
      sourceDir = join(server.root, 'sources');
      await mkdir(sourceDir);
    });
    afterEach(async () => {
      await Promise.all(proxies.splice(0).map((proxy) => proxy.close()));
    });
    afterAll(async () => {
      await server?.close();
    });

    const source = (size: number, label: string): Promise<SourceFile> =>
      randomFile(sourceDir, `f${String(++fileNumber).padStart(2, '0')}-${label}.bin`, size);

    async function proxy(options: Omit<Parameters<typeof startFaultyProxy>[0], 'targetPort'>) {
      const started = await startFaultyProxy({ targetPort: server.app.port, ...options });
      proxies.push(started);
      return started;
    }

    it('uploads 12 files of 1 B to 8 MiB with chunk sizes from 64 KiB to Infinity', async () => {
      const cases: Array<[size: number, chunkSize: number]> = [
        [1, 64 * KiB],
        [1000, INF],
        [64 * KiB - 1, 64 * KiB],
        [64 * KiB, 64 * KiB],
        [64 * KiB + 1, 64 * KiB],
        [300 * KiB + 3, 256 * KiB],
        [1 * MiB, 1 * MiB],
        [1 * MiB + 7, 64 * KiB],
        [2.5 * MiB, 1 * MiB],
        [4 * MiB - 1, 5 * MiB],
        [5 * MiB + 3, INF],
        [8 * MiB, 512 * KiB],
      ];
      const files = await Promise.all(cases.map(([size]) => source(size, `${size}B`)));
      const runs = await withConcurrency(
        3,
        cases.map(([size, chunkSize], i) => async () => {
          const file = files[i];
          // Half of them from a path (tus-js-client reads slices of the file), half from memory.
          const input = i % 2 === 0 ? createReadStream(file.path) : file.data;
          const run = startUpload(input, {
            endpoint: server.endpoint,
            chunkSize,
            metadata: { filename: file.name, filetype: 'application/octet-stream' },
          });
          await run.done;
          return { run, file, size, chunkSize };
        }),
      );
      for (const { run, size, chunkSize } of runs) {
        const patches = Math.ceil(size / Math.min(chunkSize, size));
        expect(summary(run.exchanges)).toEqual([
          'POST 201',
          ...Array.from({ length: patches }, () => 'PATCH 204'),
        ]);
        const step = Math.min(chunkSize, size);
        expect(run.exchanges.slice(1).map((e) => e.offset)).toEqual(
          Array.from({ length: patches }, (_, k) => k * step),
        );
        expect(run.exchanges.at(-1)!.responseOffset).toBe(size);
        expect(run.chunks).toBe(patches);
        expect(run.retries).toEqual([]);
      }
      for (const { run, file } of runs) {
        await server.expectDelivered(run.upload.url!, {
          sha256: file.sha256,
          length: file.data.length,
          filename: file.name,
        });
      }
    });

    it('uploads an empty file with a creation request alone', async () => {
      const file = await source(0, 'empty');
      const run = startUpload(createReadStream(file.path), {
        endpoint: server.endpoint,
        metadata: { filename: file.name },
      });
      await run.done;
      expect(summary(run.exchanges)).toEqual(['POST 201']);
      await server.expectDelivered(run.upload.url!, {
        sha256: file.sha256,
        length: 0,
        filename: file.name,
      });
    });

    it('filenames of the world: accepted, delivered under a safe name, given back as sent', async () => {
      // [filename sent, name delivered after `{id}-`]
      const names: Array<[string, string]> = [
        ['résumé.pdf', 'résumé.pdf'],
        ['日本.txt', '日本.txt'],
        ['../../x\u202Egpj.exe', 'xgpj.exe'],
      ];
      const files = await Promise.all(names.map((_, i) => source(20 * KiB + i, `world-${i}`)));
      const runs = await Promise.all(
        names.map(async ([filename], i) => {
          const run = startUpload(createReadStream(files[i].path), {
            endpoint: server.endpoint,
            chunkSize: 8 * KiB,
            metadata: { filename, filetype: 'application/octet-stream' },
          });
          await run.done;
          return run;
        }),
      );
      for (const [i, [filename, deliveredAs]] of names.entries()) {
        const run = runs[i];
        expect(summary(run.exchanges)).toEqual(['POST 201', 'PATCH 204', 'PATCH 204', 'PATCH 204']);
        const sent = run.exchanges[0].metadata!;
        expect(sent).toContain(`filename ${Buffer.from(filename).toString('base64')}`);
        await server.expectDelivered(run.upload.url!, {
          sha256: files[i].sha256,
          length: files[i].data.length,
          filename,
          deliveredAs,
          metadata: sent,
        });
      }
      // Each is one plain name in destDir, and nothing else was written: no name with the
      // override, here or in the directory above.
      const ids = runs.map((run) => idOf(run.upload.url!));
      const delivered = (await readdir(server.destDir)).filter((name) =>
        ids.some((id) => name.startsWith(id)),
      );
      expect(delivered.sort()).toEqual(
        ids.flatMap((id, i) => [`${id}-${names[i][1]}`, `${id}-${names[i][1]}.meta`]).sort(),
      );
      const entries = [...(await readdir(server.destDir)), ...(await readdir(server.root))];
      expect(entries.filter((name) => name.includes('\u202E'))).toEqual([]);
    });

    it('resumes with findPreviousUploads() after abort() between two chunks', async () => {
      const file = await source(3 * MiB + 17, 'aborted-between-chunks');
      const urlStorage = new MemoryUrlStorage();
      const options = {
        endpoint: server.endpoint,
        chunkSize: 256 * KiB,
        metadata: { filename: file.name },
        urlStorage,
        removeFingerprintOnSuccess: true,
      };
      const aborted = deferred();
      const first: UploadRun = startUpload(createReadStream(file.path), {
        ...options,
        onChunkComplete: (_size, accepted) => {
          if (accepted >= 1 * MiB) first.upload.abort().then(aborted.resolve, aborted.reject);
        },
      });
      await Promise.race([aborted.promise, first.done]);
      const url = first.upload.url!;
      expect(summary(first.exchanges)).toEqual(['POST 201', ...Array(4).fill('PATCH 204')]);
      // The server kept the four chunks; the URL is remembered under the file's fingerprint.
      const head = await server.app.request({ method: 'HEAD', path: url, headers: { ...TUS } });
      expect(head.headers['upload-offset']).toBe(String(1 * MiB));
      expect([...urlStorage.entries.values()].map((e) => e.uploadUrl)).toEqual([url]);

      // A new client (a new run of the program) finds it and goes on from 1 MiB.
      const previous = await findPreviousUploads(createReadStream(file.path), options);
      expect(previous).toHaveLength(1);
      expect(previous[0]).toMatchObject({ uploadUrl: url, size: file.data.length });
      const second = startUpload(createReadStream(file.path), options, previous[0]);
      await second.done;
      expect(second.upload.url).toBe(url);
      expect(second.exchanges[0]).toMatchObject({ method: 'HEAD', status: 200 });
      expect(second.exchanges.filter((e) => e.method === 'POST')).toEqual([]);
      expect(second.exchanges[1]).toMatchObject({ method: 'PATCH', status: 204, offset: 1 * MiB });
      expect(second.exchanges.at(-1)!.responseOffset).toBe(file.data.length);
      expect(urlStorage.entries.size).toBe(0); // removeFingerprintOnSuccess
      await server.expectDelivered(url, {
        sha256: file.sha256,
        length: file.data.length,
        filename: file.name,
      });
    });

    it('resumes with findPreviousUploads() after abort() in the middle of a single PATCH', async () => {
      const file = await source(6 * MiB + 5, 'aborted-mid-patch');
      // The link goes quiet after ~2 MiB: the PATCH is in flight, the server holds what came.
      const link = await proxy({ afterBytes: 2 * MiB, mode: 'stall' });
      const endpoint = `${link.baseUrl}/files/`;
      const urlStorage = new MemoryUrlStorage();
      const options = {
        endpoint,
        chunkSize: INF,
        metadata: { filename: file.name },
        urlStorage,
        retryDelays: [100, 200, 400, 800, 1600],
      };
      const first = startUpload(file.data, options);
      await link.fired;
      const id = idOf(first.upload.url!);
      await pollUntil(
        () => stagedPrefixIs(server.app.uploadDir, id, file.data.subarray(0, 1 * MiB)),
        (ok) => ok,
        { timeoutMs: 15_000, what: 'the first MiB on the server' },
      );
      await first.upload.abort();

      const previous = await findPreviousUploads(file.data, options);
      expect(previous.map((p) => p.uploadUrl)).toEqual([first.upload.url]);
      const second = startUpload(file.data, options, previous[0]);
      await second.done;
      expect(second.upload.url).toBe(first.upload.url);
      expect(second.exchanges.filter((e) => e.method === 'POST')).toEqual([]);
      // It went on from the bytes the server kept of the cut PATCH (a HEAD that came before the
      // server committed them gets a 409 on its PATCH, then a retry from the right offset).
      const last = second.exchanges.at(-1)!;
      expect(last).toMatchObject({
        method: 'PATCH',
        status: 204,
        responseOffset: file.data.length,
      });
      expect(last.offset).toBeGreaterThanOrEqual(1 * MiB);
      expect(last.offset).toBeLessThanOrEqual(2 * MiB);
      await server.expectDelivered(first.upload.url!, {
        sha256: file.sha256,
        length: file.data.length,
        filename: file.name,
      });
    });

    it('takes over an upload another client stalled on, and goes on from its bytes', async () => {
      const file = await source(4 * MiB, 'locked');
      // Client A's PATCH stalls after ~1 MiB and keeps the upload's lock.
      const link = await proxy({ afterBytes: 1 * MiB, mode: 'stall' });
      const holder = startUpload(file.data, {
        endpoint: `${link.baseUrl}/files/`,
        chunkSize: INF,
        metadata: { filename: file.name },
      });
      await link.fired;
      const url = holder.upload.url!;
      await pollUntil(
        () => stagedPrefixIs(server.app.uploadDir, idOf(url), file.data.subarray(0, 512 * KiB)),
        (ok) => ok,
        { timeoutMs: 15_000, what: 'the first bytes of client A on the server' },
      );
      // Client B on the same URL: client A's body has gone silent, so B's PATCH takes the lock
      // over (A's bytes are kept, A's PATCH answers 423); a B that came before A fell silent long
      // enough gets 423 itself and retries, then takes over.
      holder.done.catch(() => {});
      const contender = startUpload(file.data, {
        uploadUrl: url,
        chunkSize: INF,
        retryDelays: [200, 400, 800, 1600, 3200],
      });
      await contender.done;
      await holder.upload.abort();
      expect(contender.exchanges[0]).toMatchObject({ method: 'HEAD', status: 200 });
      const statuses = contender.exchanges.map((e) => e.status);
      expect(statuses.every((s) => [200, 204, 409, 423].includes(s))).toBe(true);
      const last = contender.exchanges.at(-1)!;
      expect(last).toMatchObject({
        method: 'PATCH',
        status: 204,
        responseOffset: file.data.length,
      });
      expect(last.offset).toBeGreaterThanOrEqual(512 * KiB);
      expect(last.offset).toBeLessThanOrEqual(1 * MiB);
      await server.expectDelivered(url, {
        sha256: file.sha256,
        length: file.data.length,
        filename: file.name,
      });
    });

    it('two clients racing on one upload URL: the loser gets 409, retries, both succeed', async () => {
      const file = await source(4 * MiB + 1234, 'race');
      const created = await server.app.request({
        method: 'POST',
        path: '/files',
        headers: {
          ...TUS,
          'Upload-Length': String(file.data.length),
          'Upload-Metadata': `filename ${Buffer.from(file.name).toString('base64')}`,
        },
      });
      expect(created.status).toBe(201);
      const url = String(created.headers.location);
      // Both clients ask for the offset, then both send their first PATCH from offset 0.
      let headsDone = 0;
      const bothAsked = deferred();
      const racer = () => {
        let first = true;
        return startUpload(file.data, {
          uploadUrl: url,
          chunkSize: 512 * KiB,
          retryDelays: Array(20).fill(20) as number[],
          onBeforeRequest: async (req) => {
            if (req.getMethod() === 'PATCH' && first) {
              first = false;
              await bothAsked.promise;
            }
          },
          onAfterResponse: async (req) => {
            if (req.getMethod() === 'HEAD' && ++headsDone === 2) bothAsked.resolve();
          },
        });
      };
      const runs = [racer(), racer()];
      await Promise.all(runs.map((run) => run.done));
      const all = runs.flatMap((run) => run.exchanges);
      // Exactly one of the two first PATCHes (both at offset 0) won; the other waited for the
      // lock and got 409 (the offset moved), or 423 if the winner held the lock too long.
      const firstPatches = runs.map((run) => run.exchanges.find((e) => e.method === 'PATCH')!);
      expect(firstPatches.map((e) => e.offset)).toEqual([0, 0]);
      const [won, lost] = firstPatches.map((e) => e.status).sort();
      expect(won).toBe(204);
      expect([409, 423]).toContain(lost);
      expect(all.every((e) => [200, 204, 409, 423].includes(e.status))).toBe(true);
      expect(runs.flatMap((run) => run.retries).map((r) => r.status)).toContain(lost);
      // Every byte was written once: the accepted PATCHes tile the file.
      const accepted = all
        .filter((e) => e.method === 'PATCH' && e.status === 204)
        .sort((a, b) => a.offset! - b.offset!);
      let at = 0;
      for (const e of accepted) {
        expect(e.offset).toBe(at);
        at = e.responseOffset!;
      }
      expect(at).toBe(file.data.length);
      await server.expectDelivered(url, {
        sha256: file.sha256,
        length: file.data.length,
        filename: file.name,
      });
      const id = idOf(url);
      expect((await readdir(server.destDir)).filter((name) => name.startsWith(id))).toEqual([
        `${id}-${file.name}`,
        `${id}-${file.name}.meta`,
      ]);
    });

    it.each([
      ['chunkSize Infinity, the server sees a reset', INF, 'rst' as const],
      ['chunkSize 1 MiB, the server sees a FIN', 1 * MiB, 'fin' as const],
    ])('retries after a dropped connection (%s)', async (_name, chunkSize, upstream) => {
      const file = await source(6 * MiB + 99, `dropped-${upstream}`);
      const link = await proxy({ afterBytes: 2.5 * MiB, mode: 'cut', upstream });
      const run = startUpload(file.data, {
        endpoint: `${link.baseUrl}/files/`,
        chunkSize,
        metadata: { filename: file.name },
        retryDelays: [100, 300, 600, 1200, 2400],
      });
      await run.done;
      expect(link.hasFired).toBe(true);
      // The drop made one request fail without a response; tus-js-client asked for the offset
      // again (HEAD) and went on from the server's offset.
      expect(run.retries[0]).toMatchObject({ status: 0 });
      expect(run.retries.every((r) => [0, 409, 423].includes(r.status))).toBe(true);
      const afterDrop = run.exchanges.slice(run.exchanges.findIndex((e) => e.method === 'HEAD'));
      expect(afterDrop[0]).toMatchObject({ method: 'HEAD', status: 200 });
      const resumedAt = afterDrop.find((e) => e.method === 'PATCH' && e.status === 204)!.offset!;
      expect(resumedAt).toBeLessThanOrEqual(2.5 * MiB);
      // With a FIN every forwarded byte reaches the server, which keeps them: the client goes on
      // from inside the cut chunk (2 MiB plus what came of it). A reset may discard what the
      // server had not read yet, so there the offset is only bounded.
      if (upstream === 'fin') expect(resumedAt).toBeGreaterThan(2 * MiB);
      expect(run.exchanges.at(-1)!.responseOffset).toBe(file.data.length);
      await server.expectDelivered(run.upload.url!, {
        sha256: file.sha256,
        length: file.data.length,
        filename: file.name,
      });
    });
  });
});

import { afterAll, beforeAll, describe, expect, it } from '@jest/globals';
import { randomBytes } from 'node:crypto';
import { createReadStream, existsSync } from 'node:fs';
import { open, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import { Upload, type HttpRequest, type HttpResponse } from 'tus-js-client';
import { AppModule } from '../../sample/src/app.module.js';
import { UploadRecord } from '../../src/index.js';
import {
  TUS,
  completedPaths,
  entriesOf,
  idOf,
  startApp,
  tempDirs,
  type TestApp,
  forEachPlatform,
} from '../support/app.js';
import { pollUntil, sha256, sha256File } from '../support/http.js';

const KiB = 1024;
const MiB = 1024 * KiB;

interface Exchange {
  method: string;
  status: number;
  tusResumable: string | undefined;
  /** `Upload-Offset` the request sent (PATCH). */
  offset: string | undefined;
}

/** Runs one tus-js-client upload to completion; resolves with its URL and every exchange. */
function upload(
  input: Buffer | NodeJS.ReadableStream,
  options: ConstructorParameters<typeof Upload>[1] & {
    /** Once this many bytes are handed to the socket and `abortWhen(url)` holds, abort. */
    abortAfterBytes?: number;
    abortWhen?: (url: string) => Promise<boolean>;
  },
): Promise<{ url: string; exchanges: Exchange[]; chunks: number; aborted: boolean }> {
  const { abortAfterBytes, abortWhen = async () => true, ...tusOptions } = options;
  let aborting = false;
  const exchanges: Exchange[] = [];
  let chunks = 0;
  return new Promise((resolve, reject) => {
    const client: Upload = new Upload(input as Buffer, {
      retryDelays: [],
      ...tusOptions,
      onAfterResponse: (req: HttpRequest, res: HttpResponse) => {
        exchanges.push({
          method: req.getHeader('X-HTTP-Method-Override') ?? req.getMethod(),
          status: res.getStatus(),
          tusResumable: res.getHeader('Tus-Resumable'),
          offset: req.getHeader('Upload-Offset'),
        });
      },
      onChunkComplete: () => {
        chunks++;
      },
      onProgress: (sent) => {
        if (abortAfterBytes === undefined || sent < abortAfterBytes || aborting) return;
        aborting = true;
        pollUntil(
          () => abortWhen(client.url ?? ''),
          (ok) => ok,
          { what: 'the moment to abort' },
        )
          .then(() => client.abort())
          .then(() => resolve({ url: client.url ?? '', exchanges, chunks, aborted: true }), reject);
      },
      onSuccess: () => resolve({ url: client.url ?? '', exchanges, chunks, aborted: false }),
      onError: reject,
    });
    client.start();
  });
}

async function readPrefix(path: string, length: number): Promise<Buffer> {
  const handle = await open(path, 'r');
  try {
    const buffer = Buffer.alloc(length);
    const { bytesRead } = await handle.read(buffer, 0, length, 0);
    return buffer.subarray(0, bytesRead);
  } finally {
    await handle.close();
  }
}

/**
 * A tus-js-client file reader whose PATCH bodies stop after `stallAt` bytes (a client on a link
 * that went quiet), so the upload can be aborted in the middle of a body, for sure.
 */
function stallingReader(data: Buffer, stallAt: number) {
  return {
    openFile: async () => ({
      size: data.length,
      slice: async (start: number, end: number) => {
        const last = Math.min(end, data.length);
        const body = new Readable({ read() {} });
        body.push(data.subarray(start, Math.min(last, start + stallAt)));
        return { value: Object.assign(body, { size: last - start }), done: last >= data.length };
      },
      close: () => {},
    }),
  };
}

forEachPlatform(() => {
  describe('tus-js-client against the sample app', () => {
    let app: TestApp;
    /** Where the sample's consumer delivers finished uploads (`TUS_DEST_DIR`). */
    let destDir: string;
    const env = ['TUS_UPLOAD_DIR', 'TUS_COMPLETED_DIR', 'TUS_DEST_DIR'] as const;
    const saved = Object.fromEntries(env.map((name) => [name, process.env[name]]));

    beforeAll(async () => {
      const dirs = await tempDirs('tussi-client-');
      destDir = join(dirs.root, 'dest');
      process.env.TUS_UPLOAD_DIR = dirs.uploadDir;
      process.env.TUS_COMPLETED_DIR = dirs.completedDir;
      process.env.TUS_DEST_DIR = destDir;
      app = await startApp([AppModule], { ...dirs, removeOnClose: dirs.root });
    });
    afterAll(async () => {
      await app?.close();
      for (const name of env) {
        const value = saved[name];
        if (value === undefined) delete process.env[name];
        else process.env[name] = value;
      }
    });

    async function expectStored(url: string, data: Buffer, filename: string): Promise<void> {
      expect(url).toMatch(new RegExp(`^${app.baseUrl}/files/[0-9a-f-]{36}$`));
      const id = idOf(url);
      // Finalized by the last PATCH, then taken by the sample's consumer: the bytes end up in
      // TUS_DEST_DIR as `{id}-{filename}` (record beside them), a receipt is all that is left
      // in completedDir, and nothing is left in staging.
      const delivered = join(destDir, `${id}-${filename}`);
      const { receipt } = completedPaths(app, id);
      await pollUntil(
        async () => existsSync(`${delivered}.meta`) && existsSync(receipt),
        (done) => done,
        { timeoutMs: 10_000, what: `delivery of ${id}` },
      );
      expect(await sha256File(delivered)).toBe(sha256(data));
      expect((await UploadRecord.fromFile(`${delivered}.meta`)).length).toBe(data.length);
      expect(await entriesOf(app.completedDir, id)).toEqual([`${id}.done`]);
      expect(await entriesOf(app.uploadDir, id)).toEqual([]);
      const head = await app.request({ method: 'HEAD', path: url, headers: { ...TUS } });
      expect(head.status).toBe(200);
      expect(head.headers['upload-offset']).toBe(String(data.length));
      expect(head.headers['upload-length']).toBe(String(data.length));
      const pairs = Object.fromEntries(
        String(head.headers['upload-metadata'] ?? '')
          .split(',')
          .map((pair) => pair.trim().split(' '))
          .map(([key, value]) => [key, Buffer.from(value ?? '', 'base64').toString('utf8')]),
      );
      expect(pairs.filename).toBe(filename);
    }

    it.each([
      ['64 KiB', 64 * KiB],
      ['1 MiB', 1 * MiB],
      ['5 MiB', 5 * MiB],
      ['Infinity', Number.POSITIVE_INFINITY],
    ])('uploads a ~12 MiB Buffer with chunkSize %s', async (_name, chunkSize) => {
      const data = randomBytes(12 * MiB + 4321);
      const filename = `random-${chunkSize}.bin`;
      const result = await upload(data, {
        endpoint: `${app.baseUrl}/files/`,
        chunkSize,
        metadata: { filename, filetype: 'application/octet-stream' },
      });
      const patches = Math.ceil(data.length / Math.min(chunkSize, data.length));
      expect(result.chunks).toBe(patches);
      expect(result.exchanges.map((e) => `${e.method} ${e.status}`)).toEqual([
        'POST 201',
        ...Array.from({ length: patches }, () => 'PATCH 204'),
      ]);
      expect(result.exchanges.every((e) => e.tusResumable === '1.0.0')).toBe(true);
      await expectStored(result.url, data, filename);
    });

    it('uploads from a fs.ReadStream (chunkSize 1 MiB)', async () => {
      const data = randomBytes(12 * MiB + 99);
      const source = join(app.uploadDir, '..', 'source.bin');
      await writeFile(source, data);
      const result = await upload(createReadStream(source), {
        endpoint: `${app.baseUrl}/files/`,
        chunkSize: 1 * MiB,
        uploadSize: data.length,
        metadata: { filename: 'from-stream.bin' },
      });
      expect(result.chunks).toBe(Math.ceil(data.length / MiB));
      await expectStored(result.url, data, 'from-stream.bin');
    });

    it('resumes an upload aborted in the middle of a single PATCH', async () => {
      const data = randomBytes(12 * MiB);
      const endpoint = `${app.baseUrl}/files/`;
      const first = await upload(data, {
        endpoint,
        chunkSize: Number.POSITIVE_INFINITY,
        metadata: { filename: 'resumed.bin' },
        fileReader: stallingReader(data, 4 * MiB),
        abortAfterBytes: 4 * MiB,
        // Progress counts bytes queued, not received: wait until the server has stored some.
        abortWhen: async (url) => {
          const head = await readPrefix(join(app.uploadDir, idOf(url)), 4096).catch(() =>
            Buffer.alloc(0),
          );
          return head.equals(data.subarray(0, 4096));
        },
      });
      expect(first.aborted).toBe(true);
      expect(first.url).not.toBe('');
      // A new client resumes from the URL (HEAD, then PATCH from the offset the server kept). It
      // may ask before the server has committed the cut PATCH: a 409/423 is then retried.
      const second = await upload(data, {
        uploadUrl: first.url,
        chunkSize: Number.POSITIVE_INFINITY,
        metadata: { filename: 'resumed.bin' },
        retryDelays: [50, 100, 200, 400, 800],
      });
      expect(second.url).toBe(first.url);
      expect(second.exchanges[0]).toMatchObject({ method: 'HEAD', status: 200 });
      const resumed = second.exchanges.at(-1)!;
      expect(resumed).toMatchObject({ method: 'PATCH', status: 204 });
      // It went on from the bytes the server kept of the cut PATCH, not from scratch.
      expect(Number(resumed.offset)).toBeGreaterThan(0);
      expect(Number(resumed.offset)).toBeLessThanOrEqual(4 * MiB);
      await expectStored(first.url, data, 'resumed.bin');
    });
  });
});

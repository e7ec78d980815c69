/**
 * The TUS 1.0.0 extensions over real HTTP against `TusModule.forRoot`: tus-js-client for the
 * extensions it drives (creation-with-upload, creation-defer-length, concatenation through
 * parallel uploads, termination), raw requests for the rest (checksum, checksum-trailer,
 * concatenation-unfinished, termination of a PATCH in flight).
 */
import { afterAll, beforeAll, describe, expect, it } from '@jest/globals';
import { createHash, randomBytes } from 'node:crypto';
import { createReadStream } from 'node:fs';
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import { Upload, type HttpRequest, type HttpResponse } from 'tus-js-client';
import { forEachPlatform } from '../support/app.js';
import { listDir, startExtApp, type ExtApp } from '../support/ext-app.js';
import {
  chunksOf,
  pollUntil,
  request as httpRequest,
  sha256,
  sha256File,
  type RawRequestOptions,
  type RawResponse,
} from '../support/http.js';

const KiB = 1024;
const MiB = 1024 * KiB;
const TUS = { 'Tus-Resumable': '1.0.0' };
const OCTET = 'application/offset+octet-stream';
const ALL_EXTENSIONS = [
  'creation',
  'creation-with-upload',
  'creation-defer-length',
  'termination',
  'expiration',
  'checksum',
  'checksum-trailer',
  'concatenation',
  'concatenation-unfinished',
];

const idOf = (url: string) => new URL(url).pathname.split('/').pop()!;
const list = (value: string | string[] | undefined) =>
  String(value ?? '')
    .split(',')
    .map((s) => s.trim())
    .filter((s) => s !== '');

function crc32(data: Buffer): Buffer {
  let crc = 0xffffffff;
  for (const byte of data) {
    crc ^= byte;
    for (let k = 0; k < 8; k++) crc = crc & 1 ? 0xedb88320 ^ (crc >>> 1) : crc >>> 1;
  }
  const out = Buffer.alloc(4);
  out.writeUInt32BE((crc ^ 0xffffffff) >>> 0);
  return out;
}

const checksum = (algorithm: 'sha1' | 'sha256' | 'crc32', data: Buffer) =>
  `${algorithm} ${(algorithm === 'crc32' ? crc32(data) : createHash(algorithm).update(data).digest()).toString('base64')}`;

interface Exchange {
  method: string;
  status: number;
  headers: Record<string, string | undefined>;
}

/** One tus-js-client upload to completion; resolves with its URL and every exchange. */
function clientUpload(
  input: Buffer | Readable,
  options: ConstructorParameters<typeof Upload>[1],
): Promise<{ url: string; exchanges: Exchange[] }> {
  const exchanges: Exchange[] = [];
  return new Promise((resolve, reject) => {
    const upload: Upload = new Upload(input as Buffer, {
      retryDelays: [],
      ...options,
      onAfterResponse: (req: HttpRequest, res: HttpResponse) => {
        exchanges.push({
          method: req.getHeader('X-HTTP-Method-Override') ?? req.getMethod(),
          status: res.getStatus(),
          headers: {
            'upload-offset': res.getHeader('Upload-Offset'),
            'upload-expires': res.getHeader('Upload-Expires'),
            'req-upload-length': req.getHeader('Upload-Length'),
            'req-upload-defer-length': req.getHeader('Upload-Defer-Length'),
            'req-upload-concat': req.getHeader('Upload-Concat'),
            'req-content-type': req.getHeader('Content-Type'),
          },
        });
      },
      onSuccess: () => resolve({ url: upload.url ?? '', exchanges }),
      onError: reject,
    });
    upload.start();
  });
}

forEachPlatform(() => {
  describe('TUS extensions over HTTP (all on)', () => {
    let app: ExtApp;
    const request = (options: RawRequestOptions): Promise<RawResponse> =>
      httpRequest(app.baseUrl, { timeoutMs: 30_000, ...options });
    const head = (id: string) => request({ method: 'HEAD', path: `/files/${id}`, headers: TUS });
    const create = async (headers: Record<string, string>): Promise<string> => {
      const res = await request({
        method: 'POST',
        path: '/files',
        headers: { ...TUS, ...headers },
      });
      expect(res.status).toBe(201);
      return String(res.headers.location);
    };
    const patch = (
      id: string,
      offset: number,
      body: Buffer | AsyncIterable<Buffer>,
      headers: Record<string, string> = {},
      trailers?: Record<string, string>,
    ) =>
      request({
        method: 'PATCH',
        path: `/files/${id}`,
        headers: { ...TUS, 'Content-Type': OCTET, 'Upload-Offset': String(offset), ...headers },
        body,
        trailers,
        timeoutMs: 60_000,
      });

    /** Waits for upload `id` to be finalized into completedDir; checks bytes and what is left. */
    async function expectCompleted(id: string, data: Buffer): Promise<void> {
      await pollUntil(
        () => listDir(app.completedDir),
        (names) => names.includes(id) && names.includes(`${id}.meta`),
        { timeoutMs: 60_000, what: `${id} in completedDir` },
      );
      expect(await sha256File(join(app.completedDir, id))).toBe(sha256(data));
      expect((await listDir(app.uploadDir)).filter((n) => n.includes(id))).toEqual([]);
      const res = await head(id);
      expect(res.status).toBe(200);
      expect(res.headers['upload-offset']).toBe(String(data.length));
      expect(res.headers['upload-length']).toBe(String(data.length));
    }

    beforeAll(async () => {
      // A lock wait far above the bounds below: a DELETE that had to wait for a PATCH to let go
      // would be seen, not hidden by a quick 423.
      app = await startExtApp({ lockWaitMs: 20_000 });
    });
    afterAll(async () => {
      await app?.close();
    });

    it('OPTIONS advertises every extension and the checksum algorithms', async () => {
      const res = await request({ method: 'OPTIONS', path: '/files' });
      expect(res.status).toBe(204);
      expect(list(res.headers['tus-extension']).sort()).toEqual([...ALL_EXTENSIONS].sort());
      expect(list(res.headers['tus-checksum-algorithm'])).toEqual(
        expect.arrayContaining(['sha1', 'md5', 'sha256', 'sha512', 'crc32']),
      );
    });

    describe('tus-js-client', () => {
      it.each([
        ['the whole file in the POST', Number.POSITIVE_INFINITY, 3 * MiB + 5, 1],
        ['the first chunk in the POST, the rest by PATCH', 1 * MiB, 3 * MiB + 5, 4],
      ])(
        '(a) uploadDataDuringCreation: %s',
        async (_what, chunkSize, size, requests) => {
          const data = randomBytes(size);
          const result = await clientUpload(data, {
            endpoint: `${app.endpoint}/`,
            uploadDataDuringCreation: true,
            chunkSize,
            metadata: { filename: 'during-creation.bin' },
          });
          expect(result.exchanges.map((e) => `${e.method} ${e.status}`)).toEqual([
            'POST 201',
            ...Array.from({ length: requests - 1 }, () => 'PATCH 204'),
          ]);
          const post = result.exchanges[0];
          expect(post.headers['req-content-type']).toBe(OCTET);
          // The POST carried data: the response says how much was applied.
          expect(Number(post.headers['upload-offset'])).toBe(Math.min(size, chunkSize));
          await expectCompleted(idOf(result.url), data);
        },
        120_000,
      );

      it('(b) uploadLengthDeferred from a fs.ReadStream (the length comes with the PATCH)', async () => {
        const data = randomBytes(5 * MiB + 17);
        const source = join(app.uploadDir, '..', 'deferred-source.bin');
        await writeFile(source, data);
        const result = await clientUpload(createReadStream(source), {
          endpoint: `${app.endpoint}/`,
          uploadLengthDeferred: true,
          // tus-js-client's file source only knows it is done when one slice covers the file.
          chunkSize: 64 * MiB,
        });
        expect(result.exchanges[0]).toMatchObject({
          method: 'POST',
          status: 201,
          headers: { 'req-upload-defer-length': '1', 'req-upload-length': undefined },
        });
        const last = result.exchanges.at(-1)!;
        expect(last).toMatchObject({ method: 'PATCH', status: 204 });
        expect(last.headers['req-upload-length']).toBe(String(data.length));
        await expectCompleted(idOf(result.url), data);
      }, 120_000);

      it('(b) uploadLengthDeferred from a Readable in several PATCHes', async () => {
        const data = randomBytes(3 * MiB + 333);
        const result = await clientUpload(Readable.from(chunksOf(data, 100 * KiB)), {
          endpoint: `${app.endpoint}/`,
          uploadLengthDeferred: true,
          chunkSize: 1 * MiB,
        });
        const patches = result.exchanges.filter((e) => e.method === 'PATCH');
        expect(patches.length).toBeGreaterThanOrEqual(4);
        expect(patches.every((e) => e.status === 204)).toBe(true);
        // Upload-Length is sent once known: with the last PATCH, and on none before.
        expect(patches.at(-1)!.headers['req-upload-length']).toBe(String(data.length));
        expect(
          patches.slice(0, -1).every((e) => e.headers['req-upload-length'] === undefined),
        ).toBe(true);
        // Until then the server kept the upload open and expiring.
        expect(patches[0].headers['upload-expires']).toBeDefined();
        await expectCompleted(idOf(result.url), data);
      }, 120_000);

      it('(c) parallelUploads: 4 (concatenation): one final file, no partial left', async () => {
        const data = randomBytes(9 * MiB + 123);
        const before = await listDir(app.completedDir);
        const result = await clientUpload(data, {
          endpoint: `${app.endpoint}/`,
          parallelUploads: 4,
          metadata: { filename: 'parallel.bin' },
        });
        const posts = result.exchanges.filter((e) => e.method === 'POST');
        expect(posts.map((e) => e.headers['req-upload-concat']?.split(';')[0])).toEqual([
          'partial',
          'partial',
          'partial',
          'partial',
          'final',
        ]);
        expect(posts.every((e) => e.status === 201)).toBe(true);
        const id = idOf(result.url);
        await expectCompleted(id, data);
        // Only the final reached the completed queue; the partials left staging.
        expect((await listDir(app.completedDir)).filter((n) => !before.includes(n))).toEqual(
          [id, `${id}.meta`].sort(),
        );
        expect((await listDir(app.uploadDir)).filter((n) => /^[0-9a-f-]{36}/.test(n))).toEqual([]);
        const concat = String((await head(id)).headers['upload-concat']);
        expect(concat).toMatch(/^final;/);
        expect(concat.slice('final;'.length).trim().split(/ +/)).toHaveLength(4);
      }, 120_000);

      it('(d) abort(true) terminates the upload: HEAD 404, no file left', async () => {
        const data = randomBytes(16 * MiB);
        let url = '';
        await new Promise<void>((resolve, reject) => {
          let aborting = false;
          const upload: Upload = new Upload(data, {
            endpoint: `${app.endpoint}/`,
            chunkSize: 1 * MiB,
            retryDelays: [],
            onProgress: (sent) => {
              // In the middle of the third PATCH.
              if (aborting || sent < 2.5 * MiB) return;
              aborting = true;
              url = upload.url ?? '';
              upload.abort(true).then(resolve, reject);
            },
            onSuccess: () => reject(new Error('the upload finished before it was aborted')),
            onError: reject,
          });
          upload.start();
        });
        expect(url).not.toBe('');
        const id = idOf(url);
        const res = await head(id);
        expect(res.status).toBe(404);
        expect(res.headers['upload-offset']).toBeUndefined();
        // Once the aborted PATCH has let go, nothing of the upload is left anywhere.
        await pollUntil(
          async () => [...(await listDir(app.uploadDir)), ...(await listDir(app.completedDir))],
          (names) => !names.some((n) => n.includes(id)),
          { timeoutMs: 30_000, what: `no file of ${id}` },
        );
        const again = await patch(id, 0, Buffer.from('x'));
        expect(again.status).toBe(404);
      }, 120_000);
    });

    it('(e) Upload-Checksum sha1 and crc32: match 204, mismatch 460 with the offset unchanged', async () => {
      const data = randomBytes(2 * MiB + 11);
      const first = data.subarray(0, 1 * MiB);
      const rest = data.subarray(1 * MiB);
      const id = idOf(await create({ 'Upload-Length': String(data.length) }));

      let res = await patch(id, 0, first, { 'Upload-Checksum': checksum('sha1', rest) });
      expect(res.status).toBe(460);
      expect((await head(id)).headers['upload-offset']).toBe('0');

      res = await patch(id, 0, first, { 'Upload-Checksum': checksum('sha1', first) });
      expect(res.status).toBe(204);
      expect(res.headers['upload-offset']).toBe(String(first.length));
      expect(res.headers['upload-expires']).toBeDefined();

      res = await patch(id, first.length, rest, { 'Upload-Checksum': checksum('crc32', first) });
      expect(res.status).toBe(460);
      expect((await head(id)).headers['upload-offset']).toBe(String(first.length));

      res = await patch(id, first.length, rest, { 'Upload-Checksum': checksum('crc32', rest) });
      expect(res.status).toBe(204);
      expect(res.headers['upload-offset']).toBe(String(data.length));
      await expectCompleted(id, data);
    }, 120_000);

    it('(e) an unsupported checksum algorithm is 400, the offset unchanged', async () => {
      const id = idOf(await create({ 'Upload-Length': '11' }));
      const res = await patch(id, 0, Buffer.from('hello world'), {
        'Upload-Checksum': 'sha3 Kq5sNclPz7QV2+lfQIuc6R7oRu0=',
      });
      expect(res.status).toBe(400);
      expect((await head(id)).headers['upload-offset']).toBe('0');
    });

    it('(f) checksum-trailer: a chunked PATCH with Upload-Checksum as a trailer', async () => {
      const data = randomBytes(3 * MiB + 99);
      const first = data.subarray(0, 1 * MiB + 7);
      const rest = data.subarray(first.length);
      const id = idOf(await create({ 'Upload-Length': String(data.length) }));

      let res = await patch(
        id,
        0,
        chunksOf(first, 64 * KiB),
        {},
        {
          'Upload-Checksum': checksum('sha256', first),
        },
      );
      expect(res.status).toBe(204);
      expect(res.headers['upload-offset']).toBe(String(first.length));

      res = await patch(
        id,
        first.length,
        chunksOf(rest, 64 * KiB),
        {},
        {
          'Upload-Checksum': checksum('sha256', first),
        },
      );
      expect(res.status).toBe(460);
      expect((await head(id)).headers['upload-offset']).toBe(String(first.length));

      res = await patch(
        id,
        first.length,
        chunksOf(rest, 64 * KiB),
        {},
        {
          'Upload-Checksum': checksum('sha256', rest),
        },
      );
      expect(res.status).toBe(204);
      await expectCompleted(id, data);
    }, 120_000);

    it('(g) concatenation-unfinished: a final of 4 uneven partials, created before they finish', async () => {
      const sizes = [1, 3 * MiB + 7, 65_537, 10 * MiB];
      const parts = sizes.map((size) => randomBytes(size));
      const whole = Buffer.concat(parts);
      const urls: string[] = [];
      for (const size of sizes) {
        urls.push(await create({ 'Upload-Concat': 'partial', 'Upload-Length': String(size) }));
      }
      const ids = urls.map(idOf);
      // Some of each before the final exists.
      expect((await patch(ids[1], 0, parts[1].subarray(0, 1 * MiB))).status).toBe(204);
      expect((await patch(ids[3], 0, parts[3].subarray(0, 2 * MiB))).status).toBe(204);

      // Relative and absolute URLs mixed, as the protocol allows.
      const concat = `final;${new URL(urls[0]).pathname} ${urls[1]} ${new URL(urls[2]).pathname} ${urls[3]}`;
      const finalUrl = await create({ 'Upload-Concat': concat });
      const finalId = idOf(finalUrl);
      let res = await head(finalId);
      expect(res.status).toBe(200);
      expect(res.headers['upload-concat']).toBe(concat);
      expect(res.headers['upload-offset']).toBeUndefined();
      expect(res.headers['upload-length']).toBe(String(whole.length));
      expect((await patch(finalId, 0, Buffer.from('x'))).status).toBe(403);

      // The rest of every partial, all at once.
      const done = await Promise.all([
        patch(ids[0], 0, parts[0]),
        patch(ids[1], 1 * MiB, parts[1].subarray(1 * MiB)),
        patch(ids[2], 0, parts[2]),
        patch(ids[3], 2 * MiB, chunksOf(parts[3].subarray(2 * MiB), 256 * KiB)),
      ]);
      expect(done.map((r) => r.status)).toEqual([204, 204, 204, 204]);

      await pollUntil(
        () => listDir(app.completedDir),
        (names) => names.includes(finalId) && names.includes(`${finalId}.meta`),
        { timeoutMs: 90_000, what: 'the final in completedDir' },
      );
      expect(await sha256File(join(app.completedDir, finalId))).toBe(sha256(whole));
      res = await head(finalId);
      expect(res.status).toBe(200);
      expect(res.headers['upload-offset']).toBe(String(whole.length));
      expect(res.headers['upload-length']).toBe(String(whole.length));
      expect(res.headers['upload-concat']).toBe(concat);
      // Partials never enter the queue, and are removed once assembled.
      const completed = await listDir(app.completedDir);
      expect(completed.filter((n) => ids.some((id) => n.includes(id)))).toEqual([]);
      await pollUntil(
        () => listDir(app.uploadDir),
        (names) => !names.some((n) => [...ids, finalId].some((id) => n.includes(id))),
        { timeoutMs: 30_000, what: 'staging emptied' },
      );
      for (const id of ids) expect((await head(id)).status).toBe(404);
      expect(app.errors).toEqual([]);
    }, 180_000);

    it('(h) DELETE stops a PATCH in flight in the same process: 204 quickly, then 404', async () => {
      const id = idOf(await create({ 'Upload-Length': String(64 * MiB) }));
      let sent = 0;
      let stop = false;
      async function* slowBody(): AsyncGenerator<Buffer> {
        // At most ~60 s of 64 KiB every 50 ms; the server cuts it much sooner.
        for (let i = 0; i < 1200 && !stop; i++) {
          const chunk = randomBytes(64 * KiB);
          sent += chunk.length;
          yield chunk;
          await new Promise((r) => setTimeout(r, 50));
        }
      }
      const patching = patch(id, 0, slowBody());
      await pollUntil(
        async () => Number((await head(id)).headers['upload-offset']) > 0 || sent >= 1 * MiB,
        (ok) => ok,
        { timeoutMs: 30_000, what: 'the PATCH under way' },
      );
      const started = Date.now();
      const deleted = await request({ method: 'DELETE', path: `/files/${id}`, headers: TUS });
      const took = Date.now() - started;
      stop = true;
      expect(deleted.status).toBe(204);
      // Far below lockWaitMs (20 s): the PATCH was stopped, not waited for.
      expect(took).toBeLessThan(10_000);
      const patched = await patching;
      expect(patched.status).toBeLessThan(500);
      const res = await head(id);
      expect(res.status).toBe(404);
      expect(res.headers['upload-offset']).toBeUndefined();
      await pollUntil(
        () => listDir(app.uploadDir),
        (names) => !names.some((n) => n.includes(id)),
        { timeoutMs: 30_000, what: `no file of ${id}` },
      );
      expect(app.errors).toEqual([]);
    }, 120_000);
  });

  describe('TUS extensions over HTTP, concatenation and checksum switched off', () => {
    let app: ExtApp;
    const request = (options: RawRequestOptions): Promise<RawResponse> =>
      httpRequest(app.baseUrl, { timeoutMs: 30_000, ...options });

    beforeAll(async () => {
      app = await startExtApp({ extensions: { concatenation: false, checksum: false } });
    });
    afterAll(async () => {
      await app?.close();
    });

    it('(i) OPTIONS lists neither them nor what depends on them', async () => {
      const res = await request({ method: 'OPTIONS', path: '/files' });
      expect(res.status).toBe(204);
      expect(list(res.headers['tus-extension']).sort()).toEqual(
        [
          'creation',
          'creation-with-upload',
          'creation-defer-length',
          'termination',
          'expiration',
        ].sort(),
      );
      expect(res.headers['tus-checksum-algorithm']).toBeUndefined();
    });

    it('(i) their headers are then ignored', async () => {
      const created = await request({
        method: 'POST',
        path: '/files',
        headers: { ...TUS, 'Upload-Length': '5', 'Upload-Concat': 'partial' },
      });
      expect(created.status).toBe(201);
      const id = idOf(String(created.headers.location));
      const patched = await request({
        method: 'PATCH',
        path: `/files/${id}`,
        headers: {
          ...TUS,
          'Content-Type': OCTET,
          'Upload-Offset': '0',
          'Upload-Checksum': checksum('sha1', Buffer.from('other')),
        },
        body: Buffer.from('hello'),
      });
      expect(patched.status).toBe(204);
      expect(patched.headers['upload-offset']).toBe('5');
      // Not a partial: finished like any upload.
      await pollUntil(
        () => listDir(app.completedDir),
        (names) => names.includes(id),
        { timeoutMs: 30_000, what: `${id} in completedDir` },
      );
      const res = await request({ method: 'HEAD', path: `/files/${id}`, headers: TUS });
      expect(res.headers['upload-concat']).toBeUndefined();
    });
  });
});

import { afterAll, beforeAll, describe, expect, it } from '@jest/globals';
import { randomBytes } from 'node:crypto';
import http from 'node:http';
import { Readable } from 'node:stream';
import { Upload } from 'tus-js-client';
import { AppModule } from '../../sample/src/app.module.js';
import {
  TUS,
  createTestApp,
  forEachPlatform,
  idOf,
  startApp,
  tempDirs,
  type TestApp,
} from '../support/app.js';
import { pollUntil, rawSocketRequest, sha256, sha256File } from '../support/http.js';
import { join } from 'node:path';
import { readdir } from 'node:fs/promises';

/**
 * The IETF draft (Resumable Uploads for HTTP) on the TUS endpoint of the sample, with
 * tus-js-client in both of its draft modes (interop 5 and 6) and raw HTTP for interop 7 and 8,
 * next to a TUS 1.0.0 client on the same endpoint. Every upload is delivered by the sample's
 * consumer like any other and checked by sha256.
 */
const KiB = 1024;
const MiB = 1024 * KiB;
type Protocol = 'ietf-draft-03' | 'ietf-draft-05' | 'tus-v1';

function upload(
  input: Buffer | Readable,
  endpoint: string,
  protocol: Protocol,
  options: Record<string, unknown> = {},
): Promise<{ url: string; client: Upload }> {
  return new Promise((resolve, reject) => {
    const client: Upload = new Upload(input as Buffer, {
      endpoint,
      retryDelays: [],
      metadata: { filename: 'draft.bin' },
      // The option is missing from tus-js-client's types.
      ...({ protocol } as object),
      ...options,
      onSuccess: () => resolve({ url: client.url ?? '', client }),
      onError: reject,
    });
    client.start();
  });
}

forEachPlatform(() => {
  let app: TestApp;
  let endpoint: string;
  let destDir: string;
  const saved: Record<string, string | undefined> = {};

  beforeAll(async () => {
    const dirs = await tempDirs('tussi-draft-');
    destDir = join(dirs.root, 'dest');
    const env = {
      TUS_UPLOAD_DIR: dirs.uploadDir,
      TUS_COMPLETED_DIR: dirs.completedDir,
      TUS_DEST_DIR: destDir,
      TUS_MAX_SIZE: String(64 * MiB),
    };
    for (const [name, value] of Object.entries(env)) {
      saved[name] = process.env[name];
      process.env[name] = value;
    }
    app = await startApp([AppModule], { ...dirs, removeOnClose: dirs.root });
    endpoint = `${app.baseUrl}/files/`;
  });
  afterAll(async () => {
    await app?.close();
    for (const [name, value] of Object.entries(saved)) {
      if (value === undefined) delete process.env[name];
      else process.env[name] = value;
    }
  });

  /** Waits for the sample's consumer to deliver `url`'s upload, and checks its bytes. */
  async function expectDelivered(url: string, data: Buffer): Promise<void> {
    const name = `${idOf(url)}-draft.bin`;
    await pollUntil(
      async () => (await readdir(destDir).catch((): string[] => [])).includes(name),
      (found) => found,
      { what: `delivery of ${name}`, timeoutMs: 15_000 },
    );
    expect(await sha256File(join(destDir, name))).toBe(sha256(data));
  }

  describe.each(['ietf-draft-03', 'ietf-draft-05'] as const)('tus-js-client %s', (protocol) => {
    it.each([
      ['one request, data with the creation', { uploadDataDuringCreation: true }],
      ['256 KiB appends', { chunkSize: 256 * KiB }],
      ['1 MiB appends after an empty creation', { chunkSize: MiB }],
      [
        'data with the creation, then 300 KiB appends',
        { uploadDataDuringCreation: true, chunkSize: 300 * KiB },
      ],
    ])('%s', async (_name, options) => {
      const data = randomBytes(2 * MiB + 123);
      const { url } = await upload(data, endpoint, protocol, options);
      expect(url).toMatch(/\/files\/[0-9a-f-]{36}$/);
      await expectDelivered(url, data);
    });

    it('a deferred length from a stream', async () => {
      const data = randomBytes(700 * KiB + 5);
      const stream = Readable.from([data.subarray(0, 300 * KiB), data.subarray(300 * KiB)]);
      const { url } = await upload(stream, endpoint, protocol, {
        uploadLengthDeferred: true,
        chunkSize: 256 * KiB,
      });
      await expectDelivered(url, data);
    });

    /**
     * Uploads in chunks and aborts once `after` bytes are sent (`terminate`: with the DELETE);
     * resolves with the upload's URL.
     */
    function uploadThenAbort(
      data: Buffer,
      chunkSize: number,
      after: number,
      terminate: boolean,
    ): Promise<string> {
      return new Promise<string>((resolve, reject) => {
        let url = '';
        const client: Upload = new Upload(data, {
          endpoint,
          retryDelays: [],
          chunkSize,
          metadata: { filename: 'draft.bin' },
          ...({ protocol } as object),
          onChunkComplete: (_size, sent) => {
            if (sent >= after && !url) {
              url = client.url ?? '';
              void client.abort(terminate).then(() => resolve(url), reject);
            }
          },
          onError: reject,
        });
        client.start();
      });
    }

    it('resumes after abort(false): HEAD, then appends from the offset', async () => {
      const data = randomBytes(3 * MiB);
      const url = await uploadThenAbort(data, 512 * KiB, MiB, false);
      const head = await app.request({
        method: 'HEAD',
        path: new URL(url).pathname,
        headers: { 'Upload-Draft-Interop-Version': protocol === 'ietf-draft-03' ? '5' : '6' },
      });
      expect(head.status).toBe(204);
      expect(head.headers['upload-complete']).toBe('?0');
      expect(Number(head.headers['upload-offset'])).toBeGreaterThanOrEqual(MiB);
      const resumed = await upload(data, endpoint, protocol, { uploadUrl: url, chunkSize: MiB });
      expect(resumed.url).toBe(url);
      await expectDelivered(url, data);
    });

    it('terminate: DELETE, then the upload is gone', async () => {
      const url = await uploadThenAbort(randomBytes(MiB), 256 * KiB, 0, true);
      const head = await app.request({
        method: 'HEAD',
        path: new URL(url).pathname,
        headers: { 'Upload-Draft-Interop-Version': '6' },
      });
      expect([404, 410]).toContain(head.status);
      expect(head.headers['tus-resumable']).toBeUndefined();
    });
  });

  describe.each([7, 8])('raw HTTP, interop %i', (version) => {
    const draft = { 'Upload-Draft-Interop-Version': String(version) };

    it('creates with data, appends, completes; the responses are the draft’s', async () => {
      const data = randomBytes(300 * KiB);
      const created = await app.request({
        method: 'POST',
        path: '/files',
        headers: {
          ...draft,
          'Upload-Complete': '?0',
          'Content-Type': 'application/octet-stream',
          'Upload-Metadata': `filename ${Buffer.from('draft.bin').toString('base64')}`,
        },
        body: data.subarray(0, 100 * KiB),
      });
      expect(created.status).toBe(201);
      expect(created.headers['tus-resumable']).toBeUndefined();
      expect(created.headers['upload-offset']).toBe(String(100 * KiB));
      expect(created.headers['upload-complete']).toBe('?0');
      expect(created.headers['upload-limit']).toContain(`max-size=${64 * MiB}`);
      const path = new URL(String(created.headers.location)).pathname;

      const mismatch = await app.request({
        method: 'PATCH',
        path,
        headers: {
          ...draft,
          'Upload-Offset': '5',
          'Upload-Complete': '?0',
          'Content-Type': 'application/partial-upload',
        },
        body: Buffer.from('xyz'),
      });
      expect(mismatch.status).toBe(409);
      expect(mismatch.headers['content-type']).toBe('application/problem+json');
      expect(JSON.parse(mismatch.body.toString())).toMatchObject({
        type: 'https://iana.org/assignments/http-problem-types#mismatching-upload-offset',
        'expected-offset': 100 * KiB,
        'provided-offset': 5,
      });

      const appended = await app.request({
        method: 'PATCH',
        path,
        headers: {
          ...draft,
          'Upload-Offset': String(100 * KiB),
          'Upload-Complete': '?1',
          'Content-Type': 'application/partial-upload',
        },
        body: data.subarray(100 * KiB),
      });
      expect(appended.status).toBe(204);
      expect(appended.headers['upload-offset']).toBe(String(data.length));
      expect(appended.headers['upload-complete']).toBe('?1');
      await expectDelivered(String(created.headers.location), data);

      const head = await app.request({ method: 'HEAD', path, headers: draft });
      expect(head.status).toBe(204);
      expect(head.headers['upload-complete']).toBe('?1');
      expect(head.headers['upload-length']).toBe(String(data.length));
      expect(head.headers['cache-control']).toBe('no-store');
    });

    it('a completing append that disagrees with the length is inconsistent-upload-length', async () => {
      const created = await app.request({
        method: 'POST',
        path: '/files',
        headers: { ...draft, 'Upload-Complete': '?0', 'Upload-Length': '10' },
      });
      expect(created.status).toBe(201);
      const path = new URL(String(created.headers.location)).pathname;
      const refused = await app.request({
        method: 'PATCH',
        path,
        headers: {
          ...draft,
          'Upload-Offset': '0',
          'Upload-Complete': '?1',
          'Content-Type': 'application/partial-upload',
        },
        body: Buffer.from('abc'),
      });
      expect(refused.status).toBe(400);
      expect(JSON.parse(refused.body.toString())).toMatchObject({
        type: 'https://iana.org/assignments/http-problem-types#inconsistent-upload-length',
      });
      const head = await app.request({ method: 'HEAD', path, headers: draft });
      expect(head.headers['upload-offset']).toBe('0');
    });

    it.each([
      ['', {}],
      // tus-js-client's leftover in draft mode: the client defers the length itself.
      [' (the client also sends Upload-Defer-Length: 1)', { 'Upload-Defer-Length': '1' }],
    ])(
      'creates an upload complete in one request, with a chunked body of unknown length%s',
      async (_name, leftover) => {
        const data = randomBytes(200 * KiB + 3);
        const created = await app.request({
          method: 'POST',
          path: '/files',
          headers: {
            ...draft,
            ...leftover,
            'Upload-Complete': '?1',
            'Upload-Metadata': `filename ${Buffer.from('draft.bin').toString('base64')}`,
          },
          body: Readable.from([data.subarray(0, 1000), data.subarray(1000)]),
        });
        expect(created.status).toBe(201);
        expect(created.headers['upload-complete']).toBe('?1');
        expect(created.headers['upload-offset']).toBe(String(data.length));
        await expectDelivered(String(created.headers.location), data);
      },
    );

    it('a creation is preceded by 104 with its Location, before the body is read', async () => {
      const data = randomBytes(64 * KiB);
      const infos: Array<{ statusCode?: number; headers: Record<string, unknown> }> = [];
      const final = await new Promise<http.IncomingMessage>((resolve, reject) => {
        const req = http.request({
          host: '127.0.0.1',
          port: app.port,
          method: 'POST',
          path: '/files',
          headers: {
            ...draft,
            'Upload-Complete': '?1',
            'Content-Length': String(data.length),
            'Upload-Metadata': `filename ${Buffer.from('draft.bin').toString('base64')}`,
          },
        });
        req.on('information', (info) => infos.push(info));
        req.on('response', (res) => {
          res.resume();
          res.on('end', () => resolve(res));
        });
        req.on('error', reject);
        req.end(data);
      });
      expect(final.statusCode).toBe(201);
      expect(infos.map((i) => i.statusCode)).toEqual([104]);
      expect(infos[0].headers.location).toBe(final.headers.location);
      expect(infos[0].headers['upload-draft-interop-version']).toBe(String(version));
      expect(String(infos[0].headers['upload-limit'])).toContain('max-size=');
      await expectDelivered(String(final.headers.location), data);
      // Never to an HTTP/1.0 client: the first status line is the final one.
      const old = await rawSocketRequest(
        app.port,
        `POST /files HTTP/1.0\r\nHost: 127.0.0.1\r\nUpload-Draft-Interop-Version: ${version}\r\nUpload-Complete: ?1\r\nContent-Length: 0`,
      );
      expect(old.status).toBe(201);
    });

    it('OPTIONS announces Upload-Limit', async () => {
      const res = await app.request({ method: 'OPTIONS', path: '/files', headers: draft });
      expect(res.status).toBeLessThan(300);
      expect(res.headers['upload-limit']).toMatch(/max-size=\d+/);
    });
  });

  it('a TUS 1.0.0 client on the same endpoint is served as ever', async () => {
    const data = randomBytes(MiB + 7);
    const { url } = await upload(data, endpoint, 'tus-v1', { chunkSize: 256 * KiB });
    await expectDelivered(url, data);
    const head = await app.request({ method: 'HEAD', path: new URL(url).pathname, headers: TUS });
    expect(head.status).toBe(200);
    expect(head.headers['tus-resumable']).toBe('1.0.0');
  });

  it('ietfDraft: false serves TUS 1.0.0 only: a draft request is a TUS 412', async () => {
    const off = await createTestApp({ ietfDraft: false });
    try {
      const res = await off.request({
        method: 'POST',
        path: '/files',
        headers: { 'Upload-Draft-Interop-Version': '6', 'Upload-Complete': '?0' },
      });
      expect(res.status).toBe(412);
      expect(res.headers['tus-resumable']).toBe('1.0.0');
    } finally {
      await off.close();
    }
  });
});

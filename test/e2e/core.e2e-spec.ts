import { afterAll, beforeAll, describe, expect, it } from '@jest/globals';
import fsExt from 'fs-ext';
import { randomBytes } from 'node:crypto';
import { open, readFile, readdir, stat } from 'node:fs/promises';
import { join } from 'node:path';
import {
  OCTETS,
  TUS,
  completedPaths,
  createTestApp,
  createUpload,
  entriesOf,
  headUpload,
  idOf,
  patchUpload,
  type TestApp,
  forEachPlatform,
} from '../support/app.js';
import {
  chunksOf,
  expectContinueRequest,
  pollUntil,
  rawSocketRequest,
  sha256,
  sha256File,
} from '../support/http.js';

const KiB = 1024;
const MiB = 1024 * KiB;
const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/;
const b64 = (s: string) => Buffer.from(s).toString('base64');

/** The first `length` bytes of an upload's data file. */
async function storedPrefix(app: TestApp, id: string, length: number): Promise<Buffer> {
  const handle = await open(join(app.uploadDir, id), 'r');
  try {
    const buffer = Buffer.alloc(length);
    const { bytesRead } = await handle.read(buffer, 0, length, 0);
    return buffer.subarray(0, bytesRead);
  } finally {
    await handle.close();
  }
}

/**
 * A complete upload was finalized: its data file in completedDir holds exactly `data`, and
 * nothing of it (data, record, temp file) is left in uploadDir.
 */
async function expectFinalized(app: TestApp, id: string, data: Buffer): Promise<void> {
  const { data: path } = completedPaths(app, id);
  expect(await sha256File(path)).toBe(sha256(data));
  expect((await stat(path)).size).toBe(data.length);
  expect(await entriesOf(app.uploadDir, id)).toEqual([]);
}

/** True while some open file description holds an exclusive flock on `path`. */
async function isFlocked(path: string): Promise<boolean> {
  const handle = await open(path, 'r');
  try {
    fsExt.flockSync(handle.fd, 'exnb');
    fsExt.flockSync(handle.fd, 'un');
    return false;
  } catch (e) {
    if (
      (e as NodeJS.ErrnoException).code === 'EWOULDBLOCK' ||
      (e as NodeJS.ErrnoException).code === 'EAGAIN'
    ) {
      return true;
    }
    throw e;
  } finally {
    await handle.close();
  }
}

forEachPlatform((platform) => {
  describe('TUS core + creation over real HTTP', () => {
    let app: TestApp;

    beforeAll(async () => {
      app = await createTestApp({ path: 'files' });
    });
    afterAll(async () => {
      await app?.close();
    });

    it('binds 127.0.0.1 on an ephemeral port', () => {
      expect(app.server.address()).toMatchObject({ address: '127.0.0.1' });
      expect(app.port).toBeGreaterThan(0);
    });

    describe('OPTIONS', () => {
      it('answers 204 with Tus-Version and Tus-Extension, ignoring Tus-Resumable', async () => {
        for (const headers of [{}, { 'Tus-Resumable': '0.0.1' }, { ...TUS }]) {
          const res = await app.request({ method: 'OPTIONS', path: '/files', headers });
          expect(res.status).toBe(204);
          expect(res.headers['tus-version']).toBe('1.0.0');
          expect(String(res.headers['tus-extension']).split(',')).toContain('creation');
          // No limit configured: no Tus-Max-Size.
          expect(res.headers['tus-max-size']).toBeUndefined();
          expect(res.body.length).toBe(0);
        }
      });

      it('answers OPTIONS on an upload URL too', async () => {
        const res = await app.request({
          method: 'OPTIONS',
          path: '/files/00000000-0000-4000-8000-000000000000',
        });
        expect(res.status).toBe(204);
        expect(res.headers['tus-version']).toBe('1.0.0');
      });
    });

    it('creates, PATCHes in several pieces, HEAD reports completion, the bytes are exact', async () => {
      const data = randomBytes(3 * MiB + 17);
      const {
        res: created,
        id,
        location,
      } = await createUpload(app, data.length, {
        headers: { 'Upload-Metadata': `filename ${b64('report.pdf')},is_confidential` },
      });
      expect(created.status).toBe(201);
      expect(created.headers['tus-resumable']).toBe('1.0.0');
      expect(location).toBe(`${app.baseUrl}/files/${id}`);
      expect(id).toMatch(UUID);

      // "MUST always include the Upload-Offset header ... even if the offset is 0".
      const fresh = await headUpload(app, id);
      expect(fresh.res.status).toBe(200);
      expect(fresh.offset).toBe(0);
      expect(fresh.res.headers['upload-length']).toBe(String(data.length));

      const cuts = [0, 1, 700 * KiB + 3, 2 * MiB, data.length];
      for (let i = 0; i + 1 < cuts.length; i++) {
        const res = await patchUpload(app, id, cuts[i], data.subarray(cuts[i], cuts[i + 1]));
        expect(res.status).toBe(204);
        expect(res.headers['upload-offset']).toBe(String(cuts[i + 1]));
        expect(res.headers['tus-resumable']).toBe('1.0.0');
      }

      const head = await headUpload(app, id);
      expect(head.res.status).toBe(200);
      expect(head.res.headers['upload-offset']).toBe(String(data.length));
      expect(head.res.headers['upload-length']).toBe(String(data.length));
      expect(head.res.headers['cache-control']).toBe('no-store');
      expect(head.res.headers['tus-resumable']).toBe('1.0.0');
      expect(String(head.res.headers['upload-metadata']).split(',').sort()).toEqual(
        [`filename ${b64('report.pdf')}`, 'is_confidential'].sort(),
      );
      expect(head.res.body.length).toBe(0);

      // Finalized by the last PATCH: data and record are in completedDir, staging is empty.
      await expectFinalized(app, id, data);
      const record = JSON.parse(await readFile(completedPaths(app, id).record, 'utf8')) as {
        created_at: number;
        last_write: number;
        finished_at: string;
        duration: number;
      };
      expect(record).toMatchObject({
        length: data.length,
        offset: data.length,
        metadata: { filename: 'report.pdf', is_confidential: '' },
        server_metadata: {},
      });
      expect(typeof record.created_at).toBe('number');
      expect(record.last_write).toBeGreaterThanOrEqual(record.created_at);
      expect(new Date(record.finished_at).toISOString()).toBe(record.finished_at);
      expect(record.duration).toBeGreaterThanOrEqual(0);
    });

    it('creates an empty upload (Upload-Length: 0) that is complete at once', async () => {
      const { res, id } = await createUpload(app, 0);
      expect(res.status).toBe(201);
      const head = await headUpload(app, id);
      expect(head.res.status).toBe(200);
      expect(head.res.headers['upload-offset']).toBe('0');
      expect(head.res.headers['upload-length']).toBe('0');
      // Complete at creation, so finalized by the POST itself.
      await expectFinalized(app, id, Buffer.alloc(0));
    });

    describe('refusals', () => {
      it('412 with Tus-Version when Tus-Resumable is missing or unsupported, nothing created', async () => {
        const before = await readdir(app.uploadDir);
        const completedBefore = await readdir(app.completedDir);
        for (const headers of [{}, { 'Tus-Resumable': '0.2.2' }]) {
          const res = await app.request({
            method: 'POST',
            path: '/files',
            headers: { ...headers, 'Upload-Length': '10' },
          });
          expect(res.status).toBe(412);
          expect(res.headers['tus-version']).toBe('1.0.0');
          expect(res.headers['tus-resumable']).toBe('1.0.0');
          expect(res.headers.location).toBeUndefined();
        }
        expect((await readdir(app.uploadDir)).sort()).toEqual(before.sort());
        expect((await readdir(app.completedDir)).sort()).toEqual(completedBefore.sort());
      });

      it('400 for a creation without a valid Upload-Length', async () => {
        for (const value of [
          undefined,
          '',
          '-1',
          '+5',
          '1e3',
          '0x10',
          'abc',
          '12 34',
          '99999999999999999',
        ]) {
          const headers: Record<string, string> = { ...TUS };
          if (value !== undefined) headers['Upload-Length'] = value;
          const res = await app.request({ method: 'POST', path: '/files', headers });
          expect(res.status).toBe(400);
          expect(res.headers['tus-resumable']).toBe('1.0.0');
        }
      });

      it('409 with the current offset on a mismatched Upload-Offset, upload untouched', async () => {
        const data = randomBytes(1000);
        const { id } = await createUpload(app, data.length);
        expect((await patchUpload(app, id, 0, data.subarray(0, 400))).status).toBe(204);
        const res = await patchUpload(app, id, 100, data.subarray(100, 500));
        expect(res.status).toBe(409);
        expect(res.headers['upload-offset']).toBe('400');
        expect(res.headers['tus-resumable']).toBe('1.0.0');
        expect((await headUpload(app, id)).offset).toBe(400);
        expect(sha256(await storedPrefix(app, id, 400))).toBe(sha256(data.subarray(0, 400)));
      });

      it('415 on a PATCH without Content-Type application/offset+octet-stream', async () => {
        const { id } = await createUpload(app, 10);
        const res = await patchUpload(app, id, 0, Buffer.alloc(10), {
          headers: { 'Content-Type': 'application/octet-stream' },
        });
        expect(res.status).toBe(415);
        expect(res.headers['tus-resumable']).toBe('1.0.0');
        expect((await headUpload(app, id)).offset).toBe(0);
      });

      it('413 when a Content-Length would pass Upload-Length, offset unchanged', async () => {
        const data = randomBytes(100);
        const { id } = await createUpload(app, 100);
        const over = await patchUpload(app, id, 0, randomBytes(150));
        expect(over.status).toBe(413);
        expect(over.headers['tus-resumable']).toBe('1.0.0');
        expect((await headUpload(app, id)).offset).toBe(0);

        expect((await patchUpload(app, id, 0, data.subarray(0, 60))).status).toBe(204);
        const past = await patchUpload(app, id, 60, randomBytes(41));
        expect(past.status).toBe(413);
        expect((await headUpload(app, id)).offset).toBe(60);

        expect((await patchUpload(app, id, 60, data.subarray(60))).status).toBe(204);
        await expectFinalized(app, id, data);
      });

      it('413 when a chunked body runs past Upload-Length; nothing is written past the end', async () => {
        const { id } = await createUpload(app, 100);
        const res = await patchUpload(app, id, 0, chunksOf(randomBytes(150), 50));
        expect(res.status).toBe(413);
        expect(res.headers['tus-resumable']).toBe('1.0.0');
        const head = await headUpload(app, id);
        expect(head.res.status).toBe(200);
        expect(head.offset).toBeLessThanOrEqual(100);
        if (head.offset === 100) {
          // The 100 bytes that fit were written: the request wrote the last byte, so the upload
          // is complete and finalized (data in completedDir, sized 100, nothing left in staging).
          expect((await stat(completedPaths(app, id).data)).size).toBe(100);
          expect(await entriesOf(app.uploadDir, id)).toEqual([]);
        } else {
          expect((await stat(join(app.uploadDir, id))).size).toBe(100);
        }
      });
    });

    describe('Location', () => {
      it('is absolute and correct for POST /files and POST /files/ (no doubled slash)', async () => {
        for (const path of ['/files', '/files/']) {
          const { res, id, location } = await createUpload(app, 5, { path });
          expect(res.status).toBe(201);
          expect(location).toMatch(
            new RegExp(`^http://127\\.0\\.0\\.1:${app.port}/files/[0-9a-f-]{36}$`),
          );
          expect(id).toMatch(UUID);
          // The Location works as given.
          const head = await app.request({ method: 'HEAD', path: location, headers: { ...TUS } });
          expect(head.status).toBe(200);
          expect(head.headers['upload-length']).toBe('5');
        }
      });

      it('includes the global prefix: http://127.0.0.1:PORT/api/files/<uuid>', async () => {
        const prefixed = await createTestApp({ path: 'files', globalPrefix: 'api' });
        try {
          for (const path of ['/api/files', '/api/files/']) {
            const { res, location } = await createUpload(prefixed, 7, { path });
            expect(res.status).toBe(201);
            expect(location).toMatch(
              new RegExp(`^http://127\\.0\\.0\\.1:${prefixed.port}/api/files/[0-9a-f-]{36}$`),
            );
            const data = randomBytes(7);
            const patch = await prefixed.request({
              method: 'PATCH',
              path: location,
              headers: { ...TUS, 'Content-Type': OCTETS, 'Upload-Offset': '0' },
              body: data,
            });
            expect(patch.status).toBe(204);
            await expectFinalized(prefixed, idOf(location), data);
          }
          // Without the prefix there is no TUS route.
          expect((await createUpload(prefixed, 7, { path: '/files' })).res.status).toBe(404);
        } finally {
          await prefixed.close();
        }
      });

      it('follows a custom path option', async () => {
        const custom = await createTestApp({ path: 'uploads/tus' });
        try {
          const { res, location } = await createUpload(custom, 3, { path: '/uploads/tus/' });
          expect(res.status).toBe(201);
          expect(location).toMatch(
            new RegExp(`^http://127\\.0\\.0\\.1:${custom.port}/uploads/tus/[0-9a-f-]{36}$`),
          );
          const head = await custom.request({
            method: 'HEAD',
            path: location,
            headers: { ...TUS },
          });
          expect(head.status).toBe(200);
        } finally {
          await custom.close();
        }
      });

      it.each([
        ['a space', 'Host: bad host'],
        ['a slash', 'Host: evil.example/path'],
        ['userinfo', 'Host: user@evil.example'],
        ['a bad port', 'Host: example.org:99999'],
        ['an empty value', 'Host: '],
      ])('a malformed Host header (%s) is 400, never 500', async (_name, hostLine) => {
        const before = await readdir(app.uploadDir);
        const completedBefore = await readdir(app.completedDir);
        const res = await rawSocketRequest(
          app.port,
          [
            'POST /files HTTP/1.1',
            hostLine,
            'Tus-Resumable: 1.0.0',
            'Upload-Length: 10',
            'Content-Length: 0',
          ].join('\r\n'),
        );
        expect(res.status).toBe(400);
        expect(res.headers.location).toBeUndefined();
        expect((await readdir(app.uploadDir)).sort()).toEqual(before.sort());
        expect((await readdir(app.completedDir)).sort()).toEqual(completedBefore.sort());
      });

      it.each([
        ['an upper-case name', 'LOCALHOST:8080', 'http://localhost:8080'],
        ['an IPv6 literal', '[::1]:8080', 'http://[::1]:8080'],
        // RFC 3986 reg-name allows "_" (unreserved); docker-compose service names carry it.
        ['a name with an underscore', 'tus_server:1080', 'http://tus_server:1080'],
      ])('a valid Host (%s) is echoed in Location', async (_name, host, origin) => {
        const res = await rawSocketRequest(
          app.port,
          [
            'POST /files HTTP/1.1',
            `Host: ${host}`,
            'Tus-Resumable: 1.0.0',
            'Upload-Length: 1',
            'Content-Length: 0',
          ].join('\r\n'),
        );
        expect(res.status).toBe(201);
        expect(res.headers.location).toMatch(
          new RegExp(`^${origin.replace(/[.[\]]/g, '\\$&')}/files/[0-9a-f-]{36}$`),
        );
      });

      it('an HTTP/1.0 creation without Host is 400, never 500', async () => {
        const res = await rawSocketRequest(
          app.port,
          [
            'POST /files HTTP/1.0',
            'Tus-Resumable: 1.0.0',
            'Upload-Length: 10',
            'Content-Length: 0',
          ].join('\r\n'),
        );
        expect(res.status).toBe(400);
        expect(res.headers['tus-resumable']).toBe('1.0.0');
      });
    });

    it('405 with Allow for methods outside the protocol', async () => {
      const { id } = await createUpload(app, 1);
      for (const [method, path] of [
        ['GET', `/files/${id}`],
        ['PUT', `/files/${id}`],
        ['DELETE', '/files'],
        ['HEAD', '/files'],
        ['PATCH', '/files'],
        ['POST', `/files/${id}`],
      ]) {
        const res = await app.request({ method, path, headers: { ...TUS } });
        expect({ method, path, status: res.status }).toEqual({ method, path, status: 405 });
        expect(res.headers.allow).toBeDefined();
        expect(res.headers['tus-resumable']).toBe('1.0.0');
      }
      expect((await headUpload(app, id)).res.status).toBe(200);
    });

    describe('Expect: 100-continue', () => {
      const patchHead = (id: string, offset: number, extra = '') =>
        `PATCH /files/${id} HTTP/1.1\r\nHost: 127.0.0.1\r\nTus-Resumable: 1.0.0\r\n` +
        `Content-Type: ${OCTETS}\r\nUpload-Offset: ${offset}${extra}`;

      it('a PATCH the server refuses is answered before the client sends its body', async () => {
        const { id } = await createUpload(app, 10);
        const body = Buffer.from('0123456789');
        // Wrong offset (409), unknown upload (404), wrong Tus-Resumable (412): no 100 first.
        for (const [head, status] of [
          [patchHead(id, 5), 409],
          [patchHead('00000000-0000-4000-8000-000000000000', 0), 404],
          [patchHead(id, 0).replace('Tus-Resumable: 1.0.0', 'Tus-Resumable: 0.9'), 412],
        ] as const) {
          const res = await expectContinueRequest(app.port, head, body);
          expect({ status: res.status, continued: res.continued, bodySent: res.bodySent }).toEqual({
            status,
            continued: false,
            bodySent: false,
          });
        }
        expect((await headUpload(app, id)).offset).toBe(0);
      });

      it('an accepted PATCH gets 100 Continue, then its body is written', async () => {
        const { id } = await createUpload(app, 10);
        const res = await expectContinueRequest(
          app.port,
          patchHead(id, 0),
          Buffer.from('0123456789'),
        );
        expect(res).toEqual({ continued: true, status: 204, bodySent: true });
        expect((await headUpload(app, id)).offset).toBe(10);
      });
    });

    describe('X-HTTP-Method-Override', () => {
      it('a POST overridden to PATCH writes, a POST overridden to HEAD reads', async () => {
        const data = randomBytes(4 * KiB);
        const { id } = await createUpload(app, data.length);
        const patch = await app.request({
          method: 'POST',
          path: `/files/${id}`,
          headers: {
            ...TUS,
            'X-HTTP-Method-Override': 'PATCH',
            'Content-Type': OCTETS,
            'Upload-Offset': '0',
          },
          body: data,
        });
        expect(patch.status).toBe(204);
        expect(patch.headers['upload-offset']).toBe(String(data.length));

        const head = await app.request({
          method: 'POST',
          path: `/files/${id}`,
          headers: { ...TUS, 'X-HTTP-Method-Override': 'HEAD' },
        });
        expect(head.status).toBe(200);
        expect(head.headers['upload-offset']).toBe(String(data.length));
        expect(head.headers['cache-control']).toBe('no-store');
        await expectFinalized(app, id, data);
      });

      it('the override is the method: a POST overridden to DELETE is 405, not a creation', async () => {
        const res = await app.request({
          method: 'POST',
          path: '/files',
          headers: { ...TUS, 'X-HTTP-Method-Override': 'DELETE', 'Upload-Length': '10' },
        });
        expect(res.status).toBe(405);
        expect(res.headers.location).toBeUndefined();
      });
    });

    it('accepts chunked PATCH bodies (Transfer-Encoding: chunked, no Content-Length)', async () => {
      const data = randomBytes(2 * MiB + 12_345);
      const { id } = await createUpload(app, data.length);
      const firstPart = 1 * MiB + 1;
      async function* uneven(buffer: Buffer): AsyncGenerator<Buffer> {
        const sizes = [1, 7, 4096, 65_536, 300_000, 13];
        for (let at = 0, i = 0; at < buffer.length; i++) {
          const size = sizes[i % sizes.length];
          yield buffer.subarray(at, at + size);
          at += size;
        }
      }
      const first = await patchUpload(app, id, 0, uneven(data.subarray(0, firstPart)));
      expect(first.status).toBe(204);
      expect(first.headers['upload-offset']).toBe(String(firstPart));
      const second = await patchUpload(app, id, firstPart, uneven(data.subarray(firstPart)), {
        headers: { 'Transfer-Encoding': 'chunked' },
      });
      expect(second.status).toBe(204);
      expect(second.headers['upload-offset']).toBe(String(data.length));
      await expectFinalized(app, id, data);
    });

    it('resumes after a connection dropped mid-body: the received bytes are kept', async () => {
      const data = randomBytes(8 * MiB);
      const { id } = await createUpload(app, data.length);
      const cut = await patchUpload(app, id, 0, data, { abortAfterBytes: 3 * MiB });
      expect(cut.closedWithoutResponse).toBe(true);
      expect(cut.bytesSent).toBe(3 * MiB);

      // The server commits the offset once it has seen the connection go.
      const { offset } = await pollUntil(
        () => headUpload(app, id),
        (h) => h.offset > 0,
        { what: 'a committed offset after the drop' },
      );
      expect(offset).toBeLessThanOrEqual(cut.bytesSent);
      expect(sha256(await storedPrefix(app, id, offset))).toBe(sha256(data.subarray(0, offset)));

      const rest = await patchUpload(app, id, offset, data.subarray(offset));
      expect(rest.status).toBe(204);
      expect(rest.headers['upload-offset']).toBe(String(data.length));
      await expectFinalized(app, id, data);
    });

    it.each([1, 10_000])(
      'keeps the %i bytes of a body cut right after they arrived, before the handler ran',
      async (sent) => {
        // The whole fragment and the FIN arrive at once, while the handler is still locking the
        // upload and reading its record: "store as much of the received data as possible".
        const data = randomBytes(100_000);
        const { id } = await createUpload(app, data.length);
        const cut = await patchUpload(app, id, 0, data, { abortAfterBytes: sent });
        expect(cut.bytesSent).toBe(sent);
        const offset = await pollUntil(
          async () => (await headUpload(app, id)).offset,
          (o) => o > 0,
          { timeoutMs: 2000, what: `an offset for the ${sent} bytes received` },
        );
        expect(offset).toBe(sent);
        expect(sha256(await storedPrefix(app, id, offset))).toBe(sha256(data.subarray(0, offset)));
      },
    );

    it('two concurrent PATCHes at one offset: one 204, the other 409 or 423, no mixed bytes', async () => {
      const size = 256 * KiB;
      const { id } = await createUpload(app, size);
      const bodies = [randomBytes(size), randomBytes(size)];
      let open!: () => void;
      const gate = new Promise<void>((resolve) => (open = resolve));
      let halves = 0;
      let bothHalves!: () => void;
      const halvesSent = new Promise<void>((resolve) => (bothHalves = resolve));
      async function* heldBack(data: Buffer): AsyncGenerator<Buffer> {
        yield data.subarray(0, size / 2);
        if (++halves === 2) bothHalves();
        await gate;
        yield data.subarray(size / 2);
      }
      const requests = bodies.map((body) =>
        patchUpload(app, id, 0, heldBack(body), { headers: { 'Content-Length': String(size) } }),
      );
      await halvesSent;
      // Both requests are in; one of them holds the upload's lock (a flock on the data file).
      await pollUntil(
        () => isFlocked(join(app.uploadDir, id)),
        (held) => held,
        { what: 'the upload lock held' },
      );
      open();
      const results = await Promise.all(requests);
      const statuses = results.map((r) => r.status).sort();
      expect(statuses.filter((s) => s === 204)).toHaveLength(1);
      expect([409, 423]).toContain(statuses.find((s) => s !== 204));
      const winner = results.findIndex((r) => r.status === 204);
      expect((await headUpload(app, id)).offset).toBe(size);
      await expectFinalized(app, id, bodies[winner]);
    });

    describe('not found', () => {
      let real: string;
      beforeAll(async () => {
        real = (await createUpload(app, 10)).id;
      });

      it.each([
        ['a non-UUID id', () => 'abc'],
        ['a numeric id', () => '12345'],
        ['an unknown UUID', () => '00000000-0000-4000-8000-000000000000'],
        ['an upload’s record file', () => `${real}.meta`],
        ['an upper-case spelling of a real id', () => real.toUpperCase()],
        ['an encoded traversal', () => '..%2F..%2Fetc'],
        ['an encoded traversal to a file', () => '..%2F..%2F..%2Fetc%2Fpasswd'],
        ['encoded dots', () => '%2e%2e'],
      ])('%s is 404 with Tus-Resumable for HEAD and PATCH', async (_name, id) => {
        const head = await app.request({
          method: 'HEAD',
          path: `/files/${id()}`,
          headers: { ...TUS },
        });
        expect(head.status).toBe(404);
        expect(head.headers['tus-resumable']).toBe('1.0.0');
        expect(head.headers['upload-offset']).toBeUndefined();
        expect(head.body.length).toBe(0);

        const patch = await app.request({
          method: 'PATCH',
          path: `/files/${id()}`,
          headers: { ...TUS, 'Content-Type': OCTETS, 'Upload-Offset': '0' },
          body: Buffer.from('0123456789'),
        });
        expect(patch.status).toBe(404);
        expect(patch.headers['tus-resumable']).toBe('1.0.0');
      });

      it('the record of a real upload is not writable through its URL', async () => {
        const before = await readFile(join(app.uploadDir, `${real}.meta`), 'utf8');
        await app.request({
          method: 'PATCH',
          path: `/files/${real}.meta`,
          headers: { ...TUS, 'Content-Type': OCTETS, 'Upload-Offset': '0' },
          body: Buffer.from('{"x":1}'),
        });
        expect(await readFile(join(app.uploadDir, `${real}.meta`), 'utf8')).toBe(before);
        expect((await headUpload(app, real)).offset).toBe(0);
      });

      it.each([
        ['HEAD', `/x`],
        ['PATCH', `/x`],
        ['HEAD', '/a/b'],
        ['PATCH', '//'],
        ['DELETE', '/../files/a/b'],
      ])(
        'paths below the creation URL name no upload: %s %s is a TUS 404',
        async (method, rest) => {
          const res = await app.request({
            method,
            path: `/files/${rest === '/x' ? real + rest : rest.slice(1)}`,
            headers: { ...TUS, 'Content-Type': OCTETS, 'Upload-Offset': '0' },
            body: method === 'PATCH' ? Buffer.from('abc') : undefined,
          });
          expect(res.status).toBe(404);
          expect(res.headers['tus-resumable']).toBe('1.0.0');
          if (method === 'PATCH') expect(res.body.toString()).toMatch(/^ERR_/);
        },
      );
    });

    it('logged no server-side failure over all of the above', () => {
      expect(app.logged.errors).toEqual([]);
    });
  });

  describe('limits and timeouts', () => {
    let app: TestApp;

    beforeAll(async () => {
      app = await createTestApp({
        bodyIdleTimeoutMs: 300,
        headersTimeoutMs: 12_345,
        maxSize: 10 * MiB,
      });
    });
    afterAll(async () => {
      await app?.close();
    });

    it('sets requestTimeout 0 and headersTimeout as configured on the http.Server', () => {
      const server = app.app.getHttpServer() as import('node:http').Server;
      expect(server.requestTimeout).toBe(0);
      expect(server.headersTimeout).toBe(12_345);
    });

    it('leaves the http.Server alone with configureHttpServer: false', async () => {
      const manual = await createTestApp({ configureHttpServer: false, headersTimeoutMs: 12_345 });
      try {
        // The platform's own default: Node's 300 s under Express, none under Fastify.
        expect(manual.server.requestTimeout).toBe(platform === 'fastify' ? 0 : 300_000);
        expect(manual.server.headersTimeout).not.toBe(12_345);
      } finally {
        await manual.close();
      }
    });

    it('advertises Tus-Max-Size and refuses a larger creation with 413', async () => {
      const options = await app.request({ method: 'OPTIONS', path: '/files' });
      expect(options.headers['tus-max-size']).toBe(String(10 * MiB));
      const { res } = await createUpload(app, 10 * MiB + 1);
      expect(res.status).toBe(413);
      expect(res.headers['tus-resumable']).toBe('1.0.0');
      expect((await createUpload(app, 10 * MiB)).res.status).toBe(201);
    });

    it('cuts a PATCH that stalls mid-body after bodyIdleTimeoutMs and keeps its bytes', async () => {
      const data = randomBytes(1 * MiB);
      const { id } = await createUpload(app, data.length);
      const started = Date.now();
      const stalled = await patchUpload(app, id, 0, data, {
        stallAfterBytes: 200 * KiB,
        timeoutMs: 10_000,
      });
      const elapsed = Date.now() - started;
      // The server closed the connection (no response: the client is considered gone).
      expect(stalled.closedWithoutResponse).toBe(true);
      expect(stalled.bytesSent).toBe(200 * KiB);
      expect(elapsed).toBeGreaterThanOrEqual(250);
      expect(elapsed).toBeLessThan(5000);

      const { offset } = await pollUntil(
        () => headUpload(app, id),
        (h) => h.offset > 0,
        { what: 'the offset of the stalled PATCH' },
      );
      // The connection was alive: every byte sent before the stall arrived and is kept.
      expect(offset).toBe(200 * KiB);
      expect(sha256(await storedPrefix(app, id, offset))).toBe(sha256(data.subarray(0, offset)));

      const rest = await patchUpload(app, id, offset, data.subarray(offset));
      expect(rest.status).toBe(204);
      await expectFinalized(app, id, data);
    });

    it('logged no server-side failure', () => {
      expect(app.logged.errors).toEqual([]);
    });
  });
});

import { afterAll, afterEach, beforeAll, describe, expect, it } from '@jest/globals';
import { existsSync } from 'node:fs';
import { mkdir } from 'node:fs/promises';
import { join } from 'node:path';
import { TUS, idOf } from '../support/app.js';
import { forEachPlatform } from '../support/app.js';
import { runPythonScript, tuspyMissing } from '../support/clients-python.js';
import {
  KiB,
  MiB,
  randomFile,
  startSampleServer,
  type SampleServer,
} from '../support/clients-server.js';
import { startFaultyProxy, type FaultyProxy } from '../support/clients-tcp-proxy.js';

/** tuspy's default chunk size: `sys.maxsize`, the whole file in one PATCH. */
const WHOLE_FILE = '9223372036854775807';

interface UploadResult {
  url: string;
  offset: number;
}

interface ResumeResult extends UploadResult {
  resumed_url: string | null;
  started_at: number;
  chunks: number;
}

forEachPlatform(() => {
  describe('tuspy (python3-tuspy) against the sample app', () => {
    let server: SampleServer;
    let sourceDir: string;
    let proxy: FaultyProxy | undefined;

    beforeAll(async () => {
      const missing = await tuspyMissing();
      if (missing) throw new Error(missing);
      server = await startSampleServer({ prefix: 'tussi-clients-tuspy-' });
      sourceDir = join(server.root, 'sources');
      await mkdir(sourceDir);
    });
    afterEach(async () => {
      await proxy?.close();
      proxy = undefined;
    });
    afterAll(async () => {
      await server?.close();
    });

    it.each([
      ['1 B in one PATCH', 1, WHOLE_FILE, []],
      ['3 MiB in 512 KiB chunks', 3 * MiB + 5, String(512 * KiB), []],
      [
        '5 MiB in 1 MiB chunks with Upload-Checksum (sha1)',
        5 * MiB,
        String(1 * MiB),
        ['--checksum'],
      ],
      ['8 MiB in one PATCH', 8 * MiB, WHOLE_FILE, []],
    ])('uploads %s', async (label, size, chunkSize, flags) => {
      const file = await randomFile(sourceDir, `tuspy-${label.split(' ')[0]}-${size}.bin`, size);
      const result = await runPythonScript<UploadResult>('clients-tuspy-upload.py', [
        server.endpoint,
        file.path,
        chunkSize,
        ...flags,
      ]);
      expect(result.url).toMatch(new RegExp(`^${server.endpoint}[0-9a-f-]{36}$`));
      expect(result.offset).toBe(size);
      await server.expectDelivered(result.url, {
        sha256: file.sha256,
        length: size,
        filename: file.name,
      });
    });

    it('resumes in a new process from the URL in its FileStorage', async () => {
      const file = await randomFile(sourceDir, 'tuspy-resumed.bin', 4 * MiB + 3);
      const chunk = 512 * KiB;
      const storage = join(server.root, 'tuspy-urls.json');
      const args = [server.endpoint, file.path, String(chunk), storage];

      // First run: three chunks, then the program stops.
      const first = await runPythonScript<ResumeResult>('clients-tuspy-resume.py', [
        ...args,
        'start',
        '3',
      ]);
      expect(first).toMatchObject({ resumed_url: null, started_at: 0, chunks: 3 });
      expect(first.offset).toBe(3 * chunk);
      const id = idOf(first.url);
      const head = await server.app.request({
        method: 'HEAD',
        path: first.url,
        headers: { ...TUS },
      });
      expect(head.status).toBe(200);
      expect(head.headers['upload-offset']).toBe(String(3 * chunk));
      expect(head.headers['upload-length']).toBe(String(file.data.length));
      expect(existsSync(join(server.app.uploadDir, id))).toBe(true);

      // Second run: a new uploader for the same file finds the URL, asks for the offset (HEAD),
      // and sends the rest from there.
      const second = await runPythonScript<ResumeResult>('clients-tuspy-resume.py', [
        ...args,
        'finish',
      ]);
      expect(second.resumed_url).toBe(first.url);
      expect(second.url).toBe(first.url);
      expect(second.started_at).toBe(3 * chunk);
      expect(second.offset).toBe(file.data.length);
      expect(second.chunks).toBe(Math.ceil((file.data.length - 3 * chunk) / chunk));
      await server.expectDelivered(first.url, {
        sha256: file.sha256,
        length: file.data.length,
        filename: file.name,
      });
    });

    it('retries after a dropped connection and goes on from the server offset', async () => {
      const file = await randomFile(sourceDir, 'tuspy-dropped.bin', 5 * MiB + 11);
      proxy = await startFaultyProxy({
        targetPort: server.app.port,
        afterBytes: 2.5 * MiB,
        mode: 'cut',
        upstream: 'fin',
        count: 'all', // tuspy opens a connection per request
      });
      const endpoint = `${proxy.baseUrl}/files/`;
      const result = await runPythonScript<UploadResult>('clients-tuspy-upload.py', [
        endpoint,
        file.path,
        String(1 * MiB),
        '--retries',
        '5',
      ]);
      const { connection } = await proxy.fired;
      expect(result.url.startsWith(endpoint)).toBe(true);
      expect(result.offset).toBe(file.data.length);
      // One request a connection: the cut one was the third PATCH (offset 2 MiB); tuspy then asked
      // for the offset (HEAD) and sent the rest from the bytes the server kept of the cut PATCH.
      const requests = proxy.firstRequests.map((head) => ({
        method: head.split(' ')[0],
        offset: Number(/\r\nupload-offset: *(\d+)/i.exec(head)?.[1] ?? Number.NaN),
      }));
      expect(requests[connection - 1]).toEqual({ method: 'PATCH', offset: 2 * MiB });
      const after = requests.slice(connection);
      expect(after[0].method).toBe('HEAD');
      const resumedAt = after.filter((r) => r.method === 'PATCH').map((r) => r.offset);
      expect(resumedAt.some((offset) => offset > 2 * MiB && offset <= 2.5 * MiB)).toBe(true);
      await server.expectDelivered(result.url, {
        sha256: file.sha256,
        length: file.data.length,
        filename: file.name,
      });
    });
  });
});

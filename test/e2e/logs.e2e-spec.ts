import { afterAll, beforeAll, describe, expect, it, jest } from '@jest/globals';
import {
  FilesystemRecordStore,
  TusJsonLogger,
  TusModule,
  type UploadRecord,
} from '../../src/index.js';
import {
  TUS,
  createUpload,
  forEachPlatform,
  patchUpload,
  startApp,
  tempDirs,
  type TestApp,
} from '../support/app.js';

/** A record store that fails, like a disk gone bad, for the uploads named in `failFor`. */
class FlakyRecords extends FilesystemRecordStore {
  readonly failFor = new Set<string>();
  override async get(id: string): Promise<UploadRecord | null> {
    if (this.failFor.has(id)) throw new Error('the disk is on fire');
    return super.get(id);
  }
}

interface Line {
  level: string;
  time: string;
  message: unknown;
  context?: string;
  requestId?: string;
  uploadId?: string;
  stack?: unknown;
}

forEachPlatform(() => {
  describe('JSON logs (TusJsonLogger)', () => {
    let app: TestApp;
    let records: FlakyRecords;
    let written: string[];
    let restore: () => void;

    beforeAll(async () => {
      const dirs = await tempDirs('tussi-logs-');
      records = new FlakyRecords(dirs.uploadDir, false);
      app = await startApp(
        [
          TusModule.forRoot({
            uploadDir: dirs.uploadDir,
            completedDir: dirs.completedDir,
            recordStore: records,
          }),
        ],
        { ...dirs, removeOnClose: dirs.root },
      );
      app.app.useLogger(new TusJsonLogger({ logLevels: ['error', 'warn', 'log'] }));
      written = [];
      const spy = jest.spyOn(process.stdout, 'write').mockImplementation((chunk: unknown) => {
        written.push(String(chunk));
        return true;
      });
      const errSpy = jest.spyOn(process.stderr, 'write').mockImplementation((chunk: unknown) => {
        written.push(String(chunk));
        return true;
      });
      restore = () => {
        spy.mockRestore();
        errSpy.mockRestore();
      };
    });
    afterAll(async () => {
      restore?.();
      await app?.close();
    });

    const lines = (): Line[] =>
      written
        .join('')
        .split('\n')
        .filter((l) => l.trim() !== '')
        .map((l) => JSON.parse(l) as Line);

    it('one JSON object per line, with time, level, message, and the request and upload ids', async () => {
      const { id, res } = await createUpload(app, 4);
      const requestId = String(res.headers['x-request-id']);
      expect(requestId).toMatch(/^[0-9a-f-]{36}$/);
      // A refusal: logged once, with the TUS code, the request's id and the upload's.
      const refused = await patchUpload(app, id, 2, Buffer.from('ab'), {
        headers: { 'X-Request-Id': 'edge-1234.abc' },
      });
      expect(refused.status).toBe(409);
      expect(refused.headers['x-request-id']).toBe('edge-1234.abc');
      // An id too long or with characters a line could be forged with is not taken.
      for (const sent of ['x'.repeat(65), 'a b', 'a"b']) {
        const res = await app.request({
          method: 'HEAD',
          path: `/files/${id}`,
          headers: { ...TUS, 'X-Request-Id': sent },
        });
        expect(res.headers['x-request-id']).toMatch(/^[0-9a-f-]{36}$/);
      }

      const all = lines();
      for (const line of all) {
        expect(typeof line.level).toBe('string');
        expect(new Date(line.time).toISOString()).toBe(line.time);
      }
      const refusal = all.filter((l) => String(l.message).startsWith(`refused PATCH ${id}`));
      expect(refusal).toHaveLength(1);
      expect(refusal[0]).toMatchObject({
        level: 'log',
        message: `refused PATCH ${id}: 409 ERR_MISMATCHED_OFFSET`,
        requestId: 'edge-1234.abc',
        uploadId: id,
      });
    });

    it('a 5xx is logged once, with its stack, the request id and the upload id', async () => {
      const { id } = await createUpload(app, 4);
      written.length = 0;
      records.failFor.add(id);
      const res = await app.request({
        method: 'HEAD',
        path: `/files/${id}`,
        headers: { ...TUS, 'X-Request-Id': 'req-500' },
      });
      expect(res.status).toBe(500);
      const errors = lines().filter((l) => l.level === 'error');
      expect(errors).toHaveLength(1);
      expect(errors[0]).toMatchObject({ requestId: 'req-500', uploadId: id, context: 'TusModule' });
      expect(String(errors[0].stack)).toContain('the disk is on fire');
      records.failFor.delete(id);
      // The module's own error sink, which the suites check, saw it too.
      app.logged.errors.length = 0;
    });
  });
});

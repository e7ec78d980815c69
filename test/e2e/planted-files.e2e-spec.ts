import { afterAll, afterEach, beforeAll, beforeEach, describe, expect, it } from '@jest/globals';
import { execFileSync } from 'node:child_process';
import { closeSync, constants, openSync } from 'node:fs';
import {
  link,
  lstat,
  readFile,
  readdir,
  rm,
  stat,
  symlink,
  unlink,
  writeFile,
} from 'node:fs/promises';
import { join } from 'node:path';
import { CompletedUploadQueue, TusHandler } from '../../src/index.js';
import {
  OCTETS,
  TUS,
  completedPaths,
  createTestApp,
  createUpload,
  type TestApp,
} from '../support/app.js';
import type { RawRequestOptions, RawResponse } from '../support/http.js';
import {
  SECRET,
  fingerprint,
  plantOutsideSecrets,
  type OutsideSecrets,
} from '../support/planted.js';

/**
 * A local user with write access to the upload and completed directories plants symlinks,
 * FIFOs and hard links where the server expects its own files. Over HTTP: no request follows
 * them (files outside keep their content, mode and mtime), none waits on a FIFO (every request
 * answers within its timeout, with a 4xx, and other uploads go on), each is moved aside with one
 * warning, and nothing is logged as a server error.
 */

/** Every request of this suite gives up after this long: a FIFO waited on fails the test. */
const ANSWER_WITHIN_MS = 5000;

let planted: OutsideSecrets;
let outside: string;
let secret: string;
let secretRecord: string;

beforeAll(async () => {
  planted = await plantOutsideSecrets('tussi-outside-e2e-');
  ({ outside, secret, secretRecord } = planted);
});
afterAll(() => planted.dispose());

/** Every file outside, as a server that never wrote leaves it. */
async function outsideState(): Promise<Record<string, unknown>> {
  const state: Record<string, unknown> = {};
  for (const name of (await readdir(outside)).sort()) {
    state[name] = await fingerprint(join(outside, name));
  }
  return state;
}

/**
 * Opens every FIFO under `dir` read-write without blocking, then closes it: an open blocked on
 * one (the bug this suite catches) returns, so a failure cannot keep the process from exiting.
 */
async function releaseFifos(dir: string): Promise<void> {
  for (const entry of await readdir(dir, { recursive: true }).catch(() => [] as string[])) {
    const path = join(dir, entry);
    if ((await lstat(path).catch(() => null))?.isFIFO()) {
      closeSync(openSync(path, constants.O_RDWR | constants.O_NONBLOCK));
    }
  }
}

/** Names in `dir` moved aside as quarantined. */
async function quarantinedIn(dir: string): Promise<string[]> {
  return (await readdir(dir)).filter((name) => /\.quarantined-[0-9a-f]{12}$/.test(name));
}

const mode = async (path: string) => ((await stat(path)).mode & 0o7777).toString(8);

describe('planted files', () => {
  let app: TestApp;
  let before: Record<string, unknown>;
  /** Requests of this app, each bounded by ANSWER_WITHIN_MS. */
  const send = (options: RawRequestOptions): Promise<RawResponse> =>
    app.request({ timeoutMs: ANSWER_WITHIN_MS, ...options });
  const patch = (id: string, offset: number, body: Buffer) =>
    send({
      method: 'PATCH',
      path: `/files/${id}`,
      body,
      headers: { ...TUS, 'Content-Type': OCTETS, 'Upload-Offset': String(offset) },
    });
  const head = (id: string) => send({ method: 'HEAD', path: `/files/${id}`, headers: TUS });

  beforeEach(async () => {
    app = await createTestApp({ janitor: false });
    before = await outsideState();
  });
  afterEach(async () => {
    await releaseFifos(app.uploadDir);
    await releaseFifos(app.completedDir);
    await app.close();
    // Nothing outside the directories was written, whatever the test did.
    expect(await outsideState()).toEqual(before);
  });

  it('a symlink in place of a data file: PATCH answers 404 and never writes the file it points to', async () => {
    const { id } = await createUpload(app, SECRET.length);
    const data = join(app.uploadDir, id);
    await unlink(data);
    await symlink(secret, data);

    const res = await patch(id, 0, Buffer.alloc(SECRET.length, 'X'));
    expect(res.status).toBe(404);
    expect(await readFile(secret, 'utf8')).toBe(SECRET);
    const [aside] = await quarantinedIn(app.uploadDir);
    expect((await lstat(join(app.uploadDir, aside))).isSymbolicLink()).toBe(true);
    expect(app.logged.warnings).toEqual([expect.stringContaining(`refused ${data}`)]);
    expect(app.logged.errors).toEqual([]);
    // And again: nothing to follow any more.
    expect((await patch(id, 0, Buffer.from('X'))).status).toBe(404);
  });

  it('a symlink in place of a record: HEAD and PATCH answer 404, never from the file it points to', async () => {
    const { id } = await createUpload(app, 100);
    const record = join(app.uploadDir, `${id}.meta`);
    await unlink(record);
    await symlink(secretRecord, record);

    const res = await head(id);
    expect(res.status).toBe(404);
    expect(res.headers['upload-offset']).toBeUndefined();
    expect((await patch(id, 42, Buffer.from('data'))).status).toBe(404);
    expect(app.logged.warnings).toEqual([expect.stringContaining(secretRecord)]);
    expect(app.logged.errors).toEqual([]);
  });

  it('a record that is no upload record: HEAD answers 404 (not a 500), it is moved aside with one warning', async () => {
    const { id } = await createUpload(app, 100);
    const record = join(app.uploadDir, `${id}.meta`);
    await writeFile(record, '{"offset": "seven"');

    const res = await head(id);
    expect(res.status).toBe(404);
    expect((await patch(id, 0, Buffer.from('data'))).status).toBe(404);
    const [aside] = await quarantinedIn(app.uploadDir);
    expect(aside).toMatch(new RegExp(`^${id}\\.meta\\.quarantined-`));
    expect(await readFile(join(app.uploadDir, aside), 'utf8')).toBe('{"offset": "seven"');
    expect(app.logged.warnings).toEqual([
      expect.stringMatching(new RegExp(`refused ${record} .*not an upload record.*moved aside`)),
    ]);
    expect(app.logged.errors).toEqual([]);
  });

  it('a hard link in place of a data file is refused: the file it shares a name with is not written', async () => {
    // A hard link is a regular file, but its other name may be any file of the filesystem:
    // data files and records must have exactly one link.
    const shared = join(outside, 'shared');
    await writeFile(shared, 'shared content', { mode: 0o644 });
    before = await outsideState();
    const { id } = await createUpload(app, 14);
    const data = join(app.uploadDir, id);
    await unlink(data);
    await link(shared, data);

    expect((await patch(id, 0, Buffer.alloc(14, 'X'))).status).toBe(404);
    expect(await readFile(shared, 'utf8')).toBe('shared content');
    expect(app.logged.warnings).toEqual([expect.stringContaining('hard link')]);
    expect(app.logged.errors).toEqual([]);
    await rm(shared);
    before = await outsideState();
  });

  it('symlinks where a finished upload goes in the completed directory are replaced, never followed', async () => {
    const { id } = await createUpload(app, 5);
    const done = completedPaths(app, id);
    await symlink(secret, done.data);
    await symlink(secretRecord, done.record);
    await symlink(secret, done.receipt);

    const res = await patch(id, 0, Buffer.from('hello'));
    expect(res.status).toBe(204);
    expect(res.headers['upload-offset']).toBe('5');
    const info = await lstat(done.data);
    expect(info.isFile()).toBe(true);
    expect(await readFile(done.data, 'utf8')).toBe('hello');

    const queue = app.app.get(CompletedUploadQueue);
    const upload = await queue.waitForFile({ timeout: ANSWER_WITHIN_MS });
    expect(upload.name).toBe(id);
    expect(upload.record.length).toBe(5);
    const dest = join(app.uploadDir, '..', 'delivered');
    await upload.save(dest);
    await upload.release();
    expect(await readFile(dest, 'utf8')).toBe('hello');
    expect((await head(id)).headers['upload-offset']).toBe('5');
    expect(app.logged.errors).toEqual([]);
  });

  describe('concatenation', () => {
    const partial = async (content: string, upload = true) => {
      const { id } = await createUpload(app, content.length, {
        headers: { 'Upload-Concat': 'partial' },
      });
      if (upload) expect((await patch(id, 0, Buffer.from(content))).status).toBe(204);
      return id;
    };
    const createFinal = (parts: string[]) =>
      send({
        method: 'POST',
        path: '/files',
        headers: { ...TUS, 'Upload-Concat': `final;${parts.map((p) => `/files/${p}`).join(' ')}` },
      });
    const plantSecret = async (id: string) => {
      await unlink(join(app.uploadDir, id));
      await symlink(secret, join(app.uploadDir, id));
    };
    /** No byte of the secret in any file of the server's directories. */
    const secretNowhere = async () => {
      for (const dir of [app.uploadDir, app.completedDir]) {
        for (const name of await readdir(dir)) {
          const path = join(dir, name);
          if ((await lstat(path)).isFile()) {
            expect(await readFile(path, 'utf8')).not.toContain('SECRET');
          }
        }
      }
    };

    it('a final naming a planted partial is refused (410, the partial is gone) and leaves nothing', async () => {
      const a = await partial('aaaa');
      const b = await partial('bbbb');
      await plantSecret(a);
      const res = await createFinal([a, b]);
      expect(res.status).toBe(410);
      await app.app.get(TusHandler).settled();
      expect(await readdir(app.completedDir)).toEqual([]);
      await secretNowhere();
      expect(app.logged.warnings).toEqual([
        expect.stringContaining(`refused ${join(app.uploadDir, a)}`),
      ]);
      expect(app.logged.errors).toEqual([]);
    });

    it('the assembly started by the last partial never reads a planted partial: the final fails', async () => {
      const a = await partial('aaaa');
      const b = await partial('bbbb', false);
      const res = await createFinal([a, b]);
      expect(res.status).toBe(201);
      const finalId = String(res.headers.location).split('/').pop()!;
      await plantSecret(a);
      // The last partial completes: the final is assembled in the background, reading `a`.
      expect((await patch(b, 0, Buffer.from('bbbb'))).status).toBe(204);
      await app.app.get(TusHandler).settled();

      expect(await readdir(app.completedDir)).toEqual([]);
      // The final can never complete: it failed (410 to whoever waited) and is gone.
      const final = await head(finalId);
      expect(final.status).toBe(404);
      await secretNowhere();
      expect(app.logged.warnings).toEqual([
        expect.stringContaining(`refused ${join(app.uploadDir, a)}`),
        expect.stringContaining(`assembling final upload ${finalId} failed: ERR_PARTIAL_GONE`),
      ]);
      expect(app.logged.errors).toEqual([]);
    });
  });

  it('FIFOs in place of data files and records: every request answers 404 at once, other uploads go on', async () => {
    // Four of them stalled every upload before: a blocked open holds one of libuv's four
    // threadpool threads.
    const fifoData: string[] = [];
    const fifoRecords: string[] = [];
    for (let i = 0; i < 8; i++) {
      const { id } = await createUpload(app, 4);
      const path = join(app.uploadDir, i < 4 ? id : `${id}.meta`);
      await unlink(path);
      execFileSync('mkfifo', [path]);
      (i < 4 ? fifoData : fifoRecords).push(id);
    }
    const answers = await Promise.all([
      ...fifoData.flatMap((id) => [
        patch(id, 0, Buffer.from('data')),
        send({ method: 'DELETE', path: `/files/${id}`, headers: TUS }),
      ]),
      ...fifoRecords.flatMap((id) => [head(id), patch(id, 0, Buffer.from('data'))]),
    ]);
    expect(answers.map((r) => r.status)).toEqual(answers.map(() => 404));

    // A fresh upload goes through as if nothing happened, and can be taken by a consumer.
    const { res, id } = await createUpload(app, 4);
    expect(res.status).toBe(201);
    expect((await patch(id, 0, Buffer.from('good'))).status).toBe(204);
    const queue = app.app.get(CompletedUploadQueue);
    const upload = await queue.waitForFile({ timeout: ANSWER_WITHIN_MS });
    expect(await readFile(upload.path, 'utf8')).toBe('good');
    await upload.release();

    expect(await quarantinedIn(app.uploadDir)).toHaveLength(8);
    expect(app.logged.warnings).toHaveLength(8);
    expect(app.logged.errors).toEqual([]);
  });

  it('creates directories 0700 and files 0600', async () => {
    const { id: unfinished } = await createUpload(app, 10);
    const { id } = await createUpload(app, 2);
    expect((await patch(id, 0, Buffer.from('ok'))).status).toBe(204);
    expect(await mode(app.uploadDir)).toBe('700');
    expect(await mode(app.completedDir)).toBe('700');
    expect(await mode(join(app.uploadDir, unfinished))).toBe('600');
    expect(await mode(join(app.uploadDir, `${unfinished}.meta`))).toBe('600');
    const done = completedPaths(app, id);
    expect(await mode(done.data)).toBe('600');
    expect(await mode(done.record)).toBe('600');
    const upload = await app.app.get(CompletedUploadQueue).waitForFile({ timeout: 5000 });
    expect(await mode(done.receipt)).toBe('600');
    const dest = join(app.uploadDir, '..', 'saved');
    await upload.save(dest);
    await upload.release();
    expect(await mode(dest)).toBe('600');
  });
});

it('directoryMode and fileMode widen what is created', async () => {
  const app = await createTestApp({ janitor: false, directoryMode: 0o750, fileMode: 0o640 });
  try {
    const { id } = await createUpload(app, 10);
    const umask = process.umask();
    expect(await mode(app.uploadDir)).toBe((0o750 & ~umask).toString(8));
    expect(await mode(app.completedDir)).toBe((0o750 & ~umask).toString(8));
    expect(await mode(join(app.uploadDir, id))).toBe((0o640 & ~umask).toString(8));
    expect(await mode(join(app.uploadDir, `${id}.meta`))).toBe((0o640 & ~umask).toString(8));
  } finally {
    await app.close();
  }
});

it('a fileMode out of range stops the application at start', async () => {
  await expect(createTestApp({ fileMode: 0o10000 })).rejects.toThrow(/fileMode/);
});

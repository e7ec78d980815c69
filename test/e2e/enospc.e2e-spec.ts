import { afterAll, afterEach, beforeAll, describe, expect, it } from '@jest/globals';
import { execFile } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdir, mkdtemp, open, readdir, rm, statfs } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import {
  completedPaths,
  createTestApp,
  createUpload,
  entriesOf,
  headUpload,
  patchUpload,
  type TestApp,
  uploadEntries,
} from '../support/app.js';
import { sha256, sha256File } from '../support/http.js';

/**
 * A full disk, for real: an 8 MiB tmpfs as uploadDir/completedDir. Needs root (mount); without
 * it the suite fails, unless TUS_SKIP_ROOT_TESTS=1 asks to skip it.
 */
const run = promisify(execFile);
const KiB = 1024;
const MiB = 1024 * KiB;
const skipRequested = process.env.TUS_SKIP_ROOT_TESTS === '1';

/** Mounts an 8 MiB tmpfs at a new temp dir, or throws saying why it could not. */
async function mountTmpfs(): Promise<string> {
  if (typeof process.getuid !== 'function' || process.getuid() !== 0) {
    throw new Error(
      `not running as root (uid ${process.getuid?.() ?? 'unknown'}): cannot mount a tmpfs`,
    );
  }
  const dir = await mkdtemp(join(tmpdir(), 'tussi-enospc-'));
  try {
    await run('mount', ['-t', 'tmpfs', '-o', 'size=8m', 'tmpfs', dir]);
  } catch (e) {
    await rm(dir, { recursive: true, force: true });
    throw new Error(`mount -t tmpfs failed: ${(e as Error).message.trim()}`, { cause: e });
  }
  return dir;
}

async function unmount(dir: string): Promise<void> {
  await run('umount', [dir]);
  await rm(dir, { recursive: true, force: true });
}

/**
 * Whether a tmpfs can be mounted here, tried once (mounted and unmounted at once) while the
 * suite is collected, so that TUS_SKIP_ROOT_TESTS=1 can skip it; the real mount is made in
 * beforeAll, so nothing stays mounted when no test of this file runs.
 */
async function probe(): Promise<string | null> {
  try {
    await unmount(await mountTmpfs());
    return null;
  } catch (e) {
    return (e as Error).message;
  }
}

const unavailable = await probe();
if (unavailable && skipRequested) {
  console.warn(`enospc e2e skipped (TUS_SKIP_ROOT_TESTS=1): ${unavailable}`);
}

async function freeBytes(dir: string): Promise<number> {
  const s = await statfs(dir);
  return s.bavail * s.bsize;
}

/** Fills the filesystem of `dir` with a file outside any upload dir, leaving about `leave` bytes. */
async function fill(dir: string, leave: number): Promise<string> {
  const path = join(dir, 'filler');
  const handle = await open(path, 'w');
  const block = Buffer.alloc(64 * KiB, 1);
  try {
    for (;;) {
      const free = await freeBytes(dir);
      if (free <= leave) break;
      const size = Math.min(block.length, free - leave);
      await handle.write(block.subarray(0, size));
    }
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code !== 'ENOSPC') throw e;
  } finally {
    await handle.close();
  }
  return path;
}

/**
 * The upload was finalized with exactly `data` (data and record in completedDir, nothing left
 * in uploadDir); then both are removed to give their space back.
 */
async function expectFinalizedThenRemove(
  dirs: { uploadDir: string; completedDir: string },
  id: string,
  data: Buffer,
): Promise<void> {
  const paths = completedPaths(dirs, id);
  expect(await sha256File(paths.data)).toBe(sha256(data));
  expect(await entriesOf(dirs.uploadDir, id)).toEqual([]);
  await rm(paths.data);
  await rm(paths.record);
}

(unavailable && skipRequested ? describe.skip : describe)('a full disk (8 MiB tmpfs)', () => {
  let app: TestApp;
  let mounted: string | undefined;
  let uploadDir: string;
  let completedDir: string;
  let filler: string | undefined;
  const disk = () => mounted!;

  beforeAll(async () => {
    if (unavailable) {
      throw new Error(
        `${unavailable}. These tests need root to mount a tmpfs; set TUS_SKIP_ROOT_TESTS=1 to skip them.`,
      );
    }
    mounted = await mountTmpfs();
    uploadDir = join(mounted, 'uploads');
    completedDir = join(mounted, 'completed');
    await mkdir(completedDir);
    app = await createTestApp({ uploadDir, completedDir });
  });
  afterEach(async () => {
    if (filler) await rm(filler, { force: true });
    filler = undefined;
  });
  afterAll(async () => {
    await app?.close();
    if (mounted) await unmount(mounted);
  });

  it('refuses a creation bigger than the free space with 507 and leaves nothing behind', async () => {
    // Larger than the whole volume: it could never fit (413).
    const never = await createUpload(app, 64 * MiB);
    expect(never.res.status).toBe(413);
    expect(never.res.headers.location).toBeUndefined();
    for (const length of [7.9 * MiB, 7.8 * MiB].map(Math.floor)) {
      const { res } = await createUpload(app, length);
      expect(res.status).toBe(507);
      expect(res.headers['tus-resumable']).toBe('1.0.0');
      expect(res.headers.location).toBeUndefined();
      expect(res.body.toString()).toContain('ERR_INSUFFICIENT_STORAGE');
      // No data file, no record, no temp file.
      expect(await uploadEntries(uploadDir)).toEqual([]);
      expect(await readdir(completedDir)).toEqual([]);
    }
    // The refused reservation gave its space back.
    expect(await freeBytes(disk())).toBeGreaterThan(7 * MiB);
  });

  it('still takes a small upload after refusing a big one', async () => {
    expect((await createUpload(app, Math.floor(7.9 * MiB))).res.status).toBe(507);
    const data = randomBytes(1 * MiB + 3);
    const { res, id } = await createUpload(app, data.length);
    expect(res.status).toBe(201);
    const patch = await patchUpload(app, id, 0, data);
    expect(patch.status).toBe(204);
    expect(patch.headers['upload-offset']).toBe(String(data.length));
    const head = await headUpload(app, id);
    expect(head.offset).toBe(data.length);
    expect(head.res.headers['upload-length']).toBe(String(data.length));
    await expectFinalizedThenRemove({ uploadDir, completedDir }, id, data);
  });

  it('nothing is reserved at creation: another process may take the space, the upload then resumes', async () => {
    const data = randomBytes(3 * MiB);
    const { res, id } = await createUpload(app, data.length);
    expect(res.status).toBe(201);
    const first = await patchUpload(app, id, 0, data.subarray(0, 1 * MiB));
    expect(first.status).toBe(204);
    // Another process takes every byte: there is no room for the rest of the data.
    filler = await fill(disk(), 0);
    const refused = await patchUpload(app, id, 1 * MiB, data.subarray(1 * MiB));
    expect(refused.status).toBe(507);
    expect(refused.body.toString()).toContain('ERR_INSUFFICIENT_STORAGE');
    expect((await headUpload(app, id)).offset).toBe(1 * MiB);
    await rm(filler);
    filler = undefined;
    const rest = await patchUpload(app, id, 1 * MiB, data.subarray(1 * MiB));
    expect(rest.status).toBe(204);
    await expectFinalizedThenRemove({ uploadDir, completedDir }, id, data);
  });

  it('a disk filled under a PATCH: the bytes written are counted (the record fits), then it resumes', async () => {
    const data = randomBytes(4 * MiB);
    const { res, id } = await createUpload(app, data.length);
    expect(res.status).toBe(201);
    // Another process leaves 1.5 MiB: the body stops there, and the record still gets written.
    filler = await fill(disk(), 1.5 * MiB);
    const cut = await patchUpload(app, id, 0, data);
    expect(cut.status).toBe(507);
    const offset = (await headUpload(app, id)).offset;
    expect(offset).toBeGreaterThan(256 * KiB);
    expect(offset).toBeLessThan(data.length);
    expect(cut.headers['upload-offset'] ?? String(offset)).toBe(String(offset));
    await rm(filler);
    filler = undefined;
    const rest = await patchUpload(app, id, offset, data.subarray(offset));
    expect(rest.status).toBe(204);
    await expectFinalizedThenRemove({ uploadDir, completedDir }, id, data);
  });

  it('a PATCH whose record cannot be updated is 507, claims nothing, and can be retried', async () => {
    const data = randomBytes(1 * MiB);
    const { id } = await createUpload(app, data.length);
    filler = await fill(disk(), 0);
    const refused = await patchUpload(app, id, 0, data);
    expect(refused.status).toBe(507);
    expect(refused.headers['tus-resumable']).toBe('1.0.0');
    expect((await headUpload(app, id)).offset).toBe(0);

    await rm(filler);
    filler = undefined;
    const retried = await patchUpload(app, id, 0, data);
    expect(retried.status).toBe(204);
    await expectFinalizedThenRemove({ uploadDir, completedDir }, id, data);
  });

  it('a creation whose record cannot be written is 507 and leaves nothing behind', async () => {
    filler = await fill(disk(), 0);
    expect(await freeBytes(disk())).toBe(0);
    const { res } = await createUpload(app, 0);
    expect(res.status).toBe(507);
    expect(res.headers['tus-resumable']).toBe('1.0.0');
    expect(await uploadEntries(uploadDir)).toEqual([]);
    expect(await readdir(completedDir)).toEqual([]);
  });

  it('logged no server-side failure', () => {
    expect(app.logged.errors).toEqual([]);
  });
});

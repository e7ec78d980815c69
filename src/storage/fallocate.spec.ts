import { afterAll, beforeAll, describe, expect, it } from '@jest/globals';
import { mkdtemp, readdir, rm, stat, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createReserved, createReservedPortable, preallocation } from './fallocate.js';

let dir: string;
beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'fallocate-'));
});
afterAll(async () => {
  await rm(dir, { recursive: true, force: true });
});

it('pre-allocates with the real fallocate here (the addon is built at install)', () => {
  expect(preallocation).toBe('fallocate');
});

describe.each([
  ['as exported (native, one job)', createReserved],
  ['portable', createReservedPortable],
])('createReserved %s', (label, create) => {
  const notes: string[] = [];
  const log = (m: string) => notes.push(m);
  const path = (name: string) => join(dir, `${label.slice(0, 6)}-${name}`);

  it('creates the file at the full length with its blocks reserved, fsync off and on', async () => {
    for (const durable of [false, true]) {
      const file = path(`reserved-${durable}`);
      await create(file, dir, 300_000, durable, log);
      const info = await stat(file);
      expect(info.size).toBe(300_000);
      // Reserved, not sparse (tmpfs reserves too).
      expect(info.blocks * 512).toBeGreaterThanOrEqual(300_000);
    }
    expect(notes).toEqual([]);
  });

  it('creates an empty file for a deferred length, and for a length of 0', async () => {
    await create(path('deferred'), dir, null, true, log);
    await create(path('zero'), dir, 0, false, log);
    expect((await stat(path('deferred'))).size).toBe(0);
    expect((await stat(path('zero'))).size).toBe(0);
  });

  it('never replaces an existing file (EEXIST), and leaves it as it was', async () => {
    await writeFile(path('existing'), 'keep me');
    await expect(create(path('existing'), dir, 10, false, log)).rejects.toMatchObject({
      code: 'EEXIST',
    });
    expect((await stat(path('existing'))).size).toBe(7);
  });

  it('refuses a length no filesystem can hold and leaves nothing behind', async () => {
    const huge = path('huge');
    await expect(create(huge, dir, 2 ** 62, false, log)).rejects.toMatchObject({
      code: expect.stringMatching(/^(EFBIG|ENOSPC|EINVAL)$/),
    });
    expect((await readdir(dir)).filter((n) => n.endsWith('-huge'))).toEqual([]);
  });
});

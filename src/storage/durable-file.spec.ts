import { afterAll, beforeAll, describe, expect, it } from '@jest/globals';
import { mkdtemp, readdir, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { readSmallFile, writeFileAtomic } from './durable-file.js';

let dir: string;
beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'durable-file-'));
});
afterAll(async () => {
  await rm(dir, { recursive: true, force: true });
});

describe('readSmallFile', () => {
  // Sizes around the first buffer (16 KiB) and its doublings, and a multi-byte character
  // across the first boundary.
  const cases: [string, string][] = [
    ['empty', ''],
    ['a record', JSON.stringify({ length: 4096, offset: 0, metadata: { filename: 'a.bin' } })],
    ['exactly 16 KiB', 'x'.repeat(16 * 1024)],
    ['16 KiB and one byte', 'y'.repeat(16 * 1024 + 1)],
    ['a character split by the first buffer', `${'z'.repeat(16 * 1024 - 1)}é€😀 end`],
    ['100 KiB', 'r'.repeat(100 * 1024)],
  ];
  it.each(cases)('reads %s whole', async (name, text) => {
    const path = join(dir, name.replace(/\W+/g, '-'));
    await writeFile(path, text);
    expect(await readSmallFile(path)).toBe(text);
  });

  it('rejects a missing file with ENOENT', async () => {
    await expect(readSmallFile(join(dir, 'missing'))).rejects.toMatchObject({ code: 'ENOENT' });
  });
});

describe('writeFileAtomic', () => {
  it('replaces the content and leaves no temp file', async () => {
    const path = join(dir, 'atomic.meta');
    await writeFileAtomic(path, 'first', false);
    await writeFileAtomic(path, 'second, longer than the first', true);
    expect(await readSmallFile(path)).toBe('second, longer than the first');
    expect((await readdir(dir)).filter((n) => n.includes('atomic'))).toEqual(['atomic.meta']);
  });
});

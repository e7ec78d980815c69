import { afterAll, beforeAll, describe, expect, it } from '@jest/globals';
import { mkdir, mkdtemp, readdir, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { portable, readSmallFile, syncDirectory, writeFileAtomic } from './durable-file.js';
import { nativeAddon } from './native.js';

let dir: string;
beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'durable-file-'));
});
afterAll(async () => {
  await rm(dir, { recursive: true, force: true });
});

it('uses the native addon here (it is built at install; CI must not fall back silently)', () => {
  expect(nativeAddon).not.toBeNull();
});

// The functions as exported (one native threadpool job each) and their pure-Node fallback must
// behave alike, errors included.
describe.each([
  ['as exported (native)', { readSmallFile, writeFileAtomic, syncDirectory }],
  ['portable', portable],
])('%s', (label, impl) => {
  let base: string;
  beforeAll(async () => {
    base = join(dir, label.replace(/\W+/g, '-'));
    await mkdir(base);
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
      const path = join(base, name.replace(/\W+/g, '-'));
      await writeFile(path, text);
      expect(await impl.readSmallFile(path)).toBe(text);
    });

    it('rejects a missing file as fs does: ENOENT, with syscall and path', async () => {
      const path = join(base, 'missing');
      await expect(impl.readSmallFile(path)).rejects.toMatchObject({
        code: 'ENOENT',
        errno: -2,
        syscall: 'open',
        path,
      });
    });

    it('rejects a directory with EISDIR', async () => {
      await expect(impl.readSmallFile(base)).rejects.toMatchObject({ code: 'EISDIR' });
    });
  });

  describe('writeFileAtomic', () => {
    it('replaces the content and leaves no temp file, with fsync off and on', async () => {
      const path = join(base, 'atomic.meta');
      await impl.writeFileAtomic(path, 'first', false);
      await impl.writeFileAtomic(path, 'second, longer than the first: é€😀', true);
      expect(await impl.readSmallFile(path)).toBe('second, longer than the first: é€😀');
      expect((await readdir(base)).filter((n) => n.includes('atomic'))).toEqual(['atomic.meta']);
    });

    it('writes an empty file', async () => {
      const path = join(base, 'empty.meta');
      await impl.writeFileAtomic(path, '', true);
      expect(await impl.readSmallFile(path)).toBe('');
    });

    it('rejects with ENOENT when the directory is gone', async () => {
      await expect(
        impl.writeFileAtomic(join(base, 'no-such-dir', 'x.meta'), 'x', false),
      ).rejects.toMatchObject({ code: 'ENOENT', syscall: 'open' });
    });

    it('removes its temp file when the rename fails, and keeps what was there', async () => {
      const target = join(base, 'a-directory');
      await mkdir(join(target, 'inside'), { recursive: true });
      await expect(impl.writeFileAtomic(target, 'x', true)).rejects.toMatchObject({
        code: expect.stringMatching(/^(EISDIR|ENOTEMPTY|EEXIST)$/),
        syscall: 'rename',
      });
      expect((await readdir(base)).filter((n) => n.endsWith('.tmp'))).toEqual([]);
      expect(await readdir(target)).toEqual(['inside']);
    });
  });

  describe('syncDirectory', () => {
    it('syncs a directory, and rejects a missing one with ENOENT', async () => {
      await expect(impl.syncDirectory(base)).resolves.toBeUndefined();
      await expect(impl.syncDirectory(join(base, 'missing'))).rejects.toMatchObject({
        code: 'ENOENT',
      });
    });
  });
});

import { afterEach, beforeEach, describe, expect, it } from '@jest/globals';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { homedir, tmpdir } from 'node:os';
import { join } from 'node:path';
import type { PreviousUpload } from 'tus-js-client';
import { defaultCacheDir, JsonFileUrlStorage } from './url-storage.js';

const upload = (url: string, creationTime = new Date().toString()): PreviousUpload => ({
  size: 10,
  metadata: { filename: 'a.bin' },
  creationTime,
  uploadUrl: url,
  parallelUploadUrls: null,
  urlStorageKey: '',
});

describe('JsonFileUrlStorage (tus-js-client urlStorage over a JSON file)', () => {
  let dir: string;
  let path: string;

  beforeEach(async () => {
    dir = await mkdtemp(join(tmpdir(), 'tussi-urls-'));
    path = join(dir, 'nested', 'uploads.json');
  });

  afterEach(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  it('adds, finds by fingerprint, and removes uploads, persisting across instances', async () => {
    const storage = new JsonFileUrlStorage(path);
    expect(await storage.findAllUploads()).toEqual([]);
    const a = await storage.addUpload('fp-a', upload('http://h/files/1'));
    const b = await storage.addUpload('fp-b', upload('http://h/files/2'));
    expect(a).not.toBe(b);

    const again = new JsonFileUrlStorage(path);
    const found = await again.findUploadsByFingerprint('fp-a');
    expect(found).toEqual([
      { ...upload('http://h/files/1', found[0].creationTime), urlStorageKey: a },
    ]);
    expect((await again.findAllUploads()).map((u) => u.uploadUrl).sort()).toEqual([
      'http://h/files/1',
      'http://h/files/2',
    ]);

    await again.removeUpload(a);
    expect(await storage.findUploadsByFingerprint('fp-a')).toEqual([]);
    expect(await storage.findUploadsByFingerprint('fp-b')).toHaveLength(1);
  });

  it('keeps every entry of concurrent changes within a process', async () => {
    const storage = new JsonFileUrlStorage(path);
    await Promise.all(
      Array.from({ length: 20 }, (_, i) => storage.addUpload(`fp-${i}`, upload(`u${i}`))),
    );
    await storage.flush();
    expect(await storage.findAllUploads()).toHaveLength(20);
  });

  it('treats an unreadable file as empty and drops entries older than 30 days', async () => {
    await writeFile(join(dir, 'bad.json'), '{ not json');
    const bad = new JsonFileUrlStorage(join(dir, 'bad.json'));
    expect(await bad.findAllUploads()).toEqual([]);
    await bad.addUpload('fp', upload('u'));
    expect(await bad.findAllUploads()).toHaveLength(1);

    const storage = new JsonFileUrlStorage(path);
    const old = new Date(Date.now() - 31 * 24 * 3600 * 1000).toString();
    await storage.addUpload('old', upload('u-old', old));
    await storage.addUpload('new', upload('u-new'));
    const kept = JSON.parse(await readFile(path, 'utf8')) as { uploads: object };
    expect(Object.values(kept.uploads).map((u: { uploadUrl: string }) => u.uploadUrl)).toEqual([
      'u-new',
    ]);
  });

  it('lives in TUSSI_UPLOAD_CACHE_DIR, else XDG_CACHE_HOME, else ~/.cache', () => {
    expect(defaultCacheDir({ TUSSI_UPLOAD_CACHE_DIR: '/c', XDG_CACHE_HOME: '/x' })).toBe('/c');
    expect(defaultCacheDir({ XDG_CACHE_HOME: '/x' })).toBe('/x/tussi-upload');
    expect(defaultCacheDir({})).toBe(join(homedir(), '.cache', 'tussi-upload'));
  });
});

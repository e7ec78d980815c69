import { afterEach, beforeAll, beforeEach, describe, expect, it } from '@jest/globals';
import { execFile } from 'node:child_process';
import { mkdtemp, rm, statfs, symlink, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { ensureBuilt } from '../../test/support/child-server.js';
import {
  FileSpaceLedger,
  InsufficientSpaceError,
  LargerThanVolumeError,
  MemorySpaceLedger,
  SpaceAccounting,
} from './space-accounting.js';

const run = promisify(execFile);
const WORKER = join(
  dirname(fileURLToPath(import.meta.url)),
  '../../test/support/space-ledger-worker.mjs',
);

let directory: string;
beforeEach(async () => {
  directory = await mkdtemp(join(tmpdir(), 'tussi-space-'));
});
afterEach(async () => {
  await rm(directory, { recursive: true, force: true });
});

describe('FileSpaceLedger', () => {
  it('reserves within the capacity only, and releases never below zero', async () => {
    const ledger = new FileSpaceLedger(directory);
    expect(await ledger.reserve(600, 1000)).toBe(true);
    expect(await ledger.reserve(401, 1000)).toBe(false);
    expect(await ledger.reserve(400, 1000)).toBe(true);
    expect(await ledger.total()).toBe(1000);
    await ledger.release(300);
    expect(await ledger.total()).toBe(700);
    await ledger.release(5000);
    expect(await ledger.total()).toBe(0);
    await ledger.close();
  });

  it('is one total for every ledger on the directory', async () => {
    const a = new FileSpaceLedger(directory);
    const b = new FileSpaceLedger(directory);
    expect(await a.reserve(700, 1000)).toBe(true);
    expect(await b.reserve(400, 1000)).toBe(false);
    await b.release(200);
    expect(await a.total()).toBe(500);
    await Promise.all([a.close(), b.close()]);
  });

  it('the first to join rebuilds from the records; later ones while it lives do not', async () => {
    const first = new FileSpaceLedger(directory);
    const second = new FileSpaceLedger(directory);
    expect(await first.join(async () => 1234)).toBe(true);
    expect(await first.total()).toBe(1234);
    await first.reserve(6, 1e9);
    expect(await second.join(async () => 0)).toBe(false);
    expect(await second.total()).toBe(1240);
    await Promise.all([first.close(), second.close()]);
    // Everyone gone (as after a kill -9 of them all): the next start rebuilds.
    const restarted = new FileSpaceLedger(directory);
    expect(await restarted.join(async () => 77)).toBe(true);
    expect(await restarted.total()).toBe(77);
    await restarted.close();
  });

  it('refuses a ledger file planted as a symlink', async () => {
    const outside = join(directory, 'outside');
    await writeFile(outside, 'secret');
    await symlink(outside, join(directory, '.tussi-space'));
    const ledger = new FileSpaceLedger(directory);
    await expect(ledger.reserve(1, 10)).rejects.toMatchObject({ code: 'ELOOP' });
    await ledger.close();
  });

  describe('across processes', () => {
    beforeAll(async () => {
      await ensureBuilt();
    }, 180_000);

    it('four processes racing for 1,000 bytes get exactly 1,000 between them', async () => {
      const outputs = await Promise.all(
        [0, 1, 2, 3].map(() =>
          run(process.execPath, [WORKER, directory, '400', '1', '1000'], { timeout: 60_000 }),
        ),
      );
      const taken = outputs.map((o) => Number(o.stdout.trim()));
      expect(taken.reduce((a, b) => a + b, 0)).toBe(1000);
      // Each got some: they really raced.
      expect(taken.filter((n) => n > 0).length).toBeGreaterThan(1);
      const ledger = new FileSpaceLedger(directory);
      expect(await ledger.total()).toBe(1000);
      await ledger.close();
    });
  });
});

describe('SpaceAccounting', () => {
  it('takes promises up to the free space minus the margin, then ENOSPC', async () => {
    const volume = await statfs(directory);
    const free = volume.bavail * volume.bsize;
    const margin = 1 << 20;
    const space = new SpaceAccounting(new MemorySpaceLedger(), directory, { marginBytes: margin });
    const half = Math.floor((free - margin) / 2);
    await space.reserve(half);
    await space.reserve(half);
    // Others write to this volume meanwhile: the free space is read at each creation.
    await expect(space.reserve(4 << 20)).rejects.toBeInstanceOf(InsufficientSpaceError);
    await expect(space.reserve(4 << 20)).rejects.toMatchObject({ code: 'ENOSPC' });
    await space.release(half);
    await space.reserve(4 << 20);
    expect((await space.usage()).promised).toBe(half + (4 << 20));
  });

  it('a length above the whole volume is EFBIG: it could never fit', async () => {
    const space = new SpaceAccounting(new MemorySpaceLedger(), directory);
    const volume = await statfs(directory);
    await expect(space.reserve(volume.blocks * volume.bsize + 1)).rejects.toBeInstanceOf(
      LargerThanVolumeError,
    );
    expect((await space.usage()).promised).toBe(0);
  });

  it('even nothing needs the margin free', async () => {
    const volume = await statfs(directory);
    const space = new SpaceAccounting(new MemorySpaceLedger(), directory, {
      marginBytes: volume.bavail * volume.bsize + (1 << 30),
    });
    await expect(space.reserve(0)).rejects.toMatchObject({ code: 'ENOSPC' });
  });

  it('the default margin is the smaller of 64 MiB and 5 % of the volume', async () => {
    const volume = await statfs(directory);
    const size = volume.blocks * volume.bsize;
    const { margin } = await new SpaceAccounting(new MemorySpaceLedger(), directory).usage();
    expect(margin).toBe(Math.min(64 << 20, Math.floor(size * 0.05)));
  });
});

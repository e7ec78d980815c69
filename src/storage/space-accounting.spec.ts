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
    // Other suites write to this volume meanwhile (the free space is read at each creation):
    // the promises leave some room, and what is then refused is well beyond it.
    const slack = 256 << 20;
    const half = Math.floor((free - margin - slack) / 2);
    await space.reserve(half);
    await space.reserve(half);
    const beyond = slack + (1 << 30);
    await expect(space.reserve(beyond)).rejects.toBeInstanceOf(InsufficientSpaceError);
    await expect(space.reserve(beyond)).rejects.toMatchObject({ code: 'ENOSPC' });
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

describe('SpaceAccounting: the pool of small promises', () => {
  /** A ledger that counts its updates. */
  class CountingLedger extends MemorySpaceLedger {
    updates = 0;
    override async reserve(bytes: number, capacity: number): Promise<boolean> {
      this.updates++;
      return super.reserve(bytes, capacity);
    }
    override async release(bytes: number): Promise<void> {
      this.updates++;
      return super.release(bytes);
    }
  }
  const KiB = 1024;

  it('a thousand 4 KiB uploads come and go with a handful of ledger updates', async () => {
    const ledger = new CountingLedger();
    const space = new SpaceAccounting(ledger, directory, { poolBytes: 1 << 20 });
    await Promise.all(Array.from({ length: 1000 }, () => space.reserve(4 * KiB)));
    expect((await space.usage()).promised).toBe(1000 * 4 * KiB);
    for (let i = 0; i < 1000; i++) await space.release(4 * KiB);
    expect((await space.usage()).promised).toBe(0);
    // Never more than two units held back from the other processes.
    expect(await ledger.total()).toBeLessThanOrEqual(2 << 20);
    expect(ledger.updates).toBeLessThan(20);
    await space.close();
    expect(await ledger.total()).toBe(0);
  });

  it('large promises and releases go to the ledger exactly', async () => {
    const ledger = new CountingLedger();
    const space = new SpaceAccounting(ledger, directory, { poolBytes: 1 << 20 });
    await space.reserve(5 << 20);
    expect(await ledger.total()).toBe(5 << 20);
    await space.release(2 << 20);
    expect(await ledger.total()).toBe(3 << 20);
    await space.reserve(0);
    expect(await ledger.total()).toBe(3 << 20);
  });

  it('near a full volume the pool goes back and promises are exact again', async () => {
    const MiB = 1 << 20;
    const volume = await statfs(directory);
    const free = volume.bavail * volume.bsize;
    const margin = MiB;
    const ledger = new CountingLedger();
    const space = new SpaceAccounting(ledger, directory, {
      marginBytes: margin,
      poolBytes: 4 * MiB,
    });
    await space.reserve(4 * KiB); // 4 MiB more go into the pool
    expect(await ledger.total()).toBe(4 * KiB + 4 * MiB);
    await space.reserve(3 * MiB); // from the pool: 1 MiB left in it
    expect(await ledger.total()).toBe(4 * KiB + 4 * MiB);
    // Other processes promise all but 2.75 MiB of the room left.
    const others = free - margin - (4 * KiB + 4 * MiB) - 2.75 * MiB;
    await ledger.reserve(others, Number.MAX_SAFE_INTEGER);
    // 3 MiB and a refill do not fit; the pool's 1 MiB goes back and the 3 MiB alone fit.
    await space.reserve(3 * MiB);
    expect(await ledger.total()).toBe(others + 4 * KiB + 6 * MiB);
    await expect(space.reserve(3 * MiB)).rejects.toMatchObject({ code: 'ENOSPC' });
  });
});

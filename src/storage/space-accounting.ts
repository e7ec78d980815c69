import fsExt from 'fs-ext';
import { closeSync, constants, fstatSync, openSync, readSync, writeSync } from 'node:fs';
import { statfs } from 'node:fs/promises';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';

/**
 * The bytes promised to open uploads (each upload's length minus its offset), kept where every
 * process (and, with Redis, every replica) that serves one upload volume sees them. Each change
 * is one atomic step; a crash between a record's change and the ledger's can only leave the
 * total too high (reservations come before the record, releases after), never too low, and
 * {@link SpaceLedger.join} rebuilds it from the records when nobody else is using it.
 */
export interface SpaceLedger {
  /** Adds `bytes` to the total if it then stays within `capacity`: whether it did. */
  reserve(bytes: number, capacity: number): Promise<boolean>;
  /** Takes `bytes` off the total (never below 0). */
  release(bytes: number): Promise<void>;
  /** The bytes promised now. */
  total(): Promise<number>;
  /**
   * Starts using the ledger. When no other process or replica uses it (a first start, or a
   * restart after all were killed), `rebuild` computes the total from the records and it is
   * stored before any request is served: whatever a crash left behind is forgotten then.
   * Returns whether it rebuilt.
   */
  join(rebuild: () => Promise<number>): Promise<boolean>;
  /** Stops using it (after this process's last request). */
  close(): Promise<void>;
}

/** `ENOSPC`: the upload does not fit in what the volume has left after the promises. */
export class InsufficientSpaceError extends Error {
  readonly code = 'ENOSPC';
  override readonly name = 'InsufficientSpaceError';
}

/** `EFBIG`: the upload is larger than the whole volume; it could never fit. */
export class LargerThanVolumeError extends Error {
  readonly code = 'EFBIG';
  override readonly name = 'LargerThanVolumeError';
}

export interface SpaceAccountingOptions {
  /**
   * Kept free beyond every promise, for records, receipts and writes in flight. @default the
   * smaller of 64 MiB and 5 % of the volume
   */
  marginBytes?: number;
  /**
   * Promised in the ledger ahead of need and handed out from this process: uploads smaller
   * than this then create and finish without a ledger update or a `statfs` each (the bytes held count as
   * promised for every other process). At most twice this is held; all of it goes back when
   * the process closes, and a crash leaves it counted until the ledger is rebuilt. 0 turns it
   * off. @default the smaller of 8 MiB and a quarter of the margin
   */
  poolBytes?: number;
}

/** What the accounting sees now. */
export interface SpaceUsage {
  /** Bytes promised to open uploads and not written yet. */
  promised: number;
  /** Bytes free on the volume (for an unprivileged process). */
  free: number;
  /** Bytes kept free beyond the promises. */
  margin: number;
}

/**
 * tussi's promise, kept without paying for it up front: an upload that cannot fit is refused
 * at its creation (507), but nothing is reserved on disk for it then. Instead the bytes each
 * open upload may still bring are promised in a {@link SpaceLedger}, and a creation is taken
 * only while every promise fits in the volume's free space (`statfs`) minus a margin. Bytes
 * written leave the free space and the promise together.
 */
export class SpaceAccounting {
  /** Promised in the ledger by this process and not handed to an upload yet. */
  private pool = 0;
  /** Pool changes one at a time (each awaits the ledger). */
  private poolChange: Promise<unknown> = Promise.resolve();
  private poolUnit: number | undefined;

  constructor(
    readonly ledger: SpaceLedger,
    /** A directory on the volume the bytes are written to. */
    readonly directory: string,
    private readonly options: SpaceAccountingOptions = {},
  ) {}

  /**
   * Promises `bytes` more, or throws {@link InsufficientSpaceError} (nothing promised) when they
   * do not fit beside the other promises, {@link LargerThanVolumeError} when they never could.
   * `bytes` of 0 still needs the margin free. Bytes the pool holds are handed out with no
   * `statfs` and no ledger update: they were checked against the free space when taken.
   */
  async reserve(bytes: number): Promise<void> {
    if (!this.takeFromPool(bytes)) await this.serially(() => this.reserveFromLedger(bytes));
  }

  /** Hands out `bytes` (more than 0) from the pool if it holds them. */
  private takeFromPool(bytes: number): boolean {
    if (bytes <= 0 || bytes > this.pool) return false;
    this.pool -= bytes;
    return true;
  }

  private async reserveFromLedger(bytes: number): Promise<void> {
    // Another call may have filled the pool meanwhile.
    if (this.takeFromPool(bytes)) return;
    const volume = await statfs(this.directory);
    const size = volume.blocks * volume.bsize;
    if (bytes > size) throw new LargerThanVolumeError(`${bytes} bytes exceed the volume's ${size}`);
    const margin = this.marginOf(size);
    const capacity = volume.bavail * volume.bsize - margin;
    const unit = (this.poolUnit ??= this.options.poolBytes ?? Math.min(8 << 20, margin >> 2));
    // Small promises refill the pool on the way; a large one (or a full volume) takes exactly
    // its bytes, and a pool held while the volume is that full goes back first.
    const refill = bytes > 0 && bytes < unit ? unit - this.pool : 0;
    if (
      refill > 0 &&
      capacity >= bytes + refill &&
      (await this.ledger.reserve(bytes + refill, capacity))
    ) {
      this.pool += refill;
      return;
    }
    const held = this.pool;
    if (held > 0) {
      // Taken out first: promises served from the pool meanwhile must not be given back.
      this.pool -= held;
      await this.ledger.release(held);
    }
    if (capacity < bytes || !(await this.ledger.reserve(bytes, capacity))) {
      throw new InsufficientSpaceError(`no room for ${bytes} more bytes on the upload volume`);
    }
  }

  /**
   * Gives back a promise (bytes written, or an upload gone): a small one into the pool, which
   * returns what it holds beyond one unit to the ledger once it holds more than two.
   */
  async release(bytes: number): Promise<void> {
    if (bytes <= 0) return;
    const unit = this.poolUnit ?? this.options.poolBytes ?? 0;
    if (bytes >= unit) {
      await this.ledger.release(bytes);
      return;
    }
    this.pool += bytes;
    if (this.pool <= 2 * unit) return;
    await this.serially(async () => {
      const excess = this.pool - unit;
      if (excess <= unit) return;
      this.pool -= excess;
      try {
        await this.ledger.release(excess);
      } catch (e) {
        this.pool += excess;
        throw e;
      }
    });
  }

  /**
   * Starts using the ledger (see {@link SpaceLedger.join}); a ledger rebuilt from the records
   * counts no pool, so the pool starts empty then.
   */
  async join(rebuild: () => Promise<number>): Promise<boolean> {
    const rebuilt = await this.serially(() => this.ledger.join(rebuild));
    if (rebuilt) this.pool = 0;
    return rebuilt;
  }

  /** Returns what the pool holds to the ledger, then stops using it (after the last request). */
  async close(): Promise<void> {
    await this.serially(async () => {
      const held = this.pool;
      this.pool = 0;
      if (held > 0) await this.ledger.release(held).catch(() => {});
    });
    await this.ledger.close();
  }

  /** What the accounting sees now; `promised` leaves out what this process's pool holds. */
  async usage(): Promise<SpaceUsage> {
    const volume = await statfs(this.directory);
    return {
      promised: Math.max(0, (await this.ledger.total()) - this.pool),
      free: volume.bavail * volume.bsize,
      margin: this.marginOf(volume.blocks * volume.bsize),
    };
  }

  private serially<T>(change: () => Promise<T>): Promise<T> {
    const next = this.poolChange.then(change, change);
    this.poolChange = next.catch(() => {});
    return next;
  }

  private marginOf(size: number): number {
    return this.options.marginBytes ?? Math.min(64 << 20, Math.floor(size * 0.05));
  }
}

/** Open read-write, created if missing, never through a symlink, and only a regular file. */
function openLedgerFile(path: string): number {
  const fd = openSync(
    path,
    constants.O_RDWR | constants.O_CREAT | constants.O_NOFOLLOW | constants.O_NONBLOCK,
    0o600,
  );
  const info = fstatSync(fd);
  if (!info.isFile() || info.nlink !== 1) {
    closeSync(fd);
    throw new Error(`${path} is not a regular file of its own; refusing to use it as the ledger`);
  }
  return fd;
}

const isBusy = (e: unknown) =>
  ['EWOULDBLOCK', 'EAGAIN'].includes((e as NodeJS.ErrnoException).code ?? '');

/** Takes `flock(how | LOCK_NB)` on `fd`, retrying with backoff (never a blocking flock). */
async function flockRetrying(fd: number, how: 'ex' | 'sh', waitMs: number): Promise<boolean> {
  const deadline = Date.now() + waitMs;
  for (let delay = 1; ; delay = Math.min(delay * 2, 50)) {
    try {
      fsExt.flockSync(fd, how === 'ex' ? 'exnb' : 'shnb');
      return true;
    } catch (e) {
      if (!isBusy(e)) throw e;
    }
    if (Date.now() >= deadline) return false;
    await sleep(delay);
  }
}

/**
 * The ledger of one host: an 8-byte counter in `{directory}/.tussi-space`, changed under an
 * exclusive `flock` (open, lock, read, write, close: a few microseconds, no descriptor kept
 * open for writing, so the volume can still be remounted read-only), so every process serving
 * the directory shares it. Each process also holds a shared `flock` on the directory itself:
 * the one that can take it exclusively at its start is alone, and rebuilds the counter from the
 * records.
 */
export class FileSpaceLedger implements SpaceLedger {
  private instances: number | undefined;
  private readonly buffer = Buffer.alloc(8);

  constructor(readonly directory: string) {}

  async reserve(bytes: number, capacity: number): Promise<boolean> {
    return this.update((total) => (total + bytes <= capacity ? total + bytes : undefined));
  }

  async release(bytes: number): Promise<void> {
    await this.update((total) => Math.max(0, total - bytes));
  }

  async total(): Promise<number> {
    let now = 0;
    await this.update((total) => {
      now = total;
      return undefined;
    });
    return now;
  }

  async join(rebuild: () => Promise<number>): Promise<boolean> {
    if (this.instances !== undefined) return false;
    const fd = openSync(this.directory, constants.O_RDONLY | constants.O_DIRECTORY);
    this.instances = fd;
    let alone = false;
    try {
      fsExt.flockSync(fd, 'exnb');
      alone = true;
    } catch (e) {
      if (!isBusy(e)) throw e;
    }
    if (alone) {
      const total = await rebuild();
      await this.update(() => total);
    }
    // Shared from now on (a process rebuilding holds it exclusively: wait for it to finish).
    if (!(await flockRetrying(fd, 'sh', 60_000))) {
      throw new Error('another process has been rebuilding the space ledger for 60 s');
    }
    return alone;
  }

  async close(): Promise<void> {
    if (this.instances !== undefined) closeSync(this.instances);
    this.instances = undefined;
  }

  /** Reads the counter and writes what `change` makes of it (nothing when it says undefined). */
  private async update(change: (total: number) => number | undefined): Promise<boolean> {
    const fd = openLedgerFile(join(this.directory, '.tussi-space'));
    try {
      if (!(await flockRetrying(fd, 'ex', 10_000))) {
        throw new Error('the space ledger stayed locked for 10 s');
      }
      const read = readSync(fd, this.buffer, 0, 8, 0);
      const total = read === 8 ? Number(this.buffer.readBigInt64LE(0)) : 0;
      const next = change(total);
      if (next === undefined) return false;
      this.buffer.writeBigInt64LE(BigInt(next), 0);
      writeSync(fd, this.buffer, 0, 8, 0);
      return true;
    } finally {
      closeSync(fd);
    }
  }
}

/** A ledger for one process (tests, storages of one process): no sharing, no rebuild. */
export class MemorySpaceLedger implements SpaceLedger {
  private promised = 0;

  async reserve(bytes: number, capacity: number): Promise<boolean> {
    if (this.promised + bytes > capacity) return false;
    this.promised += bytes;
    return true;
  }

  async release(bytes: number): Promise<void> {
    this.promised = Math.max(0, this.promised - bytes);
  }

  async total(): Promise<number> {
    return this.promised;
  }

  async join(rebuild: () => Promise<number>): Promise<boolean> {
    this.promised = await rebuild();
    return true;
  }

  async close(): Promise<void> {}
}

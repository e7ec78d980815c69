import { afterEach, beforeEach, describe, expect, it, jest } from '@jest/globals';
import { type ChildProcess, spawn } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import { mkdtemp, rename, rm, unlink, writeFile } from 'node:fs/promises';
import { createRequire } from 'node:module';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { lockFile, portableLockAttempt, tryLockFile, type LockAttempt } from './file-lock.js';
import { FileUploadLocker } from './file-upload.locker.js';
import { KeyedMutex } from './keyed-mutex.js';
import { LockTargetMissingError, LockTimeoutError } from './storage.interfaces.js';

const FS_EXT = createRequire(import.meta.url).resolve('fs-ext');

/**
 * Another process taking an exclusive non-blocking `flock` on the file, as a second server would.
 * It prints `locked` (or `busy:<code>`); in `hold` mode it keeps the lock until its stdin closes.
 */
const CHILD = `
const fs = require('fs');
const { flockSync } = require(process.argv[1]);
const [, , mode, path] = process.argv;
const fd = fs.openSync(path, 'r+');
try {
  flockSync(fd, 'exnb');
} catch (e) {
  process.stdout.write('busy:' + e.code + '\\n');
  process.exit(0);
}
process.stdout.write('locked\\n');
if (mode === 'try') process.exit(0);
process.stdin.on('data', () => process.exit(0));
process.stdin.on('end', () => process.exit(0));
setTimeout(() => process.exit(0), 30000);
`;

interface Child {
  process: ChildProcess;
  /** The first line the child printed. */
  line: Promise<string>;
  exited: Promise<void>;
}

const children: ChildProcess[] = [];

function startChild(mode: 'hold' | 'try', path: string): Child {
  const env = { ...process.env };
  delete env.NODE_OPTIONS;
  const child = spawn(process.execPath, ['-e', CHILD, FS_EXT, mode, path], { env, stdio: 'pipe' });
  children.push(child);
  let stdout = '';
  let stderr = '';
  child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
  const line = new Promise<string>((resolve, reject) => {
    child.stdout.on('data', (d: Buffer) => {
      stdout += d.toString();
      if (stdout.includes('\n')) resolve(stdout.split('\n')[0]);
    });
    child.once('exit', (code) =>
      reject(new Error(`child exited (${code}) without a line: ${stderr}`)),
    );
    child.once('error', reject);
  });
  return { process: child, line, exited };
}

/** A child holding the lock on `path`; resolves once it has it. */
async function holder(path: string): Promise<Child> {
  const child = startChild('hold', path);
  expect(await child.line).toBe('locked');
  return child;
}

async function release(child: Child): Promise<void> {
  child.process.stdin!.end();
  await child.exited;
}

afterEach(() => {
  for (const child of children.splice(0)) {
    if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
  }
});

// Each attempt implementation: the native addon's one job (the default here), and fs calls.
describe.each([
  ['native', undefined],
  ['portable', portableLockAttempt],
])('flock across processes (%s attempt)', (_label, attempt?: LockAttempt) => {
  let directory: string;
  let id: string;
  let path: string;
  beforeEach(async () => {
    directory = await mkdtemp(join(tmpdir(), 'tussi-lock-'));
    id = randomUUID();
    path = join(directory, id);
    await writeFile(path, 'data');
  });
  afterEach(async () => {
    await rm(directory, { recursive: true, force: true });
  });

  it('tryLockFile returns null while another process holds the lock, and locks once it exits', async () => {
    const child = await holder(path);
    expect(await tryLockFile(path, attempt)).toBeNull();
    expect(await tryLockFile(path, attempt)).toBeNull();
    await release(child);
    const lock = await tryLockFile(path, attempt);
    expect(lock).not.toBeNull();
    await lock!.release();
  });

  it('a lock held here keeps another process out until released', async () => {
    const lock = (await tryLockFile(path, attempt))!;
    expect(lock).not.toBeNull();
    const busy = startChild('try', path);
    expect(await busy.line).toMatch(/^busy:(EWOULDBLOCK|EAGAIN)$/);
    await lock.release();
    await lock.release(); // harmless
    const free = startChild('try', path);
    expect(await free.line).toBe('locked');
  });

  it('a lock dies with a killed holder', async () => {
    const child = await holder(path);
    expect(await tryLockFile(path, attempt)).toBeNull();
    child.process.kill('SIGKILL');
    await child.exited;
    const lock = await tryLockFile(path, attempt);
    expect(lock).not.toBeNull();
    await lock!.release();
  });

  it('two descriptors of this process exclude each other too', async () => {
    const first = (await tryLockFile(path, attempt))!;
    expect(first).not.toBeNull();
    expect(await tryLockFile(path, attempt)).toBeNull();
    await first.release();
    const second = await tryLockFile(path, attempt);
    expect(second).not.toBeNull();
    await second!.release();
  });

  it('lockFile times out with LockTimeoutError while another process holds the lock', async () => {
    await holder(path);
    const started = Date.now();
    await expect(lockFile(path, 80, undefined, attempt)).rejects.toBeInstanceOf(LockTimeoutError);
    expect(Date.now() - started).toBeGreaterThanOrEqual(75);
  });

  it('FileUploadLocker refuses, then waits for, a lock held by another process', async () => {
    const locker = new FileUploadLocker((key) => join(directory, key));
    const child = await holder(path);
    await expect(locker.acquire(id, 50)).rejects.toBeInstanceOf(LockTimeoutError);

    let granted = false;
    const waiting = locker.acquire(id, 10_000).then((lock) => {
      granted = true;
      return lock;
    });
    // Still held by the child: the waiter must not have it (polling runs meanwhile).
    await new Promise((resolve) => setTimeout(resolve, 50));
    expect(granted).toBe(false);
    await release(child);
    const lock = await waiting;
    const busy = startChild('try', path);
    expect(await busy.line).toMatch(/^busy:/);
    await lock.release();
    expect(await startChild('try', path).line).toBe('locked');
  });

  it.each([
    ['renamed away', (p: string) => rename(p, `${p}.done`)],
    ['unlinked', (p: string) => unlink(p)],
  ])('a file %s while waiting is reported as LockTargetMissingError', async (_name, move) => {
    const child = await holder(path);
    const waiting = lockFile(path, 10_000, undefined, attempt);
    const outcome = waiting.then(
      () => 'locked',
      (e: unknown) => e,
    );
    await new Promise((resolve) => setTimeout(resolve, 20));
    await move(path);
    await release(child);
    expect(await outcome).toBeInstanceOf(LockTargetMissingError);
  });

  it('FileUploadLocker reports a file renamed away while waiting as LockTargetMissingError', async () => {
    const locker = new FileUploadLocker((key) => join(directory, key));
    const child = await holder(path);
    const outcome = locker.acquire(id, 10_000).then(
      () => 'locked',
      (e: unknown) => e,
    );
    await new Promise((resolve) => setTimeout(resolve, 20));
    await rename(path, `${path}.done`);
    await release(child);
    expect(await outcome).toBeInstanceOf(LockTargetMissingError);
    // The in-process part of the lock was given back: a new upload under that id can be locked.
    await writeFile(path, 'again');
    const lock = await locker.acquire(id, 50);
    await lock.release();
  });

  it('tryLockFile of a missing file is LockTargetMissingError', async () => {
    await expect(tryLockFile(join(directory, 'missing'), attempt)).rejects.toBeInstanceOf(
      LockTargetMissingError,
    );
  });
});

describe('KeyedMutex', () => {
  beforeEach(() => {
    jest.useFakeTimers({ doNotFake: ['nextTick', 'queueMicrotask', 'setImmediate'] });
  });
  afterEach(() => {
    jest.useRealTimers();
  });

  /** Lets every settled promise run its callbacks. */
  const flush = () => jest.advanceTimersByTimeAsync(0);

  it('grants waiters in arrival order', async () => {
    const mutex = new KeyedMutex();
    const order: number[] = [];
    const releaseFirst = await mutex.acquire('k', 0);
    const releases: (() => void)[] = [];
    const waiters = [1, 2, 3, 4].map((n) =>
      mutex.acquire('k', 10_000).then((release) => {
        order.push(n);
        releases.push(release);
      }),
    );
    await flush();
    expect(order).toEqual([]);
    releaseFirst();
    await flush();
    expect(order).toEqual([1]);
    for (let n = 2; n <= 4; n++) {
      releases.shift()!();
      await flush();
      expect(order).toEqual([1, 2, 3, 4].slice(0, n));
    }
    releases.shift()!();
    await Promise.all(waiters);
    expect(mutex.isHeld('k')).toBe(false);
  });

  it('rejects a waiter with LockTimeoutError after exactly waitMs', async () => {
    const mutex = new KeyedMutex();
    const release = await mutex.acquire('k', 0);
    const settled = jest.fn();
    const waiting = mutex.acquire('k', 1000);
    waiting.then(settled, settled);
    await jest.advanceTimersByTimeAsync(999);
    expect(settled).not.toHaveBeenCalled();
    await jest.advanceTimersByTimeAsync(1);
    await expect(waiting).rejects.toBeInstanceOf(LockTimeoutError);
    expect(mutex.isHeld('k')).toBe(true);
    release();
    expect(mutex.isHeld('k')).toBe(false);
  });

  it('a timed-out waiter leaves the others in order', async () => {
    const mutex = new KeyedMutex();
    const order: string[] = [];
    const releases: (() => void)[] = [];
    const take = (name: string, waitMs: number) =>
      mutex.acquire('k', waitMs).then(
        (release) => {
          order.push(name);
          releases.push(release);
        },
        () => order.push(`${name} timed out`),
      );
    const first = await mutex.acquire('k', 0);
    const all = [take('a', 10_000), take('b', 100), take('c', 10_000), take('d', 200)];
    await jest.advanceTimersByTimeAsync(150);
    expect(order).toEqual(['b timed out']);
    first();
    await flush();
    expect(order).toEqual(['b timed out', 'a']);
    await jest.advanceTimersByTimeAsync(100);
    expect(order).toEqual(['b timed out', 'a', 'd timed out']);
    releases.shift()!();
    await flush();
    expect(order).toEqual(['b timed out', 'a', 'd timed out', 'c']);
    releases.shift()!();
    await Promise.all(all);
    expect(mutex.isHeld('k')).toBe(false);
  });

  it('a release called twice grants only one waiter', async () => {
    const mutex = new KeyedMutex();
    const granted: string[] = [];
    const release = await mutex.acquire('k', 0);
    void mutex.acquire('k', 10_000).then(() => granted.push('a'));
    void mutex.acquire('k', 10_000).then(() => granted.push('b'));
    release();
    release();
    await flush();
    expect(granted).toEqual(['a']);
  });

  it('keys are independent', async () => {
    const mutex = new KeyedMutex();
    const a = await mutex.acquire('a', 0);
    const b = await mutex.acquire('b', 0);
    expect(mutex.isHeld('a') && mutex.isHeld('b')).toBe(true);
    a();
    expect(mutex.isHeld('a')).toBe(false);
    expect(mutex.isHeld('b')).toBe(true);
    b();
  });

  it('a free key is granted at once, even with waitMs 0', async () => {
    const mutex = new KeyedMutex();
    const release = await mutex.acquire('k', 0);
    const refused = expect(mutex.acquire('k', 0)).rejects.toBeInstanceOf(LockTimeoutError);
    await flush();
    await refused;
    release();
    const again = await mutex.acquire('k', 0);
    again();
  });
});

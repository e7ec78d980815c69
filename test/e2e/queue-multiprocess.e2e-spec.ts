import { afterAll, beforeAll, describe, expect, it } from '@jest/globals';
import { spawn, type ChildProcess } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import { mkdir, mkdtemp, readdir, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { FilesystemCompletedQueue } from '../../src/queue/filesystem-completed.queue.js';
import { UploadRecord } from '../../src/core/upload-record.js';

const workerScript = fileURLToPath(new URL('../support/queue-worker.mjs', import.meta.url));

interface Worker {
  child: ChildProcess;
  claimed: string[];
  delivered: string[];
  exited: Promise<number | null>;
}

function startWorker(
  dirs: { completed: string; staging: string; dest: string },
  mode: 'deliver' | 'hold',
  idleMs: number,
): Worker {
  const child = spawn(
    process.execPath,
    [workerScript, dirs.completed, dirs.staging, dirs.dest, mode, String(idleMs)],
    {
      stdio: ['ignore', 'pipe', 'inherit'],
    },
  );
  const worker: Worker = {
    child,
    claimed: [],
    delivered: [],
    exited: new Promise((resolve) => child.on('exit', (code) => resolve(code))),
  };
  let buffered = '';
  child.stdout.on('data', (chunk: Buffer) => {
    buffered += chunk.toString();
    const lines = buffered.split('\n');
    buffered = lines.pop()!;
    for (const line of lines) {
      const [event, id] = line.split(' ');
      if (event === 'claimed') worker.claimed.push(id);
      if (event === 'delivered') worker.delivered.push(id);
    }
  });
  return worker;
}

async function until(condition: () => boolean, ms: number): Promise<void> {
  const deadline = Date.now() + ms;
  while (!condition()) {
    if (Date.now() > deadline) throw new Error('condition not met in time');
    await new Promise((r) => setTimeout(r, 25));
  }
}

describe('completed queue across processes', () => {
  let root: string;
  let dirs: { completed: string; staging: string; dest: string };
  let producer: FilesystemCompletedQueue;

  beforeAll(async () => {
    root = await mkdtemp(join(tmpdir(), 'tussi-mp-'));
    dirs = {
      completed: join(root, 'completed'),
      staging: join(root, 'uploads'),
      dest: join(root, 'dest'),
    };
    await mkdir(dirs.dest, { recursive: true });
    producer = new FilesystemCompletedQueue({
      directory: dirs.completed,
      stagingDirectory: dirs.staging,
      fsync: false,
    });
  });

  afterAll(async () => {
    await producer.close();
    await rm(root, { recursive: true, force: true });
  });

  async function produce(count: number): Promise<string[]> {
    const ids: string[] = [];
    for (let i = 0; i < count; i++) {
      const id = randomUUID();
      await writeFile(join(dirs.staging, id), `upload ${i}`);
      const record = new UploadRecord(8, 8, { n: String(i) });
      record.finishedAt = new Date();
      await producer.enqueue(id, record);
      ids.push(id);
      if (i % 20 === 0) await new Promise((r) => setImmediate(r));
    }
    return ids;
  }

  it('hands each of 240 uploads to exactly one of 4 worker processes', async () => {
    const workers = Array.from({ length: 4 }, () => startWorker(dirs, 'deliver', 3000));
    const ids = await produce(240);
    await until(() => workers.reduce((n, w) => n + w.delivered.length, 0) >= ids.length, 45_000);
    const codes = await Promise.all(workers.map((w) => w.exited));
    expect(codes).toEqual([0, 0, 0, 0]);

    const delivered = workers.flatMap((w) => w.delivered);
    const claimed = workers.flatMap((w) => w.claimed);
    expect(delivered.sort()).toEqual([...ids].sort());
    expect(new Set(claimed).size).toBe(claimed.length);
    // More than one process did real work (not one worker draining everything).
    expect(workers.filter((w) => w.delivered.length > 0).length).toBeGreaterThan(1);
    const saved = await readdir(dirs.dest);
    expect(saved).toHaveLength(ids.length);
    expect(new Set(saved.map((name) => name.split('.')[0])).size).toBe(ids.length);
    const left = (await readdir(dirs.completed)).filter((n) => !n.endsWith('.done'));
    expect(left).toEqual([]);
  }, 60_000);

  it('returns the claim of a worker killed with SIGKILL to the queue', async () => {
    const [id] = await produce(1);
    const holders = Array.from({ length: 2 }, () => startWorker(dirs, 'hold', 10_000));
    await until(() => holders.some((w) => w.claimed.length > 0), 10_000);
    const holder = holders.find((w) => w.claimed.length > 0)!;
    expect(holder.claimed).toEqual([id]);
    const other = holders.find((w) => w !== holder)!;
    // While the holder lives, nobody else gets it.
    await new Promise((r) => setTimeout(r, 600));
    expect(other.claimed).toEqual([]);

    holder.child.kill('SIGKILL');
    await holder.exited;
    await until(() => other.claimed.length > 0, 10_000);
    expect(other.claimed).toEqual([id]);
    other.child.kill('SIGKILL');
    await other.exited;

    const rescuer = startWorker(dirs, 'deliver', 1500);
    await rescuer.exited;
    expect(rescuer.delivered).toEqual([id]);
  }, 40_000);
});

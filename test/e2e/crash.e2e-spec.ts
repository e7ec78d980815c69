import { afterAll, beforeAll, describe, expect, it } from '@jest/globals';
import { createHash, randomBytes } from 'node:crypto';
import { open, readdir, rm } from 'node:fs/promises';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';
import { OCTETS, TUS, idOf, tempDirs } from '../support/app.js';
import { forEachPlatform } from '../support/app.js';
import { ROOT, ensureBuilt } from '../support/child-server.js';
import { sha256File, type RawRequestOptions, type RawResponse } from '../support/http.js';
import { spawnStandby, type RobustChild, type Standby } from '../support/robust-child.js';
import {
  Gate,
  KiB,
  MiB,
  Mutex,
  filePrefix,
  randomInt,
  sleep,
  tusRequest,
} from '../support/robust-http.js';

/**
 * Crash safety. A server child process (dist/, filesystem storage, fsync on) is SIGKILLed at
 * random moments while a dozen uploads stream into it, then restarted on the same directories,
 * again and again. After every restart, before any client goes on, each upload is inspected:
 * HEAD's offset never goes back below an acknowledged one, never exceeds what the data file
 * really holds (its first `offset` bytes equal the source), and a finished upload's bytes are
 * exactly the source. At the end every upload has completed by resuming, and a consumer of the
 * completed queue (FilesystemCompletedQueue from dist/, in this process) got each exactly once.
 */
type Dist = typeof import('../../src/index.js');

/**
 * Kills per platform. What the kills test of the storage (offsets, records, the queue) does not
 * depend on the platform and gets its full count under Express; under Fastify, enough to catch
 * a request layer that loses or misreports bytes when its process dies.
 */
const KILLS = { express: 55, fastify: 15 } as const;
const CONCURRENCY = 12;
const MAX_UPLOADS = 48;
const MIN_SIZE = 256 * KiB;
const MAX_SIZE = 3 * MiB;
/** Upload bytes are slices of one random pool: nothing per upload is held in memory. */
const POOL = randomBytes(MAX_SIZE * 2);
/** A hard stop for the kill phase on a machine much slower than expected (it takes ~50 s). */
const PHASE_BUDGET_MS = 150_000;
const DRAIN_MS = 30_000;

interface Upload {
  index: number;
  start: number;
  length: number;
  sha: string;
  id?: string;
  /** Highest offset the server acknowledged (204 Upload-Offset, or HEAD). */
  acked: number;
  done: boolean;
  /** The finished bytes were seen whole and right (in completedDir or by the consumer). */
  verified: boolean;
}

const source = (u: Upload, from = 0, to = u.length) => POOL.subarray(u.start + from, u.start + to);

async function* pieces(data: Buffer, size: number): AsyncGenerator<Buffer> {
  for (let at = 0; at < data.length; at += size) yield data.subarray(at, at + size);
}

const exists = (path: string) =>
  open(path, 'r').then(
    async (h) => {
      await h.close();
      return true;
    },
    () => false,
  );

forEachPlatform((platform) => {
  describe('SIGKILL at random moments during concurrent uploads', () => {
    let dirs: Awaited<ReturnType<typeof tempDirs>>;
    let dist: Dist;
    /** Children with their modules loaded, ready to start: a restart costs only the bootstrap. */
    const standbys: Array<Promise<Standby>> = [];
    let server: RobustChild | undefined;
    let queue: InstanceType<Dist['FilesystemCompletedQueue']> | undefined;
    const stopConsumer = new AbortController();

    beforeAll(async () => {
      await ensureBuilt();
      dirs = await tempDirs('tussi-crash-');
      dist = (await import(pathToFileURL(join(ROOT, 'dist', 'index.js')).href)) as Dist;
    });

    afterAll(async () => {
      stopConsumer.abort();
      await queue?.close();
      await server?.kill();
      for (const s of standbys.splice(0)) await (await s.catch(() => undefined))?.dispose();
      if (dirs) await rm(dirs.root, { recursive: true, force: true });
    });

    it(`survives ${KILLS[platform]} SIGKILLs: offsets honest, every upload completes and is delivered once`, async () => {
      const options = { fsync: true, lockWaitMs: 1000, janitor: false as const };
      const failures: string[] = [];
      const fail = (message: string) => {
        if (failures.length < 50) failures.push(message);
      };
      const gate = new Gate();
      const inspecting = new Mutex();
      const uploads: Upload[] = [];
      const byId = new Map<string, Upload>();
      const claims = new Map<string, number>();
      let kills = 0;
      let killPhaseOver = false;
      let crashedOnItsOwn = 0;
      const serverErrors: string[] = [];
      const timing = { restart: 0, inspect: 0 };
      const stats = { requests: 0, cut: 0, patches: 0, conflicts: 0, locked: 0 };

      // The consumer: claims finished uploads, checks their bytes, counts claims per upload.
      queue = new dist.FilesystemCompletedQueue({
        directory: dirs.completedDir,
        stagingDirectory: dirs.uploadDir,
        pollIntervalMs: 100,
      });
      const consumer = (async () => {
        while (!stopConsumer.signal.aborted) {
          await inspecting.run(async () => {
            let upload;
            try {
              upload = await queue!.waitForFile({ timeout: 100, signal: stopConsumer.signal });
            } catch (e) {
              if (e instanceof dist.TimeoutError || e instanceof dist.AbortError) return;
              throw e;
            }
            try {
              claims.set(upload.name, (claims.get(upload.name) ?? 0) + 1);
              const u = byId.get(upload.name);
              if (!u) {
                fail(`consumer got an upload no client created: ${upload.name}`);
                return;
              }
              if ((claims.get(upload.name) ?? 0) > 1) fail(`${upload.name} claimed twice`);
              const sha = await sha256File(upload.path);
              if (sha !== u.sha) fail(`${upload.name}: delivered bytes differ from the source`);
              if (upload.record.length !== u.length || upload.record.offset !== u.length) {
                fail(`${upload.name}: delivered record says ${JSON.stringify(upload.record)}`);
              }
              u.verified = true;
            } finally {
              await upload.release();
            }
          });
          await sleep(5);
        }
      })();

      const send = async (options: RawRequestOptions): Promise<RawResponse | undefined> => {
        const url = await gate.wait();
        stats.requests++;
        const res = await tusRequest(url, { timeoutMs: 8000, ...options });
        if (res.status !== 0) return res;
        stats.cut++;
        return undefined; // the server went away under the request
      };

      /** Drives one upload to completion, resuming after every cut. */
      const drive = async (u: Upload, deadline: number) => {
        while (Date.now() < deadline) {
          if (!u.id) {
            const res = await send({
              method: 'POST',
              path: '/files',
              headers: {
                ...TUS,
                'Upload-Length': String(u.length),
                'Upload-Metadata': `crashidx ${Buffer.from(String(u.index)).toString('base64')}`,
              },
            });
            if (!res) continue; // lost: a new creation (the lost one stays an orphan)
            if (res.status !== 201) return fail(`POST #${u.index}: ${res.status}`);
            u.id = idOf(String(res.headers.location));
            byId.set(u.id, u);
            continue;
          }
          const head = await send({ method: 'HEAD', path: `/files/${u.id}`, headers: TUS });
          if (!head) continue;
          if (head.status !== 200) return fail(`HEAD ${u.id}: ${head.status}`);
          const offset = Number(head.headers['upload-offset']);
          if (offset < u.acked) fail(`${u.id}: HEAD offset ${offset} < acknowledged ${u.acked}`);
          u.acked = Math.max(u.acked, offset);
          if (offset === u.length) {
            u.done = true;
            return;
          }
          const size = Math.min(u.length - offset, randomInt(64 * KiB, 1 * MiB));
          stats.patches++;
          const res = await send({
            method: 'PATCH',
            path: `/files/${u.id}`,
            headers: {
              ...TUS,
              'Content-Type': OCTETS,
              'Upload-Offset': String(offset),
              'Content-Length': String(size),
            },
            body: pieces(source(u, offset, offset + size), 32 * KiB),
          });
          if (!res) continue;
          if (res.status === 204) {
            const now = Number(res.headers['upload-offset']);
            if (now !== offset + size) fail(`${u.id}: PATCH 204 with offset ${now}`);
            u.acked = Math.max(u.acked, now);
          } else if (res.status === 409) {
            stats.conflicts++;
          } else if (res.status === 423) {
            stats.locked++;
            await sleep(50);
          } else {
            return fail(`PATCH ${u.id}: ${res.status} ${res.body.toString()}`);
          }
        }
        fail(`upload #${u.index} (${u.id}) not finished before its deadline`);
      };

      const newUpload = (): Upload => {
        const length = randomInt(MIN_SIZE, MAX_SIZE);
        const start = randomInt(0, POOL.length - length);
        const u: Upload = {
          index: uploads.length,
          start,
          length,
          sha: '',
          acked: 0,
          done: false,
          verified: false,
        };
        u.sha = createHash('sha256').update(source(u)).digest('hex');
        uploads.push(u);
        return u;
      };

      const started = Date.now();
      const clientDeadline = started + PHASE_BUDGET_MS + DRAIN_MS;
      // Each client keeps one upload going; while kills remain, finished ones are replaced.
      const clients = Array.from({ length: CONCURRENCY }, async () => {
        for (let first = true; first || (!killPhaseOver && uploads.length < MAX_UPLOADS);) {
          first = false;
          await drive(newUpload(), clientDeadline);
        }
      });

      /** With every client held at the gate and the consumer paused: each upload as stored. */
      const inspectOne = async (url: string, u: Upload & { id: string }) => {
        const head = await tusRequest(url, {
          method: 'HEAD',
          path: `/files/${u.id}`,
          headers: TUS,
        });
        if (head.status !== 200) {
          fail(`after restart ${kills}: HEAD ${u.id} (#${u.index}) answered ${head.status}`);
          return;
        }
        const offset = Number(head.headers['upload-offset']);
        if (head.headers['upload-length'] !== String(u.length)) {
          fail(`${u.id}: Upload-Length ${String(head.headers['upload-length'])}`);
        }
        if (!(offset >= u.acked && offset <= u.length)) {
          fail(`after restart ${kills}: ${u.id} offset ${offset}, acked ${u.acked}`);
        }
        u.acked = Math.max(u.acked, offset);
        const staged = join(dirs.uploadDir, u.id);
        const completed = join(dirs.completedDir, u.id);
        if (offset < u.length) {
          const stored = await filePrefix(staged, offset);
          if (stored.length !== offset || !stored.equals(source(u, 0, offset))) {
            fail(
              `after restart ${kills}: ${u.id} claims ${offset} bytes, ` +
                `but the staged data file holds ${stored.length} matching ones at most`,
            );
          }
        } else if (await exists(completed)) {
          if (!u.verified) {
            if ((await sha256File(completed)) !== u.sha) {
              fail(`${u.id}: finished bytes in completedDir differ from the source`);
            }
            u.verified = true;
          }
          if (await exists(staged)) fail(`${u.id}: finished but still staged`);
        } else if (!claims.has(u.id)) {
          fail(`after restart ${kills}: ${u.id} is finished but neither queued nor delivered`);
        }
      };

      /** With every client held at the gate and the consumer paused: each upload as stored. */
      const inspect = async (url: string) => {
        await inspecting.run(async () => {
          const todo = uploads.filter((u): u is Upload & { id: string } => u.id !== undefined);
          await Promise.all(
            Array.from({ length: 8 }, async () => {
              for (let u = todo.shift(); u; u = todo.shift()) await inspectOne(url, u);
            }),
          );
        });
      };

      const nextStandby = () => {
        const next = spawnStandby(dirs.uploadDir, dirs.completedDir, options);
        next.catch(() => {}); // awaited where used
        return next;
      };

      standbys.push(nextStandby(), nextStandby());
      while (kills < KILLS[platform] && Date.now() - started < PHASE_BUDGET_MS) {
        let t = Date.now();
        server = await (await standbys.shift()!).start();
        timing.restart += Date.now() - t;
        standbys.push(nextStandby());
        t = Date.now();
        await inspect(server.baseUrl);
        timing.inspect += Date.now() - t;
        gate.open(server.baseUrl);
        await sleep(randomInt(20, 300));
        gate.close();
        if (!server.alive()) {
          crashedOnItsOwn++;
          fail(`the server died on its own:\n${server.output()}`);
        }
        serverErrors.push(...server.errors());
        await server.kill();
        server = undefined;
        kills++;
      }
      killPhaseOver = true;
      const killPhaseSeconds = (Date.now() - started) / 1000;

      // The last restart: no more kills; everything must complete by resuming.
      server = await (await standbys.shift()!).start();
      for (const s of standbys.splice(0)) await (await s.catch(() => undefined))?.dispose();
      await inspect(server.baseUrl);
      gate.open(server.baseUrl);
      await Promise.all(clients);
      const deliveredBy = Date.now() + 15_000;
      while (Date.now() < deliveredBy && uploads.some((u) => u.id && !claims.has(u.id))) {
        await sleep(50);
      }
      await sleep(600); // a duplicate would show up now
      gate.close();
      await inspect(server.baseUrl);
      stopConsumer.abort();
      await consumer;
      serverErrors.push(...server.errors());
      const finalAlive = server.alive();
      await server.stop();
      server = undefined;

      const orphans = (await readdir(dirs.uploadDir)).filter(
        (n) => !n.includes('.') && !byId.has(n),
      ).length;
      // Data or record of one of ours (temp records of writes a kill cut short may stay: the
      // janitor sweeps them).
      const left = (await readdir(dirs.uploadDir)).filter(
        (n) => byId.has(n) || (n.endsWith('.meta') && byId.has(n.slice(0, -5))),
      );
      const summary = {
        kills,
        uploads: uploads.length,
        bytes: uploads.reduce((s, u) => s + u.length, 0),
        ...stats,
        orphanCreations: orphans,
        killPhaseSeconds,
        timing,
        seconds: (Date.now() - started) / 1000,
      };
      console.log(`crash suite: ${JSON.stringify(summary)}`);

      expect(failures).toEqual([]);
      expect(crashedOnItsOwn).toBe(0);
      expect(finalAlive).toBe(true);
      expect(kills).toBeGreaterThanOrEqual(KILLS[platform] - 5);
      for (const u of uploads) {
        expect({
          upload: u.index,
          done: u.done,
          verified: u.verified,
          claims: claims.get(u.id!),
        }).toEqual({
          upload: u.index,
          done: true,
          verified: true,
          claims: 1,
        });
      }
      // Every claim was an upload of ours, each once.
      expect([...claims.values()].every((n) => n === 1)).toBe(true);
      expect(claims.size).toBe(uploads.length);
      // Nothing of a finished upload is left in staging (data, record or temp record).
      expect(left).toEqual([]);
      expect(serverErrors).toEqual([]);
    }, 260_000);
  });
});

import { createHash, randomBytes } from 'node:crypto';
import { createReadStream } from 'node:fs';
import { mkdtemp, readdir, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from '@jest/globals';
import {
  CreateBucketCommand,
  ListMultipartUploadsCommand,
  ListObjectsV2Command,
  type S3Client,
} from '@aws-sdk/client-s3';
import {
  cliEnv,
  ensureCliBuilt,
  SERVER_BIN,
  startServer,
  waitExit,
  type ServerProcess,
} from '../support/cli-process.js';
import { runPythonScript, tuspyMissing } from '../support/clients-python.js';
import { startUpload } from '../support/clients-tus-js.js';
import { s3ClientOf, startCephRgw, type CephRgw } from '../support/ceph-rgw.js';
import { pollUntil, request } from '../support/http.js';
import { spawn } from 'node:child_process';

/**
 * tussi-server with `--s3-bucket` against a real S3 server (Ceph RADOS Gateway): no upload
 * directory, every byte in the bucket, each finished upload delivered by the sample's consumer
 * from its object, and nothing left in the bucket afterwards. Real clients (tus-js-client,
 * tuspy) and raw requests: PATCHes that end below a part, a body cut mid-part, a checksum
 * mismatch, termination, concatenation, and a SIGKILL of the server mid-upload.
 */

const MiB = 1024 * 1024;
const sha256 = (data: Uint8Array): string => createHash('sha256').update(data).digest('hex');
const TUS = { 'Tus-Resumable': '1.0.0' };
const OCTETS = { ...TUS, 'Content-Type': 'application/offset+octet-stream' };
const b64 = (s: string) => Buffer.from(s).toString('base64');
const until = async <T>(probe: () => Promise<T | undefined>, timeoutMs: number): Promise<T> =>
  (await pollUntil(probe, (v) => v !== undefined, { timeoutMs, intervalMs: 100 })) as T;

/** Peak resident memory of a process (VmHWM), bytes. */
async function peakRss(pid: number): Promise<number> {
  const status = await readFile(`/proc/${pid}/status`, 'utf8');
  return Number(/VmHWM:\s+(\d+) kB/.exec(status)![1]) * 1024;
}

describe('tussi-server on S3 (Ceph RADOS Gateway)', () => {
  let gateway: CephRgw | undefined;
  let s3: S3Client;
  let work: string;
  let server: ServerProcess | undefined;
  const bucket = `tussi-${randomBytes(4).toString('hex')}`;
  const prefix = 'up/';

  const env = () =>
    ({
      AWS_ACCESS_KEY_ID: gateway!.accessKeyId,
      AWS_SECRET_ACCESS_KEY: gateway!.secretAccessKey,
      TUS_S3_FORCE_PATH_STYLE: 'true',
    }) as Record<string, string>;
  const s3Args = () => [
    '--s3-bucket',
    bucket,
    '--s3-endpoint',
    gateway!.endpoint,
    '--s3-prefix',
    prefix,
    '--s3-scratch-dir',
    join(work, 'scratch'),
    '--completed-dir',
    join(work, 'completed'),
    '--dest-dir',
    join(work, 'dest'),
    '--no-prompt',
  ];
  const start = () => startServer(s3Args(), { cwd: work, env: env() });
  const base = () => server!.url.replace(/\/files\/$/, '');

  /** The delivered file of an upload (`{id}-{filename}` in the destination), once it is there. */
  async function delivered(id: string): Promise<Buffer> {
    const dest = join(work, 'dest');
    const name = await until(async () => {
      const names = await readdir(dest).catch(() => [] as string[]);
      const data = names.find((n) => n.startsWith(id) && !n.endsWith('.meta'));
      return data && names.includes(`${data}.meta`) ? data : undefined;
    }, 30_000);
    return readFile(join(dest, name));
  }

  async function bucketKeys(): Promise<string[]> {
    const listed = await s3.send(new ListObjectsV2Command({ Bucket: bucket, Prefix: prefix }));
    return (listed.Contents ?? []).map((o) => o.Key!);
  }

  async function openMultipartUploads(): Promise<number> {
    const listed = await s3.send(new ListMultipartUploadsCommand({ Bucket: bucket }));
    return (listed.Uploads ?? []).length;
  }

  async function create(length: number | null, headers: Record<string, string> = {}) {
    const res = await request(base(), {
      method: 'POST',
      path: '/files/',
      headers: {
        ...TUS,
        ...(length === null ? { 'Upload-Defer-Length': '1' } : { 'Upload-Length': String(length) }),
        'Upload-Metadata': `filename ${b64('data.bin')}`,
        ...headers,
      },
    });
    expect(res.status).toBe(201);
    // The path alone: a restarted server listens on another port.
    const location = new URL(String(res.headers.location)).pathname;
    return { location, id: location.slice(location.lastIndexOf('/') + 1) };
  }

  const patch = (location: string, offset: number, body: Buffer, headers = {}) =>
    request(base(), {
      method: 'PATCH',
      path: location,
      headers: { ...OCTETS, 'Upload-Offset': String(offset), ...headers },
      body,
    });

  const head = async (location: string) =>
    request(base(), { method: 'HEAD', path: location, headers: TUS });

  beforeAll(async () => {
    await ensureCliBuilt();
    gateway = await startCephRgw();
    work = await mkdtemp(join(tmpdir(), 'tussi-s3-server-'));
    s3 = s3ClientOf(gateway);
    await s3.send(new CreateBucketCommand({ Bucket: bucket }));
    server = await start();
  }, 180_000);

  afterAll(async () => {
    await server?.stop();
    s3?.destroy();
    await gateway?.stop();
    if (work) await rm(work, { recursive: true, force: true });
  }, 60_000);

  it('refuses to start, in one line, on a missing bucket, refused credentials, or several workers', async () => {
    const run = async (args: string[], extra: Record<string, string>) => {
      const child = spawn(process.execPath, [SERVER_BIN, '--port', '0', ...args], {
        cwd: work,
        env: cliEnv(extra),
        stdio: ['pipe', 'pipe', 'pipe'],
      });
      let stderr = '';
      child.stderr.on('data', (c: Buffer) => (stderr += c.toString()));
      const exit = await waitExit(child, 30_000);
      return { exit, stderr };
    };
    const missing = await run(
      [...s3Args().map((a) => (a === bucket ? 'no-such-bucket' : a))],
      env(),
    );
    expect(missing.exit.code).not.toBe(0);
    expect(missing.stderr).toMatch(/no-such-bucket.*does not exist/);
    expect(missing.stderr).not.toMatch(/\n\s+at /); // no stack trace
    const refused = await run(s3Args(), { ...env(), AWS_SECRET_ACCESS_KEY: 'wrong' });
    expect(refused.exit.code).not.toBe(0);
    expect(refused.stderr).toMatch(/access denied/);
    const workers = await run([...s3Args(), '--workers', '2'], env());
    expect(workers.exit.code).not.toBe(0);
    expect(workers.stderr).toMatch(/--workers above 1 with --s3-bucket/);
  }, 90_000);

  it('tus-js-client: 13 MiB in 3 MiB PATCHes (each ending below a part) delivered byte-identical; nothing left in the bucket', async () => {
    const data = randomBytes(13 * MiB + 777);
    const run = startUpload(data, {
      endpoint: server!.url,
      chunkSize: 3 * MiB,
      metadata: { filename: 'tus-js.bin', filetype: 'application/octet-stream' },
    });
    await run.done;
    const id = run.upload.url!.split('/').pop()!;
    expect(sha256(await delivered(id))).toBe(sha256(data));
    await until(async () => ((await bucketKeys()).length === 0 ? true : undefined), 10_000);
    expect(await openMultipartUploads()).toBe(0);
    // HEAD still knows it (the queue's receipt): length and offset.
    const known = await head(run.upload.url!);
    expect(known.headers['upload-offset']).toBe(String(data.length));
  }, 120_000);

  it('tuspy with checksums: delivered byte-identical', async () => {
    const missing = await tuspyMissing();
    if (missing) throw new Error(missing);
    const data = randomBytes(6 * MiB + 5);
    const file = join(work, 'tuspy.bin');
    await writeFile(file, data);
    const result = await runPythonScript<{ url: string; offset: number }>(
      'clients-tuspy-upload.py',
      [server!.url, file, String(2 * MiB), '--checksum'],
    );
    expect(result.offset).toBe(data.length);
    expect(sha256(await delivered(result.url.split('/').pop()!))).toBe(sha256(data));
  }, 120_000);

  it('keeps every byte of a body cut mid-part, and the upload resumes from there', async () => {
    const data = randomBytes(8 * MiB);
    const { location, id } = await create(data.length);
    const cut = await request(base(), {
      method: 'PATCH',
      path: location,
      headers: { ...OCTETS, 'Upload-Offset': '0', 'Content-Length': String(data.length) },
      body: data,
      abortAfterBytes: 6 * MiB + 1000,
    });
    expect(cut.closedWithoutResponse).toBe(true);
    const offset = await until(async () => {
      const res = await head(location);
      const n = Number(res.headers['upload-offset']);
      return n > 0 ? n : undefined;
    }, 10_000);
    expect(offset).toBeGreaterThanOrEqual(6 * MiB);
    const rest = await patch(location, offset, data.subarray(offset));
    expect(rest.status).toBe(204);
    expect(sha256(await delivered(id))).toBe(sha256(data));
  }, 60_000);

  it('stores nothing of a chunk whose checksum (header or trailer) does not match', async () => {
    const data = randomBytes(2 * MiB);
    const { location, id } = await create(data.length);
    const first = data.subarray(0, MiB);
    const sha1 = (b: Buffer) => createHash('sha1').update(b).digest('base64');
    const bad = await patch(location, 0, first, { 'Upload-Checksum': `sha1 ${sha1(data)}` });
    expect(bad.status).toBe(460);
    expect((await head(location)).headers['upload-offset']).toBe('0');
    const good = await patch(location, 0, first, { 'Upload-Checksum': `sha1 ${sha1(first)}` });
    expect(good.status).toBe(204);
    // A checksum sent as a trailer: S3 cannot read an open upload back, so it is hashed while
    // the body streams.
    const second = data.subarray(MiB);
    const badTrailer = await request(base(), {
      method: 'PATCH',
      path: location,
      headers: { ...OCTETS, 'Upload-Offset': String(MiB) },
      body: second,
      trailers: {
        'Upload-Checksum': `sha256 ${createHash('sha256').update(first).digest('base64')}`,
      },
    });
    expect(badTrailer.status).toBe(460);
    expect((await head(location)).headers['upload-offset']).toBe(String(MiB));
    const goodTrailer = await request(base(), {
      method: 'PATCH',
      path: location,
      headers: { ...OCTETS, 'Upload-Offset': String(MiB) },
      body: second,
      trailers: {
        'Upload-Checksum': `sha256 ${createHash('sha256').update(second).digest('base64')}`,
      },
    });
    expect(goodTrailer.status).toBe(204);
    expect(sha256(await delivered(id))).toBe(sha256(data));
  }, 60_000);

  it('creation-with-upload and a deferred length', async () => {
    const data = randomBytes(7 * MiB);
    const res = await request(base(), {
      method: 'POST',
      path: '/files/',
      headers: {
        ...OCTETS,
        'Upload-Defer-Length': '1',
        'Upload-Metadata': `filename ${b64('deferred.bin')}`,
      },
      body: data.subarray(0, 3 * MiB),
    });
    expect(res.status).toBe(201);
    expect(res.headers['upload-offset']).toBe(String(3 * MiB));
    const location = String(res.headers.location);
    const done = await patch(location, 3 * MiB, data.subarray(3 * MiB), {
      'Upload-Length': String(data.length),
    });
    expect(done.status).toBe(204);
    expect(sha256(await delivered(location.split('/').pop()!))).toBe(sha256(data));
  }, 60_000);

  it('terminates an open upload: its multipart upload aborted, its objects gone', async () => {
    const { location, id } = await create(20 * MiB);
    expect((await patch(location, 0, randomBytes(6 * MiB))).status).toBe(204);
    expect((await bucketKeys()).some((k) => k.includes(id))).toBe(true);
    const deleted = await request(base(), { method: 'DELETE', path: location, headers: TUS });
    expect(deleted.status).toBe(204);
    expect((await bucketKeys()).filter((k) => k.includes(id))).toEqual([]);
    expect((await head(location)).status).toBe(404);
    const open = await s3.send(new ListMultipartUploadsCommand({ Bucket: bucket }));
    expect((open.Uploads ?? []).filter((u) => u.Key?.includes(id))).toEqual([]);
  }, 60_000);

  it('concatenates partial uploads into a final one', async () => {
    const a = randomBytes(6 * MiB + 3);
    const b = randomBytes(2 * MiB);
    const partial = async (data: Buffer) => {
      const { location } = await create(data.length, { 'Upload-Concat': 'partial' });
      expect((await patch(location, 0, data)).status).toBe(204);
      return location;
    };
    const [la, lb] = [await partial(a), await partial(b)];
    const final = await request(base(), {
      method: 'POST',
      path: '/files/',
      headers: {
        ...TUS,
        'Upload-Concat': `final;${la} ${lb}`,
        'Upload-Metadata': `filename ${b64('joined.bin')}`,
      },
    });
    expect(final.status).toBe(201);
    const id = String(final.headers.location).split('/').pop()!;
    expect(sha256(await delivered(id))).toBe(sha256(Buffer.concat([a, b])));
  }, 60_000);

  it("takes 1 GiB in one PATCH with bounded memory (the server's peak RSS is reported)", async () => {
    const GiB = 1024 * MiB;
    // Generated while sent: 1 MiB of random bytes, each copy stamped with its index.
    const block = randomBytes(MiB);
    const hash = createHash('sha256');
    async function* body(): AsyncGenerator<Buffer> {
      for (let i = 0; i < GiB / MiB; i++) {
        const chunk = Buffer.from(block);
        chunk.writeUInt32BE(i, 0);
        hash.update(chunk);
        yield chunk;
      }
    }
    const rss = () => peakRss(server!.child.pid!);
    const before = await rss();
    const { location, id } = await create(GiB);
    const started = Date.now();
    const res = await request(base(), {
      method: 'PATCH',
      path: location,
      headers: { ...OCTETS, 'Upload-Offset': '0', 'Content-Length': String(GiB) },
      body: body(),
      timeoutMs: 300_000,
    });
    expect(res.status).toBe(204);
    const seconds = (Date.now() - started) / 1000;
    const peak = await rss();
    const file = join(
      work,
      'dest',
      await until(async () => {
        const names = await readdir(join(work, 'dest'));
        const name = names.find((n) => n.startsWith(id) && !n.endsWith('.meta'));
        return name && names.includes(`${name}.meta`) ? name : undefined;
      }, 120_000),
    );
    const delivered = createHash('sha256');
    for await (const chunk of createReadStream(file)) delivered.update(chunk as Buffer);
    expect(delivered.digest('hex')).toBe(hash.digest('hex'));
    await rm(file);
    process.stdout.write(
      `S3 1 GiB PATCH: ${(1024 / seconds).toFixed(0)} MiB/s; server peak RSS ${(before / MiB).toFixed(0)} MiB before, ${(peak / MiB).toFixed(0)} MiB after\n`,
    );
    // Parts are spooled to files: the body never sits in memory.
    expect(peak - before).toBeLessThan(160 * MiB);
  }, 300_000);

  it('resumes after the server is SIGKILLed mid-upload: every acknowledged byte is in S3', async () => {
    const data = randomBytes(12 * MiB);
    const { location, id } = await create(data.length);
    expect((await patch(location, 0, data.subarray(0, 4 * MiB))).status).toBe(204);
    // Killed while the next body streams in.
    const cut = request(base(), {
      method: 'PATCH',
      path: location,
      headers: { ...OCTETS, 'Upload-Offset': String(4 * MiB), 'Content-Length': String(8 * MiB) },
      body: data.subarray(4 * MiB),
      stallAfterBytes: 3 * MiB,
    });
    await new Promise((r) => setTimeout(r, 500));
    server!.child.kill('SIGKILL');
    await server!.exited;
    await cut.catch(() => undefined);
    server = await start();
    const res = await head(location);
    expect(res.status).toBe(200);
    const offset = Number(res.headers['upload-offset']);
    // What was acknowledged is kept; what the crash cut was never acknowledged.
    expect(offset).toBeGreaterThanOrEqual(4 * MiB);
    const rest = await patch(location, offset, data.subarray(offset));
    expect(rest.status).toBe(204);
    expect(sha256(await delivered(id))).toBe(sha256(data));
  }, 120_000);
});

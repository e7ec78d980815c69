import { afterAll, afterEach, beforeAll, describe, expect, it } from '@jest/globals';
import { execFile } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { existsSync } from 'node:fs';
import { mkdir, mkdtemp, open, readFile, readdir, rm, writeFile } from 'node:fs/promises';
import { request, type IncomingMessage } from 'node:http';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import {
  delivered,
  ensureCliBuilt,
  idOfUrl,
  runUpload,
  SERVER_BIN,
  sha256File,
  spawnUpload,
  stagingOffset,
  startServer,
  startServerIn,
  until,
  UPLOAD_BIN,
  cliEnv,
  waitExit,
  type ServerProcess,
} from '../support/cli-process.js';
import { hasScript, spawnOnPty, type PtyProcess } from '../support/cli-pty.js';
import { request as tusRequest } from '../support/http.js';

const MiB = 1024 * 1024;

/** Writes `size` random bytes to `path`, 1 MiB at a time. */
async function randomFile(path: string, size: number): Promise<string> {
  const file = await open(path, 'w');
  try {
    for (let written = 0; written < size; written += MiB) {
      await file.write(randomBytes(Math.min(MiB, size - written)));
    }
  } finally {
    await file.close();
  }
  return path;
}

/** A port nothing listens on (bound, then released). */
async function closedPort(): Promise<number> {
  const server = createServer();
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as { port: number };
  await new Promise((resolve) => server.close(resolve));
  return port;
}

/** `name: upload URL …` lines of an uploader's stdout, in order. */
function uploadUrls(stdout: string): string[] {
  return [...stdout.matchAll(/^Upload URL: (\S+)$/gm)].map((m) => m[1]);
}

/** Pids of the Nest log lines containing `text`. */
function pidsLogging(output: string, text: string): string[] {
  return [...output.matchAll(/^\[Nest\] (\d+) .*$/gm)]
    .filter((m) => m[0].includes(text))
    .map((m) => m[1]);
}

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

describe('tussi-server and tussi-upload (real processes)', () => {
  let root: string;
  let count = 0;
  const servers: ServerProcess[] = [];
  const ptys: PtyProcess[] = [];

  /** A fresh directory below the suite's temp root. */
  async function dir(name: string): Promise<string> {
    const path = join(root, `${++count}-${name}`);
    await mkdir(path, { recursive: true });
    return path;
  }

  /** A server with its three directories under a fresh dir. */
  async function server(extra: string[] = []) {
    const base = await dir('server');
    const started = await startServerIn(base, extra);
    servers.push(started.srv);
    return { ...started, base, cache: join(base, 'cache') };
  }

  beforeAll(async () => {
    await ensureCliBuilt();
    root = await mkdtemp(join(tmpdir(), 'tussi-cli-'));
  }, 240_000);

  afterEach(async () => {
    for (const pty of ptys.splice(0)) {
      if (pty.child.exitCode === null && pty.child.signalCode === null) {
        pty.child.kill('SIGKILL');
      }
    }
    await Promise.all(servers.splice(0).map((s) => s.stop(5000)));
  });

  afterAll(async () => {
    if (root) await rm(root, { recursive: true, force: true });
  });

  it('--help of both commands lists every flag', async () => {
    const run = (bin: string) =>
      promisify(execFile)(process.execPath, [bin, '--help'], { env: cliEnv(), timeout: 20_000 });
    const server = (await run(SERVER_BIN)).stdout;
    for (const flag of [
      '--host',
      '--port',
      '--upload-dir',
      '--completed-dir',
      '--dest-dir',
      '--max-size',
      '--max-chunk-size',
      '--space-margin',
      '--token',
      '--token-file',
      '--max-creations-per-minute',
      '--max-requests-per-minute',
      '--trusted-proxy',
      '--cors-origin',
      '--no-fsync',
      '--no-ietf-draft',
      '--metrics-path',
      '--no-metrics',
      '--health-path',
      '--log-format',
      '--shutdown-timeout',
      '--janitor-cron',
      '--no-ui',
      '--workers',
      '--no-prompt',
      '--help',
      '--version',
    ]) {
      expect(server).toContain(flag);
    }
    for (const variable of [
      'HOST',
      'PORT',
      'TUS_UPLOAD_DIR',
      'TUS_COMPLETED_DIR',
      'TUS_DEST_DIR',
      'TUS_MAX_SIZE',
      'TUS_MAX_CHUNK_SIZE',
      'TUS_SPACE_MARGIN',
      'TUS_TOKEN',
      'TUS_TOKEN_FILE',
      'TUS_MAX_CREATIONS_PER_MINUTE',
      'TUS_MAX_REQUESTS_PER_MINUTE',
      'TUS_TRUSTED_PROXIES',
      'TUS_CORS_ORIGINS',
      'TUS_FSYNC',
      'TUS_IETF_DRAFT',
      'TUS_METRICS_PATH',
      'TUS_HEALTH_PATH',
      'TUS_LOG_FORMAT',
      'TUS_JANITOR_CRON',
      'TUS_UI',
      'TUS_SHUTDOWN_TIMEOUT_MS',
      'TUS_WORKERS',
    ]) {
      expect(server).toContain(variable);
    }
    const upload = (await run(UPLOAD_BIN)).stdout;
    for (const flag of [
      '--endpoint',
      '--size',
      '--chunk-size',
      '--metadata',
      '--header',
      '--token',
      '--parallel',
      '--retry-delays',
      '--no-resume',
      '--help',
      '--version',
    ]) {
      expect(upload).toContain(flag);
    }
  });

  it('--space-margin reaches the space accounting: a margin above the free space refuses every creation', async () => {
    const { srv } = await server(['--space-margin', '1000T']);
    const base = new URL(srv.url);
    const res = await tusRequest(base.origin, {
      method: 'POST',
      path: base.pathname,
      headers: { 'Tus-Resumable': '1.0.0', 'Upload-Length': '1' },
    });
    expect(res.status).toBe(507);
    expect(res.body.toString()).toContain('ERR_INSUFFICIENT_STORAGE');
  });

  it('uploads a file that arrives byte-identical in the destination as {uuid}-{filename}', async () => {
    const { srv, dest, cache, base } = await server(['--token', 's3cret', '--max-size', '100M']);
    const file = await randomFile(join(base, 'photo.jpg'), 5 * MiB + 123);
    const expected = await sha256File(file);

    // The bearer guard: no token, a one-line reason and a failure status.
    const refused = await runUpload(['-e', srv.url, file], { cwd: base, cacheDir: cache });
    expect(refused.code).toBe(1);
    expect(refused.stderr.trim().split('\n')).toHaveLength(1);
    expect(refused.stderr).toMatch(/photo\.jpg: the server refused POST .*: 401/);

    const run = await runUpload(
      ['-e', srv.url, '-H', 'Authorization: Bearer s3cret', '-m', 'note=hello', file],
      { cwd: base, cacheDir: cache },
    );
    expect(run.stderr).toBe('');
    expect(run.code).toBe(0);
    const [url] = uploadUrls(run.stdout);
    expect(url).toMatch(new RegExp(`^${srv.url}[0-9a-f-]{36}$`));
    expect(run.stdout).toContain(`photo.jpg: sha256 ${expected}`);

    const id = idOfUrl(url);
    const name = `${id}-photo.jpg`;
    await until(
      async () => ((await delivered(dest)).includes(name) ? true : undefined),
      15_000,
      'delivery to the destination',
    );
    expect(await sha256File(join(dest, name))).toBe(expected);
    const record = JSON.parse(await readFile(join(dest, `${name}.meta`), 'utf8')) as {
      metadata: Record<string, string>;
      server_metadata: Record<string, string>;
    };
    expect(record.metadata).toEqual({ filename: 'photo.jpg', note: 'hello' });
    // The principal of an unnamed token: never the token itself.
    const principal = `token-${createHash('sha256').update('s3cret').digest('hex').slice(0, 8)}`;
    expect(record.server_metadata).toEqual({ uploaded_by: principal });

    // The server logs the upload's life readably.
    await srv.output.waitFor(new RegExp(`delivered ${name}`), 10_000);
    expect(srv.output.text).toContain(`created ${id} photo.jpg, ${5 * MiB + 123} bytes`);
    expect(srv.output.text).toMatch(new RegExp(`completed ${id} in [\\d.]+ s`));

    // No file: random data of --size, with its sha256 printed.
    const random = await runUpload(['-e', srv.url, '-t', 's3cret', '-s', '3M', '-c', '1M'], {
      cwd: base,
      cacheDir: cache,
    });
    expect(random.code).toBe(0);
    const [randomUrl] = uploadUrls(random.stdout);
    const sha = /sha256 ([0-9a-f]{64})/.exec(random.stdout)![1];
    const randomName = `${idOfUrl(randomUrl)}-random-${3 * MiB}-bytes.bin`;
    await until(
      async () => ((await delivered(dest)).includes(randomName) ? true : undefined),
      15_000,
      'delivery of the random data',
    );
    expect(await sha256File(join(dest, randomName))).toBe(sha);

    // A name of other scripts (the file's own, on disk) and a hostile one given with -m: both
    // uploaded, delivered under their safe names, logged escaped (a newline forges no line).
    const world = await randomFile(join(base, '日本 résumé.txt'), 4096);
    const hostile = '../../x\u202Egpj.exe\n[Nest] forged';
    const deliveries: Array<[string, string[], string]> = [
      ['日本 résumé.txt', [world], '日本 résumé.txt'],
      [hostile, ['-m', `filename=${hostile}`, world], 'xgpj.exe[Nest] forged'],
    ];
    for (const [filename, args, deliveredAs] of deliveries) {
      const sent = await runUpload(['-e', srv.url, '-t', 's3cret', ...args], {
        cwd: base,
        cacheDir: cache,
      });
      expect(sent.stderr).toBe('');
      expect(sent.code).toBe(0);
      const uploadedId = idOfUrl(uploadUrls(sent.stdout)[0]);
      const deliveredName = `${uploadedId}-${deliveredAs}`;
      await until(
        async () => ((await delivered(dest)).includes(deliveredName) ? true : undefined),
        15_000,
        `delivery of ${JSON.stringify(filename)}`,
      );
      expect(await sha256File(join(dest, deliveredName))).toBe(await sha256File(world));
      const meta = JSON.parse(await readFile(join(dest, `${deliveredName}.meta`), 'utf8')) as {
        metadata: Record<string, string>;
      };
      expect(meta.metadata.filename).toBe(filename);
    }
    expect(srv.output.text).toContain(' 日本 résumé.txt, 4096 bytes');
    expect(srv.output.text).toContain(' ../../x\\u{202E}gpj.exe\\u{A}[Nest] forged, 4096 bytes');
    expect(srv.output.text).not.toMatch(/^\[Nest\] forged/m);
  }, 90_000);

  it('--token and --token-file: each token its own principal, no way around the guard', async () => {
    const secrets = join(await dir('tokens'), 'tokens');
    await writeFile(secrets, '# uploaders\nbob:b0b-t0ken\n\n', { mode: 0o600 });
    const { srv, uploads } = await server(['--token', 'alice:4lice', '--token-file', secrets]);
    expect(srv.output.text).not.toContain('b0b-t0ken');
    const base = new URL(srv.url);
    const req = (method: string, path: string, headers: Record<string, string>) =>
      tusRequest(base.origin, { method, path, headers: { 'Tus-Resumable': '1.0.0', ...headers } });

    // The attack: OPTIONS with an override creates nothing, and no override passes the guard.
    const attack = await req('OPTIONS', base.pathname, {
      'Upload-Length': '5',
      'X-HTTP-Method-Override': 'POST',
    });
    expect(attack.status).toBe(204);
    expect(attack.headers.location).toBeUndefined();
    expect((await readdir(uploads).catch(() => [])).filter((n) => n !== '.tussi-space')).toEqual(
      [],
    );

    // The scheme is case-insensitive.
    const created = await req('POST', base.pathname, {
      'Upload-Length': '5',
      Authorization: 'bearer 4lice',
    });
    expect(created.status).toBe(201);
    const path = new URL(String(created.headers.location)).pathname;
    expect((await req('HEAD', path, { Authorization: 'Bearer b0b-t0ken' })).status).toBe(404);
    expect((await req('HEAD', path, { Authorization: 'Bearer 4lice' })).status).toBe(200);
    expect((await req('HEAD', path, { Authorization: 'Bearer nope' })).status).toBe(401);
    const byBob = await req('POST', base.pathname, {
      'Upload-Length': '1',
      Authorization: 'Bearer b0b-t0ken',
    });
    expect(byBob.status).toBe(201);
  }, 60_000);

  it('limits uploads to 10 GiB unless --max-size says otherwise (0: no limit)', async () => {
    const maxSizeOf = async (extra: string[]) => {
      const { srv } = await server(extra);
      const base = new URL(srv.url);
      const res = await tusRequest(base.origin, { method: 'OPTIONS', path: base.pathname });
      return res.headers['tus-max-size'];
    };
    expect(await maxSizeOf([])).toBe(String(10 * 1024 ** 3));
    expect(await maxSizeOf(['--max-size', '0'])).toBeUndefined();
    expect(await maxSizeOf(['--max-size', '1M'])).toBe(String(1024 ** 2));
  }, 60_000);

  it('--max-creations-per-minute: a burst of creations gets 429 with Retry-After', async () => {
    const { srv } = await server(['--max-creations-per-minute', '2']);
    expect(srv.output.text).toContain('2 creations/min per client');
    const base = new URL(srv.url);
    const post = () =>
      tusRequest(base.origin, {
        method: 'POST',
        path: base.pathname,
        headers: { 'Tus-Resumable': '1.0.0', 'Upload-Length': '1' },
      });
    expect((await post()).status).toBe(201);
    expect((await post()).status).toBe(201);
    const refused = await post();
    expect(refused.status).toBe(429);
    expect(Number(refused.headers['retry-after'])).toBeGreaterThan(0);
  }, 60_000);

  it('--token-file that holds no token stops the start', async () => {
    const empty = join(await dir('empty-tokens'), 'tokens');
    await writeFile(empty, '# nobody\n');
    const run = await promisify(execFile)(process.execPath, [SERVER_BIN, '--token-file', empty], {
      env: cliEnv(),
      timeout: 20_000,
    }).catch((e: { code?: number; stderr?: string }) => e);
    expect((run as { code?: number }).code).toBe(1);
    expect(run.stderr).toMatch(/--token-file .* holds no token/);
  });

  it('exits non-zero with a one-line reason: missing file, unreachable server', async () => {
    const base = await dir('failures');
    const cache = join(base, 'cache');
    const missing = await runUpload(['-e', 'http://127.0.0.1:9/files/', 'nope.bin'], {
      cwd: base,
      cacheDir: cache,
    });
    expect(missing.code).toBe(1);
    expect(missing.stderr).toBe('tussi-upload: nope.bin: no such file\n');

    const file = await randomFile(join(base, 'a.bin'), 1000);
    const port = await closedPort();
    const unreachable = await runUpload(
      ['-e', `http://127.0.0.1:${port}/files/`, '--retry-delays', 'none', file],
      { cwd: base, cacheDir: cache },
    );
    expect(unreachable.code).toBe(1);
    expect(unreachable.stderr.trim().split('\n')).toHaveLength(1);
    expect(unreachable.stderr).toMatch(/a\.bin: POST .* failed: ECONNREFUSED/);

    const usage = await runUpload(['--chunk-size', 'lots'], { cwd: base, cacheDir: cache });
    expect(usage.code).not.toBe(0);
    expect(usage.stderr).toContain('is not a size');
  }, 60_000);

  it('an upload killed mid-way resumes from the server offset on the next run', async () => {
    const { srv, uploads, dest, cache, base } = await server();
    const file = await randomFile(join(base, 'big.bin'), 64 * MiB);
    const expected = await sha256File(file);
    const args = ['-e', srv.url, '--chunk-size', '1M', file];

    const first = spawnUpload(args, { cwd: base, cacheDir: cache });
    const killedAt = await until(
      async () => {
        if (first.child.exitCode !== null) {
          throw new Error(`the upload ended before it could be killed:\n${first.output.text}`);
        }
        return stagingOffset(uploads);
      },
      30_000,
      'a staged offset > 0',
      5,
    );
    first.child.kill('SIGKILL');
    const firstEnd = await first.done;
    expect(firstEnd.signal).toBe('SIGKILL');
    expect(killedAt).toBeGreaterThan(0);
    expect(killedAt).toBeLessThan(64 * MiB);
    const firstUrl = /big\.bin: upload URL (\S+)/.exec(firstEnd.stdout)![1];
    // The resume data survived the kill.
    expect(await readFile(join(cache, 'uploads.json'), 'utf8')).toContain(firstUrl);

    const second = await runUpload(args, { cwd: base, cacheDir: cache });
    expect(second.stderr).toBe('');
    expect(second.code).toBe(0);
    const resumed = /resuming from offset (\d+)/.exec(second.stdout);
    expect(resumed).not.toBeNull();
    expect(Number(resumed![1])).toBeGreaterThan(0);
    expect(uploadUrls(second.stdout)).toEqual([firstUrl]);
    expect(second.stdout).toContain(`big.bin: sha256 ${expected}`);

    const name = `${idOfUrl(firstUrl)}-big.bin`;
    await until(
      async () => ((await delivered(dest)).includes(name) ? true : undefined),
      20_000,
      'delivery of the resumed upload',
    );
    expect(await delivered(dest)).toEqual([name]);
    expect(await sha256File(join(dest, name))).toBe(expected);
    // One upload on the server, not two; and the finished upload left the resume data.
    expect(srv.output.text.match(/\[Uploads\] created /g)).toHaveLength(1);
    const stored = JSON.parse(await readFile(join(cache, 'uploads.json'), 'utf8')) as {
      uploads: object;
    };
    expect(stored.uploads).toEqual({});
  }, 120_000);

  it('never prompts without a terminal: starts with the defaults; SIGTERM shuts it down', async () => {
    const cwd = await dir('no-tty');
    // stdin is a pipe kept open and never written: a prompt would hang until the timeout.
    const srv = await startServer([], { cwd, readyMs: 30_000 });
    servers.push(srv);
    expect(srv.output.text).not.toContain('Directory for');
    expect(srv.output.text).toContain(`unfinished uploads: ${join(cwd, 'data', 'uploads')}`);
    expect(srv.output.text).toContain(`delivered to:       ${join(cwd, 'data', 'dest')}`);

    const file = await randomFile(join(cwd, 'small.txt'), 4096);
    const run = await runUpload(['-e', srv.url, file], { cwd, cacheDir: join(cwd, 'cache') });
    expect(run.code).toBe(0);
    const name = `${idOfUrl(uploadUrls(run.stdout)[0])}-small.txt`;
    await until(
      async () => ((await delivered(join(cwd, 'data', 'dest'))).includes(name) ? true : undefined),
      15_000,
      'delivery to ./data/dest',
    );

    // Bodies on the upload routes are TUS's alone: a PATCH labelled JSON (malformed, too) is
    // the protocol's 415 with Tus-Resumable, never a JSON parser's 400.
    const created = await tusRequest(srv.url, {
      method: 'POST',
      path: srv.url,
      headers: { 'Tus-Resumable': '1.0.0', 'Upload-Length': '5' },
    });
    expect(created.status).toBe(201);
    for (const type of ['application/json', 'application/x-www-form-urlencoded']) {
      const refused = await tusRequest(srv.url, {
        method: 'PATCH',
        path: String(created.headers.location),
        headers: { 'Tus-Resumable': '1.0.0', 'Upload-Offset': '0', 'Content-Type': type },
        body: Buffer.from('{"x'),
      });
      expect([type, refused.status, refused.headers['tus-resumable']]).toEqual([
        type,
        415,
        '1.0.0',
      ]);
    }

    const end = await srv.stop(15_000);
    expect(end).toEqual({ code: 0, signal: null, timedOut: false });
    expect(srv.output.text).toContain('SIGTERM, shutting down');
  }, 90_000);

  it('a PATCH in flight when SIGTERM arrives is finished before the server exits', async () => {
    const { srv, completed, dest } = await server();
    const length = 2 * MiB;
    const body = randomBytes(length);
    const created = await fetch(srv.url, {
      method: 'POST',
      headers: { 'Tus-Resumable': '1.0.0', 'Upload-Length': String(length) },
    });
    expect(created.status).toBe(201);
    const location = new URL(created.headers.get('location')!, srv.url);

    // Half the body, then the signal, then the other half.
    const patch = request(location, {
      method: 'PATCH',
      headers: {
        'Tus-Resumable': '1.0.0',
        'Upload-Offset': '0',
        'Content-Type': 'application/offset+octet-stream',
        'Content-Length': String(length),
      },
    });
    const response = new Promise<IncomingMessage>((resolve, reject) => {
      patch.once('response', resolve);
      patch.once('error', reject);
    });
    patch.write(body.subarray(0, length / 2));
    await new Promise((r) => setTimeout(r, 300));
    srv.child.kill('SIGTERM');
    await srv.output.waitFor(/SIGTERM, shutting down/, 5000);
    await new Promise((r) => setTimeout(r, 300));
    expect(srv.child.exitCode).toBeNull();
    patch.end(body.subarray(length / 2));
    const res = await response;
    res.resume();
    expect(res.statusCode).toBe(204);
    expect(res.headers['upload-offset']).toBe(String(length));

    const end = await waitExit(srv.child, 15_000);
    expect(end).toEqual({ code: 0, signal: null, timedOut: false });
    // Finished and durable: delivered already, or waiting in the completed queue.
    const id = idOfUrl(location.href);
    const where = [...(await readdir(completed)), ...(await readdir(dest).catch(() => []))];
    expect(where.some((n) => n === id || n.startsWith(`${id}-`))).toBe(true);
  }, 60_000);

  it('--workers 2: two processes on one port, each upload delivered exactly once', async () => {
    const { srv, dest, completed, cache, base } = await server(['--workers', '2']);
    const [, pidList] = /2 workers listening \(pids (\d+), (\d+)\)/.exec(srv.output.text) ?? [];
    expect(pidList).toBeDefined();
    const pids = /pids (\d+), (\d+)/.exec(srv.output.text)!.slice(1).map(Number);
    expect(new Set(pids).size).toBe(2);
    expect(pids).not.toContain(srv.child.pid);
    expect(pids.every(alive)).toBe(true);

    const files: string[] = [];
    const sums = new Map<string, string>();
    for (let i = 1; i <= 6; i++) {
      const file = await randomFile(join(base, `f${i}.bin`), MiB + i);
      files.push(file);
      sums.set(`f${i}.bin`, await sha256File(file));
    }
    const run = await runUpload(['-e', srv.url, '--parallel', '3', ...files], {
      cwd: base,
      cacheDir: cache,
    });
    expect(run.stderr).toBe('');
    expect(run.code).toBe(0);
    const urls = uploadUrls(run.stdout);
    expect(urls).toHaveLength(6);
    const expectedNames = urls.map((url, i) => `${idOfUrl(url)}-f${i + 1}.bin`).sort();

    await until(
      async () => ((await delivered(dest)).length >= 6 ? true : undefined),
      20_000,
      'six deliveries',
    );
    // Give a duplicate delivery (there must be none) time to show up.
    await new Promise((r) => setTimeout(r, 1500));
    expect(await delivered(dest)).toEqual(expectedNames);
    for (const name of expectedNames) {
      expect(await sha256File(join(dest, name))).toBe(sums.get(name.slice(37)));
    }
    expect((await readdir(completed)).filter((n) => !n.endsWith('.done'))).toEqual([]);
    expect(srv.output.text.match(/\[UploadConsumer\] delivered /g)).toHaveLength(6);
    // Both workers served requests.
    expect(new Set(pidsLogging(srv.output.text, ' created ')).size).toBe(2);

    const end = await srv.stop(20_000);
    expect(end).toEqual({ code: 0, signal: null, timedOut: false });
    await until(() => (pids.some(alive) ? undefined : true), 5000, 'workers gone');
  }, 120_000);

  it('--platform fastify (TUS_PLATFORM): the sample on Fastify, guarded, delivered once, shut down cleanly', async () => {
    const { srv, dest, cache, base } = await server([
      '--platform',
      'fastify',
      '--workers',
      '2',
      '--token',
      'alice:s3cret',
    ]);
    expect(srv.output.text).toContain('on fastify');
    const file = await randomFile(join(base, 'clip.mov'), 3 * MiB + 7);
    const refused = await runUpload(['-e', srv.url, file], { cwd: base, cacheDir: cache });
    expect(refused.stderr).toMatch(/clip\.mov: the server refused POST .*: 401/);
    const run = await runUpload(['-e', srv.url, '-t', 's3cret', '-c', '1M', file], {
      cwd: base,
      cacheDir: cache,
    });
    expect(run.stderr).toBe('');
    expect(run.code).toBe(0);
    const name = `${idOfUrl(uploadUrls(run.stdout)[0])}-clip.mov`;
    await until(
      async () => ((await delivered(dest)).includes(name) ? true : undefined),
      15_000,
      'delivery to the destination',
    );
    expect(await sha256File(join(dest, name))).toBe(await sha256File(file));
    const record = JSON.parse(await readFile(join(dest, `${name}.meta`), 'utf8')) as {
      server_metadata: Record<string, string>;
    };
    expect(record.server_metadata).toEqual({ uploaded_by: 'alice' });
    expect(await srv.stop(20_000)).toEqual({ code: 0, signal: null, timedOut: false });
    expect(srv.output.text).not.toMatch(/ERROR|Error:/);
  }, 90_000);

  it('tussi-upload --protocol ietf: the IETF draft to the same server, delivered byte-identical', async () => {
    const { srv, dest, cache, base } = await server();
    const file = await randomFile(join(base, 'draft.dat'), 2 * MiB + 9);
    const run = await runUpload(['-e', srv.url, '--protocol', 'ietf', '-c', '512K', file], {
      cwd: base,
      cacheDir: cache,
    });
    expect(run.stderr).toBe('');
    expect(run.code).toBe(0);
    const name = `${idOfUrl(uploadUrls(run.stdout)[0])}-draft.dat`;
    await until(
      async () => ((await delivered(dest)).includes(name) ? true : undefined),
      15_000,
      'delivery of the draft upload',
    );
    expect(await sha256File(join(dest, name))).toBe(await sha256File(file));
  }, 60_000);

  it('--no-ietf-draft: a draft request is TUS 1.0.0 without Tus-Resumable (412), TUS unchanged', async () => {
    const { srv } = await server(['--no-ietf-draft']);
    const base = new URL(srv.url);
    expect(srv.output.text).toContain('TUS 1.0.0 only (no IETF draft)');
    const draft = await tusRequest(base.origin, {
      method: 'POST',
      path: base.pathname,
      headers: { 'Upload-Draft-Interop-Version': '6', 'Upload-Complete': '?0' },
    });
    expect(draft.status).toBe(412);
    expect(draft.headers['tus-version']).toBe('1.0.0');
    const tus = await tusRequest(base.origin, {
      method: 'POST',
      path: base.pathname,
      headers: { 'Tus-Resumable': '1.0.0', 'Upload-Length': '3' },
    });
    expect(tus.status).toBe(201);
  });

  it('serves Prometheus metrics at --metrics-path behind the token, health at --health-path; --no-metrics serves none', async () => {
    const { srv } = await server(['--metrics-path', '/ops/metrics/', '--token', 'ops:s3cret']);
    const { origin } = new URL(srv.url);
    expect(srv.output.text).toContain('metrics at /ops/metrics');
    const created = await tusRequest(origin, {
      method: 'POST',
      path: '/files/',
      headers: {
        ...{ 'Tus-Resumable': '1.0.0' },
        'Upload-Length': '3',
        Authorization: 'Bearer s3cret',
      },
    });
    expect(created.status).toBe(201);
    expect((await tusRequest(origin, { method: 'GET', path: '/ops/metrics' })).status).toBe(401);
    const scraped = await tusRequest(origin, {
      method: 'GET',
      path: '/ops/metrics',
      headers: { Authorization: 'Bearer s3cret' },
    });
    expect(scraped.status).toBe(200);
    expect(scraped.headers['content-type']).toMatch(/^text\/plain; version=0\.0\.4/);
    expect(scraped.body.toString()).toMatch(/^tus_uploads_created_total 1$/m);
    expect(scraped.body.toString()).toMatch(/^process_resident_memory_bytes \d+/m);

    // Health needs no token (probes carry none); --health-path moves it.
    expect((await tusRequest(origin, { method: 'GET', path: '/health' })).status).toBe(200);

    const off = await server(['--no-metrics', '--health-path', 'ops/health']);
    const offOrigin = new URL(off.srv.url).origin;
    expect(off.srv.output.text).toContain('no metrics');
    expect((await tusRequest(offOrigin, { method: 'GET', path: '/metrics' })).status).toBe(404);
    const healthy = await tusRequest(offOrigin, { method: 'GET', path: '/ops/health' });
    expect(healthy.status).toBe(200);
    expect(JSON.parse(healthy.body.toString())).toMatchObject({ status: 'ok' });
    expect((await tusRequest(offOrigin, { method: 'GET', path: '/ops/health/live' })).status).toBe(
      200,
    );
  });

  it('--log-format json: the log lines are JSON objects with the upload and request ids', async () => {
    const { srv } = await server(['--log-format', 'json']);
    const { origin } = new URL(srv.url);
    const created = await tusRequest(origin, {
      method: 'POST',
      path: '/files/',
      headers: { 'Tus-Resumable': '1.0.0', 'Upload-Length': '3', 'X-Request-Id': 'lb-42' },
    });
    expect(created.status).toBe(201);
    const id = idOfUrl(String(created.headers.location));
    const done = await tusRequest(origin, {
      method: 'PATCH',
      path: `/files/${id}`,
      headers: {
        'Tus-Resumable': '1.0.0',
        'Upload-Offset': '0',
        'Content-Type': 'application/offset+octet-stream',
      },
      body: Buffer.from('abc'),
    });
    expect(done.status).toBe(204);
    await srv.output.waitFor(new RegExp(`"message":"completed ${id}`), 10_000);
    const json = srv.output.text
      .split('\n')
      .filter((l) => l.startsWith('{'))
      .map((l) => JSON.parse(l) as Record<string, unknown>);
    expect(json.find((l) => String(l.message).startsWith(`created ${id}`))).toMatchObject({
      level: 'log',
      requestId: 'lb-42',
      uploadId: id,
      context: 'Uploads',
    });
    const completed = json.find((l) => String(l.message).startsWith(`completed ${id}`));
    expect(completed).toMatchObject({ uploadId: id, requestId: done.headers['x-request-id'] });
    expect(typeof completed?.time).toBe('string');
  });

  it('--janitor-cron runs the janitor on the expression, each run logged', async () => {
    const { srv } = await server(['--janitor-cron', '*/1 * * * * *']);
    await srv.output.waitFor(/janitor: nothing to do/, 5000);
  });

  it('prints the upload page first and serves it at /; --no-ui serves none', async () => {
    const { srv } = await server();
    const [, page] = /Upload page: (http:\/\/\S+)/.exec(srv.output.text) ?? [];
    expect(page).toBe(new URL('/', srv.url).href);
    const html = await tusRequest(page, { method: 'GET', path: '/' });
    expect(html.status).toBe(200);
    expect(html.headers['content-security-policy']).toMatch(/default-src 'self'/);
    expect(html.body.toString()).toContain('<script type="module" src="/ui/app.js">');
    const script = await tusRequest(page, { method: 'GET', path: '/ui/app.js' });
    expect(script.status).toBe(200);
    expect(script.body.length).toBeGreaterThan(50_000);

    const off = await server(['--no-ui']);
    expect(off.srv.output.text).not.toContain('Upload page:');
    const origin = new URL(off.srv.url).origin;
    expect((await tusRequest(origin, { method: 'GET', path: '/' })).status).toBe(404);
  });

  it('--platform refuses a platform it does not know', async () => {
    const run = await promisify(execFile)(process.execPath, [SERVER_BIN, '--platform', 'koa'], {
      env: cliEnv(),
      timeout: 20_000,
    }).catch((e: { code?: number; stderr?: string }) => e);
    expect((run as { code?: number }).code).toBe(1);
    expect(run.stderr).toMatch(/--platform.*koa/);
  });

  it('prompts for the missing directories on a terminal (pseudo-terminal via script)', async () => {
    if (!hasScript()) {
      throw new Error('util-linux `script` is needed for this test (Debian: bsdutils)');
    }
    const cwd = await dir('tty');
    const uploadDir = join(cwd, 'given-by-env');
    const pty = spawnOnPty([process.execPath, SERVER_BIN, '--port', '0'], {
      cwd,
      env: { TUS_UPLOAD_DIR: uploadDir },
    });
    ptys.push(pty);
    // The upload directory comes from the environment: only the other two are asked for.
    await pty.output.waitFor(
      /Directory for finished uploads waiting for the consumer \[\.\/data\/completed\]: /,
      30_000,
      pty.exited,
    );
    pty.type('answered/completed\r');
    await pty.output.waitFor(
      /Destination directory of delivered files \[\.\/data\/dest\]: /,
      10_000,
      pty.exited,
    );
    pty.type('\r');
    const [, url] = await pty.output.waitFor(/TUS upload URL: (http:\/\/\S+)/, 30_000, pty.exited);
    const text = pty.output.text;
    expect(text).not.toContain('Directory for unfinished uploads');
    expect(text).toContain(`unfinished uploads: ${uploadDir}`);
    expect(text).toContain(`finished uploads:   ${join(cwd, 'answered', 'completed')}`);
    expect(text).toContain(`delivered to:       ${join(cwd, 'data', 'dest')}`);

    const file = await writeFile(join(cwd, 'hello.txt'), 'hello from a terminal\n').then(() =>
      join(cwd, 'hello.txt'),
    );
    const run = await runUpload(['-e', url, file], { cwd, cacheDir: join(cwd, 'cache') });
    expect(run.code).toBe(0);
    const name = `${idOfUrl(uploadUrls(run.stdout)[0])}-hello.txt`;
    await until(
      async () => ((await delivered(join(cwd, 'data', 'dest'))).includes(name) ? true : undefined),
      15_000,
      'delivery',
    );
    expect(existsSync(join(cwd, 'answered', 'completed'))).toBe(true);

    // Ctrl-C on the terminal: a graceful stop, exit status 0.
    pty.type('\x03');
    const end = await waitExit(pty.child, 15_000);
    expect(end).toEqual({ code: 0, signal: null, timedOut: false });
    expect(pty.output.text).toContain('SIGINT, shutting down');
  }, 90_000);
});

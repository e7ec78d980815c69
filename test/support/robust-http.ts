import net from 'node:net';
import { mkdtemp, open, rm } from 'node:fs/promises';
import { execFile } from 'node:child_process';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { request, type RawRequestOptions, type RawResponse } from './http.js';

/** Helpers of the robustness suites: pacing, gates, raw sockets, root-only mounts. */

export const KiB = 1024;
export const MiB = 1024 * KiB;

export const sleep = (ms: number) => new Promise<void>((resolve) => setTimeout(resolve, ms));

/** An integer in [min, max]. */
export const randomInt = (min: number, max: number) =>
  min + Math.floor(Math.random() * (max - min + 1));

/**
 * A gate the upload clients pass before each request: closed while the server is down or being
 * inspected, open (with the current server's URL) while they may talk to it.
 */
export class Gate {
  private url: string | undefined;
  private waiters: Array<(url: string) => void> = [];

  open(url: string): void {
    this.url = url;
    const waiters = this.waiters;
    this.waiters = [];
    for (const w of waiters) w(url);
  }

  close(): void {
    this.url = undefined;
  }

  wait(): Promise<string> {
    if (this.url !== undefined) return Promise.resolve(this.url);
    return new Promise((resolve) => this.waiters.push(resolve));
  }
}

/** A plain async mutex. */
export class Mutex {
  private tail: Promise<void> = Promise.resolve();

  async run<T>(work: () => Promise<T>): Promise<T> {
    const previous = this.tail;
    let release!: () => void;
    this.tail = new Promise<void>((resolve) => (release = resolve));
    await previous;
    try {
      return await work();
    } finally {
      release();
    }
  }
}

/** What came back on a raw connection. */
export interface RawResult {
  /** 0 when the connection closed (or timed out) before a complete response head. */
  status: number;
  headers: Record<string, string>;
  body: Buffer;
  /** The connection was closed by the server before a complete response (a cut). */
  closedWithoutResponse: boolean;
  /** Our own deadline passed first (the server neither answered nor closed). */
  timedOut: boolean;
  /** ms from the connection to the response (or the close). */
  elapsedMs: number;
}

/**
 * One connection driven byte by byte: the test writes exactly what it wants (request lines,
 * headers, body, in pieces, with pauses), and `result` resolves with the first response, or
 * when the server closes the connection, or after `timeoutMs`.
 */
export class RawConnection {
  readonly socket: net.Socket;
  readonly result: Promise<RawResult>;
  /** Resolves when the socket is closed (by either side). */
  readonly closed: Promise<void>;
  private readonly started = Date.now();

  constructor(port: number, options: { timeoutMs?: number; method?: string } = {}) {
    this.socket = net.connect(port, '127.0.0.1');
    this.socket.on('error', () => {}); // a reset is an outcome, not a failure of the test
    this.closed = new Promise((resolve) => this.socket.once('close', () => resolve()));
    const chunks: Buffer[] = [];
    const noBody = (options.method ?? '').toUpperCase() === 'HEAD';
    this.result = new Promise<RawResult>((resolve) => {
      let done = false;
      const finish = (r: Omit<RawResult, 'elapsedMs'>) => {
        if (done) return;
        done = true;
        clearTimeout(timer);
        resolve({ ...r, elapsedMs: Date.now() - this.started });
      };
      const timer = setTimeout(() => {
        finish({ ...parse(Buffer.concat(chunks), noBody, true), timedOut: true });
        this.socket.destroy();
      }, options.timeoutMs ?? 10_000);
      this.socket.on('data', (c: Buffer) => {
        chunks.push(c);
        const parsed = parse(Buffer.concat(chunks), noBody, false);
        if (parsed.complete) finish({ ...parsed, timedOut: false });
      });
      this.socket.on('close', () => {
        finish({ ...parse(Buffer.concat(chunks), noBody, true), timedOut: false });
      });
    });
  }

  /** Writes and waits until the bytes are handed to the kernel (false if the socket is gone). */
  write(data: string | Buffer): Promise<boolean> {
    return new Promise((resolve) => {
      if (this.socket.destroyed || !this.socket.writable) return resolve(false);
      this.socket.write(data, (error) => resolve(!error));
    });
  }

  get destroyed(): boolean {
    return this.socket.destroyed;
  }

  end(): void {
    this.socket.end();
  }

  destroy(): void {
    this.socket.destroy();
  }
}

function parse(
  data: Buffer,
  noBody: boolean,
  atClose: boolean,
): Omit<RawResult, 'timedOut' | 'elapsedMs'> & { complete: boolean } {
  const empty = { status: 0, headers: {}, body: Buffer.alloc(0) };
  let at = 0;
  // Skip interim 1xx responses.
  for (;;) {
    const end = data.indexOf('\r\n\r\n', at);
    if (end < 0) return { ...empty, closedWithoutResponse: atClose, complete: false };
    const head = data.subarray(at, end).toString('latin1');
    const [statusLine = '', ...lines] = head.split('\r\n');
    const status = Number(/^HTTP\/1\.[01] (\d{3})/.exec(statusLine)?.[1] ?? 0);
    const headers: Record<string, string> = {};
    for (const line of lines) {
      const colon = line.indexOf(':');
      if (colon > 0) {
        const name = line.slice(0, colon).trim().toLowerCase();
        const value = line.slice(colon + 1).trim();
        headers[name] = name in headers ? `${headers[name]}, ${value}` : value;
      }
    }
    const bodyStart = end + 4;
    if (status >= 100 && status < 200) {
      at = bodyStart;
      continue;
    }
    const rest = data.subarray(bodyStart);
    if (noBody || status === 204 || status === 304) {
      return {
        status,
        headers,
        body: Buffer.alloc(0),
        closedWithoutResponse: false,
        complete: true,
      };
    }
    const declared = headers['content-length'];
    if (declared !== undefined && /^\d+$/.test(declared)) {
      const length = Number(declared);
      if (rest.length >= length) {
        return {
          status,
          headers,
          body: rest.subarray(0, length),
          closedWithoutResponse: false,
          complete: true,
        };
      }
      return { status, headers, body: rest, closedWithoutResponse: atClose, complete: false };
    }
    // No length: the body ends with the connection.
    return { status, headers, body: rest, closedWithoutResponse: false, complete: atClose };
  }
}

const run = promisify(execFile);
export const skipRootRequested = process.env.TUS_SKIP_ROOT_TESTS === '1';

/** A tmpfs mounted at a new temp dir (root only), or an Error saying why it cannot be. */
export async function mountTmpfs(sizeOption = '8m'): Promise<string> {
  if (typeof process.getuid !== 'function' || process.getuid() !== 0) {
    throw new Error(
      `not running as root (uid ${process.getuid?.() ?? 'unknown'}): cannot mount a tmpfs`,
    );
  }
  const dir = await mkdtemp(join(tmpdir(), 'tussi-robust-mnt-'));
  try {
    await run('mount', ['-t', 'tmpfs', '-o', `size=${sizeOption}`, 'tmpfs', dir]);
  } catch (e) {
    await rm(dir, { recursive: true, force: true });
    throw new Error(`mount -t tmpfs failed: ${(e as Error).message.trim()}`, { cause: e });
  }
  return dir;
}

/** Remounts a mount point read-only or read-write. */
export async function remount(dir: string, mode: 'ro' | 'rw'): Promise<void> {
  await run('mount', ['-o', `remount,${mode}`, dir]);
}

/** Unmounts (lazily if busy) and removes the mount point; never throws. */
export async function unmountQuietly(dir: string): Promise<void> {
  await run('umount', [dir]).catch(() => run('umount', ['-l', dir]).catch(() => {}));
  await rm(dir, { recursive: true, force: true }).catch(() => {});
}

/**
 * Whether tmpfs mounts work here, probed once (mounted and unmounted at once): null when they
 * do, else the reason.
 */
export async function probeMount(): Promise<string | null> {
  try {
    await unmountQuietly(await mountTmpfs('1m'));
    return null;
  } catch (e) {
    return (e as Error).message;
  }
}

/** Minimal TUS calls against a base URL, through test/support/http.ts's node:http client. */
export const TUS_HEADERS = { 'Tus-Resumable': '1.0.0' } as const;
export const OCTET_STREAM = 'application/offset+octet-stream';

/** A response, or status 0 when the request failed on the socket (reset, refused). */
export async function tusRequest(
  baseUrl: string,
  options: RawRequestOptions,
): Promise<RawResponse> {
  try {
    return await request(baseUrl, options);
  } catch {
    return {
      status: 0,
      headers: {},
      body: Buffer.alloc(0),
      bytesSent: 0,
      closedWithoutResponse: true,
    };
  }
}

/** POST; returns the new id (throws unless 201). */
export async function createOn(
  baseUrl: string,
  length: number | 'deferred',
  headers: Record<string, string> = {},
): Promise<string> {
  const res = await tusRequest(baseUrl, {
    method: 'POST',
    path: '/files',
    headers: {
      ...TUS_HEADERS,
      ...(length === 'deferred'
        ? { 'Upload-Defer-Length': '1' }
        : { 'Upload-Length': String(length) }),
      ...headers,
    },
  });
  if (res.status !== 201) {
    throw new Error(`POST answered ${res.status}: ${res.body.toString()}`);
  }
  return new URL(String(res.headers.location)).pathname.split('/').pop()!;
}

/** HEAD; `offset` is NaN without Upload-Offset. */
export async function headOn(
  baseUrl: string,
  id: string,
): Promise<{ status: number; offset: number; res: RawResponse }> {
  const res = await tusRequest(baseUrl, {
    method: 'HEAD',
    path: `/files/${id}`,
    headers: TUS_HEADERS,
  });
  return { status: res.status, offset: Number(res.headers['upload-offset'] ?? NaN), res };
}

/** PATCH `body` at `offset` (more options as test/support/http.ts takes them). */
export function patchOn(
  baseUrl: string,
  id: string,
  offset: number,
  body: Buffer | AsyncIterable<Buffer>,
  extra: Partial<RawRequestOptions> & { headers?: Record<string, string> } = {},
): Promise<RawResponse> {
  return tusRequest(baseUrl, {
    method: 'PATCH',
    path: `/files/${id}`,
    body,
    ...extra,
    headers: {
      ...TUS_HEADERS,
      'Content-Type': OCTET_STREAM,
      'Upload-Offset': String(offset),
      ...extra.headers,
    },
  });
}

/** OPTIONS: the server still answers (204 with Tus-Version). */
export async function answersOptions(baseUrl: string): Promise<boolean> {
  const res = await tusRequest(baseUrl, { method: 'OPTIONS', path: '/files', timeoutMs: 5000 });
  return res.status === 204 && res.headers['tus-version'] === '1.0.0';
}

/** The first `length` bytes of a file (fewer when it is shorter; empty when it is missing). */
export async function filePrefix(path: string, length: number): Promise<Buffer> {
  let handle;
  try {
    handle = await open(path, 'r');
  } catch {
    return Buffer.alloc(0);
  }
  try {
    const buffer = Buffer.alloc(length);
    let got = 0;
    while (got < length) {
      const { bytesRead } = await handle.read(buffer, got, length - got, got);
      if (bytesRead === 0) break;
      got += bytesRead;
    }
    return buffer.subarray(0, got);
  } finally {
    await handle.close();
  }
}

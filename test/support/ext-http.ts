import { createHash } from 'node:crypto';
import { createReadStream } from 'node:fs';
import http, { type IncomingHttpHeaders, type OutgoingHttpHeaders } from 'node:http';

export interface ExtResponse {
  status: number;
  headers: IncomingHttpHeaders;
  body: Buffer;
}

export interface ExtRequest {
  method: string;
  /** A path (sent as is, dot segments and `%2e` kept) or an absolute URL. */
  path: string;
  headers?: OutgoingHttpHeaders;
  /**
   * A Buffer (sent with `Content-Length` unless `trailers` are given) or chunks sent chunked,
   * with backpressure; iteration stops once the server has answered.
   */
  body?: Buffer | AsyncIterable<Buffer>;
  /** Trailers sent after a chunked body (`Trailer:` announces them). */
  trailers?: Record<string, string>;
  /** Reject after this long. @default 30000 */
  timeoutMs?: number;
}

/** One request on its own connection (no agent) to `baseUrl`; resolves with the whole response. */
export function send(baseUrl: string, options: ExtRequest): Promise<ExtResponse> {
  const absolute = !options.path.startsWith('/');
  const url = new URL(absolute ? options.path : baseUrl);
  const target = absolute ? url.pathname + url.search : options.path;
  const headers: OutgoingHttpHeaders = { ...options.headers };
  const chunked = options.trailers !== undefined || !Buffer.isBuffer(options.body);
  if (options.body !== undefined && chunked) {
    headers['Transfer-Encoding'] = 'chunked';
    if (options.trailers) headers.Trailer = Object.keys(options.trailers).join(', ');
  } else if (Buffer.isBuffer(options.body) && headers['Content-Length'] === undefined) {
    headers['Content-Length'] = options.body.length;
  }
  const timeoutMs = options.timeoutMs ?? 30_000;

  return new Promise<ExtResponse>((resolve, reject) => {
    let responded = false;
    let settled = false;
    const settle = (result: ExtResponse | Error) => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      if (result instanceof Error) reject(result);
      else resolve(result);
    };
    const req = http.request({
      host: url.hostname,
      port: url.port,
      method: options.method,
      path: target,
      headers,
      agent: false,
    });
    const timer = setTimeout(() => {
      req.destroy();
      settle(new Error(`${options.method} ${target}: no response within ${timeoutMs} ms`));
    }, timeoutMs);
    req.on('response', (res) => {
      responded = true;
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => chunks.push(c));
      res.on('end', () =>
        settle({ status: res.statusCode ?? 0, headers: res.headers, body: Buffer.concat(chunks) }),
      );
      res.on('error', (e) => settle(e));
    });
    // The server may answer before reading the whole body and close: the answer is what counts.
    req.on('error', (e) => {
      if (!responded) settle(e);
    });

    const write = (chunk: Buffer) =>
      new Promise<void>((done) => {
        if (req.write(chunk)) done();
        else {
          const go = () => {
            req.off('drain', go);
            req.off('close', go);
            done();
          };
          req.on('drain', go);
          req.on('close', go);
        }
      });

    const pump = async () => {
      const body = options.body;
      if (body !== undefined) {
        const source: AsyncIterable<Buffer> = Buffer.isBuffer(body)
          ? slices(body, 256 * 1024)
          : body;
        for await (const chunk of source) {
          if (responded || req.destroyed) return;
          await write(chunk);
        }
      }
      if (responded || req.destroyed) return;
      if (options.trailers) req.addTrailers(options.trailers);
      req.end();
    };
    pump().catch((e: unknown) => {
      req.destroy();
      settle(e instanceof Error ? e : new Error(String(e)));
    });
  });
}

/** A buffer as slices of `size` bytes. */
export async function* slices(data: Buffer, size: number): AsyncGenerator<Buffer> {
  for (let at = 0; at < data.length; at += size) yield data.subarray(at, at + size);
}

export const sha256 = (data: Buffer) => createHash('sha256').update(data).digest('hex');

/** sha256 of a file, streamed. */
export async function sha256File(path: string): Promise<string> {
  const hash = createHash('sha256');
  for await (const chunk of createReadStream(path)) hash.update(chunk as Buffer);
  return hash.digest('hex');
}

/** Calls `probe` until `accept` holds for its result, at most `timeoutMs` (then throws). */
export async function pollUntil<T>(
  probe: () => Promise<T>,
  accept: (value: T) => boolean,
  { timeoutMs = 30_000, intervalMs = 25, what = 'condition' } = {},
): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const value = await probe();
    if (accept(value)) return value;
    if (Date.now() > deadline) {
      throw new Error(`${what}: not within ${timeoutMs} ms (last: ${JSON.stringify(value)})`);
    }
    await new Promise((r) => setTimeout(r, intervalMs));
  }
}

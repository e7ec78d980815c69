import { createHash } from 'node:crypto';
import { createReadStream } from 'node:fs';
import http, { type IncomingHttpHeaders, type OutgoingHttpHeaders } from 'node:http';
import net from 'node:net';
import { types } from 'node:util';

/** What came back; `status` 0 means the connection ended without a response. */
export interface RawResponse {
  status: number;
  headers: IncomingHttpHeaders;
  body: Buffer;
  /** Body bytes handed to the socket (and flushed) before the request ended or was cut. */
  bytesSent: number;
  /** The socket was closed (by us or the server) before a complete response arrived. */
  closedWithoutResponse: boolean;
}

export interface RawRequestOptions {
  method: string;
  /** A path sent as is (`/files/abc`, dot segments kept) or an absolute URL (a `Location`). */
  path: string;
  headers?: OutgoingHttpHeaders;
  /**
   * A Buffer (sent with `Content-Length` unless a length, `Transfer-Encoding` or `trailers` is
   * given) or an async iterable of chunks (sent chunked unless `Content-Length` is given), with
   * backpressure; iteration stops once the server has answered.
   */
  body?: Buffer | AsyncIterable<Buffer>;
  /** Trailers sent after the body, which is then sent chunked (`Trailer:` announces them). */
  trailers?: Record<string, string>;
  /** Send this many body bytes, wait until they are flushed, then destroy the socket. */
  abortAfterBytes?: number;
  /** Send this many body bytes, then send nothing more and wait for the server to act. */
  stallAfterBytes?: number;
  /** Give up (destroy the socket, reject) after this long. @default 20000 */
  timeoutMs?: number;
}

/**
 * One HTTP/1.1 request on its own connection (no agent, `Connection: close`), through node:http
 * so the test controls how the body is sent: chunked, cut in the middle, or stalled.
 */
export function request(baseUrl: string, options: RawRequestOptions): Promise<RawResponse> {
  // A path is sent verbatim: WHATWG URL parsing would resolve `%2e%2e` segments away.
  const absolute = !options.path.startsWith('/');
  const url = new URL(absolute ? options.path : baseUrl);
  const target = absolute ? url.pathname + url.search : options.path;
  const headers: OutgoingHttpHeaders = { ...options.headers };
  const names = Object.keys(headers).map((n) => n.toLowerCase());
  if (options.trailers) {
    headers['Transfer-Encoding'] = 'chunked';
    headers.Trailer = Object.keys(options.trailers).join(', ');
  } else if (
    Buffer.isBuffer(options.body) &&
    !names.includes('content-length') &&
    !names.includes('transfer-encoding')
  ) {
    headers['Content-Length'] = options.body.length;
  }
  const cutAt = options.abortAfterBytes ?? options.stallAfterBytes ?? Number.POSITIVE_INFINITY;

  return new Promise<RawResponse>((resolve, reject) => {
    let bytesSent = 0;
    let responded = false;
    let settled = false;
    const finish = (result: Omit<RawResponse, 'bytesSent'> | Error) => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      // Not `instanceof Error`: node:http's errors come from another realm than Jest's VM context.
      if (types.isNativeError(result)) reject(result);
      else resolve({ ...result, bytesSent });
    };
    const noResponse = () =>
      finish({ status: 0, headers: {}, body: Buffer.alloc(0), closedWithoutResponse: true });

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
      finish(
        new Error(
          `${options.method} ${target}: no response within ${options.timeoutMs ?? 20000} ms`,
        ),
      );
    }, options.timeoutMs ?? 20_000);

    req.on('response', (res) => {
      responded = true;
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => chunks.push(c));
      const done = (complete: boolean) =>
        finish({
          status: res.statusCode ?? 0,
          headers: res.headers,
          body: Buffer.concat(chunks),
          closedWithoutResponse: !complete,
        });
      res.on('end', () => done(true));
      res.on('aborted', () => done(false));
      res.on('error', () => done(false));
    });
    req.on('error', (error) => {
      // A server that answers before reading the whole body and closes makes the rest of our
      // write fail; the response we got is what counts.
      if (responded) return;
      if (options.abortAfterBytes !== undefined || options.stallAfterBytes !== undefined)
        noResponse();
      else finish(error);
    });
    req.on('close', () => {
      if (!responded) noResponse();
    });

    const canWrite = () => !responded && !req.destroyed;
    const writeChunk = (chunk: Buffer) =>
      new Promise<void>((done) => {
        let pending = 2; // flushed and (if needed) drained
        const step = () => {
          if (--pending === 0) {
            req.off('close', onClose);
            done();
          }
        };
        const onClose = () => {
          req.off('close', onClose);
          done();
        };
        req.on('close', onClose);
        const ok = req.write(chunk, (error) => {
          if (!error) bytesSent += chunk.length;
          step();
        });
        if (ok) step();
        else req.once('drain', step);
      });

    const send = async () => {
      const body = options.body;
      if (body !== undefined) {
        const source: AsyncIterable<Buffer> = Buffer.isBuffer(body)
          ? chunksOf(body, 256 * 1024)
          : body;
        let queued = 0;
        for await (const chunk of source) {
          if (!canWrite()) break;
          const piece = chunk.subarray(0, Math.max(0, cutAt - queued));
          queued += piece.length;
          if (piece.length > 0) await writeChunk(piece);
          if (queued >= cutAt) break;
        }
      }
      if (options.abortAfterBytes !== undefined) {
        // Written bytes are in the kernel: closing sends them, then FIN, mid-body.
        req.destroy();
        return;
      }
      if (options.stallAfterBytes !== undefined) return; // wait for the server to cut us
      if (req.destroyed) return;
      if (options.trailers) req.addTrailers(options.trailers);
      req.end();
    };
    send().catch((e: unknown) => {
      req.destroy();
      finish(types.isNativeError(e) ? e : new Error(String(e)));
    });
  });
}

/** A buffer as an iterable of slices. */
export async function* chunksOf(data: Buffer, size: number): AsyncGenerator<Buffer> {
  for (let at = 0; at < data.length; at += size) yield data.subarray(at, at + size);
}

export interface RawSocketResponse {
  status: number;
  headers: Record<string, string>;
  text: string;
}

/**
 * Sends `head` (request line and headers, CRLF-separated, without the final blank line) verbatim
 * through a net.Socket, for requests node:http refuses to produce (a Host with a space, none at
 * all). The request asks for `Connection: close`; the response is read to the end.
 */
export function rawSocketRequest(
  port: number,
  head: string,
  timeoutMs = 10_000,
): Promise<RawSocketResponse> {
  return new Promise((resolve, reject) => {
    const socket = net.connect(port, '127.0.0.1');
    const chunks: Buffer[] = [];
    const timer = setTimeout(() => {
      socket.destroy();
      reject(new Error(`raw request: no response within ${timeoutMs} ms`));
    }, timeoutMs);
    socket.on('connect', () => socket.write(`${head}\r\nConnection: close\r\n\r\n`));
    socket.on('data', (c: Buffer) => chunks.push(c));
    socket.on('error', () => {}); // a reset after the response still leaves the response
    socket.on('close', () => {
      clearTimeout(timer);
      const text = Buffer.concat(chunks).toString('latin1');
      const [top = '', ...rest] = text.split('\r\n\r\n');
      const [statusLine = '', ...lines] = top.split('\r\n');
      const status = Number(/^HTTP\/1\.[01] (\d{3})/.exec(statusLine)?.[1] ?? 0);
      const headers: Record<string, string> = {};
      for (const line of lines) {
        const colon = line.indexOf(':');
        if (colon > 0)
          headers[line.slice(0, colon).trim().toLowerCase()] = line.slice(colon + 1).trim();
      }
      resolve({ status, headers, text: rest.join('\r\n\r\n') });
    });
  });
}

/**
 * A request with `Expect: 100-continue` over a raw socket, sending `body` only once the server
 * says `100 Continue`. Gives what came back before the body was sent (`interim`: the 100, or
 * the final response if the server answered first) and the status of the final response.
 */
export function expectContinueRequest(
  port: number,
  head: string,
  body: Buffer,
  timeoutMs = 10_000,
): Promise<{ continued: boolean; status: number; bodySent: boolean }> {
  return new Promise((resolve, reject) => {
    const socket = net.connect(port, '127.0.0.1');
    let text = '';
    let bodySent = false;
    const timer = setTimeout(() => {
      socket.destroy();
      reject(new Error(`expect-continue request: no final response within ${timeoutMs} ms`));
    }, timeoutMs);
    socket.on('connect', () =>
      socket.write(
        `${head}\r\nExpect: 100-continue\r\nContent-Length: ${body.length}\r\nConnection: close\r\n\r\n`,
      ),
    );
    socket.on('data', (c: Buffer) => {
      text += c.toString('latin1');
      if (!bodySent && /^HTTP\/1\.1 100 [^\r]*\r\n\r\n/.test(text)) {
        bodySent = true;
        socket.write(body);
      }
      const final = /HTTP\/1\.1 ([2-5]\d\d)/.exec(
        text.replace(/^HTTP\/1\.1 100 [^\r]*\r\n\r\n/, ''),
      );
      if (final) {
        clearTimeout(timer);
        socket.destroy();
        resolve({ continued: text.startsWith('HTTP/1.1 100'), status: Number(final[1]), bodySent });
      }
    });
    socket.on('error', () => {});
  });
}

export function sha256(data: Buffer): string {
  return createHash('sha256').update(data).digest('hex');
}

/** sha256 of a file, streamed. */
export async function sha256File(path: string): Promise<string> {
  const hash = createHash('sha256');
  for await (const chunk of createReadStream(path, { highWaterMark: 1 << 20 }))
    hash.update(chunk as Buffer);
  return hash.digest('hex');
}

/**
 * Calls `probe` until `accept` holds for its result or `timeoutMs` passes (then throws with the
 * last result). For state the server reaches asynchronously, e.g. an offset committed after a
 * client went away.
 */
export async function pollUntil<T>(
  probe: () => Promise<T>,
  accept: (value: T) => boolean,
  { timeoutMs = 5000, intervalMs = 20, what = 'condition' } = {},
): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const value = await probe();
    if (accept(value)) return value;
    if (Date.now() > deadline) {
      throw new Error(`${what} not reached within ${timeoutMs} ms; last: ${JSON.stringify(value)}`);
    }
    await new Promise((r) => setTimeout(r, intervalMs));
  }
}

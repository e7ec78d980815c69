/**
 * The one client the bench uses for every server: node:http with a keep-alive agent, creation
 * (POST) then PATCHes, each body streamed from one pre-filled buffer (no disk read, no copy),
 * with backpressure. It speaks TUS 1.0.0, or the IETF draft (Resumable Uploads for HTTP, interop
 * version 6, as tus-js-client's `ietf-draft-05` sends it) in the same requests. Every answer is
 * checked: a wrong status, `Upload-Offset` or (draft) `Upload-Complete`, or an answer in the
 * other protocol, fails the trial.
 */
import { randomFillSync } from 'node:crypto';
import { Agent, request, type IncomingHttpHeaders } from 'node:http';

/** Bytes written per `write()` of a body. */
const SLICE = 1 << 20;
/** One request that neither sends nor receives for this long fails the trial. */
const SOCKET_TIMEOUT_MS = 120_000;

let source: Buffer | undefined;

/** The bytes every body is cut from: random, so no layer can compress or dedupe them. */
function sourceBuffer(): Buffer {
  source ??= randomFillSync(Buffer.allocUnsafe(SLICE));
  return source;
}

/** `tus`: TUS 1.0.0; `ietf`: the IETF draft. */
export type Protocol = 'tus' | 'ietf';

/** The interop version the draft client sends (tus-js-client's `protocol: 'ietf-draft-05'`). */
const INTEROP_VERSION = '6';

interface Answer {
  status: number;
  headers: IncomingHttpHeaders;
}

export class TusClient {
  readonly agent: Agent;

  constructor(
    private readonly endpoint: string,
    private readonly protocol: Protocol = 'tus',
  ) {
    this.agent = new Agent({ keepAlive: true, maxSockets: Infinity, maxFreeSockets: 256 });
  }

  private send(
    method: string,
    url: string,
    headers: Record<string, string>,
    bodyBytes: number,
  ): Promise<Answer> {
    return new Promise((resolve, reject) => {
      const req = request(url, {
        method,
        agent: this.agent,
        headers: {
          ...headers,
          ...(this.protocol === 'tus'
            ? { 'Tus-Resumable': '1.0.0' }
            : { 'Upload-Draft-Interop-Version': INTEROP_VERSION }),
          'Content-Length': String(bodyBytes),
        },
      });
      req.setTimeout(SOCKET_TIMEOUT_MS, () =>
        req.destroy(new Error(`${method} ${url}: timed out`)),
      );
      req.once('error', reject);
      req.once('response', (res) => {
        res.resume();
        res.once('error', reject);
        res.once('end', () => resolve({ status: res.statusCode ?? 0, headers: res.headers }));
      });
      const buffer = sourceBuffer();
      let left = bodyBytes;
      const pump = () => {
        while (left > 0) {
          const n = Math.min(left, buffer.length);
          left -= n;
          if (!req.write(n === buffer.length ? buffer : buffer.subarray(0, n))) {
            req.once('drain', pump);
            return;
          }
        }
        req.end();
      };
      pump();
    });
  }

  /** POST: creates an upload of `length` bytes; resolves with its URL. */
  async create(length: number): Promise<string> {
    const { status, headers } = await this.send(
      'POST',
      this.endpoint,
      {
        'Upload-Length': String(length),
        // "filename" in base64.
        'Upload-Metadata': 'filename YmVuY2guYmlu',
        ...(this.protocol === 'ietf' && { 'Upload-Complete': '?0' }),
      },
      0,
    );
    if (status !== 201 || !headers.location || !this.speaksProtocol(headers, false)) {
      throw new Error(`POST ${this.endpoint}: ${status}, ${describe(headers)}`);
    }
    return new URL(headers.location, this.endpoint).href;
  }

  /** PATCH: sends `bytes` bytes at `offset`; checks the new offset the server answers. */
  async patch(url: string, offset: number, bytes: number, last: boolean): Promise<void> {
    const { status, headers } = await this.send(
      'PATCH',
      url,
      this.protocol === 'tus'
        ? { 'Upload-Offset': String(offset), 'Content-Type': 'application/offset+octet-stream' }
        : {
            'Upload-Offset': String(offset),
            'Upload-Complete': last ? '?1' : '?0',
            'Content-Type': 'application/partial-upload',
          },
      bytes,
    );
    const next = Number(headers['upload-offset']);
    if (status !== 204 || next !== offset + bytes || !this.speaksProtocol(headers, last)) {
      throw new Error(`PATCH ${url} at ${offset}: ${status}, ${describe(headers)}`);
    }
  }

  /**
   * Whether an answer is in this client's protocol: TUS answers carry `Tus-Resumable`; draft
   * answers do not, and say whether the upload is complete.
   */
  private speaksProtocol(headers: IncomingHttpHeaders, complete: boolean): boolean {
    if (this.protocol === 'tus') return headers['tus-resumable'] === '1.0.0';
    return (
      headers['tus-resumable'] === undefined &&
      headers['upload-complete'] === (complete ? '?1' : '?0')
    );
  }

  /** One whole upload: POST, then PATCHes of `chunk` bytes (the last one shorter). */
  async upload(length: number, chunk: number): Promise<void> {
    const url = await this.create(length);
    for (let offset = 0; offset < length; offset += chunk) {
      const bytes = Math.min(chunk, length - offset);
      await this.patch(url, offset, bytes, offset + bytes === length);
    }
  }

  close(): void {
    this.agent.destroy();
  }
}

function describe(headers: IncomingHttpHeaders): string {
  const names = ['location', 'upload-offset', 'upload-complete', 'tus-resumable'];
  return names.map((name) => `${name}: ${String(headers[name])}`).join(', ');
}

/**
 * Runs `count` jobs with at most `concurrency` at once; resolves with each job's duration in
 * milliseconds (in completion order). The first failure rejects once the running jobs settle.
 */
export async function runPool(
  count: number,
  concurrency: number,
  job: (index: number) => Promise<void>,
): Promise<number[]> {
  const durations: number[] = [];
  let next = 0;
  let failure: unknown;
  const worker = async () => {
    while (failure === undefined && next < count) {
      const index = next++;
      const start = performance.now();
      try {
        await job(index);
        durations.push(performance.now() - start);
      } catch (e) {
        failure ??= e;
      }
    }
  };
  await Promise.all(Array.from({ length: Math.min(concurrency, count) }, worker));
  if (failure !== undefined)
    throw failure instanceof Error ? failure : new Error('an upload failed', { cause: failure });
  return durations;
}

import { afterAll, beforeAll, describe, expect, it } from '@jest/globals';
import {
  Injectable,
  UnauthorizedException,
  type CanActivate,
  type ExecutionContext,
} from '@nestjs/common';
import { randomBytes } from 'node:crypto';
import { request as httpRequest, type IncomingMessage } from 'node:http';
import { connect, type Socket } from 'node:net';
import { TUS, createTestApp, createUpload, headUpload, type TestApp } from '../support/app.js';
import { startUpload } from '../support/clients-tus-js.js';

/** Each bearer token is its own principal. */
@Injectable()
class PrincipalGuard implements CanActivate {
  canActivate(context: ExecutionContext): boolean {
    const req = context.switchToHttp().getRequest<IncomingMessage & { user?: unknown }>();
    const match = /^Bearer (\w+)$/.exec(req.headers.authorization ?? '');
    if (!match) throw new UnauthorizedException();
    req.user = match[1];
    return true;
  }
}

describe('rate limits', () => {
  describe('creations per client', () => {
    let s: TestApp;
    beforeAll(async () => {
      s = await createTestApp({ rateLimits: { creationsPerMinute: 3 } });
    });
    afterAll(() => s.close());

    it('a burst of creations gets 429 with Retry-After and Tus-Resumable; other requests go on', async () => {
      const made = [];
      for (let i = 0; i < 3; i++) made.push(await createUpload(s, 10));
      expect(made.map((m) => m.res.status)).toEqual([201, 201, 201]);
      const refused = await createUpload(s, 10);
      expect(refused.res.status).toBe(429);
      expect(Number(refused.res.headers['retry-after'])).toBeGreaterThanOrEqual(1);
      expect(Number(refused.res.headers['retry-after'])).toBeLessThanOrEqual(60);
      expect(refused.res.headers['tus-resumable']).toBe('1.0.0');
      expect(refused.res.headers.location).toBeUndefined();
      // Only creations are limited: HEAD of the uploads made goes on.
      for (const m of made) expect((await headUpload(s, m.id)).res.status).toBe(200);
      const options = await s.request({ method: 'OPTIONS', path: '/files' });
      expect(options.status).toBe(204);
    });
  });

  describe('requests per principal', () => {
    let s: TestApp;
    beforeAll(async () => {
      s = await createTestApp({ guards: [PrincipalGuard], rateLimits: { requestsPerMinute: 4 } });
    });
    afterAll(() => s.close());

    it('each principal has its own budget, wherever it connects from', async () => {
      const as = (who: string) => ({ Authorization: `Bearer ${who}` });
      const statuses = async (who: string, n: number) => {
        const out: number[] = [];
        for (let i = 0; i < n; i++) {
          out.push((await createUpload(s, 1, { headers: as(who) })).res.status);
        }
        return out;
      };
      expect(await statuses('alice', 5)).toEqual([201, 201, 201, 201, 429]);
      expect(await statuses('bob', 4)).toEqual([201, 201, 201, 201]);
      // A request the guard refuses is not counted against anyone.
      const anonymous = await s.request({
        method: 'POST',
        path: '/files',
        headers: { ...TUS, 'Upload-Length': '1' },
      });
      expect(anonymous.status).toBe(401);
    });
  });

  describe('real clients', () => {
    let s: TestApp;
    beforeAll(async () => {
      s = await createTestApp({ rateLimits: { requestsPerMinute: 4, windowMs: 1500 } });
    });
    afterAll(() => s.close());

    it('tus-js-client, retrying 429, completes an upload through the limit', async () => {
      const data = randomBytes(256 * 1024);
      const run = startUpload(data, {
        endpoint: `${s.baseUrl}/files/`,
        chunkSize: 64 * 1024,
        retryDelays: Array<number>(20).fill(500),
        // tus-js-client retries no 4xx but 409 and 423 on its own; Uppy retries 429 itself.
        onShouldRetry: (error) => {
          const status = error.originalResponse?.getStatus() ?? 0;
          return status === 429 || status >= 500 || status === 409 || status === 423;
        },
      });
      await run.done;
      expect(run.retries.map((r) => r.status)).toContain(429);
      // One upload: its HEADs were never refused, so it resumed instead of starting over.
      expect(run.exchanges.filter((e) => e.method === 'POST' && e.status === 201)).toHaveLength(1);
      expect(run.exchanges.filter((e) => e.method === 'HEAD').every((e) => e.status === 200)).toBe(
        true,
      );
      const head = await headUpload(s, run.upload.url!.split('/').pop()!);
      expect(head.offset).toBe(data.length);
    }, 60_000);
  });
});

describe('connection caps', () => {
  let s: TestApp;
  beforeAll(async () => {
    s = await createTestApp({ maxConnectionsPerClient: 5, maxConnections: 50 });
  });
  afterAll(() => s.close());

  /** A connection that sends nothing; resolves once it is open, tells when it is closed. */
  function idle(localAddress = '127.0.0.1') {
    const socket = connect({ host: '127.0.0.1', port: s.port, localAddress });
    const closed = new Promise<boolean>((resolve) => socket.once('close', () => resolve(true)));
    socket.on('error', () => {});
    return new Promise<{ socket: Socket; closed: Promise<boolean> }>((resolve) =>
      socket.once('connect', () => resolve({ socket, closed })),
    );
  }

  function post(localAddress: string) {
    return new Promise<number>((resolve) => {
      const req = httpRequest(
        {
          host: '127.0.0.1',
          port: s.port,
          localAddress,
          method: 'POST',
          path: '/files',
          headers: { ...TUS, 'Upload-Length': '1' },
          agent: false,
        },
        (res) => {
          res.resume();
          resolve(res.statusCode ?? 0);
        },
      );
      req.on('error', () => resolve(0));
      req.end();
    });
  }

  it('one client holds at most maxConnectionsPerClient; the others are served meanwhile', async () => {
    const held = await Promise.all(Array.from({ length: 8 }, () => idle()));
    const outcome = await Promise.all(
      held.map(({ closed }) =>
        Promise.race([closed, new Promise<boolean>((r) => setTimeout(() => r(false), 500))]),
      ),
    );
    // Five stay open, the three past the cap were closed at once.
    expect(outcome.filter((c) => c)).toHaveLength(3);
    expect(await post('127.0.0.1')).toBe(0);
    // Another client (another loopback address) is served.
    expect(await post('127.0.0.2')).toBe(201);
    for (const { socket } of held) socket.destroy();
    await new Promise((r) => setTimeout(r, 100));
    expect(await post('127.0.0.1')).toBe(201);
  });
});

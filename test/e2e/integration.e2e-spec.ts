import { afterAll, afterEach, beforeAll, describe, expect, it } from '@jest/globals';
import {
  ForbiddenException,
  Injectable,
  Module,
  UnauthorizedException,
  type CanActivate,
  type DynamicModule,
  type ExecutionContext,
  type INestApplication,
  type Provider,
  type Type,
} from '@nestjs/common';
import { EventEmitter2, EventEmitterModule, OnEvent } from '@nestjs/event-emitter';
import { ScheduleModule, SchedulerRegistry } from '@nestjs/schedule';
import { Test } from '@nestjs/testing';
import { randomBytes } from 'node:crypto';
import { mkdtemp, readFile, readdir, rm, stat } from 'node:fs/promises';
import http, { type IncomingHttpHeaders, type IncomingMessage, type Server } from 'node:http';
import net, { type AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import {
  Janitor,
  MemoryRecordStore,
  TUS_JANITOR_INTERVAL,
  TusEvents,
  TusMetrics,
  TusModule,
  UploadCompletedEvent,
  UploadCreatedEvent,
  UploadFailedEvent,
  UploadProgressEvent,
  UploadRecord,
  decodeRecordFile,
  type JanitorSummary,
  type TusEvent,
  type TusLogger,
  type TusModuleOptions,
} from '../../src/index.js';
import { createPlatformApp, forEachPlatform } from '../support/app.js';

// ---------------------------------------------------------------------------------------------
// Plumbing: temp dirs, apps on 127.0.0.1 / ::1, raw HTTP requests
// ---------------------------------------------------------------------------------------------

const TUS = { 'Tus-Resumable': '1.0.0' } as const;
const OCTETS = 'application/offset+octet-stream';
const UUID = '[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}';
const b64 = (s: string) => Buffer.from(s).toString('base64');
const escape = (s: string) => s.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');

const roots: string[] = [];

async function dirs(): Promise<{ uploadDir: string; completedDir: string }> {
  const root = await mkdtemp(join(tmpdir(), 'tussi-integration-'));
  roots.push(root);
  return { uploadDir: join(root, 'uploads'), completedDir: join(root, 'completed') };
}

afterAll(async () => {
  await Promise.all(roots.map((r) => rm(r, { recursive: true, force: true })));
});

/** A logger collecting what the module reports (keeps test output quiet). */
function collector(): TusLogger & { errors: string[]; warnings: string[] } {
  const errors: string[] = [];
  const warnings: string[] = [];
  return {
    errors,
    warnings,
    error: (message, error) =>
      errors.push(`${message}: ${error instanceof Error ? error.message : String(error)}`),
    warn: (message) => warnings.push(message),
  };
}

interface Res {
  status: number;
  headers: IncomingHttpHeaders;
  body: string;
}

function send(
  host: string,
  port: number,
  method: string,
  path: string,
  headers: Record<string, string> = {},
  body?: Buffer,
): Promise<Res> {
  return new Promise((resolve, reject) => {
    const req = http.request({
      host,
      port,
      method,
      path,
      agent: false,
      headers: body ? { 'Content-Length': String(body.length), ...headers } : headers,
    });
    req.setTimeout(15_000, () => req.destroy(new Error(`${method} ${path}: no response`)));
    req.on('response', (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => chunks.push(c));
      res.on('end', () =>
        resolve({
          status: res.statusCode ?? 0,
          headers: res.headers,
          body: Buffer.concat(chunks).toString(),
        }),
      );
      res.on('error', reject);
    });
    // A server refusing a body it did not read may close before we finish writing.
    req.on('error', (e: NodeJS.ErrnoException) => {
      if (e.code !== 'EPIPE' && e.code !== 'ECONNRESET') reject(e);
    });
    req.end(body);
  });
}

interface Started {
  app: INestApplication;
  server: Server;
  host: string;
  port: number;
  /** `host:port` as a client puts it in `Host` (IPv6 in brackets). */
  authority: string;
  req(method: string, path: string, headers?: Record<string, string>, body?: Buffer): Promise<Res>;
  close(): Promise<void>;
}

const started: Started[] = [];

afterEach(async () => {
  // Apps a test started for itself only (suite-wide apps are closed by their afterAll).
  await Promise.all(started.splice(0).map((s) => s.close()));
});

async function start(
  imports: Array<Type | DynamicModule>,
  { host = '127.0.0.1', providers = [] as Provider[], perTest = false } = {},
): Promise<Started> {
  const moduleRef = await Test.createTestingModule({ imports, providers }).compile();
  const app = await createPlatformApp(moduleRef, { logger: false });
  try {
    await app.listen(0, host);
  } catch (e) {
    await app.close().catch(() => {});
    throw e;
  }
  const server = app.getHttpServer() as Server;
  const { port } = server.address() as AddressInfo;
  let closed = false;
  const result: Started = {
    app,
    server,
    host,
    port,
    authority: host.includes(':') ? `[${host}]:${port}` : `${host}:${port}`,
    req: (method, path, headers, body) => send(host, port, method, path, headers, body),
    close: async () => {
      if (closed) return;
      closed = true;
      server.closeAllConnections();
      await app.close();
    },
  };
  if (perTest) started.push(result);
  return result;
}

/** `TusModule.forRoot` with fresh temp dirs and a quiet logger unless given. */
async function tus(
  options: Partial<TusModuleOptions> & { guards?: Array<Type<CanActivate> | CanActivate> } = {},
): Promise<DynamicModule> {
  return TusModule.forRoot({ ...(await dirs()), logger: collector(), ...options });
}

async function create(
  s: Started,
  length: number,
  headers: Record<string, string> = {},
): Promise<{ res: Res; id: string; location: string }> {
  const res = await s.req('POST', '/files', {
    ...TUS,
    'Upload-Length': String(length),
    ...headers,
  });
  const location = typeof res.headers.location === 'string' ? res.headers.location : '';
  return { res, location, id: location.split('/').pop() ?? '' };
}

function patch(
  s: Started,
  id: string,
  offset: number,
  body: Buffer,
  headers: Record<string, string> = {},
): Promise<Res> {
  return s.req(
    'PATCH',
    `/files/${id}`,
    { ...TUS, 'Content-Type': OCTETS, 'Upload-Offset': String(offset), ...headers },
    body,
  );
}

/** Creates and uploads `data` in `chunk`-sized PATCHes; every answer must be a success. */
async function uploadAll(
  s: Started,
  data: Buffer,
  chunk = data.length,
  headers: Record<string, string> = {},
): Promise<{ id: string; patches: number }> {
  const { res, id } = await create(s, data.length, headers);
  expect(res.status).toBe(201);
  let patches = 0;
  for (let at = 0; at < data.length; at += chunk) {
    const piece = data.subarray(at, at + chunk);
    const r = await patch(s, id, at, piece, headers);
    expect(r.status).toBe(204);
    expect(r.headers['upload-offset']).toBe(String(at + piece.length));
    patches++;
  }
  return { id, patches };
}

/** Bounded polling for state reached asynchronously (events are delivered after the response). */
type Truthy<T> = Exclude<T, false | 0 | '' | null | undefined>;

async function waitFor<T>(
  probe: () => T | Promise<T>,
  what: string,
  timeoutMs = 5000,
): Promise<Truthy<T>> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const value = await probe();
    if (value) return value as Truthy<T>;
    if (Date.now() > deadline) throw new Error(`${what}: not reached within ${timeoutMs} ms`);
    await new Promise((r) => setTimeout(r, 10));
  }
}

async function exists(path: string): Promise<boolean> {
  return stat(path).then(
    () => true,
    () => false,
  );
}

async function listing(dir: string): Promise<string[]> {
  return (await readdir(dir).catch(() => [] as string[])).sort();
}

function csv(value: string | string[] | undefined): string[] {
  return String(value ?? '')
    .split(',')
    .map((s) => s.trim())
    .filter(Boolean);
}

async function canBindIPv6(): Promise<boolean> {
  return new Promise((resolve) => {
    const probe = net.createServer();
    probe.once('error', () => resolve(false));
    probe.listen(0, '::1', () => probe.close(() => resolve(true)));
  });
}

// ---------------------------------------------------------------------------------------------
// Test providers
// ---------------------------------------------------------------------------------------------

const TOKEN = 'let-me-in';

@Injectable()
class BearerGuard implements CanActivate {
  static calls = 0;

  canActivate(context: ExecutionContext): boolean {
    BearerGuard.calls++;
    const req = context.switchToHttp().getRequest<IncomingMessage>();
    if (req.headers.authorization !== `Bearer ${TOKEN}`) {
      throw new UnauthorizedException({
        statusCode: 401,
        error: 'Unauthorized',
        message: 'bearer token required',
      });
    }
    return true;
  }
}

const AUTH = { Authorization: `Bearer ${TOKEN}` } as const;

@Injectable()
class EventRecorder {
  readonly events: TusEvent[] = [];

  @OnEvent(TusEvents.Created)
  created(event: UploadCreatedEvent): void {
    this.events.push(event);
  }

  @OnEvent(TusEvents.Progress)
  progress(event: UploadProgressEvent): void {
    this.events.push(event);
  }

  @OnEvent(TusEvents.Completed)
  completed(event: UploadCompletedEvent): void {
    this.events.push(event);
  }

  @OnEvent(TusEvents.Failed)
  failed(event: UploadFailedEvent): void {
    this.events.push(event);
  }

  of(id: string): TusEvent[] {
    return this.events.filter((e) => e.uploadId === id);
  }
}

/** Listeners that throw on every event (Nest's default: errors suppressed and logged). */
@Injectable()
class ThrowingListener {
  calls = 0;

  @OnEvent(TusEvents.Created)
  created(): void {
    this.calls++;
    throw new Error('created listener boom');
  }

  @OnEvent(TusEvents.Progress)
  async progress(): Promise<void> {
    this.calls++;
    throw new Error('progress listener boom');
  }

  @OnEvent(TusEvents.Completed)
  completed(): void {
    this.calls++;
    throw new Error('completed listener boom');
  }
}

/** A listener that opts out of Nest's error suppression: its error goes back to the emitter. */
@Injectable()
class StrictThrowingListener {
  calls = 0;

  @OnEvent(TusEvents.Created, { suppressErrors: false })
  created(): void {
    this.calls++;
    throw new Error('strict listener boom');
  }
}

/** Records in memory; `put` fails when `fails(record)` says so. */
class FailingRecordStore extends MemoryRecordStore {
  constructor(public fails: (record: UploadRecord) => boolean) {
    super();
  }

  override async put(id: string, record: UploadRecord): Promise<void> {
    if (this.fails(record)) throw new Error('record store on fire');
    return super.put(id, record);
  }
}

@Injectable()
class QuotaService {
  mode: 'allow' | 'forbid' | 'crash' = 'allow';
  readonly calls: Array<{ headers: Record<string, string>; metadata: Record<string, string> }> = [];

  check(headers: Record<string, string>, metadata: Record<string, string>): Record<string, string> {
    this.calls.push({ headers, metadata });
    if (this.mode === 'forbid') throw new ForbiddenException('quota');
    if (this.mode === 'crash') throw new Error('quota database unreachable');
    return { owner: headers.authorization ?? 'anonymous', tenant: metadata.tenant ?? 'none' };
  }
}

@Module({ providers: [QuotaService], exports: [QuotaService] })
class QuotaModule {}

const ipv6 = await canBindIPv6();
if (!ipv6) console.warn('::1 cannot be bound here: the IPv6 trusted-proxy tests are skipped');

// ---------------------------------------------------------------------------------------------
// a. guards
// ---------------------------------------------------------------------------------------------

forEachPlatform((platform) => {
  describe('guards (extras.guards) on the upload routes', () => {
    let s: Started;

    beforeAll(async () => {
      s = await start([await tus({ guards: [BearerGuard] })]);
    });
    afterAll(() => s.close());

    function expectRefused(res: Res): void {
      expect(res.status).toBe(401);
      // Guards run before the TUS handler: the filter must still mark the response as TUS.
      expect(res.headers['tus-resumable']).toBe('1.0.0');
    }

    it('refuses POST without a token: 401 with Tus-Resumable and the guard body', async () => {
      const { res, location } = await create(s, 10);
      expectRefused(res);
      expect(location).toBe('');
      expect(JSON.parse(res.body)).toMatchObject({
        statusCode: 401,
        message: 'bearer token required',
      });
    });

    it('refuses POST with a wrong token', async () => {
      const { res } = await create(s, 10, { Authorization: 'Bearer nope' });
      expectRefused(res);
    });

    it('refuses HEAD and PATCH without a token, leaving the upload untouched', async () => {
      const { res: created, id } = await create(s, 5, AUTH);
      expect(created.status).toBe(201);

      const head = await s.req('HEAD', `/files/${id}`, { ...TUS });
      expectRefused(head);
      expect(head.body).toBe('');
      expect(head.headers['upload-offset']).toBeUndefined();

      const patched = await patch(s, id, 0, Buffer.from('hello'));
      expectRefused(patched);

      const after = await s.req('HEAD', `/files/${id}`, { ...TUS, ...AUTH });
      expect(after.status).toBe(200);
      expect(after.headers['upload-offset']).toBe('0');
    });

    it('refuses DELETE and unknown methods too (the guard sits on every non-OPTIONS route)', async () => {
      const res = await s.req(
        'DELETE',
        `/files/${'0'.repeat(8)}-0000-4000-8000-${'0'.repeat(12)}`,
        {
          ...TUS,
        },
      );
      expectRefused(res);
    });

    it('lets a request with the token through: POST, HEAD, PATCH work', async () => {
      const data = Buffer.from('guarded bytes');
      const { res, id, location } = await create(s, data.length, AUTH);
      expect(res.status).toBe(201);
      expect(location).toMatch(new RegExp(`^http://${escape(s.authority)}/files/${UUID}$`));
      const head = await s.req('HEAD', `/files/${id}`, { ...TUS, ...AUTH });
      expect(head.status).toBe(200);
      expect(head.headers['upload-length']).toBe(String(data.length));
      const patched = await patch(s, id, 0, data, AUTH);
      expect(patched.status).toBe(204);
      expect(patched.headers['upload-offset']).toBe(String(data.length));
    });

    it('never runs the guard on OPTIONS: discovery answers 204 without a token', async () => {
      const before = BearerGuard.calls;
      for (const path of ['/files', `/files/${'1'.repeat(8)}-1111-4111-8111-${'1'.repeat(12)}`]) {
        const res = await s.req('OPTIONS', path);
        expect(res.status).toBe(204);
        expect(res.headers['tus-resumable']).toBe('1.0.0');
        expect(res.headers['tus-version']).toBe('1.0.0');
        expect(csv(res.headers['tus-extension'])).toContain('creation');
      }
      expect(BearerGuard.calls).toBe(before);
    });

    it('accepts a guard instance as well as a class', async () => {
      const instance = await start([await tus({ guards: [new BearerGuard()] })], { perTest: true });
      expect((await create(instance, 1)).res.status).toBe(401);
      expect((await create(instance, 1, AUTH)).res.status).toBe(201);
      expect((await instance.req('OPTIONS', '/files')).status).toBe(204);
    });
  });

  // ---------------------------------------------------------------------------------------------
  // b. trusted proxies over IPv4 and IPv6
  // ---------------------------------------------------------------------------------------------

  describe('trusted proxies decide the scheme (and host) of Location', () => {
    /** POSTs with `headers` and returns the Location (asserting 201). */
    async function locationFor(s: Started, headers: Record<string, string>): Promise<string> {
      const { res, location } = await create(s, 1, headers);
      expect(res.status).toBe(201);
      return location;
    }

    const direct = (s: Started, scheme = 'http') =>
      new RegExp(`^${scheme}://${escape(s.authority)}/files/${UUID}$`);
    const at = (origin: string) => new RegExp(`^${escape(origin)}/files/${UUID}$`);

    describe('IPv4 peer 127.0.0.1', () => {
      let trusted: Started;
      let untrusted: Started;
      let hostTrusted: Started;

      beforeAll(async () => {
        trusted = await start([await tus({ trustedProxies: ['127.0.0.1'] })]);
        untrusted = await start([await tus({ trustedProxies: ['10.0.0.0/8', '::1'] })]);
        hostTrusted = await start([
          await tus({ trustedProxies: ['127.0.0.0/8'], trustForwardedHost: true }),
        ]);
      });
      afterAll(async () => {
        await Promise.all([trusted.close(), untrusted.close(), hostTrusted.close()]);
      });

      it('trusted: X-Forwarded-Proto https makes Location https', async () => {
        expect(await locationFor(trusted, { 'X-Forwarded-Proto': 'https' })).toMatch(
          direct(trusted, 'https'),
        );
      });

      it('trusted: no forwarded header keeps http', async () => {
        expect(await locationFor(trusted, {})).toMatch(direct(trusted));
      });

      it('trusted: the first value of an X-Forwarded-Proto list counts, in any case', async () => {
        expect(await locationFor(trusted, { 'X-Forwarded-Proto': 'HTTPS, http' })).toMatch(
          direct(trusted, 'https'),
        );
      });

      it.each(['javascript', 'ftp', 'https://evil.example', 'javascript, https'])(
        'trusted: X-Forwarded-Proto %j is ignored',
        async (proto) => {
          expect(await locationFor(trusted, { 'X-Forwarded-Proto': proto })).toMatch(
            direct(trusted),
          );
        },
      );

      it('trusted: RFC 7239 Forwarded proto=https makes Location https', async () => {
        expect(await locationFor(trusted, { Forwarded: 'for=192.0.2.1;proto=https' })).toMatch(
          direct(trusted, 'https'),
        );
      });

      it('trusted without trustForwardedHost: forwarded hosts are ignored', async () => {
        expect(
          await locationFor(trusted, {
            Forwarded: 'proto=https;host=example.com',
            'X-Forwarded-Host': 'evil.example',
          }),
        ).toMatch(direct(trusted, 'https'));
      });

      it('untrusted peer: X-Forwarded-Proto / Forwarded / X-Forwarded-Host are spoofs, ignored', async () => {
        expect(await locationFor(untrusted, { 'X-Forwarded-Proto': 'https' })).toMatch(
          direct(untrusted),
        );
        expect(
          await locationFor(untrusted, {
            Forwarded: 'proto=https;host=example.com',
            'X-Forwarded-Host': 'evil.example',
          }),
        ).toMatch(direct(untrusted));
      });

      it('trustForwardedHost: Forwarded proto=https;host=example.com gives https://example.com/files/…', async () => {
        expect(
          await locationFor(hostTrusted, { Forwarded: 'proto=https;host=example.com' }),
        ).toMatch(at('https://example.com'));
        expect(
          await locationFor(hostTrusted, {
            Forwarded: 'for=1.2.3.4;proto="https";host="example.com"',
          }),
        ).toMatch(at('https://example.com'));
      });

      it('trustForwardedHost: X-Forwarded-Proto + X-Forwarded-Host (first value, with port)', async () => {
        expect(
          await locationFor(hostTrusted, {
            'X-Forwarded-Proto': 'https',
            'X-Forwarded-Host': 'uploads.example:8443, internal.lan',
          }),
        ).toMatch(at('https://uploads.example:8443'));
      });

      it('trustForwardedHost: a malformed forwarded host is refused, never reflected', async () => {
        const { res, location } = await create(hostTrusted, 1, {
          'X-Forwarded-Host': 'evil.example/path?x=1',
        });
        expect(res.status).toBe(400);
        expect(res.headers['tus-resumable']).toBe('1.0.0');
        expect(location).toBe('');
      });

      it('the upload URL of a forwarded Location is served (path is unchanged)', async () => {
        const location = await locationFor(trusted, { 'X-Forwarded-Proto': 'https' });
        const head = await trusted.req('HEAD', new URL(location).pathname, { ...TUS });
        expect(head.status).toBe(200);
        expect(head.headers['upload-offset']).toBe('0');
      });
    });

    (ipv6 ? describe : describe.skip)('IPv6 peer ::1', () => {
      let trusted: Started;
      let cidr: Started;
      let untrusted: Started;

      beforeAll(async () => {
        trusted = await start([await tus({ trustedProxies: ['::1'] })], { host: '::1' });
        cidr = await start(
          [await tus({ trustedProxies: ['::/64', '10.0.0.0/8'], trustForwardedHost: true })],
          { host: '::1' },
        );
        untrusted = await start([await tus({ trustedProxies: ['127.0.0.1', '10.0.0.0/8'] })], {
          host: '::1',
        });
      });
      afterAll(async () => {
        await Promise.all([trusted?.close(), cidr?.close(), untrusted?.close()]);
      });

      it('trusted: X-Forwarded-Proto https makes Location https://[::1]:port', async () => {
        expect(await locationFor(trusted, { 'X-Forwarded-Proto': 'https' })).toMatch(
          direct(trusted, 'https'),
        );
        expect(trusted.authority).toMatch(/^\[::1\]:\d+$/);
      });

      it('trusted: no header keeps http; javascript is ignored', async () => {
        expect(await locationFor(trusted, {})).toMatch(direct(trusted));
        expect(await locationFor(trusted, { 'X-Forwarded-Proto': 'javascript' })).toMatch(
          direct(trusted),
        );
      });

      it('trusted by an IPv6 CIDR range, with trustForwardedHost: Forwarded gives https://example.com', async () => {
        expect(await locationFor(cidr, { Forwarded: 'proto=https;host=example.com' })).toMatch(
          at('https://example.com'),
        );
      });

      it('untrusted (only IPv4 entries): forwarded headers are ignored', async () => {
        expect(
          await locationFor(untrusted, {
            'X-Forwarded-Proto': 'https',
            Forwarded: 'proto=https;host=example.com',
          }),
        ).toMatch(direct(untrusted));
      });
    });
  });

  // ---------------------------------------------------------------------------------------------
  // c. CORS
  // ---------------------------------------------------------------------------------------------

  describe('CORS for browser clients', () => {
    const ORIGIN = 'http://app.example';
    let s: Started;

    beforeAll(async () => {
      s = await start([await tus({ cors: { origins: [ORIGIN] }, guards: [BearerGuard] })]);
    });
    afterAll(() => s.close());

    it('answers a preflight of POST /files: 204, CORS headers by name, and still TUS discovery', async () => {
      const guardCalls = BearerGuard.calls;
      const res = await s.req('OPTIONS', '/files', {
        Origin: ORIGIN,
        'Access-Control-Request-Method': 'POST',
        'Access-Control-Request-Headers':
          'authorization,tus-resumable,upload-length,upload-metadata',
      });
      expect(res.status).toBe(204);
      expect(res.headers['access-control-allow-origin']).toBe(ORIGIN);
      expect(csv(res.headers.vary)).toContain('Origin');
      expect(csv(res.headers['access-control-allow-methods'])).toEqual(
        expect.arrayContaining(['POST', 'HEAD', 'PATCH', 'OPTIONS']),
      );
      const allowHeaders = csv(res.headers['access-control-allow-headers']).map((h) =>
        h.toLowerCase(),
      );
      expect(allowHeaders).toEqual(
        expect.arrayContaining([
          'authorization',
          'tus-resumable',
          'upload-length',
          'upload-metadata',
        ]),
      );
      expect(allowHeaders).not.toContain('*');
      expect(res.headers['access-control-max-age']).toBe('86400');
      // CORS does not swallow the TUS OPTIONS response.
      expect(res.headers['tus-resumable']).toBe('1.0.0');
      expect(res.headers['tus-version']).toBe('1.0.0');
      expect(csv(res.headers['tus-extension'])).toContain('creation');
      // A preflight carries no credentials: the guard never ran.
      expect(BearerGuard.calls).toBe(guardCalls);
    });

    it('answers a preflight of PATCH on an upload URL', async () => {
      const res = await s.req(
        'OPTIONS',
        `/files/${'2'.repeat(8)}-2222-4222-8222-${'2'.repeat(12)}`,
        {
          Origin: ORIGIN,
          'Access-Control-Request-Method': 'PATCH',
          'Access-Control-Request-Headers':
            'tus-resumable,upload-offset,content-type,authorization',
        },
      );
      expect(res.status).toBe(204);
      expect(res.headers['access-control-allow-origin']).toBe(ORIGIN);
      expect(csv(res.headers['access-control-allow-methods'])).toContain('PATCH');
      expect(csv(res.headers['access-control-allow-headers']).map((h) => h.toLowerCase())).toEqual(
        expect.arrayContaining(['tus-resumable', 'upload-offset', 'content-type', 'authorization']),
      );
      expect(res.headers['tus-version']).toBe('1.0.0');
    });

    it('a real POST with Origin gets ACAO and exposes Location (and the Upload-* headers)', async () => {
      const { res, location } = await create(s, 4, { ...AUTH, Origin: ORIGIN });
      expect(res.status).toBe(201);
      expect(location).not.toBe('');
      expect(res.headers['access-control-allow-origin']).toBe(ORIGIN);
      const exposed = csv(res.headers['access-control-expose-headers']);
      expect(exposed).toEqual(
        expect.arrayContaining(['Location', 'Upload-Offset', 'Upload-Length', 'Tus-Resumable']),
      );
      expect(res.headers['access-control-allow-methods']).toBeUndefined();

      const head = await s.req('HEAD', new URL(location).pathname, {
        ...TUS,
        ...AUTH,
        Origin: ORIGIN,
      });
      expect(head.status).toBe(200);
      expect(head.headers['access-control-allow-origin']).toBe(ORIGIN);
      expect(csv(head.headers['access-control-expose-headers'])).toContain('Upload-Offset');
    });

    it('a guard 401 with Origin still carries ACAO, so the browser can read it', async () => {
      const { res } = await create(s, 4, { Origin: ORIGIN });
      expect(res.status).toBe(401);
      expect(res.headers['tus-resumable']).toBe('1.0.0');
      expect(res.headers['access-control-allow-origin']).toBe(ORIGIN);
      expect(csv(res.headers['access-control-expose-headers'])).toContain('Tus-Resumable');
    });

    it('a disallowed origin gets no CORS header, on preflight, POST and 401', async () => {
      const EVIL = 'http://evil.example';
      const preflight = await s.req('OPTIONS', '/files', {
        Origin: EVIL,
        'Access-Control-Request-Method': 'POST',
        'Access-Control-Request-Headers': 'authorization,tus-resumable',
      });
      const post = (await create(s, 4, { ...AUTH, Origin: EVIL })).res;
      const refused = (await create(s, 4, { Origin: EVIL })).res;
      expect(post.status).toBe(201);
      expect(refused.status).toBe(401);
      for (const res of [preflight, post, refused]) {
        for (const name of Object.keys(res.headers)) expect(name).not.toMatch(/^access-control-/);
      }
    });

    it('a request without Origin gets no CORS header', async () => {
      const { res } = await create(s, 4, AUTH);
      expect(res.status).toBe(201);
      for (const name of Object.keys(res.headers)) expect(name).not.toMatch(/^access-control-/);
    });
  });

  // ---------------------------------------------------------------------------------------------
  // d. lifecycle events
  // ---------------------------------------------------------------------------------------------

  describe('lifecycle events', () => {
    describe('through EventEmitterModule and @OnEvent', () => {
      let s: Started;
      let recorder: EventRecorder;
      let completedDir: string;

      beforeAll(async () => {
        const d = await dirs();
        completedDir = d.completedDir;
        s = await start(
          [EventEmitterModule.forRoot(), TusModule.forRoot({ ...d, logger: collector() })],
          { providers: [EventRecorder] },
        );
        recorder = s.app.get(EventRecorder);
      });
      afterAll(() => s.close());

      it('a full upload emits created → progress (≥1) → completed, in that order, with payloads', async () => {
        const data = randomBytes(300 * 1024);
        const { id } = await uploadAll(s, data, 100 * 1024, {
          'Upload-Metadata': `filename ${b64('cat.png')}`,
        });
        const events = await waitFor(() => {
          const mine = recorder.of(id);
          return mine.some((e) => e.name === TusEvents.Completed) && mine;
        }, 'completed event');

        const names = events.map((e) => e.name);
        expect(names[0]).toBe(TusEvents.Created);
        expect(names[names.length - 1]).toBe(TusEvents.Completed);
        expect(names.filter((n) => n === TusEvents.Created)).toHaveLength(1);
        expect(names.filter((n) => n === TusEvents.Completed)).toHaveLength(1);
        const progress = events.filter((e) => e instanceof UploadProgressEvent);
        expect(progress.length).toBeGreaterThanOrEqual(1);
        expect(names.slice(1, -1).every((n) => n === TusEvents.Progress)).toBe(true);

        const created = events[0] as UploadCreatedEvent;
        expect(created).toBeInstanceOf(UploadCreatedEvent);
        expect(created.uploadId).toBe(id);
        expect(created.record.length).toBe(data.length);
        expect(created.record.offset).toBe(0);
        expect(created.record.metadata).toEqual({ filename: 'cat.png' });
        expect(created.request.method).toBe('POST');
        expect(created.request.headers['upload-length']).toBe(String(data.length));

        let last = 0;
        for (const p of progress) {
          expect(p.uploadId).toBe(id);
          expect(p.length).toBe(data.length);
          expect(p.offset).toBeGreaterThan(0);
          expect(p.offset).toBeGreaterThanOrEqual(last);
          expect(p.offset).toBeLessThanOrEqual(data.length);
          last = p.offset;
        }

        const completed = events[events.length - 1] as UploadCompletedEvent;
        expect(completed).toBeInstanceOf(UploadCompletedEvent);
        expect(completed.uploadId).toBe(id);
        expect(completed.record.offset).toBe(data.length);
        expect(completed.record.length).toBe(data.length);
        expect(completed.record.finishedAt).toBeInstanceOf(Date);
        expect(completed.record.metadata).toEqual({ filename: 'cat.png' });
        // When completed is emitted the upload is in the completed queue.
        expect(await readFile(join(completedDir, id))).toEqual(data);
      });

      it('emits no failed event for a client error (4xx)', async () => {
        const { id } = await create(s, 10);
        const before = recorder.events.length;
        const res = await patch(s, id, 5, Buffer.from('x'));
        expect(res.status).toBe(409);
        // A later event proves earlier ones (none) were delivered: events keep their order.
        await patch(s, id, 0, Buffer.from('0123456789'));
        await waitFor(
          () => recorder.of(id).some((e) => e.name === TusEvents.Completed),
          'completed event',
        );
        expect(recorder.events.slice(before).some((e) => e.name === TusEvents.Failed)).toBe(false);
      });
    });

    it('progressIntervalMs throttles: many quick PATCHes emit far fewer progress events', async () => {
      const throttled = await start(
        [EventEmitterModule.forRoot(), await tus({ progressIntervalMs: 10_000 })],
        { providers: [EventRecorder], perTest: true },
      );
      const unthrottled = await start(
        [EventEmitterModule.forRoot(), await tus({ progressIntervalMs: 0 })],
        { providers: [EventRecorder], perTest: true },
      );
      const data = randomBytes(40 * 512);
      const counts: number[] = [];
      let patches = 0;
      for (const s of [throttled, unthrottled]) {
        const recorder = s.app.get(EventRecorder);
        const upload = await uploadAll(s, data, 512);
        patches = upload.patches;
        const events = await waitFor(() => {
          const mine = recorder.of(upload.id);
          return mine.some((e) => e.name === TusEvents.Completed) && mine;
        }, 'completed event');
        counts.push(events.filter((e) => e.name === TusEvents.Progress).length);
      }
      const [throttledCount = 0, unthrottledCount = 0] = counts;
      expect(patches).toBe(40);
      expect(throttledCount).toBeGreaterThanOrEqual(1);
      expect(throttledCount).toBeLessThanOrEqual(2);
      expect(throttledCount * 10).toBeLessThan(patches);
      // The control: without the interval every PATCH reports progress.
      expect(unthrottledCount).toBeGreaterThanOrEqual(patches);
    });

    it('a throwing @OnEvent listener does not break the upload', async () => {
      const d = await dirs();
      const s = await start(
        [EventEmitterModule.forRoot(), TusModule.forRoot({ ...d, logger: collector() })],
        {
          providers: [ThrowingListener, EventRecorder],
          perTest: true,
        },
      );
      const data = randomBytes(64 * 1024);
      const { id } = await uploadAll(s, data, 16 * 1024);
      const recorder = s.app.get(EventRecorder);
      await waitFor(() => recorder.of(id).some((e) => e.name === TusEvents.Completed), 'completed');
      expect(s.app.get(ThrowingListener).calls).toBeGreaterThanOrEqual(3);
      expect(await readFile(join(d.completedDir, id))).toEqual(data);
    });

    it('an onEvent sink that throws or rejects does not break the upload; the error is logged', async () => {
      const d = await dirs();
      const logger = collector();
      const seen: string[] = [];
      const s = await start(
        [
          TusModule.forRoot({
            ...d,
            logger,
            onEvent: (event) => {
              seen.push(event.name);
              if (event.name === TusEvents.Created) throw new Error('sync sink boom');
              if (event.name === TusEvents.Progress)
                return Promise.reject(new Error('async sink boom'));
            },
          }),
        ],
        { perTest: true },
      );
      const data = randomBytes(32 * 1024);
      const { id } = await uploadAll(s, data, 8 * 1024);
      await waitFor(() => seen.includes(TusEvents.Completed), 'completed event');
      expect(await readFile(join(d.completedDir, id))).toEqual(data);
      await waitFor(
        () =>
          logger.errors.some((m) => m.includes('tus.upload.created listener failed')) &&
          logger.errors.some((m) => m.includes('tus.upload.progress listener failed')),
        'listener failures logged',
      );
      expect(logger.errors.join('\n')).toContain('sync sink boom');
      expect(logger.errors.join('\n')).toContain('async sink boom');
    });

    it('the onEvent option receives the same events without EventEmitterModule', async () => {
      const d = await dirs();
      const events: TusEvent[] = [];
      const s = await start(
        [TusModule.forRoot({ ...d, logger: collector(), onEvent: (e) => void events.push(e) })],
        { perTest: true },
      );
      const data = randomBytes(50 * 1024);
      const { id } = await uploadAll(s, data, 25 * 1024);
      await waitFor(() => events.some((e) => e.name === TusEvents.Completed), 'completed event');
      const names = events.filter((e) => e.uploadId === id).map((e) => e.name);
      expect(names[0]).toBe(TusEvents.Created);
      expect(names[names.length - 1]).toBe(TusEvents.Completed);
      expect(names).toContain(TusEvents.Progress);
      const completed = events.find((e) => e.name === TusEvents.Completed) as UploadCompletedEvent;
      expect(completed.record.offset).toBe(data.length);
    });

    it('the onEvent option and @OnEvent listeners both receive every event', async () => {
      const d = await dirs();
      const sink: TusEvent[] = [];
      const s = await start(
        [
          EventEmitterModule.forRoot(),
          TusModule.forRoot({ ...d, logger: collector(), onEvent: (e) => void sink.push(e) }),
        ],
        { providers: [EventRecorder], perTest: true },
      );
      const { id } = await uploadAll(s, Buffer.from('both sinks'));
      const recorder = s.app.get(EventRecorder);
      await waitFor(() => recorder.of(id).some((e) => e.name === TusEvents.Completed), 'bus');
      await waitFor(() => sink.some((e) => e.name === TusEvents.Completed), 'sink');
      expect(sink.map((e) => e.name)).toEqual(recorder.of(id).map((e) => e.name));
      // The same event objects travel both ways.
      expect(sink[0]).toBe(recorder.of(id)[0]);
    });

    it('a listener with suppressErrors: false that throws: upload unaffected, error logged, no unhandled rejection', async () => {
      // (Under Jest an escaped rejection also fails this test directly, with the listener's error.)
      const unhandled: unknown[] = [];
      const onUnhandled = (reason: unknown) => unhandled.push(reason);
      process.on('unhandledRejection', onUnhandled);
      try {
        const d = await dirs();
        const logger = collector();
        const s = await start([EventEmitterModule.forRoot(), TusModule.forRoot({ ...d, logger })], {
          providers: [StrictThrowingListener, EventRecorder],
          perTest: true,
        });
        const data = Buffer.from('strict listener');
        const { id } = await uploadAll(s, data);
        const recorder = s.app.get(EventRecorder);
        await waitFor(
          () => recorder.of(id).some((e) => e.name === TusEvents.Completed),
          'completed',
        );
        expect(s.app.get(StrictThrowingListener).calls).toBe(1);
        expect(await readFile(join(d.completedDir, id))).toEqual(data);
        // TusHandler promises to log what a listener throws; a rejection nobody handles would
        // crash a production process (Node's default --unhandled-rejections=throw).
        await waitFor(
          () =>
            logger.errors.some((m) => m.includes('strict listener boom')) || unhandled.length > 0,
          'listener failure logged (or escaped)',
          3000,
        );
        expect(unhandled).toEqual([]);
        expect(logger.errors.join('\n')).toContain('tus.upload.created listener failed');
      } finally {
        process.off('unhandledRejection', onUnhandled);
      }
    });

    it('a bus listener that throws synchronously does not keep events from the onEvent option', async () => {
      const d = await dirs();
      const logger = collector();
      const sink: TusEvent[] = [];
      const s = await start(
        [
          EventEmitterModule.forRoot(),
          TusModule.forRoot({ ...d, logger, onEvent: (e) => void sink.push(e) }),
        ],
        { perTest: true },
      );
      // A plain EventEmitter2 listener (not @OnEvent): its throw reaches the module's emit.
      s.app.get(EventEmitter2).on(TusEvents.Created, () => {
        throw new Error('plain listener boom');
      });
      const data = Buffer.from('two sinks');
      const { id } = await uploadAll(s, data);
      await waitFor(
        () => sink.some((e) => e.name === TusEvents.Completed),
        'completed via onEvent',
      );
      expect(await readFile(join(d.completedDir, id))).toEqual(data);
      expect(logger.errors.join('\n')).toContain('plain listener boom');
      expect(sink.filter((e) => e.uploadId === id).map((e) => e.name)).toContain(TusEvents.Created);
    });

    describe('failures (5xx) emit tus.upload.failed', () => {
      let s: Started;
      let recorder: EventRecorder;
      let store: FailingRecordStore;
      let logger: ReturnType<typeof collector>;

      beforeAll(async () => {
        store = new FailingRecordStore(() => false);
        logger = collector();
        s = await start(
          [
            EventEmitterModule.forRoot(),
            TusModule.forRoot({ ...(await dirs()), logger, recordStore: store }),
          ],
          { providers: [EventRecorder] },
        );
        recorder = s.app.get(EventRecorder);
      });
      afterAll(() => s.close());

      it('a creation whose record cannot be stored: 500 and a failed event without upload id', async () => {
        store.fails = () => true;
        try {
          const { res, location } = await create(s, 10);
          expect(res.status).toBe(500);
          expect(res.headers['tus-resumable']).toBe('1.0.0');
          expect(location).toBe('');
        } finally {
          store.fails = () => false;
        }
        const failed = await waitFor(
          () => recorder.events.find((e): e is UploadFailedEvent => e instanceof UploadFailedEvent),
          'failed event',
        );
        expect(failed.name).toBe(TusEvents.Failed);
        expect(failed.uploadId).toBeUndefined();
        expect(failed.status).toBe(500);
        expect((failed.error as Error).message).toBe('record store on fire');
        expect(logger.errors.join('\n')).toContain('record store on fire');
      });

      it('a PATCH whose new offset cannot be stored: 500 and a failed event with the upload id', async () => {
        const { res, id } = await create(s, 10);
        expect(res.status).toBe(201);
        store.fails = (record) => record.offset > 0;
        try {
          const patched = await patch(s, id, 0, Buffer.from('0123456789'));
          expect(patched.status).toBe(500);
          expect(patched.headers['tus-resumable']).toBe('1.0.0');
        } finally {
          store.fails = () => false;
        }
        const failed = await waitFor(
          () => recorder.of(id).find((e): e is UploadFailedEvent => e instanceof UploadFailedEvent),
          'failed event',
        );
        expect(failed.status).toBe(500);
        expect(recorder.of(id).some((e) => e.name === TusEvents.Completed)).toBe(false);
      });
    });
  });

  // ---------------------------------------------------------------------------------------------
  // e. onCreate through forRootAsync
  // ---------------------------------------------------------------------------------------------

  describe('onCreate built by forRootAsync from an injected provider', () => {
    let s: Started;
    let quota: QuotaService;
    let uploadDir: string;
    let completedDir: string;

    beforeAll(async () => {
      ({ uploadDir, completedDir } = await dirs());
      s = await start([
        TusModule.forRootAsync({
          imports: [QuotaModule],
          inject: [QuotaService],
          useFactory: (service: QuotaService) => ({
            uploadDir,
            completedDir,
            logger: collector(),
            onCreate: (headers, metadata) => service.check(headers, metadata),
          }),
        }),
      ]);
      quota = s.app.get(QuotaService);
    });
    afterAll(() => s.close());
    afterEach(() => {
      quota.mode = 'allow';
    });

    it('stores what onCreate returns as server_metadata in {uploadDir}/{id}.meta', async () => {
      const { res, id } = await create(s, 100, {
        Authorization: 'Bearer alice',
        'Upload-Metadata': `filename ${b64('report.pdf')},tenant ${b64('acme')}`,
      });
      expect(res.status).toBe(201);
      const file = await readFile(join(uploadDir, `${id}.meta`), 'utf8');
      const json = JSON.parse(decodeRecordFile(file)!.json);
      expect(json.server_metadata).toEqual({ owner: 'Bearer alice', tenant: 'acme' });
      expect(json.metadata).toEqual({ filename: 'report.pdf', tenant: 'acme' });
    });

    it('onCreate receives lower-cased headers and decoded metadata', async () => {
      const calls = quota.calls.length;
      const { res } = await create(s, 7, {
        Authorization: 'Bearer bob',
        'X-Request-ID': 'Req-42',
        'Upload-Metadata': `title ${b64('naïve café')},empty,tenant ${b64('t1')}`,
      });
      expect(res.status).toBe(201);
      expect(quota.calls).toHaveLength(calls + 1);
      const { headers, metadata } = quota.calls[calls];
      expect(headers.authorization).toBe('Bearer bob');
      expect(headers['x-request-id']).toBe('Req-42');
      expect(headers['tus-resumable']).toBe('1.0.0');
      expect(headers['upload-length']).toBe('7');
      for (const name of Object.keys(headers)) expect(name).toBe(name.toLowerCase());
      expect(metadata).toEqual({ title: 'naïve café', empty: '', tenant: 't1' });
    });

    it('server_metadata follows the upload into completedDir', async () => {
      const { res, id } = await create(s, 0, { Authorization: 'Bearer carol' });
      expect(res.status).toBe(201);
      const meta = join(completedDir, `${id}.meta`);
      await waitFor(() => exists(meta), 'completed record');
      const json = JSON.parse(await readFile(meta, 'utf8'));
      expect(json.server_metadata).toEqual({ owner: 'Bearer carol', tenant: 'none' });
    });

    it('an HttpException refuses the creation with its status: 403, Tus-Resumable, nothing stored', async () => {
      const before = await listing(uploadDir);
      quota.mode = 'forbid';
      const { res, location } = await create(s, 10, { Authorization: 'Bearer mallory' });
      expect(res.status).toBe(403);
      expect(res.headers['tus-resumable']).toBe('1.0.0');
      expect(res.body).toContain('quota');
      expect(location).toBe('');
      expect(await listing(uploadDir)).toEqual(before);
    });

    it('a plain Error is a 500 and nothing is stored', async () => {
      const before = await listing(uploadDir);
      quota.mode = 'crash';
      const { res, location } = await create(s, 10);
      expect(res.status).toBe(500);
      expect(res.headers['tus-resumable']).toBe('1.0.0');
      expect(res.body).not.toContain('quota database unreachable');
      expect(location).toBe('');
      expect(await listing(uploadDir)).toEqual(before);
    });
  });

  // ---------------------------------------------------------------------------------------------
  // f. options validation
  // ---------------------------------------------------------------------------------------------

  describe('options are validated when the application is created', () => {
    async function createApp(module: DynamicModule): Promise<void> {
      const moduleRef = await Test.createTestingModule({ imports: [module] }).compile();
      const app = await createPlatformApp(moduleRef, { logger: false });
      try {
        await app.init();
      } finally {
        await app.close();
      }
    }

    it.each<[string, (d: { uploadDir: string; completedDir: string }) => TusModuleOptions, RegExp]>(
      [
        ['maxSize: -1', (d) => ({ ...d, maxSize: -1 }), /maxSize/],
        ['maxSize: 1.5', (d) => ({ ...d, maxSize: 1.5 }), /maxSize/],
        [
          "trustedProxies: ['nonsense']",
          (d) => ({ ...d, trustedProxies: ['nonsense'] }),
          /trustedProxies.*nonsense/,
        ],
        [
          'trustedProxies: not an array',
          (d) => ({ ...d, trustedProxies: '127.0.0.1' as unknown as string[] }),
          /trustedProxies/,
        ],
        ['missing uploadDir', (d) => ({ completedDir: d.completedDir }), /uploadDir/],
        ['empty completedDir', (d) => ({ ...d, completedDir: '' }), /completedDir/],
        [
          'queuePollIntervalMs: 1',
          (d) => ({ ...d, queuePollIntervalMs: 1 }),
          /queuePollIntervalMs/,
        ],
        [
          "cors credentials with '*'",
          (d) => ({ ...d, cors: { origins: '*', credentials: true } }),
          /cors/,
        ],
        // A string is not a list: String#includes would allow any origin that is a substring of it.
        [
          'cors origins as a single string',
          (d) => ({ ...d, cors: { origins: 'https://app.example.com' as unknown as string[] } }),
          /cors/,
        ],
        // setInterval(…, 0) would run the janitor's directory sweeps back to back.
        [
          'janitor intervalMs: 0',
          (d) => ({ ...d, janitor: { intervalMs: 0 } }),
          /janitor|intervalMs/,
        ],
        [
          'janitor staleUploadAge: -1',
          (d) => ({ ...d, janitor: { staleUploadAge: -1 } }),
          /janitor|staleUploadAge/,
        ],
      ],
    )('forRoot with %s rejects, naming the option', async (_name, build, message) => {
      const d = await dirs();
      const failure = createApp(TusModule.forRoot({ logger: collector(), ...build(d) }));
      await expect(failure).rejects.toThrow(Error);
      await expect(failure).rejects.toThrow(message);
      // Nothing was created on disk for a refused configuration.
      expect(await exists(d.uploadDir)).toBe(false);
    });

    it('names every bad option in one error', async () => {
      const d = await dirs();
      await expect(
        createApp(
          TusModule.forRoot({
            ...d,
            maxSize: -1,
            lockWaitMs: -5,
            fsync: 'yes' as unknown as boolean,
          }),
        ),
      ).rejects.toThrow(/(?=.*maxSize)(?=.*lockWaitMs)(?=.*fsync)/s);
    });

    it('forRootAsync validates the factory result too', async () => {
      const d = await dirs();
      await expect(
        createApp(TusModule.forRootAsync({ useFactory: () => ({ ...d, maxSize: -1 }) })),
      ).rejects.toThrow(/maxSize/);
    });

    it.each<[string, (d: { uploadDir: string; completedDir: string }) => DynamicModule]>([
      [
        'guards',
        // @ts-expect-error -- the types refuse it too: it belongs beside useFactory.
        (d) => TusModule.forRootAsync({ useFactory: () => ({ ...d, guards: [BearerGuard] }) }),
      ],
      [
        'path',
        // @ts-expect-error -- the types refuse it too: it belongs beside useFactory.
        (d) => TusModule.forRootAsync({ useFactory: () => ({ ...d, path: 'uploads' }) }),
      ],
      [
        'isGlobal',
        // @ts-expect-error -- the types refuse it too: it belongs beside useFactory.
        (d) => TusModule.forRootAsync({ useFactory: () => ({ ...d, isGlobal: true }) }),
      ],
    ])(
      'a factory result carrying %s stops the start-up, saying where it belongs',
      async (key, build) => {
        const d = await dirs();
        const failure = createApp(build(d));
        await expect(failure).rejects.toThrow(
          `\`${key}\` must be given beside useFactory, as TusModule.forRootAsync({ ${key}, useFactory })`,
        );
        expect(await exists(d.uploadDir)).toBe(false);
      },
    );

    it('the same guard beside useFactory guards the routes', async () => {
      const d = await dirs();
      const s = await start(
        [TusModule.forRootAsync({ guards: [BearerGuard], useFactory: () => ({ ...d }) })],
        { perTest: true },
      );
      expect((await create(s, 5)).res.status).toBe(401);
    });

    it('an unknown option stops the start-up with one line naming it', async () => {
      const d = await dirs();
      const options = { ...d, maxsize: 10 } as unknown as TusModuleOptions;
      const failure = createApp(TusModule.forRootAsync({ useFactory: () => options }));
      await expect(failure).rejects.toThrow(
        /^Invalid TusModule options: unknown option `maxsize`$/,
      );
    });
  });

  // ---------------------------------------------------------------------------------------------
  // g. janitor scheduling
  // ---------------------------------------------------------------------------------------------

  describe('janitor', () => {
    async function init(imports: DynamicModule[]): Promise<INestApplication> {
      const moduleRef = await Test.createTestingModule({ imports }).compile();
      const app = await createPlatformApp(moduleRef, { logger: false });
      await app.init();
      return app;
    }

    it("is scheduled in SchedulerRegistry as 'tus-janitor' when ScheduleModule is imported", async () => {
      expect(TUS_JANITOR_INTERVAL).toBe('tus-janitor');
      const app = await init([
        ScheduleModule.forRoot(),
        await tus({ janitor: { intervalMs: 60_000 } }),
      ]);
      try {
        const registry = app.get(SchedulerRegistry);
        expect(registry.doesExist('interval', 'tus-janitor')).toBe(true);
        expect(registry.getInterval('tus-janitor')).toBeDefined();
        expect(registry.getIntervals()).toContain('tus-janitor');
      } finally {
        await app.close();
      }
    });

    it("janitor.cron: a cron job of @nestjs/schedule ('tus-janitor') that runs the janitor, stopped at close", async () => {
      const app = await init([
        ScheduleModule.forRoot(),
        await tus({ janitor: { cron: '* * * * * *', intervalMs: 3_600_000 } }),
      ]);
      const registry = app.get(SchedulerRegistry);
      try {
        expect(registry.doesExist('cron', 'tus-janitor')).toBe(true);
        expect(registry.doesExist('interval', 'tus-janitor')).toBe(false);
        const job = registry.getCronJob('tus-janitor');
        expect(job.isActive).toBe(true);
        // Every second: the janitor's runs show in its metrics within a few.
        const metrics = app.get(TusMetrics);
        const runs = async () =>
          Number(/^tus_janitor_runs_total (\d+)$/m.exec(await metrics.text())?.[1] ?? 0);
        const deadline = Date.now() + 5000;
        while ((await runs()) < 2 && Date.now() < deadline) {
          await new Promise((r) => setTimeout(r, 100));
        }
        expect(await runs()).toBeGreaterThanOrEqual(2);
      } finally {
        const job = registry.getCronJob('tus-janitor');
        await app.close();
        expect(job.isActive).toBe(false);
      }
    });

    it('janitor.cron refuses what is no cron expression, at start', async () => {
      await expect(tus({ janitor: { cron: 'every hour' } }).then((m) => init([m]))).rejects.toThrow(
        /janitor: cron must be a cron expression/,
      );
    });

    it('janitor: false schedules nothing', async () => {
      const app = await init([ScheduleModule.forRoot(), await tus({ janitor: false })]);
      try {
        const registry = app.get(SchedulerRegistry);
        expect(registry.doesExist('interval', 'tus-janitor')).toBe(false);
        expect(registry.getIntervals()).not.toContain('tus-janitor');
      } finally {
        await app.close();
      }
    });

    it('starts and stops without ScheduleModule', async () => {
      const app = await init([await tus()]);
      await app.close();
    });

    it('Janitor is injectable and run() returns a summary', async () => {
      const s = await start([await tus({ janitor: { staleUploadAge: 0 } })], { perTest: true });
      const janitor = s.app.get(Janitor);
      expect(janitor).toBeInstanceOf(Janitor);
      expect(janitor.staleUploadAge).toBe(0);

      const { id } = await create(s, 10);
      const summary: JanitorSummary = await janitor.run();
      expect(summary).toEqual({
        finalized: expect.any(Number),
        stale: expect.any(Number),
        orphanedRecords: expect.any(Number),
        orphanedData: expect.any(Number),
        expiredCompleted: expect.any(Number),
        tempFiles: expect.any(Number),
        lapsedPromises: expect.any(Number),
      });
      // With staleUploadAge 0 the untouched upload is stale.
      expect(summary.stale).toBe(1);
      const head = await s.req('HEAD', `/files/${id}`, { ...TUS });
      expect(head.status).toBe(404);
    });
  });

  // ---------------------------------------------------------------------------------------------
  // h. HTTP server timeouts
  // ---------------------------------------------------------------------------------------------

  describe('HTTP server timeouts', () => {
    async function serverAfterInit(options: Partial<TusModuleOptions>): Promise<{
      server: Server;
      close: () => Promise<void>;
    }> {
      const moduleRef = await Test.createTestingModule({ imports: [await tus(options)] }).compile();
      const app = await createPlatformApp(moduleRef, { logger: false });
      await app.init();
      return { server: app.getHttpServer() as Server, close: () => app.close() };
    }

    it('requestTimeout is 0 and headersTimeout the default 60 s after init', async () => {
      const { server, close } = await serverAfterInit({});
      try {
        expect(server.requestTimeout).toBe(0);
        expect(server.headersTimeout).toBe(60_000);
      } finally {
        await close();
      }
    });

    it('headersTimeoutMs sets headersTimeout', async () => {
      const { server, close } = await serverAfterInit({ headersTimeoutMs: 5_000 });
      try {
        expect(server.requestTimeout).toBe(0);
        expect(server.headersTimeout).toBe(5_000);
      } finally {
        await close();
      }
    });

    it('configureHttpServer: false leaves the platform’s defaults', async () => {
      const plain = http.createServer();
      const { server, close } = await serverAfterInit({ configureHttpServer: false });
      try {
        // Node's own under Express; Fastify sets no request timeout of its own (0).
        expect(server.requestTimeout).toBe(platform === 'fastify' ? 0 : plain.requestTimeout);
        expect(server.headersTimeout).toBe(plain.headersTimeout);
      } finally {
        await close();
      }
    });

    it('a listening app keeps requestTimeout 0', async () => {
      const s = await start([await tus()], { perTest: true });
      expect(s.server.requestTimeout).toBe(0);
    });
  });
});

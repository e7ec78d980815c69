import { afterAll, beforeAll, describe, expect, it } from '@jest/globals';
import {
  Controller,
  ForbiddenException,
  Inject,
  Injectable,
  Module,
  UnauthorizedException,
  UseGuards,
  type CanActivate,
  type ExecutionContext,
} from '@nestjs/common';
import { createHash } from 'node:crypto';
import { readdir, readFile } from 'node:fs/promises';
import { join } from 'node:path';
import type { IncomingMessage } from 'node:http';
import {
  CompletedUploadQueue,
  TusController,
  TusEvents,
  TusHandler,
  TusModule,
  type TusEvent,
} from '../../src/index.js';
import { OCTETS, TUS, createTestApp, startApp, tempDirs, type TestApp } from '../support/app.js';
import { forEachPlatform } from '../support/app.js';

const TOKEN = 's3cret';

/** The kind of guard an application writes: a bearer token, nothing else. */
@Injectable()
class TokenGuard implements CanActivate {
  canActivate(context: ExecutionContext): boolean {
    const req = context.switchToHttp().getRequest<IncomingMessage>();
    if (req.headers.authorization === `Bearer ${TOKEN}`) return true;
    throw new UnauthorizedException('bearer token required');
  }
}

/** Everything below a directory, name → sha256 of the content. */
async function snapshot(...dirs: string[]): Promise<Record<string, string>> {
  const out: Record<string, string> = {};
  for (const dir of dirs) {
    const walk = async (d: string): Promise<void> => {
      for (const entry of await readdir(d, { withFileTypes: true }).catch(() => [])) {
        const path = join(d, entry.name);
        // The space ledger is the server's own state, not an upload.
        if (entry.name === '.tussi-space') continue;
        if (entry.isDirectory()) await walk(path);
        else
          out[path] = createHash('sha256')
            .update(await readFile(path))
            .digest('hex');
      }
    };
    await walk(dir);
  }
  return out;
}

forEachPlatform(() => {
  describe('X-HTTP-Method-Override cannot get past the guards', () => {
    let s: TestApp;
    let victim: string;
    const auth = { Authorization: `Bearer ${TOKEN}` };

    beforeAll(async () => {
      s = await createTestApp({ guards: [TokenGuard] });
      const created = await s.request({
        method: 'POST',
        path: '/files',
        headers: { ...TUS, ...auth, 'Upload-Length': '10' },
      });
      expect(created.status).toBe(201);
      victim = String(created.headers.location).split('/').pop()!;
      const written = await s.request({
        method: 'PATCH',
        path: `/files/${victim}`,
        headers: { ...TUS, ...auth, 'Content-Type': OCTETS, 'Upload-Offset': '0' },
        body: Buffer.from('hello'),
      });
      expect(written.status).toBe(204);
    });
    afterAll(() => s.close());

    const overrides = ['POST', 'PATCH', 'HEAD', 'DELETE', 'post', 'patch', 'head', 'delete'];
    const carriers = ['OPTIONS', 'GET', 'POST'];
    const cases = carriers.flatMap((method) =>
      overrides.flatMap((override) => [
        { method, override, target: 'collection' as const },
        { method, override, target: 'upload' as const },
      ]),
    );

    it.each(cases)(
      '$method with override $override on the $target URL, no token: 401 or discovery, nothing changed',
      async ({ method, override, target }) => {
        const before = await snapshot(s.uploadDir, s.completedDir);
        const res = await s.request({
          method,
          path: target === 'collection' ? '/files' : `/files/${victim}`,
          headers: {
            ...TUS,
            'X-HTTP-Method-Override': override,
            'Upload-Length': '5',
            'Upload-Offset': '5',
            'Content-Type': OCTETS,
          },
          body: Buffer.from('EVIL!'),
        });
        if (method === 'OPTIONS') {
          expect(res.status).toBe(204);
          expect(res.headers['tus-version']).toBe('1.0.0');
          expect(res.headers.location).toBeUndefined();
        } else {
          expect(res.status).toBe(401);
          expect(res.headers['tus-resumable']).toBe('1.0.0');
        }
        expect(await snapshot(s.uploadDir, s.completedDir)).toEqual(before);
      },
    );

    it("the token holder's upload is unchanged byte for byte", async () => {
      const head = await s.request({
        method: 'HEAD',
        path: `/files/${victim}`,
        headers: { ...TUS, ...auth },
      });
      expect(head.status).toBe(200);
      expect(head.headers['upload-offset']).toBe('5');
      expect((await readFile(join(s.uploadDir, victim))).subarray(0, 5).toString()).toBe('hello');
    });

    it('a POST overridden with a token is served as the overridden method', async () => {
      const res = await s.request({
        method: 'POST',
        path: `/files/${victim}`,
        headers: { ...TUS, ...auth, 'X-HTTP-Method-Override': 'HEAD' },
      });
      expect(res.status).toBe(200);
      expect(res.headers['upload-offset']).toBe('5');
    });

    it('deeper paths and malformed percent-encodings are guarded too', async () => {
      for (const path of ['/files/a/b', `/files/${victim}/x`, '/files/%E0%A4%A']) {
        const res = await s.request({ method: 'PATCH', path, headers: { ...TUS } });
        expect(res.status).toBe(401);
        expect(res.headers['tus-resumable']).toBe('1.0.0');
      }
      const malformed = await s.request({
        method: 'HEAD',
        path: '/files/%E0%A4%A',
        headers: { ...TUS, ...auth },
      });
      expect(malformed.status).toBe(400);
      expect(malformed.headers['tus-resumable']).toBe('1.0.0');
      const body = await s.request({
        method: 'GET',
        path: '/files/%zz',
        headers: { ...TUS, ...auth },
      });
      expect(body.status).toBe(400);
      expect(body.body.toString()).toMatch(/^ERR_INVALID_PATH/);
    });

    it('finds the TUS paths behind a global prefix', async () => {
      const prefixed = await createTestApp({ guards: [TokenGuard], globalPrefix: 'api/v1' });
      try {
        const refused = await prefixed.request({ method: 'GET', path: '/api/v1/files/%E0%A4%A' });
        expect(refused.status).toBe(401);
        const res = await prefixed.request({
          method: 'GET',
          path: '/api/v1/files/%E0%A4%A',
          headers: { ...TUS, ...auth },
        });
        expect(res.status).toBe(400);
        expect(res.headers['tus-resumable']).toBe('1.0.0');
      } finally {
        await prefixed.close();
      }
    });

    it('every response says nosniff and nothing about the framework', async () => {
      for (const method of ['OPTIONS', 'POST', 'HEAD']) {
        const res = await s.request({ method, path: '/files', headers: { ...TUS } });
        expect(res.headers['x-content-type-options']).toBe('nosniff');
        expect(res.headers['x-powered-by']).toBeUndefined();
      }
    });
  });

  /** A guard that lets a token create uploads and read them, never delete them. */
  @Injectable()
  class NoDeleteGuard implements CanActivate {
    canActivate(context: ExecutionContext): boolean {
      const req = context.switchToHttp().getRequest<IncomingMessage>();
      if (req.method === 'DELETE') throw new ForbiddenException('no deletion with this token');
      return true;
    }
  }

  describe('guards see the effective method', () => {
    let s: TestApp;
    beforeAll(async () => {
      s = await createTestApp({ guards: [NoDeleteGuard] });
    });
    afterAll(() => s.close());

    it('a POST overridden to DELETE meets the guard as a DELETE', async () => {
      const created = await s.request({
        method: 'POST',
        path: '/files',
        headers: { ...TUS, 'Upload-Length': '3' },
      });
      expect(created.status).toBe(201);
      const path = `/files/${String(created.headers.location).split('/').pop()}`;
      const res = await s.request({
        method: 'POST',
        path,
        headers: { ...TUS, 'X-HTTP-Method-Override': 'DELETE' },
      });
      expect(res.status).toBe(403);
      const head = await s.request({ method: 'HEAD', path, headers: { ...TUS } });
      expect(head.status).toBe(200);
    });
  });

  @Controller('uploads')
  @UseGuards(TokenGuard)
  class UploadsController extends TusController {}

  @Module({ controllers: [UploadsController], providers: [TokenGuard] })
  class UploadsModule {}

  describe("a user's TusController subclass with a class-level guard", () => {
    let s: TestApp;
    beforeAll(async () => {
      const dirs = await tempDirs();
      const tus = TusModule.forRoot({
        uploadDir: dirs.uploadDir,
        completedDir: dirs.completedDir,
        cors: { origins: ['https://app.example'] },
        isGlobal: true,
      });
      s = await startApp([tus, UploadsModule], { ...dirs, removeOnClose: dirs.root });
    });
    afterAll(() => s.close());

    it('replaces the default routes: nothing is served at /files', async () => {
      const res = await s.request({
        method: 'POST',
        path: '/files',
        headers: { ...TUS, 'Upload-Length': '5' },
      });
      expect(res.status).toBe(404);
      expect(await snapshot(s.uploadDir)).toEqual({});
    });

    it('guards its upload routes', async () => {
      const refused = await s.request({
        method: 'POST',
        path: '/uploads',
        headers: { ...TUS, 'Upload-Length': '5' },
      });
      expect(refused.status).toBe(401);
      const created = await s.request({
        method: 'POST',
        path: '/uploads',
        headers: { ...TUS, 'Upload-Length': '5', Authorization: `Bearer ${TOKEN}` },
      });
      expect(created.status).toBe(201);
      expect(created.headers.location).toMatch(/\/uploads\/[0-9a-f-]{36}$/);
    });

    it('never guards discovery or a CORS preflight', async () => {
      const preflight = await s.request({
        method: 'OPTIONS',
        path: '/uploads',
        headers: {
          Origin: 'https://app.example',
          'Access-Control-Request-Method': 'POST',
          'Access-Control-Request-Headers': 'authorization, tus-resumable, upload-length',
        },
      });
      expect(preflight.status).toBe(204);
      expect(preflight.headers['access-control-allow-origin']).toBe('https://app.example');
      expect(preflight.headers['tus-version']).toBe('1.0.0');
      const discovery = await s.request({ method: 'OPTIONS', path: '/uploads/anything' });
      expect(discovery.status).toBe(204);
      expect(discovery.headers['tus-extension']).toContain('creation');
    });
  });

  /** Each token is its own principal, as a real guard (or Passport) establishes it. */
  @Injectable()
  class PrincipalGuard implements CanActivate {
    canActivate(context: ExecutionContext): boolean {
      const req = context.switchToHttp().getRequest<IncomingMessage & { user?: unknown }>();
      const match = /^Bearer (alice|bob)$/i.exec(req.headers.authorization ?? '');
      if (!match) throw new UnauthorizedException('bearer token required');
      req.user = { id: match[1].toLowerCase() };
      return true;
    }
  }

  describe('ownership: no principal reaches another one’s upload', () => {
    let s: TestApp;
    const events: TusEvent[] = [];
    const alice = { ...TUS, Authorization: 'Bearer alice' };
    const bob = { ...TUS, Authorization: 'Bearer bob' };

    beforeAll(async () => {
      s = await createTestApp({
        guards: [PrincipalGuard],
        ownership: true,
        onCreate: (_headers, _metadata, { owner }) => ({ uploaded_by: owner ?? 'anonymous' }),
        onEvent: (event) => void events.push(event),
      });
    });
    afterAll(() => s.close());

    async function create(headers: Record<string, string>, extra: Record<string, string> = {}) {
      const res = await s.request({
        method: 'POST',
        path: '/files',
        headers: { ...headers, 'Upload-Length': '5', ...extra },
      });
      expect(res.status).toBe(201);
      return String(res.headers.location).split('/').pop()!;
    }

    function patch(headers: Record<string, string>, id: string, offset: number, body: string) {
      return s.request({
        method: 'PATCH',
        path: `/files/${id}`,
        headers: { ...headers, 'Content-Type': OCTETS, 'Upload-Offset': String(offset) },
        body: Buffer.from(body),
      });
    }

    it('HEAD, PATCH and DELETE by another principal are 404; the owner’s upload is unchanged', async () => {
      const id = await create(alice);
      expect((await patch(alice, id, 0, 'ab')).status).toBe(204);
      const before = await snapshot(s.uploadDir);
      const head = await s.request({ method: 'HEAD', path: `/files/${id}`, headers: bob });
      expect(head.status).toBe(404);
      expect((await patch(bob, id, 2, 'EVIL')).status).toBe(404);
      expect((await patch(bob, id, 2, 'XYZ')).status).toBe(404);
      const del = await s.request({ method: 'DELETE', path: `/files/${id}`, headers: bob });
      expect(del.status).toBe(404);
      const overridden = await s.request({
        method: 'POST',
        path: `/files/${id}`,
        headers: { ...bob, 'X-HTTP-Method-Override': 'DELETE' },
      });
      expect(overridden.status).toBe(404);
      expect(await snapshot(s.uploadDir)).toEqual(before);
      const own = await s.request({ method: 'HEAD', path: `/files/${id}`, headers: alice });
      expect(own.status).toBe(200);
      expect(own.headers['upload-offset']).toBe('2');
    });

    it('a finished upload stays the owner’s: HEAD and DELETE by another principal are 404', async () => {
      const id = await create(alice);
      expect((await patch(alice, id, 0, 'hello')).status).toBe(204);
      const byBob = await s.request({ method: 'HEAD', path: `/files/${id}`, headers: bob });
      expect(byBob.status).toBe(404);
      const del = await s.request({ method: 'DELETE', path: `/files/${id}`, headers: bob });
      expect(del.status).toBe(404);
      const byAlice = await s.request({ method: 'HEAD', path: `/files/${id}`, headers: alice });
      expect(byAlice.status).toBe(200);
      expect(byAlice.headers['upload-offset']).toBe('5');
      // The completed queue carries the owner with the record.
      const queue = s.app.get(CompletedUploadQueue);
      const upload = await queue.waitForFile({ timeout: 5000 });
      try {
        expect(upload.name).toBe(id);
        expect(upload.record.owner).toBe('alice');
        expect(upload.record.serverMetadata.uploaded_by).toBe('alice');
      } finally {
        await upload.release();
      }
    });

    it('naming another principal’s partial in a final is 404', async () => {
      const part = await create(alice, { 'Upload-Concat': 'partial' });
      expect((await patch(alice, part, 0, 'hello')).status).toBe(204);
      const res = await s.request({
        method: 'POST',
        path: '/files',
        headers: { ...bob, 'Upload-Concat': `final;/files/${part}` },
      });
      expect(res.status).toBe(404);
      expect(res.headers.location).toBeUndefined();
      const own = await s.request({
        method: 'POST',
        path: '/files',
        headers: { ...alice, 'Upload-Concat': `final;/files/${part}` },
      });
      expect(own.status).toBe(201);
    });

    it('lifecycle events carry the owner', async () => {
      const id = await create(bob);
      expect((await patch(bob, id, 0, 'bytes')).status).toBe(204);
      await s.app.get(TusHandler).settled();
      const mine = events.filter((e) => e.uploadId === id);
      expect(mine.map((e) => e.name)).toEqual(
        expect.arrayContaining([TusEvents.Created, TusEvents.Completed]),
      );
      for (const event of mine) expect((event as { owner?: string | null }).owner).toBe('bob');
    });
  });

  /** An application's own provider, which its guard injects. */
  @Injectable()
  class TokenDirectory {
    principalOf(token: string | undefined): string | undefined {
      return token === 'Bearer k1' ? 'carol' : undefined;
    }
  }

  @Module({ providers: [TokenDirectory], exports: [TokenDirectory] })
  class AuthModule {}

  @Injectable()
  class DirectoryGuard implements CanActivate {
    constructor(@Inject(TokenDirectory) private readonly directory: TokenDirectory) {}

    canActivate(context: ExecutionContext): boolean {
      const req = context.switchToHttp().getRequest<IncomingMessage & { user?: unknown }>();
      const principal = this.directory.principalOf(req.headers.authorization);
      if (!principal) throw new UnauthorizedException();
      req.user = principal;
      return true;
    }
  }

  describe("guards that inject the application's providers", () => {
    it('resolve them from the modules given in imports', async () => {
      const dirs = await tempDirs();
      const tus = TusModule.forRootAsync({
        imports: [AuthModule],
        guards: [DirectoryGuard],
        useFactory: () => ({ ...{ uploadDir: dirs.uploadDir, completedDir: dirs.completedDir } }),
      });
      const s = await startApp([tus], { ...dirs, removeOnClose: dirs.root });
      try {
        const post = (auth?: string) =>
          s.request({
            method: 'POST',
            path: '/files',
            headers: { ...TUS, 'Upload-Length': '1', ...(auth ? { Authorization: auth } : {}) },
          });
        expect((await post()).status).toBe(401);
        expect((await post('Bearer k1')).status).toBe(201);
      } finally {
        await s.close();
      }
    });
  });
});

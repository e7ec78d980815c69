import { afterAll, beforeAll, describe, expect, it } from '@jest/globals';
import { Body, Controller, Module, Post } from '@nestjs/common';
import { FastifyAdapter, type NestFastifyApplication } from '@nestjs/platform-fastify';
import { Test } from '@nestjs/testing';
import { randomBytes } from 'node:crypto';
import { readFile, rm } from 'node:fs/promises';
import type { AddressInfo } from 'node:net';
import { join } from 'node:path';
import { TusModule } from '../../src/index.js';
import { OCTETS, TUS, tempDirs } from '../support/app.js';
import { rawSocketRequest, request, sha256, type RawRequestOptions } from '../support/http.js';

/**
 * What only Fastify needs (the suites of the protocol run on both platforms): the module's body
 * parsers stay below its paths and leave the application's own routes as Fastify serves them,
 * and the settings an application gives Fastify do not break the module.
 */
@Controller('app')
class AppController {
  @Post('echo')
  echo(@Body() body: unknown): unknown {
    return { got: body };
  }

  @Post('raw')
  raw(): string {
    return 'reached';
  }
}

interface Started {
  app: NestFastifyApplication;
  port: number;
  send(options: RawRequestOptions): ReturnType<typeof request>;
  close(): Promise<void>;
  warnings: string[];
}

async function start(
  adapterOptions: { ignoreTrailingSlash?: boolean } = {},
  prepare: (adapter: FastifyAdapter) => void = () => {},
): Promise<Started & { completedDir: string }> {
  const dirs = await tempDirs('tussi-fastify-');
  @Module({
    imports: [
      TusModule.forRoot({
        uploadDir: dirs.uploadDir,
        completedDir: dirs.completedDir,
        logger: { error: () => {}, warn: () => {} },
      }),
    ],
    controllers: [AppController],
  })
  class AppModule {}
  const warnings: string[] = [];
  const moduleRef = await Test.createTestingModule({ imports: [AppModule] }).compile();
  const adapter = new FastifyAdapter(adapterOptions);
  prepare(adapter);
  const app = moduleRef.createNestApplication<NestFastifyApplication>(adapter, {
    logger: ['error', 'warn'],
  });
  app.useLogger({
    log: () => {},
    error: () => {},
    warn: (message: unknown) => void warnings.push(String(message)),
  });
  await app.listen(0, '127.0.0.1');
  const { port } = app.getHttpServer().address() as AddressInfo;
  return {
    app,
    port,
    warnings,
    completedDir: dirs.completedDir,
    send: (options) => request(`http://127.0.0.1:${port}`, options),
    close: async () => {
      app.getHttpServer().closeAllConnections();
      await app.close();
      await rm(dirs.root, { recursive: true, force: true });
    },
  };
}

describe('TusModule under Fastify', () => {
  let s: Awaited<ReturnType<typeof start>>;

  beforeAll(async () => {
    s = await start();
  });
  afterAll(async () => {
    await s?.close();
  });

  it('streams a body past Fastify’s 1 MiB body limit, in one PATCH and in a creation', async () => {
    const data = randomBytes(3 * 1024 * 1024 + 5);
    const created = await s.send({
      method: 'POST',
      path: '/files',
      headers: { ...TUS, 'Upload-Length': String(data.length) },
    });
    expect(created.status).toBe(201);
    const id = String(created.headers.location).split('/').pop()!;
    const patched = await s.send({
      method: 'PATCH',
      path: `/files/${id}`,
      headers: { ...TUS, 'Content-Type': OCTETS, 'Upload-Offset': '0' },
      body: data,
    });
    expect(patched.status).toBe(204);
    expect(patched.headers['upload-offset']).toBe(String(data.length));

    const direct = await s.send({
      method: 'POST',
      path: '/files/',
      headers: { ...TUS, 'Upload-Length': String(data.length), 'Content-Type': OCTETS },
      body: data,
    });
    expect(direct.status).toBe(201);
    expect(direct.headers['upload-offset']).toBe(String(data.length));
    const directId = String(direct.headers.location).split('/').pop()!;
    const stored = join(s.completedDir, directId);
    for (let i = 0; i < 50; i++) {
      try {
        expect(sha256(await readFile(stored))).toBe(sha256(data));
        return;
      } catch {
        await new Promise((r) => setTimeout(r, 100));
      }
    }
    throw new Error(`${stored} never held the bytes`);
  });

  it('a PATCH of another type is the protocol’s 415 (Tus-Resumable), whatever Fastify parses', async () => {
    const created = await s.send({
      method: 'POST',
      path: '/files',
      headers: { ...TUS, 'Upload-Length': '10' },
    });
    const id = String(created.headers.location).split('/').pop()!;
    for (const type of ['application/octet-stream', 'text/plain', 'application/json', 'x/y']) {
      const res = await s.send({
        method: 'PATCH',
        path: `/files/${id}`,
        headers: { ...TUS, 'Content-Type': type, 'Upload-Offset': '0' },
        body: Buffer.from('{"a":1}'),
      });
      expect({ type, status: res.status, tus: res.headers['tus-resumable'] }).toEqual({
        type,
        status: 415,
        tus: '1.0.0',
      });
    }
    const untouched = await s.send({ method: 'HEAD', path: `/files/${id}`, headers: TUS });
    expect(untouched.headers['upload-offset']).toBe('0');
  });

  it('leaves the application’s own routes as Fastify serves them', async () => {
    const json = await s.send({
      method: 'POST',
      path: '/app/echo',
      headers: { 'Content-Type': 'application/json' },
      body: Buffer.from('{"a":1}'),
    });
    expect(json.status).toBe(201);
    expect(JSON.parse(json.body.toString())).toEqual({ got: { a: 1 } });
    // A type nobody parses is still refused outside the TUS paths (never a 500)...
    const unparsed = await s.send({
      method: 'POST',
      path: '/app/raw',
      headers: { 'Content-Type': 'application/octet-stream' },
      body: Buffer.from('x'),
    });
    expect(unparsed.status).toBe(415);
    expect(unparsed.headers['tus-resumable']).toBeUndefined();
    // ...and a path no route has is still a 404, whatever its body.
    const missing = await s.send({ method: 'PATCH', path: '/nowhere', body: Buffer.from('x') });
    expect(missing.status).toBe(404);
    const asterisk = await rawSocketRequest(
      s.port,
      'PATCH * HTTP/1.1\r\nHost: x\r\nContent-Length: 1',
    );
    expect(asterisk.status).toBe(404);
  });
});

describe('TusModule under Fastify with the application’s own settings', () => {
  it('ignoreTrailingSlash: the creation URL with a slash still creates', async () => {
    const s = await start({ ignoreTrailingSlash: true });
    try {
      for (const path of ['/files', '/files/']) {
        const res = await s.send({
          method: 'POST',
          path,
          headers: { ...TUS, 'Upload-Length': '1' },
        });
        expect({ path, status: res.status }).toEqual({ path, status: 201 });
      }
    } finally {
      await s.close();
    }
  });

  it('an application catch-all parser is kept, and the module says what it means', async () => {
    const s = await start({}, (adapter) =>
      adapter.getInstance().addContentTypeParser('*', (_req, payload, done) => {
        payload.resume();
        payload.on('end', () => done(null, 'mine'));
      }),
    );
    try {
      expect(s.warnings.join('\n')).toMatch(/catch-all content-type parser/);
      const created = await s.send({
        method: 'POST',
        path: '/files',
        headers: { ...TUS, 'Upload-Length': '3', 'Content-Type': OCTETS },
        body: Buffer.from('abc'),
      });
      // The upload bytes themselves never go through the application's parser.
      expect(created.status).toBe(201);
      expect(created.headers['upload-offset']).toBe('3');
    } finally {
      await s.close();
    }
  });
});

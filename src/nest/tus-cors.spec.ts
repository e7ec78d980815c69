import { describe, expect, it } from '@jest/globals';
import { IncomingMessage, ServerResponse, type IncomingHttpHeaders } from 'node:http';
import { Socket } from 'node:net';
import { applyCors, type TusCorsOptions } from './tus-cors.js';

/** A real (unconnected) request/response pair, as node:http hands them to a handler. */
function exchange(
  method: string,
  headers: IncomingHttpHeaders,
): { req: IncomingMessage; res: ServerResponse } {
  const req = new IncomingMessage(new Socket());
  req.method = method;
  req.headers = headers;
  return { req, res: new ServerResponse(req) };
}

function list(value: number | string | string[] | undefined): string[] {
  return (Array.isArray(value) ? value.join(',') : String(value ?? ''))
    .split(',')
    .map((s) => s.trim())
    .filter(Boolean);
}

const APP = 'http://app.example';
const allowed: TusCorsOptions = { origins: [APP, 'https://other.example'] };
const PREFLIGHT = {
  origin: APP,
  'access-control-request-method': 'POST',
  'access-control-request-headers': 'authorization,tus-resumable,upload-length,upload-metadata',
};

describe('applyCors', () => {
  it('adds nothing without options', () => {
    const { req, res } = exchange('POST', { origin: APP });
    expect(applyCors(req, res, undefined)).toBe(false);
    expect(res.getHeaders()).toEqual({});
  });

  it('adds nothing to a preflight without options (not a preflight for CORS purposes)', () => {
    const { req, res } = exchange('OPTIONS', PREFLIGHT);
    expect(applyCors(req, res, undefined)).toBe(false);
    expect(res.getHeaders()).toEqual({});
  });

  it.each(['POST', 'OPTIONS', 'PATCH'])('adds nothing to a %s without Origin', (method) => {
    const { req, res } = exchange(method, { 'access-control-request-method': 'POST' });
    expect(applyCors(req, res, allowed)).toBe(false);
    expect(res.getHeaders()).toEqual({});
  });

  it.each(['POST', 'HEAD', 'PATCH', 'DELETE'])(
    'allows a listed origin on %s and exposes the TUS response headers',
    (method) => {
      const { req, res } = exchange(method, { origin: APP });
      expect(applyCors(req, res, allowed)).toBe(false);
      expect(res.getHeader('access-control-allow-origin')).toBe(APP);
      expect(list(res.getHeader('vary'))).toContain('Origin');
      const exposed = list(res.getHeader('access-control-expose-headers'));
      for (const name of [
        'Location',
        'Upload-Offset',
        'Upload-Length',
        'Upload-Metadata',
        'Tus-Resumable',
        'Tus-Version',
        'Tus-Extension',
        'Tus-Max-Size',
      ]) {
        expect(exposed).toContain(name);
      }
      expect(exposed).not.toContain('*');
      // Not a preflight: no preflight answers, no credentials unless asked for.
      expect(res.getHeader('access-control-allow-methods')).toBeUndefined();
      expect(res.getHeader('access-control-allow-headers')).toBeUndefined();
      expect(res.getHeader('access-control-max-age')).toBeUndefined();
      expect(res.getHeader('access-control-allow-credentials')).toBeUndefined();
    },
  );

  it('allows each listed origin with its own value, never another', () => {
    const { req, res } = exchange('POST', { origin: 'https://other.example' });
    applyCors(req, res, allowed);
    expect(res.getHeader('access-control-allow-origin')).toBe('https://other.example');
  });

  it.each([
    'http://evil.example',
    'http://app.example.evil.example',
    'http://app.example:8080',
    'https://app.example',
    'null',
  ])('adds nothing for the unlisted origin %s', (origin) => {
    const post = exchange('POST', { origin });
    expect(applyCors(post.req, post.res, allowed)).toBe(false);
    expect(post.res.getHeaders()).toEqual({});
    const preflight = exchange('OPTIONS', { ...PREFLIGHT, origin });
    expect(applyCors(preflight.req, preflight.res, allowed)).toBe(false);
    expect(preflight.res.getHeaders()).toEqual({});
  });

  it('answers a preflight: returns true, lists methods and request headers by name', () => {
    const { req, res } = exchange('OPTIONS', PREFLIGHT);
    expect(applyCors(req, res, allowed)).toBe(true);
    expect(res.getHeader('access-control-allow-origin')).toBe(APP);
    expect(list(res.getHeader('vary'))).toContain('Origin');
    const methods = list(res.getHeader('access-control-allow-methods'));
    expect(methods).toEqual(expect.arrayContaining(['POST', 'HEAD', 'PATCH', 'DELETE', 'OPTIONS']));
    const allowedHeaders = list(res.getHeader('access-control-allow-headers'));
    for (const name of [
      'Authorization',
      'Content-Type',
      // tus-js-client's `addRequestId: true`.
      'X-Request-ID',
      'Tus-Resumable',
      'Upload-Length',
      'Upload-Offset',
      'Upload-Metadata',
      'Upload-Defer-Length',
      'Upload-Concat',
      'X-HTTP-Method-Override',
      'X-Requested-With',
    ]) {
      expect(allowedHeaders).toContain(name);
    }
    // '*' is not a wildcard for Authorization (nor with credentials): names only.
    expect(allowedHeaders).not.toContain('*');
    expect(String(res.getHeader('access-control-allow-headers'))).not.toContain('*');
    // Every header the browser asked for is allowed (case-insensitively).
    const lower = allowedHeaders.map((h) => h.toLowerCase());
    for (const asked of list(PREFLIGHT['access-control-request-headers'])) {
      expect(lower).toContain(asked);
    }
    expect(res.getHeader('access-control-max-age')).toBe('86400');
    expect(list(res.getHeader('access-control-expose-headers'))).toContain('Location');
  });

  it('answers a preflight for PATCH on an upload URL the same way', () => {
    const { req, res } = exchange('OPTIONS', {
      origin: APP,
      'access-control-request-method': 'PATCH',
      'access-control-request-headers': 'tus-resumable,upload-offset,content-type',
    });
    expect(applyCors(req, res, allowed)).toBe(true);
    expect(list(res.getHeader('access-control-allow-methods'))).toContain('PATCH');
    const lower = list(res.getHeader('access-control-allow-headers')).map((h) => h.toLowerCase());
    expect(lower).toEqual(
      expect.arrayContaining(['tus-resumable', 'upload-offset', 'content-type']),
    );
  });

  it('treats an OPTIONS without Access-Control-Request-Method as TUS discovery, not a preflight', () => {
    const { req, res } = exchange('OPTIONS', { origin: APP });
    expect(applyCors(req, res, allowed)).toBe(false);
    expect(res.getHeader('access-control-allow-origin')).toBe(APP);
    expect(res.getHeader('access-control-allow-methods')).toBeUndefined();
    expect(res.getHeader('access-control-allow-headers')).toBeUndefined();
  });

  it('appends extraHeaders and uses maxAge', () => {
    const { req, res } = exchange('OPTIONS', PREFLIGHT);
    expect(applyCors(req, res, { ...allowed, maxAge: 600, extraHeaders: ['X-Tenant'] })).toBe(true);
    const allowedHeaders = list(res.getHeader('access-control-allow-headers'));
    expect(allowedHeaders).toContain('X-Tenant');
    expect(allowedHeaders).toContain('Authorization');
    expect(res.getHeader('access-control-max-age')).toBe('600');
  });

  it("allows any origin with '*': ACAO '*', no Vary, never credentials", () => {
    for (const origin of [APP, 'http://anything.example']) {
      const post = exchange('POST', { origin });
      expect(applyCors(post.req, post.res, { origins: '*' })).toBe(false);
      expect(post.res.getHeader('access-control-allow-origin')).toBe('*');
      expect(post.res.getHeader('vary')).toBeUndefined();
      expect(list(post.res.getHeader('access-control-expose-headers'))).toContain('Location');

      const preflight = exchange('OPTIONS', { ...PREFLIGHT, origin });
      expect(applyCors(preflight.req, preflight.res, { origins: '*' })).toBe(true);
      expect(preflight.res.getHeader('access-control-allow-origin')).toBe('*');
      expect(list(preflight.res.getHeader('access-control-allow-headers'))).not.toContain('*');
    }
    // Credentials with '*' are refused by option validation; applyCors never sends them either.
    const { req, res } = exchange('POST', { origin: APP });
    applyCors(req, res, { origins: '*', credentials: true });
    expect(res.getHeader('access-control-allow-credentials')).toBeUndefined();
  });

  it('sends Access-Control-Allow-Credentials for listed origins when asked', () => {
    for (const method of ['POST', 'OPTIONS']) {
      const headers = method === 'OPTIONS' ? PREFLIGHT : { origin: APP };
      const { req, res } = exchange(method, headers);
      applyCors(req, res, { ...allowed, credentials: true });
      expect(res.getHeader('access-control-allow-credentials')).toBe('true');
      expect(res.getHeader('access-control-allow-origin')).toBe(APP);
    }
    const { req, res } = exchange('POST', { origin: 'http://evil.example' });
    applyCors(req, res, { ...allowed, credentials: true });
    expect(res.getHeaders()).toEqual({});
  });

  it('allows no origin with an empty list', () => {
    const { req, res } = exchange('OPTIONS', PREFLIGHT);
    expect(applyCors(req, res, { origins: [] })).toBe(false);
    expect(res.getHeaders()).toEqual({});
  });
});

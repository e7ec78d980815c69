import type { IncomingMessage, ServerResponse } from 'node:http';

/** CORS for browser clients (Uppy, tus-js-client in a page). */
export interface TusCorsOptions {
  /** Origins allowed to upload: exact origins, or `'*'` for any. */
  origins: string[] | '*';
  /** Allow cookies / HTTP auth from those origins (never with `'*'`). @default false */
  credentials?: boolean;
  /** How long a browser may cache a preflight, in seconds. @default 86400 */
  maxAge?: number;
  /** Request headers to allow besides the TUS ones and `Authorization`. @default [] */
  extraHeaders?: string[];
}

/** The request headers a TUS browser client sends, listed by name (never `*`). */
const ALLOWED_HEADERS = [
  'Authorization',
  'Content-Type',
  'Location',
  'Tus-Resumable',
  'Upload-Checksum',
  'Upload-Complete',
  'Upload-Concat',
  'Upload-Defer-Length',
  'Upload-Draft-Interop-Version',
  'Upload-Length',
  'Upload-Metadata',
  'Upload-Offset',
  'X-HTTP-Method-Override',
  // tus-js-client sends it with `addRequestId: true` (tusd allows it too).
  'X-Request-ID',
  'X-Requested-With',
];

/** The response headers a TUS client must be able to read. */
const EXPOSED_HEADERS = [
  'Location',
  'Retry-After',
  'Tus-Checksum-Algorithm',
  'Tus-Extension',
  'Tus-Max-Size',
  'Tus-Resumable',
  'Tus-Version',
  'Upload-Complete',
  'Upload-Concat',
  'Upload-Defer-Length',
  'Upload-Draft-Interop-Version',
  'Upload-Expires',
  'Upload-Length',
  'Upload-Limit',
  'Upload-Metadata',
  'Upload-Offset',
];

const METHODS = 'POST, HEAD, PATCH, DELETE, OPTIONS';

/**
 * Adds CORS headers for an allowed origin. Returns true when the request is a preflight (an
 * OPTIONS with `Access-Control-Request-Method`), which the caller answers with 204 — and still
 * with the TUS discovery headers, so CORS never swallows the TUS OPTIONS response.
 */
export function applyCors(
  req: IncomingMessage,
  res: ServerResponse,
  options: TusCorsOptions | undefined,
): boolean {
  const origin = req.headers.origin;
  if (!options || !origin) return false;
  const any = options.origins === '*';
  if (!any && !options.origins.includes(origin)) return false;
  res.setHeader('Access-Control-Allow-Origin', any ? '*' : origin);
  if (!any) res.setHeader('Vary', 'Origin');
  if (options.credentials && !any) res.setHeader('Access-Control-Allow-Credentials', 'true');
  res.setHeader('Access-Control-Expose-Headers', EXPOSED_HEADERS.join(', '));
  const preflight =
    req.method === 'OPTIONS' && req.headers['access-control-request-method'] !== undefined;
  if (preflight) {
    res.setHeader('Access-Control-Allow-Methods', METHODS);
    res.setHeader(
      'Access-Control-Allow-Headers',
      [...ALLOWED_HEADERS, ...(options.extraHeaders ?? [])].join(', '),
    );
    res.setHeader('Access-Control-Max-Age', String(options.maxAge ?? 86_400));
  }
  return preflight;
}

import type { IncomingMessage, ServerResponse } from 'node:http';
import type { TusResponse } from '../protocol/tus-request.js';

/** Writes a protocol response; a client already gone is not an error. */
export function sendTusResponse(
  req: IncomingMessage,
  res: ServerResponse,
  response: TusResponse,
): void {
  if (res.headersSent || res.destroyed) return;
  const headers: Record<string, string> = { ...response.headers };
  // A refused request whose body was not read: close rather than read gigabytes to discard them.
  if (!req.readableEnded && hasBody(req)) headers.Connection = 'close';
  if (response.status !== 204 && req.method !== 'HEAD') {
    headers['Content-Length'] = String(
      response.body === undefined ? 0 : Buffer.byteLength(response.body),
    );
  }
  res.writeHead(response.status, headers);
  res.end(response.body);
}

function hasBody(req: IncomingMessage): boolean {
  const length = req.headers['content-length'];
  return req.headers['transfer-encoding'] !== undefined || (length !== undefined && length !== '0');
}

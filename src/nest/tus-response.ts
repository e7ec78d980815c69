import type { IncomingMessage, ServerResponse } from 'node:http';
import { declaresBody } from '../protocol/headers.js';
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
  if (!req.readableEnded && declaresBody(req.headers)) headers.Connection = 'close';
  if (response.status !== 204 && req.method !== 'HEAD') {
    headers['Content-Length'] = String(
      response.body === undefined ? 0 : Buffer.byteLength(response.body),
    );
  }
  res.writeHead(response.status, headers);
  res.end(response.body);
}

const REASONS: Record<number, string> = { 104: 'Upload Resumption Supported' };

/**
 * An informational (1xx) response ahead of the final one: through Node's own API where it has
 * one (`writeInformation`, Node 26), else written as a status line on the response's raw path,
 * as Node writes `100 Continue`. Never to an HTTP/1.0 client, never once the final response
 * started; a header that could split the response is left out.
 */
export function sendInformational(
  req: IncomingMessage,
  res: ServerResponse,
  status: number,
  headers: Record<string, string>,
): void {
  if (res.headersSent || res.destroyed || req.httpVersion === '1.0') return;
  const safe = Object.entries(headers).filter(([name, value]) => !/[\r\n]/.test(name + value));
  const native = (res as { writeInformation?: unknown }).writeInformation;
  if (typeof native === 'function') {
    (native as (s: number, h: Record<string, string>) => void).call(
      res,
      status,
      Object.fromEntries(safe),
    );
    return;
  }
  const head =
    `HTTP/1.1 ${status} ${REASONS[status] ?? 'Informational'}\r\n` +
    safe.map(([name, value]) => `${name}: ${value}\r\n`).join('') +
    '\r\n';
  (res as unknown as { _writeRaw(data: string, encoding: string): void })._writeRaw(head, 'ascii');
}

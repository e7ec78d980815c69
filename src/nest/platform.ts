import type { IncomingHttpHeaders, IncomingMessage, ServerResponse } from 'node:http';

/**
 * A request as the platform hands it to a route, guard or filter: Express's (Node's
 * `IncomingMessage`, extended) or Fastify's (`FastifyRequest`, whose `raw` is Node's). What
 * authentication established is its `user`.
 */
export interface PlatformRequest {
  headers: IncomingHttpHeaders;
  method?: string;
  url?: string;
  user?: unknown;
}

/** A response as the platform hands it over: Express's (Node's) or Fastify's reply. */
export type PlatformResponse = ServerResponse | { raw: ServerResponse };

/**
 * What the module needs of a request or a response under either Nest platform, without
 * depending on either: Express hands the controller Node's own objects (extended), Fastify
 * hands it a `FastifyRequest` / `FastifyReply` wrapping them as `raw`. The protocol reads and
 * writes Node's objects; what authentication put on the framework's request (`user`) is read
 * there.
 */
interface Wrapped<T> {
  raw: T;
}

function isWrapped<T>(value: unknown): value is Wrapped<T> {
  return (
    typeof value === 'object' &&
    value !== null &&
    'raw' in value &&
    typeof value.raw === 'object' &&
    value.raw !== null
  );
}

/** Node's request behind a framework's request (itself under Express). */
export function nodeRequest(req: unknown): IncomingMessage {
  return isWrapped<IncomingMessage>(req) ? req.raw : (req as IncomingMessage);
}

/** Node's response behind a framework's response (itself under Express). */
export function nodeResponse(res: unknown): ServerResponse {
  return isWrapped<ServerResponse>(res) ? res.raw : (res as ServerResponse);
}

/**
 * Tells the framework the response is written on Node's object from here on: a Fastify reply
 * is hijacked (its own send, serializers and hooks stay out of it); Express needs nothing.
 */
export function takeOverResponse(res: unknown): ServerResponse {
  const hijack = (res as { hijack?: unknown }).hijack;
  if (isWrapped<ServerResponse>(res) && typeof hijack === 'function') {
    const reply = res as unknown as { sent?: boolean; hijack(): void };
    if (!reply.sent) reply.hijack();
  }
  return nodeResponse(res);
}

/**
 * The path of the request target as the client sent it (query left out; an absolute-form target
 * gives its path), for the base of `Location`. `undefined` when the target cannot be parsed.
 */
export function targetPath(url: string | undefined): string | undefined {
  const target = url ?? '/';
  if (target.startsWith('/')) {
    const end = target.search(/[?#]/);
    return end < 0 ? target : target.slice(0, end);
  }
  try {
    return new URL(target).pathname;
  } catch {
    return undefined;
  }
}

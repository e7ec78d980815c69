import { Readable } from 'node:stream';
import { DEFAULT_EXPIRE_AFTER_MS } from './expiration.js';
import {
  TUS_VERSION,
  declaresBody,
  headerValue,
  parseContentLength,
  type RequestHeaders,
} from './headers.js';
import type { MethodHandler, TusContext } from './tus-context.js';
import { TusError, TusErrors } from './tus-error.js';
import type { TusRequest, TusResponse } from './tus-request.js';

/**
 * Resumable Uploads for HTTP (draft-ietf-httpbis-resumable-upload), TUS's successor at the IETF,
 * served on the same endpoint as TUS 1.0.0 and by the same handlers: a request that carries
 * `Upload-Draft-Interop-Version` with a version below is translated into the TUS request that
 * does the same (creation, offset retrieval, append, cancellation), and the TUS response or
 * error back into the draft's (`Upload-Complete`, `Upload-Limit`, RFC 9457 problem details). The
 * same locks, storage, events, queue, guards and janitor serve both protocols alike.
 */
export const INTEROP_VERSIONS = [5, 6, 7, 8] as const;

const PROBLEM = 'https://iana.org/assignments/http-problem-types#';

/** The interop version a request speaks, or undefined for TUS 1.0.0 (anything else). */
export function draftVersion(headers: RequestHeaders): number | undefined {
  const raw = headers['upload-draft-interop-version'];
  if (typeof raw !== 'string') return undefined;
  const version = Number(raw.trim());
  return (INTEROP_VERSIONS as readonly number[]).includes(version) ? version : undefined;
}

/** A draft error: an RFC 9457 problem, with the draft's type where it names one. */
class DraftProblem extends Error {
  constructor(
    readonly status: number,
    readonly type: string,
    readonly title: string,
    readonly extra: Record<string, unknown> = {},
  ) {
    super(title);
  }
}

const inconsistentLength = () =>
  new DraftProblem(400, `${PROBLEM}inconsistent-upload-length`, 'inconsistent upload length');

/** `Upload-Complete` (a structured boolean, `?1` or `?0`); `undefined` when absent. */
function readComplete(headers: RequestHeaders): boolean | undefined {
  const raw = headerValue(headers, 'upload-complete', () => invalidHeader('Upload-Complete'));
  if (raw === undefined) return undefined;
  const value = raw.trim();
  if (value === '?1') return true;
  if (value === '?0') return false;
  throw invalidHeader('Upload-Complete');
}

function invalidHeader(name: string): DraftProblem {
  return new DraftProblem(400, 'about:blank', `invalid ${name} header`);
}

/** The headers of the TUS request doing what a draft request asks. */
const DRAFT_ONLY = new Set(['upload-complete', 'upload-draft-interop-version', 'content-type']);

function tusHeaders(headers: RequestHeaders, extra: Record<string, string>): RequestHeaders {
  const translated = Object.fromEntries(
    Object.entries(headers).filter(([name]) => !DRAFT_ONLY.has(name)),
  );
  return { ...translated, 'tus-resumable': TUS_VERSION, ...extra };
}

/** `Upload-Limit` (a structured dictionary): what the server takes. */
export function uploadLimit(context: TusContext): string {
  const { options, extensions } = context;
  const limits: string[] = [];
  if (options.maxSize !== undefined) limits.push(`max-size=${options.maxSize}`);
  if (options.maxChunkSize !== undefined) limits.push(`max-append-size=${options.maxChunkSize}`);
  if (extensions.has('expiration')) {
    const ms = options.expireAfterMs ?? DEFAULT_EXPIRE_AFTER_MS;
    limits.push(`max-age=${Math.floor(ms / 1000)}`);
  }
  return limits.join(', ');
}

/** The headers every draft response carries. */
function draftHeaders(context: TusContext, version: number): Record<string, string> {
  const headers: Record<string, string> = { 'Upload-Draft-Interop-Version': String(version) };
  const limit = uploadLimit(context);
  if (limit) headers['Upload-Limit'] = limit;
  return headers;
}

const TUS_ONLY = ['Tus-Resumable', 'Upload-Defer-Length', 'Upload-Concat', 'Tus-Max-Size'];

function withoutTus(headers: Record<string, string>): Record<string, string> {
  const kept = { ...headers };
  for (const name of TUS_ONLY) delete kept[name];
  return kept;
}

const completeValue = (complete: boolean) => (complete ? '?1' : '?0');

/** An empty body, for the zero-length append that declares a length found at the end. */
const emptyBody = () => Readable.from([]);

/** The handlers of TUS 1.0.0 a draft request is served by. */
export type TusHandlers = Record<'OPTIONS' | 'POST' | 'HEAD' | 'PATCH' | 'DELETE', MethodHandler>;

/**
 * Serves one draft request (its method already effective) with the TUS handlers; errors come
 * back as problem details.
 */
export async function handleDraft(
  request: TusRequest,
  method: string,
  version: number,
  context: TusContext,
  handlers: TusHandlers,
  asTusError: (error: unknown) => TusError,
): Promise<TusResponse> {
  const common = draftHeaders(context, version);
  try {
    const response = await serve(request, method, version, context, handlers);
    return { ...response, headers: { ...withoutTus(response.headers), ...common } };
  } catch (e) {
    const problem = e instanceof DraftProblem ? e : asTusError(e);
    return problemResponse(await asProblem(problem, request, method, context), method, common);
  }
}

async function serve(
  request: TusRequest,
  method: string,
  version: number,
  context: TusContext,
  handlers: TusHandlers,
): Promise<TusResponse> {
  if (request.malformedPath) throw TusErrors.invalidPath();
  if (method !== 'OPTIONS' && context.lifecycle.draining) throw TusErrors.shuttingDown();
  switch (method) {
    case 'OPTIONS':
      return handlers.OPTIONS(request, context);
    case 'POST':
      if (request.id === undefined) return create(request, version, context, handlers);
      break;
    case 'HEAD':
      if (request.id !== undefined) return retrieve(request, context, handlers);
      break;
    case 'PATCH':
      if (request.id !== undefined) return append(request, context, handlers);
      break;
    case 'DELETE':
      if (request.id !== undefined) {
        return handlers.DELETE({ ...request, headers: tusHeaders(request.headers, {}) }, context);
      }
      break;
  }
  throw new DraftProblem(405, 'about:blank', 'method not allowed');
}

/** Upload creation: with or without data, with a length known or found at the end. */
async function create(
  request: TusRequest,
  version: number,
  context: TusContext,
  handlers: TusHandlers,
): Promise<TusResponse> {
  const complete = readComplete(request.headers);
  if (complete === undefined) throw invalidHeader('Upload-Complete');
  const withBody = declaresBody(request.headers);
  const contentLength = parseContentLength(request.headers) ?? (withBody ? undefined : 0);
  const extra: Record<string, string> = {};
  // The TUS leftovers tus-js-client sends (`Upload-Length`, `Upload-Defer-Length`) are kept;
  // otherwise a complete request's length is its body's, and an incomplete one's is deferred.
  const declared = request.headers['upload-length'];
  if (declared === undefined && request.headers['upload-defer-length'] === undefined) {
    if (complete && contentLength !== undefined) extra['upload-length'] = String(contentLength);
    else extra['upload-defer-length'] = '1';
  } else if (complete && declared !== undefined && contentLength !== undefined) {
    if (String(declared).trim() !== String(contentLength)) throw inconsistentLength();
  }
  if (withBody) extra['content-type'] = 'application/offset+octet-stream';
  const created = await handlers.POST(
    {
      ...request,
      method: 'POST',
      headers: tusHeaders(request.headers, extra),
      // Before the body: a client cut off mid-body knows where to resume.
      onCreated: (location) =>
        request.informational?.(104, { Location: location, ...draftHeaders(context, version) }),
    },
    context,
  );
  const location = created.headers.Location;
  let offset = Number(created.headers['Upload-Offset'] ?? 0);
  // Deferred by the translation above or by the client's own `Upload-Defer-Length`.
  const lengthKnown = declared !== undefined || extra['upload-length'] !== undefined;
  if (complete && !lengthKnown) {
    // The body's end was its length (chunked): declared now, which completes the upload.
    const id = location.slice(location.lastIndexOf('/') + 1);
    const settled = await declareLength(request, id, offset, context, handlers);
    offset = settled;
  }
  const done = complete || (lengthKnown && declared !== undefined && Number(declared) === offset);
  return {
    status: 201,
    headers: {
      ...created.headers,
      Location: location,
      'Upload-Offset': String(offset),
      'Upload-Complete': completeValue(done),
    },
  };
}

/** A zero-length append at `offset` declaring it the length: the upload completes. */
async function declareLength(
  request: TusRequest,
  id: string,
  offset: number,
  context: TusContext,
  handlers: TusHandlers,
): Promise<number> {
  const response = await handlers.PATCH(
    {
      ...request,
      method: 'PATCH',
      id,
      body: emptyBody(),
      trailers: undefined,
      headers: {
        'tus-resumable': TUS_VERSION,
        'content-type': 'application/offset+octet-stream',
        'content-length': '0',
        'upload-offset': String(offset),
        'upload-length': String(offset),
        ...(request.headers.host !== undefined && { host: request.headers.host }),
      },
    },
    context,
  );
  return Number(response.headers['Upload-Offset'] ?? offset);
}

/** Offset retrieval. */
async function retrieve(
  request: TusRequest,
  context: TusContext,
  handlers: TusHandlers,
): Promise<TusResponse> {
  const head = await handlers.HEAD(
    { ...request, headers: tusHeaders(request.headers, {}) },
    context,
  );
  const offset = head.headers['Upload-Offset'];
  const length = head.headers['Upload-Length'];
  const complete = length !== undefined && offset === length;
  return {
    status: 204,
    headers: {
      ...head.headers,
      'Upload-Complete': completeValue(complete),
      'Cache-Control': 'no-store',
    },
  };
}

/** Appending: the completing append fixes a deferred length. */
async function append(
  request: TusRequest,
  context: TusContext,
  handlers: TusHandlers,
): Promise<TusResponse> {
  const complete = readComplete(request.headers) ?? false;
  const type = request.headers['content-type'];
  if (
    typeof type === 'string' &&
    !/^application\/(partial-upload|offset\+octet-stream)\s*(;|$)/i.test(type.trim())
  ) {
    throw new DraftProblem(415, 'about:blank', 'an append is application/partial-upload');
  }
  const offsetRaw = request.headers['upload-offset'];
  const offset = typeof offsetRaw === 'string' ? Number(offsetRaw.trim()) : Number.NaN;
  const contentLength = parseContentLength(request.headers);
  const extra: Record<string, string> = { 'content-type': 'application/offset+octet-stream' };
  const declared = request.headers['upload-length'];
  if (complete && contentLength !== undefined && Number.isSafeInteger(offset)) {
    const end = String(offset + contentLength);
    if (declared !== undefined && String(declared).trim() !== end) throw inconsistentLength();
    extra['upload-length'] = end;
  }
  const patched = await handlers.PATCH(
    { ...request, headers: tusHeaders(request.headers, extra) },
    context,
  );
  let upload = patched.upload;
  if (
    complete &&
    extra['upload-length'] === undefined &&
    declared === undefined &&
    upload?.length === null &&
    context.extensions.has('creation-defer-length')
  ) {
    // A body of unknown length (chunked) that completes: its end is the length, when none was
    // known. A known length stays: an append that ends short of it leaves the upload
    // incomplete (`Upload-Complete: ?0`), its bytes kept.
    // (Declaring it takes creation-defer-length: with it off, the upload stays incomplete.)
    const reached = await declareLength(request, request.id!, upload.offset, context, handlers);
    upload = { offset: reached, length: reached };
  }
  const finished = upload
    ? upload.length !== null && upload.offset === upload.length
    : await isFinished(request.id!, context);
  return {
    status: 204,
    headers: {
      ...patched.headers,
      ...(upload && { 'Upload-Offset': String(upload.offset) }),
      'Upload-Complete': completeValue(finished),
    },
  };
}

/** Whether an upload is finished (complete, in the completed queue). */
async function isFinished(id: string, context: TusContext): Promise<boolean> {
  const staged = await context.store.getRecord(id);
  if (staged) return staged.isComplete;
  return (await context.queue?.lookup(id))?.isComplete ?? false;
}

/** The draft's problem for what the TUS handlers threw. */
async function asProblem(
  error: DraftProblem | TusError,
  request: TusRequest,
  method: string,
  context: TusContext,
): Promise<DraftProblem | TusError> {
  if (!(error instanceof TusError)) return error;
  if (error.code === 'ERR_MISMATCHED_OFFSET') {
    const expected = Number(error.headers['Upload-Offset']);
    if (method === 'PATCH' && request.id !== undefined && (await isFinished(request.id, context))) {
      return new DraftProblem(400, `${PROBLEM}completed-upload`, 'the upload is complete');
    }
    const provided = Number(String(request.headers['upload-offset'] ?? '').trim());
    return new DraftProblem(
      409,
      `${PROBLEM}mismatching-upload-offset`,
      'mismatching upload offset',
      {
        'expected-offset': expected,
        ...(Number.isSafeInteger(provided) && { 'provided-offset': provided }),
      },
    );
  }
  if (error.code === 'ERR_INVALID_UPLOAD_LENGTH' && method === 'PATCH') return inconsistentLength();
  // A body running past the length stays the 413 it is: the bytes that fit were stored.
  return error;
}

function problemResponse(
  problem: DraftProblem | TusError,
  method: string,
  common: Record<string, string>,
): TusResponse {
  let status: number;
  let body: Record<string, unknown>;
  let headers: Record<string, string> = {};
  if (problem instanceof DraftProblem) {
    status = problem.status;
    body = { type: problem.type, title: problem.title, ...problem.extra };
  } else {
    status = problem.status;
    headers = withoutTus(problem.headers);
    body = { type: 'about:blank', title: problem.message, code: problem.code };
  }
  body.status = status;
  const response: TusResponse = { status, headers: { ...headers, ...common } };
  if (method === 'HEAD') return response;
  response.headers['Content-Type'] = 'application/problem+json';
  response.body = JSON.stringify(body);
  return response;
}

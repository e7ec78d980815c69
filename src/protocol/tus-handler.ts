import { handleDelete } from './handlers/delete.handler.js';
import { draftVersion, handleDraft, type TusHandlers } from './ietf-draft.js';
import { handleHead } from './handlers/head.handler.js';
import { enabledExtensions } from './extensions.js';
import { handleOptions } from './handlers/options.handler.js';
import { handlePatch } from './handlers/patch.handler.js';
import { handlePost } from './handlers/post.handler.js';
import { TUS_VERSION, assertTusResumable, headerValue } from './headers.js';
import { SHUTDOWN, type MethodHandler, type TusContext } from './tus-context.js';
import { noteUploadId } from '../core/request-context.js';
import { isUploadId } from '../core/upload-id.js';
import {
  ProgressThrottle,
  UploadFailedEvent,
  type TusEvent,
  type TusEventSink,
} from './tus-events.js';
import { TusError, TusErrors } from './tus-error.js';
import type { TusRequest, TusResponse } from './tus-request.js';
import { UnsafeFileError } from '../storage/storage.interfaces.js';

/** What a `TusHandler` is built from. */
export type TusHandlerConfig = Omit<
  TusContext,
  'emit' | 'progress' | 'extensions' | 'activeWrites' | 'background' | 'pendingFinals' | 'lifecycle'
> & {
  /** tussi's `on_event`: receives every lifecycle event (the Nest module feeds EventEmitter2). */
  onEvent?: TusEventSink;
};

/**
 * The TUS protocol with no framework around it: takes a `TusRequest`, answers a `TusResponse`.
 * A Nest controller, a plain `node:http` server or a test can drive it alike.
 */
export class TusHandler {
  private readonly handlers: TusHandlers = {
    OPTIONS: handleOptions,
    POST: handlePost,
    HEAD: handleHead,
    PATCH: handlePatch,
    DELETE: handleDelete,
  };

  /** What the handlers share: options, storage, queue, event sink (the janitor uses it too). */
  readonly context: TusContext;

  constructor(config: TusHandlerConfig) {
    const { onEvent, ...rest } = config;
    const logger = config.logger;
    // Listeners run after the current request step, never inside it, and their errors are
    // logged: a slow or failing listener never breaks or stalls an upload.
    const dispatch = onEvent
      ? (event: TusEvent) =>
          setImmediate(() => {
            try {
              const result: unknown = onEvent(event);
              if (result instanceof Promise) {
                result.catch((e: unknown) => logger.error(`${event.name} listener failed`, e));
              }
            } catch (e) {
              logger.error(`${event.name} listener failed`, e);
            }
          })
      : () => {};
    const observe = config.observer?.event?.bind(config.observer);
    const emit = observe
      ? (event: TusEvent) => {
          try {
            observe(event);
          } catch (e) {
            logger.error(`${event.name} observer failed`, e);
          }
          dispatch(event);
        }
      : dispatch;
    const progress = new ProgressThrottle(config.options.progressIntervalMs ?? 1000);
    this.context = {
      ...rest,
      emit,
      progress,
      extensions: enabledExtensions(config.options.extensions),
      activeWrites: new Map(),
      background: new Set(),
      pendingFinals: new Map(),
      lifecycle: { draining: false },
    };
  }

  /**
   * A graceful shutdown: from now on requests answer 503 with `Retry-After` (OPTIONS still
   * answers); body writes under way get `timeoutMs` to end, then are cut (their durable bytes
   * counted, the request answered 503) so a client resumes elsewhere. Resolves once the writes
   * and the work they started have ended; returns how many writes were cut.
   */
  async drain(timeoutMs: number): Promise<number> {
    const { context } = this;
    context.lifecycle.draining = true;
    const until = async (deadline: number) => {
      while (context.activeWrites.size > 0 && Date.now() < deadline) {
        await new Promise((r) => setTimeout(r, 25));
      }
    };
    await until(Date.now() + timeoutMs);
    const cut = [...context.activeWrites.values()].filter((w) => !w.signal.aborted);
    for (const write of cut) write.abort(SHUTDOWN);
    // A cut write commits what it received and lets go of its lock: moments, not a deadline.
    await until(Date.now() + 10_000);
    await this.settled();
    return cut.length;
  }

  /**
   * Resolves once the work requests left running has ended (the assembly of final uploads
   * whose last partial just completed), including work that work started. For a graceful
   * shutdown, or a test that must see the state a request's consequences leave.
   */
  async settled(): Promise<void> {
    while (this.context.background.size > 0) await Promise.all([...this.context.background]);
  }

  async handle(request: TusRequest): Promise<TusResponse> {
    if (request.id !== undefined && isUploadId(request.id)) noteUploadId(request.id);
    let method = request.method.toUpperCase();
    const draft =
      this.context.options.ietfDraft === false ? undefined : draftVersion(request.headers);
    if (draft !== undefined) {
      if (method === 'POST') {
        const override = request.headers['x-http-method-override'];
        if (typeof override === 'string' && override.trim()) method = override.trim().toUpperCase();
      }
      return handleDraft(request, method, draft, this.context, this.handlers, (e) =>
        this.asTusError(e, method, request),
      );
    }
    try {
      // "The X-HTTP-Method-Override request header MUST be ... interpreted as the request's
      // method", for clients that can send nothing but GET and POST. Only a real POST is
      // overridden (as tusd does): an OPTIONS, whose route carries no guard, stays discovery.
      if (method === 'POST') {
        const override = headerValue(
          request.headers,
          'x-http-method-override',
          TusErrors.methodNotAllowed,
        );
        if (override) method = override.trim().toUpperCase();
      }
      // Tus-Resumable is checked first: "the Server MUST NOT process the request" otherwise.
      if (method !== 'OPTIONS') assertTusResumable(request.headers);
      if (method !== 'OPTIONS' && this.context.lifecycle.draining) throw TusErrors.shuttingDown();
      if (request.malformedPath) throw TusErrors.invalidPath();
      const handler = (this.handlers as Record<string, MethodHandler | undefined>)[method];
      if (!handler) throw TusErrors.methodNotAllowed();
      const response = await handler(request, this.context);
      response.headers['Tus-Resumable'] = TUS_VERSION;
      return response;
    } catch (e) {
      return this.errorResponse(e, method, request);
    }
  }

  private allowedMethods(): string {
    const { extensions } = this.context;
    return [
      'OPTIONS',
      extensions.has('creation') && 'POST',
      'HEAD',
      'PATCH',
      extensions.has('termination') && 'DELETE',
    ]
      .filter(Boolean)
      .join(', ');
  }

  /** What the protocol answers for `error`: a failure nobody expected is logged, as a 500. */
  private asTusError(error: unknown, method: string, request: TusRequest): TusError {
    let tusError: TusError;
    if (error instanceof TusError) {
      tusError = error;
    } else if (error instanceof UnsafeFileError) {
      // A file of the upload is not a regular file of its own (planted): it was refused, moved
      // aside and logged where it was found. The upload cannot be opened: it is not found.
      tusError = TusErrors.notFound();
    } else {
      this.context.logger.error(`${method} failed`, error);
      tusError = TusErrors.internal();
    }
    if (tusError.status >= 500) {
      this.context.emit(
        new UploadFailedEvent(request.id, tusError.status, error, request.principal ?? null),
      );
    }
    // Every refusal once: a client's (4xx) as information, the server's own (a 503, a 507) as a
    // warning; a failure nobody expected was logged above with its stack.
    // (An id that is no upload id is the client's text: never written into a log line.)
    const id =
      request.id === undefined ? '(new upload)' : isUploadId(request.id) ? request.id : '(bad id)';
    const verb = /^[A-Z]{1,16}$/.test(method) ? method : 'OTHER';
    const line = `${verb} ${id}: ${tusError.status} ${tusError.code}`;
    if (tusError.status < 500) this.context.logger.info?.(`refused ${line}`);
    else if (error instanceof TusError) this.context.logger.warn(`refused ${line}`);
    return tusError;
  }

  private errorResponse(error: unknown, method: string, request: TusRequest): TusResponse {
    const tusError = this.asTusError(error, method, request);
    const headers: Record<string, string> = { ...tusError.headers, 'Tus-Resumable': TUS_VERSION };
    // RFC 9110: a 405's Allow lists the methods served now (switched-off extensions excluded).
    if (tusError.status === 405) headers.Allow = this.allowedMethods();
    // Error responses to HEAD have no body.
    if (method === 'HEAD') return { status: tusError.status, headers };
    headers['Content-Type'] = 'text/plain; charset=utf-8';
    return { status: tusError.status, headers, body: `${tusError.code}: ${tusError.message}\n` };
  }
}

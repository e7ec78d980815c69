import { handleHead } from './handlers/head.handler.js';
import { handleOptions } from './handlers/options.handler.js';
import { handlePatch } from './handlers/patch.handler.js';
import { handlePost } from './handlers/post.handler.js';
import { TUS_VERSION, assertTusResumable, headerValue } from './headers.js';
import type { MethodHandler, TusContext } from './tus-context.js';
import { TusError, TusErrors } from './tus-error.js';
import type { TusRequest, TusResponse } from './tus-request.js';

/**
 * The TUS protocol with no framework around it: takes a `TusRequest`, answers a `TusResponse`.
 * A Nest controller, a plain `node:http` server or a test can drive it alike.
 */
export class TusHandler {
  private readonly handlers: Record<string, MethodHandler> = {
    OPTIONS: handleOptions,
    POST: handlePost,
    HEAD: handleHead,
    PATCH: handlePatch,
  };

  constructor(private readonly context: TusContext) {}

  async handle(request: TusRequest): Promise<TusResponse> {
    let method = request.method.toUpperCase();
    try {
      // "The X-HTTP-Method-Override request header MUST be ... interpreted as the request's method".
      const override = headerValue(
        request.headers,
        'x-http-method-override',
        TusErrors.methodNotAllowed,
      );
      if (override) method = override.trim().toUpperCase();
      // Tus-Resumable is checked first: "the Server MUST NOT process the request" otherwise.
      if (method !== 'OPTIONS') assertTusResumable(request.headers);
      const handler = this.handlers[method];
      if (!handler) throw TusErrors.methodNotAllowed();
      const response = await handler(request, this.context);
      response.headers['Tus-Resumable'] = TUS_VERSION;
      return response;
    } catch (e) {
      return this.errorResponse(e, method);
    }
  }

  private errorResponse(error: unknown, method: string): TusResponse {
    let tusError: TusError;
    if (error instanceof TusError) {
      tusError = error;
    } else {
      this.context.logger.error(`${method} failed`, error);
      tusError = TusErrors.internal();
    }
    const headers: Record<string, string> = { ...tusError.headers, 'Tus-Resumable': TUS_VERSION };
    // Error responses to HEAD have no body.
    if (method === 'HEAD') return { status: tusError.status, headers };
    headers['Content-Type'] = 'text/plain; charset=utf-8';
    return { status: tusError.status, headers, body: `${tusError.code}: ${tusError.message}\n` };
  }
}

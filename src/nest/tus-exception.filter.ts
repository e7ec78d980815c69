import {
  Catch,
  HttpException,
  Inject,
  Optional,
  Logger,
  type ArgumentsHost,
  type ExceptionFilter,
} from '@nestjs/common';
import { TUS_VERSION } from '../protocol/headers.js';
import type { ResolvedTusOptions } from '../tus.options-validation.js';
import { TUS_OPTIONS } from './tus.constants.js';
import { nodeRequest, takeOverResponse } from './platform.js';
import { applyCors } from './tus-cors.js';

/**
 * Answers what the TUS handler did not: a guard's 401/403, a pipe's 400, anything thrown before
 * the controller ran. Guards run before interceptors, so only a filter can give those responses
 * the `Tus-Resumable` header every TUS response carries.
 */
@Catch()
export class TusExceptionFilter implements ExceptionFilter {
  private readonly logger = new Logger('TusModule');

  constructor(@Optional() @Inject(TUS_OPTIONS) private readonly options?: ResolvedTusOptions) {}

  catch(exception: unknown, host: ArgumentsHost): void {
    // Written on Node's objects under either platform (a Fastify reply is taken over).
    const request = nodeRequest(host.switchToHttp().getRequest());
    const response = takeOverResponse(host.switchToHttp().getResponse());
    if (response.headersSent) {
      response.end();
      return;
    }
    let status = 500;
    let body: unknown = { statusCode: 500, message: 'Internal server error' };
    if (exception instanceof HttpException) {
      status = exception.getStatus();
      body = exception.getResponse();
      for (const [name, value] of Object.entries(exceptionHeaders(exception)))
        response.setHeader(name, value);
    } else {
      this.logger.error('request failed', exception instanceof Error ? exception.stack : exception);
    }
    response.setHeader('Tus-Resumable', TUS_VERSION);
    applyCors(request, response, this.options?.cors);
    if (!request.readableEnded) response.setHeader('Connection', 'close');
    response.statusCode = status;
    if (request.method === 'HEAD') {
      response.end();
      return;
    }
    const json = JSON.stringify(
      typeof body === 'string' ? { statusCode: status, message: body } : body,
    );
    response.setHeader('Content-Type', 'application/json; charset=utf-8');
    response.setHeader('Content-Length', Buffer.byteLength(json));
    response.end(json);
  }
}

/** Headers an exception asks for (e.g. `WWW-Authenticate`), given as `headers` in its options. */
function exceptionHeaders(exception: HttpException): Record<string, string> {
  const headers = (exception as HttpException & { headers?: unknown }).headers;
  return typeof headers === 'object' && headers !== null ? (headers as Record<string, string>) : {};
}

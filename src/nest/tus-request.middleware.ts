import { Inject, Injectable, type NestMiddleware } from '@nestjs/common';
import { randomUUID } from 'node:crypto';
import type { IncomingMessage, ServerResponse } from 'node:http';
import { currentRequestContext, runInRequestContext } from '../core/request-context.js';
import { TusMetrics } from '../metrics/tus-metrics.js';
import { TusHandler } from '../protocol/tus-handler.js';
import { TusLifecycle } from './tus-lifecycle.js';
import type { ResolvedTusOptions } from '../tus.options-validation.js';
import { TUS_OPTIONS } from './tus.constants.js';
import { applyCors } from './tus-cors.js';
import { sendTusResponse } from './tus-response.js';

/** An `X-Request-Id` taken as sent: short, and nothing a log line could be forged with. */
const REQUEST_ID = /^[A-Za-z0-9._:-]{1,64}$/;

/** A method token (RFC 9110): what an override may name. */
const METHOD_TOKEN = /^[A-Za-z]{1,16}$/;

/**
 * Runs before routing decides anything that matters and before any guard, on every route of a
 * TUS controller:
 *
 * - **The effective method.** `X-HTTP-Method-Override` is honoured on a real POST only (as tusd
 *   does) and applied to `req.method` here, so the guards, interceptors and filters of the
 *   overridden method are the ones that run, and a guard that looks at `req.method` sees what
 *   will be done. On any other method the header is ignored.
 * - **Discovery.** An OPTIONS (a real one, or a POST overridden to OPTIONS) is answered here:
 *   TUS discovery and CORS preflights carry no credentials, so no guard ever applies to them,
 *   however the guards are attached (class-level `@UseGuards` included). Nothing but OPTIONS
 *   answers before authentication.
 * - **Hardening.** No `X-Powered-By`; `X-Content-Type-Options: nosniff` on every response.
 */
@Injectable()
export class TusRequestMiddleware implements NestMiddleware {
  constructor(
    @Inject(TusHandler) private readonly tus: TusHandler,
    @Inject(TUS_OPTIONS) private readonly options: ResolvedTusOptions,
    @Inject(TusMetrics) private readonly metrics: TusMetrics | null,
    @Inject(TusLifecycle) private readonly lifecycle: TusLifecycle,
  ) {}

  use(req: IncomingMessage, res: ServerResponse, next: (error?: unknown) => void): void {
    res.removeHeader('X-Powered-By');
    res.setHeader('X-Content-Type-Options', 'nosniff');
    if (req.method === 'POST') {
      const override = req.headers['x-http-method-override'];
      // Anything but one method token (a repeated header, garbage) is left to the handler,
      // which answers 405 after the guards ran.
      if (typeof override === 'string' && METHOD_TOKEN.test(override.trim())) {
        req.method = override.trim().toUpperCase();
      }
    }
    // A second pass of the middleware for the same request (Nest may mount it twice) is in the
    // first one's context already: the request is timed, tracked and named once.
    if (currentRequestContext()) {
      this.route(req, res, next);
      return;
    }
    // Every request of the upload routes, refusals by guards included, by its effective method.
    this.metrics?.observeRequest(req, res);
    this.lifecycle.track(res);
    // The request's id for its log lines (and its events' listeners): a safe one a proxy sent,
    // else a new one; answered in X-Request-Id either way.
    const sent = req.headers['x-request-id'];
    const requestId = typeof sent === 'string' && REQUEST_ID.test(sent) ? sent : randomUUID();
    res.setHeader('X-Request-Id', requestId);
    runInRequestContext(requestId, () => this.route(req, res, next));
  }

  private route(req: IncomingMessage, res: ServerResponse, next: (error?: unknown) => void): void {
    if (req.method !== 'OPTIONS') {
      next();
      return;
    }
    applyCors(req, res, this.options.cors);
    this.tus
      .handle({
        method: 'OPTIONS',
        headers: req.headers,
        basePath: '',
        scheme: 'http',
        body: req,
      })
      .then((response) => sendTusResponse(req, res, response), next);
  }
}

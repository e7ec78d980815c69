import {
  Inject,
  Injectable,
  type CallHandler,
  type ExecutionContext,
  type NestInterceptor,
} from '@nestjs/common';
import type { IncomingMessage } from 'node:http';
import type { Observable } from 'rxjs';
import type { ResolvedTusOptions } from '../tus.options-validation.js';
import { TUS_HOST, TUS_OPTIONS, TUS_SCHEME } from './tus.constants.js';
import { nodeRequest } from './platform.js';
import { TrustedProxies, readForwarded } from './trusted-proxies.js';

/**
 * Resolves the scheme (and, if allowed, the host) of `Location` from forwarded headers, only
 * when the connecting peer is a trusted proxy. A client talking to the server directly cannot
 * change the scheme by sending the headers itself.
 */
@Injectable()
export class TusForwardedInterceptor implements NestInterceptor {
  private readonly proxies: TrustedProxies;
  private readonly allowHost: boolean;

  constructor(@Inject(TUS_OPTIONS) options: ResolvedTusOptions) {
    this.proxies = new TrustedProxies(options.trustedProxies ?? []);
    this.allowHost = options.trustForwardedHost ?? false;
  }

  intercept(context: ExecutionContext, next: CallHandler): Observable<unknown> {
    // Noted on Node's request, which the controller reads under either platform.
    const req = nodeRequest(context.switchToHttp().getRequest()) as IncomingMessage &
      Record<symbol, string>;
    if (this.proxies.trusts(req.socket.remoteAddress)) {
      const view = readForwarded(req.headers, this.allowHost);
      if (view.scheme) req[TUS_SCHEME] = view.scheme;
      if (view.host) req[TUS_HOST] = view.host;
    }
    return next.handle();
  }
}

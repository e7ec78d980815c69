import {
  HttpException,
  HttpStatus,
  Inject,
  Injectable,
  type CanActivate,
  type ExecutionContext,
} from '@nestjs/common';
import { createHash } from 'node:crypto';
import type { IncomingMessage } from 'node:http';
import type { ResolvedTusOptions } from '../tus.options-validation.js';
import { clientOf } from './connection-limits.js';
import { nodeRequest, nodeResponse } from './platform.js';
import { TUS_OPTIONS } from './tus.constants.js';
import { principalOf } from './tus-principal.js';
import { TUS_RATE_LIMIT_STORAGE, type RateLimitStorage } from './tus-rate-limit.storage.js';
import { TrustedProxies } from './trusted-proxies.js';

/** Rate limits per client: its principal when authenticated, else its address. */
export interface TusRateLimits {
  /** Creations (POST on the creation URL) per client per minute. */
  creationsPerMinute?: number;
  /**
   * Requests of any kind but OPTIONS and HEAD per client per minute. HEAD is never refused:
   * tus-js-client starts an upload over when its HEAD gets a 4xx it does not retry, so a limited
   * HEAD would cost more than it saves; it reads one small record.
   */
  requestsPerMinute?: number;
  /** The window the limits count in: "per minute" means per this many ms. @default 60000 */
  windowMs?: number;
}

type Request = IncomingMessage & { user?: unknown; params?: Record<string, string> };

/**
 * The module's rate limits, as a guard with a pluggable storage (the contract of
 * `@nestjs/throttler`'s storages; in memory, or in Redis when replicas coordinate). It runs
 * after the application's guards, so an authenticated client is limited as its principal,
 * wherever it connects from, and an anonymous one by its address (through `trustedProxies`: the
 * client's, not the proxy's; IPv6 by /64). Over a limit: 429 with `Retry-After` (and
 * `Tus-Resumable`, from the exception filter). Off unless limits are set.
 */
@Injectable()
export class TusRateLimitGuard implements CanActivate {
  private readonly limits: TusRateLimits;
  private readonly proxies: TrustedProxies;

  constructor(
    @Inject(TUS_OPTIONS) private readonly options: ResolvedTusOptions,
    @Inject(TUS_RATE_LIMIT_STORAGE) private readonly storage: RateLimitStorage,
  ) {
    this.limits = options.rateLimits ?? {};
    this.proxies = new TrustedProxies(options.trustedProxies ?? []);
  }

  async canActivate(context: ExecutionContext): Promise<boolean> {
    const { creationsPerMinute, requestsPerMinute, windowMs = 60_000 } = this.limits;
    if (!creationsPerMinute && !requestsPerMinute) return true;
    const req = context.switchToHttp().getRequest<Request>();
    const tracker = this.tracker(req);
    if (requestsPerMinute && req.method !== 'HEAD') {
      await this.count('requests', tracker, requestsPerMinute, windowMs, context);
    }
    if (creationsPerMinute && isCreation(req)) {
      await this.count('creations', tracker, creationsPerMinute, windowMs, context);
    }
    return true;
  }

  private async count(
    name: string,
    tracker: string,
    limit: number,
    windowMs: number,
    context: ExecutionContext,
  ): Promise<void> {
    const key = createHash('sha256').update(tracker).digest('base64url');
    const record = await this.storage.increment(key, windowMs, limit, windowMs, name);
    if (!record.isBlocked) return;
    // On Node's response, which the exception filter writes under either platform.
    nodeResponse(context.switchToHttp().getResponse()).setHeader(
      'Retry-After',
      String(Math.max(1, record.timeToBlockExpire)),
    );
    throw new HttpException(
      `too many ${name}: retry after the time Retry-After says`,
      HttpStatus.TOO_MANY_REQUESTS,
    );
  }

  /** Who is counted: the principal, else the client's address. */
  private tracker(req: Request): string {
    const principal = principalOf(this.options, req);
    if (principal) return `principal:${principal}`;
    return `address:${clientOf(this.clientAddress(req))}`;
  }

  /** The nearest address a trusted proxy forwarded, else the peer's. */
  private clientAddress(req: Request): string {
    let address = nodeRequest(req).socket.remoteAddress ?? '';
    const forwarded = req.headers['x-forwarded-for'];
    if (!this.proxies.trusts(address) || typeof forwarded !== 'string') return address;
    const hops = forwarded.split(',').map((h) => h.trim());
    while (hops.length > 0 && this.proxies.trusts(address)) address = hops.pop() ?? address;
    return address;
  }
}

/** A POST that reached the creation URL (overrides are applied before the guards). */
function isCreation(req: Request): boolean {
  // `rest` is the catch-all's parameter under Express, `*` under Fastify.
  return req.method === 'POST' && !req.params?.id && !req.params?.rest && !req.params?.['*'];
}

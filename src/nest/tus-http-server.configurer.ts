import { Inject, Injectable, type OnApplicationBootstrap } from '@nestjs/common';
import { HttpAdapterHost } from '@nestjs/core';
import type { Server } from 'node:http';
import type { ResolvedTusOptions } from '../tus.options-validation.js';
import { TUS_OPTIONS } from './tus.constants.js';

/**
 * Gives the HTTP server timeouts that suit long uploads: no total-request limit (Node's default
 * 300 s `requestTimeout` cuts any PATCH that takes longer), headers within `headersTimeoutMs`.
 * A stalled body is cut by the body idle timeout of the PATCH itself.
 */
@Injectable()
export class TusHttpServerConfigurer implements OnApplicationBootstrap {
  constructor(
    @Inject(TUS_OPTIONS) private readonly options: ResolvedTusOptions,
    private readonly adapterHost: HttpAdapterHost,
  ) {}

  onApplicationBootstrap(): void {
    if (!this.options.configureHttpServer) return;
    const server = this.adapterHost.httpAdapter?.getHttpServer() as Server | undefined;
    if (!server || typeof server.headersTimeout !== 'number') return;
    server.requestTimeout = 0;
    server.headersTimeout = this.options.headersTimeoutMs;
  }
}

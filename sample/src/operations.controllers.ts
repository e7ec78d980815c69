import { Controller, Get, Inject, UseGuards, type Type } from '@nestjs/common';
import { HealthCheck, HealthCheckService, type HealthCheckResult } from '@nestjs/terminus';
import { TusHealthIndicator, TusMetricsController } from 'nestjs-tussi';
import { BearerAuthGuard } from './bearer-auth.guard.js';
import { switchedOn } from './env.js';

/** A path from the environment, without its slashes: `/metrics/` and `metrics` are one route. */
function routePath(value: string | undefined, fallback: string): string {
  return (value?.trim() || fallback).replace(/^\/+|\/+$/g, '');
}

/**
 * The operations routes of the sample, on the same port as the uploads, read when the
 * application module is loaded (routes are fixed at that point):
 *
 * - the module's metrics at `TUS_METRICS_PATH` (default `/metrics`; `TUS_METRICS=false` removes
 *   them), behind the same bearer guard as the uploads (a Prometheus scrape config sends the
 *   token as `authorization`);
 * - health at `TUS_HEALTH_PATH` (default `/health`, with `@nestjs/terminus`): every check of the
 *   module and readiness (503 naming what failed, and while shutting down); `…/live` answers
 *   while the process does. Unguarded: orchestrators and balancers probe without credentials,
 *   and the answers name no upload.
 */
export function operationsControllers(env: NodeJS.ProcessEnv = process.env): Type[] {
  const controllers: Type[] = [];
  if (switchedOn(env.TUS_METRICS)) {
    @Controller(routePath(env.TUS_METRICS_PATH, 'metrics'))
    @UseGuards(BearerAuthGuard)
    class MetricsController extends TusMetricsController {}
    controllers.push(MetricsController);
  }
  @Controller(routePath(env.TUS_HEALTH_PATH, 'health'))
  class HealthController {
    constructor(
      @Inject(HealthCheckService) private readonly health: HealthCheckService,
      @Inject(TusHealthIndicator) private readonly tus: TusHealthIndicator,
    ) {}

    @Get()
    @HealthCheck()
    check(): Promise<HealthCheckResult> {
      return this.health.check([() => this.tus.check(), () => this.tus.readiness()]);
    }

    @Get('live')
    @HealthCheck()
    live(): Promise<HealthCheckResult> {
      return this.health.check([]);
    }
  }
  controllers.push(HealthController);
  return controllers;
}

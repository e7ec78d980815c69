import { Controller, UseGuards, type Type } from '@nestjs/common';
import { TusMetricsController } from 'nestjs-tussi';
import { BearerAuthGuard } from './bearer-auth.guard.js';

/** A path from the environment, without its slashes: `/metrics/` and `metrics` are one route. */
function routePath(value: string | undefined, fallback: string): string {
  return (value?.trim() || fallback).replace(/^\/+|\/+$/g, '');
}

/**
 * The operations routes of the sample, on the same port as the uploads: the module's metrics at
 * `TUS_METRICS_PATH` (default `/metrics`; `TUS_METRICS=false` removes it), behind the same
 * bearer guard as the uploads (a Prometheus scrape config sends the token as `authorization`).
 * Read when the application module is loaded: routes are fixed at that point.
 */
export function operationsControllers(env: NodeJS.ProcessEnv = process.env): Type[] {
  const controllers: Type[] = [];
  if ((env.TUS_METRICS ?? 'true').trim().toLowerCase() !== 'false') {
    @Controller(routePath(env.TUS_METRICS_PATH, 'metrics'))
    @UseGuards(BearerAuthGuard)
    class MetricsController extends TusMetricsController {}
    controllers.push(MetricsController);
  }
  return controllers;
}

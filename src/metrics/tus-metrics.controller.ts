import { Controller, Get, Header, Inject } from '@nestjs/common';
import { Registry } from 'prom-client';
import { TusMetrics } from './tus-metrics.js';

/**
 * `GET /metrics`: the module's metrics in Prometheus' text format. List it among an
 * application module's `controllers` (beside `TusModule`), guard it like any route
 * (`@UseGuards` on a subclass), or move it: `@Controller('internal/metrics') class M extends
 * TusMetricsController {}`.
 */
@Controller('metrics')
export class TusMetricsController {
  constructor(@Inject(TusMetrics) private readonly metrics: TusMetrics) {}

  @Get()
  @Header('Content-Type', Registry.PROMETHEUS_CONTENT_TYPE)
  @Header('Cache-Control', 'no-store')
  scrape(): Promise<string> {
    return this.metrics.text();
  }
}

import { ConsoleLogger, type ConsoleLoggerOptions } from '@nestjs/common';
import { currentRequestContext } from '../core/request-context.js';

/**
 * Nest's own JSON logger (one object per line) with what an operator looks for beside the
 * message: `time` (ISO 8601) and, for lines written while a request of the upload routes is
 * served (its events' listeners included), its `requestId` and `uploadId`.
 *
 * ```ts
 * const app = await NestFactory.create(AppModule, { logger: new TusJsonLogger() });
 * ```
 */
export class TusJsonLogger extends ConsoleLogger {
  constructor(options: Omit<ConsoleLoggerOptions, 'json'> = {}) {
    super({ ...options, json: true, colors: false });
  }

  protected override getJsonLogObject(
    message: unknown,
    options: Parameters<ConsoleLogger['getJsonLogObject']>[1],
  ): ReturnType<ConsoleLogger['getJsonLogObject']> {
    const object = super.getJsonLogObject(message, options);
    const request = currentRequestContext();
    return {
      ...object,
      time: new Date(object.timestamp).toISOString(),
      ...(request && { requestId: request.requestId }),
      ...(request?.uploadId !== undefined && { uploadId: request.uploadId }),
    };
  }
}

import { Injectable, Logger } from '@nestjs/common';
import { OnEvent } from '@nestjs/event-emitter';
import {
  TusEvents,
  type UploadCompletedEvent,
  type UploadCreatedEvent,
  type UploadFailedEvent,
  type UploadProgressEvent,
  type UploadTerminatedEvent,
  LogBudget,
} from 'nestjs-tussi';

// Characters that would break or disguise a log line: C0 (a newline forges a line), DEL, C1,
// line and paragraph separators, bidi controls, lone surrogates.
const UNPRINTABLE = /[\p{Cc}\p{Zl}\p{Zp}\p{Bidi_Control}\p{Cs}]/gu;

/**
 * A client's text for a log line: as sent, any script kept, with the characters that would
 * break or disguise the line shown as `\u{...}` escapes.
 */
export function printable(text: string): string {
  return text.replace(UNPRINTABLE, (c) => `\\u{${c.codePointAt(0)!.toString(16).toUpperCase()}}`);
}

/** Logs the lifecycle of every upload, as read from the event bus, within a line budget. */
@Injectable()
export class UploadEventsListener {
  private readonly logger = new Logger('Uploads');
  private readonly budget = new LogBudget(this.logger);

  @OnEvent(TusEvents.Created)
  created(event: UploadCreatedEvent): void {
    const { filename } = event.record.metadata;
    // Logged as sent (not as delivered), escaped: any filename is accepted now.
    const name = filename === undefined ? '(no name)' : printable(filename.slice(0, 200));
    this.budget.write(
      'log',
      `created ${event.uploadId} ${name}, ${event.record.length ?? '?'} bytes`,
    );
  }

  /** At debug level (`LOG_LEVEL=debug`): one line per upload per second while bytes arrive. */
  @OnEvent(TusEvents.Progress)
  progress(event: UploadProgressEvent): void {
    const percent = event.length ? ` (${((100 * event.offset) / event.length).toFixed(1)}%)` : '';
    this.budget.write('debug', `progress ${event.uploadId} ${event.offset} bytes${percent}`);
  }

  @OnEvent(TusEvents.Terminated)
  terminated(event: UploadTerminatedEvent): void {
    this.budget.write('log', `terminated ${event.uploadId}`);
  }

  @OnEvent(TusEvents.Completed)
  completed(event: UploadCompletedEvent): void {
    this.budget.write(
      'log',
      `completed ${event.uploadId} in ${event.record.duration?.toFixed(2)} s`,
    );
  }

  @OnEvent(TusEvents.Failed)
  failed(event: UploadFailedEvent): void {
    this.budget.write('warn', `failed ${event.uploadId ?? '(new upload)'}: ${event.status}`);
  }
}

import { Injectable, Logger } from '@nestjs/common';
import { OnEvent } from '@nestjs/event-emitter';
import {
  TusEvents,
  type UploadCompletedEvent,
  type UploadCreatedEvent,
  type UploadFailedEvent,
  type UploadProgressEvent,
} from 'nestjs-tussi';

/** Logs the lifecycle of every upload, as read from the event bus. */
@Injectable()
export class UploadEventsListener {
  private readonly logger = new Logger('Uploads');

  @OnEvent(TusEvents.Created)
  created(event: UploadCreatedEvent): void {
    const name = event.record.metadata.filename ?? '(no name)';
    this.logger.log(`created ${event.uploadId} ${name}, ${event.record.length ?? '?'} bytes`);
  }

  @OnEvent(TusEvents.Progress)
  progress(event: UploadProgressEvent): void {
    const percent = event.length ? ` (${((100 * event.offset) / event.length).toFixed(1)}%)` : '';
    this.logger.log(`progress ${event.uploadId} ${event.offset} bytes${percent}`);
  }

  @OnEvent(TusEvents.Completed)
  completed(event: UploadCompletedEvent): void {
    this.logger.log(`completed ${event.uploadId} in ${event.record.duration?.toFixed(2)} s`);
  }

  @OnEvent(TusEvents.Failed)
  failed(event: UploadFailedEvent): void {
    this.logger.warn(`failed ${event.uploadId ?? '(new upload)'}: ${event.status}`);
  }
}

import {
  Injectable,
  Logger,
  type OnApplicationBootstrap,
  type OnApplicationShutdown,
} from '@nestjs/common';
import { ConfigService } from '@nestjs/config';
import { mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { destinationDir } from './env.js';
import { UploadFeed } from './upload-page.js';
import {
  AbortError,
  CompletedUploadQueue,
  safeFilename,
  TimeoutError,
  type CompletedUpload,
} from 'nestjs-tussi';

/**
 * `{uuid}-{filename}`, the client's filename made safe by {@link safeFilename} (one path
 * component, no controls, NFC, at most 200 UTF-8 bytes, letters of every script kept), or
 * `{uuid}` when nothing of it is left. The uuid prefix means two uploads of `photo.jpg` never
 * collide, and the name (37 + 200 bytes, `.meta` beside it) stays within NAME_MAX (255).
 */
export function destinationName(upload: CompletedUpload): string {
  const safe = safeFilename(upload.record.metadata.filename);
  return safe ? `${upload.name}-${safe}` : upload.name;
}

/**
 * The consumer: takes each finished upload from the queue (exactly once, even with several
 * server processes) and moves it into `TUS_DEST_DIR`, with its record beside it.
 */
@Injectable()
export class UploadConsumer implements OnApplicationBootstrap, OnApplicationShutdown {
  private readonly logger = new Logger(UploadConsumer.name);
  private readonly stop = new AbortController();
  private readonly destDir: string;
  private loop: Promise<void> | undefined;

  constructor(
    private readonly queue: CompletedUploadQueue,
    config: ConfigService,
    private readonly feed: UploadFeed,
  ) {
    this.destDir = destinationDir(config);
  }

  onApplicationBootstrap(): void {
    mkdirSync(this.destDir, { recursive: true });
    this.loop = this.consume();
  }

  async onApplicationShutdown(): Promise<void> {
    this.stop.abort();
    await this.loop;
  }

  private async consume(): Promise<void> {
    while (!this.stop.signal.aborted) {
      try {
        await this.queue.withFile((upload) => this.deliver(upload), {
          timeout: 60_000,
          signal: this.stop.signal,
        });
      } catch (e) {
        if (e instanceof AbortError) return;
        if (e instanceof TimeoutError) continue;
        this.logger.error('delivering an upload failed', e instanceof Error ? e.stack : e);
        await new Promise((r) => setTimeout(r, 1000));
      }
    }
  }

  private async deliver(upload: CompletedUpload): Promise<void> {
    const name = destinationName(upload);
    const path = join(this.destDir, name);
    await upload.save(path);
    await upload.saveRecord(join(this.destDir, `${name}.meta`));
    // The upload page's list (its sha256 only while a page watches: reading it back costs).
    const sha256 = await this.feed.sha256Of(path).catch(() => undefined);
    this.feed.delivered({
      id: upload.name,
      name,
      size: upload.record.length ?? 0,
      at: new Date().toISOString(),
      ...(sha256 && { sha256 }),
      owner: upload.record.owner,
    });
    const by = upload.record.serverMetadata.uploaded_by;
    this.logger.log(`delivered ${name} (${upload.record.length} bytes${by ? `, by ${by}` : ''})`);
  }
}

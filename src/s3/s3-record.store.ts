import {
  DeleteObjectCommand,
  GetObjectCommand,
  PutObjectCommand,
  type S3Client,
} from '@aws-sdk/client-s3';
import { isUploadId } from '../core/upload-id.js';
import { UploadRecord } from '../core/upload-record.js';
import type { UploadRecordStore } from '../storage/storage.interfaces.js';
import { isNotFound, listObjects } from './s3-client.js';

const SUFFIX = '.info';

/**
 * Records as objects beside the data: `{prefix}{id}.info`, the same JSON as the filesystem's
 * `.meta` (a PUT replaces an object whole: a reader sees the old record or the new one).
 */
export class S3RecordStore implements UploadRecordStore {
  constructor(
    private readonly client: S3Client,
    private readonly bucket: string,
    private readonly prefix = '',
  ) {}

  private key(id: string): string {
    return `${this.prefix}${id}${SUFFIX}`;
  }

  async get(id: string): Promise<UploadRecord | null> {
    if (!isUploadId(id)) return null;
    try {
      const got = await this.client.send(
        new GetObjectCommand({ Bucket: this.bucket, Key: this.key(id) }),
      );
      return UploadRecord.fromJSON(JSON.parse(await got.Body!.transformToString()));
    } catch (e) {
      if (isNotFound(e)) return null;
      throw e;
    }
  }

  async put(id: string, record: UploadRecord): Promise<void> {
    await this.client.send(
      new PutObjectCommand({
        Bucket: this.bucket,
        Key: this.key(id),
        Body: JSON.stringify(record),
        ContentType: 'application/json',
      }),
    );
  }

  async remove(id: string): Promise<void> {
    await this.client
      .send(new DeleteObjectCommand({ Bucket: this.bucket, Key: this.key(id) }))
      .catch((e) => {
        if (!isNotFound(e)) throw e;
      });
  }

  async list(): Promise<string[]> {
    return (await listObjects(this.client, this.bucket, this.prefix))
      .map((o) => o.key.slice(this.prefix.length))
      .filter((name) => name.endsWith(SUFFIX))
      .map((name) => name.slice(0, -SUFFIX.length))
      .filter((id) => isUploadId(id));
  }
}

import type { S3Client } from '@aws-sdk/client-s3';
import { isUploadId } from '../core/upload-id.js';
import { UploadRecord } from '../core/upload-record.js';
import type { UploadRecordStore } from '../storage/storage.interfaces.js';
import { deleteObject, getJson, listObjects, putJson } from './s3-client.js';

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
    const json = await getJson(this.client, this.bucket, this.key(id));
    return json === null ? null : UploadRecord.fromJSON(json);
  }

  async put(id: string, record: UploadRecord): Promise<void> {
    await putJson(this.client, this.bucket, this.key(id), record);
  }

  async remove(id: string): Promise<void> {
    await deleteObject(this.client, this.bucket, this.key(id));
  }

  async list(): Promise<string[]> {
    return (await this.listAged()).map((r) => r.id);
  }

  /** The ids of every stored record, and how long ago each was written (ms). */
  async listAged(): Promise<{ id: string; ageMs: number }[]> {
    const now = Date.now();
    return (await listObjects(this.client, this.bucket, this.prefix))
      .map((o) => ({ name: o.key.slice(this.prefix.length), ageMs: now - o.modified }))
      .filter(({ name }) => name.endsWith(SUFFIX))
      .map(({ name, ageMs }) => ({ id: name.slice(0, -SUFFIX.length), ageMs }))
      .filter(({ id }) => isUploadId(id));
  }
}

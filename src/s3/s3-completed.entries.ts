import { DeleteObjectCommand, GetObjectCommand, PutObjectCommand } from '@aws-sdk/client-s3';
import { isUploadId } from '../core/upload-id.js';
import { UploadRecord } from '../core/upload-record.js';
import type { CompletedEntries, OpenedEntry } from '../queue/completed-entries.js';
import type { CompletedUpload } from '../queue/completed-upload.js';
import type { FinishedBytes, ObjectLocation } from '../queue/completed-upload.queue.js';
import { isNotFound, listObjects } from './s3-client.js';
import type { S3Storage } from './s3.storage.js';

const ENTRY = '.finished';
const RECEIPT = '.receipt';

/**
 * The entries of the completed queue as objects of the bucket, beside the finished objects: no
 * directory is shared by the replicas. `{prefix}{id}.finished` holds the record and where the
 * bytes are (the object `{prefix}{id}`); `{prefix}{id}.receipt` the small record HEAD answers
 * from once a consumer took the upload. Who claims which entry is decided elsewhere (Redis).
 */
export class S3CompletedEntries implements CompletedEntries {
  constructor(
    private readonly storage: S3Storage,
    private readonly log: (message: string) => void = (m) => console.warn(m),
  ) {}

  get description(): string {
    return `s3://${this.storage.bucket}/${this.storage.prefix}`;
  }

  private key(id: string, suffix: string): string {
    return `${this.storage.prefix}${id}${suffix}`;
  }

  async enqueue(id: string, record: UploadRecord, bytes?: FinishedBytes): Promise<void> {
    if (!bytes || !('object' in bytes)) {
      throw new Error('the completed entries in S3 take only uploads whose bytes are objects');
    }
    await this.put(this.key(id, ENTRY), { ...record.toJSON(), object: bytes.object });
  }

  async lookup(id: string): Promise<UploadRecord | null> {
    if (!isUploadId(id)) return null;
    for (const suffix of [ENTRY, RECEIPT]) {
      const json = await this.get(this.key(id, suffix)).catch(() => null);
      if (json === null) continue;
      try {
        return UploadRecord.fromJSON(json);
      } catch {
        // An unreadable entry answers as none.
      }
    }
    return null;
  }

  async listIds(): Promise<string[]> {
    return (await this.listNames())
      .filter((n) => n.name.endsWith(ENTRY))
      .map((n) => n.name.slice(0, -ENTRY.length))
      .filter((id) => isUploadId(id));
  }

  async open(id: string): Promise<OpenedEntry | null> {
    const json = await this.get(this.key(id, ENTRY));
    if (json === null) return null;
    let record: UploadRecord;
    let location: ObjectLocation | undefined;
    try {
      record = UploadRecord.fromJSON(json);
      location = objectOf(json);
      if (!location) throw new SyntaxError('no object');
    } catch (e) {
      // Never handed out: moved aside under a name no listing takes for an entry.
      await this.put(this.key(id, '.unreadable'), json).catch(() => {});
      await this.delete(this.key(id, ENTRY));
      this.log(`set aside the unreadable completed entry ${id} (${String(e)})`);
      return null;
    }
    await this.put(this.key(id, RECEIPT), record.toReceipt());
    return {
      record,
      dataPath: null,
      recordPath: null,
      stored: { location, objects: this.storage.objects },
    };
  }

  /** The object goes (`save` downloaded a copy), then the entry; the receipt stays for HEAD. */
  async discard(upload: CompletedUpload): Promise<void> {
    const object = upload.storedObject;
    if (object) await object.objects.remove(object.location);
    await this.delete(this.key(upload.name, ENTRY));
  }

  async removeEntry(id: string): Promise<boolean> {
    const json = await this.get(this.key(id, ENTRY));
    const receipt = await this.get(this.key(id, RECEIPT));
    const location = json === null ? undefined : objectOf(json);
    if (location) await this.storage.objects.remove(location);
    await this.delete(this.key(id, ENTRY));
    await this.delete(this.key(id, RECEIPT));
    return json !== null || receipt !== null;
  }

  async sweepExpired(
    ageMs: number,
    hold: (id: string) => Promise<(() => Promise<void>) | null>,
  ): Promise<number> {
    const before = Date.now() - ageMs;
    let expired = 0;
    for (const { name, modified } of await this.listNames()) {
      if (modified > before) continue;
      if (name.endsWith(RECEIPT)) {
        await this.delete(`${this.storage.prefix}${name}`);
        continue;
      }
      if (!name.endsWith(ENTRY)) continue;
      const id = name.slice(0, -ENTRY.length);
      if (!isUploadId(id)) continue;
      const release = await hold(id);
      if (!release) continue;
      try {
        const json = await this.get(this.key(id, ENTRY));
        const location = json === null ? undefined : objectOf(json);
        if (location) await this.storage.objects.remove(location);
        await this.delete(this.key(id, ENTRY));
        expired++;
      } finally {
        await release();
      }
    }
    return expired;
  }

  async sweep(): Promise<number> {
    return 0;
  }

  async close(): Promise<void> {}

  private async get(key: string): Promise<unknown> {
    try {
      const got = await this.storage.client.send(
        new GetObjectCommand({ Bucket: this.storage.bucket, Key: key }),
      );
      return JSON.parse(await got.Body!.transformToString()) as unknown;
    } catch (e) {
      if (isNotFound(e)) return null;
      throw e;
    }
  }

  private async put(key: string, value: unknown): Promise<void> {
    await this.storage.client.send(
      new PutObjectCommand({
        Bucket: this.storage.bucket,
        Key: key,
        Body: JSON.stringify(value),
        ContentType: 'application/json',
      }),
    );
  }

  private async delete(key: string): Promise<void> {
    await this.storage.client
      .send(new DeleteObjectCommand({ Bucket: this.storage.bucket, Key: key }))
      .catch((e) => {
        if (!isNotFound(e)) throw e;
      });
  }

  /** Names below the prefix, with their age. */
  private async listNames(): Promise<{ name: string; modified: number }[]> {
    const { client, bucket, prefix } = this.storage;
    return (await listObjects(client, bucket, prefix)).map((o) => ({
      name: o.key.slice(prefix.length),
      modified: o.modified,
    }));
  }
}

function objectOf(json: unknown): ObjectLocation | undefined {
  const object = (json as { object?: Partial<ObjectLocation> } | null)?.object;
  return typeof object?.bucket === 'string' && typeof object.key === 'string'
    ? { bucket: object.bucket, key: object.key }
    : undefined;
}

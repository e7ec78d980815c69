import { isUploadId } from '../core/upload-id.js';
import { UploadRecord } from '../core/upload-record.js';
import type { CompletedEntries, OpenedEntry } from '../queue/completed-entries.js';
import type { CompletedUpload } from '../queue/completed-upload.js';
import {
  objectLocationOf,
  type FinishedBytes,
  type ObjectLocation,
} from '../queue/completed-upload.queue.js';
import { deleteObject, getJson, listObjects, putJson } from './s3-client.js';
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
      location = objectLocationOf(json);
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
    const receipt = await this.get(this.key(id, RECEIPT));
    const entry = await this.dropEntry(id);
    await this.delete(this.key(id, RECEIPT));
    return entry || receipt !== null;
  }

  /** Deletes an entry and the object it names; false when there was no entry. */
  private async dropEntry(id: string): Promise<boolean> {
    const json = await this.get(this.key(id, ENTRY));
    const location = json === null ? undefined : objectLocationOf(json);
    if (location) await this.storage.objects.remove(location);
    await this.delete(this.key(id, ENTRY));
    return json !== null;
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
        await this.dropEntry(id);
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

  private get(key: string): Promise<unknown> {
    return getJson(this.storage.client, this.storage.bucket, key);
  }

  private put(key: string, value: unknown): Promise<void> {
    return putJson(this.storage.client, this.storage.bucket, key, value);
  }

  private delete(key: string): Promise<void> {
    return deleteObject(this.storage.client, this.storage.bucket, key);
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

import { readFile } from 'node:fs/promises';
import { decodeRecordFile } from './slotted-record.js';

/** Client metadata: keys and their decoded values (`Upload-Metadata`). */
export type UploadMetadata = Record<string, string>;

/**
 * What a storage keeps of an upload's bytes in its record (an object store's multipart upload
 * and parts), stored with the offset in one write: opaque to everything but that storage.
 */
export type StorageState = Record<string, unknown>;

/** The on-disk JSON of a record, with tussi's field names so either side can read the other's. */
export interface UploadRecordJson {
  length: number | null;
  offset: number;
  metadata: UploadMetadata;
  server_metadata: Record<string, string>;
  /** The client's Base64 of the metadata values decoding would alter (only when there are such). */
  metadata_encoded?: Record<string, string>;
  /** Unix time, seconds. */
  created_at: number;
  /** Unix time, seconds. */
  last_write: number;
  /** ISO 8601 UTC, set when finalized. */
  finished_at?: string | null;
  /** Seconds from creation to finalization (ISO 8601 durations such as `PT1.5S` are read too). */
  duration?: number | string | null;
  /** Extensions (ignored by tussi): `Upload-Concat` as the client sent it. */
  concat?: string | null;
  /** Of a final upload: the ids of its partial uploads, in order. */
  parts?: string[];
  /** Of a partial upload: final uploads created before it was complete, waiting for it. */
  waiting_finals?: string[];
  /** The principal that created the upload, when ownership is on (ignored by tussi). */
  owner?: string;
  /** The upload sat idle and its remaining bytes are no longer promised (ignored by tussi). */
  promise_lapsed?: boolean;
  /** The storage's state of the bytes (an object store's parts; ignored by tussi). */
  storage?: StorageState;
}

/** What the server knows about one upload. */
export class UploadRecord {
  constructor(
    /** Declared size in bytes (`null` while deferred). */
    public length: number | null,
    /** Bytes received and durable. */
    public offset: number,
    /** Client metadata decoded from `Upload-Metadata`. */
    public metadata: UploadMetadata = {},
    /** Server metadata returned by the `onCreate` hook. */
    public serverMetadata: Record<string, string> = {},
    /** Unix time of creation, seconds. */
    public createdAt: number = Date.now() / 1000,
    /** Unix time of the last successful write, seconds. */
    public lastWrite: number = createdAt,
    /** When the upload was finalized. */
    public finishedAt: Date | null = null,
    /** Seconds from creation to finalization. */
    public duration: number | null = null,
  ) {}

  /** `Upload-Concat` as received at creation (`partial` or `final;<urls>`), or `null`. */
  concat: string | null = null;
  /** Of a final upload: the ids of its partial uploads, in order. */
  parts: string[] = [];
  /** Of a partial upload: final uploads waiting for it to complete. */
  waitingFinals: string[] = [];
  /**
   * The principal that created the upload (`ownership` option): no other principal can reach
   * it. `null` for an upload created without one.
   */
  owner: string | null = null;
  /**
   * The upload sat idle long enough that its remaining bytes are no longer promised (the
   * janitor let the promise lapse, so idle creations do not hold the disk's room for others);
   * it is promised again when its client resumes.
   */
  promiseLapsed = false;
  /**
   * The storage's state of the bytes (`UploadStorage` returns it with each write), stored with
   * the offset that counts them; `null` for storages that keep none (the filesystem).
   */
  storage: StorageState | null = null;
  /** The client's Base64 of the metadata values that decoding would alter (bytes that are not UTF-8, unpadded Base64), for HEAD. */
  encodedMetadata: Record<string, string> = {};

  get isPartial(): boolean {
    return this.concat === 'partial';
  }

  get isFinal(): boolean {
    return this.concat !== null && this.concat.startsWith('final');
  }

  /** The bytes still to come, promised to this upload (0 while its length is deferred). */
  get remaining(): number {
    return this.length === null ? 0 : Math.max(0, this.length - this.offset);
  }

  /** The bytes promised to this upload in the space accounting now. */
  get promised(): number {
    return this.promiseLapsed ? 0 : this.remaining;
  }

  /** True once every declared byte is durable. */
  get isComplete(): boolean {
    return this.length !== null && this.offset === this.length;
  }

  /**
   * What HEAD needs of a finished upload once its consumer took the files (the completed
   * queues' receipt): lengths, client metadata, times, concatenation; no server metadata.
   */
  toReceipt(): UploadRecord {
    const { length, metadata, createdAt } = this;
    const receipt = new UploadRecord(length, length ?? 0, metadata, {}, createdAt, createdAt);
    receipt.finishedAt = this.finishedAt;
    receipt.duration = this.duration;
    receipt.concat = this.concat;
    receipt.encodedMetadata = this.encodedMetadata;
    receipt.owner = this.owner;
    return receipt;
  }

  toJSON(): UploadRecordJson {
    return {
      length: this.length,
      offset: this.offset,
      metadata: this.metadata,
      server_metadata: this.serverMetadata,
      ...(Object.keys(this.encodedMetadata).length > 0 && {
        metadata_encoded: this.encodedMetadata,
      }),
      created_at: this.createdAt,
      last_write: this.lastWrite,
      finished_at: this.finishedAt?.toISOString() ?? null,
      duration: this.duration,
      ...(this.concat !== null && { concat: this.concat }),
      ...(this.parts.length > 0 && { parts: this.parts }),
      ...(this.waitingFinals.length > 0 && { waiting_finals: this.waitingFinals }),
      ...(this.owner !== null && { owner: this.owner }),
      ...(this.promiseLapsed && { promise_lapsed: true }),
      ...(this.storage !== null && { storage: this.storage }),
    };
  }

  /** Parses a record; throws a `SyntaxError` when a required field is missing or mistyped. */
  static fromJSON(value: unknown): UploadRecord {
    const json = value as Partial<UploadRecordJson> | null;
    const isCount = (n: unknown): n is number => Number.isSafeInteger(n) && (n as number) >= 0;
    if (
      typeof json !== 'object' ||
      json === null ||
      !(json.length === null || isCount(json.length)) ||
      !isCount(json.offset) ||
      typeof json.created_at !== 'number'
    ) {
      throw new SyntaxError('not an upload record');
    }
    const record = new UploadRecord(
      json.length,
      json.offset,
      stringMap(json.metadata),
      stringMap(json.server_metadata),
      json.created_at,
      typeof json.last_write === 'number' ? json.last_write : json.created_at,
      json.finished_at ? new Date(json.finished_at) : null,
      parseDuration(json.duration),
    );
    if (typeof json.concat === 'string') record.concat = json.concat;
    record.parts = stringList(json.parts);
    record.waitingFinals = stringList(json.waiting_finals);
    record.encodedMetadata = stringMap(json.metadata_encoded);
    if (typeof json.owner === 'string') record.owner = json.owner;
    record.promiseLapsed = json.promise_lapsed === true;
    if (typeof json.storage === 'object' && json.storage !== null && !Array.isArray(json.storage)) {
      record.storage = json.storage;
    }
    return record;
  }

  /**
   * Reads a record saved as `.meta` (by this server, a consumer's `saveRecord`, or tussi): plain
   * JSON, or a staging record's newest slot (see `slotted-record.ts`).
   */
  static async fromFile(path: string): Promise<UploadRecord> {
    const decoded = decodeRecordFile(await readFile(path, 'utf8'));
    if (!decoded) throw new SyntaxError(`${path}: no valid slot`);
    return UploadRecord.fromJSON(JSON.parse(decoded.json));
  }
}

function stringList(value: unknown): string[] {
  return Array.isArray(value) ? value.filter((v): v is string => typeof v === 'string') : [];
}

function stringMap(value: unknown): Record<string, string> {
  if (typeof value !== 'object' || value === null) return {};
  return Object.fromEntries(
    Object.entries(value).filter(
      (entry): entry is [string, string] => typeof entry[1] === 'string',
    ),
  );
}

/** Seconds from a number or an ISO 8601 duration (`PT1H2M3.5S`, `P1DT2S`) as pydantic writes. */
function parseDuration(value: unknown): number | null {
  if (typeof value === 'number') return value;
  if (typeof value !== 'string') return null;
  const m =
    /^(-)?P(?:(\d+(?:\.\d+)?)D)?(?:T(?:(\d+(?:\.\d+)?)H)?(?:(\d+(?:\.\d+)?)M)?(?:(\d+(?:\.\d+)?)S)?)?$/.exec(
      value,
    );
  if (!m) return null;
  const [, sign, d = '0', h = '0', min = '0', s = '0'] = m;
  const seconds = Number(d) * 86400 + Number(h) * 3600 + Number(min) * 60 + Number(s);
  return sign ? -seconds : seconds;
}

import { randomBytes } from 'node:crypto';
import { createReadStream } from 'node:fs';
import { tmpdir } from 'node:os';
import { rm } from 'node:fs/promises';
import { PassThrough, type Readable } from 'node:stream';
import {
  AbortMultipartUploadCommand,
  CompleteMultipartUploadCommand,
  CreateMultipartUploadCommand,
  GetObjectCommand,
  HeadObjectCommand,
  ListMultipartUploadsCommand,
  ListObjectsV2Command,
  PutObjectCommand,
  UploadPartCommand,
  UploadPartCopyCommand,
  type S3Client,
} from '@aws-sdk/client-s3';
import type { StorageState, UploadMetadata } from '../core/upload-record.js';
import type { ObjectLocation, StoredObjects } from '../queue/completed-upload.queue.js';
import { safeFilename } from '../queue/safe-filename.js';
import type {
  BodySink,
  UploadStorage,
  WriteOptions,
  WriteOutcome,
} from '../storage/storage.interfaces.js';
import {
  MAX_PARTS,
  MAX_PART_SIZE,
  MIN_PART_SIZE,
  createS3Client,
  deleteObject,
  isNotFound,
  listObjects,
  type S3StorageOptions,
} from './s3-client.js';
import {
  MAX_UPLOAD_SIZE,
  nextPartSize,
  parseManifest,
  partsEnd,
  type Manifest,
  type ManifestPart,
  type ManifestTail,
} from './s3-manifest.js';
import { S3CompletedEntries } from './s3-completed.entries.js';
import { S3RecordStore } from './s3-record.store.js';
import { SpoolFile, spoolDirectory } from './s3-spool.js';

/** Parts sent to S3 at once per upload, while the next one is collected. */
const PARTS_IN_FLIGHT = 2;

const notFound = (what: string) => Object.assign(new Error(`${what} is gone`), { code: 'ENOENT' });

/** The bytes of an upload as S3 has them, for one write. */
interface WriteState {
  /** The stored state the write starts from. */
  manifest: Manifest;
  parts: ManifestPart[];
  /** Parts on their way, in order. */
  inFlight: Promise<ManifestPart>[];
  /** Bytes of the parts in flight. */
  sending: number;
  spool: SpoolFile | null;
  partSize: number;
  failure?: Error;
  /** The write no longer counts (its lock was lost): nothing more is sent. */
  lost?: AbortSignal;
}

/**
 * Uploads straight into S3: each upload is one S3 multipart upload of `{prefix}{id}`. A body is
 * spooled to a local file one part at a time (never held in memory) and each full part is sent
 * while the next is collected; what is left below a part's size when the body ends is kept as
 * an object of its own (`{prefix}{id}.tail.{hex}`) and prepended to the next write, so every
 * byte acknowledged is in S3. `{prefix}{id}.upload` (the manifest) lists the parts with their
 * ETags. Once every byte is in, `complete()` completes the multipart upload into `{prefix}{id}`,
 * with the client's `filetype` and a safe `filename` as its Content-Type and Content-Disposition.
 */
export class S3Storage implements UploadStorage {
  readonly client: S3Client;
  readonly bucket: string;
  readonly prefix: string;
  private readonly basePartSize: number;
  private readonly spoolDir: string;
  /** Bytes S3 takes in one object; larger lengths are refused at creation (413). */
  readonly maxLength = MAX_UPLOAD_SIZE;
  /** The bytes of an open upload cannot be read back before `complete()`. */
  readonly readsOpenUploads = false;
  /** Records as objects beside the data. */
  readonly recordStore: S3RecordStore;
  /** The completed queue's entries as objects beside the finished ones (for Redis claims). */
  readonly completedEntries: S3CompletedEntries;

  constructor(
    private readonly options: S3StorageOptions & {
      /** The largest upload the server takes (`maxSize`): sizes the parts of deferred lengths. */
      maxSize?: number;
      /** Where entries set aside are reported. @default console.warn */
      log?: (message: string) => void;
    },
    client?: S3Client,
  ) {
    this.client = client ?? createS3Client(options);
    this.bucket = options.bucket;
    this.prefix = options.prefix ?? '';
    this.basePartSize = options.partSize ?? 8 * 1024 * 1024;
    this.spoolDir = spoolDirectory(options.scratchDir ?? tmpdir());
    this.recordStore = new S3RecordStore(this.client, this.bucket, this.prefix);
    this.completedEntries = new S3CompletedEntries(this, options.log);
  }

  key(id: string): string {
    return `${this.prefix}${id}`;
  }

  /** Fails with one clear line when the bucket is missing or the credentials are refused. */
  async check(): Promise<void> {
    try {
      await this.client.send(
        new ListObjectsV2Command({ Bucket: this.bucket, Prefix: this.prefix, MaxKeys: 1 }),
      );
    } catch (e) {
      const err = e as { name?: string; message?: string; $metadata?: { httpStatusCode?: number } };
      const status = err.$metadata?.httpStatusCode;
      const why =
        err.name === 'NoSuchBucket' || status === 404
          ? 'the bucket does not exist'
          : status === 403 || err.name === 'InvalidAccessKeyId' || err.name === 'AccessDenied'
            ? 'access denied (check the credentials and the bucket policy)'
            : `${err.name ?? 'error'}: ${err.message ?? String(e)}`;
      throw new Error(
        `S3 bucket ${this.bucket}${this.options.endpoint ? ` at ${this.options.endpoint}` : ''}: ${why}`,
        { cause: e },
      );
    }
  }

  async create(
    id: string,
    length: number | null,
    metadata: UploadMetadata = {},
  ): Promise<StorageState> {
    if (length !== null && length > this.maxLength) {
      throw Object.assign(new Error('larger than an S3 object can be'), { code: 'EFBIG' });
    }
    const headers = objectHeaders(metadata);
    const created = await this.client.send(
      new CreateMultipartUploadCommand({ Bucket: this.bucket, Key: this.key(id), ...headers }),
    );
    const manifest: Manifest = {
      v: 1,
      uploadId: created.UploadId!,
      headers,
      length,
      parts: [],
      tail: null,
      end: 0,
      garbage: [],
    };
    return toState(manifest);
  }

  async allocate(id: string, length: number, state?: StorageState | null): Promise<StorageState> {
    if (length > this.maxLength) {
      throw Object.assign(new Error('larger than an S3 object can be'), { code: 'EFBIG' });
    }
    return toState({ ...parseManifest(state), length });
  }

  async openWrite(id: string, offset: number, options: WriteOptions): Promise<BodySink> {
    const manifest = parseManifest(options.state);
    // The record's offset and this state are stored together: they never disagree.
    if (offset !== manifest.end) {
      throw new Error(`${id}: S3 holds ${manifest.end} bytes, the record says ${offset}`);
    }
    // Pieces the stored state replaced, and those of writes never counted (refused, cut by a
    // crash of the request) that this process knows of: no state names them any more.
    const stale = [...manifest.garbage, ...this.takeUncounted(id)].filter(
      (key) => key !== manifest.tail?.key,
    );
    const state: WriteState = {
      manifest,
      parts: [...manifest.parts],
      inFlight: [],
      sending: 0,
      spool: null,
      partSize: 0,
      lost: options.lost,
    };
    return {
      write: (chunks) => this.spoolChunks(id, state, chunks),
      finish: async () => {
        try {
          return await this.commit(id, state, offset);
        } finally {
          await state.spool?.remove();
          await this.deleteKeys(stale).catch(() => {});
        }
      },
    };
  }

  /** Trailing pieces stored by writes of `id` whose state was not (yet) stored. */
  private readonly uncounted = new Map<string, Set<string>>();

  private takeUncounted(id: string): string[] {
    const keys = this.uncounted.get(id);
    this.uncounted.delete(id);
    return keys ? [...keys] : [];
  }

  /**
   * Appends a completed upload's bytes to an open one inside S3 (`UploadPartCopy`: nothing
   * passes through this server), as concatenation does with partials. Only whole parts can be
   * copied: `null` (the caller streams the bytes instead) when the source is below S3's
   * smallest part or the target has a trailing piece to put first.
   */
  async copyFrom(
    id: string,
    offset: number,
    sourceId: string,
    length: number,
    state?: StorageState | null,
  ): Promise<StorageState | null> {
    if (length < MIN_PART_SIZE) return null;
    const manifest = parseManifest(state);
    if (offset !== manifest.end || manifest.tail) return null;
    const count = Math.ceil(length / MAX_PART_SIZE);
    const size = Math.ceil(length / count);
    if (manifest.parts.length + count > MAX_PARTS) return null;
    const parts = [...manifest.parts];
    for (let start = 0; start < length; start += size) {
      const last = Math.min(length, start + size) - 1;
      const range = `bytes=${start}-${last}`;
      const etag = await this.copyPart(id, manifest, parts.length + 1, this.key(sourceId), range);
      parts.push({ etag, size: last - start + 1 });
    }
    return toState({ ...manifest, parts, end: offset + length, garbage: [] });
  }

  /** Sends a closed spool file as part `partNumber` of the upload (streamed from the file). */
  private async uploadPart(
    id: string,
    manifest: Manifest,
    partNumber: number,
    spool: SpoolFile,
  ): Promise<ManifestPart> {
    const sent = await this.client.send(
      new UploadPartCommand({
        Bucket: this.bucket,
        Key: this.key(id),
        UploadId: manifest.uploadId,
        PartNumber: partNumber,
        ContentLength: spool.size,
        Body: createReadStream(spool.path, { highWaterMark: 256 * 1024 }),
      }),
    );
    return { etag: sent.ETag ?? '', size: spool.size };
  }

  /** Copies an object (or a range of it) in as part `partNumber`, inside S3; its ETag. */
  private async copyPart(
    id: string,
    manifest: Manifest,
    partNumber: number,
    sourceKey: string,
    range?: string,
  ): Promise<string> {
    const copied = await this.client.send(
      new UploadPartCopyCommand({
        Bucket: this.bucket,
        Key: this.key(id),
        UploadId: manifest.uploadId,
        PartNumber: partNumber,
        CopySource: `${this.bucket}/${encodeKey(sourceKey)}`,
        ...(range && { CopySourceRange: range }),
      }),
    );
    return copied.CopyPartResult?.ETag ?? '';
  }

  /** Collects chunks into the current part; a full part is sent while the next is collected. */
  private async spoolChunks(id: string, state: WriteState, chunks: Buffer[]): Promise<void> {
    if (state.failure) throw toError(state.failure);
    if (!state.spool) {
      state.spool = await this.newSpool(id, state);
      // The trailing piece of the last write goes first: it is the start of this part.
      if (state.manifest.tail) {
        await state.spool.appendStream(await this.getStream(state.manifest.tail.key));
      }
    }
    let rest = chunks;
    for (;;) {
      const spool = state.spool;
      const room = state.partSize - spool.size;
      const { head, tail, bytes } = split(rest, room);
      if (bytes > 0) await spool.append(head);
      if (spool.size < state.partSize) return;
      await this.sendPart(id, state);
      if (state.failure) throw toError(state.failure);
      rest = tail;
      if (rest.length === 0) return;
    }
  }

  private async newSpool(id: string, state: WriteState): Promise<SpoolFile> {
    const index = state.parts.length + state.inFlight.length;
    const start = partsEnd(state.parts) + state.sending;
    const bound = state.manifest.length ?? this.options.maxSize ?? null;
    state.partSize = nextPartSize(index, start, bound, this.basePartSize);
    return SpoolFile.create(this.spoolDir, id);
  }

  /** Sends the full spool file as the next part; at most `PARTS_IN_FLIGHT` at once. */
  private async sendPart(id: string, state: WriteState): Promise<void> {
    if (state.lost?.aborted) state.failure ??= lockLost();
    if (state.failure) return;
    const spool = state.spool!;
    await spool.close();
    const partNumber = state.parts.length + state.inFlight.length + 1;
    const size = spool.size;
    const sending = this.uploadPart(id, state.manifest, partNumber, spool).finally(() =>
      spool.remove(),
    );
    // Rejections are read in order by `settleParts`; none is left unhandled meanwhile.
    sending.catch(() => {});
    state.inFlight.push(sending);
    state.sending += size;
    state.spool = await this.newSpool(id, state);
    while (state.inFlight.length >= PARTS_IN_FLIGHT) await this.settleOldest(state);
  }

  /** Waits for the oldest part in flight; a failure stops the write after the parts before it. */
  private async settleOldest(state: WriteState): Promise<void> {
    const oldest = state.inFlight.shift()!;
    try {
      const part = await oldest;
      state.sending -= part.size;
      if (!state.failure) state.parts.push(part);
    } catch (e) {
      state.failure ??= e as Error;
    }
  }

  /**
   * After the body: waits for the parts in flight, then stores what is left as the trailing
   * piece (or, when it is the last byte of the upload, as the last part). Counts the bytes of
   * the body that are in S3, and returns the state that lists them.
   */
  private async commit(id: string, state: WriteState, offset: number): Promise<WriteOutcome> {
    while (state.inFlight.length > 0) await this.settleOldest(state);
    const { manifest } = state;
    if (state.lost?.aborted) state.failure ??= lockLost();
    let error = state.failure;
    let tail: ManifestTail | null = null;
    const spool = state.spool;
    const rest = !state.failure && spool !== null && spool.size > 0 ? spool : null;
    // The write that brings the last byte sends what is left as the last part (S3 takes a last
    // part of any size): no trailing piece to copy in and delete when the upload completes.
    const last =
      manifest.length !== null && partsEnd(state.parts) + (rest?.size ?? 0) === manifest.length;
    if (rest) {
      await rest.close();
      try {
        if (last) {
          state.parts.push(await this.uploadPart(id, manifest, state.parts.length + 1, rest));
        } else {
          const key = `${this.key(id)}.tail.${randomBytes(6).toString('hex')}`;
          await this.client.send(
            new PutObjectCommand({
              Bucket: this.bucket,
              Key: key,
              ContentLength: rest.size,
              Body: createReadStream(rest.path, { highWaterMark: 256 * 1024 }),
            }),
          );
          tail = { key, size: rest.size };
          let keys = this.uncounted.get(id);
          if (!keys) this.uncounted.set(id, (keys = new Set()));
          keys.add(key);
        }
      } catch (e) {
        error ??= e as Error;
      }
    }
    const end = partsEnd(state.parts) + (tail?.size ?? 0);
    // Nothing new (the body brought nothing, or a failure lost the bytes past the offset):
    // the stored state stays as it is.
    if (end <= offset) {
      if (tail) await this.deleteKeys([tail.key]).catch(() => {});
      return { bytes: 0, ...(error && { error }) };
    }
    const next: Manifest = {
      ...manifest,
      parts: state.parts,
      tail,
      end,
      // The trailing piece this one replaces goes once this state is stored.
      garbage: manifest.tail ? [manifest.tail.key] : [],
    };
    return { bytes: end - offset, state: toState(next), ...(error && { error }) };
  }

  /**
   * Completes the multipart upload: the trailing piece becomes the last part (copied inside
   * S3), and `{prefix}{id}` holds every byte. Safe to call again (after a crash, a retry): the
   * multipart upload is gone then, and the object whole.
   */
  async complete(id: string, state?: StorageState | null): Promise<void> {
    const manifest = parseManifest(state);
    if (manifest.length !== null && manifest.end !== manifest.length) {
      throw new Error(`${id}: S3 holds ${manifest.end} of ${manifest.length} bytes`);
    }
    const parts = [...manifest.parts];
    try {
      if (manifest.tail) {
        const etag = await this.copyPart(id, manifest, parts.length + 1, manifest.tail.key);
        parts.push({ etag, size: manifest.tail.size });
      }
      if (parts.length === 0) {
        // S3 cannot complete a multipart upload of no part: an empty object instead.
        await this.abort(id, manifest.uploadId);
        await this.client.send(
          new PutObjectCommand({
            Bucket: this.bucket,
            Key: this.key(id),
            Body: '',
            ContentLength: 0,
            ...manifest.headers,
          }),
        );
      } else {
        await this.client.send(
          new CompleteMultipartUploadCommand({
            Bucket: this.bucket,
            Key: this.key(id),
            UploadId: manifest.uploadId,
            MultipartUpload: {
              Parts: parts.map((p, i) => ({ ETag: p.etag, PartNumber: i + 1 })),
            },
          }),
        );
      }
    } catch (e) {
      if (!isNotFound(e)) throw e;
      // Completed before (a crash, a retry): the object is there whole. Otherwise it is gone.
      if ((await this.objectSize(id)) !== manifest.end) throw notFound(id);
    }
    // Every trailing piece of the upload goes: those its record names, and any a writer killed
    // before its record was stored left (no one else knows of those; the object is whole now).
    const tails = new Set(
      [manifest.tail?.key, ...manifest.garbage, ...this.takeUncounted(id)].filter(
        (k): k is string => k !== undefined,
      ),
    );
    try {
      for (const object of await this.listKeys(`${this.key(id)}.tail.`)) tails.add(object.key);
    } catch {
      // The janitor's sweep deletes what a failed listing leaves.
    }
    await this.deleteKeys(tails).catch(() => {});
  }

  /** Reads a completed upload's object (an open one cannot be read: see `readsOpenUploads`). */
  read(id: string, start: number, length: number): Readable {
    const out = new PassThrough();
    if (length === 0) {
      out.end();
      return out;
    }
    void (async () => {
      const got = await this.client.send(
        new GetObjectCommand({
          Bucket: this.bucket,
          Key: this.key(id),
          Range: `bytes=${start}-${start + length - 1}`,
        }),
      );
      const source = got.Body as Readable;
      source.on('error', (e) => out.destroy(e));
      source.pipe(out);
    })().catch((e: Error) => out.destroy(e));
    return out;
  }

  finishedObject(id: string): ObjectLocation {
    return { bucket: this.bucket, key: this.key(id) };
  }

  readonly objects: StoredObjects = {
    read: async (location) => {
      const got = await this.client.send(
        new GetObjectCommand({ Bucket: location.bucket, Key: location.key }),
      );
      return got.Body as Readable;
    },
    remove: (location) => deleteObject(this.client, location.bucket, location.key),
  };

  async remove(id: string, state?: StorageState | null): Promise<void> {
    let manifest: Manifest | undefined;
    try {
      manifest = parseManifest(state);
    } catch {
      // No state: nothing to abort, the objects are still deleted.
    }
    if (manifest) await this.abort(id, manifest.uploadId);
    this.uncounted.delete(id);
    const keys = new Set<string>([this.key(id)]);
    for (const object of await this.listKeys(`${this.key(id)}.tail.`)) keys.add(object.key);
    await this.deleteKeys(keys);
  }

  /** The uploads with a record (their state is in it), and how old it is. */
  list(): Promise<{ id: string; ageMs: number }[]> {
    return this.recordStore.listAged();
  }

  /**
   * Clean-up for the janitor: aborts multipart uploads older than `ageMs` that no record
   * names (a crash between creating one and storing the record), and deletes trailing pieces
   * as old that their upload's record no longer names (a crash, or a write never counted,
   * before the next write could). Returns how many it removed.
   */
  async sweep(ageMs: number): Promise<number> {
    const before = Date.now() - ageMs;
    const manifests = new Map<string, Manifest | null>();
    const manifestOf = async (id: string) => {
      if (!manifests.has(id)) manifests.set(id, await this.stateOf(id).catch(() => null));
      return manifests.get(id)!;
    };
    let removed = 0;
    let keyMarker: string | undefined;
    let uploadIdMarker: string | undefined;
    do {
      const page = await this.client.send(
        new ListMultipartUploadsCommand({
          Bucket: this.bucket,
          Prefix: this.prefix,
          KeyMarker: keyMarker,
          UploadIdMarker: uploadIdMarker,
        }),
      );
      for (const upload of page.Uploads ?? []) {
        if (!upload.Key || !upload.UploadId || (upload.Initiated?.getTime() ?? 0) > before)
          continue;
        const manifest = await manifestOf(upload.Key.slice(this.prefix.length));
        if (manifest?.uploadId === upload.UploadId) continue;
        await this.abort(upload.Key.slice(this.prefix.length), upload.UploadId);
        removed++;
      }
      keyMarker = page.IsTruncated ? page.NextKeyMarker : undefined;
      uploadIdMarker = page.IsTruncated ? page.NextUploadIdMarker : undefined;
    } while (keyMarker);
    for (const { key, modified } of await this.listKeys(this.prefix)) {
      const m = /^(.+)\.tail\.[0-9a-f]+$/.exec(key.slice(this.prefix.length));
      if (!m || modified > before) continue;
      const manifest = await manifestOf(m[1]);
      const named = [manifest?.tail?.key, ...(manifest?.garbage ?? [])];
      if (named.includes(key)) continue;
      await this.deleteKeys([key]);
      removed++;
    }
    return removed;
  }

  /** Stops the client and removes this process's spool directory. */
  async close(): Promise<void> {
    this.client.destroy();
    await rm(this.spoolDir, { recursive: true, force: true });
  }

  /** The state an upload's stored record holds, or `null` when it has no record. */
  async stateOf(id: string): Promise<Manifest | null> {
    const record = await this.recordStore.get(id);
    return record ? parseManifest(record.storage) : null;
  }

  private async getStream(key: string): Promise<Readable> {
    const got = await this.client.send(new GetObjectCommand({ Bucket: this.bucket, Key: key }));
    return got.Body as Readable;
  }

  private async abort(id: string, uploadId: string): Promise<void> {
    await this.client
      .send(
        new AbortMultipartUploadCommand({
          Bucket: this.bucket,
          Key: this.key(id),
          UploadId: uploadId,
        }),
      )
      .catch((e) => {
        if (!isNotFound(e)) throw e;
      });
  }

  private async objectSize(id: string): Promise<number | null> {
    try {
      const head = await this.client.send(
        new HeadObjectCommand({ Bucket: this.bucket, Key: this.key(id) }),
      );
      return head.ContentLength ?? null;
    } catch (e) {
      if (isNotFound(e)) return null;
      throw e;
    }
  }

  private listKeys(prefix: string): Promise<{ key: string; modified: number }[]> {
    return listObjects(this.client, this.bucket, prefix);
  }

  private async deleteKeys(keys: Iterable<string>): Promise<void> {
    await Promise.all([...keys].map((key) => deleteObject(this.client, this.bucket, key)));
  }
}

const lockLost = () => new Error('the upload lock was lost: this write no longer counts');

const toError = (e: unknown): Error => (e instanceof Error ? e : new Error(String(e)));

/** The first `room` bytes of the chunks, and the rest. */
function split(chunks: Buffer[], room: number): { head: Buffer[]; tail: Buffer[]; bytes: number } {
  const head: Buffer[] = [];
  let bytes = 0;
  let i = 0;
  for (; i < chunks.length && bytes < room; i++) {
    const c = chunks[i];
    if (bytes + c.length <= room) {
      head.push(c);
      bytes += c.length;
    } else {
      const cut = room - bytes;
      head.push(c.subarray(0, cut));
      bytes += cut;
      return { head, tail: [c.subarray(cut), ...chunks.slice(i + 1)], bytes };
    }
  }
  return { head, tail: chunks.slice(i), bytes };
}

/** A key in `x-amz-copy-source`: each path segment URL-encoded. */
function encodeKey(key: string): string {
  return key.split('/').map(encodeURIComponent).join('/');
}

/**
 * What a finished object says of itself: the client's `filetype` as Content-Type when it is a
 * plain media type, its `filename` made safe as an attachment's name.
 */
export function objectHeaders(metadata: UploadMetadata): {
  ContentType?: string;
  ContentDisposition?: string;
} {
  const headers: { ContentType?: string; ContentDisposition?: string } = {};
  const type = metadata.filetype ?? metadata.type;
  if (type && /^[a-z0-9!#$&^_.+-]+\/[a-z0-9!#$&^_.+-]+$/i.test(type) && type.length <= 255) {
    headers.ContentType = type;
  }
  const name = metadata.filename ?? metadata.name;
  const safe = name ? safeFilename(name) : '';
  if (safe) {
    const ascii = safe.replace(/[^\x20-\x7e]|["\\%]/g, '_');
    headers.ContentDisposition = `attachment; filename="${ascii}"; filename*=UTF-8''${encodeURIComponent(safe)}`;
  }
  return headers;
}

/** A manifest as the opaque state a record keeps. */
function toState(manifest: Manifest): StorageState {
  return manifest as unknown as StorageState;
}

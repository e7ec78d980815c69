import {
  DeleteObjectCommand,
  GetObjectCommand,
  ListObjectsV2Command,
  PutObjectCommand,
  S3Client,
  type S3ClientConfig,
} from '@aws-sdk/client-s3';

/** Where the S3 storage keeps uploads: `storage: { s3: { ... } }` of `TusModule.forRoot()`. */
export interface S3StorageOptions {
  /** The bucket; it must exist (start-up checks it). */
  bucket: string;
  /**
   * Put before every key (`uploads/` keeps them in one "folder" of a shared bucket).
   * @default ''
   */
  prefix?: string;
  /** An S3-compatible server (MinIO, Ceph RADOS Gateway, R2): its URL. @default AWS */
  endpoint?: string;
  /** @default 'us-east-1' */
  region?: string;
  /** `http://host/bucket/key` instead of `http://bucket.host/key` (most servers but AWS need it). */
  forcePathStyle?: boolean;
  /**
   * Smallest part of the multipart uploads (S3 wants at least 5 MiB): it grows so that any
   * upload fits in S3's 10,000 parts. A PATCH below it is kept as a trailing piece.
   * @default 8 MiB
   */
  partSize?: number;
  /**
   * A local directory where each part is spooled before it goes to S3 (at most a few parts per
   * upload in flight), so a body never sits in memory. @default the OS temp directory
   */
  scratchDir?: string;
  /**
   * Any other setting of the SDK client (credentials, retries, a custom request handler).
   * Credentials otherwise come from the SDK's standard chain (environment, profiles, roles).
   */
  client?: S3ClientConfig;
}

/** S3's smallest part, but for the last one. */
export const MIN_PART_SIZE = 5 * 1024 * 1024;
/** S3's largest part. */
export const MAX_PART_SIZE = 5 * 1024 * 1024 * 1024;
/** S3's largest object (a bigger upload could never complete). */
export const MAX_OBJECT_SIZE = 5 * 1024 ** 4;
/** S3's most parts of one multipart upload. */
export const MAX_PARTS = 10_000;

/**
 * A client for the options. Checksums only when the API requires them: a streamed part would
 * otherwise be sent `aws-chunked` with a trailing checksum, which several S3-compatible servers
 * refuse, and the protocol checks its own checksums while the bytes stream.
 */
export function createS3Client(options: S3StorageOptions): S3Client {
  return new S3Client({
    region: options.region ?? 'us-east-1',
    ...(options.endpoint !== undefined && { endpoint: options.endpoint }),
    forcePathStyle: options.forcePathStyle ?? false,
    requestChecksumCalculation: 'WHEN_REQUIRED',
    responseChecksumValidation: 'WHEN_REQUIRED',
    ...options.client,
  });
}

/** Every object whose key starts with `prefix`, with when it was last written (ms). */
export async function listObjects(
  client: S3Client,
  bucket: string,
  prefix: string,
): Promise<{ key: string; modified: number }[]> {
  const found: { key: string; modified: number }[] = [];
  let token: string | undefined;
  do {
    const page = await client.send(
      new ListObjectsV2Command({ Bucket: bucket, Prefix: prefix, ContinuationToken: token }),
    );
    for (const o of page.Contents ?? []) {
      if (o.Key) found.push({ key: o.Key, modified: o.LastModified?.getTime() ?? Date.now() });
    }
    token = page.IsTruncated ? page.NextContinuationToken : undefined;
  } while (token);
  return found;
}

/** A small JSON object (a record, a queue entry), parsed; `null` when there is none. */
export async function getJson(client: S3Client, bucket: string, key: string): Promise<unknown> {
  try {
    const got = await client.send(new GetObjectCommand({ Bucket: bucket, Key: key }));
    return JSON.parse(await got.Body!.transformToString()) as unknown;
  } catch (e) {
    if (isNotFound(e)) return null;
    throw e;
  }
}

/** Stores `value` as JSON under `key`, replacing any object there whole. */
export async function putJson(
  client: S3Client,
  bucket: string,
  key: string,
  value: unknown,
): Promise<void> {
  await client.send(
    new PutObjectCommand({
      Bucket: bucket,
      Key: key,
      Body: JSON.stringify(value),
      ContentType: 'application/json',
    }),
  );
}

/** Deletes an object; one that is not there is not an error. */
export async function deleteObject(client: S3Client, bucket: string, key: string): Promise<void> {
  await client.send(new DeleteObjectCommand({ Bucket: bucket, Key: key })).catch((e) => {
    if (!isNotFound(e)) throw e;
  });
}

/** True for the SDK's "no such key / upload / bucket" answers (404s). */
export function isNotFound(error: unknown): boolean {
  const e = error as { name?: string; Code?: string; $metadata?: { httpStatusCode?: number } };
  return (
    e?.name === 'NoSuchKey' ||
    e?.name === 'NotFound' ||
    e?.name === 'NoSuchUpload' ||
    e?.Code === 'NoSuchKey' ||
    e?.$metadata?.httpStatusCode === 404
  );
}

/**
 * Every refusal the server can answer, as a catalog of stable machine codes with their HTTP
 * status (tusd's style). Handlers throw a `TusError`; the adapter turns it into a response.
 */
export class TusError extends Error {
  constructor(
    /** Stable machine-readable code, e.g. `ERR_MISMATCHED_OFFSET`. */
    readonly code: string,
    /** HTTP status of the response. */
    readonly status: number,
    message: string,
    /** Extra response headers (e.g. the current `Upload-Offset` on a 409). */
    readonly headers: Readonly<Record<string, string>> = {},
  ) {
    super(message);
    this.name = 'TusError';
  }

  /** The same error with more response headers. */
  withHeaders(headers: Record<string, string>): TusError {
    return new TusError(this.code, this.status, this.message, { ...this.headers, ...headers });
  }
}

const define = (code: string, status: number, message: string) => () =>
  new TusError(code, status, message);

/** The catalog. Each entry is a factory so a thrown error never shares state with another. */
export const TusErrors = {
  unsupportedVersion: () =>
    new TusError('ERR_UNSUPPORTED_VERSION', 412, 'unsupported version', { 'Tus-Version': '1.0.0' }),
  invalidContentType: define(
    'ERR_INVALID_CONTENT_TYPE',
    415,
    'missing or invalid Content-Type header',
  ),
  invalidUploadLength: define(
    'ERR_INVALID_UPLOAD_LENGTH',
    400,
    'missing or invalid Upload-Length header',
  ),
  invalidOffset: define('ERR_INVALID_OFFSET', 400, 'missing or invalid Upload-Offset header'),
  invalidMetadata: define('ERR_INVALID_METADATA', 400, 'invalid Upload-Metadata header'),
  metadataTooLarge: define('ERR_METADATA_TOO_LARGE', 400, 'Upload-Metadata header too large'),
  invalidHost: define('ERR_INVALID_HOST', 400, 'missing or invalid Host header'),
  invalidContentLength: define('ERR_INVALID_CONTENT_LENGTH', 400, 'invalid Content-Length header'),
  invalidPath: define('ERR_INVALID_PATH', 400, 'malformed percent-encoding in the request path'),
  notFound: define('ERR_UPLOAD_NOT_FOUND', 404, 'upload not found'),
  methodNotAllowed: () =>
    new TusError('ERR_METHOD_NOT_ALLOWED', 405, 'method not allowed', {
      Allow: 'OPTIONS, POST, HEAD, PATCH, DELETE',
    }),
  mismatchedOffset: (current: number) =>
    new TusError('ERR_MISMATCHED_OFFSET', 409, 'mismatched offset', {
      'Upload-Offset': String(current),
    }),
  maxSizeExceeded: define('ERR_MAX_SIZE_EXCEEDED', 413, 'maximum size exceeded'),
  uploadLengthExceeded: define('ERR_UPLOAD_LENGTH_EXCEEDED', 413, 'body exceeds the upload length'),
  chunkTooLarge: define('ERR_CHUNK_TOO_LARGE', 413, 'request body exceeds the maximum chunk size'),
  uploadLocked: define('ERR_UPLOAD_LOCKED', 423, 'upload is locked by another request'),
  uploadInterrupted: define(
    'ERR_UPLOAD_INTERRUPTED',
    423,
    'a newer request for this upload took over; the bytes received are kept',
  ),
  uploadExpired: define('ERR_UPLOAD_EXPIRED', 410, 'upload has expired'),
  uploadTerminated: define(
    'ERR_UPLOAD_TERMINATED',
    410,
    'the upload was terminated (DELETE) while this request was sending it',
  ),
  invalidDeferLength: define(
    'ERR_INVALID_UPLOAD_DEFER_LENGTH',
    400,
    'invalid Upload-Defer-Length header',
  ),
  lengthAndDefer: define(
    'ERR_AMBIGUOUS_UPLOAD_LENGTH',
    400,
    'Upload-Length and Upload-Defer-Length must not be sent together',
  ),
  lengthAlreadySet: define('ERR_INVALID_UPLOAD_LENGTH', 400, 'the upload length cannot be changed'),
  invalidChecksum: define('ERR_INVALID_CHECKSUM', 400, 'invalid Upload-Checksum header'),
  unsupportedChecksumAlgorithm: define(
    'ERR_UNSUPPORTED_CHECKSUM_ALGORITHM',
    400,
    'unsupported checksum algorithm',
  ),
  checksumMismatch: define('ERR_CHECKSUM_MISMATCH', 460, 'checksum mismatch'),
  unannouncedChecksumTrailer: define(
    'ERR_UNANNOUNCED_CHECKSUM_TRAILER',
    400,
    'an Upload-Checksum trailer must be announced with Trailer: Upload-Checksum',
  ),
  invalidConcat: define('ERR_INVALID_CONCAT', 400, 'invalid Upload-Concat header'),
  duplicatePart: define(
    'ERR_DUPLICATE_PART',
    400,
    'a final upload may name each partial upload only once',
  ),
  tooManyParts: define('ERR_TOO_MANY_PARTS', 400, 'a final upload names too many partial uploads'),
  partialInUse: define(
    'ERR_PARTIAL_IN_USE',
    409,
    'the partial upload is already part of as many final uploads as allowed',
  ),
  partialGone: define(
    'ERR_PARTIAL_GONE',
    410,
    'a partial upload of this final upload was terminated or expired',
  ),
  modifyFinal: define('ERR_MODIFY_FINAL', 403, 'a final upload cannot be modified'),
  unfinishedPartials: define(
    'ERR_PARTIALS_UNFINISHED',
    400,
    'the partial uploads are not complete',
  ),
  insufficientStorage: define('ERR_INSUFFICIENT_STORAGE', 507, 'insufficient storage'),
  internal: define('ERR_INTERNAL_SERVER_ERROR', 500, 'internal server error'),
  /** Redis (the coordination of several replicas) cannot be reached: retry later. */
  redisUnavailable: () =>
    new TusError('ERR_REDIS_UNAVAILABLE', 503, 'coordination service unavailable, retry later', {
      'Retry-After': '1',
    }),
  /**
   * The server is shutting down: a request it no longer takes, or a body cut at the shutdown's
   * deadline (its bytes kept). Retry: behind a balancer, another replica answers.
   */
  shuttingDown: () =>
    new TusError('ERR_SHUTTING_DOWN', 503, 'the server is shutting down, retry', {
      'Retry-After': '5',
      Connection: 'close',
    }),
  /** The upload's lock lease ran out (or was taken over) while the request wrote: retry. */
  lockLost: () =>
    new TusError('ERR_LOCK_LOST', 503, 'the upload lock was lost while writing, retry', {
      'Retry-After': '1',
    }),
} as const;

/** True for a length the filesystem cannot hold at all (fallocate's EFBIG, EINVAL). */
export function isTooLargeError(error: unknown): boolean {
  const e = error as NodeJS.ErrnoException | null;
  if (e?.code === 'EFBIG') return true;
  const reserving = e?.syscall === 'ftruncate' || e?.message?.startsWith('fallocate') === true;
  return e?.code === 'EINVAL' && reserving;
}

/** True for errors a full or over-quota disk raises. */
export function isNoSpaceError(error: unknown): boolean {
  const code = (error as NodeJS.ErrnoException | null)?.code;
  return code === 'ENOSPC' || code === 'EDQUOT';
}

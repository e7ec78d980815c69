import { TusErrors } from './tus-error.js';

/** The protocol version this server speaks. */
export const TUS_VERSION = '1.0.0';
export const OFFSET_OCTET_STREAM = 'application/offset+octet-stream';

/** Request headers as Node gives them: lower-case names, repeated headers as arrays. */
export type RequestHeaders = Readonly<Record<string, string | string[] | undefined>>;

/**
 * One header's value. A header the client sent twice with different values is ambiguous and is
 * refused with `onAmbiguous` (HTTP lets a proxy fold repeats, so identical repeats are accepted).
 */
export function headerValue(
  headers: RequestHeaders,
  name: string,
  onAmbiguous: () => Error,
): string | undefined {
  const value = headers[name.toLowerCase()];
  if (Array.isArray(value)) {
    if (value.some((v) => v !== value[0])) throw onAmbiguous();
    return value[0];
  }
  return value;
}

const NON_NEGATIVE_INTEGER = /^\d{1,16}$/;

/**
 * "The value MUST be a non-negative integer": digits only, no sign, no exponent, no blanks,
 * and small enough to be exact (2^53 - 1), or `undefined` when it is not.
 */
export function parseNonNegativeInteger(value: string | undefined): number | undefined {
  if (value === undefined || !NON_NEGATIVE_INTEGER.test(value)) return undefined;
  const n = Number(value);
  return Number.isSafeInteger(n) ? n : undefined;
}

/** `Upload-Length` of a creation request; 400 when missing or malformed. */
export function parseUploadLength(headers: RequestHeaders): number {
  const raw = headerValue(headers, 'upload-length', TusErrors.invalidUploadLength);
  const length = parseNonNegativeInteger(raw);
  if (length === undefined) throw TusErrors.invalidUploadLength();
  return length;
}

/** `Upload-Offset` of a PATCH; 400 when missing or malformed. */
export function parseUploadOffset(headers: RequestHeaders): number {
  const offset = parseNonNegativeInteger(
    headerValue(headers, 'upload-offset', TusErrors.invalidOffset),
  );
  if (offset === undefined) throw TusErrors.invalidOffset();
  return offset;
}

/** `Content-Length` when the client declared one (`undefined` for a chunked body). */
export function parseContentLength(headers: RequestHeaders): number | undefined {
  const raw = headerValue(headers, 'content-length', TusErrors.invalidContentLength);
  if (raw === undefined) return undefined;
  const length = parseNonNegativeInteger(raw);
  if (length === undefined) throw TusErrors.invalidContentLength();
  return length;
}

/** Whether a request announces a body: chunked, or a `Content-Length` other than 0. */
export function declaresBody(headers: RequestHeaders): boolean {
  const length = headers['content-length'];
  return headers['transfer-encoding'] !== undefined || (length !== undefined && length !== '0');
}

/** True when the media type (parameters aside) is `application/offset+octet-stream`. */
export function isOffsetOctetStream(headers: RequestHeaders): boolean {
  const raw = headerValue(headers, 'content-type', TusErrors.invalidContentType);
  return raw?.split(';')[0]?.trim().toLowerCase() === OFFSET_OCTET_STREAM;
}

/** "If the version specified by the Client is not supported by the Server, it MUST respond 412". */
export function assertTusResumable(headers: RequestHeaders): void {
  const version = headerValue(headers, 'tus-resumable', TusErrors.unsupportedVersion);
  if (version?.trim() !== TUS_VERSION) throw TusErrors.unsupportedVersion();
}

// RFC 3986 reg-names allow `_` (docker-compose service names such as `tus_server`).
const HOSTNAME =
  /^(?:[a-z0-9_](?:[a-z0-9_-]{0,61}[a-z0-9_])?)(?:\.[a-z0-9_](?:[a-z0-9_-]{0,61}[a-z0-9_])?)*\.?$/i;
const IPV6_LITERAL = /^\[[0-9a-f:.]+(?:%25[a-z0-9._~-]+)?\]$/i;

/**
 * A `Host` (or forwarded host) value safe to echo in `Location`: a DNS name, IPv4 or bracketed
 * IPv6 literal, with an optional port. Anything else (spaces, slashes, userinfo, CRLF) is 400.
 */
export function parseHost(raw: string | undefined): string {
  if (!raw || raw.length > 300) throw TusErrors.invalidHost();
  const match = /^(\[[^\]]*\]|[^:]*)(?::(\d{1,5}))?$/.exec(raw);
  if (!match) throw TusErrors.invalidHost();
  const [, name, port] = match;
  if (!name || !(HOSTNAME.test(name) || IPV6_LITERAL.test(name))) throw TusErrors.invalidHost();
  if (port !== undefined && (Number(port) < 1 || Number(port) > 65535))
    throw TusErrors.invalidHost();
  return raw.toLowerCase();
}

export { isUploadId } from '../core/upload-id.js';

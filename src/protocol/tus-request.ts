import type { Readable } from 'node:stream';
import type { RequestHeaders } from './headers.js';

/** A request as the protocol sees it: no framework types, so a literal object will do. */
export interface TusRequest {
  /**
   * The HTTP method as received. `X-HTTP-Method-Override` is honoured on a POST only (as tusd
   * does): an adapter that applies it before routing and authentication passes the effective
   * method here, and the handler, seeing no POST, applies nothing more.
   */
  method: string;
  /** Request headers with lower-case names, as Node's `IncomingMessage.headers`. */
  headers: RequestHeaders;
  /** The upload id taken from the URL path; `undefined` for the creation URL itself. */
  id?: string;
  /** Path of the creation URL as the client addressed it (e.g. `/api/files`), no trailing slash. */
  basePath: string;
  /** Scheme of the URL the client used (`http` or `https`), for `Location`. */
  scheme: string;
  /** Host of the URL the client used; the `Host` header when not given. */
  host?: string;
  /** The request body. */
  body: Readable;
  /**
   * Who is asking, as authentication established it (the Nest controller takes it from
   * `request.user`, or the `ownership` function). Used when the `ownership` option is on.
   */
  principal?: string;
  /** The request path had a malformed percent-encoding: answered 400 (after Tus-Resumable). */
  malformedPath?: boolean;
  /** The trailers of a chunked body, once it has ended (checksum-trailer). */
  trailers?: () => RequestHeaders;
  /**
   * Sends an informational (1xx) response ahead of the final one, where the adapter can (the
   * IETF draft's 104). Never to an HTTP/1.0 client.
   */
  informational?: (status: number, headers: Record<string, string>) => void;
  /** Called once a creation has its `Location`, before its body is read. */
  onCreated?: (location: string) => void;
}

/** A response for the adapter to send. */
export interface TusResponse {
  status: number;
  headers: Record<string, string>;
  /** A short text body (errors); success responses have none. */
  body?: string;
  /**
   * The upload's offset and length once the request is done, where the handler knows them
   * (PATCH): for a layer above (the IETF draft's `Upload-Complete`); never sent.
   */
  upload?: { offset: number; length: number | null };
}

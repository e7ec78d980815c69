import type { TusLogger } from './protocol/tus-context.js';
import type {
  UploadLocker,
  UploadRecordStore,
  UploadStorage,
} from './storage/storage.interfaces.js';

/** Options of `TusModule.forRoot()` / `forRootAsync()`. Sizes are bytes, times milliseconds. */
export interface TusModuleOptions {
  /** Staging directory of unfinished uploads (`{id}` data and `{id}.meta` record). */
  uploadDir: string;
  /** Directory of finished uploads, waiting for a consumer. Must be on the filesystem of `uploadDir`. */
  completedDir: string;
  /** Largest upload accepted, advertised as `Tus-Max-Size`. @default undefined (no limit) */
  maxSize?: number;
  /**
   * Largest body of one PATCH. Bodies are streamed, never held in memory, so there is no need
   * for a limit (tus-js-client with `chunkSize: Infinity` sends a whole file in one PATCH); a
   * limit, when set, is enforced while streaming. @default undefined (no limit)
   */
  maxChunkSize?: number;
  /** Largest `Upload-Metadata` header. @default 4096 */
  maxMetadataSize?: number;
  /** fsync data, then the record, before acknowledging bytes. @default true */
  fsync?: boolean;
  /** Mode of the directories the module creates. @default 0o755 */
  directoryMode?: number;
  /**
   * How long a request waits for an upload another request is writing before answering 423
   * (clients such as tus-js-client retry 423). @default 3000
   */
  lockWaitMs?: number;
  /** A request body with no byte for this long is cut; the bytes it delivered are kept. @default 60000 */
  bodyIdleTimeoutMs?: number;
  /** The HTTP server's `headersTimeout`: request headers must arrive within it. @default 60000 */
  headersTimeoutMs?: number;
  /**
   * Set the HTTP server's timeouts for long uploads when the application starts: `requestTimeout`
   * 0 (Node's 300 s total-request limit would cut a multi-gigabyte PATCH) and `headersTimeout`
   * above. Turn off to manage the server's timeouts yourself. @default true
   */
  configureHttpServer?: boolean;
  /** Where upload bytes live. @default FilesystemStorage in `uploadDir` */
  storage?: UploadStorage;
  /** Where upload records live. @default FilesystemRecordStore in `uploadDir` */
  recordStore?: UploadRecordStore;
  /** Per-upload locks. @default FileUploadLocker (flock on the data file) */
  locker?: UploadLocker;
  /** Where server-side failures are logged. @default Nest's `Logger` with context `TusModule` */
  logger?: TusLogger;
}

/** Options that shape routes; given beside the options since routes are fixed at import time. */
export interface TusModuleExtras {
  /** Path of the creation URL, below any global prefix. @default 'files' */
  path: string;
  /** Register the module globally. @default false */
  isGlobal: boolean;
}

import type { UploadRecord } from '../core/upload-record.js';
import type { CompletedUpload, StoredObject } from './completed-upload.js';
import type { FinishedBytes } from './completed-upload.queue.js';

/** A claimed entry, as the queue hands it to a consumer. */
export interface OpenedEntry {
  record: UploadRecord;
  /** The data file in the queue, when there is one. */
  dataPath: string | null;
  /** The record file in the queue, when there is one. */
  recordPath: string | null;
  /** The bytes, when they stayed in an object store. */
  stored?: StoredObject;
}

/**
 * Where the entries of a completed queue live, apart from who claims them: the files of a
 * completed directory, or objects of a bucket. A queue that claims through Redis keeps its
 * claims there and everything else here; the entries are the truth it is rebuilt from.
 */
export interface CompletedEntries {
  /** Where they are, for log lines. */
  readonly description: string;
  /** Makes a finished upload's entry durable: its record, and its bytes or where they are. */
  enqueue(id: string, record: UploadRecord, bytes?: FinishedBytes): Promise<void>;
  /** The record of an entry, or of the receipt kept once a consumer took it; `null` if none. */
  lookup(id: string): Promise<UploadRecord | null>;
  /** The ids of every entry that can be claimed. */
  listIds(): Promise<string[]>;
  /**
   * A claimed entry, with a receipt written for HEAD; `null` when it is gone or unusable (an
   * unusable one is moved aside with one log line).
   */
  open(id: string): Promise<OpenedEntry | null>;
  /** Deletes what a consumer left of its entry when its claim ends. */
  discard(upload: CompletedUpload): Promise<void>;
  /** Deletes an entry whole, with its bytes and receipt (termination); false when there was none. */
  removeEntry(id: string): Promise<boolean>;
  /**
   * Deletes entries older than `ageMs` once `hold(id)` lets go of them (it returns a release
   * function, or `null` while someone holds the entry), and receipts and leftovers as old.
   * Returns how many entries it deleted.
   */
  sweepExpired(
    ageMs: number,
    hold: (id: string) => Promise<(() => Promise<void>) | null>,
  ): Promise<number>;
  /** Deletes leftovers of interrupted writes older than `ageMs`; returns how many. */
  sweep(ageMs: number): Promise<number>;
  close(): Promise<void>;
}

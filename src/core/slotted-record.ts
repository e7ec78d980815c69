import { crc32 } from 'node:zlib';

/**
 * The staging record file: two slots of the same size, each a header line and the record's
 * JSON, padded with newlines. An update writes the slot that is not the newest, in place (no
 * file created, nothing renamed), with the next sequence number; a reader takes the valid slot
 * with the highest number. A slot cut short by a power loss, or read while it is written, fails
 * its CRC-32 and the other slot (the state before the update) is read: the same guarantee as a
 * temp file renamed over the record, with one write (and one fdatasync) instead of a file
 * creation, a rename and two syncs. This is how databases write their meta pages.
 *
 * ```
 * tussi-record 1 {seq} {crc32 of the JSON, 8 hex digits} {JSON length}\n{JSON}\n\n…   slot 0
 * tussi-record 1 {seq} …                                                            slot 1
 * ```
 *
 * The JSON is ASCII (other characters escaped as `\uXXXX`), so bytes and characters count
 * alike. Slots are a multiple of 512 bytes, so one sector never holds both. A record written by
 * an earlier version (plain JSON) is read as it is and rewritten as slots at its next update.
 */
export interface SlotState {
  /** Sequence number of the newest valid slot. */
  seq: number;
  /** Which slot holds it. */
  slot: 0 | 1;
  /** Size of each slot in bytes. */
  size: number;
}

export interface DecodedRecord {
  json: string;
  /** Where the JSON was found; null for a plain JSON file (an earlier version's). */
  state: SlotState | null;
}

const MAGIC = 'tussi-record 1 ';
const HEADER = /^tussi-record 1 (\d{1,15}) ([0-9a-f]{8}) (\d{1,9})\n/;
/** Room for the header line and for the record to grow (offsets gain digits, fields come). */
const HEADROOM = 192;
const SECTOR = 512;
const NOT_ASCII = /[\u0080-\uffff]/;
const NOT_ASCII_ALL = /[\u0080-\uffff]/g;

/** The record's JSON in ASCII: what `JSON.parse` reads back the same. */
export function asciiJson(value: unknown): string {
  const json = JSON.stringify(value);
  return NOT_ASCII.test(json)
    ? json.replace(NOT_ASCII_ALL, (c) => `\\u${c.charCodeAt(0).toString(16).padStart(4, '0')}`)
    : json;
}

/** The slot size for a record of this JSON: a multiple of 512 with room to grow. */
export function slotSizeFor(json: string): number {
  return Math.ceil((json.length + HEADROOM) / SECTOR) * SECTOR;
}

/** How a slot with sequence number `seq` starts: what an update checks before it writes. */
export function slotPrefix(seq: number): string {
  return `${MAGIC}${seq} `;
}

/** One slot holding `json` with sequence number `seq`, or undefined when it does not fit. */
export function encodeSlot(seq: number, json: string, size: number): string | undefined {
  const header = `${slotPrefix(seq)}${crc32(json).toString(16).padStart(8, '0')} ${json.length}\n`;
  const used = header.length + json.length;
  if (used > size) return undefined;
  return header + json + '\n'.repeat(size - used);
}

/** A whole new file: `json` in slot 0 with sequence number `seq`, slot 1 empty. */
export function encodeRecordFile(seq: number, json: string): { text: string; state: SlotState } {
  const size = slotSizeFor(json);
  return { text: encodeSlot(seq, json, size)! + '\n'.repeat(size), state: { seq, slot: 0, size } };
}

/**
 * The newest valid record in a file's text, or null when neither slot is valid (while one slot
 * is written the other holds the state before, so that is damage from outside, or a read that
 * overlapped two updates). A file that starts with `{` is plain JSON; any other is slots, even
 * when the start of slot 0 is damaged.
 */
export function decodeRecordFile(text: string): DecodedRecord | null {
  if (text.startsWith('{')) return { json: text, state: null };
  if (text.length === 0 || text.length % (2 * SECTOR) !== 0) return null;
  const size = text.length / 2;
  let best: DecodedRecord | null = null;
  for (const slot of [0, 1] as const) {
    const content = text.slice(slot * size, (slot + 1) * size);
    const match = HEADER.exec(content);
    if (!match) continue;
    const seq = Number(match[1]);
    const start = match[0].length;
    const json = content.slice(start, start + Number(match[3]));
    if (json.length !== Number(match[3]) || crc32(json) !== parseInt(match[2], 16)) continue;
    if (!best || seq > best.state!.seq) best = { json, state: { seq, slot, size } };
  }
  return best;
}

import { afterEach, beforeEach, describe, expect, it } from '@jest/globals';
import { mkdtemp, readdir, readFile, rm, stat, writeFile } from 'node:fs/promises';
import { open } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { UploadRecord } from '../core/upload-record.js';
import { portable } from './durable-file.js';
import { FilesystemRecordStore } from './filesystem-record.store.js';
import { nativeAddon } from './native.js';
import {
  asciiJson,
  decodeRecordFile,
  encodeRecordFile,
  encodeSlot,
  slotSizeFor,
} from '../core/slotted-record.js';

const id = '0b4cbb4e-3c5c-4a55-9bd4-0f0e3b1e6a11';

function record(offset: number, filename = 'a.txt'): UploadRecord {
  return UploadRecord.fromJSON({
    length: 1 << 20,
    offset,
    metadata: { filename },
    created_at: 1700000000.5,
    last_write: 1700000000.5,
  });
}

describe('the slotted record format', () => {
  it('reads back the JSON of the slot with the highest valid number', () => {
    const first = encodeRecordFile(1, '{"offset":1}');
    const size = first.state.size;
    // Slot 1 gets number 2: the newer.
    const text = first.text.slice(0, size) + encodeSlot(2, '{"offset":2}', size)!;
    expect(decodeRecordFile(text)).toEqual({
      json: '{"offset":2}',
      state: { seq: 2, slot: 1, size },
    });
  });

  it('a slot cut short or damaged is not read: the other one is', () => {
    const { text, state } = encodeRecordFile(7, '{"offset":7}');
    const newer = encodeSlot(8, '{"offset":8000}', state.size)!;
    // The update reached only its first bytes (a power loss in the middle of the write).
    const torn = text.slice(0, state.size) + newer.slice(0, 30) + text.slice(state.size + 30);
    expect(decodeRecordFile(torn)).toEqual({ json: '{"offset":7}', state });
    // The header whole, the JSON not: the CRC tells.
    const halfJson = newer.replace('8000', '80\n\n');
    expect(decodeRecordFile(text.slice(0, state.size) + halfJson)?.json).toBe('{"offset":7}');
  });

  it('neither slot valid, or a file of another size: no record', () => {
    const { text, state } = encodeRecordFile(1, '{"offset":1}');
    expect(decodeRecordFile('\n'.repeat(text.length))).toBeNull();
    const broken = text.replace('{"offset":1}', '{"offset":2}');
    expect(decodeRecordFile(broken)).toBeNull();
    expect(decodeRecordFile(text.slice(0, state.size + 100))).toBeNull();
  });

  it('slot 0 damaged from its first byte (a zeroed sector): slot 1 is read', () => {
    const first = encodeRecordFile(1, '{"offset":1}');
    const size = first.state.size;
    const text = '\0'.repeat(size) + encodeSlot(2, '{"offset":2}', size)!;
    expect(decodeRecordFile(text)).toEqual({
      json: '{"offset":2}',
      state: { seq: 2, slot: 1, size },
    });
  });

  it('a plain JSON record (an earlier version) is read as it is', () => {
    expect(decodeRecordFile('{"offset":5}')).toEqual({ json: '{"offset":5}', state: null });
  });

  it('escapes what is not ASCII, so characters and bytes count alike', () => {
    const json = asciiJson({ filename: 'Grüße 📄' });
    expect(json).toMatch(/^[\x20-\x7e]*$/);
    expect(JSON.parse(json)).toEqual({ filename: 'Grüße 📄' });
  });

  it('slots are whole sectors with room for the record to grow', () => {
    expect(slotSizeFor('x'.repeat(200))).toBe(512);
    expect(slotSizeFor('x'.repeat(400))).toBe(1024);
    expect(encodeSlot(1, 'x'.repeat(600), 512)).toBeUndefined();
  });
});

describe.each([
  ['native', false],
  ['portable', true],
] as const)('FilesystemRecordStore (%s writes)', (_name, usePortable) => {
  let dir: string;
  let store: FilesystemRecordStore;
  let saved: unknown;

  beforeEach(async () => {
    dir = await mkdtemp(join(tmpdir(), 'tussi-slots-'));
    store = new FilesystemRecordStore(dir, true, { log: () => {} });
    if (usePortable && nativeAddon) {
      saved = (nativeAddon as { updateInPlace?: unknown }).updateInPlace;
      delete (nativeAddon as { updateInPlace?: unknown }).updateInPlace;
    }
  });
  afterEach(async () => {
    if (usePortable && nativeAddon) {
      (nativeAddon as { updateInPlace?: unknown }).updateInPlace = saved;
    }
    await rm(dir, { recursive: true, force: true });
  });

  const path = () => join(dir, `${id}.meta`);

  it('updates a record in place: same inode, same size, no temp file', async () => {
    await store.put(id, record(0));
    const before = await stat(path());
    const current = (await store.get(id))!;
    for (let offset = 1; offset <= 5; offset++) {
      current.offset = offset * 1000;
      await store.put(id, current);
      expect((await store.get(id))!.offset).toBe(offset * 1000);
    }
    const after = await stat(path());
    expect(after.ino).toBe(before.ino);
    expect(after.size).toBe(before.size);
    expect(await readdir(dir)).toEqual([`${id}.meta`]);
    // What a tool reading the file sees.
    expect((await UploadRecord.fromFile(path())).offset).toBe(5000);
  });

  it('a torn update of a slot leaves the state before it (a crash in the middle of a write)', async () => {
    await store.put(id, record(0));
    const current = (await store.get(id))!;
    current.offset = 4096;
    await store.put(id, current);
    const text = await readFile(path(), 'utf8');
    const { state } = decodeRecordFile(text)!;
    // The next update goes to the other slot; it is cut after its first 40 bytes.
    const next = encodeSlot(state!.seq + 1, asciiJson(record(8192)), state!.size)!;
    const other = state!.slot === 0 ? 1 : 0;
    const file = await open(path(), 'r+');
    await file.write(next.slice(0, 40), other * state!.size);
    await file.close();
    const read = (await store.get(id))!;
    expect(read.offset).toBe(4096);
    // And the update after it is whole again.
    read.offset = 8192;
    await store.put(id, read);
    expect((await store.get(id))!.offset).toBe(8192);
  });

  it('a record that outgrows its slots is written anew, bigger', async () => {
    await store.put(id, record(0));
    const current = (await store.get(id))!;
    current.metadata.note = 'x'.repeat(2000);
    await store.put(id, current);
    expect((await store.get(id))!.metadata.note).toHaveLength(2000);
    expect((await stat(path())).size).toBeGreaterThan(2 * 2000);
    current.offset = 77;
    await store.put(id, current);
    expect((await store.get(id))!).toMatchObject({ offset: 77 });
  });

  it('reads a plain JSON record of an earlier version, and writes slots at its update', async () => {
    await writeFile(path(), JSON.stringify(record(123, 'Grüße.txt')));
    const old = (await store.get(id))!;
    expect(old).toMatchObject({ offset: 123, metadata: { filename: 'Grüße.txt' } });
    old.offset = 456;
    await store.put(id, old);
    expect(await readFile(path(), 'utf8')).toMatch(/^tussi-record 1 /);
    expect((await store.get(id))!).toMatchObject({
      offset: 456,
      metadata: { filename: 'Grüße.txt' },
    });
  });

  it('a record whose slots are both damaged is moved aside, as any unreadable record', async () => {
    await store.put(id, record(0));
    const text = await readFile(path(), 'utf8');
    await writeFile(path(), text.replace(/"offset":0/, '"offset":9'));
    expect(await store.get(id)).toBeNull();
    expect((await readdir(dir)).some((n) => n.startsWith(`${id}.meta.quarantined-`))).toBe(true);
  });

  it('a record object whose file changed since it was read is written anew: the last writer wins', async () => {
    await store.put(id, record(0));
    const stale = (await store.get(id))!;
    // Another holder (a replica that took over an expired lease) updates it twice meanwhile.
    const other = new FilesystemRecordStore(dir, true, { log: () => {} });
    const theirs = (await other.get(id))!;
    for (const offset of [100, 200]) {
      theirs.offset = offset;
      await other.put(id, theirs);
    }
    stale.offset = 50;
    await store.put(id, stale);
    expect((await store.get(id))!.offset).toBe(50);
    // And when the other one grew it past its slots (a file of another size).
    const mine = (await store.get(id))!;
    const grown = (await other.get(id))!;
    grown.metadata.note = 'x'.repeat(3000);
    await other.put(id, grown);
    mine.offset = 60;
    await store.put(id, mine);
    expect((await store.get(id))!).toMatchObject({ offset: 60, metadata: { filename: 'a.txt' } });
    expect((await readdir(dir)).filter((n) => n.includes('quarantined'))).toEqual([]);
  });

  it('an update that finds the file changed leaves no descriptor open', async () => {
    await store.put(id, record(0));
    const other = new FilesystemRecordStore(dir, true, { log: () => {} });
    const openFiles = async () => (await readdir('/proc/self/fd')).length;
    const before = await openFiles();
    for (let i = 0; i < 20; i++) {
      const stale = (await store.get(id))!;
      const theirs = (await other.get(id))!;
      for (const offset of [1, 2]) {
        theirs.offset = offset;
        await other.put(id, theirs);
      }
      stale.offset = 3;
      await store.put(id, stale);
    }
    // One leaked per refused update would be 20.
    expect(await openFiles()).toBeLessThan(before + 10);
  });

  it('a record removed under a record object that was read is written anew', async () => {
    await store.put(id, record(0));
    const current = (await store.get(id))!;
    await store.remove(id);
    current.offset = 10;
    await store.put(id, current);
    expect((await store.get(id))!.offset).toBe(10);
  });

  it('the portable writer is the one used when the addon has none', () => {
    expect(typeof portable.updateInPlace).toBe('function');
    if (usePortable)
      expect((nativeAddon as { updateInPlace?: unknown } | null)?.updateInPlace).toBeUndefined();
  });
});

import { afterAll, beforeAll, describe, expect, it } from '@jest/globals';
import { randomBytes } from 'node:crypto';
import { open, readFile, readdir, rm } from 'node:fs/promises';
import { join } from 'node:path';
import { decodeRecordFile, encodeSlot } from '../../src/core/slotted-record.js';
import { tempDirs } from '../support/app.js';
import { ensureBuilt } from '../support/child-server.js';
import { sha256, sha256File } from '../support/http.js';
import { startRobustServer, type RobustChild } from '../support/robust-child.js';
import { KiB, createOn, headOn, patchOn } from '../support/robust-http.js';

/**
 * A staging record is updated in place, one of its two slots at a time. A power loss in the
 * middle of an update leaves that slot torn; the server (a real process, fsync on) must then
 * read the other slot: the offset acknowledged before, never a later one it never acknowledged,
 * never none. Made here by killing the server and writing the torn update the crash would have
 * left (the start of the next slot, header and a piece of its JSON), then restarting.
 */
describe('a staging record update torn by a crash', () => {
  const PART = 100 * KiB;
  const data = randomBytes(3 * PART);
  let dirs: Awaited<ReturnType<typeof tempDirs>>;
  let server: RobustChild | undefined;

  beforeAll(async () => {
    await ensureBuilt();
    dirs = await tempDirs('tussi-torn-');
  });
  afterAll(async () => {
    await server?.stop();
    if (dirs) await rm(dirs.root, { recursive: true, force: true });
  });

  it('is read from its other slot: the offset acknowledged before, then the upload completes', async () => {
    server = await startRobustServer(dirs.uploadDir, dirs.completedDir, { fsync: true });
    const id = await createOn(server.baseUrl, data.length);
    for (const at of [0, PART]) {
      const res = await patchOn(server.baseUrl, id, at, data.subarray(at, at + PART));
      expect(res.status).toBe(204);
    }
    await server.kill();

    const path = join(dirs.uploadDir, `${id}.meta`);
    const { json, state } = decodeRecordFile(await readFile(path, 'utf8'))!;
    expect(JSON.parse(json)).toMatchObject({ offset: 2 * PART });
    // The update to 3 × 100 KiB, cut after its first 60 bytes, in the slot it goes to.
    const next = encodeSlot(
      state!.seq + 1,
      json.replace(`"offset":${2 * PART}`, `"offset":${3 * PART}`),
      state!.size,
    )!;
    const file = await open(path, 'r+');
    await file.write(next.slice(0, 60), (state!.slot === 0 ? 1 : 0) * state!.size);
    await file.close();

    server = await startRobustServer(dirs.uploadDir, dirs.completedDir, { fsync: true });
    const head = await headOn(server.baseUrl, id);
    expect({ status: head.status, offset: head.offset }).toEqual({ status: 200, offset: 2 * PART });
    const last = await patchOn(server.baseUrl, id, 2 * PART, data.subarray(2 * PART));
    expect({ status: last.status, offset: last.headers['upload-offset'] }).toEqual({
      status: 204,
      offset: String(3 * PART),
    });
    expect(await sha256File(join(dirs.completedDir, id))).toBe(sha256(data));
    // Nothing was set aside as unreadable, and nothing was logged as an error.
    expect((await readdir(dirs.uploadDir)).filter((n) => n.includes('quarantined'))).toEqual([]);
    expect(server.errors()).toEqual([]);
  });
});

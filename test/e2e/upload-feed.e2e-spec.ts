import { afterAll, beforeAll, describe, expect, it } from '@jest/globals';
import http from 'node:http';
import { OCTETS, TUS, forEachPlatform, idOf, type TestApp } from '../support/app.js';
import { startSampleApp } from '../support/clients-server.js';
import { pollUntil, sha256 } from '../support/http.js';

interface FeedEvent {
  type: string;
  data: Record<string, unknown>;
}

/** A Server-Sent Events stream of the sample (`/ui/events`), parsed as it comes. */
function subscribe(app: TestApp, token?: string) {
  const events: FeedEvent[] = [];
  let status = 0;
  const req = http.get(`${app.baseUrl}/ui/events`, {
    headers: { Accept: 'text/event-stream', ...(token && { Authorization: `Bearer ${token}` }) },
  });
  req.on('error', () => {});
  const opened = new Promise<void>((resolve) => {
    req.on('response', (res) => {
      status = res.statusCode ?? 0;
      let buffer = '';
      res.setEncoding('utf8');
      res.on('data', (chunk: string) => {
        buffer += chunk;
        let end;
        while ((end = buffer.indexOf('\n\n')) >= 0) {
          const block = buffer.slice(0, end);
          buffer = buffer.slice(end + 2);
          let type = 'message';
          let data = '';
          for (const line of block.split('\n')) {
            if (line.startsWith('event:')) type = line.slice(6).trim();
            else if (line.startsWith('data:')) data += line.slice(5).trim();
          }
          if (data) events.push({ type, data: JSON.parse(data) as Record<string, unknown> });
        }
      });
      res.on('error', () => {});
      resolve();
    });
  });
  return { events, opened, status: () => status, close: () => req.destroy() };
}

/** The sample application with `env`. */
async function startSample(env: { TUS_TOKEN?: string } = {}): Promise<TestApp> {
  return (await startSampleApp(env, 'tussi-feed-')).app;
}

/** One upload of `data` named `filename`, POST then PATCH; returns its id. */
async function upload(app: TestApp, filename: string, data: Buffer, token?: string) {
  const auth = token ? { Authorization: `Bearer ${token}` } : {};
  const created = await app.request({
    method: 'POST',
    path: '/files',
    headers: {
      ...TUS,
      ...auth,
      'Upload-Length': String(data.length),
      'Upload-Metadata': `filename ${Buffer.from(filename).toString('base64')}`,
    },
  });
  expect(created.status).toBe(201);
  const id = idOf(String(created.headers.location));
  const patched = await app.request({
    method: 'PATCH',
    path: `/files/${id}`,
    headers: { ...TUS, ...auth, 'Content-Type': OCTETS, 'Upload-Offset': '0' },
    body: data,
  });
  expect(patched.status).toBe(204);
  return id;
}

forEachPlatform(() => {
  describe("the upload page's event stream", () => {
    let app: TestApp;
    beforeAll(async () => {
      app = await startSample();
    });
    afterAll(async () => {
      await app?.close();
    });

    it('starts with the list, then tells each upload in order: created, progress, completed, delivered', async () => {
      const feed = subscribe(app);
      await feed.opened;
      expect(feed.status()).toBe(200);
      await pollUntil(
        async () => feed.events.length,
        (n) => n > 0,
        { what: 'the snapshot' },
      );
      expect(feed.events[0]).toEqual({ type: 'snapshot', data: { delivered: [] } });

      const data = Buffer.from('what the server did, live');
      const id = await upload(app, 'live.txt', data);
      const delivered = await pollUntil(
        async () => feed.events.find((e) => e.type === 'delivered' && e.data.id === id),
        (e) => e !== undefined,
        { timeoutMs: 10_000, what: 'the delivered event' },
      );
      const types = feed.events.filter((e) => e.data.id === id).map((e) => e.type);
      expect(types).toEqual(['created', 'progress', 'completed', 'delivered']);
      expect(feed.events.find((e) => e.type === 'created')!.data).toEqual({
        id,
        name: 'live.txt',
        size: data.length,
      });
      // A page watches: the consumer computed the sha256 of what it delivered.
      expect(delivered!.data).toMatchObject({
        id,
        name: `${id}-live.txt`,
        size: data.length,
        sha256: sha256(data),
      });
      feed.close();

      // A page that reconnects gets the current list first.
      const again = subscribe(app);
      await pollUntil(
        async () => again.events.length,
        (n) => n > 0,
        { what: 'the snapshot' },
      );
      expect(again.events[0].type).toBe('snapshot');
      expect(again.events[0].data.delivered).toEqual([
        expect.objectContaining({
          id,
          name: `${id}-live.txt`,
          size: data.length,
          sha256: sha256(data),
        }),
      ]);
      again.close();
    });
  });
});

describe("the upload page's event stream under many pages", () => {
  let app: TestApp;
  beforeAll(async () => {
    app = await startSample();
  });
  afterAll(async () => {
    await app?.close();
  });

  it('takes 100 pages at once, refuses the next with 503, takes one again when one leaves', async () => {
    const pages = Array.from({ length: 100 }, () => subscribe(app));
    await Promise.all(pages.map((p) => p.opened));
    expect(pages.every((p) => p.status() === 200)).toBe(true);
    const extra = subscribe(app);
    await extra.opened;
    expect(extra.status()).toBe(503);
    extra.close();
    pages.pop()!.close();
    const again = await pollUntil(
      async () => {
        const page = subscribe(app);
        await page.opened;
        if (page.status() !== 200) page.close();
        return page;
      },
      (page) => page.status() === 200,
      { timeoutMs: 5000, what: 'a place for one more page' },
    );
    again.close();
    for (const p of pages) p.close();
  });
});

describe("the upload page's event stream with tokens", () => {
  let app: TestApp;
  beforeAll(async () => {
    app = await startSample({ TUS_TOKEN: 'alice:a-secret,bob:b-secret' });
  });
  afterAll(async () => {
    await app?.close();
  });

  it('is guarded like the uploads, and shows each principal its own uploads only', async () => {
    const anonymous = subscribe(app);
    await anonymous.opened;
    expect(anonymous.status()).toBe(401);
    anonymous.close();

    const alice = subscribe(app, 'a-secret');
    const bob = subscribe(app, 'b-secret');
    await pollUntil(
      async () => alice.events.length + bob.events.length,
      (n) => n >= 2,
      {
        what: 'both snapshots',
      },
    );
    const id = await upload(app, 'alice-only.txt', Buffer.from('for alice'), 'a-secret');
    await pollUntil(
      async () => alice.events.some((e) => e.type === 'delivered' && e.data.id === id),
      (seen) => seen,
      { timeoutMs: 10_000, what: "alice's delivered event" },
    );
    expect(bob.events.map((e) => e.type)).toEqual(['snapshot']);
    alice.close();
    bob.close();

    // And the list on reconnecting: alice's file for alice, nothing for bob.
    const bobAgain = subscribe(app, 'b-secret');
    const aliceAgain = subscribe(app, 'a-secret');
    await pollUntil(
      async () => bobAgain.events.length + aliceAgain.events.length,
      (n) => n >= 2,
      {
        what: 'both snapshots',
      },
    );
    expect(bobAgain.events[0]).toEqual({ type: 'snapshot', data: { delivered: [] } });
    expect(aliceAgain.events[0].data.delivered).toEqual([expect.objectContaining({ id })]);
    bobAgain.close();
    aliceAgain.close();
  });
});

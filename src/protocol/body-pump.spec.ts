import { afterEach, beforeEach, describe, expect, it, jest } from '@jest/globals';
import { PassThrough, Readable } from 'node:stream';
import { type BatchSink, type BodyWriteResult, PartialBatchError, pumpBody } from './body-pump.js';

const MiB = 1 << 20;
const bytes = (text: string) => Buffer.from(text);
const from = (...parts: string[]) => Readable.from(parts.map(bytes));
const noLimit = { limit: Number.MAX_SAFE_INTEGER, idleTimeoutMs: 0 };
const turn = () => new Promise((resolve) => setImmediate(resolve));

/** A sink that records every batch and checks that batches never overlap. */
function recorder(options: { write?: (batch: Buffer, before: number) => Promise<void> } = {}) {
  const batches: Buffer[] = [];
  let inFlight = 0;
  let maxInFlight = 0;
  const sink: BatchSink = async (chunks, size) => {
    inFlight++;
    maxInFlight = Math.max(maxInFlight, inFlight);
    try {
      const joined = Buffer.concat(chunks);
      expect(joined.length).toBe(size);
      await options.write?.(joined, Buffer.concat(batches).length);
      batches.push(joined);
    } finally {
      inFlight--;
    }
  };
  return {
    sink,
    batches,
    get written() {
      return Buffer.concat(batches);
    },
    get maxInFlight() {
      return maxInFlight;
    },
  };
}

/** A sink whose writes complete only when the test opens them. */
function gated() {
  const waiting: (() => void)[] = [];
  const rec = recorder({ write: () => new Promise<void>((resolve) => waiting.push(resolve)) });
  return {
    ...rec,
    get written() {
      return rec.written;
    },
    get maxInFlight() {
      return rec.maxInFlight;
    },
    get pending() {
      return waiting.length;
    },
    open() {
      waiting.splice(0).forEach((resolve) => resolve());
    },
  };
}

/** A body of `total` bytes produced on demand in chunks of `chunk` bytes, chunk i filled with i. */
function generated(total: number, chunk = 64 * 1024) {
  let produced = 0;
  let index = 0;
  const stream = new Readable({
    read() {
      if (produced >= total) return void this.push(null);
      const size = Math.min(chunk, total - produced);
      produced += size;
      this.push(Buffer.alloc(size, index++ % 256));
    },
  });
  return {
    stream,
    get produced() {
      return produced;
    },
  };
}

const expected = (total: number, chunk = 64 * 1024) =>
  Buffer.concat(
    Array.from({ length: Math.ceil(total / chunk) }, (_, i) =>
      Buffer.alloc(Math.min(chunk, total - i * chunk), i % 256),
    ),
  );

describe('pumpBody: writing', () => {
  it('writes every byte in order, one batch at a time, and reports the end', async () => {
    const rec = recorder({ write: () => turn().then(() => undefined) });
    const parts = Array.from({ length: 50 }, (_, i) => `part${i};`);
    const result = await pumpBody(from(...parts), rec.sink, noLimit);
    expect(rec.written.toString()).toBe(parts.join(''));
    expect(result).toEqual({
      bytes: Buffer.byteLength(parts.join('')),
      ended: true,
      exceeded: false,
      aborted: false,
    } satisfies BodyWriteResult);
    expect(rec.maxInFlight).toBe(1);
    // Chunks that arrive while a batch is written are gathered into the next batch.
    expect(rec.batches.length).toBeLessThan(parts.length);
  });

  it('an empty body writes nothing and ends', async () => {
    const sink = jest.fn<BatchSink>(async () => {});
    expect(await pumpBody(from(), sink, noLimit)).toEqual({
      bytes: 0,
      ended: true,
      exceeded: false,
      aborted: false,
    });
    expect(sink).not.toHaveBeenCalled();
  });

  it('holds about two batches in memory while the sink is slow (backpressure)', async () => {
    const sink = gated();
    const body = generated(16 * MiB);
    const pending = pumpBody(body.stream, sink.sink, noLimit);
    for (let i = 0; i < 50; i++) await turn();
    expect(sink.pending).toBe(1);
    expect(body.produced).toBeLessThan(3 * MiB);
    let settled = false;
    void pending.then(() => (settled = true));
    while (!settled) {
      sink.open();
      for (let i = 0; i < 5; i++) await turn();
      expect(body.produced - sink.written.length).toBeLessThan(3 * MiB);
    }
    const result = await pending;
    expect(result).toMatchObject({ bytes: 16 * MiB, ended: true, aborted: false });
    expect(sink.written.equals(expected(16 * MiB))).toBe(true);
    expect(sink.maxInFlight).toBe(1);
  });

  it('shows every accepted chunk to onChunk, in order, before it is written', async () => {
    const seen: string[] = [];
    const rec = recorder({
      write: async (batch, before) => {
        // onChunk has seen every byte of the batch being written.
        expect(seen.join('').length).toBeGreaterThanOrEqual(before + batch.length);
      },
    });
    await pumpBody(from('ab', 'cd', 'ef'), rec.sink, {
      ...noLimit,
      onChunk: (c) => seen.push(c.toString()),
    });
    expect(seen).toEqual(['ab', 'cd', 'ef']);
  });
});

describe('pumpBody: limit', () => {
  it.each<[string, string[], number, string, boolean]>([
    ['under the limit', ['abc'], 5, 'abc', false],
    ['exactly the limit', ['ab', 'cde'], 5, 'abcde', false],
    ['over the limit inside a chunk', ['ab', 'cdefg'], 5, 'abcde', true],
    ['over the limit at a chunk boundary', ['abcde', 'f'], 5, 'abcde', true],
    ['limit 0 with a body', ['a'], 0, '', true],
    ['limit 0 without a body', [], 0, '', false],
  ])('%s', async (_name, parts, limit, written, exceeded) => {
    const rec = recorder();
    const seen: string[] = [];
    const result = await pumpBody(from(...parts), rec.sink, {
      limit,
      idleTimeoutMs: 0,
      onChunk: (c) => seen.push(c.toString()),
    });
    expect(rec.written.toString()).toBe(written);
    expect(seen.join('')).toBe(written);
    expect(result.bytes).toBe(written.length);
    expect(result.exceeded).toBe(exceeded);
    expect(result.aborted).toBe(false);
  });

  it('stops reading an endless body at the limit', async () => {
    const rec = recorder();
    const body = generated(Number.MAX_SAFE_INTEGER, 1000);
    const result = await pumpBody(body.stream, rec.sink, { limit: 2500, idleTimeoutMs: 0 });
    expect(result).toMatchObject({ bytes: 2500, exceeded: true });
    expect(rec.written.equals(expected(3000, 1000).subarray(0, 2500))).toBe(true);
    for (let i = 0; i < 20; i++) await turn();
    expect(body.produced).toBeLessThan(100_000);
  });
});

describe('pumpBody: end of the body', () => {
  it('reports a body destroyed by the client as aborted and keeps what it wrote', async () => {
    const rec = recorder();
    const body = new PassThrough();
    const pending = pumpBody(body, rec.sink, { ...noLimit, onChunk: () => body.destroy() });
    body.write(bytes('abc'));
    expect(await pending).toEqual({ bytes: 3, ended: false, exceeded: false, aborted: true });
    expect(rec.written.toString()).toBe('abc');
  });

  it('reports a body that errors as aborted, without an unhandled error', async () => {
    const rec = recorder();
    const body = new PassThrough();
    const pending = pumpBody(body, rec.sink, noLimit);
    body.write(bytes('abcd'));
    await turn();
    body.destroy(new Error('ECONNRESET'));
    expect(await pending).toMatchObject({ bytes: 4, ended: false, aborted: true });
    expect(rec.written.toString()).toBe('abcd');
  });

  it('a late error after the pump settled does not crash the process', async () => {
    const body = new PassThrough();
    const pending = pumpBody(body, recorder().sink, { limit: 1, idleTimeoutMs: 0 });
    body.write(bytes('ab'));
    expect(await pending).toMatchObject({ bytes: 1, exceeded: true });
    body.destroy(new Error('socket hang up'));
    await turn();
    expect(body.destroyed).toBe(true);
  });

  it('a body that already ended reports ended with no bytes', async () => {
    const body = from('x');
    body.resume();
    await new Promise((resolve) => body.once('end', resolve));
    const sink = jest.fn<BatchSink>(async () => {});
    expect(await pumpBody(body, sink, noLimit)).toEqual({
      bytes: 0,
      ended: true,
      exceeded: false,
      aborted: false,
    });
    expect(sink).not.toHaveBeenCalled();
  });

  it('a body already destroyed reports aborted with no bytes', async () => {
    const body = new PassThrough();
    body.destroy();
    const sink = jest.fn<BatchSink>(async () => {});
    expect(await pumpBody(body, sink, noLimit)).toEqual({
      bytes: 0,
      ended: false,
      exceeded: false,
      aborted: true,
    });
    expect(sink).not.toHaveBeenCalled();
  });
});

describe('pumpBody: sink failure', () => {
  it('reports the error and the bytes written before it, and stops writing', async () => {
    const failure = Object.assign(new Error('no space left on device'), { code: 'ENOSPC' });
    let calls = 0;
    const sink: BatchSink = async () => {
      calls++;
      await turn();
      if (calls === 2) throw failure;
    };
    const body = new PassThrough();
    const pending = pumpBody(body, sink, noLimit);
    body.write(bytes('first'));
    await turn();
    body.write(bytes('second'));
    body.write(bytes('third'));
    const result = await pending;
    expect(result.error).toBe(failure);
    expect(result.bytes).toBe(5);
    expect(result.ended).toBe(false);
    body.write(bytes('more'));
    body.end();
    await turn();
    expect(calls).toBe(2);
  });

  it('counts the part of a batch written before the sink failed (a short write, then ENOSPC)', async () => {
    const failure = Object.assign(new Error('no space left on device'), { code: 'ENOSPC' });
    let calls = 0;
    const sink: BatchSink = async (_chunks, size) => {
      calls++;
      await turn();
      if (calls === 2) throw new PartialBatchError(failure, size - 2);
    };
    const body = new PassThrough();
    const pending = pumpBody(body, sink, noLimit);
    body.write(bytes('first'));
    await turn();
    body.write(bytes('second'));
    const result = await pending;
    // The cause is reported, not the wrapper, and 'second' counts all but its last two bytes.
    expect(result.error).toBe(failure);
    expect(result.bytes).toBe(5 + 4);
  });

  it('never counts more of a failed batch than the batch holds', async () => {
    const failure = new Error('EIO');
    const result = await pumpBody(
      from('abc'),
      () => Promise.reject(new PartialBatchError(failure, 99)),
      noLimit,
    );
    expect(result).toMatchObject({ bytes: 3, error: failure });
  });

  it('wraps a rejection that is not an Error', async () => {
    // eslint-disable-next-line @typescript-eslint/prefer-promise-reject-errors
    const result = await pumpBody(from('abc'), () => Promise.reject('x'), noLimit);
    expect(result.error).toBeInstanceOf(Error);
    expect(result.error?.message).toBe('x');
    expect(result.bytes).toBe(0);
  });

  it('a failure on the last batch after the end is still reported', async () => {
    const failure = new Error('EIO');
    const result = await pumpBody(from('abc'), () => Promise.reject(failure), noLimit);
    expect(result).toMatchObject({ bytes: 0, error: failure });
  });
});

describe('pumpBody: idle timeout', () => {
  beforeEach(() => {
    jest.useFakeTimers({ doNotFake: ['nextTick', 'queueMicrotask', 'setImmediate'] });
  });
  afterEach(() => {
    jest.useRealTimers();
  });

  it('cuts a body with no byte for idleTimeoutMs and keeps what it received', async () => {
    const rec = recorder();
    const body = new PassThrough();
    const settled = jest.fn();
    const pending = pumpBody(body, rec.sink, { limit: 100, idleTimeoutMs: 1000 });
    void pending.then(settled);
    body.write(bytes('abc'));
    await jest.advanceTimersByTimeAsync(999);
    expect(settled).not.toHaveBeenCalled();
    await jest.advanceTimersByTimeAsync(1);
    expect(await pending).toEqual({ bytes: 3, ended: false, exceeded: false, aborted: true });
    expect(body.destroyed).toBe(true);
    expect(rec.written.toString()).toBe('abc');
  });

  it('cuts a body that never sends a byte', async () => {
    const body = new PassThrough();
    const pending = pumpBody(body, recorder().sink, { limit: 100, idleTimeoutMs: 500 });
    await jest.advanceTimersByTimeAsync(500);
    expect(await pending).toMatchObject({ bytes: 0, aborted: true });
  });

  it('every byte restarts the wait', async () => {
    const rec = recorder();
    const body = new PassThrough();
    const settled = jest.fn();
    const pending = pumpBody(body, rec.sink, { limit: 100, idleTimeoutMs: 1000 });
    void pending.then(settled);
    for (let i = 0; i < 10; i++) {
      await jest.advanceTimersByTimeAsync(900);
      body.write(bytes(String(i)));
    }
    await jest.advanceTimersByTimeAsync(900);
    expect(settled).not.toHaveBeenCalled();
    body.end();
    expect(await pending).toEqual({ bytes: 10, ended: true, exceeded: false, aborted: false });
    expect(rec.written.toString()).toBe('0123456789');
  });

  it('0 never cuts', async () => {
    const body = new PassThrough();
    const settled = jest.fn();
    const pending = pumpBody(body, recorder().sink, { limit: 100, idleTimeoutMs: 0 });
    void pending.then(settled);
    body.write(bytes('a'));
    await jest.advanceTimersByTimeAsync(24 * 3600 * 1000);
    expect(settled).not.toHaveBeenCalled();
    body.end();
    expect(await pending).toMatchObject({ bytes: 1, ended: true, aborted: false });
  });

  it('time the sink spends writing is not client idleness', async () => {
    // The client sends everything at once; the storage takes 2 s per batch. The body is paused by
    // the pump itself (backpressure), so no byte arrives for longer than the idle timeout, but the
    // client is not idle and must not be cut.
    const rec = recorder({
      write: () => new Promise<void>((resolve) => setTimeout(resolve, 2000)),
    });
    const body = generated(4 * MiB, 256 * 1024);
    const pending = pumpBody(body.stream, rec.sink, { limit: 4 * MiB, idleTimeoutMs: 1000 });
    let settled = false;
    void pending.then(() => (settled = true));
    for (let i = 0; i < 60 && !settled; i++) await jest.advanceTimersByTimeAsync(1000);
    expect(await pending).toEqual({ bytes: 4 * MiB, ended: true, exceeded: false, aborted: false });
    expect(rec.written.equals(expected(4 * MiB, 256 * 1024))).toBe(true);
  });
});

import { tmpdir } from 'node:os';
import { afterAll, describe, expect, it } from '@jest/globals';
import fc from 'fast-check';
import { createHash } from 'node:crypto';
import { Readable } from 'node:stream';
import { crc32 } from 'node:zlib';
import { readForwarded } from '../nest/trusted-proxies.js';
import type { CompletedUpload } from '../queue/completed-upload.js';
import { CompletedUploadQueue } from '../queue/completed-upload.queue.js';
import { MemoryRecordStore, MemoryStorage, MemoryUploadLocker } from '../storage/memory.storage.js';
import { MemorySpaceLedger, SpaceAccounting } from '../storage/space-accounting.js';
import { UploadStorageService } from '../storage/upload-storage.service.js';
import { TUS_EXTENSIONS, type TusExtension } from './extensions.js';
import { parseMetadata, serializeMetadata } from './metadata.js';
import type { TusLogger, TusProtocolOptions } from './tus-context.js';
import { draftVersion } from './ietf-draft.js';
import { TusHandler } from './tus-handler.js';
import type { TusRequest, TusResponse } from './tus-request.js';
import { UploadRecord } from '../core/upload-record.js';

/**
 * Hostile input at the protocol level: tens of thousands of generated requests, literal
 * `TusRequest`s handed to a `TusHandler` over in-memory storage, with every header the server
 * reads drawn from valid, almost valid and garbage values (negative and overflowing numbers,
 * duplicated headers, traversal in ids and concat URLs, huge and malformed metadata, lying
 * checksums, bodies that error half-way). For each request:
 *
 * - the answer is a status < 500 (never 5xx), carries `Tus-Resumable`, comes within 2 s, and
 *   nothing is logged as a server-side failure;
 * - a refused request (>= 400) changes nothing: every upload's record and bytes, the completed
 *   queue, and no upload appears (the one exception the protocol asks for: "store as much of
 *   the received data as possible" when a body without Content-Length runs past the upload's
 *   length or the chunk limit: then the bytes that fit are kept, exactly the body's first ones);
 * - a PATCH answered 204 stored exactly the body's bytes at the old offset, as its
 *   Upload-Offset says.
 */
const REQUESTS_WANTED = 10_000;
const TIME_LIMIT_MS = 50_000;
const PER_REQUEST_MS = 2000;
const OCTET = 'application/offset+octet-stream';
const ALGORITHMS = ['sha1', 'md5', 'sha256', 'sha512', 'crc32'] as const;

/** The uploads each generated sequence starts with, under fixed ids so failures replay. */
const ROLES = {
  P: '11111111-1111-4111-8111-111111111111', // plain, length 100, offset 40
  D: '22222222-2222-4222-8222-222222222222', // deferred length, offset 10
  S: '33333333-3333-4333-8333-333333333333', // partial, length 30, offset 5, a final waits
  C: '44444444-4444-4444-8444-444444444444', // partial, complete (20 of 20)
  W: '55555555-5555-4555-8555-555555555555', // final of S and C, waiting for S
  E: '66666666-6666-4666-8666-666666666666', // expired, length 10, offset 3
  F: '77777777-7777-4777-8777-777777777777', // finished, in the completed queue
} as const;
type Role = keyof typeof ROLES;
const ROLE_NAMES = Object.keys(ROLES) as Role[];

/** The completed queue in memory: finished records and their bytes, moved out of storage. */
class MemoryCompletedQueue extends CompletedUploadQueue {
  readonly records = new Map<string, string>();
  readonly data = new Map<string, Buffer>();

  constructor(private readonly storage: MemoryStorage) {
    super();
  }

  async enqueue(id: string, record: UploadRecord): Promise<void> {
    this.records.set(id, JSON.stringify(record));
    this.data.set(id, this.storage.files.get(id) ?? Buffer.alloc(0));
    await this.storage.remove(id);
  }

  async lookup(id: string): Promise<UploadRecord | null> {
    const json = this.records.get(id);
    return json === undefined ? null : UploadRecord.fromJSON(JSON.parse(json));
  }

  async remove(id: string): Promise<'removed' | 'held' | 'missing'> {
    if (!this.records.has(id)) return 'missing';
    this.records.delete(id);
    this.data.delete(id);
    return 'removed';
  }

  async expire(): Promise<number> {
    return 0;
  }

  waitForFile(): Promise<CompletedUpload> {
    return Promise.reject(new Error('not used here'));
  }

  async close(): Promise<void> {}
}

const PATTERN = (n: number, length: number) =>
  Buffer.from(Array.from({ length }, (_, i) => (n * 31 + i * 7) & 0xff));

interface Fixture {
  handler: TusHandler;
  storage: MemoryStorage;
  records: MemoryRecordStore;
  queue: MemoryCompletedQueue;
  locker: MemoryUploadLocker;
  errors: string[];
  /** With ownership on, every upload the fixture starts with is `OWNER`'s. */
  ownership: boolean;
}

/** The principal that owns the fixture's uploads when ownership is on. */
const OWNER = 'alice';

async function fixture(options: Partial<TusProtocolOptions>): Promise<Fixture> {
  const storage = new MemoryStorage();
  const records = new MemoryRecordStore();
  const locker = new MemoryUploadLocker();
  // Promises accounted for against the free space of the temp volume, as on the filesystem.
  const space = new SpaceAccounting(new MemorySpaceLedger(), tmpdir());
  const store = new UploadStorageService(storage, records, locker, space);
  const queue = new MemoryCompletedQueue(storage);
  const errors: string[] = [];
  const logger: TusLogger = {
    error: (message, error) => errors.push(`${message}: ${String(error)}`),
    warn: () => {},
  };
  const handler = new TusHandler({
    options: { maxMetadataSize: 4096, lockWaitMs: 200, bodyIdleTimeoutMs: 500, ...options },
    store,
    queue,
    logger,
  });
  const ownership = options.ownership === true;
  const put = async (id: string, record: UploadRecord, bytes: number) => {
    if (ownership) record.owner = OWNER;
    await store.create(id, record);
    const data = Buffer.alloc(Math.max(record.length ?? 0, bytes));
    PATTERN(id.charCodeAt(0), bytes).copy(data);
    storage.files.set(id, data);
  };
  await put(ROLES.P, new UploadRecord(100, 40, { filename: 'p.bin' }), 40);
  await put(ROLES.D, new UploadRecord(null, 10), 10);
  const s = new UploadRecord(30, 5);
  s.concat = 'partial';
  s.waitingFinals = [ROLES.W];
  await put(ROLES.S, s, 5);
  const c = new UploadRecord(20, 20);
  c.concat = 'partial';
  await put(ROLES.C, c, 20);
  const w = new UploadRecord(null, 0);
  w.concat = `final;/files/${ROLES.S} /files/${ROLES.C}`;
  w.parts = [ROLES.S, ROLES.C];
  await put(ROLES.W, w, 0);
  await put(ROLES.E, new UploadRecord(10, 3, {}, {}, 1000, 1000), 3);
  const f = new UploadRecord(5, 5, { filename: 'f.bin' });
  f.finishedAt = new Date();
  if (ownership) f.owner = OWNER;
  queue.records.set(ROLES.F, JSON.stringify(f));
  // The ledger as a start-up rebuilds it from these records.
  await store.start();
  queue.data.set(ROLES.F, PATTERN(7, 5));
  return { handler, storage, records, queue, locker, errors, ownership };
}

/** Everything a request could change: records, bytes, the queue. */
function snapshot(f: Fixture): Map<string, string> {
  const state = new Map<string, string>();
  for (const [id, json] of f.records.records) state.set(`record ${id}`, json);
  // An upload's bytes are its first `offset` ones: what lies past them is scratch space (a
  // refused body may have been written there; it is never claimed).
  for (const [id, bytes] of f.storage.files) {
    const json = f.records.records.get(id);
    const offset =
      json === undefined ? bytes.length : (JSON.parse(json) as { offset: number }).offset;
    state.set(`data ${id}`, bytes.subarray(0, offset).toString('hex'));
  }
  for (const [id, json] of f.queue.records) state.set(`queued ${id}`, json);
  for (const [id, bytes] of f.queue.data) state.set(`queued data ${id}`, bytes.toString('hex'));
  return state;
}

function changes(before: Map<string, string>, after: Map<string, string>): string[] {
  const keys = new Set([...before.keys(), ...after.keys()]);
  return [...keys].filter((k) => before.get(k) !== after.get(k)).sort();
}

// ---------------------------------------------------------------------------------------------
// Arbitraries. Strings may hold tokens resolved against the fixture and the body at run time:
// {P}..{F} an upload id, {OFF}/{LEN} the target's offset/length, {BODYLEN} the body's length,
// {SUM:alg} the body's right checksum, {BADSUM} a wrong one.

const garbage = fc.oneof(
  fc.string({ maxLength: 24 }),
  fc.string({ unit: 'binary', maxLength: 24 }),
  fc.constantFrom(
    '',
    ' ',
    '\t',
    ',',
    ';',
    '=',
    '"',
    '\u0000',
    '\r\n',
    '..',
    '%00',
    'null',
    'undefined',
    '__proto__',
    'constructor',
    'toString',
    'hasOwnProperty',
    '\u00ff\u00fe',
    '😀',
  ),
);

const numberish = fc.oneof(
  { weight: 3, arbitrary: fc.nat({ max: 200 }).map(String) },
  fc.constantFrom(
    '-1',
    '-0',
    '+5',
    '1.5',
    '1e3',
    '0x10',
    ' 5',
    '5 ',
    '05',
    '00000000000000000001',
    '9007199254740991',
    '9007199254740992',
    '9007199254740993',
    '18446744073709551616',
    '99999999999999999999999999',
    'NaN',
    'Infinity',
    '1_000',
    '\u0663',
    '5, 5',
  ),
  fc.bigInt({ min: 2n ** 53n, max: 2n ** 80n }).map(String),
  fc.integer({ min: -100_000, max: -1 }).map(String),
  garbage,
);

/** A header value, sometimes sent twice (different or identical values: an array). */
const header = (value: fc.Arbitrary<string>): fc.Arbitrary<string | string[]> =>
  fc.oneof(
    { weight: 10, arbitrary: value },
    fc.tuple(value, value),
    value.map((v) => [v, v]),
  );

const roleToken = fc.constantFrom(...ROLE_NAMES).map((r) => `{${r}}`);

const id = fc.oneof(
  { weight: 8, arbitrary: roleToken },
  { weight: 2, arbitrary: fc.uuid() },
  fc.constantFrom(
    '..',
    '.',
    '../{P}',
    '..%2F..%2Fetc%2Fpasswd',
    '../../../../etc/passwd',
    '%2e%2e',
    '/etc/passwd',
    '{P}/..',
    '{P}.meta',
    '.{P}',
    '{P}\u0000',
    '{P} ',
    'ffffffff-ffff-ffff-ffff-ffffffffffff',
    'FFFFFFFF-FFFF-4FFF-8FFF-FFFFFFFFFFFF',
    '',
  ),
  roleToken.map((t) => t.toUpperCase()),
  garbage,
);

const concatUrl = fc.oneof(
  roleToken.map((t) => `/files/${t}`),
  roleToken.map((t) => `http://example.com:8080/files/${t}`),
  roleToken.map((t) => `HTTPS://EXAMPLE.COM:8080/files/${t}`),
  roleToken.map((t) => `http://evil.com/files/${t}`),
  roleToken.map((t) => `/files/../files/${t}`),
  roleToken.map((t) => `/files/%2e%2e/${t}`),
  roleToken.map((t) => `/files/${t}?x=1`),
  roleToken.map((t) => `/files/${t}#frag`),
  roleToken.map((t) => `//example.com:8080/files/${t}`),
  roleToken.map((t) => `/other/${t}`),
  roleToken.map((t) => `http://example.com:99999/files/${t}`),
  fc.uuid().map((u) => `/files/${u}`),
  fc.constantFrom(
    'http://[',
    'http://',
    '/files/',
    '/files/../../etc/passwd',
    'file:///etc/passwd',
  ),
  garbage,
);

const concat = fc.oneof(
  fc.constantFrom('partial', ' partial ', 'Partial', 'final;', 'final; ', 'final', 'FINAL;x'),
  fc.array(concatUrl, { minLength: 1, maxLength: 3 }).map((urls) => `final;${urls.join(' ')}`),
  fc.array(concatUrl, { minLength: 1, maxLength: 3 }).map((urls) => `final; ${urls.join('  ')}`),
  garbage,
);

const b64 = (bytes: Uint8Array) => Buffer.from(bytes).toString('base64');
const metadataKey = fc.oneof(
  { weight: 4, arbitrary: fc.stringMatching(/^[a-zA-Z0-9_-]{1,8}$/) },
  fc.constantFrom('filename', '__proto__', 'constructor', 'a b', '', 'ü', 'key,', 'k\t'),
);
const metadataValue = fc.oneof(
  { weight: 4, arbitrary: fc.uint8Array({ maxLength: 24 }).map(b64) },
  fc.constant(''),
  fc.constantFrom(
    '===',
    'QQ',
    'QQ=',
    'Q',
    '****',
    b64(Buffer.from('a\nb')),
    b64(Buffer.from([0xff])),
  ),
  garbage,
);
const metadata = fc.oneof(
  {
    weight: 4,
    arbitrary: fc
      .array(fc.tuple(metadataKey, metadataValue), { maxLength: 4 })
      .map((pairs) => pairs.map(([k, v]) => (v === '' ? k : `${k} ${v}`)).join(',')),
  },
  fc.constantFrom(
    `big ${'QUFB'.repeat(1023)}`, // just under 4096 bytes
    `big ${'QUFB'.repeat(1024)}`, // just over
    `huge ${'QUFB'.repeat(16 * 1024)}`, // 64 KiB
    'a b c',
    ',,,',
    'filename',
    'filename AA==',
    `filename ${b64(Buffer.from('../../etc/passwd'))}`,
    '__proto__ dGVzdA==,__proto__ dGVzdA==',
  ),
  garbage,
);

const checksum = fc.oneof(
  { weight: 3, arbitrary: fc.constantFrom(...ALGORITHMS).map((a) => `${a} {SUM:${a}}`) },
  fc.constantFrom(...ALGORITHMS).map((a) => `${a} {BADSUM}`),
  fc.constantFrom(
    'sha1',
    'SHA1 {SUM:sha1}',
    'md4 AAAA',
    'sha1 ====',
    'sha1 a b',
    'sha1  {SUM:sha1}',
  ),
  garbage,
);

const method = fc.oneof(
  { weight: 5, arbitrary: fc.constant('PATCH') },
  { weight: 4, arbitrary: fc.constant('POST') },
  { weight: 2, arbitrary: fc.constant('HEAD') },
  { weight: 1, arbitrary: fc.constantFrom('DELETE', 'OPTIONS', 'GET', 'PUT', 'patch', 'Post') },
  garbage,
);

const host = fc.oneof(
  { weight: 8, arbitrary: fc.constant('example.com:8080') },
  fc.constantFrom(
    '',
    'a b',
    '[::1]:80',
    '[::1',
    'evil.com/path',
    'user@host',
    'host:0',
    'host:99999',
    'x'.repeat(400),
    '127.0.0.1:8080',
    'tus_server',
  ),
  garbage,
);

/** Present with probability `p` (absent headers are left out). */
const sometimes = <T>(p: number, arb: fc.Arbitrary<T>): fc.Arbitrary<T | undefined> =>
  fc.oneof(
    { weight: Math.round((1 - p) * 100), arbitrary: fc.constant(undefined) },
    { weight: Math.round(p * 100), arbitrary: arb },
  );

const headersArb = fc
  .record({
    'tus-resumable': sometimes(
      0.95,
      header(
        fc.oneof(
          { weight: 12, arbitrary: fc.constant('1.0.0') },
          fc.constantFrom('0.2.2', '1.0.0 ', ' 1.0.0', '1.0', ''),
          garbage,
        ),
      ),
    ),
    'upload-length': sometimes(
      0.5,
      header(fc.oneof({ weight: 2, arbitrary: fc.constantFrom('{LEN}', '{BODYLEN}') }, numberish)),
    ),
    'upload-offset': sometimes(
      0.7,
      header(fc.oneof({ weight: 5, arbitrary: fc.constant('{OFF}') }, numberish)),
    ),
    'upload-defer-length': sometimes(
      0.15,
      header(fc.oneof({ weight: 2, arbitrary: fc.constant('1') }, numberish)),
    ),
    // The IETF draft on the same endpoint: its requests are translated into TUS ones.
    'upload-draft-interop-version': sometimes(
      0.25,
      header(fc.oneof({ weight: 4, arbitrary: fc.constantFrom('5', '6', '7', '8') }, garbage)),
    ),
    'upload-complete': sometimes(
      0.3,
      header(fc.oneof({ weight: 4, arbitrary: fc.constantFrom('?1', '?0') }, garbage)),
    ),
    'upload-metadata': sometimes(0.3, header(metadata)),
    'upload-checksum': sometimes(0.2, header(checksum)),
    'upload-concat': sometimes(0.15, header(concat)),
    'content-type': sometimes(
      0.7,
      header(
        fc.oneof(
          { weight: 6, arbitrary: fc.constant(OCTET) },
          fc.constantFrom(
            'APPLICATION/OFFSET+OCTET-STREAM; charset=x',
            ` ${OCTET} `,
            'text/plain',
            'application/octet-stream',
            '',
          ),
          garbage,
        ),
      ),
    ),
    'content-length': sometimes(
      0.6,
      header(fc.oneof({ weight: 6, arbitrary: fc.constant('{BODYLEN}') }, numberish)),
    ),
    'x-http-method-override': sometimes(
      0.06,
      header(
        fc.oneof(fc.constantFrom('PATCH', 'HEAD', 'DELETE', 'POST', 'OPTIONS', 'get'), garbage),
      ),
    ),
    trailer: sometimes(0.1, header(fc.oneof(fc.constant('Upload-Checksum'), garbage))),
    host: sometimes(0.97, header(host)),
    forwarded: sometimes(
      0.1,
      header(
        fc.oneof(
          fc.constantFrom(
            'proto=https;host=example.org',
            'host="[::1]:8080"',
            'proto=gopher',
            'for=1.2.3.4, proto=https',
            'host="a b"',
            'host=evil.com/x',
          ),
          garbage,
        ),
      ),
    ),
    'x-forwarded-proto': sometimes(
      0.1,
      header(fc.oneof(fc.constantFrom('https', 'HTTP', 'ftp'), garbage)),
    ),
    'x-forwarded-host': sometimes(
      0.1,
      header(fc.oneof(fc.constantFrom('example.org', 'a:b:c', ''), garbage)),
    ),
  })
  .map(
    (headers) =>
      Object.fromEntries(Object.entries(headers).filter(([, v]) => v !== undefined)) as Record<
        string,
        string | string[]
      >,
  );

interface RequestSpec {
  method: string;
  id: string | undefined;
  headers: Record<string, string | string[]>;
  body: Uint8Array;
  /** How the body arrives: whole, in slices, or cut by a socket error half-way. */
  bodyKind: 'whole' | 'sliced' | 'error';
  trailers: Record<string, string> | undefined;
  /** Whether the peer is a trusted proxy (its forwarded headers then decide scheme/host). */
  trustedProxy: boolean;
  /** Keep the id on a POST (usually a POST goes to the creation URL). */
  postWithId: boolean;
  /** Who authentication says is asking (the owner, another principal, or nobody). */
  principal: string | undefined;
}

const requestSpec: fc.Arbitrary<RequestSpec> = fc.record({
  method,
  id: fc.option(id, { freq: 6, nil: undefined }),
  headers: headersArb,
  body: fc.oneof(
    { weight: 4, arbitrary: fc.uint8Array({ maxLength: 80 }) },
    fc.uint8Array({ minLength: 90, maxLength: 160 }),
  ),
  bodyKind: fc.constantFrom('whole', 'whole', 'sliced', 'error'),
  trailers: fc.option(fc.record({ 'upload-checksum': checksum }), { freq: 5, nil: undefined }),
  trustedProxy: fc.boolean(),
  postWithId: fc.oneof({ weight: 9, arbitrary: fc.constant(false) }, fc.constant(true)),
  principal: fc.constantFrom(OWNER, OWNER, 'mallory', undefined),
});

const optionsArb: fc.Arbitrary<Partial<TusProtocolOptions>> = fc.record(
  {
    maxSize: fc.constantFrom(50, 1000, 2 ** 40),
    maxChunkSize: fc.constantFrom(7, 64, 4096),
    maxMetadataSize: fc.constantFrom(16, 4096),
    ownership: fc.boolean(),
    extensions: fc
      // Any of them may be off but creation, which the other requests need.
      .subarray<TusExtension>(TUS_EXTENSIONS.filter((e) => e !== 'creation'))
      .map((off) => Object.fromEntries(off.map((e) => [e, false]))),
  },
  { requiredKeys: [] },
);

// ---------------------------------------------------------------------------------------------

function checksumOf(algorithm: string, body: Buffer): string {
  if (algorithm === 'crc32') {
    const digest = Buffer.alloc(4);
    digest.writeUInt32BE(crc32(body) >>> 0);
    return digest.toString('base64');
  }
  return createHash(algorithm).update(body).digest('base64');
}

/** Replaces the tokens of a generated string. */
function resolveTokens(text: string, f: Fixture, target: string, body: Buffer): string {
  return text.replace(/\{([A-Z]+|SUM:[a-z0-9]+)\}/g, (whole, name: string) => {
    if (name in ROLES) return ROLES[name as Role];
    if (name === 'BODYLEN') return String(body.length);
    if (name === 'BADSUM') return 'AAAAAAAAAAAAAAAAAAAAAAAAAAA=';
    if (name.startsWith('SUM:')) return checksumOf(name.slice(4), body);
    const json = f.records.records.get(target) ?? f.queue.records.get(target);
    const record =
      json === undefined
        ? undefined
        : (JSON.parse(json) as { offset: number; length: number | null });
    if (name === 'OFF') return String(record?.offset ?? 0);
    if (name === 'LEN') return String(record?.length ?? 77);
    return whole;
  });
}

function bodyStream(
  kind: RequestSpec['bodyKind'],
  body: Buffer,
  cutAt = body.length >> 1,
): Readable {
  if (kind === 'whole') return Readable.from(body.length > 0 ? [body] : []);
  if (kind === 'sliced') {
    const slices: Buffer[] = [];
    for (let at = 0; at < body.length; at += 7) slices.push(body.subarray(at, at + 7));
    return Readable.from(slices);
  }
  // Half the body, then the socket "fails". Like Node's IncomingMessage, an error nobody
  // listens for is not thrown at the process.
  const stream = new Readable({ read() {} });
  stream.on('error', () => {});
  if (cutAt > 0) stream.push(body.subarray(0, cutAt));
  setImmediate(() =>
    stream.destroy(Object.assign(new Error('socket hang up'), { code: 'ECONNRESET' })),
  );
  return stream;
}

/**
 * What Node's HTTP parser hands the server for a declared length: never more than declared (the
 * rest would be the next request), and a body that stops short of it ends with the connection.
 */
function delivered(headers: Record<string, string | string[]>, body: Buffer) {
  const raw = headers['content-length'];
  // A repeated Content-Length of one value is that value to Node's parser (others it refuses).
  const declared = Array.isArray(raw) && new Set(raw).size === 1 ? raw[0] : raw;
  if (typeof declared !== 'string' || !/^\d{1,15}$/.test(declared)) return { body, short: false };
  const length = Number(declared);
  return { body: body.subarray(0, length), short: length > body.length };
}

function toRequest(
  spec: RequestSpec,
  f: Fixture,
): { request: TusRequest; target: string; body: Buffer } {
  const body = Buffer.from(spec.body);
  const targetToken = /\{([A-Z])\}/.exec(spec.id ?? '')?.[1];
  const target = targetToken && targetToken in ROLES ? ROLES[targetToken as Role] : ROLES.P;
  const resolve = (v: string) => resolveTokens(v, f, target, body);
  const headers: Record<string, string | string[]> = {};
  for (const [name, value] of Object.entries(spec.headers)) {
    headers[name] = Array.isArray(value) ? value.map(resolve) : resolve(value);
  }
  // What TusForwardedInterceptor does for a trusted peer.
  const view = spec.trustedProxy ? readForwarded(headers, true) : {};
  const trailers = spec.trailers
    ? Object.fromEntries(Object.entries(spec.trailers).map(([k, v]) => [k, resolve(v)]))
    : undefined;
  const sent = delivered(headers, body);
  return {
    target,
    body: sent.body,
    request: {
      method: spec.method,
      headers,
      id:
        spec.id === undefined || (spec.method.toUpperCase() === 'POST' && !spec.postWithId)
          ? undefined
          : resolve(spec.id),
      basePath: '/files',
      scheme: view.scheme ?? 'http',
      host: view.host,
      body: sent.short
        ? bodyStream('error', sent.body, sent.body.length)
        : bodyStream(spec.bodyKind, sent.body),
      trailers: trailers ? () => trailers : undefined,
      principal: spec.principal,
    },
  };
}

function withTimeout<T>(work: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  return Promise.race([
    work.finally(() => clearTimeout(timer)),
    new Promise<never>((_, reject) => {
      timer = setTimeout(() => reject(new Error(`${what}: no answer within ${ms} ms (hang)`)), ms);
    }),
  ]);
}

const lowerCaseNames = (headers: Record<string, string | string[]>) =>
  Object.fromEntries(Object.entries(headers).map(([k, v]) => [k.toLowerCase(), v]));

let generated = 0;
const statuses = new Map<number, number>();

/**
 * Waits until background work a request handed over (a final assembled once its last partial
 * completed) is done, so that its changes are not taken for the next request's.
 */
async function quiet(f: Fixture): Promise<void> {
  // Work an earlier request left running (a final assembled once its last partial completed)
  // must not be counted against the next request.
  await f.handler.settled();
  const text = () => JSON.stringify([...snapshot(f)]);
  for (let i = 0, last = text(); i < 50; i++) {
    for (let turn = 0; turn < 3; turn++) await new Promise((resolve) => setImmediate(resolve));
    const now = text();
    if (now === last) return;
    last = now;
  }
}

/** Handles one request and checks everything a single answer must satisfy. */
async function exchange(f: Fixture, spec: RequestSpec): Promise<void> {
  generated++;
  await quiet(f);
  const before = snapshot(f);
  const { request, target, body } = toRequest(spec, f);
  const oldTarget = {
    record: f.records.records.get(target),
    data: f.storage.files.get(target),
  };
  const response: TusResponse = await withTimeout(
    f.handler.handle(request),
    PER_REQUEST_MS,
    `${request.method} ${request.id ?? ''}`,
  );
  statuses.set(response.status, (statuses.get(response.status) ?? 0) + 1);

  expect(Number.isInteger(response.status) && response.status >= 100).toBe(true);
  expect({ status: response.status, body: response.body, logged: f.errors }).toEqual({
    // 507 only as the space accounting's refusal (a length above the free space of the volume).
    status:
      response.status < 500 ||
      (response.status === 507 && response.body?.includes('ERR_INSUFFICIENT_STORAGE') === true)
        ? response.status
        : 'a status < 500',
    body: response.body,
    logged: [],
  });
  if (draftVersion(request.headers) !== undefined) {
    // The IETF draft: no TUS header, errors as RFC 9457 problem details.
    expect(response.headers['Tus-Resumable']).toBeUndefined();
    if (response.status >= 400 && response.body) {
      expect(response.headers['Content-Type']).toBe('application/problem+json');
      expect(JSON.parse(response.body)).toMatchObject({
        type: expect.any(String),
        status: response.status,
      });
    }
  } else {
    expect(response.headers['Tus-Resumable']).toBe('1.0.0');
    if (response.status >= 400 && request.method.toUpperCase() !== 'HEAD' && response.body) {
      expect(response.body).toMatch(/^ERR_[A-Z_]+: /);
    }
  }

  const after = snapshot(f);
  const changed = changes(before, after);
  const headers = lowerCaseNames(spec.headers);
  // The method as the handler takes it: on a POST, an override (when given and not empty)
  // wins; on any other method it is ignored.
  const override = headers['x-http-method-override'];
  const overriding = (Array.isArray(override) ? override[0] : override)?.trim();
  const real = request.method.toUpperCase();
  const method = ((real === 'POST' && overriding) || real).toUpperCase();
  if (f.ownership && request.principal !== OWNER) {
    expectNothingOfTheOwnerReached(f, before, after, { request, target, method, response });
  }
  if (response.status >= 400) {
    // "Store as much as possible": a PATCH body with no Content-Length that ran past the length
    // or the chunk limit keeps the bytes that fit (and may complete the upload).
    const storeAsMuch =
      response.status === 413 &&
      method === 'PATCH' &&
      headers['content-length'] === undefined &&
      request.id === target &&
      oldTarget.record !== undefined;
    if (storeAsMuch && changed.length > 0) {
      expectPrefixStored(f, target, oldTarget, body);
      expect(changed.every((k) => k.endsWith(target))).toBe(true);
    } else {
      expect({ refused: response.status, changed }).toEqual({
        refused: response.status,
        changed: [],
      });
    }
  } else if (response.status === 204 && oldTarget.record !== undefined && request.id === target) {
    const offset = Number(response.headers['Upload-Offset']);
    const old = JSON.parse(oldTarget.record) as { offset: number };
    if (offset > old.offset) expectPrefixStored(f, target, oldTarget, body, offset);
  }
}

/**
 * With ownership on, a request of another principal (or of none) never reaches the owner's
 * uploads: HEAD, PATCH and DELETE on one are refused, none of them changes, and no upload it
 * creates names one of them as a part.
 */
function expectNothingOfTheOwnerReached(
  f: Fixture,
  before: Map<string, string>,
  after: Map<string, string>,
  {
    request,
    target,
    method,
    response,
  }: {
    request: TusRequest;
    target: string;
    method: string;
    response: TusResponse;
  },
): void {
  const owned = new Set(Object.values(ROLES));
  if (request.id === target && ['HEAD', 'PATCH', 'DELETE'].includes(method)) {
    expect({ method, status: response.status >= 400 ? 'refused' : response.status }).toEqual({
      method,
      status: 'refused',
    });
  }
  for (const key of changes(before, after)) {
    expect({ changed: key, owners: [...owned].some((id) => key.endsWith(id)) }).toEqual({
      changed: key,
      owners: false,
    });
  }
  for (const [key, json] of after) {
    if (before.has(key) || !key.startsWith('record ')) continue;
    const parts = (JSON.parse(json) as { parts?: string[] }).parts ?? [];
    expect(parts.filter((id) => owned.has(id as (typeof ROLES)[Role]))).toEqual([]);
  }
}

/** The target's bytes from its old offset are the body's first bytes (`upTo` = new offset). */
function expectPrefixStored(
  f: Fixture,
  target: string,
  old: { record?: string; data?: Buffer },
  body: Buffer,
  upTo?: number,
): void {
  const oldOffset = (JSON.parse(old.record!) as { offset: number }).offset;
  const json = f.records.records.get(target) ?? f.queue.records.get(target);
  const offset = upTo ?? (json ? (JSON.parse(json) as { offset: number }).offset : oldOffset);
  const data = f.storage.files.get(target) ?? f.queue.data.get(target) ?? Buffer.alloc(0);
  expect(offset - oldOffset).toBeLessThanOrEqual(body.length);
  expect(
    data.subarray(0, oldOffset).equals((old.data ?? Buffer.alloc(0)).subarray(0, oldOffset)),
  ).toBe(true);
  expect(data.subarray(oldOffset, offset).toString('hex')).toBe(
    body.subarray(0, offset - oldOffset).toString('hex'),
  );
}

describe('TusHandler under hostile input (property-based)', () => {
  afterAll(() => {
    const spread = [...statuses.entries()].sort(([a], [b]) => a - b).map(([s, n]) => `${s}:${n}`);
    console.log(
      `hostile handler fuzz: ${generated} generated requests; statuses ${spread.join(' ')}`,
    );
  });

  it(`answers ${REQUESTS_WANTED}+ generated requests with < 500 and leaves state alone when refusing`, async () => {
    const started = Date.now();
    await fc.assert(
      fc.asyncProperty(
        optionsArb,
        fc.array(requestSpec, { minLength: 1, maxLength: 5 }),
        async (options, specs) => {
          const f = await fixture(options);
          for (const spec of specs) await exchange(f, spec);
          // Whatever happened, nothing is left held: no lock, no body write registered.
          await quiet(f);
          expect(f.handler.context.activeWrites.size).toBe(0);
          // Every promise settled: the ledger holds exactly what the open uploads may still bring.
          expect((await f.handler.context.store.space!.usage()).promised).toBe(
            await f.handler.context.store.promisedByRecords(),
          );
          for (const id of new Set([...Object.values(ROLES), ...f.records.records.keys()])) {
            const lock = await f.locker.acquire(id, 50);
            await lock.release();
          }
        },
      ),
      { numRuns: 4000, plugins: [fc.interruptAfterTimeLimit(TIME_LIMIT_MS)] },
    );
    expect(generated).toBeGreaterThanOrEqual(REQUESTS_WANTED);
    expect(Date.now() - started).toBeLessThan(TIME_LIMIT_MS + 10_000);
  }, 90_000);

  /** One literal request against a fresh fixture; returns the answer and what it changed. */
  async function once(
    method: string,
    headers: Record<string, string>,
    body: Buffer,
    id?: string,
    options: Partial<TusProtocolOptions> = {},
  ) {
    const f = await fixture(options);
    const before = snapshot(f);
    const response = await f.handler.handle({
      method,
      id,
      headers: { 'tus-resumable': '1.0.0', host: 'example.com:8080', ...headers },
      basePath: '/files',
      scheme: 'http',
      body: Readable.from(body.length > 0 ? [body] : []),
    });
    return { response, changed: changes(before, snapshot(f)), errors: f.errors };
  }

  it('an Upload-Length the storage cannot hold (2^53 - 1, no maxSize) is refused, not a 500', async () => {
    const { response, errors } = await once(
      'POST',
      { 'upload-length': '9007199254740991' },
      Buffer.alloc(0),
    );
    expect({ status: response.status < 500 ? 'refused' : response.status, errors }).toEqual({
      status: 'refused',
      errors: [],
    });
  });

  // The classes of refusals the fuzzer found changing state, as plain examples.
  it('a creation-with-upload whose chunked body runs past Upload-Length is refused and leaves nothing', async () => {
    const { response, changed } = await once(
      'POST',
      { 'upload-length': '10', 'content-type': OCTET },
      Buffer.alloc(11, 1),
    );
    expect(response.status).toBe(413);
    // No upload without a Location: neither staged nor handed to the completed queue.
    expect(changed).toEqual([]);
  });

  it('a creation-with-upload whose chunked body passes maxChunkSize is refused and leaves nothing', async () => {
    const { response, changed } = await once(
      'POST',
      { 'upload-length': '100', 'content-type': OCTET },
      Buffer.alloc(11, 1),
      undefined,
      { maxChunkSize: 7 },
    );
    expect(response.status).toBe(413);
    expect(changed).toEqual([]);
  });

  it('a creation-with-upload with a wrong Upload-Checksum is refused (460) and leaves nothing', async () => {
    const { response, changed } = await once(
      'POST',
      {
        'upload-length': '10',
        'content-type': OCTET,
        'content-length': '4',
        'upload-checksum': 'sha1 AAAAAAAAAAAAAAAAAAAAAAAAAAA=',
      },
      Buffer.from('abcd'),
    );
    expect(response.status).toBe(460);
    expect(changed).toEqual([]);
  });

  it('a PATCH declaring a deferred length that is then refused (413) leaves the length deferred', async () => {
    const { response, changed } = await once(
      'PATCH',
      {
        'upload-offset': '10',
        'upload-length': '12',
        'content-type': OCTET,
        'content-length': '5',
      },
      Buffer.from('abcde'),
      ROLES.D,
    );
    expect(response.status).toBe(413);
    expect(changed).toEqual([]);
  });

  it('a PATCH declaring a deferred length whose checksum fails (460) leaves the length deferred', async () => {
    const { response, changed } = await once(
      'PATCH',
      {
        'upload-offset': '10',
        'upload-length': '50',
        'content-type': OCTET,
        'content-length': '5',
        'upload-checksum': 'sha1 AAAAAAAAAAAAAAAAAAAAAAAAAAA=',
      },
      Buffer.from('abcde'),
      ROLES.D,
    );
    expect(response.status).toBe(460);
    // "the upload and its offset MUST NOT be updated"
    expect(changed).toEqual([]);
  });

  it('keeps every metadata pair with a valid key and Base64 value, __proto__ included', () => {
    fc.assert(
      fc.property(
        fc.uniqueArray(
          fc.tuple(
            fc.oneof(
              fc.stringMatching(/^[a-zA-Z0-9_-]{1,12}$/),
              fc.constantFrom('__proto__', 'constructor', 'toString'),
            ),
            fc.string({ maxLength: 20 }).filter((s) => /^[\x20-\x7e]*$/.test(s)),
          ),
          { selector: ([k]) => k, maxLength: 5 },
        ),
        (pairs) => {
          const header = pairs
            .map(([k, v]) => `${k} ${Buffer.from(v).toString('base64')}`)
            .join(',');
          const parsed = parseMetadata(header, { maxSize: 1 << 20 });
          for (const [k, v] of pairs) {
            expect({ key: k, own: Object.hasOwn(parsed, k), value: parsed[k] }).toEqual({
              key: k,
              own: true,
              value: v,
            });
          }
          expect(parseMetadata(serializeMetadata(parsed), { maxSize: 1 << 20 })).toEqual(parsed);
        },
      ),
      { numRuns: 300, examples: [[[['__proto__', 'x']]]] },
    );
  });
});

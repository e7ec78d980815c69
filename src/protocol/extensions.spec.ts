/**
 * The TUS 1.0.0 extensions at the handler level: each extension's requests and the error cases
 * the protocol names, as tables of request sequences against a fresh in-memory server, plus the
 * cases that need timing, a held lock or the filesystem completed queue.
 */
import { afterEach, describe, expect, it, jest } from '@jest/globals';
import { createHash, randomUUID } from 'node:crypto';
import { mkdtemp, readFile, readdir, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { PassThrough, Readable } from 'node:stream';
import { FilesystemCompletedQueue } from '../queue/filesystem-completed.queue.js';
import { FileUploadLocker } from '../storage/file-upload.locker.js';
import { FilesystemRecordStore } from '../storage/filesystem-record.store.js';
import { FilesystemStorage } from '../storage/filesystem.storage.js';
import { MemoryRecordStore, MemoryStorage, MemoryUploadLocker } from '../storage/memory.storage.js';
import { UploadStorageService } from '../storage/upload-storage.service.js';
import type { RequestHeaders } from './headers.js';
import type { TusLogger, TusProtocolOptions } from './tus-context.js';
import { TusHandler } from './tus-handler.js';
import type { TusRequest, TusResponse } from './tus-request.js';
import { UploadRecord } from '../core/upload-record.js';

const OCTET = 'application/offset+octet-stream';
const TUS = { 'tus-resumable': '1.0.0' };
const HOST = 'example.com:8080';
const UUID = '[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}';
const LOCATION = new RegExp(`^http://example\\.com:8080/files/${UUID}$`);
const UNKNOWN_ID = '0f8fad5b-d9cb-469f-a165-70867728950e';
const HELLO = 'hello world';
/** Every extension of TUS 1.0.0, as the protocol names them. */
const ALL_EXTENSIONS = [
  'creation',
  'creation-with-upload',
  'creation-defer-length',
  'termination',
  'expiration',
  'checksum',
  'checksum-trailer',
  'concatenation',
  'concatenation-unfinished',
] as const;
type Extension = (typeof ALL_EXTENSIONS)[number];
/** What an extension needs to be offered at all. */
const BASE: Partial<Record<Extension, Extension>> = {
  'creation-with-upload': 'creation',
  'creation-defer-length': 'creation',
  'checksum-trailer': 'checksum',
  concatenation: 'creation',
  'concatenation-unfinished': 'concatenation',
};
const ALGORITHMS = ['sha1', 'md5', 'sha256', 'sha512', 'crc32'] as const;
type Algorithm = (typeof ALGORITHMS)[number];
/** RFC 9110 IMF-fixdate, the preferred (and only generated) HTTP date format. */
const IMF_FIXDATE =
  /^(Mon|Tue|Wed|Thu|Fri|Sat|Sun), \d{2} (Jan|Feb|Mar|Apr|May|Jun|Jul|Aug|Sep|Oct|Nov|Dec) \d{4} \d{2}:\d{2}:\d{2} GMT$/;

const b = (text: string) => Buffer.from(text);

// ---------------------------------------------------------------------------------------------
// Checksums, computed independently of the server's code.

const CRC_TABLE = Array.from({ length: 256 }, (_, n) => {
  let c = n;
  for (let k = 0; k < 8; k++) c = c & 1 ? 0xedb88320 ^ (c >>> 1) : c >>> 1;
  return c >>> 0;
});

function crc32(data: Buffer): number {
  let crc = 0xffffffff;
  for (const byte of data) crc = CRC_TABLE[(crc ^ byte) & 0xff] ^ (crc >>> 8);
  return (crc ^ 0xffffffff) >>> 0;
}

/** Base64 digest of `data`; crc32 as its 4 bytes, big-endian. */
function digest(algorithm: Algorithm, data: Buffer | string): string {
  const bytes = Buffer.isBuffer(data) ? data : b(data);
  if (algorithm === 'crc32') {
    const out = Buffer.alloc(4);
    out.writeUInt32BE(crc32(bytes));
    return out.toString('base64');
  }
  return createHash(algorithm).update(bytes).digest('base64');
}

/** An `Upload-Checksum` value. */
const sum = (algorithm: Algorithm, data: Buffer | string) =>
  `${algorithm} ${digest(algorithm, data)}`;

// ---------------------------------------------------------------------------------------------
// Fixtures

interface Fixture {
  handler: TusHandler;
  store: UploadStorageService;
  logger: { error: jest.Mock<TusLogger['error']>; warn: jest.Mock<TusLogger['warn']> };
  send(request: TusRequest): Promise<TusResponse>;
}

interface MemoryFixture extends Fixture {
  storage: MemoryStorage;
  records: MemoryRecordStore;
}

interface FilesystemFixture extends Fixture {
  queue: FilesystemCompletedQueue;
  uploadDir: string;
  completedDir: string;
}

const BASE_OPTIONS: TusProtocolOptions = {
  maxMetadataSize: 4096,
  lockWaitMs: 100,
  bodyIdleTimeoutMs: 0,
};

function makeLogger(): Fixture['logger'] {
  return { error: jest.fn<TusLogger['error']>(), warn: jest.fn<TusLogger['warn']>() };
}

/** Checks what every response carries: `Tus-Resumable` (OPTIONS included, which may omit it). */
function sender(handler: TusHandler): Fixture['send'] {
  return async (request) => {
    const response = await handler.handle(request);
    if (request.method !== 'OPTIONS') expect(response.headers['Tus-Resumable']).toBe('1.0.0');
    // Work the request left running (a final's assembly) is done before the next step.
    await handler.settled();
    return response;
  };
}

function memoryFixture(options: Partial<TusProtocolOptions> = {}): MemoryFixture {
  const storage = new MemoryStorage();
  const records = new MemoryRecordStore();
  const store = new UploadStorageService(storage, records, new MemoryUploadLocker());
  const logger = makeLogger();
  const handler = new TusHandler({ options: { ...BASE_OPTIONS, ...options }, store, logger });
  return { handler, store, storage, records, logger, send: sender(handler) };
}

const cleanups: Array<() => Promise<void>> = [];
afterEach(async () => {
  for (const cleanup of cleanups.splice(0)) await cleanup();
});

/** The module's default stack (files, flock, completed queue) in a temp dir removed after the test. */
async function filesystemFixture(
  options: Partial<TusProtocolOptions> = {},
): Promise<FilesystemFixture> {
  const root = await mkdtemp(join(tmpdir(), 'tussi-ext-'));
  const uploadDir = join(root, 'uploads');
  const completedDir = join(root, 'completed');
  const storage = new FilesystemStorage({ directory: uploadDir, fsync: false });
  const records = new FilesystemRecordStore(uploadDir, false);
  const store = new UploadStorageService(
    storage,
    records,
    new FileUploadLocker((id) => storage.pathOf(id)),
  );
  const queue = new FilesystemCompletedQueue({
    directory: completedDir,
    stagingDirectory: uploadDir,
    fsync: false,
    log: () => {},
  });
  const logger = makeLogger();
  const handler = new TusHandler({
    options: { ...BASE_OPTIONS, ...options },
    store,
    queue,
    logger,
  });
  cleanups.push(async () => {
    await queue.close();
    await rm(root, { recursive: true, force: true });
  });
  return { handler, store, queue, uploadDir, completedDir, logger, send: sender(handler) };
}

function request(
  method: string,
  headers: RequestHeaders,
  extra: { id?: string; body?: Readable | Buffer[]; trailers?: RequestHeaders } = {},
): TusRequest {
  const { body = [], trailers, ...rest } = extra;
  return {
    method,
    headers: { host: HOST, ...headers },
    basePath: '/files',
    scheme: 'http',
    body: Array.isArray(body) ? Readable.from(body) : body,
    ...(trailers && { trailers: () => trailers }),
    ...rest,
  };
}

/** A response header, by name in any case. */
function header(response: TusResponse, name: string): string | undefined {
  const key = Object.keys(response.headers).find((k) => k.toLowerCase() === name.toLowerCase());
  return key === undefined ? undefined : response.headers[key];
}

const idOf = (location: string | undefined) => new URL(location ?? '').pathname.split('/').pop()!;

/** Resolves once `probe` holds, within `timeoutMs` (bounded polling, not a sleep). */
async function waitFor(
  probe: () => Promise<boolean> | boolean,
  what: string,
  timeoutMs = 10_000,
): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await probe())) {
    if (Date.now() > deadline) throw new Error(`${what}: not within ${timeoutMs} ms`);
    await new Promise((resolve) => setTimeout(resolve, 5));
  }
}

/** Checks a date header: IMF-fixdate, about `ms` from now. */
const expiresIn = (ms: number) => (value: string | undefined) => {
  expect(value).toMatch(IMF_FIXDATE);
  const at = Date.parse(value!);
  // The header has whole seconds; a slow machine may take a while between steps.
  expect(at).toBeGreaterThanOrEqual(Date.now() + ms - 10_000);
  expect(at).toBeLessThanOrEqual(Date.now() + ms + 1_000);
};

/** Checks `Tus-Extension` lists exactly `expected`, each name once. */
const extensionsAre = (expected: readonly string[]) => (value: string | undefined) => {
  const listed = (value ?? '').split(',').map((name) => name.trim());
  expect(new Set(listed).size).toBe(listed.length);
  expect([...listed].sort()).toEqual([...expected].sort());
};

// ---------------------------------------------------------------------------------------------
// Scenarios: sequences of requests, each checked.

type Ids = Record<string, string>;
type HeaderSource = RequestHeaders | ((ids: Ids) => RequestHeaders);
type Check = string | RegExp | null | ((value: string | undefined, ids: Ids) => void);

interface Step {
  method: string;
  /** The upload an earlier step named (`as`), or a literal id. */
  on?: string;
  headers: HeaderSource;
  body?: Buffer[];
  trailers?: RequestHeaders;
  status: number;
  /** Machine code the error body carries. */
  code?: string;
  /** Expected response headers; `null` means absent. */
  res?: Record<string, Check>;
  /** Names the upload a 201 created, for later steps. */
  as?: string;
}

interface Scenario {
  name: string;
  options?: Partial<TusProtocolOptions>;
  steps: Step[];
  /** Checks the stored state after the steps. */
  check?: (fixture: MemoryFixture, ids: Ids) => void;
}

interface More {
  status?: number;
  code?: string;
  res?: Record<string, Check>;
  headers?: HeaderSource;
  /** Send the body without Content-Length. */
  chunked?: boolean;
  trailers?: RequestHeaders;
}

const resolve = (source: HeaderSource | undefined, ids: Ids): RequestHeaders =>
  typeof source === 'function' ? source(ids) : (source ?? {});

const chunksOf = (data: string | Buffer | Buffer[]): Buffer[] =>
  Array.isArray(data) ? data : [typeof data === 'string' ? b(data) : data];

const bytesIn = (chunks: Buffer[]) => chunks.reduce((n, c) => n + c.length, 0);

/** A creation request; `body` makes it creation-with-upload. */
function post(
  as: string | undefined,
  headers: HeaderSource,
  more: More & { body?: string | Buffer[] } = {},
): Step {
  const chunks = more.body === undefined ? [] : chunksOf(more.body);
  return {
    method: 'POST',
    as,
    headers: (ids) => ({
      ...TUS,
      ...(more.body !== undefined && {
        'content-type': OCTET,
        ...(!more.chunked && { 'content-length': String(bytesIn(chunks)) }),
      }),
      ...resolve(headers, ids),
      ...resolve(more.headers, ids),
    }),
    body: chunks,
    trailers: more.trailers,
    status: more.status ?? 201,
    code: more.code,
    res: more.res,
  };
}

const create = (
  as: string | undefined,
  length: number | 'defer',
  more: More & { body?: string | Buffer[] } = {},
) =>
  post(
    as,
    length === 'defer' ? { 'upload-defer-length': '1' } : { 'upload-length': String(length) },
    more,
  );

const partial = (as: string, length: number, more: More & { body?: string | Buffer[] } = {}) =>
  post(as, { 'upload-concat': 'partial', 'upload-length': String(length) }, more);

/** A final upload of the uploads named, as relative URLs unless `urls` says otherwise. */
const final = (
  as: string | undefined,
  parts: string[] | ((ids: Ids) => string[]),
  more: More & { body?: string | Buffer[] } = {},
) =>
  post(
    as,
    (ids) => ({
      'upload-concat': `final;${(typeof parts === 'function' ? parts(ids) : parts.map((p) => `/files/${ids[p] ?? p}`)).join(' ')}`,
    }),
    more,
  );

function patch(
  on: string,
  offset: number,
  data: string | Buffer | Buffer[],
  more: More = {},
): Step {
  const chunks = chunksOf(data);
  return {
    method: 'PATCH',
    on,
    headers: (ids) => ({
      ...TUS,
      'content-type': OCTET,
      'upload-offset': String(offset),
      ...(!more.chunked && { 'content-length': String(bytesIn(chunks)) }),
      ...resolve(more.headers, ids),
    }),
    body: chunks,
    trailers: more.trailers,
    status: more.status ?? 204,
    code: more.code,
    res: more.res,
  };
}

const head = (on: string, res: Record<string, Check> = {}, status = 200): Step => ({
  method: 'HEAD',
  on,
  headers: TUS,
  status,
  res,
});

const del = (on: string | undefined, status = 204, more: More = {}): Step => ({
  method: 'DELETE',
  on,
  headers: TUS,
  status,
  code: more.code,
  res: more.res,
});

const discover = (res: Record<string, Check>): Step => ({
  method: 'OPTIONS',
  headers: {},
  status: 204,
  res,
});

/** HEAD of a missing upload: 404 without Upload-Offset. */
const gone = (on: string, status = 404) => head(on, { 'Upload-Offset': null }, status);

const data = (fixture: MemoryFixture, id: string) => fixture.storage.files.get(id)?.toString();

/** Runs `steps` in order, each checked; `ids` (names of uploads) carries over between calls. */
async function runSteps(fixture: Fixture, steps: Step[], ids: Ids = {}): Promise<Ids> {
  for (const [index, step] of steps.entries()) {
    const id = step.on === undefined ? undefined : (ids[step.on] ?? step.on);
    const response = await fixture.send(
      request(step.method, resolve(step.headers, ids), {
        id,
        body: step.body,
        trailers: step.trailers,
      }),
    );
    const where = `step ${index + 1}: ${step.method} ${step.on ?? '/files'}`;
    try {
      expect({ status: response.status, body: response.body }).toMatchObject({
        status: step.status,
      });
      if (response.status >= 400 && step.method !== 'HEAD') {
        expect(response.body).toContain(step.code ?? 'ERR_');
      }
      for (const [name, expected] of Object.entries(step.res ?? {})) {
        const value = header(response, name);
        if (expected === null) expect({ [name]: value }).toEqual({ [name]: undefined });
        else if (typeof expected === 'function') expected(value, ids);
        else if (expected instanceof RegExp) expect(value).toMatch(expected);
        else expect({ [name]: value }).toEqual({ [name]: expected });
      }
    } catch (e) {
      if (e instanceof Error) {
        e.message = `${where} -> ${response.status} ${JSON.stringify(response.headers)} ${response.body ?? ''}\n${e.message}`;
      }
      throw e;
    }
    if (step.as !== undefined && response.status === 201) {
      ids[step.as] = idOf(header(response, 'Location'));
    }
  }
  return ids;
}

function runScenarios(scenarios: Scenario[]): void {
  it.each(scenarios.map((s) => [s.name, s] as const))('%s', async (_name, scenario) => {
    const fixture = memoryFixture(scenario.options);
    const ids = await runSteps(fixture, scenario.steps);
    scenario.check?.(fixture, ids);
    // Nothing in these scenarios is a server failure.
    expect(fixture.logger.error).not.toHaveBeenCalled();
  });
}

// ---------------------------------------------------------------------------------------------

describe('the test helpers', () => {
  it('compute crc32 as the standard (IEEE) CRC', () => {
    expect(crc32(b('123456789'))).toBe(0xcbf43926);
    expect(crc32(b(HELLO))).toBe(0x0d4a1185);
  });

  it('compute the sha1 of the protocol example', () => {
    expect(sum('sha1', HELLO)).toBe('sha1 Kq5sNclPz7QV2+lfQIuc6R7oRu0=');
  });
});

describe('OPTIONS: feature detection', () => {
  const on = (off: Extension[]) =>
    ALL_EXTENSIONS.filter((extension) => {
      const chain: Extension[] = [extension];
      for (let base = BASE[extension]; base; base = BASE[base]) chain.push(base);
      return chain.every((name) => !off.includes(name));
    });

  runScenarios([
    {
      name: 'all extensions are on by default, with sha1 among the checksum algorithms',
      steps: [
        discover({
          'Tus-Version': '1.0.0',
          'Tus-Extension': extensionsAre(ALL_EXTENSIONS),
          'Tus-Checksum-Algorithm': (value) => {
            const names = (value ?? '').split(',');
            expect([...names].sort()).toEqual([...ALGORITHMS].sort());
            // "names ... MUST only consist of ASCII characters ... uppercase excluded".
            for (const name of names) expect(name).toMatch(/^[\x21-\x40\x5b-\x7e]+$/);
          },
        }),
      ],
    },
    ...ALL_EXTENSIONS.map((extension): Scenario => ({
      name: `${extension} switched off is not advertised, nor what depends on it`,
      options: { extensions: { [extension]: false } },
      steps: [
        discover({
          'Tus-Extension': extensionsAre(on([extension])),
          'Tus-Checksum-Algorithm': on([extension]).includes('checksum') ? /sha1/ : null,
        }),
      ],
    })),
    {
      name: 'no extension at all: Tus-Extension is omitted',
      options: {
        extensions: Object.fromEntries(ALL_EXTENSIONS.map((e) => [e, false])),
      },
      steps: [
        discover({ 'Tus-Version': '1.0.0', 'Tus-Extension': null, 'Tus-Checksum-Algorithm': null }),
      ],
    },
  ]);
});

describe('creation-with-upload', () => {
  runScenarios([
    {
      name: 'POST with part of the upload: 201 with Upload-Offset, the rest follows by PATCH',
      steps: [
        create('u', 10, { body: 'hello', res: { Location: LOCATION, 'Upload-Offset': '5' } }),
        head('u', { 'Upload-Offset': '5', 'Upload-Length': '10' }),
        patch('u', 5, 'world', { res: { 'Upload-Offset': '10' } }),
        head('u', { 'Upload-Offset': '10', 'Upload-Length': '10' }),
      ],
      check: (f, ids) => expect(data(f, ids.u)).toBe('helloworld'),
    },
    {
      name: 'POST whose body is the whole upload completes it',
      steps: [
        create('u', 10, { body: 'helloworld', res: { 'Upload-Offset': '10' } }),
        head('u', { 'Upload-Offset': '10', 'Upload-Length': '10' }),
      ],
      check: (f, ids) => expect(data(f, ids.u)).toBe('helloworld'),
    },
    {
      name: 'POST with a chunked body (no Content-Length)',
      steps: [
        create('u', 10, {
          body: [b('hel'), b('lo')],
          chunked: true,
          res: { 'Upload-Offset': '5' },
        }),
        head('u', { 'Upload-Offset': '5' }),
      ],
      check: (f, ids) => expect(data(f, ids.u)?.slice(0, 5)).toBe('hello'),
    },
    {
      name: 'POST with Content-Length over Upload-Length: 413, nothing created',
      steps: [
        create(undefined, 10, {
          body: 'helloworld!',
          status: 413,
          res: { Location: null, 'Upload-Offset': null },
        }),
      ],
      check: (f) => {
        expect(f.records.records.size).toBe(0);
        expect(f.storage.files.size).toBe(0);
      },
    },
    {
      name: 'POST with data and Upload-Defer-Length: 1',
      steps: [
        create('u', 'defer', { body: 'hello', res: { 'Upload-Offset': '5' } }),
        head('u', { 'Upload-Offset': '5', 'Upload-Defer-Length': '1', 'Upload-Length': null }),
      ],
    },
    {
      name: 'POST with data and a matching Upload-Checksum',
      steps: [
        create('u', 11, {
          body: HELLO,
          headers: { 'upload-checksum': sum('sha256', HELLO) },
          res: { 'Upload-Offset': '11' },
        }),
      ],
    },
    {
      name: 'POST with data and a mismatching Upload-Checksum: 460',
      steps: [
        create(undefined, 11, {
          body: HELLO,
          headers: { 'upload-checksum': sum('sha256', 'hello worle') },
          status: 460,
          code: 'ERR_CHECKSUM_MISMATCH',
        }),
      ],
    },
    {
      name: 'POST with data as a partial upload',
      steps: [
        partial('p', 10, { body: 'hello', res: { 'Upload-Offset': '5' } }),
        head('p', { 'Upload-Offset': '5', 'Upload-Concat': 'partial' }),
      ],
    },
    {
      name: 'switched off: not advertised, and a POST body is not applied',
      options: { extensions: { 'creation-with-upload': false } },
      steps: [
        discover({
          'Tus-Extension': (v) => expect(v?.split(',')).not.toContain('creation-with-upload'),
        }),
        create('u', 10, { body: 'hello', res: { 'Upload-Offset': null } }),
        head('u', { 'Upload-Offset': '0' }),
      ],
    },
  ]);
});

describe('creation-defer-length', () => {
  runScenarios([
    {
      name: 'POST with Upload-Defer-Length: 1; HEAD says Upload-Defer-Length: 1, no Upload-Length',
      steps: [
        create('u', 'defer', { res: { Location: LOCATION } }),
        head('u', { 'Upload-Offset': '0', 'Upload-Defer-Length': '1', 'Upload-Length': null }),
      ],
    },
    ...['0', '2', 'true', '', '01', ['1', '2']].map((value): Scenario => ({
      name: `POST with Upload-Defer-Length ${JSON.stringify(value)}: 400`,
      steps: [
        post(undefined, { 'upload-defer-length': value }, { status: 400, res: { Location: null } }),
      ],
      check: (f) => expect(f.records.records.size).toBe(0),
    })),
    {
      name: 'POST with both Upload-Length and Upload-Defer-Length: 400',
      steps: [
        post(
          undefined,
          { 'upload-length': '10', 'upload-defer-length': '1' },
          { status: 400, res: { Location: null } },
        ),
      ],
      check: (f) => expect(f.records.records.size).toBe(0),
    },
    {
      name: 'POST with neither Upload-Length nor Upload-Defer-Length: 400',
      steps: [post(undefined, {}, { status: 400, res: { Location: null } })],
    },
    {
      name: 'PATCH sets the length once; the same value again is accepted',
      steps: [
        create('u', 'defer'),
        patch('u', 0, 'hell', {
          headers: { 'upload-length': '10' },
          res: { 'Upload-Offset': '4' },
        }),
        head('u', { 'Upload-Offset': '4', 'Upload-Length': '10', 'Upload-Defer-Length': null }),
        patch('u', 4, 'oworld', {
          headers: { 'upload-length': '10' },
          res: { 'Upload-Offset': '10' },
        }),
        head('u', { 'Upload-Offset': '10', 'Upload-Length': '10', 'Upload-Defer-Length': null }),
      ],
      check: (f, ids) => expect(data(f, ids.u)).toBe('helloworld'),
    },
    {
      name: 'PATCH without Upload-Length while deferred appends; the length comes last',
      steps: [
        create('u', 'defer'),
        patch('u', 0, 'hello', { res: { 'Upload-Offset': '5' } }),
        head('u', { 'Upload-Offset': '5', 'Upload-Defer-Length': '1', 'Upload-Length': null }),
        patch('u', 5, 'world', {
          headers: { 'upload-length': '10' },
          res: { 'Upload-Offset': '10' },
        }),
        head('u', { 'Upload-Offset': '10', 'Upload-Length': '10', 'Upload-Defer-Length': null }),
      ],
      check: (f, ids) => expect(data(f, ids.u)).toBe('helloworld'),
    },
    {
      name: 'an empty PATCH declaring a length equal to the offset completes the upload',
      steps: [
        create('u', 'defer'),
        patch('u', 0, 'hello'),
        patch('u', 5, [], { headers: { 'upload-length': '5' }, res: { 'Upload-Offset': '5' } }),
        head('u', { 'Upload-Offset': '5', 'Upload-Length': '5', 'Upload-Defer-Length': null }),
      ],
    },
    {
      name: 'once set, another length is 400 and the upload is unchanged',
      steps: [
        create('u', 'defer'),
        patch('u', 0, 'hell', { headers: { 'upload-length': '10' } }),
        patch('u', 4, 'o', { headers: { 'upload-length': '11' }, status: 400 }),
        head('u', { 'Upload-Offset': '4', 'Upload-Length': '10' }),
      ],
    },
    {
      name: 'a length given at creation cannot be changed by PATCH: 400',
      steps: [
        create('u', 10),
        patch('u', 0, 'a', { headers: { 'upload-length': '11' }, status: 400 }),
        head('u', { 'Upload-Offset': '0', 'Upload-Length': '10' }),
      ],
    },
    {
      name: 'a length below the bytes already received: 400',
      steps: [
        create('u', 'defer'),
        patch('u', 0, 'hello'),
        patch('u', 5, [], { headers: { 'upload-length': '3' }, status: 400 }),
        head('u', { 'Upload-Offset': '5', 'Upload-Defer-Length': '1', 'Upload-Length': null }),
      ],
    },
    {
      name: 'a malformed length on PATCH: 400',
      steps: [
        create('u', 'defer'),
        patch('u', 0, 'hello', { headers: { 'upload-length': '-1' }, status: 400 }),
        head('u', { 'Upload-Offset': '0', 'Upload-Defer-Length': '1' }),
      ],
    },
    {
      name: 'a length over maxSize: 413',
      options: { maxSize: 100 },
      steps: [
        create('u', 'defer'),
        patch('u', 0, 'a', { headers: { 'upload-length': '101' }, status: 413 }),
        head('u', { 'Upload-Offset': '0', 'Upload-Defer-Length': '1', 'Upload-Length': null }),
        patch('u', 0, 'a', { headers: { 'upload-length': '100' }, res: { 'Upload-Offset': '1' } }),
        head('u', { 'Upload-Length': '100' }),
      ],
    },
    {
      name: 'maxSize holds while the length is unknown (Content-Length over it: 413, nothing kept)',
      options: { maxSize: 10 },
      steps: [
        create('u', 'defer'),
        patch('u', 0, 'helloworld!', { status: 413 }),
        head('u', { 'Upload-Offset': '0' }),
        patch('u', 0, 'hello'),
        patch('u', 5, 'world!', { status: 413 }),
        head('u', { 'Upload-Offset': '5', 'Upload-Defer-Length': '1' }),
      ],
    },
    {
      name: 'maxSize holds while the length is unknown (chunked body over it: 413, at most maxSize kept)',
      options: { maxSize: 10 },
      steps: [
        create('u', 'defer'),
        patch('u', 0, [b('hello'), b('world'), b('!!')], { chunked: true, status: 413 }),
        head('u', {
          'Upload-Offset': (v) => expect(Number(v)).toBeLessThanOrEqual(10),
          'Upload-Defer-Length': '1',
        }),
      ],
    },
    {
      name: 'switched off: not advertised, and Upload-Defer-Length alone is 400',
      options: { extensions: { 'creation-defer-length': false } },
      steps: [
        discover({
          'Tus-Extension': (v) => expect(v?.split(',')).not.toContain('creation-defer-length'),
        }),
        create(undefined, 'defer', { status: 400, res: { Location: null } }),
      ],
    },
  ]);
});

describe('checksum', () => {
  const body = b(HELLO);
  runScenarios([
    ...ALGORITHMS.map((algorithm): Scenario => ({
      name: `${algorithm}: a matching checksum is 204`,
      steps: [
        create('u', 11),
        patch('u', 0, body, {
          headers: { 'upload-checksum': sum(algorithm, body) },
          res: { 'Upload-Offset': '11' },
        }),
        head('u', { 'Upload-Offset': '11' }),
      ],
      check: (f, ids) => expect(data(f, ids.u)).toBe(HELLO),
    })),
    ...ALGORITHMS.map((algorithm): Scenario => ({
      name: `${algorithm}: a mismatch is 460, the chunk discarded and the offset unchanged`,
      steps: [
        create('u', 11),
        patch('u', 0, 'hello', { headers: { 'upload-checksum': sum(algorithm, 'hello') } }),
        patch('u', 5, ' world', {
          headers: { 'upload-checksum': sum(algorithm, ' worle') },
          status: 460,
          code: 'ERR_CHECKSUM_MISMATCH',
        }),
        head('u', { 'Upload-Offset': '5' }),
        patch('u', 5, ' world', {
          headers: { 'upload-checksum': sum(algorithm, ' world') },
          res: { 'Upload-Offset': '11' },
        }),
      ],
      check: (f, ids) => expect(data(f, ids.u)).toBe(HELLO),
    })),
    {
      name: 'the example of the protocol',
      steps: [
        create('u', 11),
        patch('u', 0, HELLO, {
          headers: { 'upload-checksum': 'sha1 Kq5sNclPz7QV2+lfQIuc6R7oRu0=' },
          res: { 'Upload-Offset': '11' },
        }),
      ],
    },
    {
      name: 'a body sent in several chunks is verified as a whole',
      steps: [
        create('u', 11),
        patch('u', 0, [b('hel'), b('lo w'), b('orld')], {
          chunked: true,
          headers: { 'upload-checksum': sum('sha512', HELLO) },
          res: { 'Upload-Offset': '11' },
        }),
      ],
    },
    {
      name: 'an empty body with its checksum is 204',
      steps: [
        create('u', 11),
        patch('u', 0, [], {
          headers: { 'upload-checksum': sum('sha1', '') },
          res: { 'Upload-Offset': '0' },
        }),
      ],
    },
    {
      name: 'an empty body with another checksum is 460 (the server MUST verify the chunk)',
      steps: [
        create('u', 11),
        patch('u', 0, [], { headers: { 'upload-checksum': sum('sha1', 'x') }, status: 460 }),
        head('u', { 'Upload-Offset': '0' }),
      ],
    },
    ...[
      `sha3 ${digest('sha256', HELLO)}`,
      `sha224 ${createHash('sha224').update(HELLO).digest('base64')}`,
      `SHA1 ${digest('sha1', HELLO)}`,
      `Sha256 ${digest('sha256', HELLO)}`,
      `blake2b512 ${createHash('blake2b512').update(HELLO).digest('base64')}`,
    ].map((value): Scenario => ({
      name: `an unsupported algorithm (${value.split(' ')[0]}) is 400, the offset unchanged`,
      steps: [
        create('u', 11),
        patch('u', 0, HELLO, { headers: { 'upload-checksum': value }, status: 400 }),
        head('u', { 'Upload-Offset': '0' }),
      ],
    })),
    ...[
      'sha1',
      'sha1 ',
      '',
      'sha1 !!!!',
      'sha1 Kq5s NclPz7QV2+lfQIuc6R7oRu0=',
      'sha1 Kq5sNclPz7QV2+lfQIuc6R7oRu0= extra',
      `sha1:${digest('sha1', HELLO)}`,
      [sum('sha1', HELLO), sum('sha1', 'other')],
    ].map((value): Scenario => ({
      name: `a malformed Upload-Checksum ${JSON.stringify(value)} is 400, the offset unchanged`,
      steps: [
        create('u', 11),
        patch('u', 0, HELLO, { headers: { 'upload-checksum': value }, status: 400 }),
        head('u', { 'Upload-Offset': '0' }),
      ],
    })),
    {
      name: 'switched off: not advertised, no Tus-Checksum-Algorithm, Upload-Checksum ignored',
      options: { extensions: { checksum: false } },
      steps: [
        discover({
          'Tus-Extension': (v) => {
            expect(v?.split(',')).not.toContain('checksum');
            expect(v?.split(',')).not.toContain('checksum-trailer');
          },
          'Tus-Checksum-Algorithm': null,
        }),
        create('u', 11),
        patch('u', 0, 'hello', {
          headers: { 'upload-checksum': sum('sha1', 'wrong') },
          res: { 'Upload-Offset': '5' },
        }),
        patch('u', 5, ' world', {
          headers: { 'upload-checksum': 'sha3 bm9uZQ==' },
          res: { 'Upload-Offset': '11' },
        }),
      ],
    },
  ]);
});

describe('checksum-trailer', () => {
  const TRAILER = { trailer: 'Upload-Checksum' };
  runScenarios([
    ...(['sha1', 'md5', 'sha256', 'sha512', 'crc32'] as const).map((algorithm): Scenario => ({
      name: `${algorithm} in a trailer: matching is 204`,
      steps: [
        create('u', 11),
        patch('u', 0, [b('hello'), b(' world')], {
          chunked: true,
          headers: TRAILER,
          trailers: { 'upload-checksum': sum(algorithm, HELLO) },
          res: { 'Upload-Offset': '11' },
        }),
      ],
    })),
    {
      name: 'a mismatching trailer is 460, the offset unchanged',
      steps: [
        create('u', 11),
        patch('u', 0, [b('hello'), b(' world')], {
          chunked: true,
          headers: TRAILER,
          trailers: { 'upload-checksum': sum('sha256', 'hello worle') },
          status: 460,
        }),
        head('u', { 'Upload-Offset': '0' }),
      ],
    },
    {
      name: 'a trailer with an unsupported algorithm is 400, the offset unchanged',
      steps: [
        create('u', 11),
        patch('u', 0, [b(HELLO)], {
          chunked: true,
          headers: TRAILER,
          trailers: { 'upload-checksum': 'sha3 bm9uZQ==' },
          status: 400,
        }),
        head('u', { 'Upload-Offset': '0' }),
      ],
    },
    {
      name: 'a later PATCH in a trailer is checked against its own bytes only',
      steps: [
        create('u', 11),
        patch('u', 0, [b('hello')], { res: { 'Upload-Offset': '5' } }),
        patch('u', 5, [b(' wor'), b('ld')], {
          chunked: true,
          headers: TRAILER,
          trailers: { 'upload-checksum': sum('sha1', ' world') },
          res: { 'Upload-Offset': '11' },
        }),
      ],
    },
    {
      name: 'a checksum header and an announced trailer together are 400, nothing stored',
      steps: [
        create('u', 11),
        patch('u', 0, [b(HELLO)], {
          chunked: true,
          headers: { ...TRAILER, 'upload-checksum': sum('sha256', HELLO) },
          trailers: { 'upload-checksum': sum('sha256', 'something else') },
          status: 400,
        }),
        head('u', { 'Upload-Offset': '0' }),
      ],
    },
    {
      name: 'an announced trailer that never comes: the chunk is not accepted unverified',
      steps: [
        create('u', 11),
        patch('u', 0, [b(HELLO)], { chunked: true, headers: TRAILER, trailers: {}, status: 400 }),
        head('u', { 'Upload-Offset': '0' }),
      ],
    },
    {
      name: 'a trailer nobody announced cannot be verified: 400, the offset unchanged',
      steps: [
        create('u', 11),
        patch('u', 0, [b('hello'), b(' world')], {
          chunked: true,
          trailers: { 'upload-checksum': sum('sha256', HELLO) },
          status: 400,
          res: { 'Tus-Resumable': '1.0.0' },
        }),
        head('u', { 'Upload-Offset': '0' }),
        patch('u', 0, [b(HELLO)], { chunked: true, res: { 'Upload-Offset': '11' } }),
      ],
    },
    {
      name: 'switched off: not advertised (checksum still is); the trailer is not used',
      options: { extensions: { 'checksum-trailer': false } },
      steps: [
        discover({
          'Tus-Extension': (v) => {
            expect(v?.split(',')).toContain('checksum');
            expect(v?.split(',')).not.toContain('checksum-trailer');
          },
        }),
        create('u', 11),
        patch('u', 0, [b(HELLO)], {
          chunked: true,
          headers: TRAILER,
          trailers: { 'upload-checksum': sum('sha256', 'wrong') },
          res: { 'Upload-Offset': '11' },
        }),
      ],
    },
  ]);
});

describe('expiration', () => {
  runScenarios([
    {
      name: 'Upload-Expires on POST, PATCH and HEAD of an unfinished upload; absent once complete',
      options: { expireAfterMs: 60_000 },
      steps: [
        discover({ 'Tus-Extension': (v) => expect(v?.split(',')).toContain('expiration') }),
        create('u', 10, { res: { 'Upload-Expires': expiresIn(60_000) } }),
        patch('u', 0, 'hello', { res: { 'Upload-Expires': expiresIn(60_000) } }),
        head('u', { 'Upload-Expires': expiresIn(60_000) }),
        patch('u', 5, 'world', { res: { 'Upload-Offset': '10', 'Upload-Expires': null } }),
        head('u', { 'Upload-Offset': '10', 'Upload-Expires': null }),
      ],
    },
    {
      name: 'the default lifetime is a day',
      steps: [
        create('u', 10, { res: { 'Upload-Expires': expiresIn(86_400_000) } }),
        head('u', { 'Upload-Expires': expiresIn(86_400_000) }),
      ],
    },
    {
      name: 'creation-with-upload: on the POST of an unfinished upload, not of a finished one',
      options: { expireAfterMs: 120_000 },
      steps: [
        create('u', 10, { body: 'hello', res: { 'Upload-Expires': expiresIn(120_000) } }),
        create('v', 5, { body: 'hello', res: { 'Upload-Expires': null } }),
      ],
    },
    {
      name: 'an empty upload is complete at creation: no Upload-Expires',
      steps: [
        create('u', 0, { res: { 'Upload-Expires': null } }),
        head('u', { 'Upload-Offset': '0', 'Upload-Length': '0', 'Upload-Expires': null }),
      ],
    },
    {
      name: 'deferred-length and partial uploads expire too',
      options: { expireAfterMs: 60_000 },
      steps: [
        create('d', 'defer', { res: { 'Upload-Expires': expiresIn(60_000) } }),
        head('d', { 'Upload-Expires': expiresIn(60_000) }),
        partial('p', 5, { res: { 'Upload-Expires': expiresIn(60_000) } }),
        head('p', { 'Upload-Expires': expiresIn(60_000) }),
      ],
    },
    {
      name: 'the final of unfinished partials announces its expiry at creation like HEAD does',
      options: { expireAfterMs: 60_000 },
      steps: [
        partial('a', 5),
        final('f', ['a'], { res: { 'Upload-Expires': expiresIn(60_000) } }),
        head('f', { 'Upload-Expires': expiresIn(60_000) }),
      ],
    },
    {
      name: 'switched off: not advertised, no Upload-Expires anywhere',
      options: { extensions: { expiration: false }, expireAfterMs: 60_000 },
      steps: [
        discover({ 'Tus-Extension': (v) => expect(v?.split(',')).not.toContain('expiration') }),
        create('u', 10, { res: { 'Upload-Expires': null } }),
        patch('u', 0, 'hello', { res: { 'Upload-Expires': null } }),
        head('u', { 'Upload-Expires': null }),
      ],
    },
  ]);

  /** An upload whose last write was an hour ago. */
  async function staleUpload(fixture: MemoryFixture, length = 10): Promise<string> {
    const id = randomUUID();
    const hourAgo = Date.now() / 1000 - 3600;
    await fixture.store.create(id, new UploadRecord(length, 0, {}, {}, hourAgo, hourAgo));
    return id;
  }

  it('an upload past its expiry is 410 on HEAD (no Upload-Offset) and on PATCH (nothing written)', async () => {
    const fixture = memoryFixture({ expireAfterMs: 60_000 });
    const id = await staleUpload(fixture);
    await runSteps(fixture, [
      head(id, { 'Upload-Offset': null }, 410),
      patch(id, 0, 'hello', { status: 410 }),
    ]);
    expect((await fixture.store.getRecord(id))?.offset).toBe(0);
    expect(data(fixture, id)).toBe('\0'.repeat(10));
  });

  it('with expiration switched off, the same upload is still served', async () => {
    const fixture = memoryFixture({ expireAfterMs: 60_000, extensions: { expiration: false } });
    const id = await staleUpload(fixture);
    await runSteps(fixture, [
      head(id, { 'Upload-Offset': '0', 'Upload-Expires': null }),
      patch(id, 0, 'hello', { res: { 'Upload-Offset': '5' } }),
    ]);
  });

  it('expireAfterMs tiny: the upload is soon 410 on HEAD and PATCH', async () => {
    const fixture = memoryFixture({ expireAfterMs: 1 });
    const ids = await runSteps(fixture, [
      create('u', 10, { res: { 'Upload-Expires': IMF_FIXDATE } }),
    ]);
    await waitFor(async () => {
      const response = await fixture.send(request('HEAD', TUS, { id: ids.u }));
      return response.status === 410;
    }, 'HEAD answering 410');
    await runSteps(fixture, [
      head(ids.u, { 'Upload-Offset': null }, 410),
      patch(ids.u, 0, 'hello', { status: 410 }),
    ]);
    expect((await fixture.store.getRecord(ids.u))?.offset ?? 0).toBe(0);
  });
});

describe('termination', () => {
  runScenarios([
    {
      name: 'DELETE is 204; afterwards HEAD, PATCH and DELETE are 404',
      steps: [
        discover({ 'Tus-Extension': (v) => expect(v?.split(',')).toContain('termination') }),
        create('u', 10),
        patch('u', 0, 'hello'),
        del('u', 204),
        gone('u'),
        patch('u', 5, 'world', { status: 404 }),
        patch('u', 0, 'hello', { status: 404 }),
        del('u', 404),
      ],
      check: (f, ids) => {
        expect(f.storage.files.has(ids.u)).toBe(false);
        expect(f.records.records.has(ids.u)).toBe(false);
      },
    },
    {
      name: 'DELETE of a complete upload',
      steps: [create('u', 5, { body: 'hello' }), del('u', 204), gone('u')],
      check: (f, ids) => expect(f.storage.files.has(ids.u)).toBe(false),
    },
    {
      name: 'DELETE of a deferred-length upload',
      steps: [create('u', 'defer'), patch('u', 0, 'hello'), del('u', 204), gone('u')],
    },
    {
      name: 'DELETE of an unknown upload is 404',
      steps: [del(UNKNOWN_ID, 404)],
    },
    {
      name: 'DELETE of something that is not an upload id is 404',
      steps: [del('not-an-id', 404), del('../x', 404)],
    },
    {
      name: 'switched off: not advertised, DELETE is 405 (Allow without DELETE), the upload stays',
      options: { extensions: { termination: false } },
      steps: [
        discover({ 'Tus-Extension': (v) => expect(v?.split(',')).not.toContain('termination') }),
        create('u', 10),
        del('u', 405, {
          res: { Allow: (v) => expect(v?.split(/, */) ?? []).not.toContain('DELETE') },
        }),
        head('u', { 'Upload-Offset': '0' }),
      ],
    },
  ]);

  it('DELETE while another request holds the upload: 423 after lockWaitMs, the upload stays', async () => {
    const fixture = memoryFixture({ lockWaitMs: 300 });
    const ids = await runSteps(fixture, [create('u', 10)]);
    let release!: () => void;
    const held = new Promise<void>((r) => (release = r));
    let locked!: () => void;
    const isLocked = new Promise<void>((r) => (locked = r));
    const holder = fixture.store.withLock(ids.u, 0, async () => {
      locked();
      await held;
    });
    await isLocked;
    const started = Date.now();
    const response = await fixture.send(request('DELETE', TUS, { id: ids.u }));
    const waited = Date.now() - started;
    release();
    await holder;
    expect(response.status).toBe(423);
    expect(waited).toBeGreaterThanOrEqual(250);
    await runSteps(fixture, [head(ids.u, { 'Upload-Offset': '0' })]);
  });

  it('DELETE stops a PATCH streaming in this process: the PATCH gets 410, then 404', async () => {
    const fixture = memoryFixture({ lockWaitMs: 30_000 });
    const ids = await runSteps(fixture, [create('u', 100)]);
    const body = new PassThrough();
    const patching = fixture.send(
      request(
        'PATCH',
        { ...TUS, 'content-type': OCTET, 'upload-offset': '0' },
        { id: ids.u, body },
      ),
    );
    body.write(b('hello'));
    await waitFor(() => fixture.handler.context.activeWrites.has(ids.u), 'the PATCH streaming');
    const started = Date.now();
    const deleted = await fixture.send(request('DELETE', TUS, { id: ids.u }));
    expect(deleted.status).toBe(204);
    // Stopped, not waited for: far below the lock wait.
    expect(Date.now() - started).toBeLessThan(10_000);
    const patched = await patching;
    // Not a 204 with an offset: the upload it describes is gone.
    expect(patched.status).toBe(410);
    expect(String(patched.body)).toContain('ERR_UPLOAD_TERMINATED');
    expect(patched.headers['Tus-Resumable'] ?? patched.headers['tus-resumable']).toBe('1.0.0');
    body.destroy();
    await runSteps(fixture, [gone(ids.u), patch(ids.u, 0, 'hello', { status: 404 })]);
    expect(fixture.storage.files.has(ids.u)).toBe(false);
    expect(fixture.records.records.has(ids.u)).toBe(false);
  });
});

describe('concatenation', () => {
  const abs = (ids: Ids, ...names: string[]) => names.map((n) => `http://${HOST}/files/${ids[n]}`);
  const helloWorld = [
    partial('a', 5),
    partial('b', 6),
    patch('a', 0, 'hello'),
    patch('b', 0, ' world'),
  ];
  const concatOf = (urls: (ids: Ids) => string[]) => (value: string | undefined, ids: Ids) =>
    expect(value).toBe(`final;${urls(ids).join(' ')}`);
  const rel = (ids: Ids, ...names: string[]) => names.map((n) => `/files/${ids[n]}`);

  runScenarios([
    {
      name: 'a partial upload: HEAD has Upload-Concat: partial and Upload-Offset',
      steps: [
        discover({
          'Tus-Extension': (v) => {
            expect(v?.split(',')).toContain('concatenation');
            expect(v?.split(',')).toContain('concatenation-unfinished');
          },
        }),
        partial('a', 5, { res: { Location: LOCATION } }),
        head('a', { 'Upload-Concat': 'partial', 'Upload-Offset': '0', 'Upload-Length': '5' }),
        patch('a', 0, 'hel', { res: { 'Upload-Offset': '3' } }),
        head('a', { 'Upload-Concat': 'partial', 'Upload-Offset': '3' }),
      ],
    },
    {
      name: 'a final of relative URLs: the partials in order, length their sum, partials removed',
      steps: [
        ...helloWorld,
        final('f', ['a', 'b'], { res: { Location: LOCATION } }),
        head('f', {
          'Upload-Concat': concatOf((ids) => rel(ids, 'a', 'b')),
          'Upload-Offset': '11',
          'Upload-Length': '11',
        }),
        gone('a'),
        gone('b'),
      ],
      check: (f, ids) => expect(data(f, ids.f)).toBe(HELLO),
    },
    {
      name: 'a final of absolute URLs',
      steps: [
        ...helloWorld,
        final('f', (ids) => abs(ids, 'a', 'b')),
        head('f', {
          'Upload-Concat': concatOf((ids) => abs(ids, 'a', 'b')),
          'Upload-Offset': '11',
          'Upload-Length': '11',
        }),
      ],
      check: (f, ids) => expect(data(f, ids.f)).toBe(HELLO),
    },
    {
      name: 'the order of the list is the order of the bytes',
      steps: [...helloWorld, final('f', ['b', 'a']), head('f', { 'Upload-Offset': '11' })],
      check: (f, ids) => expect(data(f, ids.f)).toBe(' worldhello'),
    },
    {
      name: 'the same partial twice in one final is 400: it would deliver its bytes twice',
      steps: [
        partial('a', 5),
        patch('a', 0, 'hello'),
        final('f', ['a', 'a'], {
          status: 400,
          code: 'ERR_DUPLICATE_PART',
          res: { Location: null },
        }),
        head('a', { 'Upload-Offset': '5' }),
      ],
      check: (f) => expect(f.records.records.size).toBe(1),
    },
    {
      name: 'with allowDuplicateParts, the same partial twice in one final',
      options: { allowDuplicateParts: true },
      steps: [
        partial('a', 5),
        patch('a', 0, 'hello'),
        final('f', ['a', 'a']),
        head('f', { 'Upload-Offset': '10', 'Upload-Length': '10' }),
      ],
      check: (f, ids) => expect(data(f, ids.f)).toBe('hellohello'),
    },
    {
      name: 'a final naming more partials than maxPartsPerFinal is 400',
      options: { maxPartsPerFinal: 2 },
      steps: [
        ...helloWorld,
        partial('c', 1),
        final(undefined, ['a', 'b', 'c'], { status: 400, code: 'ERR_TOO_MANY_PARTS' }),
        final('f', ['a', 'b']),
      ],
      check: (f, ids) => expect(data(f, ids.f)).toBe(HELLO),
    },
    {
      name: 'a partial is part of at most maxFinalsPerPartial finals (409 beyond)',
      options: { removePartials: false, maxFinalsPerPartial: 2 },
      steps: [
        ...helloWorld,
        final('f', ['a', 'b']),
        final('g', ['b']),
        final('h', ['a']),
        final(undefined, ['a'], {
          status: 409,
          code: 'ERR_PARTIAL_IN_USE',
          res: { Location: null },
        }),
        final(undefined, ['b'], { status: 409, code: 'ERR_PARTIAL_IN_USE' }),
      ],
      check: (f, ids) => {
        expect(data(f, ids.f)).toBe(HELLO);
        expect(data(f, ids.g)).toBe(' world');
        expect(data(f, ids.h)).toBe('hello');
        // a, b, f, g, h: the refused finals left nothing.
        expect(f.records.records.size).toBe(5);
      },
    },
    {
      name: 'a refused final leaves no trace on the partials it named',
      options: { removePartials: false, maxFinalsPerPartial: 1 },
      steps: [
        ...helloWorld,
        partial('c', 1),
        final('f', ['b']),
        // a is registered before b refuses: a must not count this final.
        final(undefined, ['a', 'b'], { status: 409 }),
        final('g', ['a', 'c']),
        patch('c', 0, '!'),
      ],
      check: (f, ids) => expect(data(f, ids.g)).toBe('hello!'),
    },
    {
      name: 'a final at least as long as its deferred partials so far, past maxSize, is 413',
      options: { maxSize: 10 },
      steps: [
        post('a', { 'upload-concat': 'partial', 'upload-defer-length': '1' }),
        patch('a', 0, 'abcdefgh'),
        partial('b', 5),
        final(undefined, ['a', 'b'], { status: 413, res: { Location: null } }),
      ],
    },
    {
      name: 'a final whose deferred partial grows its total past maxSize fails at assembly',
      options: { maxSize: 10 },
      steps: [
        post('a', { 'upload-concat': 'partial', 'upload-defer-length': '1' }),
        patch('a', 0, 'abc'),
        partial('b', 5),
        patch('b', 0, 'hello'),
        final('f', ['a', 'b'], { res: { 'Upload-Offset': null } }),
        patch('a', 3, 'defg', { headers: { 'upload-length': '7' } }),
        gone('f'),
      ],
      check: (f, ids) => expect(f.storage.files.has(ids.f)).toBe(false),
    },
    {
      name: 'a DELETE of a partial a final waits for fails the final (gone, not left waiting)',
      steps: [
        partial('a', 5),
        partial('b', 6),
        patch('b', 0, ' world'),
        final('f', ['a', 'b']),
        del('a'),
        gone('f'),
        head('b', { 'Upload-Offset': '6' }),
      ],
    },
    {
      name: 'a final of zero bytes is complete and finalized at once',
      steps: [partial('a', 0), final('f', ['a']), head('f', { 'Upload-Offset': '0' })],
      check: (f, ids) => {
        expect(data(f, ids.f)).toBe('');
        expect(f.records.records.size).toBe(1);
      },
    },
    {
      name: 'with removePartials: false, partials stay and can be used by another final',
      options: { removePartials: false },
      steps: [
        ...helloWorld,
        final('f', ['a', 'b']),
        head('a', { 'Upload-Offset': '5', 'Upload-Concat': 'partial' }),
        final('g', ['b', 'a']),
        head('g', { 'Upload-Offset': '11' }),
      ],
      check: (f, ids) => {
        expect(data(f, ids.f)).toBe(HELLO);
        expect(data(f, ids.g)).toBe(' worldhello');
      },
    },
    {
      name: "the final has the metadata of its own creation, not the partials'",
      steps: [
        partial('a', 5, { headers: { 'upload-metadata': `filename ${btoa('part.bin')}` } }),
        patch('a', 0, 'hello'),
        final('f', ['a'], { headers: { 'upload-metadata': `filename ${btoa('whole.bin')}` } }),
        head('f', { 'Upload-Metadata': `filename ${btoa('whole.bin')}` }),
      ],
    },
    {
      name: 'PATCH to a final upload is 403 and changes neither it nor its partials',
      steps: [
        partial('a', 5),
        patch('a', 0, 'he'),
        final('f', ['a']),
        patch('f', 0, 'hello', { status: 403 }),
        head('f', { 'Upload-Offset': null, 'Upload-Length': '5' }),
        head('a', { 'Upload-Offset': '2' }),
        patch('a', 2, 'llo'),
      ],
    },
    {
      name: 'PATCH to an assembled final upload is 403',
      steps: [...helloWorld, final('f', ['a', 'b']), patch('f', 11, 'x', { status: 403 })],
      check: (f, ids) => expect(data(f, ids.f)).toBe(HELLO),
    },
    {
      name: 'a final of unfinished partials: HEAD echoes Upload-Concat, Upload-Length, no Upload-Offset',
      steps: [
        partial('a', 5),
        partial('b', 6),
        patch('a', 0, 'hello'),
        final('f', (ids) => [...rel(ids, 'a'), ...abs(ids, 'b')]),
        head('f', {
          'Upload-Concat': concatOf((ids) => [...rel(ids, 'a'), ...abs(ids, 'b')]),
          'Upload-Offset': null,
          'Upload-Length': '11',
        }),
      ],
    },
    {
      name: 'a final may name its partials by any host the server answers to',
      steps: [
        ...helloWorld,
        final('f', (ids) => [
          `http://localhost:8080/files/${ids.a}`,
          `https://127.0.0.1/files/${ids.b}`,
        ]),
        head('f', { 'Upload-Offset': '11', 'Upload-Length': '11' }),
      ],
      check: (f, ids) => expect(data(f, ids.f)).toBe(HELLO),
    },
    {
      name: 'a final longer than maxSize is 413 (its length is the sum of its partials)',
      options: { maxSize: 10 },
      steps: [
        ...helloWorld,
        final(undefined, ['a', 'b'], { status: 413, res: { Location: null } }),
      ],
    },
    {
      name: 'a final with Upload-Length is 400',
      steps: [
        ...helloWorld,
        final(undefined, ['a', 'b'], { headers: { 'upload-length': '11' }, status: 400 }),
        final(undefined, ['a', 'b'], { headers: { 'upload-defer-length': '1' }, status: 400 }),
        head('a', { 'Upload-Offset': '5' }),
      ],
    },
    ...(
      [
        ['an upload that is not partial', (ids: Ids) => rel(ids, 'n')],
        ['another base path', (ids: Ids) => [`/other/${ids.a}`]],
        ['a traversal /files/../x', () => ['/files/../x']],
        ['a traversal /files/../files/<id>/..', (ids: Ids) => [`/files/../files/${ids.a}/..`]],
        ['an encoded traversal %2e%2e', (ids: Ids) => [`/files/%2e%2e/${ids.a}`]],
        ['an encoded traversal %2E%2E', (ids: Ids) => [`/files/%2E%2E/files/${ids.a}`]],
        ['a query', (ids: Ids) => [`/files/${ids.a}?x=1`]],
        ['the upper-cased id', (ids: Ids) => [`/files/${ids.a.toUpperCase()}`]],
        ['a fragment', (ids: Ids) => [`http://${HOST}/files/${ids.a}#x`]],
        ['no URL at all', () => []],
      ] as const
    ).map(([what, urls]): Scenario => ({
      name: `a final naming ${what} is 400`,
      steps: [
        partial('a', 5),
        patch('a', 0, 'hello'),
        create('n', 5),
        patch('n', 0, 'hello'),
        final(undefined, (ids) => [...urls(ids)], { status: 400, res: { Location: null } }),
        head('a', { 'Upload-Offset': '5' }),
      ],
      check: (f) => expect(f.records.records.size).toBe(2),
    })),
    // An upload that does not exist is 404, as tusd and @tus/server answer (and as another
    // principal's upload is answered with ownership on).
    ...(
      [
        ['an unknown upload', () => [`/files/${UNKNOWN_ID}`]],
        ['one good and one unknown', (ids: Ids) => [...rel(ids, 'a'), `/files/${UNKNOWN_ID}`]],
      ] as const
    ).map(([what, urls]): Scenario => ({
      name: `a final naming ${what} is 404`,
      steps: [
        partial('a', 5),
        patch('a', 0, 'hello'),
        final(undefined, (ids) => [...urls(ids)], { status: 404, res: { Location: null } }),
        head('a', { 'Upload-Offset': '5' }),
      ],
      check: (f) => expect(f.records.records.size).toBe(1),
    })),
    ...['final', 'bogus', 'Partial', 'final:/files/x'].map((value): Scenario => ({
      name: `Upload-Concat ${JSON.stringify(value)} is 400`,
      steps: [post(undefined, { 'upload-concat': value, 'upload-length': '5' }, { status: 400 })],
    })),
    {
      name: 'without concatenation-unfinished, a final of an unfinished partial is 400',
      options: { extensions: { 'concatenation-unfinished': false } },
      steps: [
        discover({
          'Tus-Extension': (v) => {
            expect(v?.split(',')).toContain('concatenation');
            expect(v?.split(',')).not.toContain('concatenation-unfinished');
          },
        }),
        partial('a', 5),
        partial('b', 6),
        patch('a', 0, 'hello'),
        patch('b', 0, ' wor'),
        final(undefined, ['a', 'b'], { status: 400, res: { Location: null } }),
        patch('b', 4, 'ld'),
        final('f', ['a', 'b']),
        head('f', { 'Upload-Offset': '11' }),
      ],
      check: (f, ids) => expect(data(f, ids.f)).toBe(HELLO),
    },
    {
      name: 'switched off: not advertised; Upload-Concat is ignored',
      options: { extensions: { concatenation: false } },
      steps: [
        discover({
          'Tus-Extension': (v) => {
            expect(v?.split(',')).not.toContain('concatenation');
            expect(v?.split(',')).not.toContain('concatenation-unfinished');
          },
        }),
        partial('a', 5),
        head('a', { 'Upload-Concat': null }),
        patch('a', 0, 'hello'),
        // Without the extension a "final" is a creation without Upload-Length.
        final(undefined, ['a'], { status: 400 }),
      ],
    },
  ]);

  it('a final created before its partials finish is assembled when the last one completes', async () => {
    const fixture = memoryFixture();
    const ids = await runSteps(fixture, [
      partial('a', 5),
      partial('b', 6),
      patch('a', 0, 'he'),
      final('f', ['a', 'b']),
      head('f', { 'Upload-Offset': null, 'Upload-Length': '11' }),
      patch('a', 2, 'llo'),
      head('f', { 'Upload-Offset': null }),
      patch('b', 0, ' world'),
    ]);
    await waitFor(async () => {
      const response = await fixture.send(request('HEAD', TUS, { id: ids.f }));
      return header(response, 'Upload-Offset') !== undefined;
    }, 'the final assembled');
    await runSteps(fixture, [
      head(ids.f, { 'Upload-Offset': '11', 'Upload-Length': '11' }),
      gone(ids.a),
      gone(ids.b),
    ]);
    expect(data(fixture, ids.f)).toBe(HELLO);
    expect(fixture.logger.error).not.toHaveBeenCalled();
  });

  it('a final of partials with deferred lengths: no Upload-Length until known, then assembled', async () => {
    const fixture = memoryFixture();
    const ids = await runSteps(fixture, [
      post('a', { 'upload-concat': 'partial', 'upload-defer-length': '1' }),
      partial('b', 6),
      patch('a', 0, 'hel'),
      patch('b', 0, ' world'),
      final('f', ['a', 'b']),
      head('f', { 'Upload-Offset': null, 'Upload-Length': null, 'Upload-Concat': /^final;/ }),
      patch('a', 3, 'lo', { headers: { 'upload-length': '5' } }),
    ]);
    await waitFor(async () => {
      const response = await fixture.send(request('HEAD', TUS, { id: ids.f }));
      return header(response, 'Upload-Offset') !== undefined;
    }, 'the final assembled');
    await runSteps(fixture, [head('f', { 'Upload-Offset': '11', 'Upload-Length': '11' })], ids);
    expect(data(fixture, ids.f)).toBe(HELLO);
  });

  it('a final can be created while a PATCH of one of its partials holds the partial (in progress)', async () => {
    const fixture = memoryFixture({ lockWaitMs: 100 });
    const ids = await runSteps(fixture, [
      partial('a', 5),
      partial('b', 6),
      patch('b', 0, ' world'),
    ]);
    const body = new PassThrough();
    const patching = fixture.send(
      request(
        'PATCH',
        { ...TUS, 'content-type': OCTET, 'upload-offset': '0', 'content-length': '5' },
        { id: ids.a, body },
      ),
    );
    body.write(b('he'));
    await waitFor(() => fixture.handler.context.activeWrites.has(ids.a), 'the PATCH streaming');
    // "The Client MAY send the concatenation request while the partial uploads are still in
    // progress": longer than lockWaitMs here.
    const created = await fixture.send(
      request('POST', { ...TUS, 'upload-concat': `final;/files/${ids.a} /files/${ids.b}` }),
    );
    body.end(b('llo'));
    expect((await patching).status).toBe(204);
    expect(created.status).toBe(201);
    const finalId = idOf(header(created, 'Location'));
    await waitFor(async () => {
      const response = await fixture.send(request('HEAD', TUS, { id: finalId }));
      return header(response, 'Upload-Offset') === '11';
    }, 'the final assembled');
    expect(data(fixture, finalId)).toBe(HELLO);
  });
});

describe('extensions with the filesystem completed queue', () => {
  async function entries(dir: string): Promise<string[]> {
    return (await readdir(dir)).filter((name) => !name.startsWith('.')).sort();
  }

  it('a complete partial never enters the completed queue; the assembled final does', async () => {
    const fixture = await filesystemFixture();
    const ids = await runSteps(fixture, [partial('a', 5), partial('b', 6), patch('a', 0, 'hello')]);
    // A complete partial stays where it is, waiting for a final.
    expect(await entries(fixture.completedDir)).toEqual([]);
    await runSteps(fixture, [head('a', { 'Upload-Offset': '5', 'Upload-Concat': 'partial' })], ids);
    await runSteps(fixture, [patch('b', 0, ' world')], ids);
    expect(await entries(fixture.completedDir)).toEqual([]);

    await runSteps(fixture, [final('f', ['a', 'b'])], ids);
    const f = ids.f;
    expect(await entries(fixture.completedDir)).toEqual([f, `${f}.meta`].sort());
    expect(await readFile(join(fixture.completedDir, f), 'utf8')).toBe(HELLO);
    const record = JSON.parse(await readFile(join(fixture.completedDir, `${f}.meta`), 'utf8')) as {
      length: number;
      offset: number;
    };
    expect(record).toMatchObject({ length: 11, offset: 11 });
    // The partials are gone from staging, and so is the final.
    expect(await entries(fixture.uploadDir)).toEqual([]);
    await runSteps(fixture, [
      head(f, {
        'Upload-Offset': '11',
        'Upload-Length': '11',
        'Upload-Concat': `final;/files/${ids.a} /files/${ids.b}`,
        'Upload-Expires': null,
      }),
      patch(f, 11, [], { status: 403 }),
      gone(ids.a),
    ]);
    expect(fixture.logger.error).not.toHaveBeenCalled();
  });

  it('with removePartials: false the partials stay in staging, out of the queue', async () => {
    const fixture = await filesystemFixture({ removePartials: false });
    const ids = await runSteps(fixture, [
      partial('a', 5),
      partial('b', 6),
      patch('a', 0, 'hello'),
      patch('b', 0, ' world'),
      final('f', ['a', 'b']),
    ]);
    expect(await entries(fixture.completedDir)).toEqual([ids.f, `${ids.f}.meta`].sort());
    expect(await entries(fixture.uploadDir)).toEqual(
      [ids.a, `${ids.a}.meta`, ids.b, `${ids.b}.meta`].sort(),
    );
    await runSteps(
      fixture,
      [head('a', { 'Upload-Offset': '5' }), head('b', { 'Upload-Offset': '6' })],
      ids,
    );
  });

  it('a final created first is assembled on disk and finalized when its partials complete', async () => {
    const fixture = await filesystemFixture({ lockWaitMs: 2000 });
    const ids = await runSteps(fixture, [
      partial('a', 5),
      partial('b', 6),
      final('f', ['a', 'b']),
      head('f', { 'Upload-Offset': null, 'Upload-Length': '11' }),
      patch('b', 0, ' world'),
      patch('a', 0, 'hello'),
    ]);
    await waitFor(
      async () => (await entries(fixture.completedDir)).includes(ids.f),
      'the final in completedDir',
    );
    await waitFor(async () => (await entries(fixture.uploadDir)).length === 0, 'staging emptied');
    expect(await readFile(join(fixture.completedDir, ids.f), 'utf8')).toBe(HELLO);
    await runSteps(fixture, [head('f', { 'Upload-Offset': '11', 'Upload-Length': '11' })], ids);
    expect(fixture.logger.error).not.toHaveBeenCalled();
  });

  it('a final a consumer has taken is still a final: HEAD echoes Upload-Concat, PATCH is 403', async () => {
    const fixture = await filesystemFixture();
    const ids = await runSteps(fixture, [
      partial('a', 5),
      patch('a', 0, 'hello'),
      final('f', ['a']),
    ]);
    const claimed = await fixture.queue.waitForFile({ timeout: 5000 });
    expect(claimed.name).toBe(ids.f);
    await claimed.release();
    // The queue still answers for it (a receipt), and must answer as for a final upload.
    await runSteps(
      fixture,
      [
        head('f', {
          'Upload-Offset': '5',
          'Upload-Length': '5',
          'Upload-Concat': `final;/files/${ids.a}`,
        }),
        patch('f', 5, [], { status: 403 }),
      ],
      ids,
    );
  });

  it('DELETE of a finished upload removes it from the completed queue, then 404', async () => {
    const fixture = await filesystemFixture();
    const ids = await runSteps(fixture, [create('u', 5), patch('u', 0, 'hello')]);
    expect(await entries(fixture.completedDir)).toEqual([ids.u, `${ids.u}.meta`].sort());
    await runSteps(fixture, [head('u', { 'Upload-Offset': '5' }), del('u', 204), gone('u')], ids);
    expect(await entries(fixture.completedDir)).toEqual([]);
    expect(await fixture.queue.lookup(ids.u)).toBeNull();
  });

  it('DELETE of a finished upload a consumer holds is 423; after release it can be terminated', async () => {
    const fixture = await filesystemFixture();
    const ids = await runSteps(fixture, [create('u', 5), patch('u', 0, 'hello')]);
    const claimed = await fixture.queue.waitForFile({ timeout: 5000 });
    expect(claimed.name).toBe(ids.u);
    await runSteps(fixture, [del(ids.u, 423), head(ids.u, { 'Upload-Offset': '5' })]);
    expect(await readFile(join(fixture.completedDir, ids.u), 'utf8')).toBe('hello');
    await claimed.release();
    await runSteps(fixture, [del(ids.u, 204), gone(ids.u)]);
    expect(await entries(fixture.completedDir)).toEqual([]);
  });

  it('DELETE of an unfinished upload removes its files from staging', async () => {
    const fixture = await filesystemFixture();
    const ids = await runSteps(fixture, [create('u', 10), patch('u', 0, 'hello')]);
    await runSteps(fixture, [del('u', 204), gone('u')], ids);
    expect(await entries(fixture.uploadDir)).toEqual([]);
    expect(await entries(fixture.completedDir)).toEqual([]);
    expect(ids.u).toMatch(new RegExp(`^${UUID}$`));
  });
});

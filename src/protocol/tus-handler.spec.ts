import { describe, expect, it, jest } from '@jest/globals';
import { randomUUID } from 'node:crypto';
import { PassThrough, Readable } from 'node:stream';
import { MemoryRecordStore, MemoryStorage, MemoryUploadLocker } from '../storage/memory.storage.js';
import {
  PartialBatchError,
  type BodySink,
  type UploadRecordStore,
  type UploadStorage,
} from '../storage/storage.interfaces.js';
import { UploadStorageService } from '../storage/upload-storage.service.js';
import type { RequestHeaders } from './headers.js';
import { parseMetadata, serializeMetadata } from './metadata.js';
import type { TusLogger, TusProtocolOptions } from './tus-context.js';
import { TusHandler } from './tus-handler.js';
import type { TusRequest, TusResponse } from './tus-request.js';
import { UploadRecord } from '../core/upload-record.js';

const OCTET = 'application/offset+octet-stream';
const TUS = { 'tus-resumable': '1.0.0' };
const PATCH0 = { ...TUS, 'content-type': OCTET, 'upload-offset': '0' };
const UUID = '[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}';
const UNKNOWN_ID = '0f8fad5b-d9cb-469f-a165-70867728950e';
/** Placeholder for the id of the upload each table case starts with (length 10, offset 0). */
const EXISTING = '<existing upload>';
const LENGTH = 10;
const METADATA = { filename: 'a.txt', note: 'Grüße', flag: '' };

const bytes = (text: string) => Buffer.from(text);

interface Fixture {
  handler: TusHandler;
  store: UploadStorageService;
  storage: UploadStorage;
  records: UploadRecordStore;
  logger: { error: jest.Mock<TusLogger['error']>; warn: jest.Mock<TusLogger['warn']> };
  /** Handles a request and checks what every response must carry. */
  send(request: TusRequest): Promise<TusResponse>;
}

function setup(
  options: Partial<TusProtocolOptions> = {},
  parts: { storage?: UploadStorage; records?: UploadRecordStore } = {},
): Fixture {
  const storage = parts.storage ?? new MemoryStorage();
  const records = parts.records ?? new MemoryRecordStore();
  const store = new UploadStorageService(storage, records, new MemoryUploadLocker());
  const logger = { error: jest.fn<TusLogger['error']>(), warn: jest.fn<TusLogger['warn']>() };
  const handler = new TusHandler({
    options: { maxMetadataSize: 4096, lockWaitMs: 100, bodyIdleTimeoutMs: 0, ...options },
    store,
    logger,
  });
  return {
    handler,
    store,
    storage,
    records,
    logger,
    send: async (request) => {
      const response = await handler.handle(request);
      expect(response.headers['Tus-Resumable']).toBe('1.0.0');
      return response;
    },
  };
}

function request(
  method: string,
  headers: RequestHeaders,
  extra: { id?: string; body?: Readable | Buffer[]; host?: string } = {},
): TusRequest {
  const { body = [], ...rest } = extra;
  return {
    method,
    headers: { host: 'example.com:8080', ...headers },
    basePath: '/files',
    scheme: 'http',
    body: Array.isArray(body) ? Readable.from(body) : body,
    ...rest,
  };
}

async function createUpload(
  fixture: Fixture,
  length = LENGTH,
  metadata: Record<string, string> = METADATA,
) {
  const id = randomUUID();
  await fixture.store.create(id, new UploadRecord(length, 0, metadata));
  return id;
}

const memoryFile = (fixture: Fixture, id: string) =>
  (fixture.storage as MemoryStorage).files.get(id);

/** Resolves once `condition` holds, checking after each turn of the event loop. */
async function until(condition: () => boolean): Promise<void> {
  for (let i = 0; i < 10_000 && !condition(); i++)
    await new Promise((resolve) => setImmediate(resolve));
  expect(condition()).toBe(true);
}

interface Case {
  name: string;
  method: string;
  /** `EXISTING` for the upload the case starts with. */
  id?: string;
  headers: RequestHeaders;
  body?: Buffer[];
  options?: Partial<TusProtocolOptions>;
  status: number;
  /** Expected response headers; `null` means the header must be absent. */
  resHeaders?: Record<string, string | RegExp | null>;
  /** Machine code the error body must carry. */
  code?: string;
  /** The existing upload's offset after the request (it starts at 0). */
  offset?: number;
}

const cases: Case[] = [
  // OPTIONS
  {
    name: 'OPTIONS lists capabilities without Tus-Max-Size when there is no limit',
    method: 'OPTIONS',
    headers: {},
    status: 204,
    resHeaders: {
      'Tus-Version': '1.0.0',
      'Tus-Extension':
        'creation,creation-with-upload,creation-defer-length,termination,expiration,checksum,checksum-trailer,concatenation,concatenation-unfinished',
      'Tus-Checksum-Algorithm': 'sha1,md5,sha256,sha512,crc32',
      'Tus-Max-Size': null,
    },
  },
  {
    name: 'OPTIONS advertises Tus-Max-Size when maxSize is set',
    method: 'OPTIONS',
    headers: {},
    options: { maxSize: 1000 },
    status: 204,
    resHeaders: {
      'Tus-Version': '1.0.0',
      'Tus-Extension':
        'creation,creation-with-upload,creation-defer-length,termination,expiration,checksum,checksum-trailer,concatenation,concatenation-unfinished',
      'Tus-Max-Size': '1000',
    },
  },
  {
    name: 'OPTIONS leaves out switched-off extensions and those that depend on them',
    method: 'OPTIONS',
    headers: {},
    options: { extensions: { checksum: false, concatenation: false } },
    status: 204,
    resHeaders: {
      'Tus-Extension': 'creation,creation-with-upload,creation-defer-length,termination,expiration',
      'Tus-Checksum-Algorithm': null,
    },
  },
  {
    name: 'OPTIONS ignores an unsupported Tus-Resumable',
    method: 'OPTIONS',
    headers: { 'tus-resumable': '0.2.2' },
    status: 204,
    resHeaders: { 'Tus-Version': '1.0.0' },
  },
  // 412
  ...(['POST', 'HEAD', 'PATCH'] as const).flatMap((method): Case[] => {
    const base =
      method === 'PATCH'
        ? { 'content-type': OCTET, 'upload-offset': '0', 'upload-length': '10' }
        : { 'upload-length': '10' };
    const id = method === 'POST' ? undefined : EXISTING;
    return [
      {
        name: `${method} without Tus-Resumable`,
        method,
        id,
        headers: base,
        body: [bytes('abc')],
        status: 412,
        resHeaders: { 'Tus-Version': '1.0.0' },
        code: 'ERR_UNSUPPORTED_VERSION',
        offset: 0,
      },
      {
        name: `${method} with Tus-Resumable 0.2.2`,
        method,
        id,
        headers: { ...base, 'tus-resumable': '0.2.2' },
        body: [bytes('abc')],
        status: 412,
        resHeaders: { 'Tus-Version': '1.0.0' },
        code: 'ERR_UNSUPPORTED_VERSION',
        offset: 0,
      },
    ];
  }),
  // X-HTTP-Method-Override
  {
    name: 'POST overridden to HEAD',
    method: 'POST',
    id: EXISTING,
    headers: { ...TUS, 'x-http-method-override': 'HEAD' },
    status: 200,
    resHeaders: { 'Upload-Offset': '0', 'Upload-Length': '10', Location: null },
  },
  {
    name: 'POST overridden to PATCH (lower case)',
    method: 'POST',
    id: EXISTING,
    headers: { ...PATCH0, 'x-http-method-override': 'patch' },
    body: [bytes('abcd')],
    status: 204,
    resHeaders: { 'Upload-Offset': '4' },
    offset: 4,
  },
  {
    name: 'unknown override method',
    method: 'POST',
    id: EXISTING,
    headers: { ...TUS, 'x-http-method-override': 'COPY' },
    status: 405,
    resHeaders: { Allow: 'OPTIONS, POST, HEAD, PATCH, DELETE' },
    code: 'ERR_METHOD_NOT_ALLOWED',
  },
  {
    name: 'override repeated with different methods',
    method: 'POST',
    id: EXISTING,
    headers: { ...PATCH0, 'x-http-method-override': ['PATCH', 'HEAD'] },
    body: [bytes('abcd')],
    status: 405,
    code: 'ERR_METHOD_NOT_ALLOWED',
    offset: 0,
  },
  // The override is honoured on a POST only: OPTIONS stays discovery (its route carries no
  // guard), and no other method turns into a write.
  ...['POST', 'PATCH', 'DELETE', 'HEAD', 'post', 'delete'].map((override): Case => ({
    name: `OPTIONS with X-HTTP-Method-Override: ${override} stays discovery`,
    method: 'OPTIONS',
    id: override.toUpperCase() === 'POST' ? undefined : EXISTING,
    headers: { ...PATCH0, 'upload-length': '5', 'x-http-method-override': override },
    body: [bytes('abcd')],
    status: 204,
    resHeaders: { 'Tus-Version': '1.0.0', Location: null, 'Upload-Offset': null },
    offset: 0,
  })),
  {
    name: 'GET with X-HTTP-Method-Override: DELETE is no DELETE',
    method: 'GET',
    id: EXISTING,
    headers: { ...TUS, 'x-http-method-override': 'DELETE' },
    status: 405,
    code: 'ERR_METHOD_NOT_ALLOWED',
    offset: 0,
  },
  {
    name: 'HEAD with X-HTTP-Method-Override: PATCH is a HEAD',
    method: 'HEAD',
    id: EXISTING,
    headers: { ...PATCH0, 'x-http-method-override': 'PATCH' },
    body: [bytes('abcd')],
    status: 200,
    resHeaders: { 'Upload-Offset': '0' },
    offset: 0,
  },
  {
    name: 'GET',
    method: 'GET',
    id: EXISTING,
    headers: TUS,
    status: 405,
    code: 'ERR_METHOD_NOT_ALLOWED',
  },
  {
    name: 'DELETE when termination is switched off',
    method: 'DELETE',
    id: EXISTING,
    headers: TUS,
    options: { extensions: { termination: false } },
    status: 405,
    code: 'ERR_METHOD_NOT_ALLOWED',
  },
  // POST
  {
    name: 'POST creates an upload',
    method: 'POST',
    headers: { ...TUS, 'upload-length': '100' },
    status: 201,
    resHeaders: { Location: new RegExp(`^http://example\\.com:8080/files/${UUID}$`) },
  },
  {
    name: 'POST of an empty upload',
    method: 'POST',
    headers: { ...TUS, 'upload-length': '0' },
    status: 201,
    resHeaders: { Location: new RegExp(`^http://example\\.com:8080/files/${UUID}$`) },
  },
  {
    name: 'POST at exactly maxSize',
    method: 'POST',
    headers: { ...TUS, 'upload-length': '100' },
    options: { maxSize: 100 },
    status: 201,
  },
  ...[undefined, '', '-1', 'abc', '1e3', '1.5', ' 10', '9007199254740992', ['10', '11']].map(
    (value): Case => ({
      name: `POST with Upload-Length ${JSON.stringify(value)}`,
      method: 'POST',
      headers: value === undefined ? TUS : { ...TUS, 'upload-length': value },
      status: 400,
      code: 'ERR_INVALID_UPLOAD_LENGTH',
      resHeaders: { Location: null },
    }),
  ),
  {
    name: 'POST over maxSize',
    method: 'POST',
    headers: { ...TUS, 'upload-length': '101' },
    options: { maxSize: 100 },
    status: 413,
    code: 'ERR_MAX_SIZE_EXCEEDED',
    resHeaders: { Location: null },
  },
  ...(
    [
      ['duplicate metadata key', 'a YQ==,a Yg==', 'ERR_INVALID_METADATA'],
      ['metadata over maxMetadataSize', `a ${'QUFB'.repeat(1100)}`, 'ERR_METADATA_TOO_LARGE'],
    ] as const
  ).map(([what, metadata, code]): Case => ({
    name: `POST with ${what}`,
    method: 'POST',
    headers: { ...TUS, 'upload-length': '10', 'upload-metadata': metadata },
    status: 400,
    code,
  })),
  ...[
    '',
    'evil.com/x',
    'user@evil.com',
    'evil.com\r\nSet-Cookie: a=b',
    'evil.com:0',
    ['a.com', 'b.com'],
  ].map((host): Case => ({
    name: `POST with Host ${JSON.stringify(host)}`,
    method: 'POST',
    headers: { ...TUS, 'upload-length': '10', host },
    status: 400,
    code: 'ERR_INVALID_HOST',
    resHeaders: { Location: null },
  })),
  {
    name: 'POST on an upload URL',
    method: 'POST',
    id: EXISTING,
    headers: { ...TUS, 'upload-length': '10' },
    status: 405,
    code: 'ERR_METHOD_NOT_ALLOWED',
  },
  // HEAD
  {
    name: 'HEAD of an upload',
    method: 'HEAD',
    id: EXISTING,
    headers: TUS,
    status: 200,
    resHeaders: { 'Upload-Offset': '0', 'Upload-Length': '10', 'Cache-Control': 'no-store' },
  },
  {
    name: 'HEAD of an unknown upload',
    method: 'HEAD',
    id: UNKNOWN_ID,
    headers: TUS,
    status: 404,
    resHeaders: { 'Upload-Offset': null },
  },
  {
    name: 'HEAD of a traversal id',
    method: 'HEAD',
    id: '../x',
    headers: TUS,
    status: 404,
    resHeaders: { 'Upload-Offset': null },
  },
  {
    name: 'HEAD of an upper-case id',
    method: 'HEAD',
    id: UNKNOWN_ID.toUpperCase(),
    headers: TUS,
    status: 404,
  },
  {
    name: 'HEAD of a record file name',
    method: 'HEAD',
    id: `${UNKNOWN_ID}.meta`,
    headers: TUS,
    status: 404,
  },
  { name: 'HEAD of the creation URL', method: 'HEAD', headers: TUS, status: 405 },
  // PATCH
  {
    name: 'PATCH writes at the offset',
    method: 'PATCH',
    id: EXISTING,
    headers: { ...PATCH0, 'content-length': '5' },
    body: [bytes('hel'), bytes('lo')],
    status: 204,
    resHeaders: { 'Upload-Offset': '5' },
    offset: 5,
  },
  {
    name: 'PATCH with a chunked body of the whole upload',
    method: 'PATCH',
    id: EXISTING,
    headers: PATCH0,
    body: [bytes('0123456789')],
    status: 204,
    resHeaders: { 'Upload-Offset': '10' },
    offset: 10,
  },
  {
    name: 'PATCH with a Content-Type parameter',
    method: 'PATCH',
    id: EXISTING,
    headers: { ...PATCH0, 'content-type': `${OCTET}; charset=binary` },
    body: [bytes('ab')],
    status: 204,
    resHeaders: { 'Upload-Offset': '2' },
    offset: 2,
  },
  ...[
    undefined,
    'application/octet-stream',
    'text/plain',
    ['application/offset+octet-stream', 'text/plain'],
  ].map((type): Case => ({
    name: `PATCH with Content-Type ${JSON.stringify(type)}`,
    method: 'PATCH',
    id: EXISTING,
    headers:
      type === undefined ? { ...TUS, 'upload-offset': '0' } : { ...PATCH0, 'content-type': type },
    body: [bytes('abc')],
    status: 415,
    code: 'ERR_INVALID_CONTENT_TYPE',
    offset: 0,
  })),
  ...[undefined, '', '-1', 'abc', '1e1', '0x0', ['0', '1']].map((value): Case => ({
    name: `PATCH with Upload-Offset ${JSON.stringify(value)}`,
    method: 'PATCH',
    id: EXISTING,
    headers:
      value === undefined
        ? { ...TUS, 'content-type': OCTET }
        : { ...PATCH0, 'upload-offset': value },
    body: [bytes('abc')],
    status: 400,
    code: 'ERR_INVALID_OFFSET',
    offset: 0,
  })),
  {
    name: 'PATCH with an invalid Content-Length',
    method: 'PATCH',
    id: EXISTING,
    headers: { ...PATCH0, 'content-length': 'abc' },
    body: [bytes('abc')],
    status: 400,
    code: 'ERR_INVALID_CONTENT_LENGTH',
    offset: 0,
  },
  {
    name: 'PATCH at a mismatched offset',
    method: 'PATCH',
    id: EXISTING,
    headers: { ...PATCH0, 'upload-offset': '3' },
    body: [bytes('abc')],
    status: 409,
    resHeaders: { 'Upload-Offset': '0' },
    code: 'ERR_MISMATCHED_OFFSET',
    offset: 0,
  },
  {
    name: 'PATCH with a Content-Length beyond the length',
    method: 'PATCH',
    id: EXISTING,
    headers: { ...PATCH0, 'content-length': '11' },
    body: [bytes('01234567890')],
    status: 413,
    code: 'ERR_UPLOAD_LENGTH_EXCEEDED',
    offset: 0,
  },
  {
    name: 'PATCH with a chunked body beyond the length',
    method: 'PATCH',
    id: EXISTING,
    headers: PATCH0,
    body: [bytes('0123456'), bytes('789abc'), bytes('def')],
    status: 413,
    code: 'ERR_UPLOAD_LENGTH_EXCEEDED',
    offset: 10,
  },
  {
    name: 'PATCH with a Content-Length over maxChunkSize',
    method: 'PATCH',
    id: EXISTING,
    headers: { ...PATCH0, 'content-length': '5' },
    body: [bytes('01234')],
    options: { maxChunkSize: 4 },
    status: 413,
    code: 'ERR_CHUNK_TOO_LARGE',
    offset: 0,
  },
  {
    name: 'PATCH with a Content-Length of exactly maxChunkSize',
    method: 'PATCH',
    id: EXISTING,
    headers: { ...PATCH0, 'content-length': '4' },
    body: [bytes('0123')],
    options: { maxChunkSize: 4 },
    status: 204,
    resHeaders: { 'Upload-Offset': '4' },
    offset: 4,
  },
  {
    name: 'PATCH with a chunked body over maxChunkSize (the bytes up to it are kept)',
    method: 'PATCH',
    id: EXISTING,
    headers: PATCH0,
    body: [bytes('012'), bytes('345')],
    options: { maxChunkSize: 4 },
    status: 413,
    code: 'ERR_CHUNK_TOO_LARGE',
    offset: 4,
  },
  {
    name: 'PATCH of an unknown upload',
    method: 'PATCH',
    id: UNKNOWN_ID,
    headers: PATCH0,
    body: [bytes('abc')],
    status: 404,
    code: 'ERR_UPLOAD_NOT_FOUND',
  },
  {
    name: 'PATCH of a traversal id',
    method: 'PATCH',
    id: '../x',
    headers: PATCH0,
    body: [bytes('abc')],
    status: 404,
    code: 'ERR_UPLOAD_NOT_FOUND',
  },
  {
    name: 'PATCH of the creation URL',
    method: 'PATCH',
    headers: PATCH0,
    body: [bytes('abc')],
    status: 405,
    code: 'ERR_METHOD_NOT_ALLOWED',
  },
];

describe('TusHandler status codes', () => {
  it.each(cases.map((c) => [c.name, c] as const))('%s', async (_name, c) => {
    const fixture = setup(c.options);
    const existing = await createUpload(fixture);
    const id = c.id === EXISTING ? existing : c.id;
    const response = await fixture.send(request(c.method, c.headers, { id, body: c.body }));

    expect(response.status).toBe(c.status);
    for (const [name, expected] of Object.entries(c.resHeaders ?? {})) {
      if (expected === null) expect(response.headers).not.toHaveProperty(name);
      else if (expected instanceof RegExp) expect(response.headers[name]).toMatch(expected);
      else expect(response.headers[name]).toBe(expected);
    }
    const isHead = c.method === 'HEAD' || c.headers['x-http-method-override'] === 'HEAD';
    if (response.status >= 400) {
      if (isHead) expect(response.body).toBeUndefined();
      else expect(response.body).toContain(c.code ?? 'ERR_');
    } else {
      expect(response.body).toBeUndefined();
    }
    // Only a 201 creates an upload.
    expect((fixture.records as MemoryRecordStore).records.size).toBe(
      response.status === 201 ? 2 : 1,
    );

    const record = await fixture.store.getRecord(existing);
    const offset = c.offset ?? 0;
    expect(record?.offset).toBe(offset);
    // Never a byte past the offset, never a byte past the length.
    const file = memoryFile(fixture, existing)!;
    expect(file.length).toBe(LENGTH);
    expect(file.subarray(offset).equals(Buffer.alloc(LENGTH - offset))).toBe(true);
    const sent = Buffer.concat(c.body ?? []);
    expect(file.subarray(0, offset).equals(sent.subarray(0, offset))).toBe(true);
    expect(fixture.logger.error).not.toHaveBeenCalled();
  });
});

describe('TusHandler POST', () => {
  it('stores the upload under the id of Location, with its length and metadata', async () => {
    const fixture = setup();
    const response = await fixture.send(
      request('POST', {
        ...TUS,
        'upload-length': '42',
        'upload-metadata': serializeMetadata(METADATA)!,
      }),
    );
    expect(response.status).toBe(201);
    const id = response.headers.Location.split('/').pop()!;
    const record = await fixture.store.getRecord(id);
    expect(record).toMatchObject({ length: 42, offset: 0, metadata: METADATA });
    expect(memoryFile(fixture, id)?.length).toBe(42);
  });

  it('uses the request host and base path over the Host header', async () => {
    const fixture = setup();
    const response = await fixture.send({
      ...request('POST', { ...TUS, 'upload-length': '1' }),
      host: 'Proxy.Example:443',
      scheme: 'https',
      basePath: '/api/uploads',
    });
    expect(response.headers.Location).toMatch(
      new RegExp(`^https://proxy\\.example:443/api/uploads/${UUID}$`),
    );
  });

  it('gives every upload a new id', async () => {
    const fixture = setup();
    const locations = new Set<string>();
    for (let i = 0; i < 5; i++) {
      const response = await fixture.send(request('POST', { ...TUS, 'upload-length': '1' }));
      locations.add(response.headers.Location);
    }
    expect(locations.size).toBe(5);
  });

  it('answers 507 when the storage is full and leaves no record', async () => {
    class FullStorage extends MemoryStorage {
      override async create(): Promise<void> {
        throw Object.assign(new Error('no space left on device'), { code: 'ENOSPC' });
      }
    }
    const fixture = setup({}, { storage: new FullStorage() });
    const response = await fixture.send(request('POST', { ...TUS, 'upload-length': '10' }));
    expect(response.status).toBe(507);
    expect(response.body).toContain('ERR_INSUFFICIENT_STORAGE');
    expect(response.headers).not.toHaveProperty('Location');
    expect((fixture.records as MemoryRecordStore).records.size).toBe(0);
    expect(fixture.logger.error).not.toHaveBeenCalled();
  });

  it('answers 500 with a generic body when the record store fails, logs it and leaves no data', async () => {
    const failure = new Error('secret database password in this message');
    class BrokenRecords extends MemoryRecordStore {
      override async put(): Promise<void> {
        throw failure;
      }
    }
    const fixture = setup({}, { records: new BrokenRecords() });
    const response = await fixture.send(request('POST', { ...TUS, 'upload-length': '10' }));
    expect(response.status).toBe(500);
    expect(response.body).toBe('ERR_INTERNAL_SERVER_ERROR: internal server error\n');
    expect(response.headers).not.toHaveProperty('Location');
    expect(fixture.logger.error).toHaveBeenCalledTimes(1);
    expect(fixture.logger.error).toHaveBeenCalledWith(expect.any(String), failure);
    expect((fixture.storage as MemoryStorage).files.size).toBe(0);
  });
});

describe('TusHandler HEAD', () => {
  it('returns the metadata given at creation', async () => {
    const fixture = setup();
    const created = await fixture.send(
      request('POST', {
        ...TUS,
        'upload-length': '7',
        'upload-metadata': serializeMetadata(METADATA)!,
      }),
    );
    const id = created.headers.Location.split('/').pop()!;
    const response = await fixture.send(request('HEAD', TUS, { id }));
    expect(response.status).toBe(200);
    expect(response.headers['Upload-Length']).toBe('7');
    expect(parseMetadata(response.headers['Upload-Metadata'], { maxSize: 4096 })).toEqual(METADATA);
  });

  it('returns metadata values that are not UTF-8 byte for byte, as sent', async () => {
    const fixture = setup();
    const header = `filename ${Buffer.from('k.bin').toString('base64')},key ${Buffer.from([0xff, 0x00, 0xc3]).toString('base64')}`;
    const created = await fixture.send(
      request('POST', { ...TUS, 'upload-length': '3', 'upload-metadata': header }),
    );
    const id = created.headers.Location.split('/').pop()!;
    const response = await fixture.send(request('HEAD', TUS, { id }));
    expect(response.headers['Upload-Metadata']).toBe(header);
  });

  it.each(['résumé.pdf', '日本.txt', '../../x\u202Egpj.exe', 'a\r\nb\u0000'])(
    'accepts the filename %j and returns it as sent',
    async (filename) => {
      const fixture = setup();
      const header = `filename ${Buffer.from(filename).toString('base64')}`;
      const created = await fixture.send(
        request('POST', { ...TUS, 'upload-length': '3', 'upload-metadata': header }),
      );
      expect(created.status).toBe(201);
      const id = created.headers.Location.split('/').pop()!;
      expect((await fixture.store.getRecord(id))?.metadata).toEqual({ filename });
      const response = await fixture.send(request('HEAD', TUS, { id }));
      expect(response.headers['Upload-Metadata']).toBe(header);
    },
  );

  it('has no Upload-Metadata for an upload without metadata', async () => {
    const fixture = setup();
    const id = await createUpload(fixture, 3, {});
    const response = await fixture.send(request('HEAD', TUS, { id }));
    expect(response.status).toBe(200);
    expect(response.headers).not.toHaveProperty('Upload-Metadata');
  });

  it('answers 500 without a body when the record store fails', async () => {
    class BrokenRecords extends MemoryRecordStore {
      override async get(): Promise<UploadRecord | null> {
        throw new Error('EIO');
      }
    }
    const fixture = setup({}, { records: new BrokenRecords() });
    const response = await fixture.send(request('HEAD', TUS, { id: UNKNOWN_ID }));
    expect(response.status).toBe(500);
    expect(response.body).toBeUndefined();
    expect(fixture.logger.error).toHaveBeenCalledTimes(1);
  });
});

describe('TusHandler PATCH', () => {
  const patch = (
    id: string,
    offset: number,
    body: Readable | Buffer[],
    headers: RequestHeaders = {},
  ) => request('PATCH', { ...PATCH0, 'upload-offset': String(offset), ...headers }, { id, body });

  it('resumes across requests and completes the upload', async () => {
    const fixture = setup();
    const id = await createUpload(fixture);
    expect((await fixture.send(patch(id, 0, [bytes('01234')]))).headers['Upload-Offset']).toBe('5');
    const head = await fixture.send(request('HEAD', TUS, { id }));
    expect(head.headers['Upload-Offset']).toBe('5');
    expect((await fixture.send(patch(id, 5, [bytes('56789')]))).headers['Upload-Offset']).toBe(
      '10',
    );
    expect(memoryFile(fixture, id)!.toString()).toBe('0123456789');
    expect((await fixture.store.getRecord(id))?.isComplete).toBe(true);
    // An empty PATCH at the end is a no-op success; any further byte is past the length.
    expect((await fixture.send(patch(id, 10, []))).status).toBe(204);
    expect((await fixture.send(patch(id, 10, [bytes('x')]))).status).toBe(413);
    expect(memoryFile(fixture, id)!.toString()).toBe('0123456789');
  });

  it('answers 423 while another request holds the lock, and writes nothing', async () => {
    const fixture = setup({ lockWaitMs: 20 });
    const id = await createUpload(fixture);
    const lock = await fixture.store.locker.acquire(id, 0);
    try {
      const response = await fixture.send(patch(id, 0, [bytes('abc')]));
      expect(response.status).toBe(423);
      expect(response.body).toContain('ERR_UPLOAD_LOCKED');
      expect((await fixture.store.getRecord(id))?.offset).toBe(0);
    } finally {
      await lock.release();
    }
    const response = await fixture.send(patch(id, 0, [bytes('abc')]));
    expect(response.status).toBe(204);
    expect(response.headers['Upload-Offset']).toBe('3');
  });

  it('waits for a lock released within lockWaitMs', async () => {
    const fixture = setup({ lockWaitMs: 5000 });
    const id = await createUpload(fixture);
    const lock = await fixture.store.locker.acquire(id, 0);
    const pending = fixture.send(patch(id, 0, [bytes('abc')]));
    await new Promise((resolve) => setImmediate(resolve));
    await lock.release();
    expect((await pending).status).toBe(204);
  });

  it('keeps the bytes of a body the client aborted', async () => {
    const fixture = setup();
    const id = await createUpload(fixture);
    const body = new PassThrough();
    const pending = fixture.send(patch(id, 0, body, { 'content-length': '10' }));
    body.write(bytes('abcd'));
    await until(() => memoryFile(fixture, id)!.subarray(0, 4).toString() === 'abcd');
    body.destroy();
    const response = await pending;
    expect(response.headers['Upload-Offset']).toBe('4');
    expect((await fixture.store.getRecord(id))?.offset).toBe(4);
    const head = await fixture.send(request('HEAD', TUS, { id }));
    expect(head.headers['Upload-Offset']).toBe('4');
  });

  it('keeps the bytes of a body that errored', async () => {
    const fixture = setup();
    const id = await createUpload(fixture);
    const body = new PassThrough();
    const pending = fixture.send(patch(id, 0, body));
    body.write(bytes('abc'));
    await until(() => memoryFile(fixture, id)!.subarray(0, 3).toString() === 'abc');
    body.destroy(new Error('ECONNRESET'));
    await pending;
    expect((await fixture.store.getRecord(id))?.offset).toBe(3);
  });

  it('cuts a stalled body after bodyIdleTimeoutMs and keeps its bytes', async () => {
    const fixture = setup({ bodyIdleTimeoutMs: 50 });
    const id = await createUpload(fixture);
    const body = new PassThrough();
    const started = Date.now();
    const pending = fixture.send(patch(id, 0, body));
    body.write(bytes('abcdef'));
    const response = await pending;
    expect(Date.now() - started).toBeGreaterThanOrEqual(45);
    expect(response.headers['Upload-Offset']).toBe('6');
    expect(body.destroyed).toBe(true);
    expect((await fixture.store.getRecord(id))?.offset).toBe(6);
    expect(memoryFile(fixture, id)!.subarray(0, 6).toString()).toBe('abcdef');
  });

  it('answers 507 when the disk fills mid-body and keeps the bytes written before', async () => {
    // Room for 3 bytes: the batch that brings more writes them, then fails (a short write).
    class FillingStorage extends MemoryStorage {
      override async openWrite(id: string, offset: number): Promise<BodySink> {
        const sink = await super.openWrite(id, offset);
        let room = 3;
        return {
          write: async (chunks, bytes) => {
            const fit = Math.min(room, bytes);
            room -= fit;
            if (fit > 0) await sink.write([Buffer.concat(chunks).subarray(0, fit)], fit);
            if (fit < bytes) {
              const full = Object.assign(new Error('disk full'), { code: 'ENOSPC' });
              throw fit > 0 ? new PartialBatchError(full, fit) : full;
            }
          },
          finish: (written) => sink.finish(written),
        };
      }
    }
    const fixture = setup({}, { storage: new FillingStorage() });
    const id = await createUpload(fixture);
    const response = await fixture.send(patch(id, 0, [bytes('abcdef')]));
    expect(response.status).toBe(507);
    expect(response.body).toContain('ERR_INSUFFICIENT_STORAGE');
    expect((await fixture.store.getRecord(id))?.offset).toBe(3);
    expect(fixture.logger.error).not.toHaveBeenCalled();
  });

  it('answers 500 and logs when the storage fails for another reason', async () => {
    const failure = Object.assign(new Error('I/O error'), { code: 'EIO' });
    class BrokenStorage extends MemoryStorage {
      override async openWrite(): Promise<BodySink> {
        throw failure;
      }
    }
    const fixture = setup({}, { storage: new BrokenStorage() });
    const id = await createUpload(fixture);
    const response = await fixture.send(patch(id, 0, [bytes('abc')]));
    expect(response.status).toBe(500);
    expect(response.body).toBe('ERR_INTERNAL_SERVER_ERROR: internal server error\n');
    expect(fixture.logger.error).toHaveBeenCalledWith(expect.any(String), failure);
    // The lock was released: the next request is not refused with 423.
    expect((await fixture.send(patch(id, 0, [bytes('abc')]))).status).toBe(500);
  });
});

describe('TusHandler.settled', () => {
  it('waits for the assembly a completing partial started after its response', async () => {
    const fixture = setup();
    const created = await fixture.send(
      request('POST', { ...TUS, 'upload-length': '3', 'upload-concat': 'partial' }),
    );
    const partial = created.headers.Location.split('/').pop()!;
    const final = await fixture.send(
      request('POST', { ...TUS, 'upload-concat': `final;/files/${partial}` }),
    );
    expect(final.status).toBe(201);
    const finalId = final.headers.Location.split('/').pop()!;
    const patched = await fixture.send(
      request('PATCH', PATCH0, { id: partial, body: [Buffer.from('abc')] }),
    );
    expect(patched.status).toBe(204);
    // The assembly runs after the PATCH's response: not done yet, done once settled.
    expect((await fixture.store.getRecord(finalId))?.isComplete).toBe(false);
    await fixture.handler.settled();
    expect((await fixture.store.getRecord(finalId))?.isComplete).toBe(true);
    expect(fixture.handler.context.background.size).toBe(0);
  });
});

describe('TusHandler deferred length beyond what storage can hold', () => {
  it('a PATCH declaring a length memory cannot hold is 413, the upload unchanged', async () => {
    const fixture = setup();
    const created = await fixture.send(request('POST', { ...TUS, 'upload-defer-length': '1' }));
    const id = created.headers.Location.split('/').pop()!;
    const refused = await fixture.send(
      request(
        'PATCH',
        { ...PATCH0, 'upload-length': String(Number.MAX_SAFE_INTEGER) },
        { id, body: [Buffer.from('abc')] },
      ),
    );
    expect(refused.status).toBe(413);
    expect(fixture.logger.error).not.toHaveBeenCalled();
    const record = await fixture.store.getRecord(id);
    expect({ length: record?.length, offset: record?.offset }).toEqual({ length: null, offset: 0 });
  });
});

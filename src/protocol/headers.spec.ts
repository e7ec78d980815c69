import { describe, expect, it } from '@jest/globals';
import { randomUUID } from 'node:crypto';
import {
  type RequestHeaders,
  assertTusResumable,
  isOffsetOctetStream,
  isUploadId,
  parseContentLength,
  parseHost,
  parseNonNegativeInteger,
  parseUploadLength,
  parseUploadOffset,
} from './headers.js';
import { TusError } from './tus-error.js';

/** The `TusError` thrown by `fn`; fails the test when it returns or throws something else. */
function thrown(fn: () => unknown): TusError {
  let error: unknown;
  try {
    fn();
  } catch (e) {
    error = e;
  }
  expect(error).toBeInstanceOf(TusError);
  return error as TusError;
}

describe('parseNonNegativeInteger', () => {
  it.each<[string, string | undefined, number | undefined]>([
    ['zero', '0', 0],
    ['digits', '12345', 12345],
    ['leading zeros', '007', 7],
    ['16 digits with leading zeros', '0000000000000012', 12],
    ['largest exact integer (2^53 - 1)', '9007199254740991', 9007199254740991],
    ['2^53 (not exact)', '9007199254740992', undefined],
    ['far beyond 2^53', '99999999999999999999', undefined],
    ['absent', undefined, undefined],
    ['empty', '', undefined],
    ['plus sign', '+1', undefined],
    ['minus sign', '-1', undefined],
    ['negative zero', '-0', undefined],
    ['exponent', '1e3', undefined],
    ['decimal point', '1.0', undefined],
    ['hexadecimal', '0x10', undefined],
    ['leading space', ' 1', undefined],
    ['trailing space', '1 ', undefined],
    ['inner space', '1 2', undefined],
    ['trailing newline', '1\n', undefined],
    ['non-ASCII digits', '\u0661\u0662', undefined],
    ['Infinity', 'Infinity', undefined],
    ['letters', 'abc', undefined],
  ])('%s: %j -> %j', (_name, value, expected) => {
    expect(parseNonNegativeInteger(value)).toBe(expected);
  });
});

describe('Upload-Length, Upload-Offset and Content-Length', () => {
  const parsers = {
    'upload-length': { parse: parseUploadLength, code: 'ERR_INVALID_UPLOAD_LENGTH' },
    'upload-offset': { parse: parseUploadOffset, code: 'ERR_INVALID_OFFSET' },
    'content-length': { parse: parseContentLength, code: 'ERR_INVALID_CONTENT_LENGTH' },
  } as const;
  const names = Object.keys(parsers) as (keyof typeof parsers)[];

  it.each(names)('%s: a valid value is parsed', (name) => {
    expect(parsers[name].parse({ [name]: '1024' })).toBe(1024);
    expect(parsers[name].parse({ [name]: '0' })).toBe(0);
  });

  it.each(
    names.flatMap((name) =>
      ['', '-1', 'abc', '1e3', ' 5', '9007199254740992'].map((v) => [name, v] as const),
    ),
  )('%s: %j is refused with 400', (name, value) => {
    const error = thrown(() => parsers[name].parse({ [name]: value }));
    expect(error.status).toBe(400);
    expect(error.code).toBe(parsers[name].code);
  });

  it.each(['upload-length', 'upload-offset'] as const)(
    '%s: a missing header is refused with 400',
    (name) => {
      const error = thrown(() => parsers[name].parse({}));
      expect(error.status).toBe(400);
      expect(error.code).toBe(parsers[name].code);
    },
  );

  it('content-length: a missing header is undefined (chunked body)', () => {
    expect(parseContentLength({})).toBeUndefined();
  });

  it.each(names)('%s: repeated with different values is refused with 400', (name) => {
    const error = thrown(() => parsers[name].parse({ [name]: ['10', '20'] }));
    expect(error.status).toBe(400);
    expect(error.code).toBe(parsers[name].code);
  });

  it.each(names)('%s: repeated with identical values is accepted', (name) => {
    expect(parsers[name].parse({ [name]: ['10', '10'] })).toBe(10);
  });
});

describe('isOffsetOctetStream', () => {
  it.each<[string, RequestHeaders, boolean]>([
    ['exact', { 'content-type': 'application/offset+octet-stream' }, true],
    ['upper case', { 'content-type': 'Application/Offset+Octet-Stream' }, true],
    [
      'with a parameter',
      { 'content-type': 'application/offset+octet-stream; charset=binary' },
      true,
    ],
    ['parameter without space', { 'content-type': 'application/offset+octet-stream;x=1' }, true],
    ['surrounding blanks', { 'content-type': '  application/offset+octet-stream  ' }, true],
    [
      'identical repeats',
      { 'content-type': ['application/offset+octet-stream', 'application/offset+octet-stream'] },
      true,
    ],
    ['missing', {}, false],
    ['empty', { 'content-type': '' }, false],
    ['octet-stream', { 'content-type': 'application/octet-stream' }, false],
    ['prefix only', { 'content-type': 'application/offset+octet-streamx' }, false],
    ['text', { 'content-type': 'text/plain' }, false],
  ])('%s -> %s', (_name, headers, expected) => {
    expect(isOffsetOctetStream(headers)).toBe(expected);
  });

  it('refuses differing repeats with 415', () => {
    const error = thrown(() =>
      isOffsetOctetStream({ 'content-type': ['application/offset+octet-stream', 'text/plain'] }),
    );
    expect(error.status).toBe(415);
    expect(error.code).toBe('ERR_INVALID_CONTENT_TYPE');
  });
});

describe('assertTusResumable', () => {
  it.each<[string, RequestHeaders]>([
    ['1.0.0', { 'tus-resumable': '1.0.0' }],
    ['1.0.0 with blanks', { 'tus-resumable': ' 1.0.0 ' }],
    ['identical repeats', { 'tus-resumable': ['1.0.0', '1.0.0'] }],
  ])('accepts %s', (_name, headers) => {
    expect(() => assertTusResumable(headers)).not.toThrow();
  });

  it.each<[string, RequestHeaders]>([
    ['missing', {}],
    ['empty', { 'tus-resumable': '' }],
    ['another version', { 'tus-resumable': '0.2.2' }],
    ['a later version', { 'tus-resumable': '2.0.0' }],
    ['differing repeats', { 'tus-resumable': ['1.0.0', '0.2.2'] }],
  ])('refuses %s with 412 and Tus-Version', (_name, headers) => {
    const error = thrown(() => assertTusResumable(headers));
    expect(error.status).toBe(412);
    expect(error.code).toBe('ERR_UNSUPPORTED_VERSION');
    expect(error.headers['Tus-Version']).toBe('1.0.0');
  });
});

describe('parseHost', () => {
  it.each<[string, string]>([
    ['localhost', 'localhost'],
    ['localhost:3000', 'localhost:3000'],
    ['example.com', 'example.com'],
    ['Example.COM:8080', 'example.com:8080'],
    ['fully qualified with dot', 'example.com.'],
    ['sub-domains and hyphens', 'a-b.c-d.example.org'],
    ['underscore (RFC 3986 reg-name, docker-compose service)', 'tus_server:1080'],
    ['one character', 'a'],
    ['label of 63 characters', `${'a'.repeat(63)}.com`],
    ['IPv4', '127.0.0.1'],
    ['IPv4 with port', '192.168.0.1:65535'],
    ['port 1', 'example.com:1'],
    ['IPv6 loopback', '[::1]'],
    ['IPv6 with port', '[::1]:8080'],
    ['IPv6 full', '[2001:db8:0:0:0:0:2:1]'],
    ['IPv6 with IPv4 tail', '[::ffff:192.0.2.1]:443'],
    ['IPv6 with zone', '[fe80::1%25eth0]'],
  ])('accepts %s', (_name, host) => {
    expect(parseHost(host)).toBe(host.toLowerCase());
  });

  it.each<[string, string | undefined]>([
    ['missing', undefined],
    ['empty', ''],
    ['port only', ':8080'],
    ['empty port', 'example.com:'],
    ['space inside', 'exa mple.com'],
    ['leading space', ' example.com'],
    ['trailing space', 'example.com '],
    ['slash', 'example.com/evil'],
    ['backslash', 'example.com\\evil'],
    ['path traversal', '../etc'],
    ['userinfo', 'user@example.com'],
    ['userinfo with password', 'user:pass@example.com'],
    ['CRLF injection', 'example.com\r\nSet-Cookie: a=b'],
    ['LF', 'example.com\n'],
    ['port 0', 'example.com:0'],
    ['port 70000', 'example.com:70000'],
    ['port with six digits', 'example.com:123456'],
    ['non-numeric port', 'example.com:http'],
    ['two ports', 'example.com:80:81'],
    ['unbracketed IPv6', '::1'],
    ['empty brackets', '[]'],
    ['bad IPv6 characters', '[zz::1]'],
    ['unclosed bracket', '[::1'],
    ['hyphen at label start', '-example.com'],
    ['hyphen at label end', 'example-.com'],
    ['empty label', 'example..com'],
    ['label of 64 characters', `${'a'.repeat(64)}.com`],
    ['too long (301 characters)', `${'a.'.repeat(150)}a`],
    ['non-ASCII', 'exämple.com'],
    ['query string', 'example.com?x=1'],
    ['fragment', 'example.com#x'],
  ])('refuses %s with 400', (_name, host) => {
    const error = thrown(() => parseHost(host));
    expect(error.status).toBe(400);
    expect(error.code).toBe('ERR_INVALID_HOST');
  });
});

describe('isUploadId', () => {
  it.each<[string, string | undefined, boolean]>([
    ['lower-case UUID v4', '0f8fad5b-d9cb-469f-a165-70867728950e', true],
    ['randomUUID()', randomUUID(), true],
    ['upper-case UUID', '0F8FAD5B-D9CB-469F-A165-70867728950E', false],
    ['mixed case', '0f8fad5b-d9cb-469f-a165-70867728950E', false],
    ['traversal', '../x', false],
    ['traversal to a UUID', '../0f8fad5b-d9cb-469f-a165-70867728950e', false],
    ['record file name', '0f8fad5b-d9cb-469f-a165-70867728950e.meta', false],
    ['uuid.meta', 'uuid.meta', false],
    ['empty', '', false],
    ['undefined', undefined, false],
    ['no hyphens', '0f8fad5bd9cb469fa16570867728950e', false],
    ['braces', '{0f8fad5b-d9cb-469f-a165-70867728950e}', false],
    ['trailing newline', '0f8fad5b-d9cb-469f-a165-70867728950e\n', false],
    ['too short', '0f8fad5b-d9cb-469f-a165-70867728950', false],
  ])('%s: %j -> %s', (_name, id, expected) => {
    expect(isUploadId(id)).toBe(expected);
  });
});

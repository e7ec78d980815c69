import { describe, expect, it } from '@jest/globals';
import { parseMetadata, parseMetadataHeader, serializeMetadata } from './metadata.js';
import { TusError } from './tus-error.js';

const b64 = (s: string) => Buffer.from(s).toString('base64');
const limits = { maxSize: 4096 };

describe('parseMetadata', () => {
  it.each([
    ['absent', undefined, {}],
    ['empty', '', {}],
    ['one pair', `filename ${b64('a.txt')}`, { filename: 'a.txt' }],
    ['key without value', 'is_confidential', { is_confidential: '' }],
    ['several pairs, spaces around', ` a ${b64('1')} , b ${b64('2')}`, { a: '1', b: '2' }],
    ['invalid key ignored', `bad.key ${b64('x')},ok ${b64('y')}`, { ok: 'y' }],
    ['invalid base64 ignored', `a !!!,b ${b64('z')}`, { b: 'z' }],
    ['three parts ignored', `a b c,d ${b64('e')}`, { d: 'e' }],
    ['utf-8 value', `title ${b64('Grüße')}`, { title: 'Grüße' }],
    ['unpadded base64', 'a aGk', { a: 'hi' }],
    // A filename is whatever the client's Base64 decodes to: made safe where it is used as a
    // path (safeFilename), never refused here.
    ['Latin filename', `filename ${b64('résumé.pdf')}`, { filename: 'résumé.pdf' }],
    ['Japanese filename', `filename ${b64('日本.txt')}`, { filename: '日本.txt' }],
    [
      'emoji filename',
      `filename ${b64('👨\u200D👩\u200D👧.png')}`,
      { filename: '👨\u200D👩\u200D👧.png' },
    ],
    [
      'decomposed filename, as sent',
      `filename ${b64('re\u0301sume\u0301')}`,
      { filename: 're\u0301sume\u0301' },
    ],
    [
      'control chars in filename, as sent',
      `filename ${b64('a\nb\u0000c')}`,
      { filename: 'a\nb\u0000c' },
    ],
    [
      'hostile filename, as sent',
      `filename ${b64('../../x\u202Egpj.exe')}`,
      { filename: '../../x\u202Egpj.exe' },
    ],
  ])('%s', (_name, header, expected) => {
    expect(parseMetadata(header, limits)).toEqual(expected);
  });

  it.each([
    ['duplicate key', `a ${b64('1')},a ${b64('2')}`, 'ERR_INVALID_METADATA'],
    [
      'duplicate filename',
      `filename ${b64('日本.txt')},filename ${b64('a')}`,
      'ERR_INVALID_METADATA',
    ],
    ['header too large', `a ${b64('x'.repeat(4000))}`, 'ERR_METADATA_TOO_LARGE'],
  ])('refuses %s with 400', (_name, header, code) => {
    let error: unknown;
    try {
      parseMetadata(header, limits);
    } catch (e) {
      error = e;
    }
    expect(error).toBeInstanceOf(TusError);
    expect((error as TusError).status).toBe(400);
    expect((error as TusError).code).toBe(code);
  });

  it.each([
    ['Latin', 'résumé.pdf'],
    ['Japanese', '日本.txt'],
    ['hostile', '../../x\u202Egpj.exe'],
    ['controls', '\u0000\r\n\u007F\u0085'],
  ])('gives a %s filename back exactly as sent', (_name, filename) => {
    const header = `filename ${b64(filename)},filetype ${b64('application/pdf')}`;
    const { metadata, encoded } = parseMetadataHeader(header, limits);
    expect(metadata.filename).toBe(filename);
    expect(serializeMetadata(metadata, encoded)).toBe(header);
  });

  it('serializes back to a header that parses to the same metadata', () => {
    const metadata = { filename: 'a b.txt', empty: '', note: 'Grüße' };
    expect(parseMetadata(serializeMetadata(metadata), limits)).toEqual(metadata);
    expect(serializeMetadata({})).toBeUndefined();
  });
});

describe('metadata values that decoding would alter', () => {
  // A value of arbitrary bytes (a key, a hash): decoding it as UTF-8 cannot be undone.
  const raw = Buffer.from([0x00, 0xff, 0xfe, 0x80, 0x41, 0xc3]);
  const header = `name ${b64('a.bin')},key ${raw.toString('base64')},empty`;

  it('are kept as sent, and only those', () => {
    const { metadata, encoded } = parseMetadataHeader(header, limits);
    expect(metadata).toEqual({ name: 'a.bin', key: raw.toString('utf8'), empty: '' });
    expect(encoded).toEqual({ key: raw.toString('base64') });
    expect(parseMetadataHeader(`title ${b64('Grüße')}`, limits).encoded).toEqual({});
  });

  it('serialize back to the bytes the client sent', () => {
    const { metadata, encoded } = parseMetadataHeader(header, limits);
    expect(serializeMetadata(metadata, encoded)).toBe(header);
    // Without them the bytes are lost: what the kept values are for.
    expect(serializeMetadata(metadata)).not.toBe(header);
  });

  it('a binary `__proto__` value is data, not a prototype', () => {
    const { encoded } = parseMetadataHeader(`__proto__ ${raw.toString('base64')}`, limits);
    expect(Object.getPrototypeOf(encoded)).toBe(Object.prototype);
    expect(Object.keys(encoded)).toEqual(['__proto__']);
  });

  it.each([
    ['Base64 without its padding', 'a YQ'],
    ['Base64 with stray bits in its last character', 'a YR=='],
  ])('%s is given back as sent too', (_name, header) => {
    const { metadata, encoded } = parseMetadataHeader(header, limits);
    expect(metadata).toEqual({ a: 'a' });
    expect(serializeMetadata(metadata, encoded)).toBe(header);
  });
});

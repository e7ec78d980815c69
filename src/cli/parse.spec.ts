import { describe, expect, it } from '@jest/globals';
import {
  commaList,
  formatBytes,
  formatDuration,
  integerIn,
  parseChunkSize,
  parseHeader,
  parseMetadataPair,
  parseRetryDelays,
  parseSize,
} from './parse.js';

describe('CLI argument parsers', () => {
  it('parses sizes in bytes or with binary suffixes', () => {
    expect(parseSize('1048576')).toBe(1048576);
    expect(parseSize('512K')).toBe(512 * 1024);
    expect(parseSize('64M')).toBe(64 * 1024 ** 2);
    expect(parseSize('1.5G')).toBe(1.5 * 1024 ** 3);
    expect(parseSize('2TiB')).toBe(2 * 1024 ** 4);
    expect(parseSize('10mb')).toBe(10 * 1024 ** 2);
    expect(parseSize('7b')).toBe(7);
    for (const bad of ['', 'lots', '-1', '1X', '1e3', '99999999999T']) {
      expect(() => parseSize(bad)).toThrow();
    }
  });

  it('takes Infinity as a chunk size, refuses 0', () => {
    expect(parseChunkSize('Infinity')).toBe(Infinity);
    expect(parseChunkSize('inf')).toBe(Infinity);
    expect(parseChunkSize('1M')).toBe(1024 ** 2);
    expect(() => parseChunkSize('0')).toThrow(/at least 1 byte/);
  });

  it('checks integer ranges', () => {
    const port = integerIn(0, 65535);
    expect(port('0')).toBe(0);
    expect(port('1080')).toBe(1080);
    for (const bad of ['65536', '-1', '1.5', 'http', '']) expect(() => port(bad)).toThrow();
  });

  it('collects repeated and comma-separated values', () => {
    expect(commaList('10.0.0.1', undefined)).toEqual(['10.0.0.1']);
    expect(commaList(' a, b ,,c', ['x'])).toEqual(['x', 'a', 'b', 'c']);
  });

  it('parses headers and metadata pairs', () => {
    expect(parseHeader('Authorization: Bearer a:b')).toEqual([['Authorization', 'Bearer a:b']]);
    expect(parseHeader('X-A:1', [['X-B', '2']])).toEqual([
      ['X-B', '2'],
      ['X-A', '1'],
    ]);
    expect(() => parseHeader('no colon')).toThrow(/Name: value/);
    expect(() => parseHeader(': value')).toThrow();
    expect(parseMetadataPair('filename=a=b.txt')).toEqual({ filename: 'a=b.txt' });
    expect(parseMetadataPair('note=', { filename: 'x' })).toEqual({ filename: 'x', note: '' });
    expect(() => parseMetadataPair('bad key=1')).toThrow(/key=value/);
    expect(() => parseMetadataPair('novalue')).toThrow();
  });

  it('parses retry delays', () => {
    expect(parseRetryDelays('0,1000, 3000')).toEqual([0, 1000, 3000]);
    expect(parseRetryDelays('none')).toEqual([]);
    expect(parseRetryDelays('')).toEqual([]);
    expect(() => parseRetryDelays('1,,2')).toThrow();
    expect(() => parseRetryDelays('-5')).toThrow();
  });

  it('formats bytes and durations for people', () => {
    expect(formatBytes(512)).toBe('512 B');
    expect(formatBytes(1536)).toBe('1.5 KiB');
    expect(formatBytes(64 * 1024 ** 2)).toBe('64.0 MiB');
    expect(formatDuration(42.4)).toBe('42 s');
    expect(formatDuration(200)).toBe('3 min 20 s');
    expect(formatDuration(7500)).toBe('2 h 05 min');
    expect(formatDuration(Infinity)).toBe('?');
  });
});

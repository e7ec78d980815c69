import { describe, expect, it } from '@jest/globals';
import { TrustedProxies, readForwarded, type ForwardedView } from './trusted-proxies.js';

describe('TrustedProxies', () => {
  const cases: Array<[string, string[], string | undefined, boolean]> = [
    // IPv4 addresses
    ['IPv4 address, same peer', ['127.0.0.1'], '127.0.0.1', true],
    ['IPv4 address, other peer', ['127.0.0.1'], '127.0.0.2', false],
    ['IPv4 address, entry with surrounding spaces', [' 192.168.1.10 '], '192.168.1.10', true],
    ['one of several entries', ['192.0.2.1', '198.51.100.7'], '198.51.100.7', true],
    // IPv4 CIDR
    ['IPv4 /8 range, inside', ['10.0.0.0/8'], '10.1.2.3', true],
    ['IPv4 /8 range, last address', ['10.0.0.0/8'], '10.255.255.255', true],
    ['IPv4 /8 range, outside', ['10.0.0.0/8'], '11.0.0.1', false],
    ['IPv4 /24 range, inside', ['192.168.4.0/24'], '192.168.4.200', true],
    ['IPv4 /24 range, neighbour subnet', ['192.168.4.0/24'], '192.168.5.1', false],
    ['IPv4 /32 range', ['203.0.113.9/32'], '203.0.113.9', true],
    ['IPv4 /32 range, next address', ['203.0.113.9/32'], '203.0.113.10', false],
    ['IPv4 /0 range trusts any IPv4 peer', ['0.0.0.0/0'], '8.8.8.8', true],
    // IPv6 addresses
    ['IPv6 loopback', ['::1'], '::1', true],
    ['IPv6 address, other peer', ['::1'], '::2', false],
    ['IPv6 address written differently', ['2001:db8:0:0:0:0:0:1'], '2001:db8::1', true],
    ['IPv6 address, upper case', ['2001:DB8::1'], '2001:db8::1', true],
    // IPv6 CIDR
    ['IPv6 /32 range, inside', ['2001:db8::/32'], '2001:db8:abcd::5', true],
    ['IPv6 /32 range, outside', ['2001:db8::/32'], '2001:db9::1', false],
    ['IPv6 unique-local /7, inside', ['fc00::/7'], 'fd12:3456::1', true],
    ['IPv6 unique-local /7, link-local peer', ['fc00::/7'], 'fe80::1', false],
    ['IPv6 /128 range', ['::1/128'], '::1', true],
    // IPv4-mapped IPv6 peers (a dual-stack socket reports IPv4 clients this way)
    ['IPv4-mapped peer in an IPv4 range', ['10.0.0.0/8'], '::ffff:10.1.2.3', true],
    ['IPv4-mapped peer, upper-case prefix', ['10.0.0.0/8'], '::FFFF:10.1.2.3', true],
    ['IPv4-mapped peer matching an IPv4 address', ['127.0.0.1'], '::ffff:127.0.0.1', true],
    ['IPv4-mapped peer outside the IPv4 range', ['10.0.0.0/8'], '::ffff:11.1.2.3', false],
    // mismatched families and missing peers
    ['IPv4 rules never trust an IPv6 peer', ['0.0.0.0/0'], '::1', false],
    ['IPv6 loopback rule does not trust IPv4 loopback', ['::1'], '127.0.0.1', false],
    ['no entries trust nobody', [], '127.0.0.1', false],
    ['an unknown peer address is not trusted', ['0.0.0.0/0', '::/0'], undefined, false],
    ['an empty peer address is not trusted', ['0.0.0.0/0', '::/0'], '', false],
  ];

  it.each(cases)('%s', (_name, entries, peer, expected) => {
    expect(new TrustedProxies(entries).trusts(peer)).toBe(expected);
  });

  it('counts its entries', () => {
    expect(new TrustedProxies([]).size).toBe(0);
    expect(new TrustedProxies(['127.0.0.1', '::1', '10.0.0.0/8']).size).toBe(3);
  });

  const invalid = [
    'nonsense',
    '',
    'localhost',
    'example.com',
    '10.0.0.256',
    '10.0.0',
    '10.0.0.0/33',
    '10.0.0.0/-1',
    '10.0.0.0/8.5',
    '10.0.0.0/abc',
    '::1/129',
    '2001:db8::/-8',
    ':::1',
    '2001:db8::g',
    // a cut-off prefix must not silently become /0 (trusting every peer)
    '10.0.0.0/',
    '::/',
    // two prefixes are not a CIDR range
    '10.0.0.1/8/24',
    // prefixes are decimal digits, not whatever Number() accepts
    '10.0.0.0/0x8',
    '10.0.0.0/1e1',
  ];

  it.each(invalid)('rejects the entry %j, naming it', (entry) => {
    expect(() => new TrustedProxies([entry])).toThrow(/trustedProxies/);
    expect(() => new TrustedProxies(['127.0.0.1', entry])).toThrow(JSON.stringify(entry));
  });
});

describe('readForwarded', () => {
  type Headers = Record<string, string | string[] | undefined>;
  const cases: Array<[string, Headers, boolean, ForwardedView]> = [
    ['no forwarded headers', {}, true, {}],
    // X-Forwarded-Proto
    ['X-Forwarded-Proto https', { 'x-forwarded-proto': 'https' }, false, { scheme: 'https' }],
    ['X-Forwarded-Proto http', { 'x-forwarded-proto': 'http' }, false, { scheme: 'http' }],
    ['X-Forwarded-Proto upper case', { 'x-forwarded-proto': 'HTTPS' }, false, { scheme: 'https' }],
    ['X-Forwarded-Proto mixed case', { 'x-forwarded-proto': 'HtTpS' }, false, { scheme: 'https' }],
    ['X-Forwarded-Proto padded', { 'x-forwarded-proto': '  https ' }, false, { scheme: 'https' }],
    [
      'X-Forwarded-Proto list: its first value',
      { 'x-forwarded-proto': 'https, http, http' },
      false,
      { scheme: 'https' },
    ],
    [
      'X-Forwarded-Proto list starting with http',
      { 'x-forwarded-proto': 'http,https' },
      false,
      { scheme: 'http' },
    ],
    [
      'X-Forwarded-Proto given twice (array): the first',
      { 'x-forwarded-proto': ['https', 'http'] },
      false,
      { scheme: 'https' },
    ],
    ['X-Forwarded-Proto javascript ignored', { 'x-forwarded-proto': 'javascript' }, false, {}],
    ['X-Forwarded-Proto ftp ignored', { 'x-forwarded-proto': 'ftp' }, false, {}],
    ['X-Forwarded-Proto wss ignored', { 'x-forwarded-proto': 'wss' }, false, {}],
    ['X-Forwarded-Proto empty ignored', { 'x-forwarded-proto': '' }, false, {}],
    [
      'X-Forwarded-Proto with a scheme suffix ignored',
      { 'x-forwarded-proto': 'https://evil.example' },
      false,
      {},
    ],
    [
      'only the first value counts: javascript first is ignored, not skipped',
      { 'x-forwarded-proto': 'javascript, https' },
      false,
      {},
    ],
    // RFC 7239 Forwarded
    ['Forwarded proto', { forwarded: 'proto=https' }, false, { scheme: 'https' }],
    [
      'Forwarded proto and host, host allowed',
      { forwarded: 'proto=https;host=example.com' },
      true,
      { scheme: 'https', host: 'example.com' },
    ],
    [
      'Forwarded proto and host, host not allowed',
      { forwarded: 'proto=https;host=example.com' },
      false,
      { scheme: 'https' },
    ],
    [
      'Forwarded quoted values',
      { forwarded: 'for="[2001:db8::17]:4711";proto="https";host="example.com:8443"' },
      true,
      { scheme: 'https', host: 'example.com:8443' },
    ],
    [
      'Forwarded with spaces around pairs',
      { forwarded: 'for=192.0.2.60; proto=https; by=203.0.113.43' },
      false,
      { scheme: 'https' },
    ],
    [
      'Forwarded case-insensitive parameter names and values',
      { forwarded: 'Proto=HTTPS;Host=Example.com' },
      true,
      { scheme: 'https', host: 'Example.com' },
    ],
    [
      'Forwarded: the first element (nearest the client) only',
      { forwarded: 'proto=https;host=a.example, proto=http;host=b.example' },
      true,
      { scheme: 'https', host: 'a.example' },
    ],
    [
      'Forwarded: no proto in the first element, a later one is not used',
      { forwarded: 'for=192.0.2.1, proto=https' },
      false,
      {},
    ],
    ['Forwarded proto javascript ignored', { forwarded: 'proto=javascript' }, false, {}],
    ['Forwarded proto ftp ignored', { forwarded: 'proto="ftp"' }, false, {}],
    [
      'Forwarded empty host ignored',
      { forwarded: 'proto=https;host=""' },
      true,
      { scheme: 'https' },
    ],
    // both
    [
      'X-Forwarded-Proto wins over Forwarded proto',
      { 'x-forwarded-proto': 'http', forwarded: 'proto=https' },
      false,
      { scheme: 'http' },
    ],
    [
      'an unacceptable X-Forwarded-Proto leaves Forwarded proto',
      { 'x-forwarded-proto': 'javascript', forwarded: 'proto=https' },
      false,
      { scheme: 'https' },
    ],
    // X-Forwarded-Host
    [
      'X-Forwarded-Host ignored unless allowed',
      { 'x-forwarded-host': 'example.com', 'x-forwarded-proto': 'https' },
      false,
      { scheme: 'https' },
    ],
    [
      'X-Forwarded-Host used when allowed',
      { 'x-forwarded-host': 'example.com' },
      true,
      { host: 'example.com' },
    ],
    [
      'X-Forwarded-Host list: its first value',
      { 'x-forwarded-host': 'uploads.example:8443, internal.lan' },
      true,
      { host: 'uploads.example:8443' },
    ],
    [
      'X-Forwarded-Host wins over Forwarded host',
      { 'x-forwarded-host': 'x.example', forwarded: 'host=f.example' },
      true,
      { host: 'x.example' },
    ],
    [
      'an empty X-Forwarded-Host leaves Forwarded host',
      { 'x-forwarded-host': '', forwarded: 'host=f.example' },
      true,
      { host: 'f.example' },
    ],
  ];

  it.each(cases)('%s', (_name, headers, allowHost, expected) => {
    const view = readForwarded(headers, allowHost);
    // Compare defined fields only: an absent field and an undefined one mean the same.
    expect(JSON.parse(JSON.stringify(view))).toEqual(expected);
  });

  it('never returns a scheme other than http or https', () => {
    const values = ['https', 'http', 'HTTPS', 'javascript', 'ftp', 'data', 'file', 'ws', 'h2', ''];
    for (const proto of values) {
      for (const headers of [{ 'x-forwarded-proto': proto }, { forwarded: `proto=${proto}` }]) {
        const { scheme } = readForwarded(headers, true);
        expect([undefined, 'http', 'https']).toContain(scheme);
      }
    }
  });
});

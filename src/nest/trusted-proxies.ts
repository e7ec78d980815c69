import { BlockList, isIPv4, isIPv6 } from 'node:net';

/**
 * The proxies whose forwarded headers are believed: IPv4 and IPv6 addresses and CIDR ranges.
 * A peer connecting over IPv6 with an IPv4-mapped address (`::ffff:10.0.0.1`) matches IPv4 rules.
 */
export class TrustedProxies {
  private readonly list = new BlockList();
  readonly size: number;

  constructor(entries: readonly string[]) {
    for (const entry of entries) {
      const [address = '', prefix, ...extra] = entry.trim().split('/');
      const type = isIPv4(address) ? 'ipv4' : isIPv6(address) ? 'ipv6' : undefined;
      // Strict: a typo such as `10.0.0.0/` must not become `/0` and trust everyone.
      const bits =
        prefix === undefined ? undefined : /^\d{1,3}$/.test(prefix) ? Number(prefix) : NaN;
      const max = type === 'ipv4' ? 32 : 128;
      if (!type || extra.length > 0 || (bits !== undefined && !(bits >= 0 && bits <= max))) {
        throw new Error(`trustedProxies: "${entry}" is not an IP address or CIDR range`);
      }
      if (bits === undefined) this.list.addAddress(address, type);
      else this.list.addSubnet(address, bits, type);
    }
    this.size = entries.length;
  }

  /** True when `address` (a socket's `remoteAddress`) is a trusted proxy. */
  trusts(address: string | undefined): boolean {
    if (!address || this.size === 0) return false;
    const mapped = /^::ffff:(\d+\.\d+\.\d+\.\d+)$/i.exec(address);
    if (mapped) return this.list.check(mapped[1], 'ipv4') || this.list.check(address, 'ipv6');
    return this.list.check(address, isIPv4(address) ? 'ipv4' : 'ipv6');
  }
}

export interface ForwardedView {
  scheme?: 'http' | 'https';
  host?: string;
}

/**
 * What a trusted proxy says about the client's URL: `X-Forwarded-Proto` (and, when allowed,
 * `X-Forwarded-Host`), or RFC 7239 `Forwarded` (its first element: the proxy nearest the
 * client). Only `http` and `https` are accepted as schemes.
 */
export function readForwarded(
  headers: Readonly<Record<string, string | string[] | undefined>>,
  allowHost: boolean,
): ForwardedView {
  const first = (name: string) => {
    const value = headers[name];
    const text = Array.isArray(value) ? value[0] : value;
    return text?.split(',')[0]?.trim();
  };
  const view: ForwardedView = {};
  const forwarded = first('forwarded');
  if (forwarded) {
    for (const pair of forwarded.split(';')) {
      const [key = '', raw = ''] = pair.split('=');
      const value = raw.trim().replace(/^"(.*)"$/, '$1');
      if (key.trim().toLowerCase() === 'proto') view.scheme = asScheme(value);
      if (key.trim().toLowerCase() === 'host' && allowHost && value) view.host = value;
    }
  }
  view.scheme = asScheme(first('x-forwarded-proto')) ?? view.scheme;
  if (allowHost) view.host = first('x-forwarded-host') || view.host;
  return view;
}

function asScheme(value: string | undefined): 'http' | 'https' | undefined {
  const lower = value?.toLowerCase();
  return lower === 'http' || lower === 'https' ? lower : undefined;
}

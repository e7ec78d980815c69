import type { Server } from 'node:http';
import { isIPv6, type Socket } from 'node:net';
import { TrustedProxies } from './trusted-proxies.js';

/** Caps on open connections: a flood of slow ones never takes every descriptor. */
export interface ConnectionLimits {
  /** Open connections in all; beyond, new ones are closed at once (Node's `maxConnections`). */
  maxConnections: number;
  /** Open connections from one client address (IPv6 by /64); trusted proxies are exempt. */
  maxConnectionsPerClient: number;
  trustedProxies: string[];
}

const applied = new WeakSet<Server>();

/**
 * Closes a connection at once when the server or its client already holds too many: 20,000
 * slow connections from one address would otherwise use every descriptor (new clients refused,
 * uploads unable to open their files). A proxy listed in `trustedProxies` carries many clients
 * and is not capped per address.
 */
export function limitConnections(server: Server, limits: ConnectionLimits): void {
  if (applied.has(server)) return;
  applied.add(server);
  server.maxConnections = limits.maxConnections;
  const proxies = new TrustedProxies(limits.trustedProxies);
  const open = new Map<string, number>();
  server.on('connection', (socket: Socket) => {
    const address = socket.remoteAddress ?? '';
    if (proxies.trusts(address)) return;
    const client = clientOf(address);
    const count = (open.get(client) ?? 0) + 1;
    if (count > limits.maxConnectionsPerClient) {
      socket.destroy();
      return;
    }
    open.set(client, count);
    socket.once('close', () => {
      const left = (open.get(client) ?? 1) - 1;
      if (left > 0) open.set(client, left);
      else open.delete(client);
    });
  });
}

/** An IPv6 client owns a /64: its addresses count as one. */
export function clientOf(address: string): string {
  const plain = address.replace(/^::ffff:(?=\d+\.)/, '');
  if (!isIPv6(plain)) return plain;
  const [head, tail = ''] = plain.split('::');
  const left = head ? head.split(':') : [];
  const right = tail ? tail.split(':') : [];
  const missing = plain.includes('::') ? 8 - left.length - right.length : 0;
  const groups = [...left, ...Array<string>(missing).fill('0'), ...right];
  return `${groups.slice(0, 4).join(':')}::/64`;
}

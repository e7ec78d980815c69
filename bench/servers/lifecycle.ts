import type { Server } from 'node:http';
import type { AddressInfo } from 'node:net';

/**
 * What the bench expects of a peer server's process: `BENCH_READY {"port":N}` on stdout once
 * `server` listens, and a prompt exit on SIGTERM or when stdin ends (the bench went away).
 */
export function benchLifecycle(server: Server): void {
  server.once('listening', () => {
    const { port } = server.address() as AddressInfo;
    process.stdout.write(`BENCH_READY ${JSON.stringify({ port })}\n`);
  });
  const stop = () => {
    server.close();
    server.closeAllConnections();
    process.exit(0);
  };
  process.on('SIGTERM', stop);
  process.stdin.on('end', stop);
  process.stdin.resume();
}

import net from 'node:net';

/**
 * What the proxy does, once, to the connection whose client-to-server bytes (of that connection,
 * or of all with `count: 'all'`) pass `afterBytes` (every other connection, before and after, is
 * forwarded untouched):
 * - `cut`: forwards exactly `afterBytes`, then drops the connection: the client gets a reset
 *   (ECONNRESET), the server gets the bytes and then a FIN (`upstream: 'fin'`) or a reset
 *   (`upstream: 'rst'`), as with a link or a middlebox that died mid-request;
 * - `stall`: forwards exactly `afterBytes`, then forwards nothing more (a link that went quiet:
 *   the rest is read and dropped, so that the client's close is still seen); when the client
 *   gives up and closes, the server gets a FIN.
 */
export interface FaultyProxyOptions {
  targetPort: number;
  afterBytes: number;
  mode: 'cut' | 'stall';
  upstream?: 'fin' | 'rst';
  /**
   * What `afterBytes` counts: the bytes of one connection (a client with keep-alive), or of all
   * connections together (a client that opens one connection per request). @default 'connection'
   */
  count?: 'connection' | 'all';
}

export interface FaultyProxy {
  port: number;
  /** `http://127.0.0.1:PORT`. */
  baseUrl: string;
  /** Resolves when the fault has happened (which connection, counted from 1). */
  fired: Promise<{ connection: number }>;
  readonly hasFired: boolean;
  /** Connections accepted so far. */
  readonly connections: number;
  /**
   * The head (request line and headers) of the first request of each connection, in order: all
   * the requests of a client that opens one connection per request.
   */
  readonly firstRequests: string[];
  close(): Promise<void>;
}

/** A TCP proxy on 127.0.0.1 in front of `127.0.0.1:targetPort` that injects one network fault. */
export async function startFaultyProxy(options: FaultyProxyOptions): Promise<FaultyProxy> {
  let hasFired = false;
  let connections = 0;
  let allForwarded = 0;
  const firstRequests: string[] = [];
  let resolveFired!: (value: { connection: number }) => void;
  const fired = new Promise<{ connection: number }>((resolve) => (resolveFired = resolve));
  const sockets = new Set<net.Socket>();
  const track = (socket: net.Socket) => {
    sockets.add(socket);
    socket.on('close', () => sockets.delete(socket));
    socket.on('error', () => {}); // resets are what this proxy is for
  };

  const server = net.createServer((client) => {
    const connection = ++connections;
    const upstream = net.connect(options.targetPort, '127.0.0.1');
    track(client);
    track(upstream);
    let connectionForwarded = 0;
    let faulted = false;
    const counted = () => (options.count === 'all' ? allForwarded : connectionForwarded);
    const count = (bytes: number) => {
      connectionForwarded += bytes;
      allForwarded += bytes;
    };

    upstream.on('data', (chunk: Buffer) => {
      if (!client.destroyed && !client.write(chunk)) {
        upstream.pause();
        client.once('drain', () => upstream.resume());
      }
    });
    upstream.on('close', () => {
      if (!client.destroyed) client.destroy();
    });
    client.on('close', () => {
      // The server gets whatever was forwarded, then a FIN.
      if (!upstream.destroyed) upstream.end();
    });

    const forward = (chunk: Buffer) => {
      count(chunk.length);
      if (!upstream.write(chunk)) {
        client.pause();
        upstream.once('drain', () => client.resume());
      }
    };

    let head = '';
    let headDone = false;
    client.on('data', (chunk: Buffer) => {
      if (!headDone) {
        const end = (head + chunk.toString('latin1')).indexOf('\r\n\r\n');
        head += chunk.toString('latin1', 0, end < 0 ? chunk.length : end - head.length);
        if (end >= 0 || head.length > 16 * 1024) {
          headDone = true;
          firstRequests.push(head);
        }
      }
      if (faulted) return; // stalled: nothing more goes through
      if (hasFired || counted() + chunk.length <= options.afterBytes) {
        forward(chunk);
        return;
      }
      hasFired = true;
      faulted = true;
      const kept = chunk.subarray(0, options.afterBytes - counted());
      count(kept.length);
      if (options.mode === 'stall') {
        upstream.write(kept);
      } else {
        // Once those bytes are in the kernel: drop both sides.
        upstream.write(kept, () => {
          client.resetAndDestroy();
          if (options.upstream === 'rst') upstream.resetAndDestroy();
          else upstream.end();
        });
      }
      resolveFired({ connection });
    });
  });

  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(0, '127.0.0.1', resolve);
  });
  const { port } = server.address() as net.AddressInfo;
  return {
    port,
    baseUrl: `http://127.0.0.1:${port}`,
    fired,
    get hasFired() {
      return hasFired;
    },
    get connections() {
      return connections;
    },
    firstRequests,
    close: async () => {
      for (const socket of sockets) socket.destroy();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
}

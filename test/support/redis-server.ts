import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { mkdtemp, rm } from 'node:fs/promises';
import net from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

/**
 * A real `redis-server` (Debian's `redis-server` package) for the Redis suites: loopback only,
 * on a free port, with persistence off (`--save '' --appendonly no`), so a restart comes back
 * empty, as a Redis without persistence does in production.
 */
export interface RedisServer {
  port: number;
  /** `redis://127.0.0.1:PORT`. */
  url: string;
  /** Stops the server (SIGTERM; nothing is saved). */
  stop(): Promise<void>;
  /** Starts it again on the same port, empty. */
  start(): Promise<void>;
  /** Stops it for good and removes its directory (`afterAll`). */
  dispose(): Promise<void>;
  /** Freezes the process (SIGSTOP): connections stay open, nothing answers. */
  freeze(): void;
  /** Unfreezes it (SIGCONT), data intact. */
  thaw(): void;
  /** The PID of the running server. */
  readonly pid: number | undefined;
}

/** Where the binary is, or a clear error saying how to get it. */
export function redisServerBinary(): string {
  const found = spawnSync('sh', ['-c', 'command -v redis-server'], { encoding: 'utf8' });
  const path = found.stdout.trim();
  if (found.status !== 0 || !path) {
    throw new Error(
      'redis-server is not installed: the Redis suites need it (apt-get install -y redis-server)',
    );
  }
  return path;
}

async function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = net.createServer();
    server.unref();
    server.on('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const { port } = server.address() as net.AddressInfo;
      server.close(() => resolve(port));
    });
  });
}

function launch(
  binary: string,
  port: number,
  dir: string,
): Promise<{ child: ChildProcess; exited: Promise<void> }> {
  const child = spawn(
    binary,
    [
      '--port',
      String(port),
      '--bind',
      '127.0.0.1',
      '--save',
      '',
      '--appendonly',
      'no',
      '--dir',
      dir,
      '--daemonize',
      'no',
      '--loglevel',
      'warning',
    ],
    { stdio: ['ignore', 'pipe', 'pipe'] },
  );
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
  let output = '';
  const collect = (c: Buffer) => (output += c.toString());
  child.stdout.on('data', collect);
  child.stderr.on('data', collect);
  return new Promise((resolve, reject) => {
    const deadline = Date.now() + 10_000;
    let failed = false;
    child.once('exit', (code) => {
      failed = true;
      reject(new Error(`redis-server exited (${code}) on port ${port}:\n${output}`));
    });
    const probe = () => {
      if (failed) return;
      const socket = net.connect(port, '127.0.0.1');
      socket.once('connect', () => {
        socket.write('PING\r\n');
      });
      socket.once('data', (d) => {
        socket.destroy();
        if (d.toString().startsWith('+PONG')) resolve({ child, exited });
        else retry();
      });
      socket.once('error', () => {
        socket.destroy();
        retry();
      });
    };
    const retry = () => {
      if (Date.now() > deadline) {
        child.kill('SIGKILL');
        reject(new Error(`redis-server not ready in 10 s on port ${port}:\n${output}`));
        return;
      }
      setTimeout(probe, 25);
    };
    probe();
  });
}

/** Starts a fresh `redis-server` on a free loopback port; `dispose()` it in `afterAll`. */
export async function startRedisServer(): Promise<RedisServer> {
  const binary = redisServerBinary();
  const dir = await mkdtemp(join(tmpdir(), 'tussi-redis-'));
  let running: { child: ChildProcess; exited: Promise<void> } | undefined;
  let port = 0;
  for (let attempt = 0; ; attempt++) {
    port = await freePort();
    try {
      running = await launch(binary, port, dir);
      break;
    } catch (e) {
      // Another process took the port between the probe and the start: try another one.
      if (attempt >= 3) throw e;
    }
  }
  const stopChild = async () => {
    if (!running) return;
    const { child, exited } = running;
    running = undefined;
    child.kill('SIGCONT');
    child.kill('SIGTERM');
    const timer = setTimeout(() => child.kill('SIGKILL'), 5000);
    await exited;
    clearTimeout(timer);
  };
  const server: RedisServer = {
    port,
    url: `redis://127.0.0.1:${port}`,
    get pid() {
      return running?.child.pid;
    },
    stop: async () => {
      await stopChild();
    },
    start: async () => {
      if (running) return;
      running = await launch(binary, port, dir);
    },
    dispose: async () => {
      await stopChild();
      await rm(dir, { recursive: true, force: true });
    },
    freeze: () => running?.child.kill('SIGSTOP'),
    thaw: () => running?.child.kill('SIGCONT'),
  };
  return server;
}

/**
 * The raw baseline: a plain node:http server with no protocol. POST hands out an id, each PATCH
 * body is appended to that id's file through fs.createWriteStream (1 MiB highWaterMark). What a
 * Node process can take in over HTTP and write to this disk: the ceiling for any TUS server.
 *
 * argv: DIR. Prints `BENCH_READY {"port":N}` once listening; stops on SIGTERM or when stdin ends.
 */
import { randomUUID } from 'node:crypto';
import { createWriteStream } from 'node:fs';
import { createServer } from 'node:http';
import { join } from 'node:path';
import { pipeline } from 'node:stream/promises';
import { benchLifecycle } from './lifecycle.js';

const dir = process.argv[2];
if (!dir) throw new Error('usage: raw-server DIR');
const offsets = new Map<string, number>();

const server = createServer((req, res) => {
  const url = req.url ?? '/';
  if (req.method === 'POST' && url === '/files') {
    req.resume();
    const id = randomUUID();
    offsets.set(id, 0);
    const { port } = server.address() as { port: number };
    res.writeHead(201, {
      Location: `http://127.0.0.1:${port}/files/${id}`,
      'Tus-Resumable': '1.0.0',
    });
    res.end();
    return;
  }
  const id = url.startsWith('/files/') ? url.slice('/files/'.length) : '';
  const offset = offsets.get(id);
  if (req.method === 'PATCH' && offset !== undefined) {
    let bytes = 0;
    req.on('data', (chunk: Buffer) => (bytes += chunk.length));
    const file = createWriteStream(join(dir, id), { flags: 'a', highWaterMark: 1 << 20 });
    pipeline(req, file).then(
      () => {
        offsets.set(id, offset + bytes);
        res.writeHead(204, { 'Upload-Offset': String(offset + bytes), 'Tus-Resumable': '1.0.0' });
        res.end();
      },
      (e: Error) => {
        res.writeHead(500).end(e.message);
      },
    );
    return;
  }
  req.resume();
  res.writeHead(404).end();
});

benchLifecycle(server);
server.listen(0, '127.0.0.1');

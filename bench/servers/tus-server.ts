/**
 * The official Node TUS server: @tus/server with @tus/file-store, as its README sets it up, on
 * node:http. argv: DIR MAX_SIZE. Prints `BENCH_READY {"port":N}` once listening; stops on
 * SIGTERM or when stdin ends.
 */
import { FileStore } from '@tus/file-store';
import { Server } from '@tus/server';
import { benchLifecycle } from './lifecycle.js';

const [directory, maxSize] = process.argv.slice(2);
if (!directory || !maxSize) throw new Error('usage: tus-server DIR MAX_SIZE');

const tus = new Server({
  path: '/files',
  datastore: new FileStore({ directory }),
  maxSize: Number(maxSize),
});
benchLifecycle(tus.listen(0, '127.0.0.1'));

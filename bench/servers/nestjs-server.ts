/**
 * nestjs-tussi as shipped: the sample application's production build (dist/sample, built by
 * `npm run build`), configured from the environment (TUS_UPLOAD_DIR, TUS_COMPLETED_DIR,
 * TUS_DEST_DIR, TUS_FSYNC, TUS_MAX_SIZE) exactly as `node dist/sample/main.js` is. The one
 * difference from main.js: SIGTERM ends the process with process.exit() once the app is closed
 * (Nest's `useProcessExit`), so a `--cpu-prof` profile gets written. Prints
 * `BENCH_READY {"port":N}` once listening; stops on SIGTERM or when stdin ends.
 */
import { join } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';

interface SampleBootstrap {
  bootstrap(
    this: void,
    options: {
      host?: string;
      port?: number;
      shutdownHooks?: { signals?: string[]; useProcessExit?: boolean } | false;
    },
  ): Promise<{ port: number }>;
}

const root = fileURLToPath(new URL('../../..', import.meta.url));
const sample = pathToFileURL(join(root, 'dist', 'sample', 'bootstrap.js')).href;
const { bootstrap } = (await import(sample)) as SampleBootstrap;
const { port } = await bootstrap({
  host: '127.0.0.1',
  port: 0,
  shutdownHooks: { signals: ['SIGTERM', 'SIGINT'], useProcessExit: true },
});
process.stdout.write(`BENCH_READY ${JSON.stringify({ port })}\n`);
process.stdin.on('end', () => process.kill(process.pid, 'SIGTERM'));
process.stdin.resume();

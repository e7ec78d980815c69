// A consumer process for the multi-process queue tests: claims finished uploads in a loop and
// prints one line per claim. Mode `deliver` saves each file to the destination (a delivery);
// mode `hold` claims one upload and keeps it until killed.
import { join } from 'node:path';
import { FilesystemCompletedQueue, TimeoutError } from '../../dist/index.js';

const [completed, staging, dest, mode, idleMs] = process.argv.slice(2);
const queue = new FilesystemCompletedQueue({
  directory: completed,
  stagingDirectory: staging,
  pollIntervalMs: 250,
});

for (;;) {
  let upload;
  try {
    upload = await queue.waitForFile({ timeout: Number(idleMs) });
  } catch (e) {
    if (e instanceof TimeoutError) break;
    throw e;
  }
  process.stdout.write(`claimed ${upload.name}\n`);
  // Keep the process (and so the claim) alive until killed.
  if (mode === 'hold') await new Promise(() => setInterval(() => {}, 60_000));
  await upload.save(join(dest, `${upload.name}.${process.pid}`));
  await upload.release();
  process.stdout.write(`delivered ${upload.name}\n`);
}
await queue.close();

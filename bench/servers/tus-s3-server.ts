/**
 * The official Node TUS server on S3: @tus/server with @tus/s3-store, as its README sets it
 * up, on node:http. argv: BUCKET MAX_SIZE; the S3 server from BENCH_S3_ENDPOINT and the
 * credentials from AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY. Prints `BENCH_READY {"port":N}`
 * once listening; stops on SIGTERM or when stdin ends.
 */
import { S3Store } from '@tus/s3-store';
import { Server } from '@tus/server';
import { benchLifecycle } from './lifecycle.js';

const [bucket, maxSize] = process.argv.slice(2);
const endpoint = process.env.BENCH_S3_ENDPOINT;
if (!bucket || !maxSize || !endpoint) throw new Error('usage: tus-s3-server BUCKET MAX_SIZE');

const tus = new Server({
  path: '/files',
  datastore: new S3Store({
    // The README's part size; nestjs-tussi's default smallest part is the same 8 MiB.
    partSize: 8 * 1024 * 1024,
    s3ClientConfig: {
      bucket,
      endpoint,
      region: 'us-east-1',
      forcePathStyle: true,
      // The S3 test server refuses aws-chunked bodies (as nestjs-tussi's client is set up).
      requestChecksumCalculation: 'WHEN_REQUIRED',
      responseChecksumValidation: 'WHEN_REQUIRED',
    },
  }),
  maxSize: Number(maxSize),
});
benchLifecycle(tus.listen(0, '127.0.0.1'));

import { S3Client } from '@aws-sdk/client-s3';
import { execFile } from 'node:child_process';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';

/**
 * A real S3 server for the tests: a single-node Ceph RADOS Gateway on 127.0.0.1 (one ceph-mon,
 * one memstore ceph-osd, one radosgw), started by `ceph-rgw.sh` in a fresh temporary directory.
 * Needs Debian's `radosgw ceph-mon ceph-osd` packages. Start-up takes a few seconds (up to 60 s
 * before it gives up); the first bucket operation takes a little longer (pool creation).
 */
export interface CephRgw {
  /** `http://127.0.0.1:PORT`: use it with `forcePathStyle: true`. */
  endpoint: string;
  accessKeyId: string;
  secretAccessKey: string;
  region: string;
  /** Where the cluster keeps its config, data, pid files and logs (`log/`). */
  dir: string;
  /** Stops the daemons and removes `dir`. Safe to call more than once. */
  stop(): Promise<void>;
}

const SCRIPT = fileURLToPath(new URL('./ceph-rgw.sh', import.meta.url));
/** The script gives up after 60 s by itself; this only catches a script that hangs. */
const START_TIMEOUT_MS = 90_000;
const STOP_TIMEOUT_MS = 30_000;

interface RunResult {
  code: number | null;
  stdout: string;
  stderr: string;
}

function runScript(args: string[], timeoutMs: number): Promise<RunResult> {
  return new Promise((resolve) => {
    execFile(
      'bash',
      [SCRIPT, ...args],
      { timeout: timeoutMs, killSignal: 'SIGKILL', maxBuffer: 16 * 1024 * 1024, encoding: 'utf8' },
      (error, stdout, stderr) => {
        const code = error ? (typeof error.code === 'number' ? error.code : null) : 0;
        resolve({ code, stdout, stderr });
      },
    );
  });
}

interface Credentials {
  endpoint: string;
  accessKeyId: string;
  secretAccessKey: string;
  region: string;
}

function parseCredentials(stdout: string): Credentials | undefined {
  const line = stdout.trim().split('\n').pop() ?? '';
  let parsed: unknown;
  try {
    parsed = JSON.parse(line);
  } catch {
    return undefined;
  }
  if (typeof parsed !== 'object' || parsed === null) return undefined;
  const record = parsed as Record<string, unknown>;
  const { endpoint, accessKeyId, secretAccessKey, region } = record;
  if (
    typeof endpoint !== 'string' ||
    typeof accessKeyId !== 'string' ||
    typeof secretAccessKey !== 'string' ||
    typeof region !== 'string'
  ) {
    return undefined;
  }
  return { endpoint, accessKeyId, secretAccessKey, region };
}

/** An SDK client for the gateway, set up as this S3 server needs. `destroy()` it when done. */
export function s3ClientOf(gateway: CephRgw): S3Client {
  return new S3Client({
    endpoint: gateway.endpoint,
    region: gateway.region,
    credentials: { accessKeyId: gateway.accessKeyId, secretAccessKey: gateway.secretAccessKey },
    forcePathStyle: true,
    // else streamed bodies go out aws-chunked with trailing checksums, which this gateway
    // refuses (411 Length Required)
    requestChecksumCalculation: 'WHEN_REQUIRED',
    responseChecksumValidation: 'WHEN_REQUIRED',
  });
}

/** Starts a gateway in a new temporary directory; rejects (leaving nothing running) if it cannot. */
export async function startCephRgw(): Promise<CephRgw> {
  const dir = await mkdtemp(join(tmpdir(), 'tussi-ceph-rgw-'));
  let stopped: Promise<void> | undefined;
  const stop = (): Promise<void> => {
    stopped ??= (async () => {
      const result = await runScript(['stop', dir], STOP_TIMEOUT_MS);
      if (result.code !== 0) {
        process.stderr.write(`ceph-rgw.sh stop exited ${String(result.code)}:\n${result.stderr}`);
      }
      await rm(dir, { recursive: true, force: true });
    })();
    return stopped;
  };

  const started = await runScript(['start', dir], START_TIMEOUT_MS);
  const credentials = started.code === 0 ? parseCredentials(started.stdout) : undefined;
  if (!credentials) {
    await stop();
    throw new Error(
      `ceph-rgw.sh start failed (exit ${String(started.code)}):\n${started.stderr}${started.stdout}`,
    );
  }
  return { ...credentials, dir, stop };
}

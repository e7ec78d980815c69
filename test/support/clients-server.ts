import { randomBytes } from 'node:crypto';
import { existsSync } from 'node:fs';
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { AppModule } from '../../sample/src/app.module.js';
import { UploadRecord } from '../../src/index.js';
import { TUS, completedPaths, entriesOf, idOf, startApp, tempDirs, type TestApp } from './app.js';
import { pollUntil, sha256, sha256File } from './http.js';

export const KiB = 1024;
export const MiB = 1024 * KiB;

/** The sample application's environment variables that the suites set. */
const ENV = [
  'TUS_UPLOAD_DIR',
  'TUS_COMPLETED_DIR',
  'TUS_DEST_DIR',
  'TUS_CORS_ORIGINS',
  'TUS_TOKEN',
  'TUS_TOKEN_FILE',
  'TUS_REDIS_URL',
] as const;

/**
 * The sample application (`AppModule`, configured from its environment variables like
 * `npm start`) on an ephemeral port of 127.0.0.1, with fresh temp dirs (`uploads/`,
 * `completed/`, `dest/`; removed on close) and the other variables of `ENV` as `env` gives them
 * (unset otherwise). The variables are restored once the app is up: they are read when the
 * module is created.
 */
export async function startSampleApp(
  env: Partial<Record<(typeof ENV)[number], string>> = {},
  prefix = 'tussi-sample-',
): Promise<{ app: TestApp; root: string; destDir: string }> {
  const dirs = await tempDirs(prefix);
  const destDir = join(dirs.root, 'dest');
  const saved = Object.fromEntries(ENV.map((name) => [name, process.env[name]]));
  try {
    for (const name of ENV) delete process.env[name];
    Object.assign(process.env, {
      TUS_UPLOAD_DIR: dirs.uploadDir,
      TUS_COMPLETED_DIR: dirs.completedDir,
      TUS_DEST_DIR: destDir,
      ...env,
    });
    const app = await startApp([AppModule], { ...dirs, removeOnClose: dirs.root });
    return { app, root: dirs.root, destDir };
  } finally {
    for (const [name, value] of Object.entries(saved)) {
      if (value === undefined) delete process.env[name];
      else process.env[name] = value;
    }
  }
}

export interface SampleServer {
  app: TestApp;
  /** `http://127.0.0.1:PORT/files/`: where clients create uploads. */
  endpoint: string;
  /** Root of this server's temp dirs (uploads/, completed/, dest/); scratch files go here too. */
  root: string;
  /** `TUS_DEST_DIR`: where the sample's consumer delivers finished uploads. */
  destDir: string;
  /**
   * Waits until the upload at `url` has been delivered by the sample's consumer as
   * `{id}-{deliveredAs}` in `destDir` and checks it: sha256 and length as expected, the record's
   * `filename` as sent, nothing of it left in staging, only the receipt left in completedDir,
   * HEAD answering offset == length (and, with `metadata`, giving back that `Upload-Metadata`
   * exactly). Returns the delivered path.
   */
  expectDelivered(url: string, expected: ExpectedDelivery): Promise<string>;
  close(): Promise<void>;
}

/** What {@link SampleServer.expectDelivered} checks. */
export interface ExpectedDelivery {
  sha256: string;
  length: number;
  /** The `filename` the client sent. */
  filename: string;
  /** The delivered name after `{id}-`, when the sample changes the filename. @default filename */
  deliveredAs?: string;
  /** The `Upload-Metadata` header the client sent, which HEAD must give back as it is. */
  metadata?: string;
}

/**
 * The sample application (`AppModule`, configured from its environment variables like
 * `npm start`) on an ephemeral port of 127.0.0.1, with fresh temp dirs (removed on close).
 * `corsOrigins` becomes `TUS_CORS_ORIGINS`. The variables are restored once the app is up:
 * they are read when the module is created.
 */
export async function startSampleServer(
  options: { corsOrigins?: string[]; prefix?: string } = {},
): Promise<SampleServer> {
  const { app, root, destDir } = await startSampleApp(
    options.corsOrigins ? { TUS_CORS_ORIGINS: options.corsOrigins.join(',') } : {},
    options.prefix ?? 'tussi-clients-',
  );

  const expectDelivered: SampleServer['expectDelivered'] = async (url, expected) => {
    const id = idOf(url);
    if (!/^[0-9a-f-]{36}$/.test(id)) throw new Error(`not an upload URL: ${url}`);
    const delivered = join(destDir, `${id}-${expected.deliveredAs ?? expected.filename}`);
    const { receipt } = completedPaths(app, id);
    await pollUntil(
      async () => existsSync(`${delivered}.meta`) && existsSync(receipt),
      (done) => done,
      { timeoutMs: 20_000, what: `delivery of ${id} (${expected.filename})` },
    );
    const problems: string[] = [];
    const actual = await sha256File(delivered);
    if (actual !== expected.sha256) problems.push(`sha256 ${actual} != ${expected.sha256}`);
    const record = await UploadRecord.fromFile(`${delivered}.meta`);
    if (record.length !== expected.length) {
      problems.push(`record length ${record.length} != ${expected.length}`);
    }
    if (record.metadata.filename !== expected.filename) {
      problems.push(`metadata filename ${record.metadata.filename} != ${expected.filename}`);
    }
    const leftInCompleted = await entriesOf(app.completedDir, id);
    if (leftInCompleted.join() !== `${id}.done`) {
      problems.push(`completedDir holds ${leftInCompleted.join(', ')}`);
    }
    const leftInStaging = await entriesOf(app.uploadDir, id);
    if (leftInStaging.length > 0) problems.push(`staging holds ${leftInStaging.join(', ')}`);
    const head = await app.request({
      method: 'HEAD',
      path: `/files/${id}`,
      headers: { ...TUS },
    });
    if (head.status !== 200 || head.headers['upload-offset'] !== String(expected.length)) {
      problems.push(`HEAD ${head.status} offset ${String(head.headers['upload-offset'])}`);
    }
    if (expected.metadata !== undefined && head.headers['upload-metadata'] !== expected.metadata) {
      problems.push(
        `HEAD metadata ${String(head.headers['upload-metadata'])} != ${expected.metadata}`,
      );
    }
    if (problems.length > 0) {
      throw new Error(`upload ${id} (${expected.filename}): ${problems.join('; ')}`);
    }
    return delivered;
  };

  return {
    app,
    endpoint: `${app.baseUrl}/files/`,
    root,
    destDir,
    expectDelivered,
    close: () => app.close(),
  };
}

export interface SourceFile {
  path: string;
  name: string;
  data: Buffer;
  sha256: string;
}

/** Writes `size` random bytes to `${dir}/${name}`. */
export async function randomFile(dir: string, name: string, size: number): Promise<SourceFile> {
  const data = randomBytes(size);
  const path = join(dir, name);
  await writeFile(path, data);
  return { path, name, data, sha256: sha256(data) };
}

/** Runs `tasks` with at most `limit` of them at a time; resolves with results in order. */
export async function withConcurrency<T>(
  limit: number,
  tasks: Array<() => Promise<T>>,
): Promise<T[]> {
  const results = new Array<T>(tasks.length);
  let next = 0;
  const worker = async () => {
    while (next < tasks.length) {
      const index = next++;
      results[index] = await tasks[index]();
    }
  };
  await Promise.all(Array.from({ length: Math.min(limit, tasks.length) }, worker));
  return results;
}

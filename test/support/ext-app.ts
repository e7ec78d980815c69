import type { INestApplication } from '@nestjs/common';
import { mkdtemp, readdir } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { TusModule, type TusModuleOptions } from '../../src/index.js';
import { listenOnEphemeralPort } from './app.js';

/** A Nest application with `TusModule.forRoot(...)` on 127.0.0.1, in its own temp dirs. */
export interface ExtApp {
  app: INestApplication;
  /** `http://127.0.0.1:PORT` (no trailing slash). */
  baseUrl: string;
  /** The creation URL, `${baseUrl}/files`. */
  endpoint: string;
  /** `127.0.0.1:PORT`, the host `Location` carries. */
  host: string;
  uploadDir: string;
  completedDir: string;
  /** What the module logged as errors (server-side failures). */
  errors: string[];
  close(): Promise<void>;
}

/**
 * Starts `TusModule.forRoot({ uploadDir, completedDir, janitor: false, ...options })` at
 * `/files` on an ephemeral port of 127.0.0.1. `close()` stops it and removes its directories.
 */
export async function startExtApp(options: Partial<TusModuleOptions> = {}): Promise<ExtApp> {
  const root = await mkdtemp(join(tmpdir(), 'tussi-ext-e2e-'));
  const uploadDir = join(root, 'uploads');
  const completedDir = join(root, 'completed');
  const errors: string[] = [];
  const module = TusModule.forRoot({
    uploadDir,
    completedDir,
    janitor: false,
    logger: {
      error: (message, error) =>
        errors.push(`${message}: ${error instanceof Error ? error.stack : String(error)}`),
      warn: () => {},
    },
    ...options,
  });
  const { app, port, baseUrl, close } = await listenOnEphemeralPort([module], {
    logger: ['error'],
    removeOnClose: root,
  });
  return {
    app,
    baseUrl,
    endpoint: `${baseUrl}/files`,
    host: `127.0.0.1:${port}`,
    uploadDir,
    completedDir,
    errors,
    close,
  };
}

/** The entries of `dir` (hidden ones aside), sorted; `[]` when it does not exist. */
export async function listDir(dir: string): Promise<string[]> {
  try {
    return (await readdir(dir)).filter((name) => !name.startsWith('.')).sort();
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') return [];
    throw e;
  }
}

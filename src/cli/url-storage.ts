import { randomBytes } from 'node:crypto';
import { mkdir, readFile, rename, rm, writeFile } from 'node:fs/promises';
import { homedir } from 'node:os';
import { dirname, join } from 'node:path';
import type { PreviousUpload, UrlStorage } from 'tus-js-client';

/** What the JSON file keeps for each upload (tus-js-client's `PreviousUpload` and its key). */
interface StoredUpload extends Omit<PreviousUpload, 'urlStorageKey'> {
  fingerprint: string;
}

interface StoreFile {
  version: 1;
  uploads: Record<string, StoredUpload>;
}

/** Entries older than this are dropped when the file is written (servers forget them sooner). */
const MAX_AGE_MS = 30 * 24 * 3600 * 1000;

/**
 * The directory of tussi-upload's resume data: `$TUSSI_UPLOAD_CACHE_DIR`, else
 * `$XDG_CACHE_HOME/tussi-upload`, else `~/.cache/tussi-upload`.
 */
export function defaultCacheDir(env: NodeJS.ProcessEnv = process.env): string {
  if (env.TUSSI_UPLOAD_CACHE_DIR) return env.TUSSI_UPLOAD_CACHE_DIR;
  if (env.XDG_CACHE_HOME) return join(env.XDG_CACHE_HOME, 'tussi-upload');
  return join(homedir(), '.cache', 'tussi-upload');
}

/**
 * tus-js-client's `urlStorage` over one small JSON file, so that running the same upload again
 * (another process, after a crash) finds the URL of the unfinished upload and resumes it.
 *
 * Writes replace the file atomically (temp file, rename) and are serialized within the process;
 * each change re-reads the file first, so two tussi-upload processes lose an entry only when
 * they write at the same instant (that upload then starts over instead of resuming).
 */
export class JsonFileUrlStorage implements UrlStorage {
  private queue: Promise<unknown> = Promise.resolve();

  constructor(readonly path: string) {}

  async findAllUploads(): Promise<PreviousUpload[]> {
    const { uploads } = await this.read();
    return Object.entries(uploads).map(([key, upload]) => toPrevious(key, upload));
  }

  async findUploadsByFingerprint(fingerprint: string): Promise<PreviousUpload[]> {
    const { uploads } = await this.read();
    return Object.entries(uploads)
      .filter(([, upload]) => upload.fingerprint === fingerprint)
      .map(([key, upload]) => toPrevious(key, upload));
  }

  async removeUpload(urlStorageKey: string): Promise<void> {
    await this.change((file) => {
      delete file.uploads[urlStorageKey];
    });
  }

  async addUpload(fingerprint: string, upload: PreviousUpload): Promise<string> {
    const key = `tus::${fingerprint}::${randomBytes(8).toString('hex')}`;
    await this.change((file) => {
      file.uploads[key] = {
        fingerprint,
        size: upload.size ?? null,
        metadata: upload.metadata ?? {},
        creationTime: upload.creationTime ?? new Date().toString(),
        uploadUrl: upload.uploadUrl ?? null,
        parallelUploadUrls: upload.parallelUploadUrls ?? null,
      };
    });
    return key;
  }

  /** Resolves once every change asked for so far is on disk (call before exiting). */
  async flush(): Promise<void> {
    await this.queue;
  }

  private async read(): Promise<StoreFile> {
    let text: string;
    try {
      text = await readFile(this.path, 'utf8');
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code === 'ENOENT') return { version: 1, uploads: {} };
      throw e;
    }
    try {
      const parsed = JSON.parse(text) as Partial<StoreFile>;
      if (parsed && typeof parsed.uploads === 'object' && parsed.uploads !== null) {
        return { version: 1, uploads: parsed.uploads };
      }
    } catch {
      // An unreadable file (cut by a crash of an old version, edited by hand) only costs the
      // ability to resume: start from an empty one.
    }
    return { version: 1, uploads: {} };
  }

  /** Read, change, write back atomically; one change at a time in this process. */
  private change(mutate: (file: StoreFile) => void): Promise<void> {
    const next = this.queue.then(async () => {
      const file = await this.read();
      mutate(file);
      const now = Date.now();
      for (const [key, upload] of Object.entries(file.uploads)) {
        const created = Date.parse(upload.creationTime);
        if (Number.isFinite(created) && now - created > MAX_AGE_MS) delete file.uploads[key];
      }
      await mkdir(dirname(this.path), { recursive: true });
      const temp = `${this.path}.${process.pid}.${randomBytes(4).toString('hex')}.tmp`;
      try {
        await writeFile(temp, JSON.stringify(file, null, 2) + '\n', { mode: 0o600 });
        await rename(temp, this.path);
      } catch (e) {
        await rm(temp, { force: true });
        throw e;
      }
    });
    this.queue = next.catch(() => undefined);
    return next;
  }
}

function toPrevious(urlStorageKey: string, upload: StoredUpload): PreviousUpload {
  return {
    size: upload.size ?? null,
    metadata: upload.metadata ?? {},
    creationTime: upload.creationTime,
    uploadUrl: upload.uploadUrl ?? null,
    parallelUploadUrls: upload.parallelUploadUrls ?? null,
    urlStorageKey,
  };
}

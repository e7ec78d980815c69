import { createHash } from 'node:crypto';
import { mkdtemp, readFile, rm, stat, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { UploadRecord } from '../../src/core/upload-record.js';

export const SECRET = 'TOP SECRET: root-owned, 0600\n';

/** Files outside every directory the server works in, which it must never read or write. */
export interface OutsideSecrets {
  outside: string;
  /** `SECRET`, mode 0600. */
  secret: string;
  /** Shaped as a record: followed, it would answer as an upload of 100 bytes at offset 42. */
  secretRecord: string;
  dispose(): Promise<void>;
}

export async function plantOutsideSecrets(prefix: string): Promise<OutsideSecrets> {
  const outside = await mkdtemp(join(tmpdir(), prefix));
  const secret = join(outside, 'secret');
  const secretRecord = join(outside, 'secret.meta');
  await writeFile(secret, SECRET, { mode: 0o600 });
  await writeFile(secretRecord, JSON.stringify(new UploadRecord(100, 42)), { mode: 0o600 });
  return {
    outside,
    secret,
    secretRecord,
    dispose: () => rm(outside, { recursive: true, force: true }),
  };
}

/**
 * What a server that never writes a file leaves as it was: content, mode, size, mtime. (Not the
 * ctime or link count: planting a hard link changes those, and so does moving it aside.)
 */
export async function fingerprint(path: string) {
  const info = await stat(path);
  return {
    sha256: createHash('sha256')
      .update(await readFile(path))
      .digest('hex'),
    mode: (info.mode & 0o7777).toString(8),
    size: info.size,
    mtimeMs: info.mtimeMs,
  };
}

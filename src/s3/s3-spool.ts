import { randomBytes } from 'node:crypto';
import { mkdirSync, readdirSync, rmSync } from 'node:fs';
import { open, unlink, type FileHandle } from 'node:fs/promises';
import { join } from 'node:path';
import type { Readable } from 'node:stream';

/**
 * This process's directory for parts on their way to S3: `{scratchDir}/tussi-spool-{pid}-{hex}`.
 * Directories of processes that are gone (a crash) are removed when the next one starts.
 */
export function spoolDirectory(scratchDir: string): string {
  mkdirSync(scratchDir, { recursive: true, mode: 0o700 });
  for (const name of readdirSync(scratchDir)) {
    const m = /^tussi-spool-(\d+)-[0-9a-f]+$/.exec(name);
    if (m && !isAlive(Number(m[1]))) {
      rmSync(join(scratchDir, name), { recursive: true, force: true });
    }
  }
  const dir = join(scratchDir, `tussi-spool-${process.pid}-${randomBytes(4).toString('hex')}`);
  mkdirSync(dir, { mode: 0o700 });
  return dir;
}

function isAlive(pid: number): boolean {
  if (pid === process.pid) return true;
  try {
    process.kill(pid, 0);
    return true;
  } catch (e) {
    return (e as NodeJS.ErrnoException).code === 'EPERM';
  }
}

/** One file of a part being collected: bytes are appended, then it is handed over whole. */
export class SpoolFile {
  size = 0;

  private constructor(
    readonly path: string,
    private handle: FileHandle | null,
  ) {}

  static async create(directory: string, name: string): Promise<SpoolFile> {
    const path = join(directory, `${name}.${randomBytes(6).toString('hex')}`);
    return new SpoolFile(path, await open(path, 'wx', 0o600));
  }

  /** Appends the chunks (one `writev`). */
  async append(chunks: Buffer[]): Promise<void> {
    if (!this.handle) throw new Error('spool file closed');
    let bytes = 0;
    for (const c of chunks) bytes += c.length;
    const { bytesWritten } = await this.handle.writev(chunks);
    if (bytesWritten !== bytes) {
      // writev may write less than asked: the rest one chunk at a time.
      let skip = bytesWritten;
      for (const c of chunks) {
        if (skip >= c.length) {
          skip -= c.length;
          continue;
        }
        const rest = c.subarray(skip);
        skip = 0;
        let done = 0;
        while (done < rest.length) {
          done += (await this.handle.write(rest, done, rest.length - done)).bytesWritten;
        }
      }
    }
    this.size += bytes;
  }

  /** Appends a whole stream (a trailing piece read back from S3). */
  async appendStream(source: Readable): Promise<void> {
    for await (const chunk of source) await this.append([chunk as Buffer]);
  }

  /** Stops appending; the file stays until `remove()`. */
  async close(): Promise<void> {
    const handle = this.handle;
    this.handle = null;
    await handle?.close();
  }

  async remove(): Promise<void> {
    await this.close().catch(() => {});
    await unlink(this.path).catch(() => {});
  }
}

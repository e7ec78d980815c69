import { lstat, rename, unlink } from 'node:fs/promises';
import { dirname } from 'node:path';
import { randomTempPath, syncDirectory } from '../storage/durable-file.js';
import { fdCall } from '../storage/fd.js';
import { nativeAddon } from '../storage/native.js';
import { CREATE_EXCLUSIVE, isRefusedFile, openRegularFile } from '../storage/safe-file.js';
import { UnsafeFileError } from '../storage/storage.interfaces.js';

/** How `CompletedUpload.save` / `saveRecord` leave the saved file. */
export interface SaveOptions {
  /**
   * Mode of the saved file, set exactly (fchmod: the umask does not apply), e.g. `0o644` for a
   * directory a web server reads. @default the mode the file had in the queue (the module's
   * `fileMode`, 0o600 unless widened), on a rename and on a copy alike
   */
  mode?: number;
}

/**
 * Moves a file: an atomic rename on one filesystem; across filesystems (EXDEV) a copy, fsync'ed,
 * then the source removed. With `durable`, the destination is on disk before the call returns.
 *
 * Only a regular file with one link is moved, and only the one checked: the source is opened
 * first (O_NOFOLLOW, O_NONBLOCK, fstat), renamed to a temp name beside `to`, and published under
 * `to` only if that is still the inode opened (a symlink swapped in meanwhile would otherwise
 * give the consumer a path to any file). A copy reads that descriptor, never a name, into a
 * temp file created with O_EXCL and O_NOFOLLOW. A refused source throws `UnsafeFileError`.
 */
export async function moveFile(
  from: string,
  to: string,
  durable = true,
  options: SaveOptions = {},
): Promise<void> {
  if (nativeAddon?.moveFile) {
    // The same steps as one threadpool job (the copy across filesystems below excepted).
    let result: 'moved' | 'exdev' | 'replaced';
    try {
      result = await nativeAddon.moveFile(
        from,
        randomTempPath(to),
        to,
        dirname(to),
        options.mode ?? -1,
        durable,
      );
    } catch (e) {
      const refused = (e as NodeJS.ErrnoException).syscall === 'open' && isRefusedFile(e);
      throw refused ? new UnsafeFileError(from, { cause: e }) : e;
    }
    if (result === 'replaced') throw new UnsafeFileError(from);
    if (result === 'moved') return;
  }
  return moveFilePortable(from, to, durable, options);
}

/** {@link moveFile} with fs calls (one threadpool job each), and the copy across filesystems. */
export async function moveFilePortable(
  from: string,
  to: string,
  durable = true,
  options: SaveOptions = {},
): Promise<void> {
  let fd: number;
  try {
    fd = await openRegularFile(from, false);
  } catch (e) {
    if (isRefusedFile(e)) throw new UnsafeFileError(from, { cause: e });
    throw e;
  }
  const temp = randomTempPath(to);
  try {
    const source = await fdCall.fstat(fd);
    let copied = false;
    try {
      await rename(from, temp);
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== 'EXDEV') throw e;
      await copyInto(fd, temp, options.mode ?? source.mode & 0o7777);
      copied = true;
    }
    if (!copied) {
      // The rename took whatever was under `from` at that moment.
      const moved = await lstat(temp);
      if (moved.ino !== source.ino || moved.dev !== source.dev) {
        await unlink(temp).catch(() => {});
        throw new UnsafeFileError(from);
      }
      if (options.mode !== undefined) await fdCall.fchmod(fd, options.mode);
    }
    await rename(temp, to);
    if (copied) {
      // The copy is made durable before the source goes, whatever `durable` says.
      await syncDirectory(dirname(to));
      await unlink(from);
      return;
    }
  } catch (e) {
    await unlink(temp).catch(() => {});
    throw e;
  } finally {
    await fdCall.close(fd);
  }
  if (durable) await syncDirectory(dirname(to));
}

/**
 * Copies the file open as `source` into a new file `temp` (created 0600, so it is never wider
 * than asked while it fills), sets its `mode` and fsyncs it.
 */
async function copyInto(source: number, temp: string, mode: number): Promise<void> {
  const target = await fdCall.open(temp, CREATE_EXCLUSIVE, 0o600);
  try {
    const buffer = Buffer.allocUnsafe(1 << 20);
    for (let position = 0; ;) {
      const { bytesRead } = await fdCall.read(source, buffer, 0, buffer.length, position);
      if (bytesRead === 0) break;
      for (let done = 0; done < bytesRead;) {
        done += (await fdCall.write(target, buffer, done, bytesRead - done, position + done))
          .bytesWritten;
      }
      position += bytesRead;
    }
    await fdCall.fchmod(target, mode);
    await fdCall.fsync(target);
  } finally {
    await fdCall.close(target);
  }
}

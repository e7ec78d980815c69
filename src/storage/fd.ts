import {
  close,
  fchmod,
  fdatasync,
  fstat,
  fsync,
  ftruncate,
  futimes,
  open,
  read,
  stat,
  write,
  writev,
} from 'node:fs';
import { promisify } from 'node:util';

/**
 * fs calls on plain descriptors, promisified. The storage uses descriptors, not FileHandles:
 * records are written, and locks taken, on every request, and a FileHandle (an object with a
 * GC finalizer) costs more than the small call it wraps.
 */
export const fdCall = {
  open: promisify(open),
  close: promisify(close),
  read: promisify(read),
  write: promisify(write),
  writev: promisify(writev),
  fsync: promisify(fsync),
  fdatasync: promisify(fdatasync),
  fstat: promisify(fstat),
  ftruncate: promisify(ftruncate),
  futimes: promisify(futimes),
  fchmod: promisify(fchmod),
  stat: promisify(stat),
};

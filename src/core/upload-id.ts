import { randomUUID } from 'node:crypto';

const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/;

/** Upload ids are lower-case UUIDs; anything else never reaches the storage (no traversal). */
export function isUploadId(id: string | undefined): id is string {
  return id !== undefined && UUID.test(id);
}

/**
 * 12 random hex digits (48 bits) for a temp file's name: the last group of a random UUID, whose
 * entropy Node draws in bulk (one `getrandom` per 128 UUIDs), where `randomBytes` makes one
 * call into the CSPRNG each time, on every move of every upload.
 */
export function randomSuffix(): string {
  return randomUUID().slice(24);
}

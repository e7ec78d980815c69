const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/;

/** Upload ids are lower-case UUIDs; anything else never reaches the storage (no traversal). */
export function isUploadId(id: string | undefined): id is string {
  return id !== undefined && UUID.test(id);
}

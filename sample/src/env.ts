/**
 * A switch of the sample read from its environment: on unless set to `false` (any case, spaces
 * around), as `tussi-server` reads the same variables.
 */
export function switchedOn(value: string | undefined): boolean {
  return (value ?? 'true').trim().toLowerCase() !== 'false';
}

/** Every extension of TUS 1.0.0, in the order `Tus-Extension` lists them. */
export const TUS_EXTENSIONS = [
  'creation',
  'creation-with-upload',
  'creation-defer-length',
  'termination',
  'expiration',
  'checksum',
  'checksum-trailer',
  'concatenation',
  'concatenation-unfinished',
] as const;

export type TusExtension = (typeof TUS_EXTENSIONS)[number];

/** Extensions that only make sense with another one. */
const REQUIRES: Partial<Record<TusExtension, TusExtension>> = {
  'creation-with-upload': 'creation',
  'creation-defer-length': 'creation',
  'checksum-trailer': 'checksum',
  concatenation: 'creation',
  'concatenation-unfinished': 'concatenation',
};

/**
 * The extensions switched on: all, except those set to `false` and those whose base is off
 * ("if the Server does not offer the Creation extension, it MUST NOT offer Creation With
 * Upload"). Only enabled extensions are advertised and served.
 */
export function enabledExtensions(
  switches: Partial<Record<TusExtension, boolean>> = {},
): ReadonlySet<TusExtension> {
  const on = new Set<TusExtension>();
  for (const extension of TUS_EXTENSIONS) {
    const base = REQUIRES[extension];
    if (switches[extension] !== false && (base === undefined || on.has(base))) on.add(extension);
  }
  return on;
}

import { CHECKSUM_ALGORITHMS } from '../checksum.js';
import { TUS_EXTENSIONS } from '../extensions.js';
import { TUS_VERSION } from '../headers.js';
import type { MethodHandler } from '../tus-context.js';

/** OPTIONS: the server's capabilities. "The Server MUST ignore the [Tus-Resumable] header." */
export const handleOptions: MethodHandler = async (_request, { options, extensions }) => {
  const headers: Record<string, string> = { 'Tus-Version': TUS_VERSION };
  const served = TUS_EXTENSIONS.filter((extension) => extensions.has(extension));
  // "If no extensions are supported, the Tus-Extension header MUST be omitted."
  if (served.length > 0) headers['Tus-Extension'] = served.join(',');
  if (options.maxSize !== undefined) headers['Tus-Max-Size'] = String(options.maxSize);
  if (extensions.has('checksum')) headers['Tus-Checksum-Algorithm'] = CHECKSUM_ALGORITHMS.join(',');
  return { status: 204, headers };
};

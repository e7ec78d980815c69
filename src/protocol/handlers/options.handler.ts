import { TUS_VERSION } from '../headers.js';
import type { MethodHandler } from '../tus-context.js';

/** Extensions this server implements, in the order `Tus-Extension` lists them. */
export const TUS_EXTENSIONS = ['creation'] as const;

/** OPTIONS: the server's capabilities. "The Server MUST ignore the [Tus-Resumable] header." */
export const handleOptions: MethodHandler = async (_request, { options }) => {
  const headers: Record<string, string> = {
    'Tus-Version': TUS_VERSION,
    'Tus-Extension': TUS_EXTENSIONS.join(','),
  };
  if (options.maxSize !== undefined) headers['Tus-Max-Size'] = String(options.maxSize);
  return { status: 204, headers };
};

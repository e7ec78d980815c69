import type { PlatformRequest } from './platform.js';

/**
 * Who a request comes from, as authentication established it; `undefined` when anonymous. It is
 * given the platform's request (Express's or Fastify's), on which guards put `user`.
 */
export type TusPrincipalResolver = (request: PlatformRequest) => string | null | undefined;

/**
 * The default principal: what the guard (or Passport) put on `request.user`: a string as it is,
 * or the `id`, `sub` or `username` of an object. Never a header the guard did not check.
 */
export const principalFromUser: TusPrincipalResolver = (request) => {
  const user = request.user;
  if (typeof user === 'string') return user || undefined;
  if (typeof user !== 'object' || user === null) return undefined;
  for (const key of ['id', 'sub', 'username'] as const) {
    const value = (user as Record<string, unknown>)[key];
    if ((typeof value === 'string' && value !== '') || typeof value === 'number') {
      return String(value);
    }
  }
  return undefined;
};

/** The principal of a request as the module's options say: their `ownership` function, or `request.user`. */
export function principalOf(
  options: { ownership?: boolean | TusPrincipalResolver },
  request: PlatformRequest,
): string | undefined {
  const resolve = typeof options.ownership === 'function' ? options.ownership : principalFromUser;
  return resolve(request) ?? undefined;
}

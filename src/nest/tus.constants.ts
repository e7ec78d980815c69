/** Injection token of the resolved (validated, defaulted) module options. */
export const TUS_OPTIONS = Symbol('TUS_OPTIONS');
/** Injection token of the storage of upload bytes the module uses (`UploadStorage`). */
export const TUS_STORAGE = Symbol('TUS_STORAGE');

/**
 * Request properties through which a proxy-aware layer (the trusted-proxy interceptor) tells the
 * controller which scheme and host the client used. Unset, the socket decides the scheme and the
 * `Host` header the host.
 */
export const TUS_SCHEME = Symbol('tus.scheme');
export const TUS_HOST = Symbol('tus.host');

/** Set on a request whose path had a malformed percent-encoding (answered 400 after the guards). */
export const TUS_MALFORMED_PATH = Symbol('tus.malformed-path');

/** The controller's catch-all route below a TUS path, in Express's syntax (renamed for Fastify). */
export const WILDCARD = '*rest';

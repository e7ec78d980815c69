import { UnsupportedMediaTypeException, type Type } from '@nestjs/common';
import type { HttpAdapterHost, ModuleRef, ModulesContainer } from '@nestjs/core';
import { PATH_METADATA } from '@nestjs/common/constants.js';
import type { IncomingMessage, Server, ServerResponse } from 'node:http';
import { TusController } from './tus.controller.js';
import { targetPath } from './platform.js';
import { TUS_MALFORMED_PATH, WILDCARD } from './tus.constants.js';

/** What `TusModule` serves: its own default controller and the subclasses users mount. */
export interface TusRoutes {
  /** The controllers whose routes are TUS routes (the default one only when no user's is). */
  controllers: Type<TusController>[];
  /** The users' controllers (for a log line). */
  replacing: Type<TusController>[];
}

/**
 * Finds the TUS controllers of one `TusModule` before the router mounts anything: its own
 * default controller, and every `TusController` subclass of a module that imports it (or any
 * module, when it is global). A user's controller replaces the default routes: the default is
 * taken out of the module before routes are registered, so a subclass with its own guards never
 * leaves the module's unguarded default mounted beside it.
 */
export function resolveTusRoutes(modules: ModulesContainer, self: object): TusRoutes {
  const all = [...modules.values()];
  const own = all.find((m) => m.instance === self);
  if (!own) return { controllers: [], replacing: [] };
  const defaults = [...own.controllers.entries()].filter(([, w]) => isTusController(w.metatype));
  const replacing: Type<TusController>[] = [];
  for (const module of all) {
    if (module === own || !(own.isGlobal || module.imports.has(own))) continue;
    for (const wrapper of module.controllers.values()) {
      if (isTusController(wrapper.metatype)) replacing.push(wrapper.metatype);
    }
  }
  if (replacing.length === 0) {
    return { controllers: defaults.map(([, w]) => w.metatype as Type<TusController>), replacing };
  }
  for (const [token] of defaults) own.controllers.delete(token);
  return { controllers: replacing, replacing };
}

function isTusController(metatype: unknown): metatype is Type<TusController> {
  return typeof metatype === 'function' && metatype.prototype instanceof TusController;
}

/** The path each controller is mounted at, global prefix included (`/api/files`). */
export function mountPaths(controllers: Type<TusController>[], moduleRef: ModuleRef): string[] {
  // The global prefix lives in the application's config, which Nest gives no provider for; the
  // container behind ModuleRef holds it (the same object Nest's own router reads).
  const config = (
    moduleRef as unknown as {
      container?: { applicationConfig?: { getGlobalPrefix(): string } };
    }
  ).container?.applicationConfig;
  const prefix = config?.getGlobalPrefix() ?? '';
  return controllers.flatMap((controller) => {
    const meta: unknown = Reflect.getMetadata(PATH_METADATA, controller);
    const paths = Array.isArray(meta) ? meta : [meta ?? '/'];
    return paths.map((p) => normalize(`/${prefix}/${String(p)}`));
  });
}

function normalize(path: string): string {
  return path.replace(/\/+/g, '/').replace(/\/$/, '') || '/';
}

/** The TUS base paths of each application (by its HTTP adapter), for the handler below. */
const malformedPathBases = new WeakMap<object, Set<string>>();

/**
 * Express decodes a route's parameters before any route or middleware of it runs (Fastify as it
 * routes), and answers a malformed percent-encoding (`/files/%E0%A4%A`) with its own 400, before
 * authentication and without `Tus-Resumable`. Below the TUS paths, such a path is made routable (every `%` escaped)
 * and flagged, so the TUS routes take it: the guards run, then the handler answers the TUS 400.
 * Other paths of the application are left alone.
 */
export function installMalformedPathCatch(adapterHost: HttpAdapterHost, paths: string[]): void {
  const adapter = adapterHost.httpAdapter as unknown as AdapterLike | undefined;
  const type = adapter?.getType?.();
  if (!adapter || (type !== 'express' && type !== 'fastify')) return;
  const known = firstInstall(malformedPathBases, adapter, paths);
  if (!known) return;
  const catchMalformed = (req: IncomingMessage) => {
    const url = req.url ?? '/';
    const query = url.indexOf('?');
    const path = query < 0 ? url : url.slice(0, query);
    if (path.includes('%') && !decodes(path) && underAny(path, known)) {
      req.url = path.replaceAll('%', '%25') + (query < 0 ? '' : url.slice(query));
      (req as IncomingMessage & { [TUS_MALFORMED_PATH]?: boolean })[TUS_MALFORMED_PATH] = true;
    }
  };
  if (type === 'express' && typeof adapter.use === 'function') {
    adapter.use((req, _res, next) => {
      catchMalformed(req);
      next();
    });
    return;
  }
  // Fastify routes a request as its server emits it, before any hook or middleware, and answers
  // a path it cannot decode with its own 400: the path is made routable before Fastify sees it.
  adapter.getHttpServer?.()?.prependListener('request', catchMalformed);
}

/** The TUS base paths of each Fastify instance. */
const fastifyBases = new WeakMap<object, Set<string>>();

/** The content types of upload bytes: nobody else's parser has any business reading them. */
const UPLOAD_BODIES = ['application/offset+octet-stream', 'application/partial-upload'];

interface FastifyRoute {
  url: string;
  path?: string;
}
interface FastifyLike {
  initialConfig?: { ignoreTrailingSlash?: boolean };
  route(route: FastifyRoute): void;
  addHook(name: 'onRoute', hook: (this: FastifyLike, route: FastifyRoute) => void): void;
  hasContentTypeParser(type: string): boolean;
  addContentTypeParser(
    type: string,
    parser: (
      request: { raw: IncomingMessage; is404?: boolean },
      payload: unknown,
      done: Done,
    ) => void,
  ): void;
}
type Done = (error: Error | null, body?: unknown) => void;

/**
 * What the TUS controllers need of Fastify, registered before the router mounts them (nothing
 * happens under Express):
 *
 * - **Routes.** The controller's catch-all below the creation URL is declared in Express's
 *   syntax (`*rest`, a named wildcard); Fastify's router takes only a trailing `*`. The route is
 *   renamed as Fastify registers it, below the TUS paths only. The creation route is added a
 *   second time with a trailing slash (`/files/`), which Express routes to it.
 * - **Bodies.** See below.
 */
export function installFastifySupport(
  adapterHost: HttpAdapterHost,
  paths: string[],
  warn: (message: string) => void,
): void {
  const adapter = adapterHost.httpAdapter as unknown as AdapterLike | undefined;
  if (!adapter || adapter.getType?.() !== 'fastify' || typeof adapter.getInstance !== 'function')
    return;
  const fastify = adapter.getInstance() as FastifyLike;
  const known = firstInstall(fastifyBases, fastify, paths);
  if (!known) return;
  const slashBlind = fastify.initialConfig?.ignoreTrailingSlash === true;
  fastify.addHook('onRoute', function (this: FastifyLike, route) {
    if (!slashBlind && known.has(route.url) && route.url !== '/') {
      // The creation URL is also written with a trailing slash (`/files/`), which Fastify
      // routes apart (a wildcard never matches nothing here).
      this.route({ ...route, url: `${route.url}/`, path: `${route.url}/` });
      return;
    }
    if (!route.url.endsWith(`/${WILDCARD}`)) return;
    const base = route.url.slice(0, -WILDCARD.length - 1) || '/';
    if (!known.has(base)) return;
    route.url = route.url.slice(0, -WILDCARD.length) + '*';
    if (route.path !== undefined) route.path = route.url;
  });
  passBodiesThrough(fastify, known, warn);
}

/**
 * Under Fastify, bodies are read by content-type parsers before any route runs, a type without
 * one is refused with Fastify's own 415, and the body limit (1 MiB by default) applies to every
 * parser that buffers. The upload bytes are streamed by the handler, so their types get a parser
 * that reads nothing (the request stays unread, with its backpressure, for the handler), and
 * below the TUS paths so does any other type (a mislabelled PATCH is the protocol's 415, with
 * `Tus-Resumable`, not Fastify's). Elsewhere in the application a type without a parser is
 * still refused with 415 (and a path no route has is still a 404). Types the application parses itself (JSON, text) keep
 * their parsers everywhere. Nothing happens under Express, whose body parsers leave these types
 * alone.
 */
function passBodiesThrough(
  fastify: FastifyLike,
  known: Set<string>,
  warn: (message: string) => void,
): void {
  const passThrough = (_request: unknown, _payload: unknown, done: Done) => done(null);
  for (const type of UPLOAD_BODIES) {
    if (!fastify.hasContentTypeParser(type)) fastify.addContentTypeParser(type, passThrough);
  }
  if (hasCatchAllParser(fastify)) {
    warn(
      'the application has a catch-all content-type parser: TUS requests of other types than ' +
        `${UPLOAD_BODIES.join(' and ')} are read by it before the protocol answers them`,
    );
    return;
  }
  fastify.addContentTypeParser('*', (request, _payload, done) => {
    const path = targetPath(request.raw.url);
    // A route nobody has (404) is answered as it would be without this parser.
    if (request.is404 === true || (path !== undefined && underAny(path, known))) {
      done(null);
      return;
    }
    done(new UnsupportedMediaTypeException());
  });
}

/**
 * Whether the application registered a catch-all parser (`'*'`) already. Fastify's own
 * `hasContentTypeParser('*')` never says so, and a second one silently replaces the first: its
 * parser table is read instead (when it cannot be, none is assumed).
 */
function hasCatchAllParser(fastify: FastifyLike): boolean {
  const key = Object.getOwnPropertySymbols(fastify).find(
    (symbol) => symbol.description === 'fastify.contentTypeParser',
  );
  const parsers = key
    ? (fastify as unknown as Record<symbol, { customParsers?: unknown } | undefined>)[key]
        ?.customParsers
    : undefined;
  return parsers instanceof Map && parsers.has('');
}

/** What the module uses of Nest's HTTP adapter, whichever platform it is. */
interface AdapterLike {
  getType?(): string;
  getInstance?(): unknown;
  getHttpServer?(): Server | undefined;
  use?(handler: (req: IncomingMessage, res: ServerResponse, next: () => void) => void): void;
}

/**
 * The TUS paths of `key` as a new set, on the first install for it; when another TusModule of
 * the same application installed already, its set gets the paths and nothing is returned.
 */
function firstInstall(
  installed: WeakMap<object, Set<string>>,
  key: object,
  paths: string[],
): Set<string> | undefined {
  const bases = installed.get(key);
  if (bases) {
    for (const path of paths) bases.add(path);
    return undefined;
  }
  const fresh = new Set(paths);
  installed.set(key, fresh);
  return fresh;
}

function decodes(path: string): boolean {
  try {
    decodeURIComponent(path);
    return true;
  } catch {
    return false;
  }
}

function underAny(path: string, bases: Set<string>): boolean {
  for (const base of bases) {
    if (base === '/' || path === base || path.startsWith(`${base}/`)) return true;
  }
  return false;
}

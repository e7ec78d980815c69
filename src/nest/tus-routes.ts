import type { Type } from '@nestjs/common';
import type { HttpAdapterHost, ModuleRef, ModulesContainer } from '@nestjs/core';
import { PATH_METADATA } from '@nestjs/common/constants.js';
import type { IncomingMessage, ServerResponse } from 'node:http';
import { TusController } from './tus.controller.js';
import { TUS_MALFORMED_PATH } from './tus.constants.js';

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
 * Express decodes a route's parameters before any route or middleware of it runs, and answers a
 * malformed percent-encoding (`/files/%E0%A4%A`) with its own 400, before authentication and
 * without `Tus-Resumable`. Below the TUS paths, such a path is made routable (every `%` escaped)
 * and flagged, so the TUS routes take it: the guards run, then the handler answers the TUS 400.
 * Other paths of the application are left alone.
 */
export function installMalformedPathCatch(adapterHost: HttpAdapterHost, paths: string[]): void {
  const adapter = adapterHost.httpAdapter as unknown as {
    getType?(): string;
    use?(handler: (req: IncomingMessage, res: ServerResponse, next: () => void) => void): void;
  };
  if (!adapter || adapter.getType?.() !== 'express' || typeof adapter.use !== 'function') return;
  let bases = malformedPathBases.get(adapter);
  if (bases) {
    // Another TusModule of the same application installed the handler: add the paths.
    for (const path of paths) bases.add(path);
    return;
  }
  bases = new Set(paths);
  malformedPathBases.set(adapter, bases);
  const known = bases;
  adapter.use((req, _res, next) => {
    const url = req.url ?? '/';
    const query = url.indexOf('?');
    const path = query < 0 ? url : url.slice(0, query);
    if (path.includes('%') && !decodes(path) && underAny(path, known)) {
      req.url = path.replaceAll('%', '%25') + (query < 0 ? '' : url.slice(query));
      (req as IncomingMessage & { [TUS_MALFORMED_PATH]?: boolean })[TUS_MALFORMED_PATH] = true;
    }
    next();
  });
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

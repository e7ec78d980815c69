import {
  All,
  Controller,
  Inject,
  Param,
  Req,
  Res,
  UseFilters,
  UseGuards,
  UseInterceptors,
  type CanActivate,
  type Type,
} from '@nestjs/common';
import type { IncomingMessage } from 'node:http';
import type { TLSSocket } from 'node:tls';
import { TusHandler } from '../protocol/tus-handler.js';
import type { ResolvedTusOptions } from '../tus.options-validation.js';
import {
  TUS_HOST,
  TUS_MALFORMED_PATH,
  TUS_OPTIONS,
  TUS_SCHEME,
  WILDCARD,
} from './tus.constants.js';
import { applyCors } from './tus-cors.js';
import { TusExceptionFilter } from './tus-exception.filter.js';
import { TusForwardedInterceptor } from './tus-forwarded.interceptor.js';
import {
  nodeRequest,
  takeOverResponse,
  targetPath,
  type PlatformRequest,
  type PlatformResponse,
} from './platform.js';
import { principalOf } from './tus-principal.js';
import { sendInformational, sendTusResponse } from './tus-response.js';

/** What the module's layers note on the Node request for the controller. */
type NotedRequest = IncomingMessage & {
  [TUS_SCHEME]?: string;
  [TUS_HOST]?: string;
  [TUS_MALFORMED_PATH]?: boolean;
};

/**
 * The routes of the creation URL and of each upload URL, handed to `TusHandler` as they come.
 * `TusModule` mounts a subclass at its `path` (see `createTusController`). To mount it yourself,
 * with your own guards, extend it:
 *
 * ```ts
 * @Controller('uploads')
 * export class UploadsController extends TusController {}
 * ```
 *
 * Guards may be attached to the class (`@UseGuards` above `@Controller`) or to the methods: TUS
 * discovery and CORS preflights (OPTIONS, which carry no credentials) are answered before any
 * guard by `TusModule`'s request middleware, which also applies `X-HTTP-Method-Override` (on a
 * POST only) before routing, so the guards see the effective method. A subclass mounted anywhere
 * in the application replaces the module's default routes at `path`.
 */
@UseFilters(TusExceptionFilter)
@UseInterceptors(TusForwardedInterceptor)
export class TusController {
  constructor(
    @Inject(TusHandler) protected readonly tus: TusHandler,
    @Inject(TUS_OPTIONS) protected readonly options: ResolvedTusOptions,
  ) {}

  @All()
  async collection(@Req() req: PlatformRequest, @Res() res: PlatformResponse): Promise<void> {
    await this.serve(req, res, undefined);
  }

  @All(':id')
  async upload(
    @Req() req: PlatformRequest,
    @Res() res: PlatformResponse,
    @Param('id') id: string,
  ): Promise<void> {
    await this.serve(req, res, id);
  }

  /**
   * Deeper paths (`/files/a/b`, `/files//`) name no upload: a TUS 404 (with `Tus-Resumable`),
   * not the router's bare one.
   */
  @All(WILDCARD)
  async beyond(@Req() req: PlatformRequest, @Res() res: PlatformResponse): Promise<void> {
    // The path as the id: it starts with '/', so it is no upload's id and the handler answers
    // 404 (after checking Tus-Resumable, like for any request).
    await this.serve(req, res, requestPath(req));
  }

  /**
   * The principal of a request, as authentication established it: the module's `ownership`
   * function, or `request.user` (a string, or its `id`, `sub` or `username`). Override to take it
   * from elsewhere.
   */
  protected principalOf(req: PlatformRequest): string | undefined {
    return principalOf(this.options, req);
  }

  protected async serve(
    req: PlatformRequest,
    res: PlatformResponse,
    id: string | undefined,
  ): Promise<void> {
    const raw: NotedRequest = nodeRequest(req);
    const out = takeOverResponse(res);
    applyCors(raw, out, this.options.cors);
    // The path the client used, global prefix included.
    let path = requestPath(req).replace(/\/+$/, '');
    if (id !== undefined) path = path.slice(0, path.lastIndexOf('/'));
    const response = await this.tus.handle({
      method: raw.method ?? '',
      headers: raw.headers,
      id,
      basePath: path,
      scheme: raw[TUS_SCHEME] ?? ((raw.socket as TLSSocket).encrypted ? 'https' : 'http'),
      host: raw[TUS_HOST],
      body: raw,
      trailers: () => raw.trailers,
      informational: (status, headers) => sendInformational(raw, out, status, headers),
      malformedPath: raw[TUS_MALFORMED_PATH] === true,
      principal: this.principalOf(req),
    });
    sendTusResponse(raw, out, response);
  }
}

/**
 * The path of the request target. Under Express, its own parse (which also reads an
 * absolute-form target whose port `new URL` refuses); under Fastify, Node's request target.
 */
function requestPath(req: PlatformRequest): string {
  const express = req as { baseUrl?: unknown; path?: unknown };
  if (typeof express.baseUrl === 'string' && typeof express.path === 'string') {
    return express.baseUrl + express.path;
  }
  return targetPath(nodeRequest(req).url) ?? '/';
}

/** A `TusController` mounted at `path`, its non-OPTIONS routes behind `guards`. */
export function createTusController(
  path: string,
  guards: (Type<CanActivate> | CanActivate)[] = [],
): Type<TusController> {
  @Controller(path)
  class MountedTusController extends TusController {
    @All()
    @UseGuards(...guards)
    override collection(req: PlatformRequest, res: PlatformResponse): Promise<void> {
      return super.collection(req, res);
    }

    @All(':id')
    @UseGuards(...guards)
    override upload(req: PlatformRequest, res: PlatformResponse, id: string): Promise<void> {
      return super.upload(req, res, id);
    }

    @All(WILDCARD)
    @UseGuards(...guards)
    override beyond(req: PlatformRequest, res: PlatformResponse): Promise<void> {
      return super.beyond(req, res);
    }
  }
  Object.defineProperty(MountedTusController, 'name', { value: 'TusController' });
  return MountedTusController;
}

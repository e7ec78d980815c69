import {
  All,
  Controller,
  Inject,
  Options,
  Param,
  Req,
  Res,
  UseFilters,
  UseGuards,
  UseInterceptors,
  type CanActivate,
  type Type,
} from '@nestjs/common';
import type { Request, Response } from 'express';
import type { TLSSocket } from 'node:tls';
import { TusHandler } from '../protocol/tus-handler.js';
import type { ResolvedTusOptions } from '../tus.options-validation.js';
import { TUS_HOST, TUS_MALFORMED_PATH, TUS_OPTIONS, TUS_SCHEME } from './tus.constants.js';
import { applyCors } from './tus-cors.js';
import { TusExceptionFilter } from './tus-exception.filter.js';
import { TusForwardedInterceptor } from './tus-forwarded.interceptor.js';
import { principalOf } from './tus-principal.js';
import { sendTusResponse } from './tus-response.js';

type TusExpressRequest = Request & {
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

  @Options()
  async discover(@Req() req: TusExpressRequest, @Res() res: Response): Promise<void> {
    await this.serve(req, res, undefined);
  }

  @Options(':id')
  async discoverUpload(
    @Req() req: TusExpressRequest,
    @Res() res: Response,
    @Param('id') id: string,
  ): Promise<void> {
    await this.serve(req, res, id);
  }

  @All()
  async collection(@Req() req: TusExpressRequest, @Res() res: Response): Promise<void> {
    await this.serve(req, res, undefined);
  }

  @All(':id')
  async upload(
    @Req() req: TusExpressRequest,
    @Res() res: Response,
    @Param('id') id: string,
  ): Promise<void> {
    await this.serve(req, res, id);
  }

  /**
   * Deeper paths (`/files/a/b`, `/files//`) name no upload: a TUS 404 (with `Tus-Resumable`),
   * not the router's bare one.
   */
  @All('*rest')
  async beyond(@Req() req: TusExpressRequest, @Res() res: Response): Promise<void> {
    // The path as the id: it starts with '/', so it is no upload's id and the handler answers
    // 404 (after checking Tus-Resumable, like for any request).
    await this.serve(req, res, req.path);
  }

  /**
   * The principal of a request, as authentication established it: the module's `ownership`
   * function, or `request.user` (a string, or its `id`, `sub` or `username`). Override to take it
   * from elsewhere.
   */
  protected principalOf(req: Request): string | undefined {
    return principalOf(this.options, req);
  }

  protected async serve(
    req: TusExpressRequest,
    res: Response,
    id: string | undefined,
  ): Promise<void> {
    applyCors(req, res, this.options.cors);
    // Express's own parse of the request target (an absolute-form target with a bad port would
    // make `new URL` throw): the path the client used, global prefix included.
    let path = (req.baseUrl + req.path).replace(/\/+$/, '');
    if (id !== undefined) path = path.slice(0, path.lastIndexOf('/'));
    const response = await this.tus.handle({
      method: req.method,
      headers: req.headers,
      id,
      basePath: path,
      scheme: req[TUS_SCHEME] ?? ((req.socket as TLSSocket).encrypted ? 'https' : 'http'),
      host: req[TUS_HOST],
      body: req,
      trailers: () => req.trailers,
      malformedPath: req[TUS_MALFORMED_PATH] === true,
      principal: this.principalOf(req),
    });
    sendTusResponse(req, res, response);
  }
}

/** A `TusController` mounted at `path`, its non-OPTIONS routes behind `guards`. */
export function createTusController(
  path: string,
  guards: (Type<CanActivate> | CanActivate)[] = [],
): Type<TusController> {
  @Controller(path)
  class MountedTusController extends TusController {
    @Options()
    override discover(req: TusExpressRequest, res: Response): Promise<void> {
      return super.discover(req, res);
    }

    @Options(':id')
    override discoverUpload(req: TusExpressRequest, res: Response, id: string): Promise<void> {
      return super.discoverUpload(req, res, id);
    }

    @All()
    @UseGuards(...guards)
    override collection(req: TusExpressRequest, res: Response): Promise<void> {
      return super.collection(req, res);
    }

    @All(':id')
    @UseGuards(...guards)
    override upload(req: TusExpressRequest, res: Response, id: string): Promise<void> {
      return super.upload(req, res, id);
    }

    @All('*rest')
    @UseGuards(...guards)
    override beyond(req: TusExpressRequest, res: Response): Promise<void> {
      return super.beyond(req, res);
    }
  }
  Object.defineProperty(MountedTusController, 'name', { value: 'TusController' });
  return MountedTusController;
}

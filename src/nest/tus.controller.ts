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
import type { TusResponse } from '../protocol/tus-request.js';
import type { ResolvedTusOptions } from '../tus.options-validation.js';
import { TUS_HOST, TUS_OPTIONS, TUS_SCHEME } from './tus.constants.js';
import { applyCors } from './tus-cors.js';
import { TusExceptionFilter } from './tus-exception.filter.js';
import { TusForwardedInterceptor } from './tus-forwarded.interceptor.js';

type TusExpressRequest = Request & { [TUS_SCHEME]?: string; [TUS_HOST]?: string };

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
 * OPTIONS has routes of its own so that guards on the other routes never run on TUS discovery
 * or a CORS preflight, which carry no credentials.
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
    });
    send(req, res, response);
  }
}

/** Writes a protocol response; a client already gone is not an error. */
function send(req: Request, res: Response, response: TusResponse): void {
  if (res.headersSent || res.destroyed) return;
  const headers: Record<string, string> = { ...response.headers };
  // A refused request whose body was not read: close rather than read gigabytes to discard them.
  if (!req.readableEnded && hasBody(req)) headers.Connection = 'close';
  if (response.status !== 204 && req.method !== 'HEAD') {
    headers['Content-Length'] = String(
      response.body === undefined ? 0 : Buffer.byteLength(response.body),
    );
  }
  res.writeHead(response.status, headers);
  res.end(response.body);
}

function hasBody(req: Request): boolean {
  const length = req.headers['content-length'];
  return req.headers['transfer-encoding'] !== undefined || (length !== undefined && length !== '0');
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
  }
  Object.defineProperty(MountedTusController, 'name', { value: 'TusController' });
  return MountedTusController;
}

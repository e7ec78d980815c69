import {
  Injectable,
  UnauthorizedException,
  type CanActivate,
  type ExecutionContext,
} from '@nestjs/common';
import { ConfigService } from '@nestjs/config';
import type { Request } from 'express';
import { timingSafeEqual } from 'node:crypto';

/**
 * A bearer-token guard for the upload routes. With `TUS_TOKEN` unset, uploads are open (the
 * sample's default); with it set, a missing or wrong token gets 401 with `WWW-Authenticate`.
 */
@Injectable()
export class BearerAuthGuard implements CanActivate {
  private readonly token: Buffer | undefined;

  constructor(config: ConfigService) {
    const token = config.get<string>('TUS_TOKEN');
    this.token = token ? Buffer.from(token) : undefined;
  }

  canActivate(context: ExecutionContext): boolean {
    if (!this.token) return true;
    const header = context.switchToHttp().getRequest<Request>().headers.authorization ?? '';
    const given = Buffer.from(header.startsWith('Bearer ') ? header.slice(7) : '');
    if (given.length === this.token.length && timingSafeEqual(given, this.token)) return true;
    // TusExceptionFilter sends an exception's `headers` with the response.
    throw Object.assign(new UnauthorizedException('a valid bearer token is required'), {
      headers: { 'WWW-Authenticate': 'Bearer realm="uploads"' },
    });
  }
}

import {
  Injectable,
  UnauthorizedException,
  type CanActivate,
  type ExecutionContext,
} from '@nestjs/common';
import { ConfigService } from '@nestjs/config';
import type { PlatformRequest } from 'nestjs-tussi';
import { createHash, timingSafeEqual } from 'node:crypto';
import { readFileSync } from 'node:fs';

/** One accepted token and the principal it stands for. */
interface Credential {
  /** sha256 of the token: compared in constant time, whatever the length of what is sent. */
  digest: Buffer;
  principal: string;
}

/**
 * `name:token` names the principal (a bearer token has no `:`, RFC 6750); a bare token stands
 * for `token-` and the first 8 hex digits of its sha256, so logs never show the token itself.
 */
export function parseCredential(entry: string): Credential {
  const colon = entry.indexOf(':');
  const token = colon < 0 ? entry : entry.slice(colon + 1);
  const digest = createHash('sha256').update(token).digest();
  const principal = colon > 0 ? entry.slice(0, colon) : `token-${digest.toString('hex', 0, 4)}`;
  return { digest, principal };
}

/** Tokens from `TUS_TOKEN` (comma-separated) and `TUS_TOKEN_FILE` (one a line, `#` comments). */
export function credentialsFrom(config: ConfigService): Credential[] {
  const entries = (raw: string, separator: string) =>
    raw
      .split(separator)
      .map((e) => e.trim())
      .filter((e) => e !== '' && !e.startsWith('#'));
  const tokens = entries(config.get<string>('TUS_TOKEN') ?? '', ',');
  const file = config.get<string>('TUS_TOKEN_FILE')?.trim();
  if (file) {
    const fromFile = entries(readFileSync(file, 'utf8'), '\n');
    // A token file meant to protect the uploads must never leave them open.
    if (fromFile.length === 0) throw new Error(`TUS_TOKEN_FILE ${file} holds no token`);
    tokens.push(...fromFile);
  }
  return tokens.map(parseCredential);
}

/**
 * A bearer-token guard for the upload routes. With no token configured, uploads are open (the
 * sample's default); with tokens, a missing or wrong one gets 401 with `WWW-Authenticate`, and
 * a right one makes its principal `request.user`, which owns the uploads it creates.
 */
@Injectable()
export class BearerAuthGuard implements CanActivate {
  private readonly credentials: Credential[];

  constructor(config: ConfigService) {
    this.credentials = credentialsFrom(config);
  }

  canActivate(context: ExecutionContext): boolean {
    if (this.credentials.length === 0) return true;
    const request = context.switchToHttp().getRequest<PlatformRequest>();
    // The scheme is case-insensitive (RFC 6750, RFC 9110).
    const match = /^Bearer +(\S+) *$/i.exec(request.headers.authorization ?? '');
    if (match) {
      const digest = createHash('sha256').update(match[1]).digest();
      // Every credential is compared, so the time taken says nothing about which one matched.
      let principal: string | undefined;
      for (const c of this.credentials) {
        if (timingSafeEqual(digest, c.digest) && principal === undefined) principal = c.principal;
      }
      if (principal !== undefined) {
        request.user = { id: principal };
        return true;
      }
    }
    // TusExceptionFilter sends an exception's `headers` with the response.
    throw Object.assign(new UnauthorizedException('a valid bearer token is required'), {
      headers: { 'WWW-Authenticate': 'Bearer realm="uploads"' },
    });
  }
}

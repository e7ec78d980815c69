import type { ConfigService } from '@nestjs/config';
import { resolve } from 'node:path';

/**
 * A switch of the sample read from its environment: on unless set to `false` (any case, spaces
 * around), as `tussi-server` reads the same variables.
 */
export function switchedOn(value: string | undefined): boolean {
  return (value ?? 'true').trim().toLowerCase() !== 'false';
}

/** Where the sample's consumer delivers finished uploads (`TUS_DEST_DIR`), absolute. */
export function destinationDir(config: ConfigService): string {
  return resolve(config.get<string>('TUS_DEST_DIR', './data/dest'));
}

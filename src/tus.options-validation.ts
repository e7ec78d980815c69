import { plainToInstance } from 'class-transformer';
import {
  IsBoolean,
  IsInt,
  IsNotEmpty,
  IsOptional,
  IsString,
  Max,
  Min,
  validateSync,
} from 'class-validator';
import type { TusModuleOptions } from './tus.options.js';

/** The checks applied to the options when the application starts. */
class TusOptionsSchema {
  @IsString() @IsNotEmpty() uploadDir!: string;
  @IsString() @IsNotEmpty() completedDir!: string;
  @IsOptional() @IsInt() @Min(0) maxSize?: number;
  @IsOptional() @IsInt() @Min(1) maxChunkSize?: number;
  @IsOptional() @IsInt() @Min(1) maxMetadataSize?: number;
  @IsOptional() @IsBoolean() fsync?: boolean;
  @IsOptional() @IsInt() @Min(0) @Max(0o7777) directoryMode?: number;
  @IsOptional() @IsInt() @Min(0) lockWaitMs?: number;
  @IsOptional() @IsInt() @Min(0) bodyIdleTimeoutMs?: number;
  @IsOptional() @IsInt() @Min(1) headersTimeoutMs?: number;
  @IsOptional() @IsBoolean() configureHttpServer?: boolean;
}

/** The options with their defaults filled in. */
export type ResolvedTusOptions = TusModuleOptions &
  Required<
    Pick<
      TusModuleOptions,
      | 'maxMetadataSize'
      | 'fsync'
      | 'directoryMode'
      | 'lockWaitMs'
      | 'bodyIdleTimeoutMs'
      | 'headersTimeoutMs'
      | 'configureHttpServer'
    >
  >;

/** Checks the options and fills in defaults; throws one error that names every bad option. */
export function resolveTusOptions(options: TusModuleOptions): ResolvedTusOptions {
  const schema = plainToInstance(TusOptionsSchema, { ...options });
  const errors = validateSync(schema, { forbidUnknownValues: false });
  if (errors.length > 0) {
    const detail = errors
      .map((e) => `${e.property}: ${Object.values(e.constraints ?? {}).join(', ')}`)
      .join('; ');
    throw new Error(`Invalid TusModule options: ${detail}`);
  }
  return {
    ...options,
    maxMetadataSize: options.maxMetadataSize ?? 4096,
    fsync: options.fsync ?? true,
    directoryMode: options.directoryMode ?? 0o755,
    lockWaitMs: options.lockWaitMs ?? 3000,
    bodyIdleTimeoutMs: options.bodyIdleTimeoutMs ?? 60_000,
    headersTimeoutMs: options.headersTimeoutMs ?? 60_000,
    configureHttpServer: options.configureHttpServer ?? true,
  };
}

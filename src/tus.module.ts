import { Logger, Module } from '@nestjs/common';
import { TusHttpServerConfigurer } from './nest/tus-http-server.configurer.js';
import { TUS_OPTIONS } from './nest/tus.constants.js';
import type { TusLogger } from './protocol/tus-context.js';
import { TusHandler } from './protocol/tus-handler.js';
import { FilesystemRecordStore } from './storage/filesystem-record.store.js';
import { FilesystemStorage } from './storage/filesystem.storage.js';
import { FileUploadLocker } from './storage/file-upload.locker.js';
import { MemoryUploadLocker } from './storage/memory.storage.js';
import { UploadStorageService } from './storage/upload-storage.service.js';
import { ConfigurableModuleClass, TUS_MODULE_OPTIONS } from './tus.module-definition.js';
import type { TusModuleOptions } from './tus.options.js';
import { resolveTusOptions, type ResolvedTusOptions } from './tus.options-validation.js';

function nestLogger(): TusLogger {
  const logger = new Logger('TusModule');
  return {
    error: (message, error) => logger.error(message, error instanceof Error ? error.stack : error),
    warn: (message) => logger.warn(message),
  };
}

/**
 * TUS 1.0.0 uploads for a Nest application.
 *
 * ```ts
 * TusModule.forRoot({ uploadDir: './data/uploads', completedDir: './data/completed' })
 * ```
 */
@Module({
  providers: [
    {
      provide: TUS_OPTIONS,
      inject: [TUS_MODULE_OPTIONS],
      useFactory: (options: TusModuleOptions) => resolveTusOptions(options),
    },
    {
      provide: UploadStorageService,
      inject: [TUS_OPTIONS],
      useFactory: (options: ResolvedTusOptions) => {
        const logger = options.logger ?? nestLogger();
        const files =
          options.storage ??
          new FilesystemStorage({
            directory: options.uploadDir,
            fsync: options.fsync,
            directoryMode: options.directoryMode,
            log: (m) => logger.warn(m),
          });
        const records =
          options.recordStore ?? new FilesystemRecordStore(options.uploadDir, options.fsync);
        // The file locker locks the data file; another storage brings its own locker (or gets
        // locks that hold within this process only).
        const locker =
          options.locker ??
          (files instanceof FilesystemStorage
            ? new FileUploadLocker((id) => files.pathOf(id))
            : new MemoryUploadLocker());
        return new UploadStorageService(files, records, locker);
      },
    },
    {
      provide: TusHandler,
      inject: [TUS_OPTIONS, UploadStorageService],
      useFactory: (options: ResolvedTusOptions, store: UploadStorageService) =>
        new TusHandler({ options, store, logger: options.logger ?? nestLogger() }),
    },
    TusHttpServerConfigurer,
  ],
  exports: [TUS_OPTIONS, UploadStorageService, TusHandler],
})
export class TusModule extends ConfigurableModuleClass {}

export { TusModule } from './tus.module.js';
export {
  TUS_MODULE_OPTIONS,
  OPTIONS_TYPE as TusModuleOptionsType,
} from './tus.module-definition.js';
export type {
  TusModuleOptions,
  TusModuleExtras,
  TusModuleAsyncOptions,
  TusFactoryOptions,
  TusOptionsFactory,
} from './tus.options.js';
export { principalFromUser, type TusPrincipalResolver } from './nest/tus-principal.js';
export type { PlatformRequest, PlatformResponse } from './nest/platform.js';
export { TusRequestMiddleware } from './nest/tus-request.middleware.js';
export { TusRateLimitGuard, type TusRateLimits } from './nest/tus-rate-limit.guard.js';
export {
  MemoryRateLimitStorage,
  TUS_RATE_LIMIT_STORAGE,
  type RateLimitRecord,
  type RateLimitStorage,
} from './nest/tus-rate-limit.storage.js';
export { RedisRateLimitStorage } from './redis/redis-rate-limit.storage.js';
export { resolveTusOptions, type ResolvedTusOptions } from './tus.options-validation.js';
export { TusController, createTusController } from './nest/tus.controller.js';
export { TusExceptionFilter } from './nest/tus-exception.filter.js';
export { TusLifecycle, TUS_JANITOR_INTERVAL } from './nest/tus-lifecycle.js';
export { TusForwardedInterceptor } from './nest/tus-forwarded.interceptor.js';
export { TrustedProxies, readForwarded } from './nest/trusted-proxies.js';
export { applyCors, type TusCorsOptions } from './nest/tus-cors.js';
export { TUS_OPTIONS, TUS_STORAGE, TUS_SCHEME, TUS_HOST } from './nest/tus.constants.js';

export { TusHandler } from './protocol/tus-handler.js';
export type { TusRequest, TusResponse } from './protocol/tus-request.js';
export type {
  TusContext,
  TusLogger,
  TusProtocolOptions,
  OnCreateHook,
  OnCreateContext,
} from './protocol/tus-context.js';
export { type TusHandlerConfig } from './protocol/tus-handler.js';
export * from './protocol/tus-events.js';
export { Janitor, type JanitorOptions, type JanitorSummary } from './janitor/janitor.js';
export { TusMetrics, type TusMetricsOptions } from './metrics/tus-metrics.js';
export { TusMetricsController } from './metrics/tus-metrics.controller.js';
export { TusHealthIndicator, type TusHealthOptions } from './health/tus-health.indicator.js';
export { TusJsonLogger } from './nest/tus-json-logger.js';
export { LogBudget } from './nest/log-budget.js';
export { currentRequestContext, type RequestContext } from './core/request-context.js';
export { TusError, TusErrors } from './protocol/tus-error.js';
export { TUS_VERSION } from './protocol/headers.js';
export { TUS_EXTENSIONS, enabledExtensions, type TusExtension } from './protocol/extensions.js';
export { CHECKSUM_ALGORITHMS, type ChecksumAlgorithm } from './protocol/checksum.js';
export { parseMetadata, serializeMetadata, type UploadMetadata } from './protocol/metadata.js';
export { UploadRecord, type UploadRecordJson } from './core/upload-record.js';

export * from './storage/storage.interfaces.js';
export { UploadStorageService } from './storage/upload-storage.service.js';
export { FilesystemStorage, type FilesystemStorageOptions } from './storage/filesystem.storage.js';
export { FilesystemRecordStore } from './storage/filesystem-record.store.js';
export { decodeRecordFile, type DecodedRecord, type SlotState } from './core/slotted-record.js';
export {
  FileSpaceLedger,
  InsufficientSpaceError,
  LargerThanVolumeError,
  MemorySpaceLedger,
  SpaceAccounting,
  type SpaceAccountingOptions,
  type SpaceLedger,
  type SpaceUsage,
} from './storage/space-accounting.js';
export { FileUploadLocker } from './storage/file-upload.locker.js';
export { MemoryStorage, MemoryRecordStore, MemoryUploadLocker } from './storage/memory.storage.js';
export { pumpBody, writeBody, type BatchSink } from './protocol/body-pump.js';

export {
  CompletedUploadQueue,
  TimeoutError,
  AbortError,
  type FinishedBytes,
  type WaitForFileOptions,
} from './queue/completed-upload.queue.js';
export { CompletedUpload, type UploadLocation } from './queue/completed-upload.js';
export { safeFilename, type SafeFilenameOptions } from './queue/safe-filename.js';
export type { SaveOptions } from './queue/move-file.js';
export {
  FilesystemCompletedQueue,
  type FilesystemCompletedQueueOptions,
} from './queue/filesystem-completed.queue.js';
export { finalizeUpload } from './protocol/finalize.js';
export { recoverFinalizes } from './protocol/recovery.js';
export { assembleFinal } from './protocol/concatenation.js';

export {
  RedisCoordination,
  redisCoordination,
  TUS_COORDINATION,
  type RedisCoordinationOptions,
  type RedisCoordinationTarget,
  type TusCoordinationOptions,
} from './redis/redis-coordination.js';
export { RedisUploadLocker, RedisUploadLock } from './redis/redis-upload.locker.js';
export { RedisRecordStore } from './redis/redis-record.store.js';
export { RedisSpaceLedger } from './redis/redis-space.ledger.js';
export { RedisCompletedQueue, RedisCompletedUpload } from './redis/redis-completed.queue.js';
export { RedisJanitorLock } from './redis/redis-janitor-lock.js';
export { RedisConnection, type RedisConnectionOptions } from './redis/redis-connection.js';
export { RedisKeys } from './redis/redis-keys.js';
export type { JanitorLock } from './janitor/janitor.js';

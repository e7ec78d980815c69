import { ConfigurableModuleBuilder } from '@nestjs/common';
import { createTusController } from './nest/tus.controller.js';
import { TusRateLimitGuard } from './nest/tus-rate-limit.guard.js';
import type { TusModuleExtras, TusModuleOptions } from './tus.options.js';

export const {
  ConfigurableModuleClass,
  MODULE_OPTIONS_TOKEN: TUS_MODULE_OPTIONS,
  OPTIONS_TYPE,
  ASYNC_OPTIONS_TYPE,
} = new ConfigurableModuleBuilder<TusModuleOptions>({ moduleName: 'Tus' })
  .setClassMethodName('forRoot')
  .setExtras<TusModuleExtras>(
    { path: 'files', isGlobal: false, guards: [] },
    (definition, extras) => ({
      ...definition,
      global: extras.isGlobal,
      // The rate limits run after the application's guards: they count principals.
      controllers: [createTusController(extras.path, [...extras.guards, TusRateLimitGuard])],
    }),
  )
  .build();

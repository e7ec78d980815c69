import { afterAll, beforeAll, expect, it } from '@jest/globals';
import { Controller, Get, Module } from '@nestjs/common';
import { TusModule } from '../../src/index.js';
import { forEachPlatform, startApp, tempDirs, type TestApp } from '../support/app.js';

/**
 * The suites' "logged no failure" checks read `logged.errors`: it must hold errors logged through
 * Nest's own `Logger` (what its exception handler logs for an error it did not expect), not only
 * those of the module's `TusLogger`.
 */
@Controller('broken')
class BrokenController {
  @Get()
  fail(): never {
    throw new Error('a failure nobody caught');
  }
}

forEachPlatform(() => {
  let app: TestApp;
  beforeAll(async () => {
    const dirs = await tempDirs('tussi-logged-');
    @Module({
      imports: [TusModule.forRoot({ uploadDir: dirs.uploadDir, completedDir: dirs.completedDir })],
      controllers: [BrokenController],
    })
    class AppModule {}
    app = await startApp([AppModule], { ...dirs, removeOnClose: dirs.root });
  });
  afterAll(async () => {
    await app?.close();
  });

  it("records an error Nest's exception handler logged", async () => {
    const res = await app.request({ method: 'GET', path: '/broken' });
    expect(res.status).toBe(500);
    expect(app.logged.errors.join('\n')).toContain('a failure nobody caught');
  });
});

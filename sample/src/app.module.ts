import { Module } from '@nestjs/common';
import { TusModule } from 'nestjs-tussi';

/**
 * The sample application: TUS uploads at `/files/`, stored under ./data unless
 * `TUS_UPLOAD_DIR` / `TUS_COMPLETED_DIR` say otherwise.
 */
@Module({
  imports: [
    TusModule.forRootAsync({
      path: 'files',
      useFactory: () => ({
        uploadDir: process.env.TUS_UPLOAD_DIR ?? './data/uploads',
        completedDir: process.env.TUS_COMPLETED_DIR ?? './data/completed',
        maxSize: process.env.TUS_MAX_SIZE ? Number(process.env.TUS_MAX_SIZE) : undefined,
      }),
    }),
  ],
})
export class AppModule {}

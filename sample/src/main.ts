import 'reflect-metadata';
import { NestFactory } from '@nestjs/core';
import { AppModule } from './app.module.js';

const host = process.env.HOST ?? '127.0.0.1';
const port = Number(process.env.PORT ?? 1080);

const app = await NestFactory.create(AppModule, { logger: ['log', 'warn', 'error'] });
app.enableShutdownHooks();
await app.listen(port, host);
const url = new URL(await app.getUrl());
if (host === '127.0.0.1' || host === 'localhost') url.hostname = host;
console.log(`TUS upload URL: ${url.origin}/files/`);

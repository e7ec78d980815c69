import { bootstrap } from './bootstrap.js';

const { url } = await bootstrap({
  host: process.env.HOST ?? '127.0.0.1',
  port: Number(process.env.PORT ?? 1080),
});
console.log(`TUS upload URL: ${url}`);

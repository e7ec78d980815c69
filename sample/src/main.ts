import { bootstrap } from './bootstrap.js';

const { url, pageUrl } = await bootstrap({
  host: process.env.HOST ?? '127.0.0.1',
  port: Number(process.env.PORT ?? 1080),
});
if (pageUrl) console.log(`Upload page: ${pageUrl}`);
console.log(`TUS upload URL: ${url}`);

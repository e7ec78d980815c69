// Bundles the sample's upload page (app.mjs: Uppy, the Dashboard, @uppy/tus, their CSS and the
// page's own) into OUTDIR: index.html, app.js, app.css. Usage: node sample/ui/build.mjs OUTDIR...
import { build } from 'esbuild';
import { copyFile, mkdir } from 'node:fs/promises';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';

const here = (name) => fileURLToPath(new URL(`./${name}`, import.meta.url));
const outdirs = process.argv.slice(2);
if (outdirs.length === 0) throw new Error('usage: node sample/ui/build.mjs OUTDIR...');
for (const outdir of outdirs) {
  await mkdir(outdir, { recursive: true });
  await build({
    entryPoints: [here('app.mjs')],
    bundle: true,
    format: 'esm',
    platform: 'browser',
    target: 'es2022',
    outdir,
    entryNames: 'app',
    minify: true,
    legalComments: 'none',
    logLevel: 'warning',
    define: { 'process.env.NODE_ENV': '"production"' },
  });
  await copyFile(here('index.html'), join(outdir, 'index.html'));
}

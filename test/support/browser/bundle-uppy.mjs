// Bundles uppy-page.mjs (Uppy, the Dashboard, @uppy/tus and their CSS) for the browser into
// OUTDIR/uppy-page.js and OUTDIR/uppy-page.css. Usage: node bundle-uppy.mjs OUTDIR
// Run as its own process: esbuild's JS API does not work inside Jest's module sandbox.
import { build } from 'esbuild';
import { fileURLToPath } from 'node:url';

const outdir = process.argv[2];
if (!outdir) throw new Error('usage: node bundle-uppy.mjs OUTDIR');
await build({
  entryPoints: [fileURLToPath(new URL('./uppy-page.mjs', import.meta.url))],
  bundle: true,
  format: 'iife',
  platform: 'browser',
  target: 'chrome120',
  outdir,
  entryNames: 'uppy-page',
  minify: true,
  legalComments: 'none',
  logLevel: 'warning',
  define: { 'process.env.NODE_ENV': '"production"' },
});

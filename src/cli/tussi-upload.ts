#!/usr/bin/env node
// The `tussi-upload` command (bin/tussi-upload.js imports this file).
import { main } from './upload.js';

try {
  process.exit(await main());
} catch (e) {
  process.stderr.write(`tussi-upload: ${e instanceof Error ? e.message : String(e)}\n`);
  process.exit(1);
}

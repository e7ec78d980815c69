#!/usr/bin/env node
// tussi-upload: see src/cli/upload.ts (built into dist/cli by `npm run build`).
import '../dist/cli/tussi-upload.js';

#!/usr/bin/env node
// tussi-server: see src/cli/server.ts (built into dist/cli by `npm run build`).
import '../dist/cli/tussi-server.js';

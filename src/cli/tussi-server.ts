#!/usr/bin/env node
// The `tussi-server` command (bin/tussi-server.js imports this file).
import { main } from './server.js';

await main();

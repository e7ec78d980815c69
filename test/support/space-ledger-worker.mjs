// A process racing others on one space ledger: tries `count` reservations of `bytes` against
// `capacity` and prints how many it got (the multi-process ledger test).
import { FileSpaceLedger } from '../../dist/index.js';

const [directory, count, bytes, capacity] = process.argv.slice(2);
const ledger = new FileSpaceLedger(directory);
let taken = 0;
for (let i = 0; i < Number(count); i++) {
  if (await ledger.reserve(Number(bytes), Number(capacity))) taken++;
}
await ledger.close();
process.stdout.write(`${taken}\n`);

// Reads test-results/summary.json (written by the suite's summary reporter) and prints one line
// `LABEL: N passed, N failed, N skipped`. A skipped test that no pattern of .ci/allowed-skips
// allows is listed and counted as failed. Prints the three numbers on the last line for .ci/run.
import { existsSync, readFileSync } from 'node:fs';

const [label, summaryPath = 'test-results/summary.json', allowPath = '.ci/allowed-skips'] =
  process.argv.slice(2);
let passed = 0;
let failed = 1;
let skipped = 0;
if (existsSync(summaryPath)) {
  const summary = JSON.parse(readFileSync(summaryPath, 'utf8'));
  const allowed = readFileSync(allowPath, 'utf8')
    .split('\n')
    .map((line) => line.trimEnd())
    .filter((line) => line !== '' && !line.startsWith('#'))
    .map((line) => new RegExp(line));
  const refused = (summary.skippedTests ?? []).filter(
    (name) => !allowed.some((pattern) => pattern.test(name)),
  );
  for (const name of refused) console.log(`skipped, and not on ${allowPath}: ${name}`);
  passed = summary.passed;
  failed = summary.failed + refused.length;
  skipped = summary.skipped;
}
console.log(`${label}: ${passed} passed, ${failed} failed, ${skipped} skipped`);
console.log(`${passed} ${failed} ${skipped}`);

/**
 * Reads a V8 `.cpuprofile` (from `node --cpu-prof`) and lists where the time went: self time
 * per function and per package. `node bench/dist/profile.js FILE [N]` prints the top N.
 */
import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';

interface ProfileNode {
  id: number;
  callFrame: { functionName: string; url: string; lineNumber: number };
}
interface CpuProfile {
  nodes: ProfileNode[];
  samples: number[];
  timeDeltas: number[];
}

export interface ProfileEntry {
  name: string;
  ms: number;
  percent: number;
}

/** Where a script belongs: its npm package, `node:` internals, or the file under the project. */
function owner(url: string): string {
  if (!url) return '(native / V8)';
  if (url.startsWith('node:')) return 'node: (core)';
  const pkg = /node_modules\/((?:@[^/]+\/)?[^/]+)/.exec(url);
  if (pkg) return pkg[1];
  const project = /\/(dist\/[^?]+|bench\/dist\/[^?]+)$/.exec(url);
  return project ? project[1] : url;
}

function shortUrl(url: string): string {
  const pkg = /node_modules\/(.+)$/.exec(url);
  if (pkg) return pkg[1];
  const dist = /\/((?:bench\/)?dist\/.+)$/.exec(url);
  return dist ? dist[1] : url;
}

export function summarizeProfile(
  path: string,
  top = 15,
): { totalMs: number; functions: ProfileEntry[]; packages: ProfileEntry[] } {
  const profile = JSON.parse(readFileSync(path, 'utf8')) as CpuProfile;
  const nodes = new Map(profile.nodes.map((n) => [n.id, n]));
  const selfUs = new Map<number, number>();
  let totalUs = 0;
  profile.samples.forEach((id, i) => {
    const delta = profile.timeDeltas[i] ?? 0;
    selfUs.set(id, (selfUs.get(id) ?? 0) + delta);
    totalUs += delta;
  });
  const byFunction = new Map<string, number>();
  const byPackage = new Map<string, number>();
  for (const [id, us] of selfUs) {
    const frame = nodes.get(id)?.callFrame;
    if (!frame) continue;
    const name = frame.url
      ? `${frame.functionName || '(anonymous)'} ${shortUrl(frame.url)}:${frame.lineNumber + 1}`
      : frame.functionName || '(anonymous)';
    byFunction.set(name, (byFunction.get(name) ?? 0) + us);
    if (frame.functionName !== '(idle)') {
      const pkg = owner(frame.url);
      byPackage.set(pkg, (byPackage.get(pkg) ?? 0) + us);
    }
  }
  const list = (map: Map<string, number>) =>
    [...map]
      .sort((a, b) => b[1] - a[1])
      .slice(0, top)
      .map(([name, us]) => ({ name, ms: us / 1000, percent: (100 * us) / totalUs }));
  return { totalMs: totalUs / 1000, functions: list(byFunction), packages: list(byPackage) };
}

export function profileMarkdown(label: string, path: string, top = 15): string {
  const { totalMs, functions, packages } = summarizeProfile(path, top);
  const rows = (entries: ProfileEntry[]) =>
    entries.map(
      (e) => `| ${e.name.replace(/\|/g, '\\|')} | ${e.ms.toFixed(0)} | ${e.percent.toFixed(1)} |`,
    );
  return [
    `### CPU profile: ${label} (${(totalMs / 1000).toFixed(1)} s sampled, \`${path}\`)`,
    '',
    '| Function (self time) | ms | % |',
    '| --- | ---: | ---: |',
    ...rows(functions),
    '',
    '| Package / file (self time, idle left out) | ms | % |',
    '| --- | ---: | ---: |',
    ...rows(packages),
    '',
  ].join('\n');
}

if (process.argv[1] && fileURLToPath(import.meta.url) === process.argv[1]) {
  const [file, top] = process.argv.slice(2);
  if (!file) {
    console.error('usage: node bench/dist/profile.js FILE.cpuprofile [TOP]');
    process.exit(2);
  }
  console.log(profileMarkdown(file, file, Number(top ?? 25)));
}

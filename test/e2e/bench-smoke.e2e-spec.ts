/**
 * Keeps bench/ working: runs the benchmark once in its smoke mode (tiny sizes, one round) and
 * checks that it completes and writes its results with every server in every workload. No
 * timing is asserted: benchmarks are not tests.
 */
import { describe, expect, it, beforeAll, afterAll } from '@jest/globals';
import { execFile } from 'node:child_process';
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';

const ROOT = fileURLToPath(new URL('../..', import.meta.url));
const run = promisify(execFile);

function newest(dir: string, suffix: string): number {
  let time = 0;
  for (const entry of readdirSync(dir, { withFileTypes: true })) {
    if (entry.name === 'dist' || entry.name === 'results') continue;
    const path = join(dir, entry.name);
    if (entry.isDirectory()) time = Math.max(time, newest(path, suffix));
    else if (entry.name.endsWith(suffix)) time = Math.max(time, statSync(path).mtimeMs);
  }
  return time;
}

/** Builds what `npm run bench:build` builds when it is missing or older than its sources (the global setup built dist/). */
async function ensureBuilt(): Promise<void> {
  const targets: [string, string, string[]][] = [
    [
      'dist/sample/bootstrap.js',
      'sample/src',
      ['-p', 'sample/tsconfig.json', '--outDir', 'dist/sample'],
    ],
    ['bench/dist/run.js', 'bench', ['-p', 'bench/tsconfig.json']],
  ];
  for (const [output, sources, args] of targets) {
    const path = join(ROOT, output);
    if (existsSync(path) && statSync(path).mtimeMs >= newest(join(ROOT, sources), '.ts')) continue;
    await run('npx', ['tsc', ...args], { cwd: ROOT, timeout: 180_000 });
  }
}

interface Results {
  mode: string;
  workloads: {
    id: string;
    results: Record<string, { summary: { value: number }; trials: { bytes: number }[] }>;
    ratios: Record<string, number | undefined>;
  }[];
}

describe('bench smoke run', () => {
  let out: string;

  beforeAll(async () => {
    out = mkdtempSync(join(tmpdir(), 'tussi-bench-'));
    await ensureBuilt();
  }, 180_000);

  afterAll(() => rmSync(out, { recursive: true, force: true }));

  it('completes and reports every server in every workload', async () => {
    const env: NodeJS.ProcessEnv = { ...process.env, NODE_OPTIONS: '' };
    for (const name of Object.keys(env)) if (/^(HOST|PORT|TUS_.*)$/.test(name)) delete env[name];
    await run(process.execPath, ['bench/dist/run.js', '--smoke', '--quiet', '--out', out], {
      cwd: ROOT,
      env,
      timeout: 150_000,
    });

    const results = JSON.parse(readFileSync(join(out, 'latest.json'), 'utf8')) as Results;
    expect(results.mode).toBe('smoke');
    expect(results.workloads.map((w) => w.id)).toEqual([
      'single-8m',
      'single-64m',
      'small',
      'parallel-1',
      'parallel-4',
      'parallel-16',
      'parallel-64',
      'single-256m',
      's3-single',
      's3-parallel-16',
      's3-small',
    ]);
    for (const workload of results.workloads) {
      const servers = workload.id.startsWith('s3-')
        ? ['nestjs-s3', 'tus-s3']
        : ['nestjs', 'tus', 'raw'];
      for (const server of servers) {
        const result = workload.results[server];
        expect({ workload: workload.id, server, present: result !== undefined }).toEqual({
          workload: workload.id,
          server,
          present: true,
        });
        expect(result.summary.value).toBeGreaterThan(0);
        expect(result.trials[0].bytes).toBeGreaterThan(0);
      }
    }
    expect(results.workloads[0].results['nestjs-fsync']?.summary.value).toBeGreaterThan(0);
    // nestjs-tussi also runs with V8's defaults (no flag, as the others) where GC matters most.
    for (const id of ['single-64m', 'small', 'parallel-64', 'single-256m']) {
      const workload = results.workloads.find((w) => w.id === id)!;
      expect({ id, value: workload.results['nestjs-v8']?.summary.value ?? 0 }).toEqual({
        id,
        value: expect.any(Number),
      });
      expect(workload.results['nestjs-v8'].summary.value).toBeGreaterThan(0);
    }

    const md = readFileSync(join(out, 'latest.md'), 'utf8');
    for (const label of ['nestjs-tussi', '@tus/server', 'raw node:http', '@tus/s3-store'])
      expect(md).toContain(label);
    // Both Nest platforms, each against @tus/server (Fastify in two workloads of the smoke run).
    for (const id of ['small', 'parallel-16']) {
      const workload = results.workloads.find((w) => w.id === id)!;
      expect(workload.results['nestjs-fastify']?.summary.value).toBeGreaterThan(0);
    }
    expect(md).toContain('nestjs-tussi (Fastify)');
    expect(md).toContain('↳ on Fastify: nestjs-tussi (Fastify) / …');
    // The IETF draft served by the same sample, next to TUS 1.0.0 in the same workloads (the
    // client fails a trial whose answers are not the draft's).
    for (const id of ['small', 'parallel-16']) {
      const workload = results.workloads.find((w) => w.id === id)!;
      expect(workload.results['nestjs-draft']?.summary.value).toBeGreaterThan(0);
      expect(workload.ratios.draftVsNestjs).toBeGreaterThan(0);
    }
    expect(md).toContain('## The IETF draft beside TUS 1.0.0');
    expect(md).toContain('↳ IETF draft: nestjs-tussi (IETF draft) / …');
    const svg = readFileSync(join(out, 'latest.svg'), 'utf8');
    expect(svg.startsWith('<svg')).toBe(true);
    expect(svg).toContain('@tus/server');
  }, 180_000);
});

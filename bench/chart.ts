/**
 * The results as a chart: a Vega-Lite spec compiled to Vega and rendered to SVG headless, in
 * Node (vega's View.toSVG(), no browser, no canvas).
 */
import { parse, View } from 'vega';
import { compile, type TopLevelSpec } from 'vega-lite';
import { SERVER_LABELS, SERVER_ORDER, type ServerKey } from './servers.js';
import { GiB, MiB } from './stats.js';
import type { BenchResults } from './workloads.js';

const COLORS: Record<ServerKey, string> = {
  nestjs: '#e0234e', // Nest's red
  'nestjs-fsync': '#f29bab',
  'nestjs-v8': '#a3142f',
  'nestjs-fastify': '#6b0f24',
  'nestjs-draft': '#f07f3c',
  tus: '#4c78a8',
  raw: '#9d9d9d',
  // The S3 section is a table of its own in the report, not in the chart.
  'nestjs-s3': '#e0234e',
  'tus-s3': '#4c78a8',
};

interface Row {
  workload: string;
  server: string;
  value: number;
  min: number;
  max: number;
}

/** A grouped bar chart (one group per workload, one bar per server) with min-max whiskers. */
function bars(
  title: string | { text: string; subtitle: string },
  yTitle: string,
  rows: Row[],
  width: number,
  servers: string[],
  order?: string[],
) {
  return {
    title: typeof title === 'string' ? { text: title, fontSize: 12 } : { ...title, fontSize: 12 },
    width,
    height: 200,
    data: { values: rows },
    encoding: {
      x: {
        field: 'workload',
        type: 'nominal' as const,
        sort: order,
        title: null,
        // One workload per panel: its title says which, the axis would only repeat it.
        axis: order
          ? {
              labelAngle: 0,
              labelLimit: 140,
              labelFontSize: 10,
              labelExpr: "split(datum.label, ', ')",
            }
          : null,
      },
      xOffset: { field: 'server', type: 'nominal' as const, sort: servers },
      color: {
        field: 'server',
        type: 'nominal' as const,
        sort: servers,
        scale: { domain: servers, range: servers.map((s) => COLORS[keyOf(s)]) },
        // The panels share the colour scale, so their legends merge into one.
        legend: { title: null, orient: 'top' as const, labelLimit: 200 },
      },
    },
    layer: [
      {
        mark: { type: 'bar' as const },
        encoding: {
          y: { field: 'value', type: 'quantitative' as const, title: yTitle },
          tooltip: [{ field: 'server' }, { field: 'value', format: ',.1f' }],
        },
      },
      {
        mark: { type: 'rule' as const, color: '#333', strokeWidth: 1 },
        encoding: {
          y: { field: 'min', type: 'quantitative' as const },
          y2: { field: 'max' },
        },
      },
    ],
  };
}

function keyOf(label: string): ServerKey {
  return (Object.keys(SERVER_LABELS) as ServerKey[]).find((k) => SERVER_LABELS[k] === label)!;
}

export function chartSpec(results: BenchResults): TopLevelSpec {
  const rows = (
    filter: (id: string) => boolean,
    pick: (s: NonNullable<BenchResults['workloads'][number]['results'][ServerKey]>) => {
      value: number;
      min: number;
      max: number;
    },
  ): Row[] =>
    results.workloads
      .filter((w) => filter(w.id))
      .flatMap((w) =>
        SERVER_ORDER.flatMap((key) => {
          const r = w.results[key];
          return r ? [{ workload: w.title, server: SERVER_LABELS[key], ...pick(r) }] : [];
        }),
      );
  const fromTrials = (
    r: NonNullable<BenchResults['workloads'][number]['results'][ServerKey]>,
    metric: (t: (typeof r.trials)[number]) => number,
    median: number,
  ) => {
    const values = r.trials.map(metric);
    return { value: median, min: Math.min(...values), max: Math.max(...values) };
  };

  const throughput = rows(
    (id) => id !== 'small' && !id.startsWith('s3-'),
    (r) => ({ value: r.summary.value, min: r.summary.min, max: r.summary.max }),
  );
  const order = results.workloads
    .filter((w) => w.id !== 'small' && !w.id.startsWith('s3-'))
    .map((w) => w.title);
  const smallWorkload = results.workloads.find((w) => w.id === 'small');
  const small = rows(
    (id) => id === 'small',
    (r) => ({ value: r.summary.value, min: r.summary.min, max: r.summary.max }),
  );
  const p99 = rows(
    (id) => id === 'small',
    (r) => fromTrials(r, (t) => t.p99Ms ?? 0, r.summary.p99Ms ?? 0),
  );
  const rssWorkload = results.workloads.find((w) => w.id === 'single-256m');
  const rss = rows(
    (id) => id === 'single-256m',
    (r) => fromTrials(r, (t) => t.peakRssBytes / MiB, r.summary.peakRssBytes / MiB),
  );
  const cpuWorkload = results.workloads.find((w) => w.id === 'single-64m');
  const cpu = rows(
    (id) => id === 'single-64m',
    (r) => fromTrials(r, (t) => t.cpuSeconds / (t.bytes / GiB), r.summary.cpuSecondsPerGiB),
  );

  const m = results.machine;
  const subtitle = [
    `${results.date.slice(0, 10)} · ${m.nproc} × ${m.cpuModel} · ${(m.memoryBytes / GiB).toFixed(0)} GiB RAM · ${m.fsType} · Node ${m.node}`,
    `median of ${results.rounds} interleaved round${results.rounds === 1 ? '' : 's'}, whiskers min–max${results.mode === 'smoke' ? ' · SMOKE RUN (tiny sizes, not a measurement)' : ''}`,
  ];
  const servers = SERVER_ORDER.filter((k) => results.workloads.some((w) => w.results[k])).map(
    (k) => SERVER_LABELS[k],
  );
  const panel = 150;
  const lower = [
    smallWorkload &&
      bars(
        { text: 'Small uploads/s', subtitle: smallWorkload.title },
        'uploads/s',
        small,
        panel,
        servers,
      ),
    smallWorkload &&
      bars(
        { text: 'Small uploads: p99 latency', subtitle: 'lower is better' },
        'ms',
        p99,
        panel,
        servers,
      ),
    rssWorkload &&
      bars({ text: 'Server peak RSS', subtitle: rssWorkload.title }, 'MiB', rss, panel, servers),
    cpuWorkload &&
      bars(
        { text: 'Server CPU per GiB', subtitle: cpuWorkload.title },
        's/GiB',
        cpu,
        panel,
        servers,
      ),
  ].filter((p) => p !== undefined);
  const upper = bars(
    'Throughput (MiB/s, higher is better)',
    'MiB/s',
    throughput,
    Math.max(order.length * 110, 300),
    servers,
    order,
  );
  return {
    $schema: 'https://vega.github.io/schema/vega-lite/v6.json',
    title: { text: 'nestjs-tussi vs @tus/server vs raw node:http', subtitle, anchor: 'start' },
    config: { font: 'Helvetica, Arial, sans-serif', view: { stroke: null } },
    vconcat: [upper, ...(lower.length ? [{ hconcat: lower }] : [])],
  };
}

export async function renderSvg(results: BenchResults): Promise<string> {
  const vega = compile(chartSpec(results)).spec;
  const view = new View(parse(vega), { renderer: 'none' });
  const svg = await view.toSVG();
  view.finalize();
  return svg;
}

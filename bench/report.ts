/** The results as Markdown tables: medians, min–max, and nestjs-tussi's ratios. */
import { SERVER_LABELS, SERVER_ORDER as ORDER, type ServerKey } from './servers.js';
import { formatNumber, GiB, MiB } from './stats.js';
import type { BenchResults, Summary, WorkloadResult } from './workloads.js';

function cell(
  summary: Summary | undefined,
  pick: (s: Summary) => number,
  range?: [number, number],
) {
  if (!summary || Number.isNaN(pick(summary))) return '–';
  const value = formatNumber(pick(summary));
  return range && range[0] !== range[1]
    ? `${value} <sub>${formatNumber(range[0])}–${formatNumber(range[1])}</sub>`
    : value;
}

const ratio = (value: number | undefined) => (value === undefined ? '–' : `${value.toFixed(2)}×`);

export function machineLine(results: BenchResults): string {
  const m = results.machine;
  return (
    `${m.nproc} × ${m.cpuModel}, ${(m.memoryBytes / GiB).toFixed(1)} GiB RAM, ` +
    `${m.fsType} (${m.dataDir}), ${m.kernel}, Node ${m.node}`
  );
}

export function markdown(results: BenchResults): string {
  const servers = ORDER.filter((k) => results.workloads.some((w) => w.results[k]));
  // The S3 workloads have a section of their own.
  const onDisk = results.workloads.filter((w) => !w.id.startsWith('s3-'));
  const header = (first: string, extra: string[] = []) => [
    `| ${first} | ${servers.map((k) => SERVER_LABELS[k]).join(' | ')}${extra.map((e) => ` | ${e}`).join('')} |`,
    `| --- | ${servers.map(() => '---:').join(' | ')}${extra.map(() => ' | ---:').join('')} |`,
  ];
  const row = (
    name: string,
    w: WorkloadResult,
    pick: (s: Summary) => number,
    withRange: boolean,
    ratios?: string[],
  ) => {
    const cells = servers.map((k) => {
      const r = w.results[k];
      return cell(r?.summary, pick, withRange && r ? [r.summary.min, r.summary.max] : undefined);
    });
    return `| ${name} | ${cells.join(' | ')}${(ratios ?? []).map((x) => ` | ${x}`).join('')} |`;
  };

  /** (peak RSS at 64 concurrent uploads − peak at 1) / 63, when the run has both. */
  const perUploadRss = (): string[] => {
    const one = onDisk.find((w) => w.id === 'parallel-1');
    const many = onDisk.find((w) => w.id === 'parallel-64');
    if (!one || !many) return [];
    const cells = servers.map((k) => {
      const a = one.results[k]?.summary.peakRssBytes;
      const b = many.results[k]?.summary.peakRssBytes;
      return a === undefined || b === undefined ? '–' : formatNumber((b - a) / 63 / MiB);
    });
    return [`| RSS per concurrent upload: (64 at once − 1) / 63 | ${cells.join(' | ')} |`];
  };

  const lines: string[] = [];
  const load = (l: number[]) => l.map((x) => x.toFixed(2)).join(' ');
  lines.push(
    `# nestjs-tussi benchmark${results.mode === 'smoke' ? ' (SMOKE RUN: tiny sizes, not a measurement)' : ''}`,
    '',
    `- Date: ${results.date}`,
    `- Machine: ${machineLine(results)}`,
    `- Commit: ${results.machine.commit}`,
    `- Command: \`${results.command}\` (${results.durationSeconds.toFixed(0)} s)`,
    `- Load average (1, 5, 15 min): ${load(results.loadAverage.start)} at the start, ${load(results.loadAverage.end)} at the end` +
      (results.loadAverage.start[0] > 0.5 ? ' — **the machine was busy: numbers are noisy**' : ''),
    `- Each cell: the median of ${results.rounds} round${results.rounds === 1 ? '' : 's'}; the servers take turns within each round (the order rotates every round), so drift of the machine falls on all of them alike. Small print: min–max.`,
    '',
    '## Throughput',
    '',
    ...header('Workload', ['tussi / @tus', 'tussi / raw']),
  );
  for (const w of onDisk) {
    lines.push(
      row(`${w.title} (${w.unit})`, w, (s) => s.value, true, [
        ratio(w.ratios.vsTus),
        ratio(w.ratios.vsRaw),
      ]),
    );
    if (w.ratios.fastifyVsTus !== undefined) {
      lines.push(
        `| ↳ on Fastify: nestjs-tussi (Fastify) / … | ${servers.map(() => '').join(' | ')} | ${ratio(w.ratios.fastifyVsTus)} | ${ratio(w.ratios.fastifyVsRaw)} |`,
      );
    }
    if (w.ratios.draftVsTus !== undefined) {
      lines.push(
        `| ↳ IETF draft: nestjs-tussi (IETF draft) / … | ${servers.map(() => '').join(' | ')} | ${ratio(w.ratios.draftVsTus)} | ${ratio(w.ratios.draftVsRaw)} |`,
      );
    }
    if (w.ratios.fsyncVsTus !== undefined) {
      lines.push(
        `| ↳ with fsync: nestjs-tussi (fsync) / … | ${servers.map(() => '').join(' | ')} | ${ratio(w.ratios.fsyncVsTus)} | ${ratio(w.ratios.fsyncVsRaw)} |`,
      );
    }
    if (w.ratios.v8VsTus !== undefined) {
      lines.push(
        `| ↳ with V8's defaults: nestjs-tussi (V8 defaults) / … | ${servers.map(() => '').join(' | ')} | ${ratio(w.ratios.v8VsTus)} | ${ratio(w.ratios.v8VsRaw)} |`,
      );
    }
    if (w.kind === 'small') {
      lines.push(row('↳ latency per upload, p50 (ms)', w, (s) => s.p50Ms ?? NaN, false, ['', '']));
      lines.push(row('↳ latency per upload, p99 (ms)', w, (s) => s.p99Ms ?? NaN, false, ['', '']));
      // Only nestjs-tussi's sample has a consumer: it moves every finished upload to TUS_DEST_DIR.
      const sample = new Set(
        Object.entries(w.results)
          .filter(([key]) => key.startsWith('nestjs'))
          .map(([, result]) => result?.summary),
      );
      const consumer = (s: Summary) => (sample.has(s) ? s.settleSeconds : NaN);
      lines.push(row('↳ s until the sample consumer delivered all', w, consumer, false, ['', '']));
    }
  }

  const draft = onDisk.filter((w) => w.ratios.draftVsNestjs !== undefined);
  if (draft.length > 0) {
    const pair: ServerKey[] = ['nestjs', 'nestjs-draft'];
    lines.push(
      '',
      '## The IETF draft beside TUS 1.0.0',
      '',
      "The same sample on Express, in a process of its own, its client speaking Resumable Uploads for HTTP (interop version 6, as tus-js-client's `ietf-draft-05`) in the same requests as the TUS client: a POST (`Upload-Complete: ?0`, answered with a 104 then 201) and the PATCHes (`application/partial-upload`, the last with `Upload-Complete: ?1`). Every answer is checked for the draft's headers.",
      '',
      '| Workload | nestjs-tussi, TUS 1.0.0 | nestjs-tussi, IETF draft | draft / TUS 1.0.0 | draft / @tus |',
      '| --- | ---: | ---: | ---: | ---: |',
      ...draft.map(
        (w) =>
          `| ${w.title} (${w.unit}) | ${pair.map((k) => cell(w.results[k]?.summary, (s) => s.value)).join(' | ')} | ${ratio(w.ratios.draftVsNestjs)} | ${ratio(w.ratios.draftVsTus)} |`,
      ),
    );
  }

  const s3 = results.workloads.filter((w) => w.ratios.s3VsTus !== undefined);
  if (s3.length > 0) {
    const pair: ServerKey[] = ['nestjs-s3', 'tus-s3'];
    const cellOf = (w: WorkloadResult, k: ServerKey, pick: (s: Summary) => number) =>
      cell(w.results[k]?.summary, pick);
    lines.push(
      '',
      '## Object storage (S3)',
      '',
      'Both servers on one local S3 server (a single-node Ceph RADOS Gateway with an in-memory object store), a bucket each; part size 8 MiB for both. nestjs-tussi spools parts to files and completes each upload into one object, which the sample consumer then downloads (not counted in the rate).',
      '',
      `| Workload | ${pair.map((k) => SERVER_LABELS[k]).join(' | ')} | tussi / @tus | peak RSS tussi | peak RSS @tus |`,
      '| --- | ---: | ---: | ---: | ---: | ---: |',
      ...s3.map(
        (w) =>
          `| ${w.title} (${w.unit}) | ${pair.map((k) => cellOf(w, k, (s) => s.value)).join(' | ')} | ${ratio(w.ratios.s3VsTus)} | ${cellOf(w, 'nestjs-s3', (s) => s.peakRssBytes / MiB)} MiB | ${cellOf(w, 'tus-s3', (s) => s.peakRssBytes / MiB)} MiB |`,
      ),
    );
  }

  lines.push(
    '',
    '## Server resources',
    '',
    'Peak RSS of the server process during the workload (MiB; VmHWM reset before each trial, with VmRSS sampled every 50 ms):',
    '',
    ...header('Workload'),
    ...onDisk.map((w) => row(w.title, w, (s) => s.peakRssBytes / MiB, false)),
    ...perUploadRss(),
    '',
    'Server CPU (utime + stime) per GiB received, during the requests (s/GiB; small uploads: ms per upload):',
    '',
    ...header('Workload'),
    ...onDisk.map((w) =>
      w.kind === 'small'
        ? row(`${w.title} (ms/upload)`, w, (s) => s.cpuMsPerUpload, false)
        : row(w.title, w, (s) => s.cpuSecondsPerGiB, false),
    ),
    '',
    'Garbage collections of the server per trial, until it was done with the uploads (full Mark-Compacts / minor Scavenges; every server runs with `--trace-gc`, the same V8 flags for all):',
    '',
    ...header('Workload'),
    ...onDisk.map((w) => {
      const cells = servers.map((k) => {
        const r = w.results[k];
        const n = (x: number) => Math.round(x).toLocaleString('en-US');
        return r ? `${n(r.summary.fullGcs)} / ${n(r.summary.minorGcs)}` : '–';
      });
      return `| ${w.title} | ${cells.join(' | ')} |`;
    }),
    '',
    'Per process over the whole run (MiB):',
    '',
    `| Server | RSS idle after warm-up | highest peak RSS of any trial |`,
    `| --- | ---: | ---: |`,
    ...[
      ...servers,
      ...(['nestjs-s3', 'tus-s3'] as ServerKey[]).filter((k) => results.servers[k]),
    ].map((k) => {
      const s = results.servers[k];
      return `| ${SERVER_LABELS[k]} | ${s ? formatNumber(s.idleRssBytes / MiB) : '–'} | ${s ? formatNumber(s.peakRssBytes / MiB) : '–'} |`;
    }),
  );

  // The client must not be the bottleneck: its CPU while it fed the raw baseline, the fastest server.
  const clientRows = results.workloads.flatMap((w) => {
    const raw = w.results.raw;
    return raw
      ? [
          `| ${w.title} | ${formatNumber(raw.summary.value)} ${w.unit} | ${(100 * raw.summary.clientCores).toFixed(0)} % |`,
        ]
      : [];
  });
  const busiest = Math.max(
    ...results.workloads.flatMap((w) => Object.values(w.results).map((r) => r.summary.clientCores)),
  );
  lines.push(
    '',
    '## The client',
    '',
    'One client for every server (node:http, keep-alive agent, bodies streamed from one pre-filled buffer), in the bench process. ' +
      `Its CPU while it fed the raw baseline, the fastest server (100 % = one core); the most it used in any trial: ${(100 * busiest).toFixed(0)} %.`,
    '',
    '| Workload | raw baseline | client CPU |',
    '| --- | ---: | ---: |',
    ...clientRows,
    '',
  );
  if (results.syscalls) {
    lines.push(
      '## Syscalls per small upload',
      '',
      'POST and one 4 KiB PATCH, 32 at once, until the server was done with them (nestjs-tussi: its consumer delivered them); `strace -c -f` on the server and all its threads, one unmeasured trial of 200 uploads (`--syscalls`):',
      '',
      '| Server | syscalls per upload | the most frequent, per upload |',
      '| --- | ---: | --- |',
      ...Object.entries(results.syscalls).map(
        ([k, s]) =>
          `| ${SERVER_LABELS[k as ServerKey]} | ${formatNumber(s.perUpload)} | ${s.top.map((t) => `${t.name} ${formatNumber(t.calls)}`).join(', ')} |`,
      ),
      '',
    );
  }
  if (results.longRun) {
    const run = results.longRun;
    const mib = (bytes: number) => (bytes / MiB).toFixed(0);
    const size = (bytes: number) =>
      bytes >= GiB ? `${(bytes / GiB).toFixed(0)} GiB` : `${(bytes / MiB).toFixed(0)} MiB`;
    const growth = run.lastQuarterRss - run.firstQuarterRss;
    lines.push(
      '## Long run (leak check)',
      '',
      `${SERVER_LABELS[run.server]}, one process: ${run.smallUploads.toLocaleString('en-US')} small uploads and ${size(run.bigBytes)} in uploads of ${size(run.bigUpload)}, in ${run.phaseEndRss.length} phases (${run.seconds.toFixed(0)} s; \`--long\`). RSS sampled every ${run.sampleMs} ms (${run.rssSamples.length} samples):`,
      '',
      '| RSS (MiB) | first quarter (median) | last quarter (median) | growth | peak |',
      '| --- | ---: | ---: | ---: | ---: |',
      `| ${SERVER_LABELS[run.server]} | ${mib(run.firstQuarterRss)} | ${mib(run.lastQuarterRss)} | ${growth >= 0 ? '+' : '−'}${mib(Math.abs(growth))} | ${mib(run.peakRss)} |`,
      '',
      `RSS at the end of each phase (MiB): ${run.phaseEndRss.map(mib).join(', ')}.`,
      '',
    );
  }
  if (results.profiles) {
    lines.push('## CPU profiles', '');
    for (const [key, text] of Object.entries(results.profiles)) {
      lines.push(text ?? `(${key}: no profile)`);
    }
  }
  return lines.join('\n');
}

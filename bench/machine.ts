/** What the results were measured on, for the report. */
import { execFileSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import os from 'node:os';
import { relative } from 'node:path';

export interface MachineInfo {
  nproc: number;
  cpuModel: string;
  memoryBytes: number;
  /** Filesystem type of the directory the servers write to (`df --output=fstype`). */
  fsType: string;
  /** The directory the servers write to, relative to the repository (no machine paths in reports). */
  dataDir: string;
  kernel: string;
  node: string;
  /** `git describe` of the work tree, `-dirty` when it has changes. */
  commit: string;
}

function run(command: string, args: string[]): string | undefined {
  try {
    return execFileSync(command, args, {
      encoding: 'utf8',
      stdio: ['ignore', 'pipe', 'ignore'],
    }).trim();
  } catch {
    return undefined;
  }
}

/** The type of the filesystem holding `dir`: from df, else the longest matching /proc/mounts entry. */
export function filesystemType(dir: string): string {
  const fromDf = run('df', ['--output=fstype', dir])?.split('\n')[1]?.trim();
  if (fromDf) return fromDf;
  try {
    let best = { mount: '', type: 'unknown' };
    for (const line of readFileSync('/proc/mounts', 'utf8').split('\n')) {
      const [, mount, type] = line.split(' ');
      if (mount && type && dir.startsWith(mount) && mount.length > best.mount.length) {
        best = { mount, type };
      }
    }
    return best.type;
  } catch {
    return 'unknown';
  }
}

export function machineInfo(dataDir: string, root: string): MachineInfo {
  return {
    nproc: os.availableParallelism(),
    cpuModel: os.cpus()[0]?.model.trim() ?? 'unknown',
    memoryBytes: os.totalmem(),
    fsType: filesystemType(dataDir),
    dataDir: relative(root, dataDir) || '.',
    kernel: `${os.type()} ${os.release()}`,
    node: process.version,
    commit: run('git', ['-C', root, 'describe', '--always', '--dirty']) ?? 'unknown',
  };
}

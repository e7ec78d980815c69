/**
 * What the bench measures of a server process, read from outside through /proc (Linux):
 * CPU time (utime + stime, /proc/PID/stat) and memory (VmRSS, VmHWM, /proc/PID/status).
 */
import { execFileSync } from 'node:child_process';
import { readFileSync, writeFileSync } from 'node:fs';

let clockTicks: number | undefined;

/** Clock ticks per second, the unit of utime and stime (`getconf CLK_TCK`, almost always 100). */
export function ticksPerSecond(): number {
  if (clockTicks === undefined) {
    try {
      clockTicks = Number(execFileSync('getconf', ['CLK_TCK'], { encoding: 'utf8' }).trim()) || 100;
    } catch {
      clockTicks = 100;
    }
  }
  return clockTicks;
}

/** CPU seconds (user + system) a process used so far. */
export function cpuSeconds(pid: number): number {
  const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
  // Fields after the command name (which may hold spaces and parentheses): state is field 3,
  // utime field 14, stime field 15.
  const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  return (Number(fields[11]) + Number(fields[12])) / ticksPerSecond();
}

/** `VmRSS` and `VmHWM` (the peak RSS) of a process, in bytes. */
export function memoryOf(pid: number): { rss: number; hwm: number } {
  const status = readFileSync(`/proc/${pid}/status`, 'utf8');
  const kib = (field: string) => {
    const match = new RegExp(`^${field}:\\s+(\\d+) kB$`, 'm').exec(status);
    return match ? Number(match[1]) * 1024 : 0;
  };
  return { rss: kib('VmRSS'), hwm: kib('VmHWM') };
}

/**
 * Resets the peak RSS (`VmHWM`) of a process to its current RSS (`echo 5 > clear_refs`, Linux
 * 4.0+), so the next reading is the peak of what follows. False when the kernel refuses.
 */
export function resetPeak(pid: number): boolean {
  try {
    writeFileSync(`/proc/${pid}/clear_refs`, '5');
    return true;
  } catch {
    return false;
  }
}

/**
 * Watches one process while a trial runs: CPU seconds from start to each mark, and the peak RSS
 * over the window, from both the kernel's reset high-water mark and VmRSS sampled every
 * `intervalMs` (the samples alone when the high-water mark cannot be reset).
 */
export class ProcessWatch {
  private readonly cpuStart: number;
  private readonly peakReset: boolean;
  private sampledPeak: number;
  private readonly timer: NodeJS.Timeout;

  constructor(
    readonly pid: number,
    intervalMs = 50,
  ) {
    this.peakReset = resetPeak(pid);
    this.sampledPeak = memoryOf(pid).rss;
    this.cpuStart = cpuSeconds(pid);
    this.timer = setInterval(() => this.sample(), intervalMs);
    this.timer.unref();
  }

  private sample(): void {
    try {
      this.sampledPeak = Math.max(this.sampledPeak, memoryOf(this.pid).rss);
    } catch {
      // The process is gone; the trial fails on its own.
    }
  }

  /** CPU seconds used since the watch started. */
  cpu(): number {
    return cpuSeconds(this.pid) - this.cpuStart;
  }

  /** Peak RSS in bytes since the watch started. */
  peakRss(): number {
    this.sample();
    const { hwm } = memoryOf(this.pid);
    return this.peakReset ? Math.max(hwm, this.sampledPeak) : this.sampledPeak;
  }

  stop(): void {
    clearInterval(this.timer);
  }
}

import type { Logger } from '@nestjs/common';

/**
 * At most `perSecond` lines a second: past it, lines are counted, not written, and one line
 * says how many were left out. Clients cannot grow the log faster than this, whatever they do.
 */
export class LogBudget {
  private second = 0;
  private used = 0;
  private dropped = 0;

  constructor(
    private readonly logger: Pick<Logger, 'log' | 'warn' | 'debug'>,
    private readonly perSecond = 50,
  ) {}

  write(level: 'log' | 'warn' | 'debug', line: string): void {
    const now = Math.floor(Date.now() / 1000);
    if (now !== this.second) {
      if (this.dropped > 0)
        this.logger.warn(`${this.dropped} log lines left out (over ${this.perSecond}/s)`);
      this.second = now;
      this.used = 0;
      this.dropped = 0;
    }
    if (this.used < this.perSecond) {
      this.used++;
      this.logger[level](line);
    } else {
      this.dropped++;
    }
  }
}

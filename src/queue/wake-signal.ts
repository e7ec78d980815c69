/**
 * Wakes the waiters of a queue when something may have arrived. `count` moves on every wake, so
 * a waiter that scanned meanwhile can tell that it must look again instead of sleeping through
 * an event that came during its scan.
 */
export class WakeSignal {
  private readonly waiters = new Set<() => void>();
  count = 0;

  /** Wakes every current waiter. */
  wake(): void {
    this.count++;
    for (const waiter of [...this.waiters]) waiter();
  }

  /** Resolves on the next wake, after `ms`, or when `signal` fires, whichever comes first. */
  wait(ms: number, signal: AbortSignal): Promise<void> {
    return new Promise((resolve) => {
      const done = () => {
        clearTimeout(timer);
        this.waiters.delete(done);
        signal.removeEventListener('abort', done);
        resolve();
      };
      const timer = setTimeout(done, ms);
      this.waiters.add(done);
      if (signal.aborted) done();
      else signal.addEventListener('abort', done, { once: true });
    });
  }
}

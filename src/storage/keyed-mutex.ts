import { LockTimeoutError } from './storage.interfaces.js';

interface Waiter {
  grant: () => void;
  timer: NodeJS.Timeout;
}

/**
 * In-process exclusive locks by key, granted in arrival order. In front of the cross-process
 * `flock` it keeps requests of one process from polling each other.
 */
export class KeyedMutex {
  private readonly queues = new Map<string, Waiter[]>();

  /** Resolves with a release function once `key` is free, or rejects after `waitMs`. */
  acquire(key: string, waitMs: number): Promise<() => void> {
    const queue = this.queues.get(key);
    if (!queue) {
      this.queues.set(key, []);
      return Promise.resolve(this.releaser(key));
    }
    return new Promise((resolve, reject) => {
      const waiter: Waiter = {
        grant: () => {
          clearTimeout(waiter.timer);
          resolve(this.releaser(key));
        },
        timer: setTimeout(() => {
          queue.splice(queue.indexOf(waiter), 1);
          reject(new LockTimeoutError(`${key} is locked`));
        }, waitMs),
      };
      queue.push(waiter);
    });
  }

  /** True while some caller holds `key`. */
  isHeld(key: string): boolean {
    return this.queues.has(key);
  }

  private releaser(key: string): () => void {
    let released = false;
    return () => {
      if (released) return;
      released = true;
      const next = this.queues.get(key)?.shift();
      if (next) next.grant();
      else this.queues.delete(key);
    };
  }
}

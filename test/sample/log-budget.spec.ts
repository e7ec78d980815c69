import { describe, expect, it, jest } from '@jest/globals';
import { printable } from '../../sample/src/upload-events.listener.js';
import { LogBudget } from '../../src/index.js';

describe("the sample's log budget", () => {
  it('writes at most perSecond lines a second, then one line saying how many were left out', () => {
    jest.useFakeTimers({ now: 1_000_000 });
    try {
      const lines: string[] = [];
      const push = (l: string) => lines.push(l);
      const logger = { log: push, warn: push, debug: push };
      const budget = new LogBudget(logger, 3);
      for (let i = 0; i < 1000; i++) budget.write('log', `created ${i}`);
      expect(lines).toEqual(['created 0', 'created 1', 'created 2']);
      jest.advanceTimersByTime(1000);
      budget.write('log', 'next');
      expect(lines.slice(3)).toEqual(['997 log lines left out (over 3/s)', 'next']);
    } finally {
      jest.useRealTimers();
    }
  });

  it('escapes what would forge or disguise a line', () => {
    expect(printable('a\nb\u202Ec')).toBe('a\\u{A}b\\u{202E}c');
  });
});

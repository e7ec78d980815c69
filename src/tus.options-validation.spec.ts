import { describe, expect, it } from '@jest/globals';
import type { TusModuleOptions } from './tus.options.js';
import { resolveTusOptions } from './tus.options-validation.js';

const dirs = { uploadDir: '/srv/uploads', completedDir: '/srv/completed' };
const resolve = (options: Record<string, unknown>) =>
  resolveTusOptions(options as unknown as TusModuleOptions);

describe('resolveTusOptions', () => {
  it('fills in the defaults and keeps what was given', () => {
    const resolved = resolve({ ...dirs, maxSize: 10, fsync: false });
    expect(resolved).toMatchObject({
      ...dirs,
      maxSize: 10,
      fsync: false,
      maxMetadataSize: 4096,
      directoryMode: 0o700,
      fileMode: 0o600,
      lockWaitMs: 3000,
      bodyIdleTimeoutMs: 60_000,
      headersTimeoutMs: 60_000,
      configureHttpServer: true,
    });
  });

  it.each<[string, Record<string, unknown>, string]>([
    ['a negative size', { maxSize: -1 }, 'maxSize: must be an integer >= 0'],
    ['a fractional size', { maxChunkSize: 1.5 }, 'maxChunkSize: must be an integer >= 1'],
    ['a size in a string', { maxSize: '10' }, 'maxSize: must be an integer >= 0'],
    ['a mode beyond 0o7777', { fileMode: 0o10000 }, 'fileMode: must be an integer from 0 to 4095'],
    ['a poll interval below 10 ms', { queuePollIntervalMs: 5 }, 'queuePollIntervalMs: must be'],
    ['a switch in a string', { fsync: 'false' }, 'fsync: must be a boolean'],
    ['proxies that are not strings', { trustedProxies: [1] }, 'trustedProxies: must be an array'],
    ['an empty completed directory', { completedDir: '' }, 'completedDir: must be a non-empty'],
    ['a misspelt option', { maxsize: 10 }, 'unknown option `maxsize`'],
  ])('refuses %s, naming it', (_name, bad, message) => {
    expect(() => resolve({ ...dirs, ...bad })).toThrow(`Invalid TusModule options: ${message}`);
  });

  it('names every bad option in one error', () => {
    expect(() => resolve({ ...dirs, maxSize: -1, fsync: 1, colour: 'red' })).toThrow(
      'Invalid TusModule options: maxSize: must be an integer >= 0; fsync: must be a boolean; ' +
        'unknown option `colour`',
    );
  });

  it('needs the directories, but no uploadDir beside a storage of its own', () => {
    expect(() => resolve({ completedDir: dirs.completedDir })).toThrow(
      'uploadDir: must be a non-empty string',
    );
    expect(() => resolve({ uploadDir: dirs.uploadDir })).toThrow(
      'completedDir: must be a non-empty string',
    );
    expect(() => resolve({ completedDir: dirs.completedDir, storage: {} })).not.toThrow();
  });

  it('takes an option set to undefined or null as absent', () => {
    const resolved = resolve({ ...dirs, maxSize: undefined, lockWaitMs: null });
    expect(resolved.lockWaitMs).toBe(3000);
  });
});

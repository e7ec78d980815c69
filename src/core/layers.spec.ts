import { expect, it } from '@jest/globals';
import { readdir, readFile } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const SRC = join(dirname(fileURLToPath(import.meta.url)), '..');

/** The relative imports of every non-test source file below `folder`. */
async function importsOf(folder: string): Promise<{ file: string; from: string }[]> {
  const found: { file: string; from: string }[] = [];
  for (const name of await readdir(join(SRC, folder))) {
    if (!name.endsWith('.ts') || name.endsWith('.spec.ts')) continue;
    const text = await readFile(join(SRC, folder, name), 'utf8');
    for (const match of text.matchAll(/from '(\.{1,2}\/[^']+)'/g)) {
      found.push({ file: `${folder}/${name}`, from: match[1] });
    }
  }
  return found;
}

it('the ground floor (core) imports nothing of the project', async () => {
  expect((await importsOf('core')).filter((i) => !i.from.startsWith('./'))).toEqual([]);
});

it('storages and the completed queue import nothing of the protocol or of Nest', async () => {
  const imports = [
    ...(await importsOf('storage')),
    ...(await importsOf('queue')),
    ...(await importsOf('s3')),
  ];
  expect(imports.filter((i) => /\/(protocol|nest|redis|cli)\//.test(i.from))).toEqual([]);
});

import { describe, expect, it } from '@jest/globals';
import fc from 'fast-check';
import { safeFilename } from './safe-filename.js';

const bytes = (text: string) => Buffer.byteLength(text, 'utf8');
const nihon = '日'.repeat(300);
const zalgo = `z${'\u0301'.repeat(150)}.txt`;

describe('safeFilename', () => {
  it.each<[string, string | undefined, string]>([
    // Names of the world, kept as they are.
    ['ASCII', 'report-2024_v2.pdf', 'report-2024_v2.pdf'],
    ['Latin with accents', 'résumé.pdf', 'résumé.pdf'],
    ['Japanese', '日本.txt', '日本.txt'],
    ['Arabic', 'تقرير.docx', 'تقرير.docx'],
    ['Cyrillic, spaces inside', 'Отчёт за год.xlsx', 'Отчёт за год.xlsx'],
    ['Devanagari (marks)', 'नमस्ते.txt', 'नमस्ते.txt'],
    ['Persian with a zero-width non-joiner', 'می\u200Cخواهم.txt', 'می\u200Cخواهم.txt'],
    ['emoji', '📄 notes.md', '📄 notes.md'],
    ['a ZWJ emoji sequence', '👨\u200D👩\u200D👧.png', '👨\u200D👩\u200D👧.png'],
    ['a flag', '🇯🇵.jpg', '🇯🇵.jpg'],
    ['punctuation Linux accepts', 'a:b*c?"d"<e>|f.txt', 'a:b*c?"d"<e>|f.txt'],
    ['look-alike slashes are not separators', 'a\u2215b\uFF0Fc', 'a\u2215b\uFF0Fc'],
    ['U+FFFD from bytes that were not UTF-8', 'caf\uFFFD.txt', 'caf\uFFFD.txt'],
    // NFC: one name, one spelling in bytes.
    ['combining accent composed', 're\u0301sume\u0301.pdf', 'résumé.pdf'],
    ['Angstrom sign', '\u212Bngstr\u00F6m', '\u00C5ngstr\u00F6m'],
    ['Hangul jamo composed', '\u1112\u1161\u11AB.txt', '한.txt'],
    ['a control between a letter and its accent', 'e\u0000\u0301.txt', 'é.txt'],
    // One path component.
    ['traversal', '../../etc/passwd', 'etc_passwd'],
    ['absolute path', '/etc/passwd', 'etc_passwd'],
    ['Windows path (old browsers sent them)', 'C:\\Users\\me\\photo.jpg', 'C:_Users_me_photo.jpg'],
    ['a path inside', 'a/b.txt', 'a_b.txt'],
    ['separators doubled, dot parts', 'a//./b/../c', 'a_b_c'],
    ['only a separator', '/', ''],
    ['dot', '.', ''],
    ['dot dot', '..', ''],
    ['only dots', '....', ''],
    ['.. then a separator', '../', ''],
    // Never hidden, no spaces or dots around.
    ['dotfile', '.bashrc', 'bashrc'],
    ['dotfile after a separator', 'x/.ssh/authorized_keys', 'x_.ssh_authorized_keys'],
    ['leading dots and spaces', ' . .hidden', 'hidden'],
    ['trailing dots and spaces (Windows drops them)', 'name. . ', 'name'],
    ['ideographic space around', '\u3000名前\u3000', '名前'],
    // Controls.
    ['NUL', 'a\u0000b', 'ab'],
    ['NUL to fake an extension', 'evil.php\u0000.jpg', 'evil.php.jpg'],
    ['newline (log injection)', 'a\r\nFAKE LOG LINE', 'aFAKE LOG LINE'],
    ['tab, DEL, C1', 'a\tb\u007Fc\u0085d\u009Be', 'abcde'],
    ['escape sequence', '\u001B[31mred', '[31mred'],
    ['line and paragraph separators', 'a\u2028b\u2029c', 'abc'],
    ['right-to-left override disguising .exe', '\u202Etxt.exe', 'txt.exe'],
    ['override inside the name', 'x\u202Egpj.exe', 'xgpj.exe'],
    ['hostile: traversal and override', '../../x\u202Egpj.exe', 'xgpj.exe'],
    ['bidi isolates and marks', '\u2066a\u2069\u200Eb\u200F\u061Cc', 'abc'],
    ['only controls', '\u0000\u001F\u202E', ''],
    ['a lone surrogate', 'a\uD800b', 'a\uFFFDb'],
    // Windows device names: prefixed, harmless elsewhere.
    ['CON', 'CON', '_CON'],
    ['nul.txt', 'nul.txt', '_nul.txt'],
    ['COM1.log', 'COM1.log', '_COM1.log'],
    ['LPT9', 'lpt9', '_lpt9'],
    ['a device name after cleaning', '../aux.c', '_aux.c'],
    ['not a device name', 'CONFIG.txt', 'CONFIG.txt'],
    ['COM10 is not one', 'COM10', 'COM10'],
    // Nothing.
    ['undefined', undefined, ''],
    ['empty', '', ''],
  ])('%s', (_name, input, expected) => {
    expect(safeFilename(input)).toBe(expected);
  });

  it.each<[string, string, number, string]>([
    ['300 × 日: 66 whole characters (198 bytes)', nihon, 200, '日'.repeat(66)],
    ['300 × 日 with an extension: kept', `${nihon}.txt`, 200, `${'日'.repeat(65)}.txt`],
    ['emoji are 4 bytes: 50 of them', '👍'.repeat(100), 200, '👍'.repeat(50)],
    [
      'a cut never splits a letter from its accent',
      `${'a'.repeat(199)}q\u0307`,
      200,
      'a'.repeat(199),
    ],
    [
      'a cut never splits a ZWJ sequence',
      `${'a'.repeat(190)}👨\u200D👩\u200D👧`,
      200,
      'a'.repeat(190),
    ],
    ['exactly at the limit: unchanged', 'é'.repeat(100), 200, 'é'.repeat(100)],
    ['a long extension is not one', `${'a'.repeat(300)}.${'b'.repeat(20)}`, 200, 'a'.repeat(200)],
    [
      'the cut leaves no trailing dot or space',
      `${'a'.repeat(9)} .${'b'.repeat(20)}`,
      11,
      'a'.repeat(9),
    ],
    ['the stem keeps no trailing space', `${'a'.repeat(5)}     b.pdf`, 10, 'aaaaa.pdf'],
    ['one grapheme over the limit: nothing left', zalgo, 200, ''],
    ['a cut that would make a device name', 'CONFIG.txt', 7, '_CO.txt'],
    ['never half of a 2-byte é', 'résumé.pdf', 6, 'r.pdf'],
    ['limit of 1 byte', '日本', 1, ''],
  ])('cuts on whole characters: %s', (_name, input, maxBytes, expected) => {
    const result = safeFilename(input, { maxBytes });
    expect(result).toBe(expected);
    expect(bytes(result)).toBeLessThanOrEqual(maxBytes);
  });

  it.each([0, -1, 1.5, Number.NaN, Number.POSITIVE_INFINITY])('refuses maxBytes %p', (maxBytes) => {
    expect(() => safeFilename('a', { maxBytes })).toThrow(RangeError);
  });

  it('whatever the input: one clean, bounded, NFC component, and a fixed point', () => {
    // Units that make trouble: separators, dots, controls, bidi, surrogates, combining marks,
    // multi-byte characters, device names.
    const tricky = fc.constantFrom(
      '/',
      '\\',
      '.',
      '..',
      ' ',
      '\u0000',
      '\n',
      '\u007F',
      '\u0085',
      '\u2028',
      '\u202E',
      '\u2066',
      '\uD800',
      '\uDC00',
      '\u0301',
      '\u0307',
      '\u200D',
      'é',
      '日',
      '👍',
      '🇯',
      'CON',
      'com1',
      'a',
      'txt',
      '\u1112',
      '\u1161',
      '\u3000',
    );
    const names = fc.oneof(
      fc.string({ unit: tricky, maxLength: 80 }),
      fc.string({ unit: 'binary', maxLength: 120 }),
      fc.string({ unit: 'grapheme', maxLength: 120 }),
    );
    fc.assert(
      fc.property(names, fc.integer({ min: 1, max: 260 }), (name, maxBytes) => {
        const result = safeFilename(name, { maxBytes });
        expect(bytes(result)).toBeLessThanOrEqual(maxBytes);
        expect(result).not.toMatch(/[/\\]/);
        expect(result).not.toMatch(/[\p{Cc}\p{Zl}\p{Zp}\p{Bidi_Control}\p{Cs}]/u);
        expect(result).not.toMatch(/^[\s.]|[\s.]$/u);
        expect(result).not.toMatch(/^(CON|PRN|AUX|NUL|COM[0-9¹²³]|LPT[0-9¹²³])(\.|$)/i);
        expect(result.normalize('NFC')).toBe(result);
        // What is kept is written as UTF-8 and read back unchanged.
        expect(Buffer.from(result, 'utf8').toString('utf8')).toBe(result);
        expect(safeFilename(result, { maxBytes })).toBe(result);
      }),
      { numRuns: 1500 },
    );
  });
});

/** Options of {@link safeFilename}. */
export interface SafeFilenameOptions {
  /**
   * Longest result, in UTF-8 bytes (filesystems count bytes, not characters: ext4, XFS and
   * Btrfs allow 255 per name). The default, 200, leaves room for a prefix such as the upload's
   * `{uuid}-` (37 bytes) and a `.meta` suffix beside it.
   * @default 200
   */
  maxBytes?: number;
}

// Lone surrogates cannot be written as UTF-8: they become U+FFFD, as the UTF-8 decoding of
// Upload-Metadata turns bytes that are not UTF-8 into U+FFFD.
const LONE_SURROGATE = /\p{Cs}/gu;
// C0, DEL and C1 (Cc), line and paragraph separators, and the bidi controls (U+061C, U+200E-F,
// U+202A-E, U+2066-9): invisible, they break log lines and shell scripts, or reorder what is
// displayed so that `x\u202Egpj.exe` reads as `xexe.jpg`. Removed rather than replaced, so the
// name reads as it really is. Joiners (U+200C, U+200D) stay: Persian, Indic scripts and emoji
// sequences need them.
const INVISIBLE = /[\p{Cc}\p{Zl}\p{Zp}\p{Bidi_Control}]/gu;
const SEPARATOR = /[/\\]/;
// Leading dots would hide the file (or make it `.`, `..`, a dotfile); trailing dots and spaces
// are dropped silently by Windows and easily missed by a person; spaces around are accidents.
const LEADING = /^[\s.]+/u;
const TRAILING = /[\s.]+$/u;
// Device names on Windows, with or without an extension (`CON`, `nul.txt`, `COM1.log`): not an
// issue on Linux, where this server runs, but a file copied to Windows under such a name would
// be the device. Prefixing `_` is cheap, so it is done.
const WINDOWS_DEVICE = /^(?:CON|PRN|AUX|NUL|COM[0-9¹²³]|LPT[0-9¹²³])(?:\.|$)/iu;
// What is kept when a long name is cut: a final `.ext` of up to 16 letters, marks or digits.
const EXTENSION = /\.[\p{L}\p{M}\p{N}]{1,16}$/u;

const graphemes = new Intl.Segmenter(undefined, { granularity: 'grapheme' });
const utf8Bytes = (text: string) => Buffer.byteLength(text, 'utf8');

/**
 * The client's `filename` (or any name from outside) made safe to use as a file name, keeping
 * letters and digits of every script as they are:
 *
 * - one path component: `/` and `\` separate parts, the empty, `.` and `..` parts are dropped
 *   and the others joined with `_` (`../../etc/passwd` → `etc_passwd`, `a/b.txt` → `a_b.txt`);
 * - no control characters: C0, DEL, C1, U+2028, U+2029 and the bidi controls (such as U+202E,
 *   which disguises an extension) are removed; lone surrogates become U+FFFD;
 * - NFC-normalized, so one name has one spelling in bytes (`e` + U+0301 → `é`);
 * - no leading dot (never hidden, never `.` or `..`), no leading or trailing spaces, no trailing
 *   dot;
 * - Windows device names (`CON`, `nul.txt`, `COM1`...) get a `_` prefix;
 * - at most `maxBytes` UTF-8 bytes (default 200), cut between grapheme clusters (never inside a
 *   character, an accented letter or an emoji), keeping a short final extension.
 *
 * Returns `''` when nothing is left (no name, only dots or controls...): the caller picks a name
 * then. The result is not unique: prefix it (e.g. with the upload id) to avoid collisions.
 * @param name the name as received; `undefined` (no `filename` in the metadata) gives `''`
 * @throws RangeError when `maxBytes` is not a positive integer
 */
export function safeFilename(name: string | undefined, options: SafeFilenameOptions = {}): string {
  const { maxBytes = 200 } = options;
  if (!Number.isSafeInteger(maxBytes) || maxBytes < 1) {
    throw new RangeError(`maxBytes must be a positive integer, got ${maxBytes}`);
  }
  if (typeof name !== 'string') return '';
  // Controls go before normalizing: removing one between a letter and its accent would leave a
  // decomposed pair that NFC would not see.
  const visible = name.replace(LONE_SURROGATE, '\uFFFD').replace(INVISIBLE, '').normalize('NFC');
  const joined = visible
    .split(SEPARATOR)
    .filter((part) => part !== '' && part !== '.' && part !== '..')
    .join('_');
  const cleaned = joined.replace(LEADING, '').replace(TRAILING, '');
  const fitted = fit(cleaned, maxBytes);
  // Checked on the result: a cut can make a device name of a longer one (`CONFIG.txt`).
  return WINDOWS_DEVICE.test(fitted) ? fit(`_${fitted}`, maxBytes) : fitted;
}

/** `name` (already clean) cut to `maxBytes`, keeping its extension when it has a short one. */
function fit(name: string, maxBytes: number): string {
  if (utf8Bytes(name) <= maxBytes) return name;
  const extension = EXTENSION.exec(name)?.[0];
  if (extension !== undefined && utf8Bytes(extension) < maxBytes) {
    const stem = cut(name.slice(0, -extension.length), maxBytes - utf8Bytes(extension));
    const trimmed = stem.replace(TRAILING, '');
    if (trimmed !== '') return trimmed + extension;
  }
  return cut(name, maxBytes).replace(TRAILING, '');
}

/** The longest prefix of whole grapheme clusters of `text` that fits in `maxBytes`. */
function cut(text: string, maxBytes: number): string {
  let used = 0;
  let end = 0;
  for (const { segment, index } of graphemes.segment(text)) {
    used += utf8Bytes(segment);
    if (used > maxBytes) break;
    end = index + segment.length;
  }
  return text.slice(0, end);
}

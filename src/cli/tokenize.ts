/**
 * Splits a shell line into arguments, the way redis-cli and sh users expect:
 * - whitespace separates arguments; quoted parts and unquoted parts next to each other join
 *   (`a"b c"` is one argument `ab c`); `""` is an empty argument;
 * - inside double quotes and outside quotes: `\"` `\'` `\\` `\n` `\r` `\t` `\0` `\a` `\b` `\f` `\v`,
 *   `\xHH` (one raw byte), `\uHHHH` and `\u{H…}` (a code point); outside quotes also a
 *   backslash before a blank (`hello\ world`); any other `\c` is an error naming it (never
 *   guessed: `"a\q"` must not silently become the key `aq`);
 * - inside single quotes everything is literal except `\'` (a quote) and `\\` (a backslash).
 * Arguments are bytes (UTF-8 of the text, plus raw `\xHH` bytes), so any key or value can
 * be typed. An unbalanced quote, an unknown escape or a trailing backslash is an error that
 * says which.
 */

export interface Token {
  /** The argument's bytes: what is stored when it is a key or a value. */
  readonly bytes: Uint8Array;
  /** The argument as text (invalid UTF-8 replaced), for command names and flags. */
  readonly text: string;
}

export type TokenizeResult =
  | { readonly ok: true; readonly tokens: Token[] }
  | { readonly ok: false; readonly error: string };

/** Longest line the shell accepts, in characters (a 1 MiB value plus room for quoting). */
export const MAX_LINE_CHARS = 4 * 1024 * 1024;

const encoder = new TextEncoder();
const decoder = new TextDecoder('utf-8', { fatal: false });

const SIMPLE_ESCAPES: Readonly<Record<string, string>> = {
  n: '\n',
  r: '\r',
  t: '\t',
  '0': '\0',
  a: '\x07',
  b: '\b',
  f: '\f',
  v: '\v',
  '"': '"',
  '\\': '\\',
};

class TokenBuilder {
  private readonly parts: Uint8Array[] = [];
  private pendingText = '';
  started = false;

  addText(text: string): void {
    this.started = true;
    this.pendingText += text;
  }

  addByte(byte: number): void {
    this.started = true;
    this.flushText();
    this.parts.push(Uint8Array.of(byte));
  }

  finish(): Token {
    this.flushText();
    let length = 0;
    for (const p of this.parts) length += p.length;
    const bytes = new Uint8Array(length);
    let offset = 0;
    for (const p of this.parts) {
      bytes.set(p, offset);
      offset += p.length;
    }
    return { bytes, text: decoder.decode(bytes) };
  }

  private flushText(): void {
    if (this.pendingText === '') return;
    this.parts.push(encoder.encode(this.pendingText));
    this.pendingText = '';
  }
}

const isSpace = (c: string): boolean => c === ' ' || c === '\t' || c === '\n' || c === '\r' || c === '\f' || c === '\v';
const HEX2 = /^[0-9a-fA-F]{2}$/;
const HEX4 = /^[0-9a-fA-F]{4}$/;

type EscapeResult =
  | { readonly ok: true; readonly length: number; readonly text: string; readonly byte?: number }
  | { readonly ok: false; readonly error: string };

/** Characters a backslash outside quotes makes literal: blanks and the quoting characters. */
const UNQUOTED_LITERALS = new Set([' ', '\t', '"', "'", '\\']);

/**
 * The escape starting at `line[i]` (a backslash followed by at least one character): its
 * text or raw byte and its length in characters. Outside quotes it also takes a blank or a
 * quote literally (`hello\ world`). An escape not listed is an error naming it: guessing
 * (`\q` → `q`) would silently store a different key than the one the user meant.
 */
function readEscape(line: string, i: number, where: 'double' | 'unquoted'): EscapeResult {
  const e = line[i + 1] as string;
  const column = i + 1;
  if (e === 'x') {
    const hex = line.slice(i + 2, i + 4);
    if (!HEX2.test(hex))
      return { ok: false, error: `invalid escape \\x${hex} at column ${column}: \\x takes two hex digits, e.g. \\xff` };
    return { ok: true, length: 4, text: '', byte: parseInt(hex, 16) };
  }
  if (e === 'u') {
    if (line[i + 2] === '{') {
      const close = line.indexOf('}', i + 3);
      const hex = close < 0 ? '' : line.slice(i + 3, close);
      const cp = /^[0-9a-fA-F]{1,6}$/.test(hex) ? parseInt(hex, 16) : NaN;
      if (!(cp <= 0x10ffff) || (cp >= 0xd800 && cp <= 0xdfff)) {
        return {
          ok: false,
          error: `invalid escape at column ${column}: \\u{…} takes a Unicode code point in hex, e.g. \\u{1F600}`,
        };
      }
      return { ok: true, length: close + 1 - i, text: String.fromCodePoint(cp) };
    }
    const hex = line.slice(i + 2, i + 6);
    if (!HEX4.test(hex))
      return {
        ok: false,
        error: `invalid escape \\u${hex} at column ${column}: \\u takes four hex digits, e.g. \\u00e9`,
      };
    // A pair of \uD83D\uDE00 escapes forms one code point.
    const unit = parseInt(hex, 16);
    const next = line.slice(i + 6, i + 12);
    if (unit >= 0xd800 && unit <= 0xdbff && /^\\u[dD][c-fC-F][0-9a-fA-F]{2}$/.test(next)) {
      return { ok: true, length: 12, text: String.fromCharCode(unit, parseInt(next.slice(2), 16)) };
    }
    if (unit >= 0xd800 && unit <= 0xdfff)
      return { ok: false, error: `invalid escape \\u${hex} at column ${column}: a lone surrogate is not a character` };
    return { ok: true, length: 6, text: String.fromCharCode(unit) };
  }
  const simple = SIMPLE_ESCAPES[e] ?? (e === "'" || (where === 'unquoted' && UNQUOTED_LITERALS.has(e)) ? e : undefined);
  if (simple !== undefined) return { ok: true, length: 2, text: simple };
  const shown = String.fromCodePoint(line.codePointAt(i + 1) as number);
  return {
    ok: false,
    error:
      `unknown escape \\${JSON.stringify(shown).slice(1, -1)} at column ${column}: ` +
      `write \\\\ for a backslash; escapes are \\n \\t \\r \\0 \\a \\b \\f \\v \\" \\' \\\\ \\xHH \\uHHHH \\u{H…}` +
      (where === 'unquoted' ? ' and \\ followed by a blank' : ''),
  };
}

export function tokenize(line: string): TokenizeResult {
  if (line.length > MAX_LINE_CHARS) return { ok: false, error: `line is longer than ${MAX_LINE_CHARS} characters` };
  const tokens: Token[] = [];
  let current = new TokenBuilder();
  let i = 0;
  const n = line.length;
  const endToken = (): void => {
    if (current.started) tokens.push(current.finish());
    current = new TokenBuilder();
  };

  while (i < n) {
    const c = line[i] as string;
    if (isSpace(c)) {
      endToken();
      i++;
    } else if (c === '"') {
      current.started = true;
      i++;
      let closed = false;
      while (i < n) {
        const d = line[i] as string;
        if (d === '"') {
          closed = true;
          i++;
          break;
        }
        if (d !== '\\') {
          // Copy a whole code point (a surrogate pair stays together).
          const cp = line.codePointAt(i) as number;
          const ch = String.fromCodePoint(cp);
          current.addText(ch);
          i += ch.length;
          continue;
        }
        if (line[i + 1] === undefined) break; // unterminated: reported below
        const r = readEscape(line, i, 'double');
        if (!r.ok) return r;
        if (r.byte !== undefined) current.addByte(r.byte);
        else current.addText(r.text);
        i += r.length;
      }
      if (!closed)
        return {
          ok: false,
          error: 'unbalanced quote: a double quote (") is not closed; close it, or write \\" for a literal quote',
        };
    } else if (c === "'") {
      current.started = true;
      i++;
      let closed = false;
      while (i < n) {
        const d = line[i] as string;
        if (d === "'") {
          closed = true;
          i++;
          break;
        }
        if (d === '\\' && (line[i + 1] === "'" || line[i + 1] === '\\')) {
          current.addText(line[i + 1] as string);
          i += 2;
          continue;
        }
        current.addText(d);
        i++;
      }
      if (!closed)
        return {
          ok: false,
          error: "unbalanced quote: a single quote (') is not closed; close it, or write \\' for a literal quote",
        };
    } else if (c === '\\') {
      if (line[i + 1] === undefined)
        return { ok: false, error: 'the line ends with a backslash; write \\\\ for a literal backslash' };
      const r = readEscape(line, i, 'unquoted');
      if (!r.ok) return r;
      if (r.byte !== undefined) current.addByte(r.byte);
      else current.addText(r.text);
      i += r.length;
    } else {
      const cp = line.codePointAt(i) as number;
      const ch = String.fromCodePoint(cp);
      current.addText(ch);
      i += ch.length;
    }
  }
  endToken();
  return { ok: true, tokens };
}

/** Quotes `text` so that `tokenize` gives it back as one argument (for hints and output). */
export function quoteArg(text: string): string {
  if (text !== '' && /^[^\s"'\\]+$/u.test(text) && !/[\u0000-\u001f\u007f]/.test(text)) return text;
  return JSON.stringify(text);
}

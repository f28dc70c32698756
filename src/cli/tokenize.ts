/**
 * Splits a shell line into arguments, the way redis-cli and sh users expect:
 * - whitespace separates arguments; quoted parts and unquoted parts next to each other join
 *   (`a"b c"` is one argument `ab c`); `""` is an empty argument;
 * - inside double quotes: `\"` `\\` `\n` `\r` `\t` `\0` `\a` `\b` `\f` `\v`, `\xHH` (one raw byte),
 *   `\uHHHH` and `\u{H…}` (a code point); any other `\c` is `c`;
 * - inside single quotes everything is literal except `\'` (a quote) and `\\` (a backslash);
 * - outside quotes a backslash takes the next character literally (`hello\ world`).
 * Arguments are bytes (UTF-8 of the text, plus raw `\xHH` bytes), so any key or value can
 * be typed. An unbalanced quote or a trailing backslash is an error with a hint.
 */

export interface Token {
  /** The argument's bytes: what is stored when it is a key or a value. */
  readonly bytes: Uint8Array;
  /** The argument as text (invalid UTF-8 replaced), for command names and flags. */
  readonly text: string;
}

export type TokenizeResult = { readonly ok: true; readonly tokens: Token[] } | { readonly ok: false; readonly error: string };

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
        const e = line[i + 1];
        if (e === undefined) break; // unterminated: reported below
        if (e === 'x') {
          const hex = line.slice(i + 2, i + 4);
          if (!HEX2.test(hex)) return { ok: false, error: `invalid escape \\x${hex} at column ${i + 1}: \\x takes two hex digits, e.g. \\xff` };
          current.addByte(parseInt(hex, 16));
          i += 4;
        } else if (e === 'u') {
          if (line[i + 2] === '{') {
            const close = line.indexOf('}', i + 3);
            const hex = close < 0 ? '' : line.slice(i + 3, close);
            const cp = /^[0-9a-fA-F]{1,6}$/.test(hex) ? parseInt(hex, 16) : NaN;
            if (!(cp <= 0x10ffff) || (cp >= 0xd800 && cp <= 0xdfff)) {
              return { ok: false, error: `invalid escape at column ${i + 1}: \\u{…} takes a Unicode code point in hex, e.g. \\u{1F600}` };
            }
            current.addText(String.fromCodePoint(cp));
            i = close + 1;
          } else {
            const hex = line.slice(i + 2, i + 6);
            if (!HEX4.test(hex)) return { ok: false, error: `invalid escape \\u${hex} at column ${i + 1}: \\u takes four hex digits, e.g. \\u00e9` };
            // A pair of \uD83D\uDE00 escapes forms one code point.
            const unit = parseInt(hex, 16);
            const next = line.slice(i + 6, i + 12);
            if (unit >= 0xd800 && unit <= 0xdbff && /^\\u[dD][c-fC-F][0-9a-fA-F]{2}$/.test(next)) {
              current.addText(String.fromCharCode(unit, parseInt(next.slice(2), 16)));
              i += 12;
            } else if (unit >= 0xd800 && unit <= 0xdfff) {
              return { ok: false, error: `invalid escape \\u${hex} at column ${i + 1}: a lone surrogate is not a character` };
            } else {
              current.addText(String.fromCharCode(unit));
              i += 6;
            }
          }
        } else {
          current.addText(SIMPLE_ESCAPES[e] ?? e);
          i += 2;
        }
      }
      if (!closed) return { ok: false, error: 'unbalanced quote: a double quote (") is not closed; close it, or write \\" for a literal quote' };
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
      if (!closed) return { ok: false, error: "unbalanced quote: a single quote (') is not closed; close it, or write \\' for a literal quote" };
    } else if (c === '\\') {
      const e = line[i + 1];
      if (e === undefined) return { ok: false, error: 'the line ends with a backslash; write \\\\ for a literal backslash' };
      const cp = line.codePointAt(i + 1) as number;
      const ch = String.fromCodePoint(cp);
      current.addText(ch);
      i += 1 + ch.length;
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

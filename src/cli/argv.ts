/**
 * Keys and values as the OS hands them to `dstore`: checked, never silently changed.
 *
 * Node decodes argv as UTF-8 and replaces every invalid sequence with U+FFFD, so
 * `dstore put $'\xff\xfe' v` would store the key U+FFFD U+FFFD, and two different byte
 * strings would become one key. On Linux the raw bytes are in /proc/self/cmdline, so an
 * argument holding U+FFFD is refused only when its raw bytes are not valid UTF-8 (a real
 * U+FFFD typed by the user passes). Where /proc is missing, or its arguments do not line up
 * with process.argv, any U+FFFD is refused: we cannot tell, and guessing would store a
 * different key than the one meant. Binary keys go through `--key-hex`; binary values
 * through `--file` or stdin.
 */
import { closeSync, fstatSync, openSync, readFileSync, readSync } from 'node:fs';
import { UsageError } from './options.js';

const REPLACEMENT = '\uFFFD';
const strictUtf8 = new TextDecoder('utf-8', { fatal: true });
const lossyUtf8 = new TextDecoder('utf-8', { fatal: false });

/** The raw bytes of this process's arguments (Linux), or undefined where they cannot be read. */
export function rawCommandLine(path = '/proc/self/cmdline'): Buffer[] | undefined {
  let bytes: Buffer;
  try {
    bytes = readFileSync(path);
  } catch (err) {
    // No /proc (macOS, some containers): the caller falls back to refusing any U+FFFD.
    if ((err as NodeJS.ErrnoException).code === 'ENOENT' || (err as NodeJS.ErrnoException).code === 'EACCES')
      return undefined;
    throw err;
  }
  const parts: Buffer[] = [];
  let start = 0;
  for (let i = 0; i < bytes.length; i++) {
    if (bytes[i] === 0) {
      parts.push(bytes.subarray(start, i));
      start = i + 1;
    }
  }
  if (start < bytes.length) parts.push(bytes.subarray(start));
  return parts;
}

function isValidUtf8(bytes: Uint8Array): boolean {
  try {
    strictUtf8.decode(bytes);
    return true;
  } catch {
    return false; // expected for invalid input: that is what is being checked
  }
}

/**
 * The first user argument (of `args`, process.argv minus node and the script) that came
 * in as invalid UTF-8, with its raw bytes when known; undefined when every one is fine.
 * `raw` is the whole command line (rawCommandLine()); its last `args.length` entries are
 * the user's arguments.
 */
export function findInvalidUtf8Arg(
  args: readonly string[],
  raw: readonly Uint8Array[] | undefined,
): { index: number; text: string; rawHex?: string } | undefined {
  const rawArgs = raw && raw.length >= args.length ? raw.slice(raw.length - args.length) : undefined;
  // The raw arguments must decode to exactly what Node gave us, else they are not ours.
  // biome-ignore lint/complexity/useOptionalChain: the explicit check narrows rawArgs for the lines below.
  const lined = rawArgs !== undefined && rawArgs.every((r, i) => lossyUtf8.decode(r) === args[i]);
  for (const [index, text] of args.entries()) {
    if (!text.includes(REPLACEMENT)) continue;
    if (!lined) return { index, text };
    const bytes = rawArgs[index] as Uint8Array;
    if (!isValidUtf8(bytes)) return { index, text, rawHex: Buffer.from(bytes).toString('hex') };
  }
  return undefined;
}

/** Throws a UsageError (exit code 2) when an argument came in as invalid UTF-8. */
export function checkArgsUtf8(args: readonly string[], raw: readonly Uint8Array[] | undefined): void {
  const bad = findInvalidUtf8Arg(args, raw);
  if (!bad) return;
  const what =
    bad.rawHex === undefined
      ? `contains U+FFFD, the character invalid UTF-8 is turned into (this system does not show the ` +
        `raw bytes, so it cannot tell)`
      : `is not valid UTF-8 (bytes ${bad.rawHex})`;
  throw new UsageError(
    `argument ${bad.index + 1} ${what}; it would be stored as U+FFFD, not as the bytes given. ` +
      `Give a binary key as hex with --key-hex${bad.rawHex === undefined ? '' : ` (--key-hex ${bad.rawHex})`}, a ` +
      `binary value with --file PATH or on stdin (-), ` +
      `or type it in the shell (dstore client) with \\xHH escapes`,
  );
}

/** `--key-hex`: the key's bytes from an even number of hex digits. */
export function parseHexKey(hex: string): Uint8Array {
  if (hex.length === 0 || hex.length % 2 !== 0 || !/^[0-9a-fA-F]+$/.test(hex)) {
    throw new UsageError(
      `--key-hex: expected the key as an even number of hex digits (e.g. fffe for the bytes ff ` +
        `fe), got ${JSON.stringify(hex)}`,
    );
  }
  return new Uint8Array(Buffer.from(hex, 'hex'));
}

/** A key argument as bytes: UTF-8 of the text, or hex with --key-hex. */
export function keyBytes(key: string, keyHex: boolean | undefined): Uint8Array {
  return keyHex ? parseHexKey(key) : new TextEncoder().encode(key);
}

/**
 * Largest value `put` reads from a file or stdin, in bytes: the most `--max-value-bytes`
 * allows (64 MiB). The cluster's own limit is checked by the cluster (VALUE_TOO_LARGE).
 */
export const MAX_INPUT_VALUE_BYTES = 64 * 1024 * 1024;

const CHUNK_BYTES = 64 * 1024;

/** Reads all of the file `fd`, refusing more than `maxBytes`. */
function readFileBounded(fd: number, what: string, maxBytes: number): Uint8Array {
  const size = fstatSync(fd).size;
  if (size > maxBytes)
    throw new UsageError(`${what} holds ${size} bytes, over ${maxBytes}, the largest value there can be`);
  const chunks: Buffer[] = [];
  let total = 0;
  // Bounded: a file that grows while read stops at maxBytes + 1 bytes.
  for (let reads = 0; reads <= maxBytes / CHUNK_BYTES + 2; reads++) {
    const buf = Buffer.allocUnsafe(CHUNK_BYTES);
    const n = readSync(fd, buf, 0, CHUNK_BYTES, null);
    if (n === 0) return new Uint8Array(Buffer.concat(chunks, total));
    total += n;
    if (total > maxBytes) break;
    chunks.push(buf.subarray(0, n));
  }
  throw new UsageError(`${what} holds more than ${maxBytes} bytes, the largest value there can be`);
}

/** Reads a stream (stdin) to its end, refusing more than `maxBytes`. */
async function readStreamBounded(
  stream: AsyncIterable<Buffer | string>,
  what: string,
  maxBytes: number,
): Promise<Uint8Array> {
  const chunks: Buffer[] = [];
  let total = 0;
  for await (const chunk of stream) {
    const b = typeof chunk === 'string' ? Buffer.from(chunk) : chunk;
    total += b.length;
    if (total > maxBytes)
      throw new UsageError(`${what} holds more than ${maxBytes} bytes, the largest value there can be`);
    chunks.push(b);
  }
  return new Uint8Array(Buffer.concat(chunks, total));
}

export interface PutInput {
  /** Whether stdin is a terminal (then it is not read: a value must be given). */
  readonly isTTY: boolean;
  readonly stream: AsyncIterable<Buffer | string>;
}

/** The value of `dstore put`: the argument, stdin (`-` or no argument) or `--file PATH`. */
export async function readPutValue(
  value: string | undefined,
  file: string | undefined,
  stdin: () => PutInput,
  maxBytes = MAX_INPUT_VALUE_BYTES,
): Promise<Uint8Array> {
  if (file !== undefined) {
    if (value !== undefined) throw new UsageError('give the value either as an argument or with --file, not both');
    let fd: number;
    try {
      fd = openSync(file, 'r');
    } catch (err) {
      throw new UsageError(
        `--file ${file}: ${(err as NodeJS.ErrnoException).code === 'ENOENT' ? 'no such file' : (err as Error).message}`,
      );
    }
    try {
      if (fstatSync(fd).isDirectory()) throw new UsageError(`--file ${file}: is a directory`);
      return readFileBounded(fd, `--file ${file}`, maxBytes);
    } finally {
      closeSync(fd);
    }
  }
  if (value === undefined || value === '-') {
    const input = stdin();
    if (input.isTTY) {
      throw new UsageError(
        'no value: give it as an argument, with --file PATH, or pipe it in (dstore put KEY ' +
          '- < file); stdin is a terminal',
      );
    }
    return readStreamBounded(input.stream, 'stdin', maxBytes);
  }
  return new TextEncoder().encode(value);
}

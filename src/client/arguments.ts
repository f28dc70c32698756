/**
 * Checks of the library's arguments (docs/errors.md): a JavaScript caller can pass anything,
 * and a wrong type must end in InvalidArgumentError naming the method and the argument, not
 * in a TypeError from deep inside or a MALFORMED_MESSAGE from the server.
 */
import { InvalidArgumentError } from '../core/errors.js';
import { parseSeeds } from '../rpc/seeds.js';
import { MAX_TTL_MS } from '../core/limits.js';

const encoder = new TextEncoder();

/** A short description of a value's type, for messages ("a number (5)", "null", …). */
export function describeValue(x: unknown): string {
  if (x === undefined) return 'undefined';
  if (x === null) return 'null';
  switch (typeof x) {
    case 'number':
    case 'bigint':
    case 'boolean':
      return `a ${typeof x} (${String(x)})`;
    case 'symbol':
      return 'a symbol';
    case 'function':
      return 'a function';
    case 'string':
      return 'a string';
    default:
      if (Array.isArray(x)) return 'an array';
      if (x instanceof ArrayBuffer) return 'an ArrayBuffer (wrap it: new Uint8Array(buffer))';
      if (ArrayBuffer.isView(x)) return `a ${x.constructor.name} (only Uint8Array and Buffer are bytes here)`;
      return `an object${x.constructor && x.constructor !== Object ? ` (${x.constructor.name})` : ''}`;
  }
}

/** Index of the first lone surrogate of `s`, or -1 when `s` is well-formed UTF-16. */
function loneSurrogateAt(s: string): number {
  for (let i = 0; i < s.length; i++) {
    const c = s.charCodeAt(i);
    if (c >= 0xd800 && c <= 0xdbff) {
      const next = i + 1 < s.length ? s.charCodeAt(i + 1) : 0;
      if (next >= 0xdc00 && next <= 0xdfff) {
        i++;
        continue;
      }
      return i;
    }
    if (c >= 0xdc00 && c <= 0xdfff) return i;
  }
  return -1;
}

/**
 * The bytes of a key or value argument: a string (encoded as UTF-8) or a Uint8Array (as is).
 * A string with a lone surrogate has no UTF-8 form (TextEncoder would silently turn it into
 * U+FFFD, making different strings one key), so it is refused too.
 */
export function bytesArgument(method: string, name: string, x: unknown): Uint8Array {
  if (x instanceof Uint8Array) return x;
  if (typeof x === 'string') {
    const at = loneSurrogateAt(x);
    if (at >= 0)
      throw new InvalidArgumentError(
        `${method}: ${name} is a string with a lone surrogate at index ${at}, which has no UTF-8 form; pass a ` +
          `Uint8Array for binary data`,
      );
    return encoder.encode(x);
  }
  throw new InvalidArgumentError(`${method}: ${name} must be a string or a Uint8Array, got ${describeValue(x)}`);
}

/**
 * §16: the `ifVersion` of a conditional write (a version `get` returned, or 0: only if the
 * key is absent) from `options` of `method`, checked; undefined when there is none.
 */
export function writeOptions(method: string, options: unknown): { ifVersion?: number; ttlMs?: number } {
  if (options === undefined) return {};
  if (typeof options !== 'object' || options === null)
    throw new InvalidArgumentError(`${method}: options must be an object, got ${describeValue(options)}`);
  const { ifVersion, ttlMs } = options as { ifVersion?: unknown; ttlMs?: unknown };
  const out: { ifVersion?: number; ttlMs?: number } = {};
  if (ifVersion !== undefined) {
    if (typeof ifVersion !== 'number' || !Number.isSafeInteger(ifVersion) || ifVersion < 0)
      throw new InvalidArgumentError(
        `${method}: options.ifVersion must be a version (an integer >= 0; 0: only if absent), ` +
          `got ${describeValue(ifVersion)}`,
      );
    out.ifVersion = ifVersion;
  }
  if (ttlMs !== undefined) {
    if (method !== 'put') throw new InvalidArgumentError(`${method}: options.ttlMs is for put only`);
    if (typeof ttlMs !== 'number' || !Number.isSafeInteger(ttlMs) || ttlMs < 1 || ttlMs > MAX_TTL_MS)
      throw new InvalidArgumentError(
        `${method}: options.ttlMs must be an integer number of ms from 1 to ${MAX_TTL_MS} (100 years), ` +
          `got ${describeValue(ttlMs)}`,
      );
    out.ttlMs = ttlMs;
  }
  return out;
}

function positiveMs(name: string, x: unknown): void {
  if (x === undefined) return;
  if (typeof x !== 'number' || !Number.isFinite(x) || x <= 0)
    throw new InvalidArgumentError(`connect: options.${name} must be a number of ms > 0, got ${describeValue(x)}`);
}

/**
 * `connect(nameserver, options)`: the addresses — one "HOST:PORT", a comma-separated list or an
 * array of them, at most MAX_NAMESERVER_SEEDS — and every option present.
 */
export function checkConnectArguments(nameserver: unknown, options: unknown): void {
  if (typeof nameserver !== 'string' && !Array.isArray(nameserver))
    throw new InvalidArgumentError(
      `connect: nameserver must be a "HOST:PORT" string, a comma-separated list of them or an array of them, ` +
        `got ${describeValue(nameserver)}`,
    );
  if (Array.isArray(nameserver)) {
    const bad = nameserver.findIndex((a) => typeof a !== 'string');
    if (bad >= 0)
      throw new InvalidArgumentError(
        `connect: nameserver[${bad}] must be a "HOST:PORT" string, got ${describeValue(nameserver[bad])}`,
      );
  }
  parseSeeds(nameserver, 'connect: nameserver');
  if (options === undefined) return;
  if (typeof options !== 'object' || options === null || Array.isArray(options))
    throw new InvalidArgumentError(`connect: options must be an object, got ${describeValue(options)}`);
  const o = options as Record<string, unknown>;
  positiveMs('timeoutMs', o['timeoutMs']);
  positiveMs('attemptTimeoutMs', o['attemptTimeoutMs']);
  if (o['clusterToken'] !== undefined && typeof o['clusterToken'] !== 'string')
    throw new InvalidArgumentError(
      `connect: options.clusterToken must be a string, got ${describeValue(o['clusterToken'])}`,
    );
  readModeArgument('connect: options.read', o['read']);
  if (o['lazy'] !== undefined && typeof o['lazy'] !== 'boolean')
    throw new InvalidArgumentError(`connect: options.lazy must be a boolean, got ${describeValue(o['lazy'])}`);
  const logger = o['logger'];
  if (
    logger !== undefined &&
    (typeof logger !== 'object' || logger === null || typeof (logger as { debug?: unknown }).debug !== 'function')
  ) {
    throw new InvalidArgumentError(
      `connect: options.logger must have a debug(obj, msg) method, got ${describeValue(logger)}`,
    );
  }
}

/** `dump(options)`: the number of keys per server to list. */
export function checkDumpOptions(options: unknown): number {
  if (options === undefined) return 100;
  if (typeof options !== 'object' || options === null || Array.isArray(options))
    throw new InvalidArgumentError(`dump: options must be an object, got ${describeValue(options)}`);
  const limit = (options as { limit?: unknown }).limit;
  if (limit === undefined) return 100;
  if (typeof limit !== 'number' || !Number.isInteger(limit) || limit < 0 || limit > 100_000_000) {
    throw new InvalidArgumentError(
      `dump: options.limit must be an integer from 0 to 100000000, got ${describeValue(limit)}`,
    );
  }
  return limit;
}

/** Issue 15: a read mode option (`read`), absent or linearizable / fast. */
export function readModeArgument(what: string, v: unknown): 'linearizable' | 'fast' | undefined {
  if (v === undefined || v === 'linearizable' || v === 'fast') return v;
  throw new InvalidArgumentError(`${what} must be 'linearizable' or 'fast', got ${describeValue(v)}`);
}

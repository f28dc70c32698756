/**
 * The key range of a backend `scan` (issue 14): keys after `afterKey` (exclusive) that start
 * with `prefix`, in byte order. Every backend seeks to `scanStart` and stops at `prefixEnd`
 * (or at the first key without the prefix), so a scan never reads the keys before its start
 * nor the keys past its prefix.
 */
import type { ScanOptions } from './backend.js';
import { checkPageLimit } from './preconditions.js';
import { assert } from '../core/types.js';

/** Byte-order comparison of two keys (negative, 0, positive). */
export function compareBytes(a: Uint8Array, b: Uint8Array): number {
  return Buffer.compare(a, b);
}

export function hasPrefix(key: Uint8Array, prefix: Uint8Array | undefined): boolean {
  if (prefix === undefined || prefix.length === 0) return true;
  if (key.length < prefix.length) return false;
  for (let i = 0; i < prefix.length; i++) if (key[i] !== prefix[i]) return false;
  return true;
}

/**
 * Where a scan starts: after `afterKey` (exclusive) or at `prefix` (inclusive), whichever is
 * later; undefined: the partition's first key.
 */
export function scanStart(
  options: Pick<ScanOptions, 'afterKey' | 'prefix'>,
): { readonly key: Uint8Array; readonly inclusive: boolean } | undefined {
  const { afterKey, prefix } = options;
  const hasPre = prefix !== undefined && prefix.length > 0;
  if (afterKey !== undefined && (!hasPre || compareBytes(afterKey, prefix) >= 0))
    return { key: afterKey, inclusive: false };
  return hasPre ? { key: prefix, inclusive: true } : undefined;
}

/**
 * The first key past every key that starts with `prefix` (exclusive end of the range):
 * the prefix with its trailing 0xff bytes dropped and its last byte incremented; undefined
 * when there is none (no prefix, or a prefix of 0xff bytes only: the range runs to the end).
 */
export function prefixEnd(prefix: Uint8Array | undefined): Uint8Array | undefined {
  if (prefix === undefined) return undefined;
  let n = prefix.length;
  while (n > 0 && prefix[n - 1] === 0xff) n--;
  if (n === 0) return undefined;
  const end = Uint8Array.from(prefix.subarray(0, n));
  end[n - 1]! += 1;
  return end;
}

/** The precondition checks of a scan's options (a caller's bug, not bad input: asserts). */
export function checkScanOptions(options: ScanOptions): void {
  checkPageLimit('scan', options.limit);
  if (options.maxBytes !== undefined)
    assert(
      Number.isSafeInteger(options.maxBytes) && options.maxBytes >= 1,
      `scan: maxBytes must be an integer >= 1, got ${options.maxBytes}`,
    );
}

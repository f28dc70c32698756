/**
 * The client's scan across partitions (issue 14): keys in global byte order, merged from the
 * per-partition pages each partition's primary returns in byte order (a k-way merge). A
 * partition's next page is fetched only when its buffer runs out, so what a scan holds is at
 * most one page per partition, never a whole partition.
 *
 * The cursor is the last key returned: the next call starts every partition after it
 * (exclusive), so a cursor is valid across calls, clients and cluster changes. Each page is
 * read at its own moment; the result is not a snapshot of the cluster (a key written during
 * a scan may or may not be listed).
 */
import { assert } from '../core/types.js';

/**
 * One partition's page: keys in byte order after `after`, and `next`, where the partition's
 * next page starts (absent: the partition is done). `next` may be past the last key listed
 * (the server skipped expired keys), and a page may be empty yet have a `next`.
 */
export interface PartitionPage {
  readonly keys: readonly Uint8Array[];
  /** With values: each key's value and version, in the order of `keys`. */
  readonly values?: ReadonlyArray<{ readonly value: Uint8Array; readonly version: number }>;
  readonly next?: Uint8Array;
}

export type FetchPage = (partition: number, after: Uint8Array | undefined, limit: number) => Promise<PartitionPage>;

export interface ScanEntry {
  readonly key: Uint8Array;
  /** With `values: true`: the value and its version. */
  readonly value?: Uint8Array;
  readonly version?: number;
}

export interface ScanResult {
  /** At most `limit` entries, in byte order of their keys. */
  readonly entries: ScanEntry[];
  /** The cursor to resume from (the last key returned); absent when the scan is complete. */
  readonly next?: Uint8Array;
}

interface Buffered {
  readonly partition: number;
  page: PartitionPage;
  pos: number;
}

/** Keys asked of one partition per page: about its share of `limit`, at least 16, at most `maxPageKeys`. */
export function partitionPageKeys(limit: number, partitions: number, maxPageKeys: number): number {
  const share = Math.ceil((2 * limit) / Math.max(1, partitions)) + 8;
  return Math.max(1, Math.min(maxPageKeys, limit, Math.max(16, share)));
}

/**
 * Up to `limit` entries of every partition after `startAfter`, in byte order. `fetch` reads a
 * partition's page (the first pages of all partitions at once, at most `parallel` at a time).
 */
export async function mergeScan(
  partitions: number,
  fetch: FetchPage,
  options: {
    readonly startAfter?: Uint8Array;
    readonly limit: number;
    readonly maxPageKeys: number;
    parallel?: number;
  },
): Promise<ScanResult> {
  const { startAfter, limit, maxPageKeys } = options;
  assert(Number.isSafeInteger(limit) && limit >= 1, 'scan limit >= 1');
  const pageKeys = partitionPageKeys(limit, partitions, maxPageKeys);
  const live: Buffered[] = [];
  const parallel = Math.max(1, options.parallel ?? 16);
  for (let from = 0; from < partitions; from += parallel) {
    const ps = Array.from({ length: Math.min(parallel, partitions - from) }, (_, i) => from + i);
    const pages = await Promise.all(ps.map((p) => fetch(p, startAfter, pageKeys)));
    pages.forEach((page, i) => {
      if (page.keys.length > 0 || page.next !== undefined) live.push({ partition: ps[i]!, page, pos: 0 });
    });
  }
  const entries: ScanEntry[] = [];
  // Bounded: each round returns an entry, drops a partition, or fetches a page that is not empty.
  for (;;) {
    // Refill every buffer that ran out (a partition whose next key is unknown could hold the smallest).
    for (let i = live.length - 1; i >= 0; i--) {
      const b = live[i]!;
      // Bounded: every page's cursor is past the previous one (checked), and keys are finite.
      while (b.pos >= b.page.keys.length) {
        const after = b.page.next;
        if (after === undefined) {
          live.splice(i, 1);
          break;
        }
        const page = await fetch(b.partition, after, pageKeys);
        const first = page.keys[0] ?? page.next;
        if (first !== undefined && Buffer.compare(first, after) <= 0)
          throw new Error(`partition ${b.partition} returned a scan page that does not go past its cursor`);
        b.page = page;
        b.pos = 0;
      }
    }
    if (live.length === 0) return { entries };
    if (entries.length >= limit) return { entries, next: entries[entries.length - 1]!.key };
    let min = live[0]!;
    for (const b of live) if (Buffer.compare(b.page.keys[b.pos]!, min.page.keys[min.pos]!) < 0) min = b;
    const key = min.page.keys[min.pos]!;
    const v = min.page.values?.[min.pos];
    entries.push(v === undefined ? { key } : { key, value: v.value, version: v.version });
    min.pos++;
  }
}

/**
 * One page of `dump` (the keys a storage server holds, for `dstore dump`): a cursor and a
 * bound by count and by bytes, so no reply ever holds a whole store (issue 9: 4,800 keys of
 * 1 KB made a 4.8 MB reply, over the frame limit, and every server looked unreachable).
 *
 * Keys come partition by partition (in the order of `held`), each partition in byte order,
 * read with the backend's `scan`. The cursor `{ p, key }` means "go on in partition p after
 * key" (no key: from p's first key). A page holds at least one key when any is left, so the
 * caller always makes progress; `next` is absent once every held partition is done.
 */
import type { PartitionId } from '../core/types.js';
import type { Backend } from '../storage/backend.js';
import { assert } from '../core/types.js';

export interface DumpCursor {
  readonly p: number;
  readonly key?: Uint8Array;
}

export interface DumpPage {
  readonly keys: Uint8Array[];
  readonly next?: DumpCursor;
}

/** Bytes a key costs in a reply beyond its own length (msgpack header, array slot). */
const KEY_OVERHEAD_BYTES = 8;

export async function dumpPage(
  backend: Pick<Backend, 'scan'>,
  held: readonly PartitionId[],
  options: {
    readonly after?: DumpCursor;
    readonly maxKeys: number;
    readonly maxBytes: number;
    readonly scanPageKeys: number;
  },
): Promise<DumpPage> {
  const { after, maxKeys, maxBytes, scanPageKeys } = options;
  assert(maxKeys >= 1, 'dump page maxKeys >= 1');
  assert(maxBytes >= 1, 'dump page maxBytes >= 1');
  assert(scanPageKeys >= 1, 'dump page scanPageKeys >= 1');
  const keys: Uint8Array[] = [];
  let bytes = 0;
  for (const p of held) {
    if (after !== undefined && p < after.p) continue;
    // The last key of p this page has passed: where the next page goes on in p.
    let afterKey = after !== undefined && p === after.p ? after.key : undefined;
    const here = (): DumpCursor => (afterKey === undefined ? { p } : { p, key: afterKey });
    // Bounded: each round takes at least one key, or returns, or ends the partition.
    for (let round = 0; round <= maxKeys; round++) {
      if (keys.length >= maxKeys) return { keys, next: here() };
      const page = await backend.scan(p, {
        ...(afterKey === undefined ? {} : { afterKey }),
        limit: Math.min(scanPageKeys, maxKeys - keys.length),
      });
      for (const key of page.keys) {
        const cost = key.length + KEY_OVERHEAD_BYTES;
        // Full by bytes: stop before this key (a page holds at least one key).
        if (keys.length > 0 && bytes + cost > maxBytes) return { keys, next: here() };
        keys.push(key);
        bytes += cost;
        afterKey = key;
      }
      if (!page.nextAfterKey) break; // partition p is done
    }
  }
  return { keys };
}

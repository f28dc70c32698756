/**
 * mergeScan (src/client/scan-merge.ts), the client side of `scan` (issue 14): keys of every
 * partition in global byte order, at most `limit` a call; resuming with `next` lists every key
 * once and then ends (`next` absent); `startAfter` is exclusive; values travel with their keys;
 * a partition's next page is fetched only when its buffer ran out (what a scan holds is at most
 * a page per partition); empty partitions and a page that claims more but is empty.
 */
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { type FetchPage, mergeScan, partitionPageKeys } from '../../src/client/scan-merge.js';

const hex = (b: Uint8Array) => Buffer.from(b).toString('hex');

/** Partitions of sorted keys; the fetch pages through them and records every call. */
function fakeCluster(partitions: number, keys: Uint8Array[]) {
  const parts: Uint8Array[][] = Array.from({ length: partitions }, () => []);
  for (const k of keys) parts[(k[0]! * 7 + k.length) % partitions]!.push(k);
  for (const p of parts) p.sort(Buffer.compare);
  const calls: Array<{ p: number; limit: number; returned: number }> = [];
  const fetch: FetchPage = async (p, after, limit) => {
    const all = parts[p]!;
    const from = after === undefined ? 0 : all.findIndex((k) => Buffer.compare(k, after) > 0);
    const rest = from < 0 ? [] : all.slice(from);
    const page = rest.slice(0, limit);
    calls.push({ p, limit, returned: page.length });
    return {
      keys: page,
      values: page.map((k) => ({ value: Buffer.from(`v-${hex(k)}`), version: k.length })),
      ...(rest.length > limit ? { next: page[page.length - 1]! } : {}),
    };
  };
  return { fetch, calls };
}

function randomKeys(n: number, seed: number): Uint8Array[] {
  let x = seed;
  const rnd = () => {
    x = (Math.imul(x, 1664525) + 1013904223) >>> 0;
    return x >>> 8;
  };
  const seen = new Set<string>();
  const out: Uint8Array[] = [];
  while (out.length < n) {
    const k = Uint8Array.from({ length: 1 + (rnd() % 6) }, () => rnd() % 256);
    if (seen.has(hex(k))) continue;
    seen.add(hex(k));
    out.push(k);
  }
  return out;
}

describe('mergeScan', () => {
  test('pages resumed with the cursor list every key once, in byte order, then end', async () => {
    const keys = randomKeys(2000, 7);
    const sorted = [...keys].sort(Buffer.compare).map(hex);
    for (const partitions of [1, 3, 16]) {
      for (const limit of [1, 7, 100, 2000, 5000]) {
        const { fetch } = fakeCluster(partitions, keys);
        const got: string[] = [];
        let startAfter: Uint8Array | undefined;
        for (let call = 0; call <= 2001; call++) {
          const r = await mergeScan(partitions, fetch, {
            ...(startAfter === undefined ? {} : { startAfter }),
            limit,
            maxPageKeys: 50,
          });
          assert.ok(r.entries.length <= limit, 'at most limit entries');
          got.push(...r.entries.map((e) => hex(e.key)));
          if (r.next === undefined) break;
          assert.equal(hex(r.next), hex(r.entries[r.entries.length - 1]!.key), 'next is the last key');
          startAfter = r.next;
        }
        assert.deepStrictEqual(got, sorted, `partitions ${partitions} limit ${limit}`);
      }
    }
  });

  test('a call that returns the last key says the scan is complete; startAfter is exclusive', async () => {
    const keys = ['a', 'b', 'c', 'd'].map((s) => Buffer.from(s));
    const { fetch } = fakeCluster(3, keys);
    const all = await mergeScan(3, fetch, { limit: 4, maxPageKeys: 10 });
    assert.deepStrictEqual(
      all.entries.map((e) => e.key.toString()),
      ['a', 'b', 'c', 'd'],
    );
    assert.equal(all.next, undefined);
    const after = await mergeScan(3, fetch, { startAfter: Buffer.from('b'), limit: 1, maxPageKeys: 10 });
    assert.deepStrictEqual(
      after.entries.map((e) => e.key.toString()),
      ['c'],
    );
    assert.equal(after.next?.toString(), 'c');
    const none = await mergeScan(3, fetch, { startAfter: Buffer.from('d'), limit: 10, maxPageKeys: 10 });
    assert.deepStrictEqual(none, { entries: [] });
  });

  test('values stay with their keys', async () => {
    const keys = randomKeys(300, 3);
    const { fetch } = fakeCluster(5, keys);
    const r = await mergeScan(5, fetch, { limit: 300, maxPageKeys: 20 });
    for (const e of r.entries) {
      assert.equal(Buffer.from(e.value!).toString(), `v-${hex(e.key)}`);
      assert.equal(e.version, e.key.length);
    }
  });

  test('a partition is fetched again only when its buffer ran out: memory bounded by pages', async () => {
    const keys = randomKeys(5000, 11);
    const { fetch, calls } = fakeCluster(8, keys);
    const r = await mergeScan(8, fetch, { limit: 1000, maxPageKeys: 100 });
    assert.equal(r.entries.length, 1000);
    const pageKeys = partitionPageKeys(1000, 8, 100);
    assert.ok(calls.every((c) => c.limit <= pageKeys && pageKeys <= 100));
    const fetched = calls.reduce((n, c) => n + c.returned, 0);
    // Every key fetched is returned, except at most one page's worth per partition still buffered.
    assert.ok(fetched <= 1000 + 8 * pageKeys, `fetched ${fetched} keys for 1000`);
    // A partition's pages come in order: a new page only once the previous one is used up.
    const perPartition = new Map<number, number>();
    for (const c of calls) perPartition.set(c.p, (perPartition.get(c.p) ?? 0) + 1);
    assert.equal(perPartition.size, 8);
  });

  test('empty pages with a cursor (expired keys skipped) are followed; a cursor that does not advance is an error', async () => {
    const keys = ['a', 'b', 'c', 'd', 'e'].map((k) => Buffer.from(k));
    // Partition 0 lists only 'e', after two empty pages whose cursors pass 'b' and 'd'.
    const fetch: FetchPage = async (p, after) => {
      if (p === 1) return { keys: [keys[0]!, keys[2]!] };
      if (after === undefined) return { keys: [], next: keys[1]! };
      if (Buffer.compare(after, keys[1]!) === 0) return { keys: [], next: keys[3]! };
      return { keys: [keys[4]!] };
    };
    const r = await mergeScan(2, fetch, { limit: 10, maxPageKeys: 10 });
    assert.deepStrictEqual(
      r.entries.map((e) => e.key.toString()),
      ['a', 'c', 'e'],
    );
    assert.equal(r.next, undefined);
    const stuck: FetchPage = async () => ({ keys: [], next: Buffer.from('x') });
    await assert.rejects(mergeScan(2, stuck, { limit: 10, maxPageKeys: 10 }), /does not go past its cursor/);
  });

  test('partitionPageKeys: about twice a partition share, within [1, maxPageKeys] and never over limit', () => {
    assert.equal(partitionPageKeys(1, 16, 1000), 1);
    assert.equal(partitionPageKeys(1000, 16, 1000), 133);
    assert.equal(partitionPageKeys(100_000, 1, 1000), 1000);
    assert.equal(partitionPageKeys(20, 64, 1000), 16);
  });
});

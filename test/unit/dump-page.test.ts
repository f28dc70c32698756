/**
 * dumpPage (src/storageserver/dump.ts), the server side of a paged `dump`: paging with any
 * bound by count and bytes yields every held key exactly once, partition by partition and in
 * byte order, each page within its bounds (one key at least, so paging always progresses),
 * across partition boundaries, scan pages, empty partitions and keys bigger than the byte
 * bound; partitions not held are skipped. A fake backend scans sorted in-memory keys.
 */
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import type { PartitionId } from '../../src/core/types.js';
import { type DumpCursor, dumpPage } from '../../src/storageserver/dump.js';
import type { ScanPage } from '../../src/storage/backend.js';

function fakeBackend(data: Map<number, Uint8Array[]>) {
  const scans: number[] = [];
  return {
    scans,
    async scan(partition: PartitionId, options: { afterKey?: Uint8Array; limit: number }): Promise<ScanPage> {
      assert.ok(options.limit >= 1, 'scan limit >= 1');
      scans.push(options.limit);
      const all = data.get(partition) ?? [];
      const from =
        options.afterKey === undefined
          ? 0
          : all.findIndex((k) => Buffer.compare(k, options.afterKey as Uint8Array) > 0);
      const rest = from < 0 ? [] : all.slice(from);
      const keys = rest.slice(0, options.limit);
      return rest.length > options.limit ? { keys, nextAfterKey: keys[keys.length - 1] as Uint8Array } : { keys };
    },
  };
}

const key = (p: number, i: number, length: number): Uint8Array =>
  Buffer.from(`p${p}-${String(i).padStart(5, '0')}`.padEnd(length, 'x'));

function store(counts: readonly number[], length: number): Map<number, Uint8Array[]> {
  return new Map(counts.map((n, p) => [p, Array.from({ length: n }, (_, i) => key(p, i, length))]));
}

async function pageAll(
  data: Map<number, Uint8Array[]>,
  held: number[],
  maxKeys: number,
  maxBytes: number,
  scanPageKeys: number,
): Promise<{ keys: string[]; pages: Uint8Array[][] }> {
  const backend = fakeBackend(data);
  const keys: string[] = [];
  const pages: Uint8Array[][] = [];
  let after: DumpCursor | undefined;
  for (let i = 0; i < 100_000; i++) {
    const page = await dumpPage(backend, held as PartitionId[], {
      ...(after ? { after } : {}),
      maxKeys,
      maxBytes,
      scanPageKeys,
    });
    pages.push(page.keys);
    keys.push(...page.keys.map((k) => Buffer.from(k).toString()));
    if (!page.next) return { keys, pages };
    assert.ok(page.keys.length >= 1, 'a page with a next cursor holds a key');
    after = page.next;
  }
  throw new Error('paging did not end');
}

describe('dumpPage', () => {
  const counts = [7, 0, 25, 1, 0, 13];
  const expected = (data: Map<number, Uint8Array[]>, held: number[]): string[] =>
    held.flatMap((p) => (data.get(p) ?? []).map((k) => Buffer.from(k).toString()));

  for (const [maxKeys, maxBytes, scanPageKeys] of [
    [1, 1_000_000, 1000],
    [3, 1_000_000, 2],
    [10, 1_000_000, 4],
    [1000, 1_000_000, 1000],
    [1000, 250, 5],
    [1000, 100, 1000],
    [7, 7, 3],
  ] as const) {
    test(
      `every key once, in order, within bounds: maxKeys ${maxKeys}, maxBytes ${maxBytes}, ` +
        `scan pages of ${scanPageKeys}`,
      async () => {
        const data = store(counts, 40);
        const held = [0, 1, 2, 3, 4, 5];
        const { keys, pages } = await pageAll(data, held, maxKeys, maxBytes, scanPageKeys);
        assert.deepEqual(keys, expected(data, held));
        for (const page of pages) {
          assert.ok(page.length <= maxKeys, `page of ${page.length} keys, over ${maxKeys}`);
          const bytes = page.reduce((sum, k) => sum + k.length + 8, 0);
          assert.ok(page.length === 1 || bytes <= maxBytes, `page of ${bytes} bytes, over ${maxBytes}`);
        }
      },
    );
  }

  test('5,000 keys of 1 KB page within 1 MiB: no page near a 4 MiB frame', async () => {
    const data = store([1250, 1250, 1250, 1250], 1000);
    const { keys, pages } = await pageAll(data, [0, 1, 2, 3], 1000, 1024 * 1024, 1000);
    assert.equal(keys.length, 5000);
    assert.equal(new Set(keys).size, 5000);
    for (const page of pages) assert.ok(page.reduce((s, k) => s + k.length, 0) <= 1024 * 1024);
  });

  test('partitions not held are skipped', async () => {
    const data = store(counts, 10);
    const { keys } = await pageAll(data, [2, 5], 4, 1_000_000, 3);
    assert.deepEqual(keys, expected(data, [2, 5]));
  });

  test('nothing held, or nothing stored: one empty page without a cursor', async () => {
    assert.deepEqual(await dumpPage(fakeBackend(new Map()), [], { maxKeys: 10, maxBytes: 100, scanPageKeys: 10 }), {
      keys: [],
    });
    assert.deepEqual(
      await dumpPage(fakeBackend(store([0, 0], 5)), [0, 1] as PartitionId[], {
        maxKeys: 10,
        maxBytes: 100,
        scanPageKeys: 10,
      }),
      { keys: [] },
    );
  });
});

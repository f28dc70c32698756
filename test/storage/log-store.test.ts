/**
 * The log store (src/storage/log-store.ts) on a real directory: every op's effect on each
 * partition's log (metadata, base, last, the entries held) is the same after a reopen as
 * before it; entries read back equal what was written; an append that does not follow is
 * refused before anything is written; compaction drops old segments and keeps metadata.
 */
import assert from 'node:assert/strict';
import { mkdtemp, readdir, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, test } from 'node:test';
import type { PartitionMeta } from '../../src/core/replica/ops.js';
import { InvariantViolation, type LogEntry, epoch, nodeId, partitionId, seq } from '../../src/core/types.js';
import { LogStore } from '../../src/storage/log-store.js';

let dir: string;
beforeEach(async () => {
  dir = await mkdtemp(join(tmpdir(), 'dstore-logstore-'));
});
afterEach(async () => {
  await rm(dir, { recursive: true, force: true });
});

const P0 = partitionId(0);
const P1 = partitionId(1);

function entries(from: number, count: number, ep = 1): LogEntry[] {
  return Array.from({ length: count }, (_, i) => ({
    epoch: epoch(ep),
    seq: seq(from + i),
    op: { kind: 'put' as const, key: Buffer.from(`k${from + i}`), value: Buffer.alloc(30, from + i) },
    tag: { clientId: 'c1', requestSeq: from + i },
  }));
}

const meta = (ep: number): PartitionMeta => ({
  epoch: epoch(ep),
  config: { partition: P0, epoch: epoch(ep), primary: nodeId('s1'), secondaries: [nodeId('s2')], learners: [] },
});

/** Each partition's state without the record numbers (those are the store's business). */
function shape(store: LogStore): unknown {
  return [...store.partitions()].map(([p, s]) => ({
    p,
    meta: s.meta,
    base: s.base,
    last: s.last,
    epochs: s.epochs,
  }));
}

async function reopened(store: LogStore): Promise<LogStore> {
  await store.close();
  return (await LogStore.open(dir)).store;
}

describe('log store', () => {
  test('appends, metadata and truncations read back the same after a reopen', async () => {
    let { store } = await LogStore.open(dir);
    await store.write([
      { kind: 'setMeta', partition: P0, meta: meta(1) },
      { kind: 'append', partition: P0, entries: entries(1, 5) },
      { kind: 'append', partition: P1, entries: entries(1, 3) },
    ]);
    await store.write([
      { kind: 'truncateFrom', partition: P0, fromSeq: 4 }, // S1: 4 and 5 gone
      { kind: 'append', partition: P0, entries: entries(4, 3, 2) }, // 4..6 of epoch 2
      { kind: 'truncateTo', partition: P1, base: { seq: seq(2), epoch: epoch(1) } }, // S12
    ]);
    const before = shape(store);
    assert.deepEqual(store.partitions().get(P0)?.last, { seq: 6, epoch: 2 });
    assert.deepEqual(store.partitions().get(P1)?.base, { seq: 2, epoch: 1 });
    assert.equal(store.epochAt(P0, 3), 1);
    assert.equal(store.epochAt(P0, 4), 2);
    assert.equal(store.epochAt(P1, 1), undefined, 'truncated away');
    store = await reopened(store);
    assert.deepEqual(shape(store), before);
    const read = await store.read(P0, 1, 10, 100);
    assert.deepEqual(
      read.map((e) => [e.seq, e.epoch]),
      [
        [1, 1],
        [2, 1],
        [3, 1],
        [4, 2],
        [5, 2],
        [6, 2],
      ],
    );
    assert.deepEqual(read[3]?.op, entries(4, 1, 2)[0]?.op);
    assert.deepEqual(read[3]?.tag, { clientId: 'c1', requestSeq: 4 });
    assert.deepEqual(
      (await store.read(P0, 2, 10, 2)).map((e) => e.seq),
      [2, 3],
      'bounded by limit',
    );
    assert.deepEqual(
      (await store.read(P1, 1, 10, 100)).map((e) => e.seq),
      [3],
      'only what is held',
    );
    await store.close();
  });

  test('reset (a snapshot installed) empties the log at its position; drop forgets the partition', async () => {
    let { store } = await LogStore.open(dir);
    await store.write([
      { kind: 'setMeta', partition: P0, meta: meta(1) },
      { kind: 'append', partition: P0, entries: entries(1, 4) },
      { kind: 'append', partition: P1, entries: entries(1, 2) },
    ]);
    await store.write([
      { kind: 'reset', partition: P0, at: { seq: seq(40), epoch: epoch(3) } },
      { kind: 'drop', partition: P1 },
    ]);
    await store.write([{ kind: 'append', partition: P0, entries: entries(41, 1, 3) }]);
    const before = shape(store);
    store = await reopened(store);
    assert.deepEqual(shape(store), before);
    assert.equal(store.partitions().has(P1), false);
    assert.deepEqual(store.partitions().get(P0)?.base, { seq: 40, epoch: 3 });
    assert.deepEqual(
      (await store.read(P0, 1, 100, 100)).map((e) => e.seq),
      [41],
    );
    await store.close();
  });

  test('an append that does not follow the last seq is refused before anything is written', async () => {
    let { store } = await LogStore.open(dir);
    await store.write([{ kind: 'append', partition: P0, entries: entries(1, 2) }]);
    assert.throws(
      () =>
        store.write([
          { kind: 'setMeta', partition: P1, meta: meta(1) },
          { kind: 'append', partition: P0, entries: entries(4, 1) },
        ]),
      InvariantViolation,
    );
    store = await reopened(store);
    assert.deepEqual([...store.partitions().keys()], [P0], 'the refused batch wrote nothing');
    assert.deepEqual(store.partitions().get(P0)?.last, { seq: 2, epoch: 1 });
    await store.close();
  });

  test('compaction drops segments nothing live is in, and metadata survives it', async () => {
    let { store } = await LogStore.open(dir, { segmentBytes: 1024 });
    await store.write([{ kind: 'setMeta', partition: P0, meta: meta(7) }]);
    for (let i = 0; i < 30; i++) await store.write([{ kind: 'append', partition: P0, entries: entries(1 + i * 4, 4) }]);
    const segmentsBefore = (await readdir(dir)).length;
    assert.ok(segmentsBefore > 5, `several segments (${segmentsBefore})`);
    await store.write([{ kind: 'truncateTo', partition: P0, base: { seq: seq(116), epoch: epoch(1) } }]);
    const dropped = await store.compact();
    assert.ok(dropped >= segmentsBefore - 2, `dropped ${dropped} of ${segmentsBefore}`);
    const before = shape(store);
    store = (
      await (async () => {
        await store.close();
        return LogStore.open(dir, { segmentBytes: 1024 });
      })()
    ).store;
    assert.deepEqual(shape(store), before);
    assert.deepEqual(store.partitions().get(P0)?.meta, meta(7));
    assert.deepEqual(
      (await store.read(P0, 1, 200, 200)).map((e) => e.seq),
      [117, 118, 119, 120],
    );
    await store.close();
  });

  test('a truncation whose record follows entries a later truncation dropped changes nothing at replay', async () => {
    // Truncations are written after the applies below them, so behind entries above them:
    // after compaction, replay meets the surviving entries first, then an older, lower base.
    let { store } = await LogStore.open(dir, { segmentBytes: 1024 });
    for (let i = 0; i < 12; i++) await store.write([{ kind: 'append', partition: P0, entries: entries(1 + i * 4, 4) }]);
    await store.write([{ kind: 'truncateTo', partition: P0, base: { seq: seq(30), epoch: epoch(1) } }]);
    await store.write([{ kind: 'truncateTo', partition: P0, base: { seq: seq(40), epoch: epoch(1) } }]);
    assert.ok((await store.compact()) >= 1, 'segments with entries up to 40 only are dropped');
    const before = shape(store);
    store = await reopened(store);
    assert.deepEqual(shape(store), before);
    assert.deepEqual(
      (await store.read(P0, 1, 100, 100)).map((e) => e.seq),
      Array.from({ length: 8 }, (_, i) => 41 + i),
    );
    await store.close();
  });

  test('a log whose oldest segment vanished without a base covering it is corruption (S13)', async () => {
    const { store } = await LogStore.open(dir, { segmentBytes: 1024 });
    for (let i = 0; i < 10; i++) await store.write([{ kind: 'append', partition: P0, entries: entries(1 + i * 4, 4) }]);
    await store.close();
    const names = (await readdir(dir)).sort();
    assert.ok(names.length > 1);
    await rm(join(dir, names[0] as string));
    await assert.rejects(LogStore.open(dir, { segmentBytes: 1024 }), /the log starts at entry \d+ but its base is 0/);
  });
});

/**
 * Group commit's bookkeeping (src/storageserver/host.ts `GroupCommit`): eager ops ask for a
 * batch, lazy ops (applies, truncation; issue 11) wait for the next batch unless something
 * waits on them, and `after` runs in order once what it waited for is durable.
 */
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import type { BatchOp } from '../../src/core/replica/ops.js';
import { type PartitionId, seq } from '../../src/core/types.js';
import { GroupCommit } from '../../src/storageserver/host.js';

const P0 = 0 as PartitionId;
const P1 = 1 as PartitionId;
const truncate = (p: PartitionId): BatchOp => ({ kind: 'truncateLogFrom', partition: p, fromSeq: seq(5) });

describe('group commit', () => {
  test('an eager op asks for a batch; lazy ops alone do not', () => {
    const g = new GroupCommit();
    g.enqueue(P0, [truncate(P0)], undefined, true);
    assert.equal(g.wantsStart, false);
    assert.equal(g.lazyOnly, true);
    g.enqueue(P1, [truncate(P1)], 7);
    assert.equal(g.wantsStart, true);
    const batch = g.start();
    assert.deepEqual(
      batch?.ops.map((o) => o.partition),
      [P0, P1],
      'the lazy op rides with the eager one, in order',
    );
    assert.equal(g.wantsStart, false);
    assert.equal(g.lazyOnly, false, 'nothing queued while the batch is written');
  });

  test('an `after` waiting on lazy ops asks for their batch, and runs once it is durable', () => {
    const g = new GroupCommit();
    g.enqueue(P0, [truncate(P0)], undefined, true);
    const ran: string[] = [];
    g.after(P1, () => ran.push('p1'));
    assert.deepEqual(ran, ['p1'], 'nothing of P1 was queued: at once');
    g.after(P0, () => ran.push('p0'));
    assert.deepEqual(ran, ['p1']);
    assert.equal(g.wantsStart, true, 'a waiter on the lazy op makes the batch wanted');
    g.start();
    assert.deepEqual(g.committed(), []);
    g.release();
    assert.deepEqual(ran, ['p1', 'p0']);
  });

  test('a waiter on a batch being written does not ask for the next one', () => {
    const g = new GroupCommit();
    g.enqueue(P0, [truncate(P0)], 1);
    g.start();
    g.enqueue(P1, [truncate(P1)], undefined, true);
    const ran: string[] = [];
    g.after(P0, () => ran.push('p0'));
    assert.equal(g.wantsStart, false, 'a batch is being written');
    assert.deepEqual(g.committed(), [{ partition: P0, writeId: 1 }]);
    g.release();
    assert.deepEqual(ran, ['p0']);
    assert.equal(g.wantsStart, false, 'only the lazy op of P1 is queued');
    assert.equal(g.lazyOnly, true);
  });

  test("`afterAll` waits for every partition's queued ops, lazy ones included, and asks for their batch", () => {
    const g = new GroupCommit();
    const ran: string[] = [];
    g.afterAll(() => ran.push('nothing queued'));
    assert.deepEqual(ran, ['nothing queued']);
    g.enqueue(P0, [truncate(P0)], 1);
    g.start();
    g.enqueue(P1, [truncate(P1)], undefined, true);
    g.afterAll(() => ran.push('all'));
    assert.equal(g.wantsStart, false, 'a batch is being written');
    g.committed();
    g.release();
    assert.deepEqual(ran, ['nothing queued'], 'the lazy op of P1 is not written yet');
    assert.equal(g.wantsStart, true, 'the waiter asks for the batch holding it');
    g.start();
    g.committed();
    g.release();
    assert.deepEqual(ran, ['nothing queued', 'all']);
  });
});

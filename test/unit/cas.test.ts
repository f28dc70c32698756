/**
 * Compare-and-set in the replica core (DESIGN §16): the primary decides a conditional write
 * when it gives it a seq, from the version the driver read of the applied state and the log
 * entries after that state; a failed condition is a definite CONDITION_FAILED with the current
 * version and writes nothing; a read that the log moved past is retried, never guessed from.
 */
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import type { ReplicaInput } from '../../src/core/replica/io.js';
import type { Op } from '../../src/core/types.js';
import { A, B, C, type Cluster, config, epoch, put, seq, startedCluster } from './harness.js';

const del = (key: string): Op => ({ kind: 'delete', key: Buffer.from(key) });

/** A conditional write whose read saw `version` at applied seq `atSeq` of the primary's epoch. */
function cas(c: Cluster, requestId: number, op: Op, ifVersion: number, version: number, atSeq?: number): void {
  const r = c.nodes.get(A)!;
  const input: ReplicaInput = {
    kind: 'clientWrite',
    requestId,
    op,
    tag: { clientId: `c${requestId}`, requestSeq: 1 },
    condition: {
      keys: [
        { key: op.kind === 'put' || op.kind === 'delete' ? op.key : new Uint8Array(), ifVersion, observed: version },
      ],
      atSeq: seq(atSeq ?? r.appliedSeq),
      epoch: r.epoch,
      nowMs: 0,
    },
  };
  c.step(A, input);
}

function failure(c: Cluster, requestId: number): { code: string; current: unknown; expected: unknown } {
  const r = c.replies.get(requestId);
  assert.equal(r?.kind, 'error', `request ${requestId} should have failed, got ${JSON.stringify(r)}`);
  const e = r.kind === 'error' ? r.error : { code: '', current: undefined, expected: undefined };
  return { code: e.code, current: e.current, expected: e.expected };
}

describe('compare-and-set in the core (§16)', () => {
  test('ifVersion 0 writes an absent key and then fails with the version it wrote', () => {
    const c = startedCluster();
    cas(c, 1, put('k', 'v1'), 0, 0);
    c.settle();
    assert.deepEqual(c.replies.get(1), { kind: 'written', seq: seq(2) });
    cas(c, 2, put('k', 'v2'), 0, 2);
    c.settle();
    assert.deepEqual(failure(c, 2), { code: 'CONDITION_FAILED', current: 2, expected: 0 });
    // Nothing of the failed write reached the log.
    assert.equal(c.nodes.get(A)!.lastSeq, 2);
  });

  test('an entry after the state the read saw wins over the read: two racing CAS, one succeeds', () => {
    const c = startedCluster();
    c.step(A, { kind: 'clientWrite', requestId: 1, op: put('k', 'v1') });
    c.settle();
    // Both read version 2 at applied seq 2; the first is logged (not yet committed) before the second decides.
    cas(c, 2, put('k', 'a'), 2, 2);
    cas(c, 3, put('k', 'b'), 2, 2);
    c.settle();
    assert.deepEqual(c.replies.get(2), { kind: 'written', seq: seq(3) });
    assert.deepEqual(failure(c, 3), { code: 'CONDITION_FAILED', current: 3, expected: 2 });
  });

  test('a logged delete after the read makes the key absent; a conditional delete then needs 0', () => {
    const c = startedCluster();
    c.step(A, { kind: 'clientWrite', requestId: 1, op: put('k', 'v1') });
    c.settle();
    c.step(A, { kind: 'clientWrite', requestId: 2, op: del('k') });
    // The read saw version 2 at seq 2 (before the delete applied).
    cas(c, 3, del('k'), 2, 2, 2);
    cas(c, 4, put('k', 'again'), 0, 2, 2);
    c.settle();
    assert.deepEqual(failure(c, 3), { code: 'CONDITION_FAILED', current: 0, expected: 2 });
    assert.deepEqual(c.replies.get(4), { kind: 'written', seq: seq(4) });
  });

  test('entries of other keys do not change the condition', () => {
    const c = startedCluster();
    cas(c, 1, put('k', 'v1'), 0, 0);
    c.step(A, { kind: 'clientWrite', requestId: 2, op: put('other', 'x') });
    cas(c, 3, put('k', 'v2'), 2, 2, 1);
    c.settle();
    assert.deepEqual(c.replies.get(3), { kind: 'written', seq: seq(4) });
  });

  test('a failure decided by an uncommitted entry waits for it; a primary deposed before answers NOT_PRIMARY', () => {
    const c = startedCluster();
    c.step(A, { kind: 'clientWrite', requestId: 1, op: put('k', 'first') }); // in the tail, not committed
    cas(c, 2, put('k', 'mine'), 0, 0, 1);
    assert.equal(c.replies.has(2), false, 'no CONDITION_FAILED while the entry that decided it may still be lost');
    c.settle();
    assert.deepEqual(failure(c, 2), { code: 'CONDITION_FAILED', current: 2, expected: 0 });
    // Again, but the primary loses its role before the deciding entry commits.
    c.step(A, { kind: 'clientWrite', requestId: 3, op: put('k', 'second') });
    cas(c, 4, put('k', 'mine'), 2, 2, 2);
    c.step(A, { kind: 'configure', config: config(2, B, [C]) });
    const e = c.replies.get(4);
    assert.ok(e?.kind === 'error' && e.error.code === 'NOT_PRIMARY', JSON.stringify(e));
  });

  test('a read of another epoch, or below the log base, is retried (UNAVAILABLE), never decided on', () => {
    const c = startedCluster();
    const r = c.nodes.get(A)!;
    c.step(A, {
      kind: 'clientWrite',
      requestId: 1,
      op: put('k', 'v'),
      condition: {
        keys: [{ key: Buffer.from('k'), ifVersion: 0, observed: 0 }],
        atSeq: r.appliedSeq,
        epoch: epoch(r.epoch - 1),
        nowMs: 0,
      },
    });
    const e = failure(c, 1);
    assert.equal(e.code, 'UNAVAILABLE');
    assert.equal(r.lastSeq, r.appliedSeq, 'nothing logged');
  });

  test('a retry of an applied conditional write gets its result from the dedup table, not a failed condition', () => {
    const c = startedCluster();
    const tag = { clientId: 'x', requestSeq: 1 };
    const r = c.nodes.get(A)!;
    const attempt = (requestId: number, version: number): void => {
      c.step(A, {
        kind: 'clientWrite',
        requestId,
        op: put('k', 'v'),
        tag,
        condition: {
          keys: [{ key: Buffer.from('k'), ifVersion: 0, observed: version }],
          atSeq: r.appliedSeq,
          epoch: r.epoch,
          nowMs: 0,
        },
      });
    };
    attempt(1, 0);
    c.settle();
    attempt(2, 2); // the retry reads the version its first attempt wrote
    c.settle();
    assert.deepEqual(c.replies.get(2), { kind: 'written', seq: seq(2) });
  });

  test('a retry of a logged, not yet applied write waits for that entry (S10)', () => {
    const c = startedCluster();
    const tag = { clientId: 'x', requestSeq: 1 };
    c.step(A, { kind: 'clientWrite', requestId: 1, op: put('k', 'v'), tag });
    // Same tag again while the first is in the log: no second entry.
    c.step(A, { kind: 'clientWrite', requestId: 2, op: put('k', 'v'), tag });
    c.settle();
    assert.deepEqual(c.replies.get(1), { kind: 'written', seq: seq(2) });
    assert.deepEqual(c.replies.get(2), { kind: 'written', seq: seq(2) });
    assert.equal(c.nodes.get(A)!.lastSeq, 2);
  });
});

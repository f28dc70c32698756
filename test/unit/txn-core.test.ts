/**
 * The replica core's rules for transactions (docs/transactions.md, DESIGN §16): reserved keys
 * are routed with the user key they name; a user write to a key with an intent is refused
 * with KEY_LOCKED (the intent in the unapplied log tail, in the applied state, or recovered),
 * a transaction's own (`sys`) write is not; a write with conditions on several keys of the
 * partition happens only when every one holds.
 */
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { partitionOf } from '../../src/core/partitioning.js';
import type { ReplicaInput } from '../../src/core/replica/io.js';
import { intentKey, isIntentKey, isReserved, recordKey, routeOf, userKeyOfIntent } from '../../src/core/txn-keys.js';
import type { Op } from '../../src/core/types.js';
import { A, B, C, Cluster, config, put, replica, seq, startedCluster } from './harness.js';

const k = (s: string) => Buffer.from(s);
const putKey = (key: Uint8Array, value: string): Op => ({ kind: 'put', key, value: Buffer.from(value) });
const del = (key: Uint8Array): Op => ({ kind: 'delete', key });

function code(c: Cluster, requestId: number): string | undefined {
  const r = c.replies.get(requestId);
  return r?.kind === 'error' ? r.error.code : r?.kind;
}

describe('reserved keys (txn-keys.ts)', () => {
  test('an intent goes to its key’s partition and a record to its first key’s', () => {
    for (const key of ['a', 'account-17', 'ü', '\u0000x']) {
      const ik = intentKey(k(key));
      assert.ok(isReserved(ik) && isIntentKey(ik));
      assert.deepEqual(Buffer.from(userKeyOfIntent(ik)), k(key));
      const rk = recordKey('0123456789abcdef', k(key));
      assert.ok(isReserved(rk) && !isIntentKey(rk));
      assert.deepEqual(Buffer.from(routeOf(rk)), k(key));
      for (const parts of [1, 16, 1024]) {
        assert.equal(partitionOf(ik, parts), partitionOf(k(key), parts));
        assert.equal(partitionOf(rk, parts), partitionOf(k(key), parts));
      }
    }
    assert.equal(isReserved(k('dstore')), false);
    assert.throws(() => recordKey('xyz', k('a')), RangeError);
  });
});

describe('intents lock their keys (core)', () => {
  test('a logged intent refuses user writes at once, a sys write goes through, its delete unlocks', () => {
    const c = startedCluster();
    c.step(A, { kind: 'clientWrite', requestId: 1, op: putKey(intentKey(k('x')), 'intent'), sys: true });
    c.step(A, { kind: 'clientWrite', requestId: 2, op: put('x', 'plain') }); // the intent is in the tail only
    c.step(A, { kind: 'clientWrite', requestId: 3, op: del(k('x')) });
    c.settle();
    assert.equal(code(c, 1), 'written');
    assert.equal(code(c, 2), 'KEY_LOCKED');
    assert.equal(code(c, 3), 'KEY_LOCKED');
    // Applied now: still locked; other keys are not.
    c.step(A, { kind: 'clientWrite', requestId: 4, op: put('x', 'plain') });
    c.step(A, { kind: 'clientWrite', requestId: 5, op: put('y', 'plain') });
    c.step(A, { kind: 'clientWrite', requestId: 6, op: put('x', 'resolved'), sys: true });
    c.step(A, { kind: 'clientWrite', requestId: 7, op: del(intentKey(k('x'))), sys: true });
    c.step(A, { kind: 'clientWrite', requestId: 8, op: put('x', 'after') }); // the delete is in the tail
    c.settle();
    assert.deepEqual(
      [4, 5, 6, 7, 8].map((i) => code(c, i)),
      ['KEY_LOCKED', 'written', 'written', 'written', 'written'],
    );
  });

  test('a replica recovered with an intent refuses user writes once primary', () => {
    const c = new Cluster();
    const recovery = {
      epoch: 0 as never,
      config: null,
      applied: { seq: seq(0), epoch: 0 as never },
      logBase: { seq: seq(0), epoch: 0 as never },
      entries: [],
      intents: [k('held')],
    };
    c.add(A, replica(A, recovery));
    for (const n of [B, C]) c.add(n, replica(n));
    for (const n of [A, B, C]) c.step(n, { kind: 'configure', config: config(1, A, [B, C]) });
    c.settle();
    c.step(A, { kind: 'clientWrite', requestId: 1, op: put('held', 'v') });
    c.step(A, { kind: 'clientWrite', requestId: 2, op: put('free', 'v') });
    c.settle();
    assert.equal(code(c, 1), 'KEY_LOCKED');
    assert.equal(code(c, 2), 'written');
  });
});

describe('conditions on several keys of the partition', () => {
  test('an intent is placed only if it is absent and the key is still at the version read', () => {
    const c = startedCluster();
    c.step(A, { kind: 'clientWrite', requestId: 1, op: put('acct', '100') });
    c.settle();
    const r = c.nodes.get(A)!;
    const placeIntent = (requestId: number, readVersion: number): void => {
      const input: ReplicaInput = {
        kind: 'clientWrite',
        requestId,
        op: putKey(intentKey(k('acct')), `txn-${requestId}`),
        sys: true,
        condition: {
          keys: [
            { key: intentKey(k('acct')), ifVersion: 0, observed: 0 },
            { key: k('acct'), ifVersion: readVersion, observed: 2 },
          ],
          atSeq: r.appliedSeq,
          epoch: r.epoch,
          nowMs: 0,
        },
      };
      c.step(A, input);
    };
    placeIntent(2, 1); // read an older version: refused
    placeIntent(3, 2); // ok
    placeIntent(4, 2); // another transaction, same read: the intent in the tail refuses it
    c.settle();
    assert.equal(code(c, 2), 'CONDITION_FAILED');
    assert.equal(code(c, 3), 'written');
    assert.equal(code(c, 4), 'CONDITION_FAILED');
    const e = c.replies.get(4);
    assert.ok(e?.kind === 'error' && e.error.current === 3, JSON.stringify(e));
  });
});

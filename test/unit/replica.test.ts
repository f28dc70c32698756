/**
 * Unit tests of the replica state machine (DESIGN §5–§7, S1–S8): feed inputs, compare
 * outputs. Proves: a write commits only after every secondary and the primary's own disk
 * hold it; entries apply in order; lower epochs are fenced; gaps and conflicts are
 * resolved as S1 says; a new primary serves only after its epoch-start entry commits;
 * reads wait for a confirmation round; too few replicas refuse writes.
 */
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { A, B, C, Cluster, config, P0, put, replica, startedCluster, seq, epoch } from './harness.js';
import { nodeId } from '../../src/core/types.js';
import type { LogEntry } from '../../src/core/types.js';

describe('write path', () => {
  test('a write is acknowledged only after every secondary acked it (§5.4)', () => {
    const c = startedCluster();
    c.step(A, { kind: 'clientWrite', requestId: 1, op: put('k', 'v') });
    c.flush();
    c.sync(A);
    // Only B receives and acks.
    c.deliver((m) => m.to === B);
    c.sync(B);
    c.deliver((m) => m.to === A);
    assert.equal(c.replies.has(1), false, 'committed without C');
    c.deliver((m) => m.to === C);
    c.sync(C);
    c.deliver((m) => m.to === A);
    assert.deepEqual(c.replies.get(1), { kind: 'written', seq: seq(2) });
  });

  test('the primary waits for its own disk too', () => {
    const c = startedCluster();
    c.step(A, { kind: 'clientWrite', requestId: 1, op: put('k', 'v') });
    c.flush();
    c.deliver();
    c.sync(B);
    c.sync(C);
    c.deliver();
    assert.equal(c.replies.has(1), false, 'committed before the primary’s log was durable');
    c.sync(A);
    assert.deepEqual(c.replies.get(1), { kind: 'written', seq: seq(2) });
  });

  test('pipelined writes commit and apply strictly in order with increasing versions (§5.5)', () => {
    const c = startedCluster();
    for (let i = 1; i <= 5; i++) c.step(A, { kind: 'clientWrite', requestId: i, op: put(`k${i}`, 'v') });
    c.settle();
    const seqs = [1, 2, 3, 4, 5].map((i) => {
      const r = c.replies.get(i);
      assert.equal(r?.kind, 'written');
      return r.kind === 'written' ? r.seq : 0;
    });
    assert.deepEqual(seqs, [2, 3, 4, 5, 6]);
    for (const n of [A, B, C]) {
      const applied = c.durableOps
        .get(n)!
        .filter((o) => o.kind === 'apply')
        .flatMap((o) => (o.kind === 'apply' ? o.entries.map((e) => e.seq) : []));
      assert.deepEqual(applied, [1, 2, 3, 4, 5, 6], `applied order on ${n}`);
    }
  });

  test('secondaries apply only committed entries (S2)', () => {
    const c = startedCluster();
    c.step(A, { kind: 'clientWrite', requestId: 1, op: put('k', 'v') });
    c.flush();
    c.deliver();
    c.sync(B);
    // C never acks: nothing commits, and B must not apply seq 2.
    const applied = c.durableOps.get(B)!.some((o) => o.kind === 'apply' && o.entries.some((e) => e.seq === 2));
    assert.equal(applied, false);
    assert.equal(c.nodes.get(B)!.appliedSeq, 1);
  });

  test('a configuration smaller than --min-write-replicas refuses writes (S8)', () => {
    const c = new Cluster();
    c.add(A, replica(A));
    c.step(A, { kind: 'configure', config: config(1, A, []) });
    c.settle();
    const out = c.step(A, { kind: 'clientWrite', requestId: 7, op: put('k', 'v') });
    assert.equal(out.length, 1);
    const r = c.replies.get(7);
    assert.equal(r?.kind === 'error' && r.error.code, 'UNAVAILABLE');
  });

  test('a non-primary refuses client writes with NOT_PRIMARY', () => {
    const c = startedCluster();
    c.step(B, { kind: 'clientWrite', requestId: 9, op: put('k', 'v') });
    const r = c.replies.get(9);
    assert.equal(r?.kind === 'error' && r.error.code, 'NOT_PRIMARY');
  });
});

describe('epochs (S3) and conflicts (S1)', () => {
  test('a secondary fences a deposed primary', () => {
    const c = startedCluster();
    // B moves to epoch 2 (A removed), then A's old-epoch prepare arrives.
    c.step(B, { kind: 'configure', config: config(2, B, [C]) });
    c.network = [];
    const out = c.step(B, {
      kind: 'peer',
      from: A,
      message: {
        kind: 'prepare',
        partition: P0,
        config: config(1, A, [B, C]),
        prev: { seq: seq(1), epoch: epoch(1) },
        entries: [],
        commitSeq: seq(1),
      },
    });
    assert.deepEqual(out, [
      {
        kind: 'send',
        to: A,
        message: { kind: 'staleEpoch', partition: P0, config: config(2, B, [C]) },
        immediate: false,
      },
    ]);
  });

  test('a deposed primary that learns of a newer epoch fails its pending writes as outcome-unknown (S9)', () => {
    const c = startedCluster();
    c.step(A, { kind: 'clientWrite', requestId: 3, op: put('k', 'v') });
    c.flush();
    c.step(A, { kind: 'peer', from: B, message: { kind: 'staleEpoch', partition: P0, config: config(2, B, [C]) } });
    const r = c.replies.get(3);
    assert.equal(r?.kind === 'error' && r.error.code, 'OUTCOME_UNKNOWN');
    assert.equal(c.nodes.get(A)!.role, 'inactive');
  });

  test('a prepare after a gap is answered with a nack from the last held entry', () => {
    const c = startedCluster();
    const out = c.step(B, {
      kind: 'peer',
      from: A,
      message: {
        kind: 'prepare',
        partition: P0,
        config: config(1, A, [B, C]),
        prev: { seq: seq(5), epoch: epoch(1) },
        entries: [{ epoch: epoch(1), seq: seq(6), op: put('x', 'y') }],
        commitSeq: seq(1),
      },
    });
    assert.deepEqual(out, [
      {
        kind: 'send',
        to: A,
        message: { kind: 'prepareNack', partition: P0, epoch: epoch(1), needFromSeq: seq(2), incarnation: 'b-1' },
        immediate: true,
      },
    ]);
  });

  test('a conflicting uncommitted entry is replaced, with the log truncated first (S1)', () => {
    // B holds seq 2 from epoch 1 (never committed); the epoch-2 primary has another seq 2.
    const old: LogEntry = { epoch: epoch(1), seq: seq(2), op: put('old', '1') };
    const start: LogEntry = { epoch: epoch(1), seq: seq(1), op: { kind: 'epochStart' } };
    const b = replica(B, {
      epoch: epoch(1),
      config: config(1, A, [B]),
      applied: { seq: seq(1), epoch: epoch(1) },
      logBase: { seq: seq(0), epoch: epoch(0) },
      entries: [start, old],
    });
    const fresh: LogEntry = { epoch: epoch(2), seq: seq(2), op: { kind: 'epochStart' } };
    const out = b.step({
      kind: 'peer',
      from: C,
      message: {
        kind: 'prepare',
        partition: P0,
        config: config(2, C, [B]),
        prev: { seq: seq(1), epoch: epoch(1) },
        entries: [fresh],
        commitSeq: seq(1),
      },
    });
    const persists = out
      .filter((o) => o.kind === 'persist')
      .flatMap((o) => (o.kind === 'persist' ? o.ops.map((x) => x.kind) : []));
    assert.deepEqual(persists, ['setMeta', 'truncateLogFrom', 'appendLog']);
    assert.equal(b.log.at(seq(2))?.epoch, 2);
  });

  test('a conflict at or below the commit point is a fatal invariant violation (S1)', () => {
    const start: LogEntry = { epoch: epoch(1), seq: seq(1), op: { kind: 'epochStart' } };
    const committed: LogEntry = { epoch: epoch(1), seq: seq(2), op: put('k', 'v') };
    const b = replica(B, {
      epoch: epoch(1),
      config: config(1, A, [B]),
      applied: { seq: seq(2), epoch: epoch(1) },
      logBase: { seq: seq(0), epoch: epoch(0) },
      entries: [start, committed],
    });
    assert.throws(
      () =>
        b.step({
          kind: 'peer',
          from: C,
          message: {
            kind: 'prepare',
            partition: P0,
            config: config(2, C, [B]),
            prev: { seq: seq(1), epoch: epoch(1) },
            entries: [{ epoch: epoch(2), seq: seq(2), op: { kind: 'epochStart' } }],
            commitSeq: seq(1),
          },
        }),
      /S1: conflict/,
    );
  });

  test('a new primary serves only after its epoch-start entry committed (S6)', () => {
    const c = startedCluster();
    for (let i = 1; i <= 3; i++) c.step(A, { kind: 'clientWrite', requestId: i, op: put(`k${i}`, 'v') });
    c.settle();
    // A is lost; B becomes primary of epoch 2 with C.
    c.nodes.delete(A);
    const cfg = config(2, B, [C]);
    c.step(B, { kind: 'configure', config: cfg });
    c.step(B, { kind: 'clientWrite', requestId: 10, op: put('x', 'y') });
    assert.equal(
      c.replies.get(10)?.kind === 'error' && (c.replies.get(10) as { error: { code: string } }).error.code,
      'UNAVAILABLE',
    );
    assert.equal(c.nodes.get(B)!.serving, false);
    c.step(C, { kind: 'configure', config: cfg });
    c.settle();
    assert.equal(c.nodes.get(B)!.serving, true);
    c.step(B, { kind: 'clientWrite', requestId: 11, op: put('x', 'y') });
    c.settle();
    assert.deepEqual(c.replies.get(11), { kind: 'written', seq: seq(6) });
  });
});

describe('a silent secondary (§4)', () => {
  test('the primary asks to remove a secondary it waits on and has not heard from for --dead-after-ms', () => {
    const c = startedCluster(2500);
    c.step(A, { kind: 'clientWrite', requestId: 1, op: put('k', 'v') });
    c.flush();
    c.sync(A);
    c.network = c.network.filter((m) => m.to !== C); // the link A-C is cut
    c.deliver();
    c.sync(B);
    c.deliver();
    // Waiting on C is noticed at the first tick (1000); silence counts from there.
    for (const now of [1000, 2000, 3000]) c.step(A, { kind: 'tick', nowMs: now });
    assert.deepEqual(c.removals, [], 'asked before --dead-after-ms of silence');
    c.network = c.network.filter((m) => m.to !== C);
    c.deliver();
    c.step(A, { kind: 'tick', nowMs: 3600 });
    assert.deepEqual(c.removals, [{ node: A, secondary: C }]);
    c.step(A, { kind: 'tick', nowMs: 3700 });
    assert.equal(c.removals.length, 1, 'asked again at once');
  });

  test(
    'an idle partition: the first write after a long quiet ' + 'asks no removal (silence counts from when we wait)',
    () => {
      const c = startedCluster(2500);
      c.step(A, { kind: 'tick', nowMs: 1000 });
      c.step(A, { kind: 'tick', nowMs: 2000 });
      c.step(A, { kind: 'tick', nowMs: 2900 }); // idle: nothing heard from B or C for 2.9 s
      c.step(A, { kind: 'clientWrite', requestId: 1, op: put('k', 'v') });
      c.flush();
      c.step(A, { kind: 'tick', nowMs: 2950 });
      c.step(A, { kind: 'tick', nowMs: 3000 });
      assert.deepEqual(c.removals, []);
      c.sync(A);
      c.settle();
      assert.deepEqual(c.replies.get(1), { kind: 'written', seq: seq(2) });
    },
  );

  test('after a pause of its own the primary gives its secondaries a fresh period', () => {
    const c = startedCluster(2500);
    c.step(A, { kind: 'clientWrite', requestId: 1, op: put('k', 'v') });
    c.flush();
    c.step(A, { kind: 'tick', nowMs: 10_000 }); // SIGSTOPped for 10 s: nobody could answer
    assert.deepEqual(c.removals, []);
  });
});

describe('reads (§7)', () => {
  test('a read is served only after every secondary confirmed a round sent after it arrived', () => {
    const c = startedCluster();
    c.step(A, { kind: 'clientRead', requestId: 1, key: Buffer.from('k') });
    assert.equal(c.reads.length, 0);
    c.flush();
    const confirms = c.network.filter((m) => m.message.kind === 'confirm');
    assert.deepEqual(confirms.map((m) => m.to).sort(), [B, C]);
    c.deliver((m) => m.to === B);
    c.deliver((m) => m.to === A);
    assert.equal(c.reads.length, 0, 'served on one of two confirmations');
    c.deliver((m) => m.to === C);
    c.deliver((m) => m.to === A);
    assert.deepEqual(c.reads, [{ node: A, requestId: 1, key: 'k' }]);
  });

  test('a read arriving while a round is in flight waits for the next round', () => {
    const c = startedCluster();
    c.step(A, { kind: 'clientRead', requestId: 1, key: Buffer.from('k') });
    c.flush();
    c.step(A, { kind: 'clientRead', requestId: 2, key: Buffer.from('k') });
    c.deliver();
    c.deliver();
    assert.deepEqual(
      c.reads.map((r) => r.requestId),
      [1],
    );
    c.settle();
    assert.deepEqual(
      c.reads.map((r) => r.requestId),
      [1, 2],
    );
  });

  test('a secondary does not confirm for a primary that is not its own', () => {
    const c = startedCluster();
    const out = c.step(B, {
      kind: 'peer',
      from: C,
      message: { kind: 'confirm', partition: P0, config: config(1, C, [B]), round: 1 },
    });
    assert.deepEqual(out, []);
  });
});

describe('restart (S4)', () => {
  test('a restarted replica is inactive until configured, and a restarted primary stays so in the same epoch', () => {
    const start: LogEntry = { epoch: epoch(1), seq: seq(1), op: { kind: 'epochStart' } };
    const a = replica(A, {
      epoch: epoch(1),
      config: config(1, A, [B, C]),
      applied: { seq: seq(1), epoch: epoch(1) },
      logBase: { seq: seq(0), epoch: epoch(0) },
      entries: [start],
    });
    assert.equal(a.progress().role, 'inactive');
    a.step({ kind: 'configure', config: config(1, A, [B, C]) });
    assert.equal(a.progress().role, 'inactive');
    a.step({ kind: 'configure', config: config(2, A, [B, C]) });
    assert.equal(a.progress().role, 'primary');
    assert.equal(a.log.at(seq(2))?.op.kind, 'epochStart');
  });

  test('on restart the epoch is max(persisted, highest epoch in the log) (S3)', () => {
    const e3: LogEntry = { epoch: epoch(3), seq: seq(1), op: { kind: 'epochStart' } };
    const r = replica(B, {
      epoch: epoch(2),
      config: null,
      applied: { seq: seq(0), epoch: epoch(0) },
      logBase: { seq: seq(0), epoch: epoch(0) },
      entries: [e3],
    });
    assert.equal(r.epoch, 3);
  });
});

describe('exactly once (S10)', () => {
  const tag = { clientId: 'c1', requestSeq: 1 };

  test('a retried write that was applied gets the original version and adds no entry', () => {
    const c = startedCluster();
    c.step(A, { kind: 'clientWrite', requestId: 1, op: put('k', 'v'), tag });
    c.settle();
    const lastSeq = c.nodes.get(A)!.lastSeq;
    c.step(A, { kind: 'clientWrite', requestId: 2, op: put('k', 'v'), tag });
    c.settle();
    assert.deepEqual(c.replies.get(2), c.replies.get(1));
    assert.equal(c.nodes.get(A)!.lastSeq, lastSeq, 'the retry added a log entry');
  });

  test('a retry of a write still in the log waits for that entry', () => {
    const c = startedCluster();
    c.step(A, { kind: 'clientWrite', requestId: 1, op: put('k', 'v'), tag });
    c.step(A, { kind: 'clientWrite', requestId: 2, op: put('k', 'v'), tag });
    c.settle();
    assert.deepEqual(c.replies.get(1), { kind: 'written', seq: seq(2) });
    assert.deepEqual(c.replies.get(2), { kind: 'written', seq: seq(2) });
  });

  test('the dedup table survives failover: the new primary answers the retry', () => {
    const c = startedCluster();
    c.step(A, { kind: 'clientWrite', requestId: 1, op: put('k', 'v'), tag });
    c.settle();
    c.nodes.delete(A);
    const cfg = config(2, B, [C]);
    c.step(B, { kind: 'configure', config: cfg });
    c.step(C, { kind: 'configure', config: cfg });
    c.settle();
    c.step(B, { kind: 'clientWrite', requestId: 5, op: put('k', 'v'), tag });
    assert.deepEqual(c.replies.get(5), { kind: 'written', seq: seq(2) });
  });
});

describe('learners (S7, S11)', () => {
  test('a caught-up learner is proposed for promotion, and nothing commits until the answer', () => {
    const c = new Cluster();
    for (const n of [A, B, C]) c.add(n, replica(n));
    const cfg = config(1, A, [B], [C]);
    for (const n of [A, B, C]) c.step(n, { kind: 'configure', config: cfg });
    c.settle();
    assert.ok(c.nodes.get(A)!.serving);
    // Drive until the promotion request appears.
    for (let i = 0; i < 10 && c.promotions.length === 0; i++) {
      c.step(A, { kind: 'tick', nowMs: i });
      c.settle();
    }
    assert.deepEqual(c.promotions, [{ node: A, learner: C }]);
    const out = c.step(A, { kind: 'clientWrite', requestId: 1, op: put('k', 'v') });
    assert.equal(out.length, 1);
    assert.equal(
      c.replies.get(1)?.kind === 'error' && (c.replies.get(1) as { error: { code: string } }).error.code,
      'UNAVAILABLE',
    );
    // The nameserver applies it: epoch 2 with C a secondary; A stays primary and serves again.
    const promoted = config(2, A, [B, C]);
    c.step(A, { kind: 'promotionAnswered', config: promoted, epoch: epoch(1) });
    c.settle();
    assert.equal(c.nodes.get(C)!.progress().role, 'secondary');
    assert.ok(c.nodes.get(A)!.serving);
    c.step(A, { kind: 'clientWrite', requestId: 2, op: put('k', 'v') });
    c.settle();
    assert.equal(c.replies.get(2)?.kind, 'written');
  });

  test('a primary that stays primary in a new epoch keeps its waiting writes', () => {
    const c = startedCluster();
    c.step(A, { kind: 'clientWrite', requestId: 1, op: put('k', 'v') });
    c.flush();
    c.step(A, { kind: 'configure', config: config(2, A, [B]) });
    assert.equal(c.replies.has(1), false, 'the waiting write was failed');
    c.step(B, { kind: 'configure', config: config(2, A, [B]) });
    c.nodes.delete(C);
    c.settle();
    assert.deepEqual(c.replies.get(1), { kind: 'written', seq: seq(2) });
  });

  test('the answer to a promotion request of an earlier epoch does not end the pending one (S7)', () => {
    const c = startedCluster();
    const a = c.nodes.get(A)!;
    c.add(nodeId('d'), replica(nodeId('d')));
    for (const n of [A, B, C, nodeId('d')])
      c.step(n, { kind: 'configure', config: config(2, A, [B, C], [nodeId('d')]) });
    c.settle();
    assert.deepEqual(
      c.promotions.map((p) => p.learner),
      [nodeId('d')],
      'no promotion asked at epoch 2',
    );
    // A late answer to a request made at epoch 1 arrives: the pending one still holds writes.
    a.step({ kind: 'promotionAnswered', config: config(2, A, [B, C], [nodeId('d')]), epoch: epoch(1) });
    c.step(A, { kind: 'clientWrite', requestId: 7, op: put('k', 'v') });
    c.settle();
    assert.equal(c.replies.get(7)?.kind, 'error', 'a write was accepted while the promotion is pending');
  });

  test('a learner needing truncated entries is offered a snapshot', () => {
    const entries: LogEntry[] = [{ epoch: epoch(1), seq: seq(11), op: { kind: 'epochStart' } }];
    const a = replica(A, {
      epoch: epoch(1),
      config: null,
      applied: { seq: seq(11), epoch: epoch(1) },
      logBase: { seq: seq(10), epoch: epoch(1) },
      entries,
    });
    a.step({ kind: 'configure', config: config(2, A, [B], [C]) });
    const out = a.step({
      kind: 'peer',
      from: C,
      message: { kind: 'prepareNack', partition: P0, epoch: epoch(2), needFromSeq: seq(1), incarnation: 'c-1' },
    });
    assert.deepEqual(
      out.filter((o) => o.kind === 'send').map((o) => (o.kind === 'send' ? o.message.kind : '')),
      ['snapshotOffer'],
    );
  });
});

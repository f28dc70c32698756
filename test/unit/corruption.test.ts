/**
 * Unit tests of the corruption path (S13) in the pure core: a replica that found its
 * partition corrupt (a stored value failed its checksum on a read, or a log record at open)
 * steps out at once (answers, acks and confirms nothing; a primary fails what waited on it
 * with retryable errors), says so in its progress, keeps its data until a configuration
 * makes it a learner, then drops the partition in one batch with the new epoch and relearns
 * it from zero (S11). The nameserver takes such a replica out of its configuration (a live
 * secondary takes over as primary, S5) and adds it back as a learner; with no healthy member
 * the partition stays unavailable, never started afresh from the corrupt copy.
 */
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { A, B, C, Cluster, config, put, replica, startedCluster, seq, epoch } from './harness.js';
import { Nameserver } from '../../src/core/nameserver/nameserver.js';
import type { ReplicaProgress } from '../../src/core/replica/replica.js';
import { type NodeId, type Role, nodeId, partitionId } from '../../src/core/types.js';

describe('replica: corrupt → step out → relearn (S13)', () => {
  test('a corrupt primary fails its waiting read with a retryable NOT_PRIMARY and serves nothing more', () => {
    const c = startedCluster();
    c.step(A, { kind: 'clientWrite', requestId: 1, op: put('k', 'v1') });
    c.settle();
    c.step(A, { kind: 'clientRead', requestId: 2, key: Buffer.from('k') });
    c.step(A, { kind: 'corrupt', reason: 'partition 0 stored value: checksum mismatch (S13)' });
    const read = c.replies.get(2);
    assert.equal(read?.kind === 'error' && read.error.code, 'NOT_PRIMARY');
    assert.equal(read?.kind === 'error' && read.error.retryable, true);
    const a = c.nodes.get(A)!;
    assert.equal(a.progress().role, 'inactive');
    c.sync(A); // the corrupt marker is durable: now it is reported
    assert.equal(a.progress().corrupt, true);
    assert.equal(a.serving, false);
    c.step(A, { kind: 'clientRead', requestId: 3, key: Buffer.from('k') });
    c.step(A, { kind: 'clientWrite', requestId: 4, op: put('k', 'v2') });
    for (const id of [3, 4]) {
      const r = c.replies.get(id);
      assert.equal(r?.kind === 'error' && r.error.code, 'NOT_PRIMARY', `request ${id}`);
    }
    c.settle();
    assert.equal(
      c.reads.filter((r) => r.node === A && r.requestId !== 2).length,
      0,
      'no read served by the corrupt replica',
    );
    assert.ok(
      c.logs.some((l) => l.node === A && /corrupt/.test(l.message)),
      'the corruption is logged',
    );
  });

  test(
    'the corrupt replica keeps its data while it is still a member; made a learner it drops the ' +
      'partition and relearns it from zero',
    () => {
      const c = startedCluster();
      for (let i = 1; i <= 3; i++) c.step(A, { kind: 'clientWrite', requestId: i, op: put(`k${i}`, `v${i}`) });
      c.settle();
      c.step(B, { kind: 'corrupt', reason: 'stored value checksum mismatch' });
      // A configuration at the same epoch that still names B secondary does not bring it back.
      c.step(B, { kind: 'configure', config: config(1, A, [B, C]) });
      assert.equal(c.nodes.get(B)!.progress().role, 'inactive');
      // A prepare from the primary gets no ack from B.
      c.step(A, { kind: 'clientWrite', requestId: 10, op: put('k4', 'v4') });
      c.flush();
      c.sync(A);
      c.deliver((m) => m.to === B);
      c.sync(B);
      assert.equal(c.network.filter((m) => m.from === B).length, 0, 'a corrupt replica acks nothing');
      assert.equal(
        c.durableOps.get(B)!.some((o) => o.kind === 'dropPartition'),
        false,
        'nothing is dropped before a healthy member serves',
      );
      // The nameserver's answer (S13): B becomes a learner at a new epoch.
      const next = config(2, A, [C], [B]);
      c.network = [];
      for (const n of [A, B, C]) c.step(n, { kind: 'configure', config: next });
      const bOps = c.disk.get(B)!.map((p) => p.ops.map((o) => o.kind));
      assert.deepEqual(bOps[0], ['dropPartition', 'setMeta'], 'drop and the new epoch in one batch');
      assert.equal(c.nodes.get(B)!.progress().corrupt, undefined);
      assert.equal(c.nodes.get(B)!.progress().role, 'learner');
      c.settle();
      // Learned from zero: every entry of the primary's log is applied on B again, in order.
      const afterDrop = c.durableOps.get(B)!;
      const dropAt = afterDrop.findIndex((o) => o.kind === 'dropPartition');
      const applied = afterDrop.slice(dropAt).flatMap((o) => (o.kind === 'apply' ? o.entries.map((e) => e.seq) : []));
      const aApplied = c.nodes.get(A)!.appliedSeq;
      assert.deepEqual(
        applied,
        Array.from({ length: aApplied }, (_, i) => i + 1),
      );
      assert.ok(
        c.promotions.some((p) => p.node === A && p.learner === B),
        'the primary asks to promote the caught-up learner',
      );
      assert.equal(c.replies.get(10)?.kind, 'written', 'the write waiting for B commits once B is out');
    },
  );

  test('a replica recovered corrupt (a log record failed at open) starts out, and relearns only as a learner', () => {
    const entries = [{ epoch: epoch(1), seq: seq(1), op: { kind: 'epochStart' as const } }];
    const r = replica(B, {
      epoch: epoch(1),
      config: config(1, A, [B, C]),
      applied: { seq: seq(1), epoch: epoch(1) },
      logBase: { seq: seq(0), epoch: epoch(0) },
      entries,
      corrupt: 'partition 0 log entry 2: checksum mismatch (S13)',
    });
    const c = new Cluster();
    c.add(B, r);
    assert.equal(r.progress().corrupt, true);
    assert.deepEqual(c.step(B, { kind: 'configure', config: config(1, A, [B, C]) }), []);
    const out = c.step(B, { kind: 'configure', config: config(2, C, [A]) });
    assert.deepEqual(
      out.map((o) => o.kind),
      ['persist'],
      'a higher epoch is persisted (S3), no role taken',
    );
    assert.equal(r.progress().role, 'inactive');
    assert.equal(r.epoch, 2);
    c.step(B, { kind: 'configure', config: config(3, C, [A], [B]) });
    assert.equal(r.progress().role, 'learner');
    assert.deepEqual(
      c.disk
        .get(B)!
        .at(-1)!
        .ops.map((o) => o.kind),
      ['dropPartition', 'setMeta'],
    );
    assert.equal(r.appliedSeq, 0);
    assert.equal(r.lastSeq, 0);
  });
});

const S = ['s1', 's2', 's3'].map(nodeId) as [NodeId, NodeId, NodeId];
const settings = { partitions: 1, replicas: 3, minWriteReplicas: 2, initialNodes: 3 };

function progress(p: number, e: number, role: Role, lastSeq: number, corrupt = false): ReplicaProgress {
  const base = {
    partition: partitionId(p),
    epoch: epoch(e),
    role,
    lastSeq: seq(lastSeq),
    lastEpoch: epoch(e),
    commitSeq: seq(0),
    appliedSeq: seq(0),
    serving: role === 'primary',
  };
  return corrupt ? { ...base, corrupt: true } : base;
}

function formed(now = 0): Nameserver {
  const ns = new Nameserver(
    Nameserver.newMap('test', settings),
    { deadAfterMs: 5000, rereplicateAfterMs: 30_000 },
    now,
  );
  for (const id of S)
    ns.onRegister(
      { nodeId: id, address: `127.0.0.1:${id}`, backend: 'lmdb', incarnation: `${id}-1`, durable: true },
      now,
    );
  assert.equal(ns.onTick(now), true);
  return ns;
}

function beat(ns: Nameserver, id: NodeId, now: number, p: ReplicaProgress) {
  return ns.onHeartbeat({ nodeId: id, incarnation: `${id}-1`, uptimeMs: now, keys: 0, progress: [p] }, now);
}

describe('nameserver: a replica that reports its partition corrupt (S13)', () => {
  test('a corrupt primary is replaced by a live secondary and comes back as a learner', () => {
    const ns = formed();
    const c = ns.map.configs[0]!;
    const [secondary, other] = c.secondaries as [NodeId, NodeId];
    beat(ns, secondary, 1000, progress(0, 1, 'secondary', 10));
    beat(ns, other, 1000, progress(0, 1, 'secondary', 9));
    const reply = beat(ns, c.primary, 1000, progress(0, 1, 'inactive', 10, true));
    assert.deepEqual(
      reply.kind === 'ok' && reply.configs,
      [],
      'the old configuration is not pushed to the corrupt replica',
    );
    assert.deepEqual(ns.corruptPartitions(c.primary), [partitionId(0)]);
    assert.equal(ns.onTick(1000), true);
    const next = ns.map.configs[0]!;
    assert.equal(next.epoch, 2);
    assert.equal(next.primary, secondary, 'the secondary with the highest log takes over (S5)');
    assert.deepEqual(next.secondaries, [other]);
    assert.deepEqual(next.learners, [c.primary]);
    const again = beat(ns, c.primary, 1100, progress(0, 1, 'inactive', 10, true));
    assert.deepEqual(again.kind === 'ok' && again.configs.map((x) => x.epoch), [2], 'now it is told: as a learner');
  });

  test('a corrupt secondary becomes a learner; the primary goes on', () => {
    const ns = formed();
    const c = ns.map.configs[0]!;
    const [bad, good] = c.secondaries as [NodeId, NodeId];
    beat(ns, c.primary, 1000, progress(0, 1, 'primary', 10));
    beat(ns, good, 1000, progress(0, 1, 'secondary', 10));
    beat(ns, bad, 1000, progress(0, 1, 'inactive', 10, true));
    assert.equal(ns.onTick(1000), true);
    const next = ns.map.configs[0]!;
    assert.deepEqual(
      { primary: next.primary, secondaries: next.secondaries, learners: next.learners },
      { primary: c.primary, secondaries: [good], learners: [bad] },
    );
  });

  test(
    'with no healthy member to take over, the partition stays unavailable: never ' +
      'started afresh from the corrupt copy',
    () => {
      const ns = formed();
      const c = ns.map.configs[0]!;
      // Every member alive and each reports the partition corrupt: nothing may become primary.
      for (const id of [c.primary, ...c.secondaries]) beat(ns, id, 1000, progress(0, 1, 'inactive', 10, true));
      ns.onTick(1000);
      assert.deepEqual(ns.map.configs[0], c, 'configuration unchanged');
    },
  );
});

describe('review fixes of the corruption path (S13 with S5, S7, S11)', () => {
  /** {A, [], [C]} at epoch 1 (--min-write-replicas 1), three writes, C caught up: A asked to promote C. */
  function learnerCaughtUp(): Cluster {
    const c = new Cluster();
    for (const n of [A, C]) c.add(n, replica(n, undefined, 1));
    for (const n of [A, C]) c.step(n, { kind: 'configure', config: config(1, A, [], [C]) });
    c.settle();
    for (let i = 1; i <= 3; i++) c.step(A, { kind: 'clientWrite', requestId: i, op: put(`k${i}`, `v${i}`) });
    c.settle();
    assert.ok(
      c.promotions.some((p) => p.node === A && p.learner === C),
      'A asks to promote the caught-up learner',
    );
    assert.equal(c.nodes.get(C)!.lastSeq, c.nodes.get(A)!.lastSeq);
    return c;
  }

  test(
    'a corrupt learner never drops the partition in the epoch it acked in; only a new ' +
      'epoch makes it relearn from zero',
    () => {
      // The data-loss scenario: C caught up and A's promotion request is on its way; a dump
      // reads a corrupt value on C; the same configuration is pushed again. Dropping now would
      // leave A counting C's old acks and the request still applicable: C would become a
      // secondary that holds nothing, and by S5 the next primary if A dies.
      const c = learnerCaughtUp();
      const cr = c.nodes.get(C)!;
      c.step(C, { kind: 'corrupt', reason: 'partition 0 stored value: checksum mismatch (S13)' });
      c.sync(C);
      c.network = [];
      c.step(C, { kind: 'configure', config: config(1, A, [], [C]) });
      c.settle();
      assert.equal(
        c.durableOps.get(C)!.some((o) => o.kind === 'dropPartition'),
        false,
        'no drop at the same epoch',
      );
      assert.equal(cr.progress().corrupt, true);
      assert.equal(cr.progress().role, 'inactive');
      assert.ok(cr.lastSeq > 0, 'it keeps its copy meanwhile');
      // The nameserver's answer (see the nameserver test below): the same members, a new epoch.
      const promotionsBefore = c.promotions.length;
      for (const n of [A, C]) c.step(n, { kind: 'configure', config: config(2, A, [], [C]) });
      const dropAt = c.disk.get(C)!.findIndex((p) => p.ops.some((o) => o.kind === 'dropPartition'));
      assert.ok(dropAt >= 0, 'dropped under the new epoch');
      assert.deepEqual(
        c.disk.get(C)![dropAt]!.ops.map((o) => o.kind),
        ['dropPartition', 'setMeta'],
      );
      c.settle();
      // A promotes C again only on acks C sent after the drop, for everything A holds.
      const again = c.promotions.slice(promotionsBefore);
      assert.ok(
        again.some((p) => p.learner === C),
        'promoted again once caught up',
      );
      assert.equal(cr.lastSeq, c.nodes.get(A)!.lastSeq);
      assert.equal(cr.appliedSeq, c.nodes.get(A)!.appliedSeq);
    },
  );

  test(
    'nameserver: a learner reporting corrupt in the current epoch gets a new epoch, so a promotion request based ' +
      'on its old acks is refused',
    () => {
      const ns = formed();
      const c1 = ns.map.configs[0]!;
      const [keep, learner] = c1.secondaries as [NodeId, NodeId];
      // Make `learner` a learner at epoch 2 (its link to the primary was cut, §4).
      assert.equal(ns.onRemoveSecondary(partitionId(0), 1, learner).changed, true);
      const c2 = ns.map.configs[0]!;
      assert.deepEqual(c2.learners, [learner]);
      beat(ns, c1.primary, 1000, progress(0, 2, 'primary', 10));
      beat(ns, keep, 1000, progress(0, 2, 'secondary', 10));
      beat(ns, learner, 1000, progress(0, 2, 'inactive', 10, true));
      assert.equal(ns.onTick(1000), true, 'the corrupt learner gets a new epoch');
      const c3 = ns.map.configs[0]!;
      assert.equal(c3.epoch, 3);
      assert.deepEqual(
        { primary: c3.primary, secondaries: c3.secondaries, learners: c3.learners },
        { primary: c1.primary, secondaries: [keep], learners: [learner] },
      );
      // The primary's request made at epoch 2 (the learner had caught up before) is void.
      const r = ns.onPromote(partitionId(0), 2, learner, `${learner}-1`);
      assert.equal(r.changed, false);
      assert.equal(r.config?.epoch, 3);
      // Still reporting corrupt at the old epoch (it has not adopted epoch 3 yet): no further epoch.
      beat(ns, learner, 1100, progress(0, 2, 'inactive', 10, true));
      assert.equal(ns.onTick(1100), false);
      // Relearned from zero under epoch 3 and caught up: a request at epoch 3 is applied.
      beat(ns, learner, 1200, progress(0, 3, 'learner', 11));
      assert.equal(ns.onTick(1200), false);
      assert.equal(ns.onPromote(partitionId(0), 3, learner, `${learner}-1`).changed, true);
    },
  );

  test('a primary counts a peer that asks again for entries it acked as holding nothing above that point', () => {
    // Defence in depth (S1: acks are cumulative): whatever made the peer lose entries in the
    // epoch, its old acks must not earn it a promotion (S7).
    const c = new Cluster();
    for (const n of [A, B, C]) c.add(n, replica(n));
    for (const n of [A, B, C]) c.step(n, { kind: 'configure', config: config(1, A, [B], [C]) });
    const notB = (m: { from: NodeId; to: NodeId }) => m.from !== B && m.to !== B;
    const onlyB = (m: { from: NodeId; to: NodeId }) => m.from === B || m.to === B;
    const run = (filter: (m: { from: NodeId; to: NodeId }) => boolean) => {
      for (let i = 0; i < 20; i++) {
        c.flush();
        for (const n of [A, B, C]) c.sync(n);
        if (c.deliver(filter) === 0) return;
      }
    };
    // C acks A's epoch-start entry; B does not yet, so A does not serve and promotes nobody.
    run(notB);
    assert.equal(c.nodes.get(C)!.lastSeq, c.nodes.get(A)!.lastSeq);
    assert.equal(c.nodes.get(A)!.serving, false);
    assert.equal(c.promotions.length, 0);
    // C asks from seq 1 again (it lost what it acked).
    c.step(A, {
      kind: 'peer',
      from: C,
      message: {
        kind: 'prepareNack',
        partition: partitionId(0),
        epoch: epoch(1),
        needFromSeq: seq(1),
        incarnation: 'c-1',
      },
    });
    // B acks: A serves. C's old ack must not make it caught up.
    run(onlyB);
    assert.equal(c.nodes.get(A)!.serving, true);
    assert.equal(c.promotions.length, 0, 'no promotion on acks the learner took back');
    // C acks again (it holds the entries): now it is caught up.
    c.settle();
    assert.ok(c.promotions.some((p) => p.learner === C));
  });

  test(
    'a corrupt learner made a learner again while a snapshot install runs drops the ' +
      'partition only after the install ended',
    () => {
      // Else the install lands after the drop, and its completion (older than what the
      // relearning replica applied meanwhile) breaks `applied >= appliedSeq` (exit 70).
      const c = new Cluster();
      for (const n of [A, B, C]) c.add(n, replica(n));
      for (const n of [A, B, C]) c.step(n, { kind: 'configure', config: config(1, A, [B], [C]) });
      c.settle();
      for (let i = 1; i <= 5; i++) c.step(A, { kind: 'clientWrite', requestId: i, op: put(`k${i}`, `v${i}`) });
      c.settle();
      const cr = c.nodes.get(C)!;
      // C is offered a snapshot (as if A had truncated its log) and starts fetching it.
      const offer = c.step(C, {
        kind: 'peer',
        from: A,
        message: {
          kind: 'snapshotOffer',
          partition: partitionId(0),
          config: config(1, A, [B], [C]),
          logBase: seq(100),
        },
      });
      assert.ok(offer.some((o) => o.kind === 'fetchSnapshot'));
      c.step(C, { kind: 'corrupt', reason: 'partition 0 stored value: checksum mismatch (S13)' });
      for (const n of [A, B, C]) c.step(n, { kind: 'configure', config: config(2, A, [B], [C]) });
      c.settle();
      assert.equal(
        c.durableOps.get(C)!.some((o) => o.kind === 'dropPartition'),
        false,
        'no drop while the install runs',
      );
      assert.equal(cr.progress().role, 'inactive');
      // The install ends (here: it landed, at seq 4 of epoch 1); only now is the partition dropped.
      c.step(C, { kind: 'snapshotInstalled', applied: { seq: seq(4), epoch: epoch(1) }, dedup: [] });
      assert.deepEqual(
        c.disk
          .get(C)!
          .at(-1)!
          .ops.map((o) => o.kind),
        ['dropPartition', 'setMeta'],
      );
      c.settle();
      assert.equal(cr.progress().role, 'learner');
      assert.equal(cr.lastSeq, c.nodes.get(A)!.lastSeq, 'relearned from zero');
      assert.equal(cr.appliedSeq, c.nodes.get(A)!.appliedSeq);
      // The same with a failed fetch.
      const d = new Cluster();
      for (const n of [A, B, C]) d.add(n, replica(n));
      for (const n of [A, B, C]) d.step(n, { kind: 'configure', config: config(1, A, [B], [C]) });
      d.settle();
      d.step(C, {
        kind: 'peer',
        from: A,
        message: {
          kind: 'snapshotOffer',
          partition: partitionId(0),
          config: config(1, A, [B], [C]),
          logBase: seq(100),
        },
      });
      d.step(C, { kind: 'corrupt', reason: 'bad' });
      d.step(C, { kind: 'configure', config: config(2, A, [B], [C]) });
      d.sync(C);
      assert.equal(
        d.durableOps.get(C)!.some((o) => o.kind === 'dropPartition'),
        false,
      );
      d.step(C, { kind: 'snapshotFailed', reason: 'learner is not a learner any more' });
      assert.deepEqual(
        d.disk
          .get(C)!
          .at(-1)!
          .ops.map((o) => o.kind),
        ['dropPartition', 'setMeta'],
      );
    },
  );

  test(
    'the corrupt marker is persisted in the metadata before ' + 'the replica reports it, and the drop batch clears it',
    () => {
      const c = startedCluster();
      const b = c.nodes.get(B)!;
      const out = c.step(B, { kind: 'corrupt', reason: 'partition 0 stored value: checksum mismatch (S13)' });
      const persist = out.find((o) => o.kind === 'persist');
      assert.ok(persist && persist.kind === 'persist');
      assert.deepEqual(persist.ops, [
        {
          kind: 'setMeta',
          partition: partitionId(0),
          meta: {
            epoch: epoch(1),
            config: config(1, A, [B, C]),
            corrupt: 'partition 0 stored value: checksum mismatch (S13)',
          },
        },
      ]);
      assert.equal(b.progress().corrupt, undefined, 'not reported before the marker is durable');
      c.sync(B);
      assert.equal(b.progress().corrupt, true);
      // Adopting a later epoch while still corrupt keeps the marker.
      c.step(B, { kind: 'configure', config: config(2, C, [A]) });
      const kept = c.disk.get(B)!.at(-1)!.ops[0]!;
      assert.equal(kept.kind === 'setMeta' && kept.meta.corrupt, 'partition 0 stored value: checksum mismatch (S13)');
      c.step(B, { kind: 'configure', config: config(3, C, [A], [B]) });
      const drop = c.disk.get(B)!.at(-1)!.ops;
      assert.deepEqual(
        drop.map((o) => o.kind),
        ['dropPartition', 'setMeta'],
      );
      assert.equal(drop[1]!.kind === 'setMeta' && drop[1]!.meta.corrupt, undefined, 'the drop batch clears the marker');
      // Recovered from a marker at open: it starts corrupt and reports it.
      const r = replica(B, {
        epoch: epoch(2),
        config: config(2, C, [A]),
        applied: { seq: seq(0), epoch: epoch(0) },
        logBase: { seq: seq(0), epoch: epoch(0) },
        entries: [],
        corrupt: 'marker',
      });
      assert.equal(r.progress().corrupt, true);
    },
  );
});

describe('nameserver: a partition whose only member is corrupt (S13, S5)', () => {
  test('it stays unavailable, a returning removed copy is not taken, and the situation is named with that copy', () => {
    // {P, [C]}; P dies; C leads alone and P is removed; C finds the partition corrupt; P
    // comes back. P's copy may lack writes acknowledged after it was removed: never taken
    // automatically (no learner can be added without a healthy primary), but named for an operator.
    const two = { partitions: 1, replicas: 2, minWriteReplicas: 1, initialNodes: 2 };
    const ns = new Nameserver(Nameserver.newMap('test', two), { deadAfterMs: 5000, rereplicateAfterMs: 30_000 }, 0);
    for (const id of [S[0], S[1]])
      ns.onRegister(
        { nodeId: id, address: `127.0.0.1:${id}`, backend: 'lmdb', incarnation: `${id}-1`, durable: true },
        0,
      );
    assert.equal(ns.onTick(0), true);
    const c1 = ns.map.configs[0]!;
    const [p, cNode] = [c1.primary, c1.secondaries[0]!];
    // P stops heartbeating; C takes over alone and P is removed.
    beat(ns, cNode, 6000, progress(0, 1, 'secondary', 10));
    assert.equal(ns.onTick(6000), true);
    const c = ns.map.configs[0]!;
    assert.deepEqual(
      { epoch: c.epoch, primary: c.primary, secondaries: c.secondaries, learners: c.learners },
      { epoch: 2, primary: cNode, secondaries: [], learners: [] },
    );
    assert.deepEqual(ns.stuckCorrupt(6000), []);
    // C finds the partition corrupt; P comes back with its older copy.
    beat(ns, cNode, 6100, progress(0, 2, 'inactive', 11, true));
    ns.onRegister(
      { nodeId: p, address: `127.0.0.1:${p}`, backend: 'lmdb', incarnation: `${p}-2`, durable: true },
      6100,
    );
    ns.onHeartbeat(
      { nodeId: p, incarnation: `${p}-2`, uptimeMs: 10, keys: 0, progress: [progress(0, 1, 'inactive', 10)] },
      6100,
    );
    ns.onTick(6200);
    assert.deepEqual(ns.map.configs[0], c, 'configuration unchanged: unavailable, nothing taken from P');
    assert.deepEqual(ns.stuckCorrupt(6200), [
      { partition: partitionId(0), epoch: 2, corrupt: [cNode], holders: [{ node: p, lastEpoch: 1, lastSeq: 10 }] },
    ]);
  });
});

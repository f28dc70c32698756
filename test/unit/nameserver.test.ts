/**
 * Unit tests of partitioning (§3) and the nameserver state machine (§4, §6, S3, S5, S15):
 * the hash is stable, primaries spread evenly, the map forms once enough storage servers
 * registered, a lost primary is replaced by the live secondary with the highest log, a lost
 * secondary is removed, epochs only grow, and nothing fails over below half alive.
 */
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { Nameserver } from '../../src/core/nameserver/nameserver.js';
import { crc32, initialPlacement, partitionOf } from '../../src/core/partitioning.js';
import type { ReplicaProgress } from '../../src/core/replica/replica.js';
import { type NodeId, type PartitionId, type Role, epoch, nodeId, partitionId, seq } from '../../src/core/types.js';

describe('partitioning', () => {
  test('crc32 matches the standard check value', () => {
    assert.equal(crc32(Buffer.from('123456789')), 0xcbf43926);
  });

  test('partitionOf is stable and in range', () => {
    assert.equal(partitionOf(Buffer.from('hello'), 16), crc32(Buffer.from('hello')) % 16);
    for (let i = 0; i < 1000; i++) assert.ok(partitionOf(Buffer.from(`k${i}`), 7) < 7);
  });

  test('initial placement spreads primaries evenly and never repeats a node in a partition', () => {
    const nodes = ['s1', 's2', 's3', 's4'].map(nodeId);
    const placement = initialPlacement(nodes, 16, 3);
    const led = new Map<string, number>();
    for (const p of placement) {
      led.set(p.primary, (led.get(p.primary) ?? 0) + 1);
      assert.equal(new Set([p.primary, ...p.secondaries]).size, 3);
    }
    assert.deepEqual([...led.values()], [4, 4, 4, 4]);
  });
});

const S = ['s1', 's2', 's3'].map(nodeId) as [NodeId, NodeId, NodeId];
const settings = { partitions: 4, replicas: 3, minWriteReplicas: 2, initialNodes: 3 };

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

function progress(p: number, e: number, role: Role, lastSeq: number): ReplicaProgress {
  return {
    partition: partitionId(p),
    epoch: epoch(e),
    role,
    lastSeq: seq(lastSeq),
    lastEpoch: epoch(e),
    commitSeq: seq(0),
    appliedSeq: seq(0),
    serving: role === 'primary',
  };
}

function beat(
  ns: Nameserver,
  id: NodeId,
  now: number,
  progressOf: (p: PartitionId) => ReplicaProgress | undefined,
  incarnation = `${id}-1`,
): void {
  const list = ns.map.configs.map((c) => progressOf(c.partition)).filter((x): x is ReplicaProgress => x !== undefined);
  assert.equal(ns.onHeartbeat({ nodeId: id, incarnation, uptimeMs: now, keys: 0, progress: list }, now).kind, 'ok');
}

describe('nameserver', () => {
  test('the map forms only once initialNodes storage servers registered', () => {
    const ns = new Nameserver(
      Nameserver.newMap('test', settings),
      { deadAfterMs: 5000, rereplicateAfterMs: 30_000 },
      0,
    );
    ns.onRegister({ nodeId: S[0], address: 'x:1', backend: 'lmdb', incarnation: 'i', durable: true }, 0);
    assert.equal(ns.onTick(0), false);
    assert.equal(ns.formed, false);
    const f = formed();
    assert.equal(f.map.configs.length, 4);
    assert.ok(f.map.configs.every((c) => c.epoch === 1 && c.secondaries.length === 2));
  });

  test('a dead primary is replaced by the live secondary with the highest log (S5)', () => {
    const ns = formed();
    const c0 = ns.map.configs[0]!;
    const [s2, s3] = c0.secondaries as [NodeId, NodeId];
    const now = 6000;
    beat(ns, s2, now, (p) => (p === 0 ? progress(0, 1, 'secondary', 10) : undefined));
    beat(ns, s3, now, (p) => (p === 0 ? progress(0, 1, 'secondary', 12) : undefined));
    // The primary sent no heartbeat for 6 s: dead.
    assert.equal(ns.onTick(now), true);
    const next = ns.map.configs[0]!;
    assert.equal(next.epoch, 2);
    assert.equal(next.primary, s3);
    assert.deepEqual(next.secondaries, [s2]);
  });

  test(
    'a primary that restarted (inactive in its epoch) is ' + 'replaced at a new epoch and stays as a secondary (S4)',
    () => {
      const ns = formed();
      const c0 = ns.map.configs[0]!;
      for (const id of S) {
        const role: Role = id === c0.primary ? 'inactive' : 'secondary';
        beat(ns, id, 1000, (p) => (p === 0 ? progress(0, 1, role, 5) : undefined));
      }
      assert.equal(ns.onTick(1000), true);
      const next = ns.map.configs[0]!;
      assert.equal(next.epoch, 2);
      assert.notEqual(next.primary, c0.primary);
      assert.ok(next.secondaries.includes(c0.primary));
    },
  );

  test('a dead secondary is removed under a new epoch', () => {
    const ns = formed();
    const now = 6000;
    const c0 = ns.map.configs[0]!;
    const dead = c0.secondaries[1]!;
    for (const id of S.filter((s) => s !== dead)) {
      beat(ns, id, now, (p) => progress(p, 1, ns.map.configs[p]!.primary === id ? 'primary' : 'secondary', 3));
    }
    assert.equal(ns.onTick(now), true);
    for (const c of ns.map.configs) {
      assert.ok(![c.primary, ...c.secondaries].includes(dead), `partition ${c.partition} still holds ${dead}`);
      assert.equal(c.epoch, 2);
    }
  });

  test('a storage server whose storage failed counts as dead at once, until it registers again', () => {
    const ns = formed();
    const failed = S[1];
    const now = 1000; // well within --dead-after-ms
    for (const id of S)
      beat(ns, id, now, (p) => progress(p, 1, ns.map.configs[p]!.primary === id ? 'primary' : 'secondary', 3));
    ns.onStorageFailed(failed, 'another incarnation');
    assert.equal(ns.onTick(now), false, 'a report from another incarnation counted');
    ns.onStorageFailed(failed, `${failed}-1`);
    assert.equal(ns.onTick(now), true);
    for (const c of ns.map.configs)
      assert.ok(![c.primary, ...c.secondaries].includes(failed), `partition ${c.partition} still holds ${failed}`);
    ns.onRegister({ nodeId: failed, address: 'x', backend: 'redis', incarnation: `${failed}-2`, durable: true }, now);
    assert.equal(ns.isAlive(ns.nodes.get(failed)!, now), true);
  });

  test('a non-durable node that restarted empty is not told its old roles and relearns (S4)', () => {
    const ns = new Nameserver(
      Nameserver.newMap('test', settings),
      { deadAfterMs: 5000, rereplicateAfterMs: 30_000 },
      0,
    );
    for (const id of S)
      ns.onRegister(
        { nodeId: id, address: id, backend: 'memory', incarnation: `${id}-1`, durable: false, activePartitions: [] },
        0,
      );
    assert.equal(ns.onTick(0), true);
    const amnesiac = ns.map.configs[0]!.primary;
    const now = 1000;
    for (const id of S)
      beat(ns, id, now, (p) => progress(p, 1, ns.map.configs[p]!.primary === id ? 'primary' : 'secondary', 3));
    ns.onRegister(
      {
        nodeId: amnesiac,
        address: amnesiac,
        backend: 'memory',
        incarnation: `${amnesiac}-2`,
        durable: false,
        activePartitions: [],
      },
      now,
    );
    const reply = ns.onHeartbeat(
      { nodeId: amnesiac, incarnation: `${amnesiac}-2`, uptimeMs: 1, keys: 0, progress: [] },
      now,
    );
    assert.equal(reply.kind, 'ok');
    assert.deepEqual(reply.kind === 'ok' ? reply.configs : [], [], 'the empty node was told its old roles');
    assert.equal(ns.onTick(now), true);
    for (const c of ns.map.configs) {
      assert.ok(![c.primary, ...c.secondaries].includes(amnesiac), `partition ${c.partition}: ${JSON.stringify(c)}`);
      assert.ok(c.learners.includes(amnesiac), `partition ${c.partition} did not take it back as a learner`);
      assert.equal(c.epoch, 2);
    }
  });

  test(
    "a primary's request to remove a silent secondary makes it a learner, never below --min-write-replicas (§4, " +
      'S8)',
    () => {
      const ns = formed();
      const c0 = ns.map.configs[0]!;
      const [s1, s2] = c0.secondaries as [NodeId, NodeId];
      assert.equal(ns.onRemoveSecondary(c0.partition, c0.epoch - 1, s1).changed, false, 'applied at an old epoch');
      const { config, changed } = ns.onRemoveSecondary(c0.partition, c0.epoch, s1);
      assert.equal(changed, true);
      assert.deepEqual([config!.secondaries, config!.learners, config!.epoch], [[s2], [s1], c0.epoch + 1]);
      assert.equal(
        ns.onRemoveSecondary(c0.partition, config!.epoch, s2).changed,
        false,
        'removed below --min-write-replicas=2',
      );
    },
  );

  test(
    'an empty restarted non-durable member is never made ' + 'primary while a dead member may hold the data (S4, S5)',
    () => {
      const ns = new Nameserver(
        Nameserver.newMap('test', settings),
        { deadAfterMs: 5000, rereplicateAfterMs: 30_000 },
        0,
      );
      const four = [...S, nodeId('s4')];
      for (const id of four)
        ns.onRegister(
          { nodeId: id, address: id, backend: 'memory', incarnation: `${id}-1`, durable: false, activePartitions: [] },
          0,
        );
      assert.equal(ns.onTick(0), true);
      const c0 = ns.map.configs[0]!;
      const [primary, s1, s2] = [c0.primary, ...c0.secondaries] as [NodeId, NodeId, NodeId];
      const bystander = four.find((n) => n !== primary && n !== s1 && n !== s2)!;
      // The primary is paused past dead-after (it still holds the data), s2 crashed for good,
      // and s1 restarted empty.
      const now = 6000;
      ns.onRegister(
        { nodeId: s1, address: s1, backend: 'memory', incarnation: `${s1}-2`, durable: false, activePartitions: [] },
        now,
      );
      for (const id of [s1, bystander]) beat(ns, id, now, () => undefined, id === s1 ? `${s1}-2` : `${id}-1`);
      ns.onTick(now);
      const after = ns.map.configs[0]!;
      assert.notEqual(after.primary, s1, `the empty ${s1} was made primary: ${JSON.stringify(after)}`);
    },
  );

  test('below half alive: no new primary (S15), but a live primary drops its dead secondaries', () => {
    const ns = formed();
    const survivor = ns.map.configs[0]!.primary;
    const before = ns.map.configs.map((c) => ({ ...c }));
    const now = 6000;
    beat(ns, survivor, now, (p) =>
      progress(p, 1, ns.map.configs[p]!.primary === survivor ? 'primary' : 'secondary', 3),
    );
    assert.equal(ns.onTick(now), true);
    ns.map.configs.forEach((c, i) => {
      const old = before[i]!;
      if (old.primary === survivor) {
        assert.deepEqual(
          [c.primary, c.secondaries, c.epoch],
          [survivor, [], 2],
          `partition ${i} kept dead secondaries`,
        );
      } else {
        assert.deepEqual(c, old, `partition ${i} failed over with 1 of 3 alive`);
      }
    });
  });

  test(
    'a returning node is added as a learner at once; a ' + 'promotion applies only at its epoch and incarnation (S7)',
    () => {
      const ns = formed();
      const dead = S[2];
      let now = 6000;
      for (const id of S.filter((s) => s !== dead))
        beat(ns, id, now, (p) => progress(p, 1, ns.map.configs[p]!.primary === id ? 'primary' : 'secondary', 3));
      ns.onTick(now);
      assert.ok(ns.map.configs.every((c) => ![c.primary, ...c.secondaries].includes(dead)));
      // It comes back (new incarnation) and reports its old replicas as inactive.
      now += 1000;
      ns.onRegister({ nodeId: dead, address: 'x', backend: 'lmdb', incarnation: 'again', durable: true }, now);
      beat(ns, dead, now, (p) => progress(p, 1, 'inactive', 3), 'again');
      for (const id of S.filter((s) => s !== dead))
        beat(ns, id, now, (p) =>
          progress(p, ns.map.configs[p]!.epoch, ns.map.configs[p]!.primary === id ? 'primary' : 'secondary', 3),
        );
      assert.equal(ns.onTick(now), true);
      const c0 = ns.map.configs[0]!;
      assert.deepEqual(c0.learners, [dead]);
      assert.equal(
        ns.onPromote(c0.partition, c0.epoch - 1, dead, 'again').changed,
        false,
        'promotion at an old epoch applied',
      );
      assert.equal(
        ns.onPromote(c0.partition, c0.epoch, dead, `${dead}-1`).changed,
        false,
        'promotion on the acks of an earlier incarnation applied',
      );
      const { config, changed } = ns.onPromote(c0.partition, c0.epoch, dead, 'again');
      assert.equal(changed, true);
      assert.ok(config!.secondaries.includes(dead));
      assert.deepEqual(config!.learners, []);
      assert.equal(
        ns.onPromote(c0.partition, c0.epoch, dead, 'again').changed,
        false,
        'a repeated request applied twice',
      );
    },
  );

  test('a partition short of R for --rereplicate-after-ms gets a learner on another live server', () => {
    const ns = new Nameserver(
      Nameserver.newMap('t', { ...settings, initialNodes: 3 }),
      { deadAfterMs: 5000, rereplicateAfterMs: 30_000 },
      0,
    );
    const four = [...S, nodeId('s4')];
    for (const id of S) ns.onRegister({ nodeId: id, address: 'x', backend: 'lmdb', incarnation: id, durable: true }, 0);
    ns.onTick(0);
    ns.onRegister({ nodeId: four[3]!, address: 'y', backend: 'lmdb', incarnation: 's4', durable: true }, 0);
    const dead = S[2];
    const alive = four.filter((s) => s !== dead);
    const beatAll = (now: number) =>
      alive.forEach((id) =>
        assert.equal(
          ns.onHeartbeat(
            {
              nodeId: id,
              incarnation: id,
              uptimeMs: now,
              keys: 0,
              progress: ns.map.configs
                .filter((c) => [c.primary, ...c.secondaries].includes(id))
                .map((c) => progress(c.partition, c.epoch, c.primary === id ? 'primary' : 'secondary', 3))
                .concat(id === 's4' ? [progress(99, 0, 'inactive', 0)] : []),
            },
            now,
          ).kind,
          'ok',
        ),
      );
    beatAll(6000);
    ns.onTick(6000);
    assert.ok(
      ns.map.configs.every((c) => c.learners.length === 0),
      'a learner before the grace period',
    );
    beatAll(20_000);
    ns.onTick(20_000);
    assert.ok(
      ns.map.configs.every((c) => c.learners.length === 0),
      'a learner before the grace period',
    );
    beatAll(36_001);
    ns.onTick(36_001);
    assert.ok(
      ns.map.configs.every((c) => 1 + c.secondaries.length + c.learners.length === 3),
      'not every partition has 3 replicas',
    );
    assert.ok(ns.map.configs.every((c) => c.learners.every((l) => l === 's4')));
  });

  test('a restarted nameserver treats known nodes as alive for one dead-after period (S15)', () => {
    const ns = formed();
    const restarted = new Nameserver(ns.map, { deadAfterMs: 5000, rereplicateAfterMs: 30_000 }, 100_000);
    assert.equal(restarted.onTick(100_000), false);
    assert.equal(restarted.onTick(104_000), false);
    assert.deepEqual(restarted.map.configs, ns.map.configs);
  });

  test('epochs only grow', () => {
    const ns = formed();
    const seen = ns.map.configs.map((c) => c.epoch as number);
    let now = 6000;
    for (let round = 0; round < 3; round++) {
      for (const id of S) beat(ns, id, now, (p) => progress(p, ns.map.configs[p]!.epoch, 'secondary', 1));
      ns.onTick(now);
      ns.map.configs.forEach((c, i) => {
        assert.ok(c.epoch >= seen[i]!);
        seen[i] = c.epoch;
      });
      now += 1000;
    }
  });
});

/**
 * The chaos runner's pure parts, fast: the nemesis schedule is a function of the seed (same
 * seed, same schedule; another seed, another), stays inside the run with one fault at a
 * time, covers every allowed kind in a short run, and never uses a kind that was not
 * allowed; `--faults` parsing; unavailability windows and op counts from a history.
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { countOps, unavailability } from '../../src/chaos/report.js';
import type { ChaosOp } from '../../src/chaos/protocol.js';
import {
  COOLDOWN_MS,
  FAULT_KINDS,
  LEADER_FAULT_KINDS,
  parseFaultKinds,
  planNemesis,
  WARMUP_MS,
} from '../../src/chaos/schedule.js';

const storageIds = ['s1', 's2', 's3'];

test('the nemesis schedule is deterministic from the seed', () => {
  const a = planNemesis({ seed: 42, durationMs: 60_000, storageIds, kinds: FAULT_KINDS });
  const b = planNemesis({ seed: 42, durationMs: 60_000, storageIds, kinds: FAULT_KINDS });
  assert.deepEqual(a, b);
  assert.ok(a.length >= 5, `60 s hold several faults, got ${a.length}`);
  const c = planNemesis({ seed: 43, durationMs: 60_000, storageIds, kinds: FAULT_KINDS });
  assert.notDeepEqual(a, c, 'another seed gives another schedule');
});

test('faults come one at a time, inside the run, and cycle through every allowed kind', () => {
  for (let seed = 1; seed <= 200; seed++) {
    const durationMs = 30_000;
    const plan = planNemesis({ seed, durationMs, storageIds, kinds: FAULT_KINDS });
    let end = 0;
    for (const f of plan) {
      assert.ok(f.atMs >= WARMUP_MS && f.atMs >= end, `seed ${seed}: overlapping or early fault ${JSON.stringify(f)}`);
      assert.ok(
        f.durationMs > 0 && f.atMs + f.durationMs <= durationMs - COOLDOWN_MS,
        `seed ${seed}: fault past the cooldown ${JSON.stringify(f)}`,
      );
      end = f.atMs + f.durationMs;
      if (f.kind === 'split') {
        const [x, y] = f.sides!;
        assert.ok(x.length > 0 && y.length > 0);
        assert.deepEqual([...x, ...y].sort(), ['nameserver', ...storageIds].sort());
      } else {
        assert.ok(f.target === 'nameserver' || storageIds.includes(f.target!));
      }
    }
    const firstFive = new Set(plan.slice(0, 5).map((f) => f.kind));
    assert.equal(firstFive.size, Math.min(5, plan.length), `seed ${seed}: the first faults repeat a kind`);
  }
  const noNet = planNemesis({ seed: 7, durationMs: 120_000, storageIds, kinds: ['kill', 'pause'] });
  assert.ok(noNet.every((f) => f.kind === 'kill' || f.kind === 'pause'));
  assert.deepEqual(planNemesis({ seed: 7, durationMs: 120_000, storageIds, kinds: [] }), []);
});

test('--faults parsing', () => {
  assert.deepEqual(parseFaultKinds('kill, pause,kill'), ['kill', 'pause']);
  assert.throws(() => parseFaultKinds('kill,explode'), /unknown fault kind "explode"/);
});

test('unavailability windows and counts from a history', () => {
  const op = (
    client: string,
    key: string,
    invoke: number,
    complete: number | null,
    status: ChaosOp['status'],
  ): ChaosOp => ({ client, op: 'put', key, value: `${client}-${invoke}`, invoke, complete, status });
  // Times are on the history's clock; the load starts at 100 there.
  const ops = [
    op('c1', 'k0', 100, 200, 'ok'),
    op('c1', 'k0', 200, 3200, 'ok'),
    op('c2', 'k1', 150, null, 'unknown'),
    op('c2', 'k1', 3300, 3400, 'fail'),
  ];
  const faults = [{ kind: 'kill' as const, target: 's1', startMs: 500, endMs: 2500 }];
  const windows = unavailability(ops, faults, {
    fromMs: 0,
    toMs: 4000,
    opOffsetMs: 100,
    partitions: 1,
    minGapMs: 1000,
  });
  assert.deepEqual(windows, [
    { scope: 'overall', fromMs: 100, toMs: 3100, faults: [0] },
    { scope: 0, fromMs: 100, toMs: 3100, faults: [0] },
  ]);
  const c = countOps(ops);
  assert.deepEqual(c.put, { ok: 2, fail: 1, unknown: 1, total: 4 });
  assert.deepEqual(c.total, c.put);
  // A partition nobody tried during a gap is not unavailable in it.
  const idle = unavailability([op('c1', 'k0', 100, 200, 'ok'), op('c1', 'k0', 3090, 3100, 'ok')], [], {
    fromMs: 0,
    toMs: 3000,
    opOffsetMs: 100,
    partitions: 1,
    minGapMs: 1000,
  });
  assert.deepEqual(idle, []);
});

test('--ha schedules: leader faults have no planned target, kill-etcd names a member, pauses outlast the lease', () => {
  const nodes = ['n1', 'n2', 'n3'];
  const etcdMembers = ['m1', 'm2', 'm3'];
  for (let seed = 1; seed <= 100; seed++) {
    const plan = planNemesis({
      seed,
      durationMs: 60_000,
      storageIds: nodes,
      kinds: ['kill', 'pause', ...LEADER_FAULT_KINDS],
      etcdMembers,
      pastLeaseMs: 3000,
    });
    for (const f of plan) {
      assert.ok(f.atMs + f.durationMs <= 60_000 - COOLDOWN_MS, `seed ${seed}: past the cooldown`);
      if (f.kind === 'kill-etcd') assert.ok(etcdMembers.includes(f.target!));
      else if (f.kind === 'kill' || f.kind === 'pause') assert.ok(nodes.includes(f.target!), `seed ${seed}`);
      else assert.equal(f.target, undefined);
      if (f.kind === 'pause-leader' || f.kind === 'isolate-leader') assert.ok(f.durationMs >= 3000);
    }
  }
  assert.deepEqual(parseFaultKinds('kill-leader,kill-etcd'), ['kill-leader', 'kill-etcd']);
});

/**
 * Scripted scenarios: the simulator's cluster (real cores, simulated disk and network) with
 * faults placed by hand instead of by a seed, to drive one finding to its worst outcome.
 *
 * C5 (docs/consistency.md): a learner acks entries, crashes before its applies are
 * durable, restarts and discards its log above its applied seq (S11); the primary still
 * counts the old ack and gets it promoted (S7 — no incarnation id); then it is the only
 * live secondary when the primary is lost, so it becomes primary (S5) without an
 * acknowledged write. Fixed by the learner's incarnation id in acks, nacks and promotion
 * requests (S7, S11): the nameserver refuses the stale request, and n3 is promoted only
 * after it caught up again. The test asserts what DESIGN §6 promises: the write survives.
 */
import assert from 'node:assert/strict';
import { writeFileSync } from 'node:fs';
import { test } from 'node:test';
import type { HistoryOp } from '../../src/check/linearizability.js';
import { nodeId, partitionId } from '../../src/core/types.js';
import { SimClient } from './client.js';
import { SimNameserver } from './nameserver-node.js';
import { Observer } from './observer.js';
import { type Mutation, SimStorageNode } from './storage-node.js';
import { RELIABLE, SimulationFailure, World } from './world.js';

const P0 = partitionId(0);

function cluster(opts: { n2?: { mutation?: Mutation; fsyncMs?: number } } = {}) {
  const trace: string[] = [];
  const world = new World(1);
  world.traceSink = (l) => trace.push(l);
  world.net = RELIABLE;
  const observer = new Observer(world);
  const ns = new SimNameserver(world, {
    settings: { partitions: 1, replicas: 3, minWriteReplicas: 1, initialNodes: 4 },
    heartbeatMs: 100,
    deadAfterMs: 1500,
    rereplicateAfterMs: 60_000,
  });
  world.add(ns);
  const knobs = {
    tickMs: 20,
    heartbeatMs: 100,
    callTimeoutMs: 300,
    resendAfterMs: 300,
    logRetainEntries: 1000,
    fsyncMinMs: 2,
    fsyncMaxMs: 2,
    durable: true,
    snapshotTimeoutMs: 2000,
  };
  const nodes = ['n1', 'n2', 'n3', 'n4'].map((id) => {
    const o = id === 'n2' ? opts.n2 : undefined;
    const own = o
      ? {
          ...knobs,
          ...(o.mutation ? { mutation: o.mutation } : {}),
          ...(o.fsyncMs ? { fsyncMinMs: o.fsyncMs, fsyncMaxMs: o.fsyncMs } : {}),
        }
      : knobs;
    const n = new SimStorageNode(nodeId(id), world, own, observer);
    world.add(n);
    return n;
  });
  const history: HistoryOp[] = [];
  const client = (id: string) => {
    const c = new SimClient(
      id,
      world,
      { timeoutMs: 3000, attemptTimeoutMs: 500, thinkMinMs: 0, thinkMaxMs: 0, weights: { put: 1, get: 0, delete: 0 } },
      ['k'],
      history,
      observer,
    );
    world.add(c);
    return c;
  };
  const [n1, n2, n3, n4] = nodes as [SimStorageNode, SimStorageNode, SimStorageNode, SimStorageNode];
  /** Runs until `pred` holds (checked before every event), at most `ms`. */
  const until = (what: string, pred: () => boolean, ms = 10_000) => {
    world.run(world.now + ms, 1_000_000, pred);
    if (!pred()) {
      if (process.env.SIM_SCENARIO_TRACE) writeFileSync(process.env.SIM_SCENARIO_TRACE, trace.join('\n'));
      throw new Error(`${what}: not within ${ms} ms\n${trace.slice(-60).join('\n')}`);
    }
  };
  const op = (c: SimClient, kind: 'put' | 'get', key: string): HistoryOp => {
    let h: HistoryOp | undefined;
    c.perform(kind, key, (r) => (h = r));
    until(`${c.id} ${kind} ${key}`, () => h !== undefined);
    return h!;
  };
  const config = () => ns.configs()[0]!;
  const isolate = (id: string) => {
    for (const other of world.endpoints.keys()) world.cut(id, other);
  };
  const rejoin = (id: string) => {
    for (const other of world.endpoints.keys()) world.heal(id, other);
  };
  return { world, ns, n1, n2, n3, n4, client, until, op, config, isolate, rejoin, trace, observer };
}

test('C5: an acknowledged write survives a learner that restarts between its ack and its promotion', () => {
  const t = cluster();
  const { world, ns, n1, n2, n3, n4, until, op, config } = t;
  try {
    ns.start();
    for (const n of [n1, n2, n3, n4]) n.start();
    until('the map forms and n1 serves p0', () => config()?.primary === 'n1' && n1.replicas.get(P0)?.serving === true);
    assert.deepEqual([config().primary, ...config().secondaries], ['n1', 'n2', 'n3']);
    const c1 = t.client('c1');
    assert.equal(op(c1, 'put', 'k').status, 'ok');

    // n3 drops out and is removed; a write commits on n1 + n2.
    t.isolate('n3');
    until('n3 is removed', () => !config().secondaries.includes(nodeId('n3')));
    const acked = op(c1, 'put', 'k');
    assert.equal(acked.status, 'ok');

    // n3 comes back as a learner. n1 cannot reach the nameserver for a moment, so its
    // promotion request for n3 waits.
    t.rejoin('n3');
    until('n3 is a learner', () => config().learners.includes(nodeId('n3')));
    until('n1 knows it', () => n1.replicas.get(P0)?.config?.learners.includes(nodeId('n3')) === true);
    world.cut('n1', 'ns');
    const last = n1.replicas.get(P0)!.lastSeq;
    // n3 appends everything durably and acks it; before its applies are durable, it crashes.
    until('n3 holds the acknowledged write', () => n3.disk.lastPosition(P0).seq >= last);
    assert.ok(
      (n3.disk.parts.get(P0)?.applied.seq ?? 0) < last,
      'n3 applied it already (the scenario needs the crash before that)',
    );
    n3.crash(false);
    world.run(world.now + 5, 1_000_000);
    n3.start();
    // S11: restarted as a learner, n3 discards its log above its applied seq.
    until(
      'n3 is a learner again and dropped the write',
      () => n3.replicas.get(P0)?.role === 'learner' && n3.disk.lastPosition(P0).seq < last,
    );

    // n1 reaches the nameserver again; its old promotion request names n3's old incarnation,
    // so the nameserver refuses it (S7) while n3 cannot catch up from n1.
    world.cut('n1', 'n3');
    world.heal('n1', 'ns');
    world.run(world.now + 3000, 1_000_000);
    assert.ok(
      config().learners.includes(nodeId('n3')),
      `n3 was promoted on the acks of its previous incarnation: ${JSON.stringify(config())}`,
    );
    // Once n1 reaches n3 again, n3 catches up and is promoted on acks of its own.
    world.heal('n1', 'n3');
    until('n3 is promoted', () => config().secondaries.includes(nodeId('n3')), 10_000);
    until('n3 knows it', () => n3.replicas.get(P0)?.role === 'secondary');
    assert.ok(n3.disk.lastPosition(P0).seq >= last, 'n3 was promoted without the acknowledged write');

    // n1 and n2 become unreachable from the nameserver: n3 is the only live secondary (S5).
    world.cut('n1', 'ns');
    world.cut('n2', 'ns');
    until('n3 becomes primary', () => config().primary === 'n3' && n3.replicas.get(P0)?.serving === true, 10_000);

    const c2 = t.client('c2');
    const read = op(c2, 'get', 'k');
    assert.equal(read.status, 'ok');
    // DESIGN §6: the acknowledged write survives while n1 and n2 still hold it on disk.
    assert.equal(
      read.value,
      acked.value,
      `the acknowledged write ${acked.value} was lost: n3 serves ${read.value}\n${t.trace
        .filter((l) => / p0 |ns map|CRASH|starts/.test(l))
        .slice(-40)
        .join('\n')}`,
    );
  } catch (e) {
    if (e instanceof SimulationFailure) assert.fail(`${e.message}\n${t.trace.slice(-40).join('\n')}`);
    throw e;
  }
});

test(
  'planted bug: a secondary that acks before its append is durable loses an acknowledged ' +
    'write when it is the one left',
  () => {
    // The deterministic form of `--mutate ack-before-durable` (the seeded sweep rarely hits it
    // since acks carry incarnations): n2 acks at once but takes 200 ms to make the entry
    // durable; it crashes in between, comes back as the only live secondary, and takes over.
    const t = cluster({ n2: { mutation: 'ack-before-durable', fsyncMs: 200 } });
    const { world, ns, n1, n2, n3, n4, until, op, config } = t;
    ns.start();
    for (const n of [n1, n2, n3, n4]) n.start();
    until('the map forms and n1 serves p0', () => config()?.primary === 'n1' && n1.replicas.get(P0)?.serving === true);
    const c1 = t.client('c1');
    assert.equal(op(c1, 'put', 'k').status, 'ok');
    t.isolate('n3');
    until('n3 is removed', () => !config().secondaries.includes(nodeId('n3')));
    assert.deepEqual(config().secondaries, [nodeId('n2')]);
    until(
      'n1 serves in the new epoch',
      () =>
        n1.replicas.get(P0)?.epoch === config().epoch &&
        n1.replicas.get(P0)?.serving === true &&
        n2.replicas.get(P0)?.epoch === config().epoch,
    );
    let acked: HistoryOp | undefined;
    c1.perform('put', 'k', (r) => (acked = r));
    until('the write is acknowledged', () => acked !== undefined);
    assert.equal(acked!.status, 'ok');
    n2.crash(false); // its append was still in flight: lost
    n1.crash(false);
    world.run(world.now + 5, 1_000_000);
    n2.start();
    try {
      until('n2 becomes primary', () => config().primary === 'n2' && n2.replicas.get(P0)?.serving === true, 10_000);
      const read = op(t.client('c2'), 'get', 'k');
      assert.notEqual(
        read.value,
        acked!.value,
        `the planted bug was not caught: the write survived\n${t.trace
          .filter((l) => /n2|ns map|CRASH/.test(l))
          .slice(-60)
          .join('\n')}`,
      );
    } catch (e) {
      if (!(e instanceof SimulationFailure)) throw e;
      assert.match(e.message, /lost-write|divergent-apply/);
    }
  },
);

/**
 * Issue 15: rebalancing, draining and the graceful hand-off, on the nameserver core alone
 * (src/core/nameserver/balance.ts). A small loop plays the storage servers: each tick every
 * live server reports exactly its role in the current map (primaries serving), and every
 * learner is promoted at once, as its primary would once it caught up (S7). Checked at every
 * step: epochs only grow; a partition never has fewer than R members once it had R (a
 * replica moves as learner → secondary → old member removed); no server twice in a partition.
 */
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { rebalance } from '../../src/core/nameserver/balance.js';
import { Nameserver } from '../../src/core/nameserver/nameserver.js';
import type { ReplicaProgress } from '../../src/core/replica/replica.js';
import { type Config, type NodeId, epoch, nodeId, seq } from '../../src/core/types.js';

const P = 16;
const R = 3;

class World {
  readonly ns: Nameserver;
  now = 0;
  readonly alive = new Set<NodeId>();
  /** Per partition, a stand-in for how far each server's log got (the heir is the most advanced). */
  readonly lastSeq = new Map<string, number>();

  constructor(ids: readonly string[], opts: { rebalanceMoves?: number; rebalanceDelayMs?: number } = {}) {
    this.ns = new Nameserver(
      Nameserver.newMap('test', { partitions: P, replicas: R, minWriteReplicas: 2, initialNodes: ids.length }),
      { deadAfterMs: 5000, rereplicateAfterMs: 30_000, rebalanceDelayMs: 0, ...opts },
      0,
    );
    for (const id of ids) this.register(id);
    assert.equal(this.ns.onTick(0), true, 'the map forms');
    this.beatAll();
  }

  register(id: string): void {
    this.ns.onRegister(
      { nodeId: nodeId(id), address: `127.0.0.1:${id}`, backend: 'lmdb', incarnation: `${id}-1`, durable: true },
      this.now,
    );
    this.alive.add(nodeId(id));
  }

  progressOf(id: NodeId): ReplicaProgress[] {
    return this.ns.map.configs.flatMap((c) => {
      const role =
        c.primary === id
          ? 'primary'
          : c.secondaries.includes(id)
            ? 'secondary'
            : c.learners.includes(id)
              ? 'learner'
              : undefined;
      if (role === undefined) return [];
      const last = seq(this.lastSeq.get(`${c.partition}/${id}`) ?? 10);
      return [
        {
          partition: c.partition,
          epoch: c.epoch,
          role,
          lastSeq: last,
          lastEpoch: epoch(1),
          commitSeq: last,
          appliedSeq: last,
          serving: role === 'primary',
        },
      ];
    });
  }

  beatAll(): void {
    for (const id of this.alive) {
      const reply = this.ns.onHeartbeat(
        { nodeId: id, incarnation: `${id}-1`, uptimeMs: this.now, keys: 0, progress: this.progressOf(id) },
        this.now,
      );
      assert.equal(reply.kind, 'ok');
    }
  }

  /** One round: heartbeats, promotions of learners (S7), a tick; the invariants checked. */
  step(): boolean {
    this.now += 500;
    this.beatAll();
    const before = this.ns.map.configs;
    let changed = false;
    for (const c of this.ns.map.configs)
      for (const l of c.learners)
        if (this.alive.has(l)) changed = this.ns.onPromote(c.partition, c.epoch, l, `${l}-1`).changed || changed;
    this.beatAll();
    changed = this.ns.onTick(this.now) || changed;
    checkInvariants(before, this.ns.map.configs);
    return changed;
  }

  /** Steps until nothing changes for a few rounds; returns the rounds that changed the map. */
  settle(limit = 400): number {
    let quiet = 0;
    let changed = 0;
    for (let i = 0; i < limit; i++) {
      const c = this.step();
      quiet = c ? 0 : quiet + 1;
      if (c) changed++;
      if (quiet >= 4) return changed;
    }
    assert.fail(`the map did not settle within ${limit} rounds:\n${show(this.ns.map.configs)}`);
  }

  replicas(id: string): number {
    return this.ns.map.configs.filter((c) => [c.primary, ...c.secondaries, ...c.learners].includes(nodeId(id))).length;
  }

  leads(id: string): number {
    return this.ns.map.configs.filter((c) => c.primary === id).length;
  }
}

function show(configs: readonly Config[]): string {
  return configs
    .map((c) => `p${c.partition} e${c.epoch} ${c.primary} [${c.secondaries.join(',')}] L[${c.learners.join(',')}]`)
    .join('\n');
}

function checkInvariants(before: readonly Config[], after: readonly Config[]): void {
  for (const c of after) {
    const b = before[c.partition]!;
    assert.ok(c.epoch >= b.epoch, `p${c.partition}: epoch went back`);
    if (c.epoch === b.epoch) assert.deepEqual(c, b, `p${c.partition}: changed without a new epoch (S3)`);
    const all = [c.primary, ...c.secondaries, ...c.learners];
    assert.equal(new Set(all).size, all.length, `p${c.partition}: a server twice: ${all.join(',')}`);
    const members = 1 + c.secondaries.length;
    const had = 1 + b.secondaries.length;
    assert.ok(members >= Math.min(R, had), `p${c.partition}: ${had} members became ${members} (below R)`);
    // A new primary was a secondary of the configuration before (S5).
    if (c.primary !== b.primary)
      assert.ok(b.secondaries.includes(c.primary), `p${c.partition}: new primary ${c.primary} was no secondary`);
  }
}

function assertEven(w: World, ids: readonly string[]): void {
  const share = (P * R) / ids.length;
  const leadShare = P / ids.length;
  for (const id of ids) {
    assert.ok(
      Math.abs(w.replicas(id) - share) <= 1,
      `${id} holds ${w.replicas(id)} replicas, even share ${share}\n${show(w.ns.map.configs)}`,
    );
    assert.ok(Math.abs(w.leads(id) - leadShare) <= 1, `${id} leads ${w.leads(id)}, even share ${leadShare}`);
  }
}

describe('rebalancing (issue 15)', () => {
  test('two servers joining three receive replicas and primaries until spread evenly', () => {
    const w = new World(['s1', 's2', 's3']);
    assert.equal(w.settle(), 0, 'three servers holding everything is balanced already');
    w.register('s4');
    w.register('s5');
    const rounds = w.settle();
    assertEven(w, ['s1', 's2', 's3', 's4', 's5']);
    for (const c of w.ns.map.configs) assert.equal(1 + c.secondaries.length, R, `p${c.partition} has R members`);
    assert.ok(rounds > 5, `moves took ${rounds} rounds`);
  });

  test('at most two partitions carry a moving replica at once', () => {
    const w = new World(['s1', 's2', 's3']);
    w.register('s4');
    for (let i = 0; i < 40; i++) {
      w.now += 500;
      w.beatAll();
      w.ns.onTick(w.now);
      const moving = w.ns.map.configs.filter((c) => c.learners.length > 0 || 1 + c.secondaries.length > R);
      assert.ok(moving.length <= 2, `${moving.length} partitions moving at once`);
      // Promote one learner per round, so moves complete one by one.
      const c = w.ns.map.configs.find((x) => x.learners.length > 0);
      if (c) w.ns.onPromote(c.partition, c.epoch, c.learners[0]!, `${c.learners[0]}-1`);
    }
  });

  test('nothing moves until the map has been settled for rebalanceDelayMs after a server registered', () => {
    const w = new World(['s1', 's2', 's3'], { rebalanceDelayMs: 10_000 });
    w.now = 20_000;
    w.register('s4');
    const registeredAt = w.now;
    let firstMove: number | undefined;
    for (let i = 0; i < 60 && firstMove === undefined; i++) if (w.step()) firstMove = w.now;
    assert.ok(firstMove !== undefined, 'a move within 30 s');
    assert.ok(firstMove - registeredAt >= 10_000, `first move ${firstMove - registeredAt} ms after s4 registered`);
  });

  test('rebalanceMoves 0: a joining server gets nothing', () => {
    const w = new World(['s1', 's2', 's3'], { rebalanceMoves: 0 });
    w.register('s4');
    w.settle();
    assert.equal(w.replicas('s4'), 0);
  });

  test('a drained server ends up holding nothing, the rest spread evenly, and a cancelled drain takes back', () => {
    const w = new World(['s1', 's2', 's3', 's4']);
    w.settle();
    assert.equal(w.ns.setDraining(nodeId('s2'), true, w.now), true);
    assert.deepEqual(w.ns.map.draining, ['s2']);
    w.settle();
    assert.equal(w.replicas('s2'), 0, show(w.ns.map.configs));
    assertEven(w, ['s1', 's3', 's4']);
    assert.equal(w.ns.setDraining(nodeId('s2'), false, w.now), true);
    assert.equal(w.ns.map.draining, undefined);
    w.settle();
    assertEven(w, ['s1', 's2', 's3', 's4']);
  });

  test('a drain that would leave fewer than R servers is refused, with nothing changed', () => {
    const w = new World(['s1', 's2', 's3']);
    const version = w.ns.map.version;
    assert.throws(() => w.ns.setDraining(nodeId('s1'), true, w.now), /leave 2 live server\(s\) for 3 replicas/);
    assert.throws(() => w.ns.setDraining(nodeId('s9'), true, w.now), /no storage server s9/);
    assert.equal(w.ns.map.version, version);
  });

  test('a stopping server hands each primary to its most advanced secondary and leaves the secondaries', () => {
    const w = new World(['s1', 's2', 's3']);
    const led = w.ns.map.configs.filter((c) => c.primary === 's1');
    // s3 is ahead of s2 in every partition s1 leads: it must be the heir (S5).
    for (const c of led) w.lastSeq.set(`${c.partition}/s3`, 20);
    w.beatAll();
    const changed = w.ns.onLeave(nodeId('s1'), 's1-1', w.now);
    assert.equal(changed.length, P, 'every partition changes (s1 is a member of each)');
    for (const c of w.ns.map.configs) {
      assert.notEqual(c.primary, 's1');
      assert.ok(!c.secondaries.includes(nodeId('s1')));
      assert.ok(c.learners.includes(nodeId('s1')));
      if (led.some((x) => x.partition === c.partition)) assert.equal(c.primary, 's3', `p${c.partition}`);
    }
    // The stopping server is never promoted back, nor given a replica by rebalancing.
    const c = w.ns.map.configs[0]!;
    assert.equal(w.ns.onPromote(c.partition, c.epoch, nodeId('s1'), 's1-1').changed, false);
    w.alive.delete(nodeId('s1'));
    // A repeated leave changes nothing more.
    assert.deepEqual(w.ns.onLeave(nodeId('s1'), 's1-1', w.now), []);
  });

  test('a leave from an unknown incarnation changes nothing', () => {
    const w = new World(['s1', 's2', 's3']);
    assert.deepEqual(w.ns.onLeave(nodeId('s1'), 'old', w.now), []);
  });

  test('primaries spread through a chain of hand-overs when no direct one helps (simulator seed 10)', () => {
    // 4 partitions, R=2, 5 servers, replicas even (2,2,2,1,1) but s1 leads 2 while s4 and s5
    // lead none. s1's secondaries (s3 in p0, s2 in p3) lead 1 each: handing them a primary
    // directly spreads nothing, so the primaries stayed 2,1,1,0,0 for good. Through s3 (a
    // secondary of p0, and the primary of p2 whose secondary is s4) the chain p0 → s3, p2 → s4
    // spreads them in one step.
    const ids = ['s1', 's2', 's3', 's4', 's5'].map(nodeId);
    const config = (p: number, primary: string, secondary: string): Config => ({
      partition: p as Config['partition'],
      epoch: epoch(5),
      primary: nodeId(primary),
      secondaries: [nodeId(secondary)],
      learners: [],
    });
    const configs = [config(0, 's1', 's3'), config(1, 's2', 's5'), config(2, 's3', 's4'), config(3, 's1', 's2')];
    const view = (cs: readonly Config[]) => ({
      configs: cs,
      replicas: 2,
      eligible: ids,
      draining: new Set<NodeId>(),
      alive: () => true,
      progress: (n: NodeId, p: number): ReplicaProgress | undefined => {
        const c = cs[p]!;
        const role = c.primary === n ? 'primary' : c.secondaries.includes(n) ? 'secondary' : undefined;
        if (role === undefined) return undefined;
        const s = seq(10);
        return {
          partition: c.partition,
          epoch: c.epoch,
          role,
          lastSeq: s,
          lastEpoch: epoch(5),
          commitSeq: s,
          appliedSeq: s,
          serving: role === 'primary',
        };
      },
      maxMoves: 2,
    });
    const changes = rebalance(view(configs));
    assert.deepEqual(
      changes.map((c) => `p${c.partition} e${c.epoch} ${c.primary} [${c.secondaries.join(',')}]`),
      ['p0 e6 s3 [s1]', 'p2 e6 s4 [s3]'],
    );
    const after = configs.map((c) => changes.find((x) => x.partition === c.partition) ?? c);
    const leads = ids.map((n) => after.filter((c) => c.primary === n).length);
    assert.deepEqual(leads, [1, 1, 1, 1, 0]);
    assert.deepEqual(rebalance(view(after)), [], 'spread: nothing more moves');
  });
});

/**
 * Rebalancing under faults in the simulator (issue 15, `--rebalance`): spare storage servers
 * join mid-run, servers stop gracefully (the storage host's leave/leaveAnswered/handedOff, as
 * server.ts's SIGTERM does) and come back, the operator drains and undrains through the
 * nameserver's `drain` request, among the crashes, pauses and partitions of every run. The
 * whole history must stay linearizable, the observer's safety checks hold at every step, and
 * after the heal the map must converge, spread within ±1 of the even share (replicas and
 * primaries), with drained servers empty, and then stay still.
 */
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { type Config, epoch, nodeId, partitionId } from '../../src/core/types.js';
import { balanceProblem, type NameserverView, REBALANCE_SET, type RunResult, runSeed } from './run.js';
import type { SimStorageNode } from './storage-node.js';

function explain(r: RunResult): string {
  return (
    `seed ${r.seed} (replay: npm run sim -- --seed ${r.seed} --rebalance):\n` +
    r.violations.map((v) => `${v.kind} at ${v.atMs} ms: ${v.message}`).join('\n')
  );
}

describe('rebalancing in the simulator (--rebalance)', () => {
  test('seeds 1–16: no violation, and joins, graceful stops, drains and balance moves happened', () => {
    const sum: Record<string, number> = {};
    for (let seed = 1; seed <= 16; seed++) {
      const r = runSeed(seed, { set: REBALANCE_SET, checkBudgetMs: 5000, election: 'mixed' });
      if (r.violations.length > 0) assert.fail(explain(r));
      assert.notEqual(r.linearizability?.verdict, 'violation');
      for (const [k, v] of Object.entries(r.stats)) sum[k] = (sum[k] ?? 0) + v;
    }
    const figures = JSON.stringify(
      Object.fromEntries(Object.entries(sum).filter(([k]) => /^(fault\.|leave\.|balance\.|undrain)/.test(k))),
    );
    for (const k of ['fault.join', 'fault.leave', 'leave.handedOff', 'fault.drain'])
      assert.ok((sum[k] ?? 0) > 0, `no ${k}: ${figures}`);
    // A drain cancelled: by the nemesis (undrain), or by the operator at the heal.
    assert.ok((sum['fault.undrain'] ?? 0) + (sum.undrainAtHeal ?? 0) > 0, `no drain cancelled: ${figures}`);
    // Moves that no failure explains (every server of the old configuration up): balance.ts's.
    for (const k of ['balance.learner', 'balance.shrink', 'balance.handOver'])
      assert.ok((sum[k] ?? 0) >= 10, `too few ${k}: ${figures}`);
  });

  test('a --rebalance seed replays exactly; a seed without it has no spare server and no such fault', () => {
    const a = runSeed(3, { set: REBALANCE_SET });
    const b = runSeed(3, { set: REBALANCE_SET });
    assert.deepEqual(a.stats, b.stats);
    const plain = runSeed(3);
    assert.equal(plain.knobs.spareNodes, 0);
    for (const k of ['fault.join', 'fault.leave', 'fault.drain', 'fault.undrain'])
      assert.equal(plain.stats[k], undefined, k);
  });

  test('the end check sees primaries stuck at 2,1,1,0,0 over 5 servers, and a drained server that holds a replica', () => {
    const server = (id: string) => ({ id: nodeId(id), up: true, paused: false, healthy: true }) as SimStorageNode;
    const nodes = ['n1', 'n2', 'n3', 'n4', 'n5'].map(server);
    const config = (p: number, primary: string, secondary: string): Config => ({
      partition: partitionId(p),
      epoch: epoch(3),
      primary: nodeId(primary),
      secondaries: [nodeId(secondary)],
      learners: [],
    });
    const view = (configs: Config[], draining: string[] = []): NameserverView =>
      ({
        up: true,
        paused: false,
        core: { draining: new Set(draining) },
        configs: () => configs,
        stats: { reconfigurations: 0 },
        moves: {},
      }) as unknown as NameserverView;
    // Seed 10 before the chain of hand-overs in balance.ts.
    const stuck = [config(0, 'n1', 'n3'), config(1, 'n2', 'n5'), config(2, 'n3', 'n4'), config(3, 'n1', 'n2')];
    assert.match(balanceProblem(view(stuck), nodes) ?? '', /primaries are not spread evenly.*n1 2/);
    const spread = [config(0, 'n3', 'n1'), config(1, 'n2', 'n5'), config(2, 'n4', 'n3'), config(3, 'n1', 'n2')];
    assert.equal(balanceProblem(view(spread), nodes), undefined);
    assert.match(balanceProblem(view(spread, ['n5']), nodes) ?? '', /drained n5 still holds partition\(s\) 1/);
  });
});

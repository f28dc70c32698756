/**
 * Opt-in (DSTORE_MEASURE_FAILOVER=<runs>, at least 5 taken): measures nameserver leader failover
 * on the whole system (ha-harness.ts, etcd with its default settings), for a lease TTL of 2 s
 * and the default 3 s. Each run SIGKILLs the leading candidate and measures, from the kill:
 * - `leader`: the first `leader` answer of a survivor naming itself (polled every 10 ms);
 * - `heartbeat`: the first heartbeat the new leader took from a storage server (its
 *   `lastHeartbeatMs`, the leader's own clock — the same machine) and the last of the three;
 * then starts the killed candidate again and waits until all three agree before the next run.
 * The figures in docs/failures.md come from
 * `DSTORE_MEASURE_FAILOVER=10 node scripts/run-tests.mjs ha-measure`.
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { ETCD_INSTALL_HINT, findEtcd } from '../../src/process/etcd-server.js';
import { waitFor } from './cluster.js';
import { median } from './failures-harness.js';
import { HaCluster } from './ha-harness.js';

const RUNS = Math.max(5, Number(process.env.DSTORE_MEASURE_FAILOVER ?? 0));
const skip =
  process.env.DSTORE_MEASURE_FAILOVER === undefined
    ? 'opt-in: DSTORE_MEASURE_FAILOVER=<runs> measures leader failover times'
    : findEtcd() === undefined
      ? `etcd is not installed: ${ETCD_INSTALL_HINT}`
      : false;

const summary = (xs: readonly number[]): string =>
  `median ${Math.round(median(xs))} ms, min ${Math.min(...xs)} ms, max ${Math.max(...xs)} ms`;

for (const leaseTtlMs of [2000, 3000]) {
  test(`leader failover times, lease TTL ${leaseTtlMs} ms, ${RUNS} runs`, { skip, timeout: 600_000 }, async (t) => {
    const c = await HaCluster.start({
      partitions: 6,
      replicas: 2,
      minWriteReplicas: 1,
      storage: 3,
      leaseTtlMs,
      heartbeatMs: 250,
      deadAfterMs: 2000,
    });
    try {
      const leader: number[] = [];
      const firstBeat: number[] = [];
      const allBeats: number[] = [];
      for (let run = 0; run < RUNS; run++) {
        const old = await c.agreedLeader();
        const survivors = [...c.candidates.keys()].filter((n) => n !== old);
        const killedAt = Date.now();
        c.kill(old);
        const next = await waitFor('a survivor leads', () => c.selfLeader(survivors), leaseTtlMs + 10_000, 10);
        leader.push(Date.now() - killedAt);
        const beats = await waitFor(
          `${next} hears every storage server`,
          async () => {
            const info = await c.nodes(next);
            const at = info.nodes.filter((x) => x.role === 'storage').map((x) => x.lastHeartbeatMs ?? 0);
            return at.length === 3 && at.every((ms) => ms > killedAt) ? at : undefined;
          },
          10_000,
          20,
        );
        firstBeat.push(Math.min(...beats) - killedAt);
        allBeats.push(Math.max(...beats) - killedAt);
        t.diagnostic(
          `run ${run + 1}: ${old} killed; ${next} answers leader after ${leader.at(-1)} ms; first heartbeat at ` +
            `${next} after ${firstBeat.at(-1)} ms, all three after ${allBeats.at(-1)} ms`,
        );
        await c.restartCandidate(old);
        await waitFor(`${old} is back and follows`, async () => (await c.leaderReply(old))?.leader?.nodeId === next);
      }
      t.diagnostic(`lease TTL ${leaseTtlMs} ms, ${RUNS} runs: SIGKILL -> leader answered: ${summary(leader)}`);
      t.diagnostic(`lease TTL ${leaseTtlMs} ms: SIGKILL -> first heartbeat at the new leader: ${summary(firstBeat)}`);
      t.diagnostic(`lease TTL ${leaseTtlMs} ms: SIGKILL -> all heartbeats at the new leader: ${summary(allBeats)}`);
      assert.ok(Math.max(...leader) <= leaseTtlMs + 1000, `every failover within TTL + 1 s: ${leader.join(', ')}`);
    } finally {
      await c.stop();
    }
  });
}

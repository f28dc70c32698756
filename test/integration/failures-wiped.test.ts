/**
 * A storage server whose store was wiped (its Redis flushed or replaced, its lmdb
 * environment and replica log deleted) but whose data dir still names it (`node-id`) comes back holding nothing. It
 * must not rejoin its partitions as a secondary, as a restarted server with its data does
 * (S4): an empty secondary can be elected primary (S5) and would then serve "absent" for
 * acknowledged keys and truncate them from the others when they return.
 *
 * Real processes: 5 lmdb storage servers (so the nameserver is not frozen, S15, with two of
 * them away), 4 partitions, R=3. For one partition {A; B, C}: B is SIGKILLed and its lmdb
 * environment and log deleted, A and C are paused (SIGSTOP: B cannot catch up from them), B is restarted.
 * Proves: B is made a learner of that partition (not left a secondary); once A and C are
 * declared dead no read of the partition answers "absent" for an acknowledged key (it is
 * unavailable instead: nobody holding the data is alive); after SIGCONT every acknowledged
 * write reads back (History check) and every partition has 3 replicas again.
 */
import assert from 'node:assert/strict';
import { rmSync } from 'node:fs';
import { join } from 'node:path';
import { test } from 'node:test';
import { LocalCluster, waitFor } from './cluster.js';
import { History, keysByPartition, TIMING, withLogsOnFailure } from './failures-harness.js';

const P = 4;

test(
  'a storage server restarted with a wiped store relearns ' + 'its partitions and is never elected with nothing',
  async () => {
    // Dead after 6 s, not TIMING's 2: B must be back (and registered) before the nameserver
    // declares it dead and drops it, which a restart on a loaded machine can take longer than.
    await using cluster = await LocalCluster.start({
      nodes: 5,
      partitions: P,
      replicas: 3,
      backend: 'lmdb',
      ...TIMING,
      deadAfterMs: 6000,
    });
    await withLogsOnFailure(cluster, async () => {
      const db = await cluster.client();
      const history = new History(P);
      const keys = keysByPartition(P, 8, 'wiped');
      await history.putEach(db, keys, 'before');
      assert.equal(history.counts().ok, P * 8, 'every write before the fault is acknowledged');

      const before = await cluster.map();
      const config = before.configs[0]!;
      const [a, b, c] = [config.primary, config.secondaries[0]!, config.secondaries[1]!];
      assert.ok(a && b && c, `partition 0 has three members: ${JSON.stringify(config)}`);

      await cluster.kill(b, 'SIGKILL');
      // Its store: the LMDB environment and the replica log; node-id stays.
      rmSync(join(cluster.dir, b, 'lmdb'), { recursive: true, force: true });
      rmSync(join(cluster.dir, b, 'log'), { recursive: true, force: true });
      // Not cluster.kill: its promise is the exit, which a stopped process never reaches.
      for (const n of [a, c]) cluster.procs.get(n)!.child.kill('SIGSTOP');
      try {
        await cluster.restart(b);
        // S4: an empty store is not a durable replica: the nameserver makes B a learner.
        await waitFor(
          `${b} to be made a learner of partition 0 (not left a secondary)`,
          async () => {
            const m = await cluster.map();
            const now = m.configs[0]!;
            return !now.secondaries.includes(b) && now.primary !== b && now.learners.includes(b);
          },
          15_000,
          100,
        );

        // A and C are declared dead; B, holding nothing, must not serve the partition.
        await cluster.waitNodeState(a, 'dead', 15_000);
        await cluster.waitNodeState(c, 'dead', 15_000);
        const reader = await cluster.client(1500);
        const absent: string[] = [];
        for (const k of keys[0]!) {
          const got = await reader.get(k).catch(() => 'unavailable' as const);
          if (got === undefined) absent.push(k);
        }
        assert.deepEqual(absent, [], `acknowledged keys read as absent while only ${b} (wiped) was alive`);
        const m = await cluster.map();
        assert.notEqual(m.configs[0]!.primary, b, `${b} (wiped) was made primary of partition 0`);
      } finally {
        for (const n of [a, c]) cluster.procs.get(n)?.child.kill('SIGCONT');
      }

      await cluster.waitReplicated(60_000);
      const violations = await history.check(db);
      assert.deepEqual(violations, [], 'every acknowledged write reads back');
    });
  },
);

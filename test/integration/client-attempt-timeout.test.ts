/**
 * The client's per-attempt timeout (ConnectOptions.attemptTimeoutMs) against real processes:
 * a nameserver and 3 lmdb storage servers at the default heartbeat (1 s) and dead-after
 * (5 s). The primary of partition 0 is SIGSTOPped: its TCP connections stay open but it
 * answers nothing, which without a per-attempt bound holds every attempt until the call's
 * deadline.
 *
 * Proves:
 * 1. A write whose call deadline (3 s) ends before the failover (5 s dead-after) is reported
 *    OUTCOME_UNKNOWN (S9), never as failed, and gives up at its deadline, not later.
 * 2. Writes to the paused primary's partition with a deadline long enough for the failover
 *    (20 s) succeed: each timed-out attempt is abandoned after 1 s, the map is refreshed,
 *    and the write retried with the same request id (S10) until the new primary takes it.
 * 3. After SIGCONT the old primary (deposed, fenced by the new epoch) rejoins, every
 *    partition has 3 replicas again, the replicas converge, and the key reads back the
 *    last acknowledged write.
 * SIGCONT and the processes' removal happen in `finally`, also when an assertion fails.
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { connect, OutcomeUnknownError, type Db } from '../../src/client/index.js';
import { LocalCluster } from './cluster.js';
import { keysByPartition, withLogsOnFailure } from './failures-harness.js';

const P = 4;

test('writes to a SIGSTOPped primary succeed once it is replaced; an early deadline is OUTCOME_UNKNOWN; it converges ' +
  'after SIGCONT', {
  timeout: 180_000,
}, async () => {
  await using cluster = await LocalCluster.start({
    nodes: 3,
    partitions: P,
    replicas: 3,
    backend: 'lmdb',
    heartbeatMs: 1000,
    deadAfterMs: 5000,
  });
  const dbs: Db[] = [];
  const open = async (timeoutMs: number): Promise<Db> => {
    const db = await connect(cluster.nameserverAddress, { timeoutMs, attemptTimeoutMs: 1000 });
    dbs.push(db);
    return db;
  };
  let paused: string | undefined;
  try {
    await withLogsOnFailure(cluster, async () => {
      const db = await open(20_000);
      const before = await cluster.waitReplicated(30_000);
      const victim = before.configs[0]!.primary;
      const key = keysByPartition(P, 1, 'attempt')[0]![0]!;
      await db.put(key, 'v-before');

      cluster.procs.get(victim)!.child.kill('SIGSTOP');
      paused = victim;
      const pausedAt = Date.now();

      // 1. Deadline before the failover: outcome unknown, at the deadline.
      const shortDb = await open(3000);
      const t1 = Date.now();
      await assert.rejects(
        shortDb.put(key, 'v-short'),
        (err: unknown) => err instanceof OutcomeUnknownError,
        'a write that timed out at a paused primary must be OUTCOME_UNKNOWN',
      );
      const shortMs = Date.now() - t1;
      console.log(`# deadline 3000 ms at a paused primary: OUTCOME_UNKNOWN after ${shortMs} ms`);
      assert.ok(shortMs < 4500, `gave up after ${shortMs} ms, well past its 3000 ms deadline`);

      // 2. Deadline past the failover: three writers, two writes each, all acknowledged.
      const results = await Promise.all(
        [0, 1, 2].map(async (w) => {
          const versions: number[] = [];
          for (let i = 0; i < 2; i++) {
            const t = Date.now();
            versions.push(await db.put(key, `v-${w}-${i}`));
            assert.ok(Date.now() - t < 20_000);
          }
          return versions;
        }),
      );
      const failoverMs = Date.now() - pausedAt;
      console.log(
        `# 6 writes to the paused primary's partition acknowledged ${failoverMs} ms after SIGSTOP (versions ` +
          `${results.flat().join(',')})`,
      );
      assert.equal(new Set(results.flat()).size, 6, 'every acknowledged write has its own version');
      const after = await cluster.map();
      assert.notEqual(after.configs[0]!.primary, victim, 'partition 0 has a new primary');
      assert.ok(after.configs[0]!.epoch > before.configs[0]!.epoch);
      const lastVersion = await db.put(key, 'v-last');

      // 3. SIGCONT: the deposed primary is fenced, rejoins, and everything converges.
      cluster.procs.get(victim)!.child.kill('SIGCONT');
      paused = undefined;
      await cluster.waitReplicated(60_000);
      await cluster.waitConverged(db, 30_000);
      const got = await db.get(key);
      assert.equal(got && Buffer.from(got.value).toString('utf8'), 'v-last');
      assert.equal(got?.version, lastVersion);
    });
  } finally {
    if (paused !== undefined) cluster.procs.get(paused)?.child.kill('SIGCONT');
    for (const db of dbs) await db.close();
  }
});

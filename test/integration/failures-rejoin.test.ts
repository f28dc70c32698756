/**
 * Failure tests 3 and 4 of issue 3, on real processes (lmdb storage servers, 16 partitions,
 * heartbeats every 250 ms, dead after 2 s).
 *
 * 3. Three storage servers with `--log-retain-entries 20`: one is stopped (SIGTERM), then
 *    every partition takes far more than 20 writes, so the entries it would need are gone
 *    from the primaries' logs. Proves: restarted, it comes back through a snapshot (S11) —
 *    every partition has 3 replicas again, every replica converges, and after another server
 *    is killed the partitions it now leads serve the acknowledged values (History check).
 * 4. Four storage servers, R=3, `--rereplicate-after-ms 3000` (default 30 s): one is SIGKILLed for good
 *    while writers go on. Proves: after the grace period every partition has 3 replicas
 *    again (none on the dead server), every replica converges, and every acknowledged write
 *    reads back (History check).
 * 4b. A brand-new storage server (no replica of anything) joins a full 3-server cluster;
 *    one server is SIGKILLed for good. Proves: the new server is chosen for every lost
 *    replica (§6: a server holding nothing is eligible), data converges, nothing is lost.
 *
 * Each test prints (`# …`) the time from the kill to the first acknowledged write on the
 * affected partitions and to full replication.
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { type ClusterMap, LocalCluster, membersOf, waitFor } from './cluster.js';
import { History, keysByPartition, reportRecovery, withLogsOnFailure, TIMING, WriteLoad } from './failures-harness.js';

const P = 16;

test(
  "a storage server stopped while its partitions' logs are " + 'truncated comes back through a snapshot and converges',
  async () => {
    const RETAIN = 20;
    await using cluster = await LocalCluster.start({
      nodes: 3,
      partitions: P,
      replicas: 3,
      backend: 'lmdb',
      ...TIMING,
      logRetainEntries: RETAIN,
    });
    await withLogsOnFailure(cluster, async () => {
      const db = await cluster.client();
      const history = new History(P);
      const keys = keysByPartition(P, 10, 'snap');
      // Some data the victim holds before it stops.
      await history.putEach(db, keys, 'before');
      const victim = 's3';
      const victimBefore = await cluster.stats(victim);
      const stoppedAt = Date.now();
      await cluster.kill(victim, 'SIGTERM');
      await waitFor(
        `${victim} to be removed from every configuration`,
        async () =>
          (await cluster.map()).configs.every((c) => !membersOf(c).includes(victim) && !c.learners.includes(victim)),
        TIMING.deadAfterMs + 13_000,
      );
      const removedMs = Date.now() - stoppedAt;

      // Far more than RETAIN writes per partition while it is away (8 concurrent callers).
      const WRITES_PER_PARTITION = RETAIN * 5;
      const jobs = keys.flatMap((list) =>
        Array.from({ length: WRITES_PER_PARTITION }, (_, i) => list[i % list.length]!),
      );
      let next = 0;
      const writeStarted = Date.now();
      await Promise.all(
        Array.from({ length: 8 }, async (_, w) => {
          for (let i = next++; i < jobs.length; i = next++) await history.put(db, jobs[i]!, `away${w}`);
        }),
      );
      console.log(
        `# ${victim} stopped; removed from every configuration after ${removedMs} ms; ` +
          `${jobs.length} writes while away ` +
          `in ${Date.now() - writeStarted} ms`,
      );

      // Precondition of the scenario: on every partition the primary is more than RETAIN
      // entries past what the victim applied, so the log it needs has been truncated (S12).
      const map = await cluster.map();
      for (const c of map.configs) {
        const primary = (await cluster.stats(c.primary)).partitions.find((x) => x.partition === c.partition)!;
        const had = victimBefore.partitions.find((x) => x.partition === c.partition)?.appliedSeq ?? 0;
        assert.ok(
          primary.lastSeq - had > RETAIN,
          `partition ${c.partition}: primary at ${primary.lastSeq}, ${victim} had ${had}: not past the retained tail`,
        );
      }

      const restartedAt = Date.now();
      await cluster.restart(victim);
      await cluster.waitReplicated(45_000);
      const rejoinMs = Date.now() - restartedAt;
      const { keysByNode } = await cluster.waitConverged(db, 30_000);
      console.log(
        `# ${victim} restarted -> every partition has 3 replicas again after ${rejoinMs} ms; converged after ` +
          `${Date.now() - restartedAt} ms; keys per server ${JSON.stringify(Object.fromEntries(keysByNode))}`,
      );
      const snapshotLines = [victim, ...cluster.storageNames.filter((n) => n !== victim)].flatMap((n) =>
        cluster.logLines(n, /snapshot/i),
      );
      console.log(
        `# log lines mentioning a snapshot: ` +
          `${snapshotLines.length}${snapshotLines[0] ? `, e.g. ${snapshotLines[0].slice(0, 300)}` : ''}`,
      );
      assert.ok(
        snapshotLines.length > 0,
        `no node.log line mentions a snapshot: ${victim} should have learned its partitions from snapshots (S11)`,
      );

      // Its data is right, not only its key set: make it the primary of partitions and read
      // every key back through it. Kill s1 (s2 takes over, s3 stays a secondary listed before
      // s1 once s1 is back), restart s1, then kill s2: on equal logs the first listed live
      // secondary, s3, takes over (S5).
      const failover = async (dead: string) => {
        const at = Date.now();
        await cluster.kill(dead, 'SIGKILL');
        const m = await waitFor(
          `the partitions ${dead} led to fail over`,
          async () => {
            const x = await cluster.map();
            return x.configs.every((c) => c.primary !== dead) ? x : undefined;
          },
          TIMING.deadAfterMs + 13_000,
          100,
        );
        console.log(`# SIGKILL ${dead}: every partition it led has a new primary after ${Date.now() - at} ms`);
        return m;
      };
      await failover('s1');
      await cluster.restart('s1');
      await cluster.waitReplicated(30_000);
      const afterKill = await failover('s2');
      const ledByVictim = LocalCluster.ledBy(afterKill, victim);
      console.log(`# ${victim} now leads ${ledByVictim.length} partitions; reading every key back`);
      const violations = await history.check(db);
      assert.deepEqual(violations, [], `history violations:\n${violations.slice(0, 20).join('\n')}`);
    });
  },
);

test(
  '4 storage servers, R=3, one SIGKILLed for good: after the grace period every partition has 3 ' +
    'replicas again and all data is there',
  async () => {
    // 3 s instead of the default 30 s so the test is quick; DSTORE_TEST_REREPLICATE_AFTER_MS overrides it.
    const GRACE = Number(process.env.DSTORE_TEST_REREPLICATE_AFTER_MS ?? 3000);
    await using cluster = await LocalCluster.start({
      nodes: 4,
      partitions: P,
      replicas: 3,
      backend: 'lmdb',
      ...TIMING,
      rereplicateAfterMs: GRACE,
    });
    await withLogsOnFailure(cluster, async () => {
      const dbs = [await cluster.client(), await cluster.client()];
      const history = new History(P);
      const before = await cluster.map();
      assert.ok(
        before.configs.every((c) => membersOf(c).length === 3),
        'the first map does not have 3 replicas per partition',
      );
      // The server holding the most primaries.
      const victim = cluster.storageNames.reduce((a, b) =>
        LocalCluster.ledBy(before, b).length > LocalCluster.ledBy(before, a).length ? b : a,
      );
      const held = LocalCluster.heldBy(before, victim);
      const load = new WriteLoad(history, dbs, {
        writers: 4,
        keys: keysByPartition(P, 20, 'k').flat(),
        probeKeys: keysByPartition(P, 1, 'probe').map((l) => l[0]!),
      });
      await new Promise((r) => setTimeout(r, 2000)); // data on every replica before the loss
      const killedAt = Date.now();
      await cluster.kill(victim, 'SIGKILL');
      let map: ClusterMap;
      try {
        map = await waitFor(
          `every partition to have 3 replicas again, none on ${victim}`,
          async () => {
            const m = await cluster.map();
            return m.configs.every(
              (c) => membersOf(c).length === 3 && c.learners.length === 0 && !membersOf(c).includes(victim),
            )
              ? m
              : undefined;
          },
          TIMING.deadAfterMs + GRACE + 40_000,
          200,
        );
      } finally {
        await load.stop();
      }
      const rereplicatedMs = Date.now() - killedAt;
      const c = history.counts();
      console.log(
        `# ${history.records.length} writes: ${c.ok} acknowledged, ${c.unknown} unknown, ${c.failed} failed ` +
          `(${c.failedCodes.join(',')})`,
      );
      reportRecovery(
        history,
        `SIGKILL ${victim} (held ${held.length}, led ${LocalCluster.ledBy(before, victim).length}) -> writes resume`,
        held,
        killedAt,
      );
      console.log(
        `# SIGKILL ${victim} -> every partition has 3 replicas again after ${rereplicatedMs} ms (dead after ` +
          `${TIMING.deadAfterMs} ms + grace ${GRACE} ms + learning)`,
      );
      assert.ok(map.configs.every((cfg) => !membersOf(cfg).includes(victim)));

      const violations = await history.check(dbs[0]!);
      assert.deepEqual(violations, [], `history violations:\n${violations.slice(0, 20).join('\n')}`);
      await cluster.waitReplicated(30_000);
      const { keysByNode } = await cluster.waitConverged(dbs[0]!, 30_000);
      console.log(`# converged: keys per server ${JSON.stringify(Object.fromEntries(keysByNode))}`);
    });
  },
);

test(
  'a brand-new storage server joins a full 3-server cluster and gets its share by rebalancing; when one server is ' +
    'lost for good, the new one takes its replicas',
  async () => {
    const GRACE = 3000;
    await using cluster = await LocalCluster.start({
      nodes: 3,
      partitions: P,
      replicas: 3,
      backend: 'lmdb',
      ...TIMING,
      rereplicateAfterMs: GRACE,
    });
    await withLogsOnFailure(cluster, async () => {
      const db = await cluster.client();
      const history = new History(P);
      const keys = keysByPartition(P, 5, 'new');
      await history.putEach(db, keys, 'before');
      // Issue 15: rebalancing moves replicas to s4 until the four servers hold even shares
      // (P × R / 4 = 12 each), learner first, so no partition drops below R meanwhile.
      await cluster.spawnStorage('s4');
      await cluster.waitNodeState('s4', 'alive');
      await waitFor(
        's4 to hold its share (12 of 16 partitions), every partition with 3 members and no learner',
        async () => {
          const m = await cluster.map();
          return (
            m.configs.every((c) => membersOf(c).length === 3 && c.learners.length === 0) &&
            LocalCluster.heldBy(m, 's4').length === (P * 3) / 4
          );
        },
        60_000,
        200,
      );
      const killedAt = Date.now();
      await cluster.kill('s1', 'SIGKILL');
      const map = await waitFor(
        'every partition to have 3 replicas again, s4 where s1 was',
        async () => {
          const m = await cluster.map();
          return m.configs.every(
            (c) => membersOf(c).length === 3 && c.learners.length === 0 && !membersOf(c).includes('s1'),
          )
            ? m
            : undefined;
        },
        TIMING.deadAfterMs + GRACE + 40_000,
        200,
      );
      console.log(
        `# SIGKILL s1 -> every partition has 3 replicas again, on the new s4 too, after ${Date.now() - killedAt} ms ` +
          `(dead after ${TIMING.deadAfterMs} ms + grace ${GRACE} ms + learning)`,
      );
      assert.ok(
        map.configs.every((c) => membersOf(c).includes('s4')),
        'a partition was re-replicated elsewhere than on s4',
      );
      await history.putEach(db, keys, 'after');
      const violations = await history.check(db);
      assert.deepEqual(violations, [], `history violations:\n${violations.slice(0, 20).join('\n')}`);
      const { keysByNode } = await cluster.waitConverged(db, 30_000);
      console.log(`# converged: keys per server ${JSON.stringify(Object.fromEntries(keysByNode))}`);
    });
  },
);

/**
 * `dstore check` against real tampering (issue 13, S16, S13), on real processes: a nameserver
 * and 3 storage servers, R=3, 4 partitions, heartbeats every 250 ms; `dstore check --json`
 * runs as its own process every time.
 *
 * 1. lmdb, behind dstore's back while stopped: one stored value of a stopped node is rewritten
 *    as a *valid* record (another value, the same version, a good checksum): a silent
 *    divergence. `dstore check` exits 1 and names the node (odd) and the key; `--repair` has
 *    it relearn; then the cluster checks clean with the node compared again, and every
 *    acknowledged write reads back with its value.
 * 2. lmdb, a flipped byte in a stored value of a stopped node (its checksum now fails): the
 *    digest scan meets the corrupt record, the check cannot compare that node (exit 2, never
 *    1, never 0) and the node takes the S13 path by itself; then the cluster checks clean.
 * 3. redis, a stored value rewritten as a valid record in a running node's Redis (HSET): found,
 *    named, repaired. Skips (one line) without redis-server.
 * 3b. lmdb, the same rewrite found and repaired by the background anti-entropy task alone.
 * 4. No false divergence: 20 s of 3 concurrent writers while `dstore check` runs every ~1 s;
 *    every check exits 0 or 2, never 1; afterwards a check exits 0 and nothing acknowledged
 *    is lost.
 * Every process and temp dir is removed, also on failure.
 */
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { randomBytes } from 'node:crypto';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { test } from 'node:test';
import { Redis } from 'ioredis';
import { RedisServer } from '../../src/process/redis-server.js';
import { REDIS_SKIP, redisInstalled } from '../storage/redis-server.js';
import {
  Acked,
  type CheckRun,
  describeRun,
  partitionOfRun,
  rewriteLmdbValue,
  rewriteRedisValue,
  runCheck,
  waitCheckClean,
} from './check-tamper-harness.js';
import { type ClusterOptions, LocalCluster, membersOf, waitFor } from './cluster.js';
import { flipInFile } from './corruption-harness.js';
import { History, keysByPartition, withLogsOnFailure, WriteLoad } from './failures-harness.js';

const P = 4;
const R = 3;
const VICTIM = 's2';
const ALL = Array.from({ length: P }, (_, i) => i);
/** Dead after 5 s: a node stopped and restarted at once comes back as a restarted member, its data kept. */
const SETTINGS: ClusterOptions = { nodes: 3, partitions: P, replicas: R, heartbeatMs: 250, deadAfterMs: 5000 };

/** Keys per partition, 8 each; every one written once, with a value naming it. */
const KEYS = keysByPartition(P, 8, 'k');

async function writeAll(db: Awaited<ReturnType<LocalCluster['client']>>, acked: Acked, tag = ''): Promise<void> {
  await Promise.all(
    KEYS.map(async (list) => {
      for (const k of list) await acked.put(db, k, `value-of-${k}${tag}`);
    }),
  );
}

/**
 * Waits until `node` is a member of every partition again at the configuration's epoch
 * (its `stats`), without reading its data (a dump would read a corrupt value first, S13).
 */
async function waitMember(cluster: LocalCluster, node: string): Promise<void> {
  await cluster.waitReplicated(30_000);
  await waitFor(
    `${node} to serve as a member of every partition`,
    async () => {
      const map = await cluster.map();
      const stats = await cluster.stats(node, 2000);
      for (const c of map.configs) {
        if (!membersOf(c).includes(node)) throw new Error(`${node} is not a member of partition ${c.partition}`);
        const r = stats.partitions.find((x) => x.partition === c.partition);
        if (!r || r.epoch !== c.epoch || (r.role !== 'primary' && r.role !== 'secondary'))
          throw new Error(`partition ${c.partition}: ${node} is at ${JSON.stringify(r)}, epoch ${c.epoch}`);
      }
      return true;
    },
    30_000,
    100,
  );
}

/** The replicas converged and every acknowledged write reads back with its value and version. */
async function assertNothingLost(
  cluster: LocalCluster,
  db: Awaited<ReturnType<LocalCluster['client']>>,
  acked: Acked,
): Promise<void> {
  await cluster.waitConverged(db, 30_000);
  const lost = await acked.lost(db);
  assert.deepEqual(lost, [], `acknowledged writes lost or changed:\n${lost.join('\n')}`);
}

/** A clean check first: a divergence found later is the tampering's, not the setup's. */
async function assertClean(cluster: LocalCluster, when: string): Promise<void> {
  const run = await waitFor(
    `a first dstore check to exit 0 (${when})`,
    async () => {
      const r = await runCheck(cluster);
      assert.notEqual(r.code, 1, `dstore check found a divergence ${when}: ${describeRun(r)}`);
      return r.code === 0 ? r : undefined;
    },
    30_000,
    250,
  );
  assert.equal(run.partitions.length, P, describeRun(run));
}

const keyNamed = (run: CheckRun, p: number, key: string): boolean =>
  partitionOfRun(run, p).differing.some((d) => d.key === key);

/** Every other partition agrees: only the tampered one is reported. */
function assertOthersAgree(run: CheckRun, p: number): void {
  for (const x of run.partitions)
    if (x.partition !== p) assert.equal(x.agree, true, `partition ${x.partition} should agree: ${describeRun(run)}`);
}

test(
  'lmdb: a stored value rewritten as a valid record on a stopped node is found by dstore check (exit 1, the node ' +
    'odd, the key named), --repair has it relearn, the cluster checks clean, nothing acknowledged is lost',
  async () => {
    await using cluster = await LocalCluster.start(SETTINGS);
    await withLogsOnFailure(cluster, async () => {
      const db = await cluster.client();
      const acked = new Acked();
      await writeAll(db, acked);
      await cluster.waitConverged(db, 30_000);
      await assertClean(cluster, 'before tampering');

      const p = 1;
      const key = KEYS[p]![3]!;
      const code = await cluster.kill(VICTIM, 'SIGTERM');
      assert.equal(code, 0, `${VICTIM} exited with ${code} on SIGTERM: ${cluster.logTail(VICTIM)}`);
      const version = await rewriteLmdbValue(join(cluster.dir, VICTIM), p, key, 'TAMPERED');
      assert.equal(version, acked.values.get(key)!.version, 'the rewritten record keeps the acknowledged version');
      await cluster.restart(VICTIM);
      await waitMember(cluster, VICTIM);

      const found = await runCheck(cluster);
      const fp = partitionOfRun(found, p);
      assert.equal(found.code, 1, `dstore check should exit 1: ${describeRun(found)}`);
      assert.equal(found.ok, false);
      assert.equal(fp.agree, false, describeRun(found));
      assert.deepEqual(fp.odd, [VICTIM], `${VICTIM} is the odd replica: ${describeRun(found)}`);
      assert.ok(keyNamed(found, p, key), `${key} is named among the differing keys: ${JSON.stringify(fp.differing)}`);
      assert.equal(fp.differing.length, 1, `only ${key} differs: ${JSON.stringify(fp.differing)}`);
      assert.deepEqual(fp.repaired, [], 'nothing is repaired without --repair');
      assertOthersAgree(found, p);

      const repair = await runCheck(cluster, ['--repair']);
      const rp = partitionOfRun(repair, p);
      assert.equal(repair.code, 1, `dstore check --repair exits 1 (replicas differed): ${describeRun(repair)}`);
      assert.deepEqual(rp.repaired, [VICTIM], `${VICTIM} was told to relearn: ${describeRun(repair)}`);
      assertOthersAgree(repair, p);

      const clean = await waitCheckClean(cluster, VICTIM, ALL, R);
      assert.equal(clean.ok, true);
      assert.ok(
        cluster.logLines(VICTIM, /differs from the others \(S16\): relearning it/).length >= 1,
        `${VICTIM} logged no relearn`,
      );
      await assertNothingLost(cluster, db, acked);
    });
  },
);

test(
  'lmdb: the background anti-entropy task (--anti-entropy-ms 400) finds a valid record rewritten on a stopped ' +
    'node by itself, counts it in nodes, has the node relearn, and the cluster checks clean with nothing lost',
  async () => {
    // The task first runs once every node is back: started with the interval, it checks every
    // partition its primary leads 400 ms apart; no dstore check runs until it repaired.
    await using cluster = await LocalCluster.start({ ...SETTINGS, extraStorageArgs: ['--anti-entropy-ms', '400'] });
    await withLogsOnFailure(cluster, async () => {
      const db = await cluster.client();
      const acked = new Acked();
      await writeAll(db, acked);
      await cluster.waitConverged(db, 30_000);

      const p = 3;
      const key = KEYS[p]![2]!;
      const code = await cluster.kill(VICTIM, 'SIGTERM');
      assert.equal(code, 0, `${VICTIM} exited with ${code} on SIGTERM: ${cluster.logTail(VICTIM)}`);
      await rewriteLmdbValue(join(cluster.dir, VICTIM), p, key, 'TAMPERED-IN-THE-BACKGROUND');
      await cluster.restart(VICTIM);

      // Found and repaired by the task alone: the primary of p counts a divergence and a relearn.
      const found = await waitFor(
        `the primary of partition ${p} to report a divergence and a relearn in its stats`,
        async () => {
          const map = await cluster.map();
          const primary = map.configs[p]!.primary;
          const stats = (await cluster.stats(primary, 2000)) as unknown as {
            antiEntropy?: { divergences: number; repaired: number; last?: { partition: number; odd: string[] } };
          };
          const ae = stats.antiEntropy;
          return ae !== undefined && ae.divergences >= 1 && ae.repaired >= 1 ? { primary, ae } : undefined;
        },
        60_000,
        200,
      );
      assert.equal(found.ae.last?.partition, p, JSON.stringify(found.ae));
      assert.deepEqual(found.ae.last?.odd, [VICTIM], JSON.stringify(found.ae));
      assert.ok(
        cluster.logLines(found.primary, /anti-entropy: replicas differ/).length >= 1,
        `${found.primary} logged no divergence`,
      );
      const clean = await waitCheckClean(cluster, VICTIM, ALL, R);
      assert.equal(clean.ok, true);
      await assertNothingLost(cluster, db, acked);
    });
  },
);

test(
  'lmdb: a byte flipped in a stored value of a stopped node: dstore check cannot compare that node (exit 2, not ' +
    '0 or 1), the node relearns (S13), the cluster checks clean, nothing acknowledged is lost',
  async () => {
    await using cluster = await LocalCluster.start(SETTINGS);
    await withLogsOnFailure(cluster, async () => {
      const db = await cluster.client();
      const acked = new Acked();
      await writeAll(db, acked);
      const p = 2;
      const key = KEYS[p]![5]!;
      // A value found nowhere else in the file, so the flip hits it only.
      await acked.put(db, key, `VICTIM-${randomBytes(16).toString('hex')}`);
      await cluster.waitConverged(db, 30_000);
      await assertClean(cluster, 'before the flip');

      const code = await cluster.kill(VICTIM, 'SIGTERM');
      assert.equal(code, 0, `${VICTIM} exited with ${code} on SIGTERM: ${cluster.logTail(VICTIM)}`);
      const flipped = flipInFile(
        join(cluster.dir, VICTIM, 'lmdb', 'data.mdb'),
        Buffer.from(acked.values.get(key)!.value),
      );
      assert.ok(flipped >= 1, `the value of ${key} was found in ${VICTIM}'s data.mdb`);
      await cluster.restart(VICTIM);
      await waitMember(cluster, VICTIM);

      const found = await runCheck(cluster);
      const fp = partitionOfRun(found, p);
      assert.equal(found.code, 2, `dstore check should exit 2 (not fully checked): ${describeRun(found)}`);
      assert.equal(fp.agree, undefined, describeRun(found));
      const victim = fp.members.find((m) => m.node === VICTIM);
      assert.ok(
        victim?.error !== undefined && victim.digest === undefined,
        `no digest of ${VICTIM}: ${describeRun(found)}`,
      );
      assert.ok(fp.members.filter((m) => m.digest !== undefined).length === R - 1, describeRun(found));
      assertOthersAgree(found, p);
      console.log(`# ${VICTIM} at the first check: ${victim.error}`);

      // No --repair: the corrupt record itself sends it down the S13 path.
      const clean = await waitCheckClean(cluster, VICTIM, ALL, R);
      assert.equal(clean.ok, true);
      assert.ok(cluster.logLines(VICTIM, /corrupt/i).length >= 1, `${VICTIM} logged no corruption`);
      await assertNothingLost(cluster, db, acked);
    });
  },
);

test("redis: a stored value rewritten as a valid record in a running node's Redis: " +
  'dstore check finds it and names the key, --repair makes the replicas agree again, nothing acknowledged is lost', {
  skip: redisInstalled ? false : REDIS_SKIP,
}, async () => {
  const redisDir = mkdtempSync(join(tmpdir(), 'dstore-test-redis-'));
  const redis = new Map<string, RedisServer>();
  let direct: Redis | undefined;
  try {
    for (const name of ['s1', 's2', 's3']) redis.set(name, await RedisServer.start({ dir: join(redisDir, name) }));
    await using cluster = await LocalCluster.start({
      ...SETTINGS,
      backendOf: (name) => `${redis.get(name)!.url}/0`,
    });
    await withLogsOnFailure(cluster, async () => {
      const db = await cluster.client();
      const acked = new Acked();
      await writeAll(db, acked);
      await cluster.waitConverged(db, 30_000);
      await assertClean(cluster, 'before tampering');

      const p = 3;
      const key = KEYS[p]![2]!;
      direct = new Redis(`${redis.get(VICTIM)!.url}/0`, { lazyConnect: true, maxRetriesPerRequest: 1 });
      await direct.connect();
      const version = await rewriteRedisValue(direct, p, key, 'TAMPERED');
      assert.equal(version, acked.values.get(key)!.version, 'the rewritten record keeps the acknowledged version');

      const found = await runCheck(cluster);
      const fp = partitionOfRun(found, p);
      assert.equal(found.code, 1, `dstore check should exit 1: ${describeRun(found)}`);
      assert.deepEqual(fp.odd, [VICTIM], `${VICTIM} is the odd replica: ${describeRun(found)}`);
      assert.ok(keyNamed(found, p, key), `${key} is named among the differing keys: ${JSON.stringify(fp.differing)}`);
      assert.equal(fp.differing.length, 1, `only ${key} differs: ${JSON.stringify(fp.differing)}`);
      assertOthersAgree(found, p);

      const repair = await runCheck(cluster, ['--repair', '--partition', String(p)]);
      assert.equal(repair.code, 1, describeRun(repair));
      assert.equal(repair.partitions.length, 1, '--partition checks one partition');
      assert.deepEqual(partitionOfRun(repair, p).repaired, [VICTIM], describeRun(repair));

      const clean = await waitCheckClean(cluster, VICTIM, ALL, R);
      assert.equal(clean.ok, true);
      await assertNothingLost(cluster, db, acked);
    });
  } finally {
    direct?.disconnect();
    await Promise.all([...redis.values()].map((r) => r.stop()));
    rmSync(redisDir, { recursive: true, force: true });
  }
});

test('no false divergence: dstore check every ~1 s during 20 s of 3 concurrent writers never exits 1', () =>
  checksUnderLoad({ durationMs: 20_000 }));

test(
  'no false divergence across a failover and a relearn: s3 SIGKILLed at 4 s (past dead-after) and restarted at ' +
    '11 s under 3 writers, rejoins by snapshots; no check exits 1, the final one exits 0 with s3 compared',
  () => checksUnderLoad({ durationMs: 16_000, bounce: { node: 's3', killAtMs: 4000, restartAtMs: 11_000 } }),
);

/**
 * 3 writers for `durationMs` while `dstore check` runs again and again (about once a second);
 * with `bounce`, `node` is SIGKILLed and restarted meanwhile. Every check exits 0 or 2.
 */
async function checksUnderLoad(o: {
  durationMs: number;
  bounce?: { node: string; killAtMs: number; restartAtMs: number };
}): Promise<void> {
  // With a bounce, logs keep 50 entries: the node rejoins as a learner that must copy
  // snapshots (S11, the dedup table included in the digest), not replay its primaries' logs.
  // The background anti-entropy task runs every second too: it must find nothing either.
  await using cluster = await LocalCluster.start({
    ...SETTINGS,
    extraStorageArgs: ['--anti-entropy-ms', '1000'],
    ...(o.bounce ? { logRetainEntries: 50 } : {}),
  });
  await withLogsOnFailure(cluster, async () => {
    const dbs = [await cluster.client(), await cluster.client()];
    const history = new History(P);
    const load = new WriteLoad(history, dbs, { writers: 3, keys: KEYS.flat() });
    const runs: Array<CheckRun & { ms: number }> = [];
    const startAt = Date.now();
    const endAt = startAt + o.durationMs;
    const bounce = o.bounce ? bounceNode(cluster, o.bounce, startAt) : Promise.resolve();
    try {
      while (Date.now() < endAt) {
        const t0 = Date.now();
        const run = await runCheck(cluster);
        runs.push({ ...run, ms: Date.now() - t0 });
        assert.ok(run.code === 0 || run.code === 2, `a check under load exited ${run.code}: ${describeRun(run)}`);
        await sleep(Math.max(0, Math.min(1000 - (Date.now() - t0), endAt - Date.now()))); // pacing only
      }
    } finally {
      await load.stop();
      await bounce;
    }
    const codes = runs.map((r) => r.code);
    const c = history.counts();
    console.log(
      `# ${runs.length} checks under load: exit codes ${codes.join(',')}; ` +
        `each ${runs.map((r) => r.ms).join(',')} ms; ` +
        `${history.records.length} writes, ${c.ok} acknowledged, ${c.unknown} unknown, ${c.failed} failed`,
    );
    assert.ok(runs.length >= 5, `only ${runs.length} checks ran in ${o.durationMs} ms`);
    assert.ok(codes.includes(0), `no check under load was complete: ${codes.join(',')}`);
    assert.ok(c.ok >= 100, `only ${c.ok} writes were acknowledged`);
    if (o.bounce) {
      await waitMember(cluster, o.bounce.node);
      const installed = cluster.logLines(o.bounce.node, /snapshot fetched and installed/).length;
      assert.ok(installed >= 1, `${o.bounce.node} rejoined without copying a snapshot`);
      console.log(`# ${o.bounce.node} installed ${installed} snapshots while it rejoined`);
    }
    const final = await waitCheckClean(cluster, o.bounce?.node ?? 's1', ALL, R);
    assert.equal(final.ok, true);
    let backgroundChecks = 0;
    for (const node of ['s1', 's2', 's3']) {
      const stats = (await cluster.stats(node, 5000)) as unknown as {
        antiEntropy?: { checks: number; divergences: number };
      };
      assert.equal(stats.antiEntropy?.divergences ?? 0, 0, `${node}'s background checks found replicas differing`);
      backgroundChecks += stats.antiEntropy?.checks ?? 0;
    }
    console.log(`# ${backgroundChecks} background anti-entropy checks (every 1 s), none found replicas differing`);
    assert.ok(backgroundChecks >= 5, `only ${backgroundChecks} background checks ran`);
    const violations = await history.check(dbs[0]!);
    assert.deepEqual(violations, [], `history violations:\n${violations.slice(0, 20).join('\n')}`);
  });
}

/** SIGKILLs `node` at `killAtMs` after `startAt` and starts it again at `restartAtMs`. */
async function bounceNode(
  cluster: LocalCluster,
  b: { node: string; killAtMs: number; restartAtMs: number },
  startAt: number,
): Promise<void> {
  await sleep(startAt + b.killAtMs - Date.now()); // the scenario's timeline
  await cluster.kill(b.node, 'SIGKILL');
  await sleep(startAt + b.restartAtMs - Date.now());
  await cluster.restart(b.node);
}

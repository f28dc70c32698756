/**
 * Issue 12, etcd failures under the whole system (ha-harness.ts: a real 3-member etcd, three
 * `dstore nameserver --etcd` candidates, three storage servers, R = 2 over 6 partitions,
 * min-write-replicas 1; lease TTL 3 s (the default), heartbeats 250 ms, dead after 2 s; etcd
 * with a 500 ms election timeout).
 *
 * 1. SIGKILL etcd's own raft leader member: nothing visible changes for 3 s (more than a lease
 *    TTL) — every write is acknowledged, the same nameserver leads since the same moment.
 * 2. SIGKILL a second member (no quorum): the leading nameserver cannot renew its lease and steps
 *    down after at most a TTL (logged); no candidate leads while etcd has no quorum. A storage
 *    server is SIGKILLed meanwhile. The data path does not need etcd: for dead-after + 2 s,
 *    writes and reads to the partitions the dead server is not a member of all succeed. Map
 *    changes wait: the dead server's partitions get no new primary (the survivors still hold
 *    them at the old epoch as secondaries), and a write to one of them is not acknowledged.
 * 3. Both members restarted: a candidate leads again, loads the map, and, after its one
 *    dead-after of grace (S15), fails the dead server over; writes to its partitions are
 *    acknowledged again; nothing acknowledged in the whole run is lost (History.check).
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { ETCD_INSTALL_HINT, findEtcd } from '../../src/process/etcd-server.js';
import { waitFor } from './cluster.js';
import { History, keysByPartition, reportRecovery, WriteLoad } from './failures-harness.js';
import { HaCluster, RetryLog } from './ha-harness.js';

const skip = findEtcd() === undefined ? `etcd is not installed: ${ETCD_INSTALL_HINT}` : false;
const P = 6;
/**
 * The default TTL. A keepalive goes every TTL/3 and the leader steps down when none sent in the
 * last TTL was answered, so it outlives an etcd outage of about 2/3 of the TTL: killing etcd's
 * raft leader costs etcd an election (election timeout 500 ms here, 1 s by default) first.
 */
const LEASE_TTL_MS = 3000;
const ETCD_ARGS = ['--heartbeat-interval=50', '--election-timeout=500'];
const DEAD_AFTER_MS = 2000;

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

test('one etcd member killed: nothing changes; two killed: the data path goes on, map changes wait; ' +
  'etcd back: a leader again, and the storage server that died meanwhile fails over', {
  skip,
  timeout: 120_000,
}, async (t) => {
  const c = await HaCluster.start({
    partitions: P,
    replicas: 2,
    minWriteReplicas: 1,
    storage: 3,
    leaseTtlMs: LEASE_TTL_MS,
    heartbeatMs: 250,
    deadAfterMs: DEAD_AFTER_MS,
    etcdArgs: ETCD_ARGS,
  });
  const loads: WriteLoad[] = [];
  try {
    const retries = new RetryLog();
    const dbs = [await c.client(retries), await c.client(retries)];
    // Connected before etcd loses its quorum: `connect` asks for the map, which then has no answer.
    const readDb = await c.client();
    const shortDb = await c.client(undefined, 1500);
    const history = new History(P);
    const keys = keysByPartition(P, 10, 'k');
    const probes = keysByPartition(P, 1, 'probe').map((l) => l[0] as string);
    const leader = await c.agreedLeader();
    const since = (await c.leaderReply(leader))?.leader?.sinceMs;
    const map0 = await c.map(leader);
    const victim = 's3';
    const hit = map0.configs.filter((x) => [x.primary, ...x.secondaries].includes(victim)).map((x) => x.partition);
    const led = map0.configs.filter((x) => x.primary === victim).map((x) => x.partition);
    const safe = map0.configs.map((x) => x.partition).filter((p) => !hit.includes(p));
    t.diagnostic(`${victim} holds ${hit.join(',')} (primary of ${led.join(',')}); untouched: ${safe.join(',')}`);
    assert.ok(safe.length > 0 && led.length > 0, 'the placement leaves partitions without the victim');

    // 1. One etcd member (etcd's raft leader) dies: nothing visible changes.
    const load1 = new WriteLoad(history, dbs, { writers: 4, keys: keys.flat(), probeKeys: probes });
    loads.push(load1);
    await sleep(500);
    const raftLeader = await c.etcdRaftLeader();
    const oneDownAt = Date.now();
    await c.killEtcd(raftLeader);
    await sleep(LEASE_TTL_MS + 1000);
    await load1.stop();
    const phase1 = history.records.filter((r) => r.startMs >= oneDownAt);
    t.diagnostic(
      `etcd ${raftLeader} (raft leader) killed: ${phase1.length} writes in ${Date.now() - oneDownAt} ms, ` +
        `${phase1.filter((r) => r.outcome.kind !== 'ok').length} not acknowledged`,
    );
    assert.ok(phase1.length > 20, `the writers kept writing (${phase1.length})`);
    assert.deepEqual(
      history.records.filter((r) => r.outcome.kind !== 'ok').map((r) => r.key),
      [],
      'every write acknowledged',
    );
    const still = await c.leaderReply(leader);
    assert.deepEqual([still?.leader?.nodeId, still?.leader?.sinceMs], [leader, since], 'the same leader, same term');
    assert.equal(await c.agreedLeader(), leader);
    assert.doesNotMatch(c.procs.all.get(leader)?.stderr ?? '', /stepping down/, 'the leader never stepped down');

    // 2. A second member dies: etcd has no quorum.
    const second = c.etcd?.members.find((m) => m.name !== raftLeader)?.name as string;
    const noQuorumAt = Date.now();
    await c.killEtcd(second);
    const steppedDown = await waitFor(
      `${leader} steps down once it cannot renew its lease`,
      () => /stepping down/.test(c.procs.all.get(leader)?.stderr ?? '') && Date.now(),
      LEASE_TTL_MS + 5000,
      20,
    );
    t.diagnostic(`etcd without quorum: ${leader} stepped down after ${steppedDown - noQuorumAt} ms`);
    for (const line of (c.procs.all.get(leader)?.stderr ?? '').split('\n'))
      if (/stepping down/.test(line)) t.diagnostic(line.slice(0, 300));
    // A surviving etcd raft leader renews leases until it notices (an election timeout) that it lost its quorum.
    assert.ok(steppedDown - noQuorumAt <= LEASE_TTL_MS + 2000, 'about a lease TTL after the quorum was lost');

    const killedAt = Date.now();
    c.kill(victim);
    const load2 = new WriteLoad(history, dbs, {
      writers: 4,
      keys: safe.flatMap((p) => keys[p] ?? []),
      probeKeys: safe.map((p) => probes[p] as string),
    });
    loads.push(load2);
    // A write to a partition the dead server leads: nothing can fail it over, so never acknowledged.
    const stuckKey = keysByPartition(P, 1, 'stuck')[led[0] as number]?.[0] as string;
    await assert.rejects(shortDb.put(stuckKey, 'x'), `a write to partition ${led[0]} is not acknowledged`);
    let reads = 0;
    while (Date.now() < killedAt + DEAD_AFTER_MS + 2000) {
      for (const p of safe) {
        const key = (keys[p] ?? [])[reads % 10] as string;
        await readDb.get(key); // throws (fails the test) if a read is refused
        reads++;
      }
    }
    await load2.stop();
    const phase2 = history.records.filter((r) => r.startMs >= killedAt);
    t.diagnostic(
      `without etcd quorum and with ${victim} dead: ${phase2.length} writes and ${reads} reads to ` +
        `${safe.join(',')} in ${Date.now() - killedAt} ms; ` +
        `${phase2.filter((r) => r.outcome.kind !== 'ok').length} writes not acknowledged`,
    );
    assert.ok(phase2.length > 20 && reads > 10, `the data path kept going (${phase2.length} writes, ${reads} reads)`);
    assert.deepEqual(
      phase2.filter((r) => r.outcome.kind !== 'ok').map((r) => `${r.key}: ${JSON.stringify(r.outcome)}`),
      [],
      'every write to the untouched partitions acknowledged without etcd',
    );
    const replies = await Promise.all([...c.candidates.keys()].map((n) => c.leaderReply(n)));
    assert.ok(
      replies.every((r) => r?.leader === undefined),
      `no candidate names a leader without etcd: ${JSON.stringify(replies)}`,
    );
    for (const s of ['s1', 's2']) {
      const st = await c.stats(s);
      for (const p of led) {
        const r = st.partitions.find((x) => x.partition === p);
        const cfg = map0.configs.find((x) => x.partition === p);
        if (r === undefined) continue;
        assert.notEqual(r.role, 'primary', `${s} was not made primary of ${p} without etcd`);
        assert.equal(r.epoch, cfg?.epoch, `${s}: partition ${p} still at its epoch`);
      }
    }

    // 3. etcd is back: a leader again, then the dead server fails over.
    const backAt = Date.now();
    await c.restartEtcd(raftLeader);
    await c.restartEtcd(second);
    await c.waitEtcdHealthy();
    const next = await c.agreedLeader(LEASE_TTL_MS + 15_000);
    const electedMs = Date.now() - backAt;
    const load3 = new WriteLoad(history, dbs, { writers: 2, keys: keys.flat(), probeKeys: probes });
    loads.push(load3);
    const after = await waitFor(
      `${next} fails ${victim} over once etcd is back`,
      async () => {
        const m = await c.map(next);
        return m.configs.every((x) => x.primary !== victim && !x.secondaries.includes(victim)) ? m : undefined;
      },
      DEAD_AFTER_MS + 15_000,
      50,
    );
    const failoverMs = Date.now() - backAt;
    t.diagnostic(`etcd restarted: ${next} leads after ${electedMs} ms, ${victim} failed over after ${failoverMs} ms`);
    assert.ok(after.version > map0.version);
    await waitFor(
      `writes to ${led.join(',')} acknowledged again`,
      () => led.every((p) => history.firstOkAfter(p, backAt) !== undefined),
      DEAD_AFTER_MS + 10_000,
      50,
    );
    await load3.stop();
    reportRecovery(history, `etcd back -> writes to ${victim}'s partitions resume`, led, backAt);
    const counts = history.counts();
    t.diagnostic(
      `${history.records.length} writes: ${counts.ok} acknowledged, ${counts.unknown} unknown, ` +
        `${counts.failed} failed; retried attempts: ${retries.describe()}`,
    );
    assert.equal(counts.failed, 0, `no write reported as definitely failed (${counts.failedCodes.join(',')})`);
    assert.deepEqual(await history.check(readDb), [], 'every acknowledged write reads back');
  } catch (err) {
    t.diagnostic(c.procs.describe(15));
    throw err;
  } finally {
    for (const l of loads) await l.stop();
    await c.stop();
  }
});

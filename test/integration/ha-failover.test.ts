/**
 * Issue 12, the whole system with an elected nameserver (ha-harness.ts: a real 3-member etcd,
 * three `dstore nameserver --etcd` candidates, three storage servers given every candidate,
 * R = 2 over 6 partitions, min-write-replicas 1; lease TTL 2 s, heartbeats 250 ms, dead after
 * 2 s). Four writers and one probe per partition write through `connect([...candidates])`.
 *
 * 1. SIGKILL the leading nameserver: a survivor leads within the lease TTL + 1 s, and every
 *    write issued from the start until 1 s after the new leader is acknowledged — the data
 *    path never asks the nameserver, so the clients see nothing (the attempts the client
 *    retried by itself are counted and printed).
 * 2. Then SIGKILL a storage server that is primary of some partitions: the new leader fails it
 *    over (each of its partitions gets a surviving primary) within dead-after + 2.5 s, writes to
 *    those partitions are acknowledged again within the same bound, no write is reported as
 *    definitely failed, and every acknowledged write reads back (History.check, S9).
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { findEtcd, ETCD_INSTALL_HINT } from '../../src/process/etcd-server.js';
import { waitFor } from './cluster.js';
import { Clock, History, keysByPartition, reportRecovery, WriteLoad } from './failures-harness.js';
import { HaCluster, RetryLog } from './ha-harness.js';

const skip = findEtcd() === undefined ? `etcd is not installed: ${ETCD_INSTALL_HINT}` : false;
const P = 6;
const LEASE_TTL_MS = 2000;
const DEAD_AFTER_MS = 2000;
/** Beyond dead-after: the nameserver's tick, the fenced etcd write, the survivor's promotion. */
const FAILOVER_SLACK_MS = 2500;

test('SIGKILL the leading nameserver under 4 writers: a new leader within TTL + 1 s, every write acknowledged; ' +
  'then SIGKILL a storage primary: it fails over under the new leader, nothing acknowledged is lost', {
  skip,
  timeout: 90_000,
}, async (t) => {
  const c = await HaCluster.start({
    partitions: P,
    replicas: 2,
    minWriteReplicas: 1,
    storage: 3,
    leaseTtlMs: LEASE_TTL_MS,
    heartbeatMs: 250,
    deadAfterMs: DEAD_AFTER_MS,
  });
  let load: WriteLoad | undefined;
  try {
    const retries = new RetryLog();
    const dbs = [await c.client(retries), await c.client(retries)];
    const history = new History(P);
    const load1 = new WriteLoad(history, dbs, {
      writers: 4,
      keys: keysByPartition(P, 10, 'k').flat(),
      probeKeys: keysByPartition(P, 1, 'probe').map((l) => l[0] as string),
    });
    load = load1;
    const clock = new Clock();
    const first = await c.agreedLeader();
    await clock.at(1500);

    // 1. The leading nameserver dies.
    const killedAt = Date.now();
    c.kill(first);
    const survivors = [...c.candidates.keys()].filter((n) => n !== first);
    const next = await waitFor('a surviving candidate leads', () => c.selfLeader(survivors), LEASE_TTL_MS + 5000, 20);
    const electedMs = Date.now() - killedAt;
    t.diagnostic(`${next} leads ${electedMs} ms after SIGKILL of ${first} (lease TTL ${LEASE_TTL_MS} ms)`);
    assert.ok(electedMs <= LEASE_TTL_MS + 1000, `a new leader within the lease TTL + 1 s (took ${electedMs} ms)`);
    assert.equal(await c.agreedLeader(), next, 'the other survivor follows it');
    const heard = await waitFor(
      `${next} hears a heartbeat from every storage server`,
      async () => {
        const info = await c.nodes(next);
        const storage = info.nodes.filter((x) => x.role === 'storage');
        return storage.length === 3 && storage.every((x) => (x.lastHeartbeatMs ?? 0) > killedAt) ? Date.now() : 0;
      },
      10_000,
      20,
    );
    t.diagnostic(`every storage server heartbeats to ${next} ${heard - killedAt} ms after the SIGKILL`);
    const phase1End = Date.now() + 1000;
    await clock.at(phase1End - clock.start);
    const phase1 = history.records.filter((r) => r.startMs < phase1End);
    const notOk = phase1.filter((r) => r.outcome.kind !== 'ok');
    t.diagnostic(
      `${phase1.length} writes until 1 s after the new leader, ${notOk.length} not acknowledged; ` +
        `attempts the client retried itself: ${retries.describe()}`,
    );
    assert.ok(phase1.length > 20, `the writers kept writing (${phase1.length} writes)`);
    assert.deepEqual(
      notOk.map((r) => `${r.key}: ${JSON.stringify(r.outcome)}`),
      [],
      'every write is acknowledged while the leading nameserver dies and another takes over',
    );

    // 2. A storage primary dies; the new leader fails it over.
    const before = await c.map(next);
    const victim = ['s1', 's2', 's3'].find((s) => before.configs.some((x) => x.primary === s)) as string;
    const led = before.configs.filter((x) => x.primary === victim).map((x) => x.partition);
    const victimAt = Date.now();
    c.kill(victim);
    const after = await waitFor(
      `${next} fails ${victim} over (partitions ${led.join(',')} get a surviving primary)`,
      async () => {
        const m = await c.map(next);
        return m.configs.every((x) => x.primary !== victim && !x.secondaries.includes(victim)) ? m : undefined;
      },
      DEAD_AFTER_MS + 10_000,
      20,
    );
    const failoverMs = Date.now() - victimAt;
    t.diagnostic(`${victim} (primary of ${led.join(',')}) failed over by ${next} in ${failoverMs} ms`);
    assert.ok(failoverMs <= DEAD_AFTER_MS + FAILOVER_SLACK_MS, `failover within dead-after + slack (${failoverMs})`);
    assert.ok(after.version > before.version, 'the map changed through the new leader');
    for (const p of led) {
      const cfg = after.configs.find((x) => x.partition === p);
      assert.ok(cfg && cfg.epoch > (before.configs.find((x) => x.partition === p)?.epoch ?? 0), `${p}: new epoch`);
    }
    await waitFor(
      `writes to ${led.join(',')} acknowledged again`,
      () => led.every((p) => history.firstOkAfter(p, victimAt) !== undefined),
      DEAD_AFTER_MS + 10_000,
      20,
    );
    await clock.at(clock.elapsed + 1000);
    await load1.stop();
    load = undefined;
    const times = reportRecovery(history, `SIGKILL ${victim} (primary) -> writes resume`, led, victimAt);
    for (const [i, ms] of times.entries())
      assert.ok(
        ms !== undefined && ms <= DEAD_AFTER_MS + FAILOVER_SLACK_MS,
        `partition ${led[i]}: writes resume within dead-after + slack (${ms} ms)`,
      );

    const counts = history.counts();
    t.diagnostic(
      `${history.records.length} writes: ${counts.ok} acknowledged, ${counts.unknown} unknown, ${counts.failed} ` +
        `failed (${counts.failedCodes.join(',')}); retried attempts: ${retries.describe()}`,
    );
    assert.equal(counts.failed, 0, `no write reported as definitely failed (${counts.failedCodes.join(',')})`);
    const unknownElsewhere = history.records.filter((r) => r.outcome.kind === 'unknown' && !led.includes(r.partition));
    assert.deepEqual(
      unknownElsewhere.map((r) => r.key),
      [],
      'outcomes unknown only where the primary died',
    );
    const reader = await c.client();
    assert.deepEqual(await history.check(reader), [], 'every acknowledged write reads back');
  } catch (err) {
    t.diagnostic(c.procs.describe(15));
    throw err;
  } finally {
    await load?.stop();
    await c.stop();
  }
});

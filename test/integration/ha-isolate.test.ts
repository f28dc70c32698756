/**
 * Issue 12: the leading nameserver cut off from etcd only (ha-harness.ts; lease TTL 2 s,
 * heartbeats 250 ms, dead after 2 s). Each candidate reaches each etcd member through its own
 * TCP relay on loopback, which the test can turn into a black hole: bytes in either direction
 * are dropped and new connections are accepted and never answered — what a cut link looks
 * like (no RST, no FIN), for that candidate and etcd only. Storage servers, clients and the
 * other candidates still reach it. (A relay rather than network namespaces: no firewall tool
 * is needed to cut one path only, etcd's health checks run from here, and no root. The same
 * cut with network namespaces, as root, is ha-isolate-netns.test.ts: one namespace per
 * `dstore node`, etcd in a hub namespace, the cut a pair of blackhole rules there.)
 *
 * Under 4 writers: the cut-off leader steps down once no keepalive was answered for a TTL
 * (logged), another candidate leads within the TTL + 1 s of the cut, every write is
 * acknowledged throughout, and the isolated one then refuses registrations with NOT_LEADER at
 * once (its etcd reads for the answer are bounded, FOLLOWER_READ_MS). A
 * storage primary SIGKILLed afterwards is failed over by the new leader. Healed, the old
 * leader follows the new one.
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { NotLeaderError } from '../../src/core/errors.js';
import { ETCD_INSTALL_HINT, findEtcd } from '../../src/process/etcd-server.js';
import { waitFor } from './cluster.js';
import { History, keysByPartition, WriteLoad } from './failures-harness.js';
import { HaCluster } from './ha-harness.js';
import { Relay } from '../../src/chaos/relay.js';

const skip = findEtcd() === undefined ? `etcd is not installed: ${ETCD_INSTALL_HINT}` : false;
const P = 6;
const LEASE_TTL_MS = 2000;
const DEAD_AFTER_MS = 2000;

test('the leader cut off from etcd only steps down when its lease expires; another leads; writes go on; ' +
  'it follows once healed', { skip, timeout: 90_000 }, async (t) => {
  const relays = new Map<string, Relay[]>();
  const closeRelays = async (): Promise<void> => {
    for (const list of relays.values()) for (const r of list) await r.close();
  };
  const c = await HaCluster.start({
    partitions: P,
    replicas: 2,
    minWriteReplicas: 1,
    storage: 3,
    leaseTtlMs: LEASE_TTL_MS,
    heartbeatMs: 250,
    deadAfterMs: DEAD_AFTER_MS,
    etcdUrlsFor: async (name, urls) => {
      const made = await Promise.all(
        urls.map((u) => {
          const { hostname, port } = new URL(u);
          return Relay.start({ host: hostname, port: Number(port) });
        }),
      );
      relays.set(
        name,
        made.map((m) => m.relay),
      );
      return made.map((m) => m.url);
    },
  }).catch(async (err: unknown) => {
    await closeRelays();
    throw err;
  });
  let load: WriteLoad | undefined;
  try {
    const dbs = [await c.client(), await c.client()];
    const history = new History(P);
    load = new WriteLoad(history, dbs, {
      writers: 4,
      keys: keysByPartition(P, 10, 'k').flat(),
      probeKeys: keysByPartition(P, 1, 'probe').map((l) => l[0] as string),
    });
    const old = await c.agreedLeader();
    const oldProc = c.procs.all.get(old);
    await new Promise((r) => setTimeout(r, 1000));

    const cutAt = Date.now();
    for (const r of relays.get(old) ?? []) r.cut = true;
    const others = [...c.candidates.keys()].filter((n) => n !== old);
    const steppedDown = await waitFor(
      `${old} steps down once its lease may have expired`,
      () => /stepping down/.test(oldProc?.stderr ?? '') && Date.now(),
      LEASE_TTL_MS + 5000,
      20,
    );
    const next = await waitFor('another candidate leads', () => c.selfLeader(others), LEASE_TTL_MS + 5000, 20);
    const nextMs = Date.now() - cutAt;
    t.diagnostic(
      `${old} cut off from etcd: stepped down after ${steppedDown - cutAt} ms, ${next} leads after ${nextMs} ms`,
    );
    for (const line of (oldProc?.stderr ?? '').split('\n'))
      if (/stepping down/.test(line)) t.diagnostic(line.slice(0, 300));
    assert.ok(steppedDown - cutAt <= LEASE_TTL_MS + 500, 'it steps down within the lease TTL (+ a check period)');
    assert.ok(nextMs <= LEASE_TTL_MS + 1000, `a new leader within TTL + 1 s of the cut (${nextMs} ms)`);
    const askedAt = Date.now();
    await assert.rejects(
      c.call(
        c.candidates.get(old) ?? '',
        {
          t: 'register',
          nodeId: 's9',
          address: '127.0.0.1:1',
          backend: 'memory',
          incarnation: 's9-1',
          durable: false,
        },
        10_000,
      ),
      (err: unknown) => {
        t.diagnostic(`register at the isolated ${old}: ${String(err)}`);
        return err instanceof NotLeaderError;
      },
      'the isolated one no longer takes registrations',
    );
    const answeredMs = Date.now() - askedAt;
    assert.ok(answeredMs < 3000, `NOT_LEADER without waiting for etcd's deadlines (${answeredMs} ms)`);

    // The new leader fails a storage primary over while the old one is still cut off.
    const before = await c.map(next);
    const victim = ['s1', 's2', 's3'].find((s) => before.configs.some((x) => x.primary === s)) as string;
    const victimAt = Date.now();
    c.kill(victim);
    await waitFor(
      `${next} fails ${victim} over`,
      async () =>
        (await c.map(next)).configs.every((x) => x.primary !== victim && !x.secondaries.includes(victim)) || undefined,
      DEAD_AFTER_MS + 10_000,
      50,
    );
    t.diagnostic(`${victim} failed over by ${next} ${Date.now() - victimAt} ms after its SIGKILL`);

    for (const r of relays.get(old) ?? []) r.heal();
    await waitFor(
      `${old} follows ${next} once healed`,
      async () => (await c.leaderReply(old, 6000))?.leader?.nodeId === next || undefined,
      15_000,
      100,
    );
    await load.stop();
    load = undefined;
    const counts = history.counts();
    t.diagnostic(
      `${history.records.length} writes: ${counts.ok} acknowledged, ${counts.unknown} unknown, ${counts.failed} failed`,
    );
    assert.equal(counts.failed, 0, `no write reported as definitely failed (${counts.failedCodes.join(',')})`);
    const untouched = before.configs.filter((x) => x.primary !== victim && !x.secondaries.includes(victim));
    const notOk = history.records.filter(
      (r) => r.outcome.kind !== 'ok' && untouched.some((x) => x.partition === r.partition),
    );
    assert.deepEqual(
      notOk.map((r) => r.key),
      [],
      'every write acknowledged where the storage server did not die',
    );
    assert.deepEqual(await history.check(dbs[0] as (typeof dbs)[0]), [], 'every acknowledged write reads back');
  } catch (err) {
    t.diagnostic(c.procs.describe(15));
    throw err;
  } finally {
    await load?.stop();
    await c.stop();
    await closeRelays();
  }
});

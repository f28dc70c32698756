/**
 * Failure tests 5 and 6 of issue 3, on real processes (a nameserver and 3 lmdb storage
 * servers, R=3, 16 partitions, heartbeats every 250 ms, dead after 2 s).
 *
 * 5. Exactly once (S10): raw `put` calls with the same (cid, rs) sent straight to the
 *    partition's primary. Proves: a repeated request gets the original version and adds no
 *    log entry (stats lastSeq grows by one); a new rs is a new write; a request whose reply
 *    is dropped (a TCP proxy swallows the primary's answers) and then retried is applied
 *    once; and a request committed by a primary that then dies, retried at the new primary,
 *    gets the original version without a second entry.
 * 6. Minimum replicas (§5.7, S8): with 2 of 3 storage servers SIGKILLed, writes to the
 *    survivor's partitions are refused with UNAVAILABLE and change nothing, and reads still
 *    answer; after one server restarts and catches up, writes resume (time printed).
 */
import assert from 'node:assert/strict';
import { createServer, connect as netConnect, type Server, type Socket } from 'node:net';
import { test } from 'node:test';
import { TimeoutError, UnavailableError } from '../../src/client/index.js';
import { partitionOf } from '../../src/core/partitioning.js';
import { RpcConnection } from '../../src/rpc/transport.js';
import { LocalCluster, membersOf, type ReplicaStats, waitFor } from './cluster.js';
import { keysByPartition, TIMING, withLogsOnFailure } from './failures-harness.js';

const P = 16;
const FAST = { nodes: 3, partitions: P, replicas: 3, backend: 'lmdb', ...TIMING } as const;
const text = (b: Uint8Array) => Buffer.from(b).toString('utf8');

/** A TCP proxy to `target` that forwards requests and, while `dropReplies`, swallows every byte coming back. */
class LossyProxy {
  dropReplies = false;
  private readonly sockets = new Set<Socket>();
  private constructor(
    private readonly server: Server,
    readonly port: number,
  ) {}

  static async start(target: string): Promise<LossyProxy> {
    const [host, port] = target.split(':');
    let proxy: LossyProxy | undefined;
    const server = createServer((client) => {
      const upstream = netConnect(Number(port), host!);
      proxy!.sockets.add(client).add(upstream);
      client.on('data', (d) => upstream.write(d));
      upstream.on('data', (d) => {
        if (!proxy!.dropReplies) client.write(d);
      });
      const end = () => {
        client.destroy();
        upstream.destroy();
      };
      client.on('close', end).on('error', end);
      upstream.on('close', end).on('error', end);
    });
    await new Promise<void>((res) => server.listen(0, '127.0.0.1', res));
    const addr = server.address();
    proxy = new LossyProxy(server, typeof addr === 'object' && addr ? addr.port : 0);
    return proxy;
  }

  async close(): Promise<void> {
    for (const s of this.sockets) s.destroy();
    await new Promise<void>((res) => this.server.close(() => res()));
  }
}

function rpcTo(address: string): RpcConnection {
  const [host, port] = address.split(':');
  return new RpcConnection({ host: host!, port: Number(port), maxFrameBytes: 8 * 1024 * 1024, backoffMaxMs: 200 });
}

async function partitionStats(cluster: LocalCluster, node: string, p: number): Promise<ReplicaStats> {
  const r = (await cluster.stats(node)).partitions.find((x) => x.partition === p);
  assert.ok(r, `${node} reports no replica of partition ${p}`);
  return r;
}

test(
  'a retried write is applied once: same (cid, rs) → same version, one log entry; also after a ' +
    'lost reply and across a failover',
  async () => {
    await using cluster = await LocalCluster.start(FAST);
    const conns: RpcConnection[] = [];
    let proxy: LossyProxy | undefined;
    try {
      await withLogsOnFailure(cluster, async () => {
        const key = Buffer.from('exactly-once');
        const p = partitionOf(key, P);
        // Formed is not enough: wait until every primary has its replica and serves.
        const map = await cluster.waitReplicated(15_000);
        const primary = map.configs[p]!.primary;
        const direct = rpcTo(map.addresses[primary]!);
        conns.push(direct);
        const put = (rs: number, value: string) => ({
          t: 'put',
          p,
          key,
          value: Buffer.from(value),
          cid: 'test-client',
          rs,
        });

        // (a) The same request twice: one entry, one version.
        const seq0 = (await partitionStats(cluster, primary, p)).lastSeq;
        const r1 = (await direct.call(put(1, 'one'), { timeoutMs: 5000 })) as { version: number };
        const r2 = (await direct.call(put(1, 'one'), { timeoutMs: 5000 })) as { version: number };
        const seq1 = (await partitionStats(cluster, primary, p)).lastSeq;
        console.log(`# same (cid, rs) twice: versions ${r1.version} and ${r2.version}; lastSeq ${seq0} -> ${seq1}`);
        assert.equal(r2.version, r1.version, 'the repeated request got a different version');
        assert.equal(seq1 - seq0, 1, 'the repeated request added a log entry');
        // A new rs is a new write.
        const r3 = (await direct.call(put(2, 'two'), { timeoutMs: 5000 })) as { version: number };
        assert.ok(r3.version > r1.version, `rs 2 got version ${r3.version}, not above ${r1.version}`);
        assert.equal((await partitionStats(cluster, primary, p)).lastSeq, seq1 + 1);

        // (b) A lost reply: the proxy swallows the answer; the caller times out and retries.
        proxy = await LossyProxy.start(map.addresses[primary]!);
        const viaProxy = rpcTo(`127.0.0.1:${proxy.port}`);
        conns.push(viaProxy);
        await viaProxy.call({ t: 'stats' }, { timeoutMs: 5000 }); // connected, replies flowing
        proxy.dropReplies = true;
        const seqB = (await partitionStats(cluster, primary, p)).lastSeq;
        await assert.rejects(viaProxy.call(put(3, 'three'), { timeoutMs: 1000 }), TimeoutError);
        const applied = await waitFor(
          'the write whose reply was lost to be applied',
          async () => {
            const r = await partitionStats(cluster, primary, p);
            return r.lastSeq === seqB + 1 && r.appliedSeq >= r.lastSeq ? r : undefined;
          },
          5000,
        );
        proxy.dropReplies = false;
        const retried = (await viaProxy.call(put(3, 'three'), { timeoutMs: 5000 })) as { version: number };
        const seqAfterRetry = (await partitionStats(cluster, primary, p)).lastSeq;
        console.log(
          `# lost reply, then retry: retry answered version ${retried.version}; the write ` +
            `is entry ${applied.lastSeq}; ` +
            `lastSeq after the retry ${seqAfterRetry}`,
        );
        assert.equal(retried.version, applied.lastSeq, 'the retry did not get the original version');
        assert.equal(seqAfterRetry, applied.lastSeq, 'the retry added a log entry');

        // (c) Committed on every replica, reply lost, primary dies: the retry at the new
        // primary gets the original version (the dedup table travels with the log, S10).
        proxy.dropReplies = true;
        await assert.rejects(viaProxy.call(put(4, 'four'), { timeoutMs: 1000 }), TimeoutError);
        const committed = await waitFor(
          'the write to be applied on every replica',
          async () => {
            const rs = await Promise.all(membersOf(map.configs[p]!).map((m) => partitionStats(cluster, m, p)));
            const top = Math.max(...rs.map((r) => r.lastSeq));
            return top === applied.lastSeq + 1 && rs.every((r) => r.appliedSeq === top) ? top : undefined;
          },
          5000,
        );
        const killedAt = Date.now();
        await cluster.kill(primary, 'SIGKILL');
        const after = await waitFor(
          `a new primary of partition ${p} to serve`,
          async () => {
            const m = await cluster.map();
            const c = m.configs[p]!;
            if (c.primary === primary) return undefined;
            const r = await partitionStats(cluster, c.primary, p);
            return r.serving && r.epoch === c.epoch ? { m, r } : undefined;
          },
          TIMING.deadAfterMs + 13_000,
          100,
        );
        console.log(
          `# primary ${primary} of partition ${p} SIGKILLed -> ${after.m.configs[p]!.primary} serves after ` +
            `${Date.now() - killedAt} ms`,
        );
        const newPrimary = rpcTo(after.m.addresses[after.m.configs[p]!.primary]!);
        conns.push(newPrimary);
        const seqBefore = after.r.lastSeq; // includes the new primary's epoch-start entry (S6)
        const again = (await newPrimary.call(put(4, 'four'), { timeoutMs: 5000 })) as { version: number };
        const seqAfter = (await partitionStats(cluster, after.m.configs[p]!.primary, p)).lastSeq;
        console.log(
          `# retry at the new primary: version ${again.version} ` +
            `(originally entry ${committed}); ` +
            `lastSeq ${seqBefore} -> ${seqAfter}`,
        );
        assert.equal(again.version, committed, 'the retry at the new primary did not get the original version');
        assert.equal(seqAfter, seqBefore, 'the retry at the new primary added a log entry');
        const db = await cluster.client();
        const got = await db.get(key);
        assert.equal(got && text(got.value), 'four');
        assert.equal(got?.version, committed);
      });
    } finally {
      for (const c of conns) c.close();
      await proxy?.close();
    }
  },
);

test(
  '2 of 3 storage servers SIGKILLed: the survivor’s partitions refuse writes with UNAVAILABLE and still answer ' +
    'reads; after a restart writes resume',
  async () => {
    await using cluster = await LocalCluster.start(FAST);
    await withLogsOnFailure(cluster, async () => {
      const db = await cluster.client();
      const survivor = 's1';
      const before = await cluster.map();
      const led = LocalCluster.ledBy(before, survivor);
      assert.ok(led.length > 0, `${survivor} leads no partition`);
      const keyOf = keysByPartition(P, 1, 'min').map((l) => l[0]!);
      for (const p of led) await db.put(keyOf[p]!, 'before');

      const killedAt = Date.now();
      await Promise.all(['s2', 's3'].map((n) => cluster.kill(n, 'SIGKILL')));
      // The nameserver removes the dead secondaries of the survivor's partitions (a live
      // primary may go on with the rest, even below half alive), leaving one member each.
      // Then the survivor knows it (a write it took before would wait for a new secondary, S8,
      // and end as OUTCOME_UNKNOWN, correctly): wait until it runs at the shrunk epochs.
      await waitFor(
        `the partitions ${survivor} leads to shrink to ${survivor} alone, and ${survivor} to know it`,
        async () => {
          const m = await cluster.map();
          if (!led.every((p) => membersOf(m.configs[p]!).join() === survivor)) return false;
          const st = await cluster.stats(survivor);
          return led.every((p) => st.partitions.find((x) => x.partition === p)?.epoch === m.configs[p]!.epoch);
        },
        TIMING.deadAfterMs + 13_000,
        100,
      );
      console.log(
        `# SIGKILL s2, s3 -> ${survivor}'s ${led.length} partitions shrink to one member after ` +
          `${Date.now() - killedAt} ms`,
      );

      const shrunk = (await cluster.stats(survivor)).partitions.find((x) => x.partition === led[0]);
      console.log(`# ${survivor}'s replica of partition ${led[0]} now: ${JSON.stringify(shrunk)}`);
      const quick = await cluster.client(2000);
      for (const p of led) {
        const started = Date.now();
        const err = await quick.put(keyOf[p]!, 'on one disk').then(
          (v) => new Error(`acknowledged at version ${v}`),
          (e: unknown) => e as Error,
        );
        assert.ok(
          err instanceof UnavailableError,
          `partition ${p}: expected UNAVAILABLE, got ${err.name}: ${err.message}`,
        );
        if (p === led[0])
          console.log(
            `# write to partition ${p}: ${err.name} after ${Date.now() - started} ms (client ` +
              `deadline 2000 ms): ${err.message}`,
          );
        const readStarted = Date.now();
        const got = await quick
          .get(keyOf[p]!)
          .catch((e: Error) => assert.fail(`partition ${p}: a read on the survivor failed: ${e.name}: ${e.message}`));
        assert.equal(
          got && text(got.value),
          'before',
          `partition ${p}: the refused write changed the value, or the read failed`,
        );
        if (p === led[0]) console.log(`# read on partition ${p} answered in ${Date.now() - readStarted} ms`);
      }

      const restartedAt = Date.now();
      await cluster.restart('s2');
      const resumed = new Map<number, number>();
      await waitFor(
        `writes to ${survivor}'s partitions to resume after s2 restarts`,
        async () => {
          await Promise.all(
            led
              .filter((p) => !resumed.has(p))
              .map(async (p) => {
                try {
                  await quick.put(keyOf[p]!, 'after');
                  resumed.set(p, Date.now() - restartedAt);
                } catch {
                  // still refused: try again
                }
              }),
          );
          return resumed.size === led.length;
        },
        45_000,
        100,
      );
      const times = [...resumed.values()].sort((a, b) => a - b);
      console.log(
        `# restart s2 -> writes resume on ${survivor}'s partitions: first ${times[0]} ms, median ` +
          `${times[Math.floor(times.length / 2)]} ms, last ${times.at(-1)} ms`,
      );
      for (const p of led) assert.equal(text((await db.get(keyOf[p]!))!.value), 'after');
      const map = await cluster.map();
      assert.ok(
        led.every((p) => membersOf(map.configs[p]!).includes('s2')),
        's2 is not a member of the partitions that resumed',
      );
    });
  },
);

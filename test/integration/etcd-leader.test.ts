/**
 * Issue 12: nameservers elected through a real etcd, as real `dstore nameserver --etcd …`
 * processes. Storage servers are played by the test (raw `register` calls): the map changes
 * that matter here are the nameserver's, and real storage servers would add nothing but load.
 *
 * - Three candidates: exactly one leads, every one answers `leader` alike; followers answer
 *   `map` from etcd and refuse `register` with NOT_LEADER naming the leader; SIGKILL the leader
 *   and another leads within the lease TTL + 1 s, with the map the old one wrote (same cluster
 *   id, the version continues); SIGTERM the new leader and it resigns: the last one leads before
 *   the lease would have expired.
 * - Fencing: the leader is SIGSTOPped past its lease; the other takes over and changes the map;
 *   a registration reaches the old leader while it is stopped; on SIGCONT the old leader's map
 *   transaction is refused by etcd (logged), the call fails with NOT_LEADER naming the new
 *   leader, the map in etcd is untouched, and the old leader follows.
 */
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, afterEach, before, describe, test } from 'node:test';
import { Etcd3 } from 'etcd3';
import { NotLeaderError } from '../../src/core/errors.js';
import { ETCD_INSTALL_HINT, EtcdCluster, findEtcd } from '../../src/process/etcd-server.js';
import { freePort } from '../../src/process/ports.js';
import type { ClusterInfo, LeaderReply, MapReply } from '../../src/rpc/messages.js';
import { RpcConnection } from '../../src/rpc/transport.js';
import { MAIN } from '../shared/dstore.js';
import { Processes } from './spawned.js';

const skip = findEtcd() === undefined ? `etcd is not installed: ${ETCD_INSTALL_HINT}` : false;
/** etcd's smallest lease is about 1.5 s with its default election timeout, so 2 s is asked for. */
const LEASE_TTL_MS = 2000;
const CALL_MS = 10_000;

/**
 * Whether a socket accepted on loopback `port` holds bytes its (stopped) process has not read:
 * the `rx_queue` of an established connection in /proc/net/tcp. Where that file is missing
 * (not Linux), true: the caller then only gets the turns it already waited.
 */
function bytesQueuedAt(port: number): boolean {
  let table: string;
  try {
    table = readFileSync('/proc/net/tcp', 'utf8');
  } catch {
    return true;
  }
  const local = `:${port.toString(16).toUpperCase().padStart(4, '0')}`;
  return table
    .split('\n')
    .slice(1)
    .some((line) => {
      const f = line.trim().split(/\s+/);
      const rx = Number.parseInt(f[4]?.split(':')[1] ?? '0', 16);
      return f[1]?.endsWith(local) === true && f[3] === '01' && rx > 0;
    });
}

interface Candidate {
  readonly id: string;
  readonly address: string;
  readonly conn: RpcConnection;
}

describe('nameservers elected through etcd', { skip }, () => {
  let etcd: EtcdCluster | undefined;
  let kv: Etcd3 | undefined;
  let root = '';
  let procs = new Processes();
  let conns: RpcConnection[] = [];
  let prefixSeq = 0;

  before(async () => {
    root = mkdtempSync(join(tmpdir(), 'dstore-etcd-leader-'));
    etcd = await EtcdCluster.start({ dir: join(root, 'etcd'), members: 1 });
    kv = new Etcd3({ hosts: etcd.clientUrls });
  });
  afterEach(async () => {
    for (const c of conns) c.close();
    conns = [];
    await procs.stopAll();
    procs = new Processes();
  });
  after(async () => {
    kv?.close();
    await etcd?.destroy();
    rmSync(root, { recursive: true, force: true });
  });

  async function startCandidates(ids: readonly string[], prefix: string): Promise<Candidate[]> {
    const out: Candidate[] = [];
    for (const id of ids) {
      const port = await freePort();
      procs.start(id, process.execPath, [
        MAIN,
        'nameserver',
        '--listen=127.0.0.1',
        `--port=${port}`,
        '--http-port=off',
        `--data-dir=${join(root, prefix.replaceAll('/', '_'), id)}`,
        `--etcd=${(etcd?.clientUrls ?? []).join(',')}`,
        `--etcd-prefix=${prefix}`,
        `--lease-ttl-ms=${LEASE_TTL_MS}`,
        `--node-id=${id}`,
        '--partitions=4',
        '--replicas=2',
        '--initial-nodes=2',
        '--heartbeat-ms=200',
        '--dead-after-ms=30000',
        '--log-level=info',
      ]);
      const conn = new RpcConnection({
        host: '127.0.0.1',
        port,
        maxFrameBytes: 16 * 1024 * 1024,
        expectRole: 'nameserver',
        backoffMaxMs: 200,
      });
      conns.push(conn);
      out.push({ id, address: `127.0.0.1:${port}`, conn });
    }
    return out;
  }

  const call = (c: Candidate, body: Record<string, unknown>): Promise<unknown> =>
    c.conn.call(body, { timeoutMs: CALL_MS });
  const leaderOf = async (c: Candidate): Promise<LeaderReply | undefined> => {
    try {
      return (await call(c, { t: 'leader' })) as LeaderReply;
    } catch {
      return undefined; // not listening yet, or stopped
    }
  };
  const register = (c: Candidate, nodeId: string): Promise<unknown> =>
    call(c, {
      t: 'register',
      nodeId,
      address: `127.0.0.1:${40_000 + Number(nodeId.slice(1))}`,
      backend: 'memory',
      incarnation: `${nodeId}-1`,
      durable: false,
    });

  /** Polls `probe` until it returns a value (bounded), failing with `what` and the processes' logs. */
  async function until<T>(what: string, timeoutMs: number, probe: () => Promise<T | undefined>): Promise<T> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const v = await probe();
      if (v !== undefined) return v;
      if (Date.now() > deadline) assert.fail(`${what} within ${timeoutMs} ms\n${procs.describe(12)}`);
      await new Promise((r) => setTimeout(r, 50));
    }
  }

  /** Once every candidate in `cs` answers `leader` naming the same leader, that one. */
  function agreedLeader(cs: readonly Candidate[]): Promise<Candidate> {
    return until('every candidate names the same leader', 30_000, async () => {
      const replies = await Promise.all(cs.map(leaderOf));
      const named = new Set(replies.map((r) => r?.leader?.nodeId));
      if (named.size !== 1 || replies.some((r) => r === undefined)) return undefined;
      const leader = cs.find((c) => c.id === replies[0]?.leader?.nodeId);
      if (!leader) return undefined;
      replies.forEach((r, i) => assert.equal(r?.self, cs[i]?.id, 'each answers with its own id'));
      assert.equal(replies[0]?.leader?.address, leader.address, 'the leader key says where it listens');
      return leader;
    });
  }

  async function storedMap(prefix: string): Promise<{ map: MapReply & { nodes: object }; modRevision: string }> {
    const res = await kv?.get(`${prefix}map`).exec();
    const entry = res?.kvs[0];
    assert.ok(entry, `a map under ${prefix}map`);
    return { map: JSON.parse(entry.value.toString()), modRevision: entry.mod_revision };
  }

  test('one of three leads; after SIGKILL another leads within TTL + 1 s with the same map', async (t) => {
    const prefix = `/dstore/it-${process.pid}-${prefixSeq++}/`;
    const cs = await startCandidates(['ns1', 'ns2', 'ns3'], prefix);
    const first = await agreedLeader(cs);
    const followers = cs.filter((c) => c !== first);

    await register(first, 's1');
    await register(first, 's2');
    const m1 = (await call(first, { t: 'map' })) as MapReply;
    assert.equal(m1.formed, true, 'two storage servers formed the cluster');
    assert.equal((await storedMap(prefix)).map.version, m1.version, 'the map in etcd is the one announced');
    for (const f of followers) {
      const fm = (await call(f, { t: 'map' })) as MapReply;
      assert.deepEqual([fm.clusterId, fm.version], [m1.clusterId, m1.version], `${f.id} answers etcd's map`);
      const info = (await call(f, { t: 'nodes' })) as ClusterInfo;
      assert.equal(info.leader?.nodeId, first.id, `${f.id}'s nodes names the leader`);
      assert.equal(info.nameserverId, f.id);
      await assert.rejects(
        register(f, 's9'),
        (err: unknown) => err instanceof NotLeaderError && err.leader === first.address,
        `${f.id} refuses a registration, naming the leader`,
      );
    }
    const info = (await call(first, { t: 'nodes' })) as ClusterInfo;
    assert.equal(info.leader?.nodeId, first.id);
    assert.ok(info.leader && info.leader.sinceMs <= Date.now());

    const killedAt = Date.now();
    procs.all.get(first.id)?.child.kill('SIGKILL');
    const next = await until('a survivor leads', LEASE_TTL_MS + 5000, async () => {
      for (const f of followers) {
        const r = await leaderOf(f);
        if (r?.leader && r.leader.nodeId !== first.id && r.leader.nodeId === r.self) return f;
      }
      return undefined;
    });
    const tookMs = Date.now() - killedAt;
    t.diagnostic(`new leader ${next.id} ${tookMs} ms after SIGKILL of ${first.id} (lease TTL ${LEASE_TTL_MS} ms)`);
    assert.ok(tookMs <= LEASE_TTL_MS + 1000, `a new leader within the lease TTL + 1 s (took ${tookMs} ms)`);
    assert.equal((await agreedLeader(followers)).id, next.id, 'the other survivor agrees');

    const m2 = (await call(next, { t: 'map' })) as MapReply;
    assert.equal(m2.clusterId, m1.clusterId, 'the new leader loaded the old map, not a new cluster');
    assert.ok(m2.version >= m1.version, `the version continues (${m1.version} → ${m2.version})`);
    await register(next, 's3');
    const m3 = (await call(next, { t: 'map' })) as MapReply;
    assert.ok(m3.version > m2.version && 's3' in m3.addresses, 'the new leader changes the map');
    assert.equal((await storedMap(prefix)).map.version, m3.version);

    // A leader stopped with SIGTERM resigns (revokes its lease): the last one leads well before a TTL.
    const last = followers.find((f) => f !== next) as Candidate;
    const stoppedAt = Date.now();
    procs.all.get(next.id)?.child.kill('SIGTERM');
    await until(`${last.id} leads after ${next.id} resigned`, LEASE_TTL_MS + 5000, async () => {
      const r = await leaderOf(last);
      return r?.leader?.nodeId === last.id ? true : undefined;
    });
    const handoverMs = Date.now() - stoppedAt;
    t.diagnostic(`${last.id} leads ${handoverMs} ms after SIGTERM of ${next.id}`);
    assert.ok(handoverMs < LEASE_TTL_MS, `a resignation hands over before the lease expires (${handoverMs} ms)`);
    assert.deepEqual((await procs.waitExit(next.id, 10_000))?.code, 0, `${next.id} exits cleanly`);
    const m4 = (await call(last, { t: 'map' })) as MapReply;
    assert.deepEqual([m4.clusterId, m4.version >= m3.version], [m1.clusterId, true]);
  });

  test('a leader paused past its lease writes nothing when it resumes, and follows', async (t) => {
    const prefix = `/dstore/it-${process.pid}-${prefixSeq++}/`;
    const cs = await startCandidates(['a', 'b'], prefix);
    const old = await agreedLeader(cs);
    const other = cs.find((c) => c !== old) as Candidate;
    await register(old, 's1');
    await register(old, 's2');
    const before = await storedMap(prefix);
    assert.equal(before.map.configs.length, 4, 'formed under the first leader');

    const oldProc = procs.all.get(old.id);
    assert.ok(oldProc?.child.pid);
    oldProc.child.kill('SIGSTOP');
    try {
      await until(`${other.id} leads while ${old.id} is stopped`, LEASE_TTL_MS + 10_000, async () => {
        const r = await leaderOf(other);
        return r?.leader?.nodeId === other.id ? true : undefined;
      });
      await register(other, 's3');
      const changed = await storedMap(prefix);
      assert.ok(changed.map.version > before.map.version && 's3' in changed.map.nodes, 'the new leader changed it');

      // A registration reaches the old leader while it is stopped (its connection was open).
      const stale = register(old, 's4').then(
        () => undefined,
        (err: unknown) => err,
      );
      await until(`the registration is queued at the stopped ${old.id}`, 5000, async () =>
        bytesQueuedAt(Number(old.address.split(':')[1])) ? true : undefined,
      );
      oldProc.child.kill('SIGCONT');
      const err = await stale;
      assert.ok(err instanceof NotLeaderError, `the old leader answers NOT_LEADER, got ${String(err)}`);
      assert.equal(err.leader, other.address, 'naming the new leader');
      await until("the old leader logs etcd's refusal of its map transaction", 10_000, async () =>
        /etcd refused the map transaction/.test(oldProc.stderr) ? true : undefined,
      );
      assert.match(oldProc.stderr, /stepping down/);
      for (const line of oldProc.stderr.split('\n'))
        if (/refused the map transaction|stepping down/.test(line)) t.diagnostic(line.slice(0, 300));

      const afterwards = await storedMap(prefix);
      assert.equal(afterwards.modRevision, changed.modRevision, 'nothing was written over the new map');
      assert.ok(!('s4' in afterwards.map.nodes), 'the old leader’s change is not in etcd');

      const r = await leaderOf(old);
      assert.deepEqual([r?.self, r?.leader?.nodeId], [old.id, other.id], 'the old leader follows');
      await assert.rejects(
        register(old, 's5'),
        (e: unknown) => e instanceof NotLeaderError && e.leader === other.address,
      );
      const m = (await call(old, { t: 'map' })) as MapReply;
      assert.equal(m.version, afterwards.map.version, "as a follower it answers etcd's map");
    } finally {
      oldProc.child.kill('SIGCONT');
    }
  });
});

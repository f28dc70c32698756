/**
 * Issue 12: `dstore node` — a storage server and a nameserver candidate in one process — three
 * times, with a real 3-member etcd. The cluster forms; a put/get through a client given every
 * node as a seed works; `nodes` (through the CLI too) names the leader. SIGKILL the leading
 * node (its storage server and its candidate die together): another node leads within the
 * lease TTL + 1 s, and writes to keys whose partition had its primary on a surviving node go
 * on. SIGTERM a node: it exits 0 and its candidate resigns (it is no longer named in etcd).
 */
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, afterEach, before, describe, test } from 'node:test';
import type { Db } from '../../src/client/api.js';
import { connect } from '../../src/client/index.js';
import { partitionOf } from '../../src/core/partitioning.js';
import { ETCD_INSTALL_HINT, EtcdCluster, findEtcd } from '../../src/process/etcd-server.js';
import { freePort } from '../../src/process/ports.js';
import type { LeaderReply, MapReply } from '../../src/rpc/messages.js';
import { RpcConnection } from '../../src/rpc/transport.js';
import { MAIN, runDstoreText } from '../shared/dstore.js';
import { Processes } from './spawned.js';

const skip = findEtcd() === undefined ? `etcd is not installed: ${ETCD_INSTALL_HINT}` : false;
const LEASE_TTL_MS = 2000;
const PARTITIONS = 6;
const CALL_MS = 5000;

interface Node {
  readonly id: string;
  readonly storagePort: number;
  readonly nameserver: string;
  readonly conn: RpcConnection;
}

describe('dstore node ×3 with a 3-member etcd', { skip }, () => {
  let etcd: EtcdCluster | undefined;
  let root = '';
  let procs = new Processes();
  let conns: RpcConnection[] = [];
  let dbs: Db[] = [];

  before(async () => {
    root = mkdtempSync(join(tmpdir(), 'dstore-node-ha-'));
    etcd = await EtcdCluster.start({ dir: join(root, 'etcd'), members: 3 });
  });
  afterEach(async () => {
    for (const db of dbs) await db.close();
    dbs = [];
    for (const c of conns) c.close();
    conns = [];
    await procs.stopAll();
    procs = new Processes();
  });
  after(async () => {
    await etcd?.destroy();
    rmSync(root, { recursive: true, force: true });
  });

  async function startNodes(prefix: string): Promise<Node[]> {
    const ports: number[] = [];
    while (ports.length < 6) {
      const port = await freePort();
      if (!ports.includes(port)) ports.push(port);
    }
    const nodes = ['n1', 'n2', 'n3'].map((id, i) => ({
      id,
      storagePort: ports[2 * i] as number,
      nameserverPort: ports[2 * i + 1] as number,
    }));
    const seeds = nodes.map((n) => `127.0.0.1:${n.nameserverPort}`).join(',');
    return nodes.map((n) => {
      procs.start(n.id, process.execPath, [
        MAIN,
        'node',
        '--listen=127.0.0.1',
        `--port=${n.storagePort}`,
        `--nameserver-port=${n.nameserverPort}`,
        `--node-id=${n.id}`,
        `--data-dir=${join(root, prefix, n.id)}`,
        `--etcd=${(etcd?.clientUrls ?? []).join(',')}`,
        `--etcd-prefix=/${prefix}/`,
        `--lease-ttl-ms=${LEASE_TTL_MS}`,
        `--nameserver=${seeds}`,
        `--partitions=${PARTITIONS}`,
        '--replicas=3',
        '--min-write-replicas=2',
        '--heartbeat-ms=200',
        '--dead-after-ms=1500',
        '--backend=memory',
        '--log-level=info',
      ]);
      const conn = new RpcConnection({
        host: '127.0.0.1',
        port: n.nameserverPort,
        maxFrameBytes: 16 * 1024 * 1024,
        expectRole: 'nameserver',
        backoffMaxMs: 200,
      });
      conns.push(conn);
      return { id: n.id, storagePort: n.storagePort, nameserver: `127.0.0.1:${n.nameserverPort}`, conn };
    });
  }

  const leaderSeenBy = async (n: Node): Promise<string | undefined> => {
    try {
      return ((await n.conn.call({ t: 'leader' }, { timeoutMs: 1000 })) as LeaderReply).leader?.nodeId;
    } catch {
      return undefined; // not listening yet, or dead
    }
  };

  /** Polls until every node in `among` names the same leader (one of `among`); bounded. */
  async function agreedLeader(among: readonly Node[], ms: number): Promise<string> {
    const deadline = Date.now() + ms;
    let seen: (string | undefined)[] = [];
    while (Date.now() < deadline) {
      seen = await Promise.all(among.map(leaderSeenBy));
      const first = seen[0];
      if (first !== undefined && seen.every((s) => s === first) && among.some((n) => n.id === first)) return first;
      await new Promise((r) => setTimeout(r, 50));
    }
    throw new Error(
      `no agreed leader among ${among.map((n) => n.id)} within ${ms} ms (seen ${seen})\n${procs.describe()}`,
    );
  }

  /** The election's log lines of every node, for a failure message. */
  const electionLines = (): string =>
    [...procs.all.values()]
      .flatMap((p) =>
        p.stderr
          .split('\n')
          .filter((l) => /elected|stepping|lost|refused|leader of|campaign/.test(l))
          .map((l) => `${p.name}: ${l.slice(0, 300)}`),
      )
      .join('\n');

  async function formedDb(nodes: readonly Node[], ms: number): Promise<Db> {
    const db = await connect(
      nodes.map((n) => n.nameserver),
      { timeoutMs: 15_000, lazy: true },
    );
    dbs.push(db);
    const deadline = Date.now() + ms;
    let last = '';
    while (Date.now() < deadline) {
      try {
        const info = await db.nodes();
        const alive = info.nodes.filter((n) => n.role === 'storage' && n.state === 'alive').length;
        if (info.formed && alive === 3 && info.partitionsReady === info.partitions) return db;
        last =
          `formed ${info.formed}, ${alive} alive, ${info.partitionsReady}/${info.partitions} ready, ` +
          `leader ${info.leader?.nodeId}, nodes ${info.nodes.map((n) => `${n.id}:${n.state}`).join(' ')}`;
      } catch (err) {
        last = err instanceof Error ? err.message : String(err);
      }
      await new Promise((r) => setTimeout(r, 100));
    }
    throw new Error(`the cluster did not form within ${ms} ms: ${last}\n${electionLines()}\n${procs.describe()}`);
  }

  test('forms, serves through every seed, names its leader; SIGKILL of the leading node fails over', async (t) => {
    const nodes = await startNodes('kill');
    const db = await formedDb(nodes, 30_000);
    const leader = await agreedLeader(nodes, 10_000);

    assert.ok((await db.put('hello', 'world')) >= 1);
    assert.equal(new TextDecoder().decode((await db.get('hello'))?.value), 'world');
    const info = await db.nodes();
    assert.equal(info.leader?.nodeId, leader, 'nodes names the leader');
    assert.ok((info.leader?.sinceMs ?? 0) > 0 && (info.leader?.sinceMs ?? 0) <= Date.now());
    const seeds = nodes.map((n) => n.nameserver).join(',');
    const cli = await runDstoreText(['nodes', '--nameserver', seeds]);
    assert.equal(cli.code, 0, cli.stderr);
    assert.match(cli.stdout, new RegExp(`leader ${leader} \\(127\\.0\\.0\\.1:\\d+\\) since `), cli.stdout);

    // Which partitions have their primary on a node that survives.
    const leading = nodes.find((n) => n.id === leader)!;
    const map = (await leading.conn.call({ t: 'map' }, { timeoutMs: CALL_MS })) as MapReply;
    const survivingPrimary = new Set(map.configs.filter((c) => c.primary !== leader).map((c) => c.partition));
    assert.ok(survivingPrimary.size > 0, 'some partition leads on a surviving node');
    const keys: string[] = [];
    for (let i = 0; keys.length < 4 && i < 1000; i++) {
      const key = `k${i}`;
      if (survivingPrimary.has(partitionOf(new TextEncoder().encode(key), PARTITIONS))) keys.push(key);
    }

    const killedAt = Date.now();
    procs.all.get(leader)?.child.kill('SIGKILL');
    const rest = nodes.filter((n) => n.id !== leader);
    // The first survivor that says it leads itself, polled every 20 ms (bounded).
    let next: string | undefined;
    while (next === undefined && Date.now() - killedAt < LEASE_TTL_MS + 5000) {
      for (const n of rest) {
        try {
          const r = (await n.conn.call({ t: 'leader' }, { timeoutMs: 500 })) as LeaderReply;
          if (r.leader && r.leader.nodeId !== leader && r.leader.nodeId === r.self) next = r.self;
        } catch {
          // a survivor that does not answer this round is asked again
        }
      }
      if (next === undefined) await new Promise((r) => setTimeout(r, 20));
    }
    const tookMs = Date.now() - killedAt;
    assert.ok(next !== undefined, `no survivor leads ${tookMs} ms after SIGKILL of ${leader}\n${procs.describe()}`);
    t.diagnostic(`new leader ${next} ${tookMs} ms after SIGKILL of ${leader} (lease TTL ${LEASE_TTL_MS} ms)`);
    assert.ok(tookMs <= LEASE_TTL_MS + 1000, `a new leader within the lease TTL + 1 s (took ${tookMs} ms)`);
    assert.equal(await agreedLeader(rest, 5000), next, 'the other survivor agrees');
    assert.ok(await procs.waitExit(leader, 5000), `${leader} did not die on SIGKILL`);

    for (const key of keys) {
      const version = await db.put(key, `after-${key}`);
      assert.ok(version >= 1, `put ${key} after the failover`);
      assert.equal(new TextDecoder().decode((await db.get(key))?.value), `after-${key}`);
    }
    const after = await db.nodes();
    assert.equal(after.leader?.nodeId, next, 'nodes names the new leader');
  });

  test('SIGTERM stops a node cleanly: exit 0, and another node leads at once', async () => {
    const nodes = await startNodes('term');
    await formedDb(nodes, 30_000);
    const leader = await agreedLeader(nodes, 10_000);
    const stoppedAt = Date.now();
    procs.all.get(leader)?.child.kill('SIGTERM');
    const exit = await procs.waitExit(leader, 15_000);
    assert.deepEqual(exit, { code: 0, signal: null }, procs.describe());
    const next = await agreedLeader(
      nodes.filter((n) => n.id !== leader),
      LEASE_TTL_MS + 1000,
    );
    assert.notEqual(next, leader);
    assert.ok(Date.now() - stoppedAt < 15_000);
  });
});

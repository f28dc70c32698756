/**
 * The whole system with an elected nameserver (issue 12), roles apart, as real processes: a
 * real 3-member etcd (EtcdCluster), three `dstore nameserver --etcd …` candidates and
 * storage servers started with `--nameserver <every candidate>`; clients `connect` with the
 * list of candidates. Used by ha-*.test.ts. Everything started here is stopped by `stop()`
 * (also etcd members the test restarted itself), with bounded waits.
 */
import { type ChildProcess, spawn } from 'node:child_process';
import { closeSync, mkdtempSync, openSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { connect, type Db } from '../../src/client/index.js';
import { EtcdCluster, type EtcdMember, isHealthy } from '../../src/process/etcd-server.js';
import { nameserverArgs, storageArgs } from '../../src/process/node-args.js';
import { freePort } from '../../src/process/ports.js';
import type { ClusterInfo, LeaderReply, MapReply } from '../../src/rpc/messages.js';
import { RpcPool } from '../../src/rpc/transport.js';
import { MAIN } from '../shared/dstore.js';
import { waitFor } from './cluster.js';
import { Processes } from './spawned.js';

export interface HaOptions {
  readonly partitions: number;
  readonly replicas: number;
  readonly minWriteReplicas: number;
  /** Storage servers s1…sN (all in the first map). */
  readonly storage: number;
  /** `--lease-ttl-ms` of every candidate. */
  readonly leaseTtlMs: number;
  readonly heartbeatMs: number;
  readonly deadAfterMs: number;
  /** Candidates ns1…nsN (default 3). */
  readonly candidates?: number;
  /** Default 'memory'. */
  readonly backend?: string;
  /** More flags for every etcd member (e.g. a shorter election timeout). */
  readonly etcdArgs?: readonly string[];
  /** The etcd URLs candidate `name` is given (default: the members' own), e.g. through a proxy. */
  readonly etcdUrlsFor?: (name: string, clientUrls: readonly string[]) => Promise<string[]>;
}

/** A client's retried attempts (ConnectOptions.logger), counted by error code. */
export class RetryLog {
  readonly byCode = new Map<string, number>();
  readonly logger = {
    debug: (obj: object): void => {
      const o = obj as { code?: unknown; err?: { code?: unknown }; error?: { code?: unknown } };
      const code = String(o.code ?? o.err?.code ?? o.error?.code ?? 'other');
      this.byCode.set(code, (this.byCode.get(code) ?? 0) + 1);
    },
  };
  describe(): string {
    return [...this.byCode].map(([c, n]) => `${c}×${n}`).join(', ') || 'none';
  }
}

export class HaCluster {
  readonly dir = mkdtempSync(join(tmpdir(), 'dstore-ha-'));
  readonly procs = new Processes();
  readonly candidates = new Map<string, string>();
  readonly storage = new Map<string, string>();
  etcd: EtcdCluster | undefined;
  private readonly pool = new RpcPool({ maxFrameBytes: 64 * 1024 * 1024, backoffMaxMs: 200 });
  private readonly dbs: Db[] = [];
  /** etcd members this harness restarted (EtcdCluster only knows the first processes). */
  private readonly restarted = new Map<string, ChildProcess>();

  private constructor(readonly opts: HaOptions) {}

  static async start(opts: HaOptions): Promise<HaCluster> {
    const c = new HaCluster(opts);
    try {
      c.etcd = await EtcdCluster.start({
        dir: join(c.dir, 'etcd'),
        members: 3,
        ...(opts.etcdArgs ? { extraArgs: opts.etcdArgs } : {}),
      });
      for (let i = 1; i <= (opts.candidates ?? 3); i++) await c.startCandidate(`ns${i}`);
      for (let i = 1; i <= opts.storage; i++) await c.startStorage(`s${i}`);
      await c.waitFormed();
    } catch (err) {
      const logs = c.procs.describe(10);
      await c.stop();
      throw new Error(`${(err as Error).message}\n${logs}`);
    }
    return c;
  }

  get seeds(): string[] {
    return [...this.candidates.values()];
  }

  /** Starts candidate `name` again (after a kill) on its port, with its flags. */
  async restartCandidate(name: string): Promise<void> {
    if (this.isRunning(name)) throw new Error(`${name} is still running`);
    await this.startCandidate(name);
  }

  private async startCandidate(name: string): Promise<void> {
    const known = this.candidates.get(name);
    const port = known === undefined ? await freePort() : Number(known.split(':')[1]);
    this.candidates.set(name, `127.0.0.1:${port}`);
    const o = this.opts;
    const urls = this.etcd?.clientUrls ?? [];
    const etcdUrls = o.etcdUrlsFor ? await o.etcdUrlsFor(name, urls) : urls;
    this.procs.start(name, process.execPath, [
      MAIN,
      'nameserver',
      ...nameserverArgs({
        listen: '127.0.0.1',
        port,
        dataDir: join(this.dir, name),
        partitions: o.partitions,
        replicas: o.replicas,
        minWriteReplicas: o.minWriteReplicas,
        initialNodes: o.storage,
        heartbeatMs: o.heartbeatMs,
        deadAfterMs: o.deadAfterMs,
        logLevel: 'info',
      }),
      `--etcd=${etcdUrls.join(',')}`,
      '--etcd-prefix=/dstore/ha/',
      `--lease-ttl-ms=${o.leaseTtlMs}`,
      `--node-id=${name}`,
    ]);
  }

  private async startStorage(name: string): Promise<void> {
    const port = await freePort();
    this.storage.set(name, `127.0.0.1:${port}`);
    this.procs.start(name, process.execPath, [
      MAIN,
      'storage',
      ...storageArgs({
        nameserver: this.seeds.join(','),
        listen: '127.0.0.1',
        port,
        nodeId: name,
        backend: this.opts.backend ?? 'memory',
        dataDir: join(this.dir, name),
        heartbeatMs: this.opts.heartbeatMs,
        logLevel: 'info',
      }),
    ]);
  }

  /** A client given every candidate as a seed; closed by `stop()`. */
  async client(retries?: RetryLog, timeoutMs = 10_000): Promise<Db> {
    const db = await connect(this.seeds, { timeoutMs, ...(retries ? { logger: retries.logger } : {}) });
    this.dbs.push(db);
    return db;
  }

  call(address: string, body: Record<string, unknown>, timeoutMs = 2000): Promise<unknown> {
    return this.pool.get(address).call(body, { timeoutMs });
  }

  async leaderReply(name: string, timeoutMs = 1000): Promise<LeaderReply | undefined> {
    try {
      return (await this.call(this.candidates.get(name) ?? '', { t: 'leader' }, timeoutMs)) as LeaderReply;
    } catch {
      return undefined;
    }
  }

  /** The candidate that says it leads itself, among `names` (default: all). */
  async selfLeader(names: readonly string[] = [...this.candidates.keys()]): Promise<string | undefined> {
    const replies = await Promise.all(names.map((n) => this.leaderReply(n)));
    return names.find((n, i) => replies[i]?.leader?.nodeId === n);
  }

  /** Waits until every running candidate names the same leader, which says so itself. */
  async agreedLeader(timeoutMs = 30_000): Promise<string> {
    return waitFor(
      'every running candidate names the same leader',
      async () => {
        const names = [...this.candidates.keys()].filter((n) => this.isRunning(n));
        const replies = await Promise.all(names.map((n) => this.leaderReply(n)));
        const named = new Set(replies.map((r) => r?.leader?.nodeId));
        const [leader] = [...named];
        return named.size === 1 && leader !== undefined && names.includes(leader) ? leader : undefined;
      },
      timeoutMs,
      50,
    );
  }

  /** `map` from the leader named by `name`'s candidate. */
  async map(name: string, timeoutMs = 2000): Promise<MapReply> {
    return (await this.call(this.candidates.get(name) ?? '', { t: 'map' }, timeoutMs)) as MapReply;
  }

  async nodes(name: string, timeoutMs = 2000): Promise<ClusterInfo> {
    return (await this.call(this.candidates.get(name) ?? '', { t: 'nodes' }, timeoutMs)) as ClusterInfo;
  }

  /** A storage server's per-partition progress (`stats`). */
  async stats(
    name: string,
    timeoutMs = 2000,
  ): Promise<{ partitions: { partition: number; epoch: number; role: string; serving: boolean }[] }> {
    return (await this.call(this.storage.get(name) ?? '', { t: 'stats' }, timeoutMs)) as {
      partitions: { partition: number; epoch: number; role: string; serving: boolean }[];
    };
  }

  private async waitFormed(): Promise<void> {
    const leader = await this.agreedLeader();
    await waitFor(
      `a formed cluster with ${this.opts.storage} live storage servers, every partition ready`,
      async () => {
        for (const [name, p] of this.procs.all)
          if (p.child.exitCode !== null) throw new Error(`${name} exited with ${p.child.exitCode}`);
        const info = await this.nodes(leader);
        const alive = info.nodes.filter((x) => x.role === 'storage' && x.state === 'alive').length;
        return info.formed && alive === this.opts.storage && info.partitionsReady === this.opts.partitions;
      },
      30_000,
    );
  }

  isRunning(name: string): boolean {
    const p = this.procs.all.get(name);
    return p !== undefined && p.child.exitCode === null && p.child.signalCode === null;
  }

  kill(name: string, signal: NodeJS.Signals = 'SIGKILL'): void {
    const p = this.procs.all.get(name);
    if (!p) throw new Error(`no process ${name}`);
    p.child.kill(signal);
  }

  member(name: string): EtcdMember {
    const m = this.etcd?.members.find((x) => x.name === name);
    if (!m) throw new Error(`no etcd member ${name}`);
    return m;
  }

  /** The etcd member that is etcd's own (raft) leader, from the members' status (etcd's JSON gateway). */
  async etcdRaftLeader(): Promise<string> {
    return waitFor('an etcd member to report the raft leader', async () => {
      const live = (this.etcd?.members ?? []).filter((m) => m.exitInfo === undefined);
      const status = await Promise.all(
        live.map(async (m) => {
          const res = await fetch(`${m.clientUrl}/v3/maintenance/status`, { method: 'POST', body: '{}' });
          return (await res.json()) as { header?: { member_id?: string }; leader?: string };
        }),
      );
      const leaderId = status.find((s) => s.leader !== undefined)?.leader;
      return live.find((_, i) => leaderId !== undefined && status[i]?.header?.member_id === leaderId)?.name;
    });
  }

  /** SIGKILLs one etcd member and waits for it to exit. */
  async killEtcd(name: string): Promise<void> {
    const m = this.member(name);
    const restarted = this.restarted.get(name);
    if (restarted) {
      restarted.kill('SIGKILL');
      await new Promise((r) => (restarted.exitCode !== null ? r(undefined) : restarted.once('exit', r)));
      this.restarted.delete(name);
      return;
    }
    m.child.kill('SIGKILL');
    await m.exited;
  }

  /** Starts a killed etcd member again with its command line and data dir; waits until it is healthy. */
  async restartEtcd(name: string): Promise<void> {
    const m = this.member(name);
    const [command, ...args] = m.child.spawnargs;
    const log = openSync(join(m.dir, 'etcd.log'), 'a');
    const child = spawn(command ?? 'etcd', args, { stdio: ['ignore', log, log], detached: true });
    closeSync(log);
    this.restarted.set(name, child);
  }

  async waitEtcdHealthy(timeoutMs = 20_000): Promise<void> {
    await waitFor(
      'every etcd member healthy',
      async () => (await Promise.all((this.etcd?.members ?? []).map((m) => isHealthy(m.clientUrl)))).every(Boolean),
      timeoutMs,
      100,
    );
  }

  async stop(): Promise<void> {
    for (const db of this.dbs) await db.close().catch(() => undefined);
    this.pool.close();
    await this.procs.stopAll();
    for (const child of this.restarted.values()) {
      if (child.exitCode !== null || child.signalCode !== null) continue;
      const gone = new Promise((r) => child.once('exit', r));
      child.kill('SIGKILL');
      await gone;
    }
    await this.etcd?.stop();
    if (!process.env.DSTORE_TEST_KEEP) rmSync(this.dir, { recursive: true, force: true });
  }
}

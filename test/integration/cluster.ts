/**
 * Starts real dstore processes (`node dist/src/cli/main.js nameserver|storage`) on free
 * loopback ports in a temporary directory, and stops them — also when a test fails
 * (`await using`, or `stop()` in `t.after`). Waits are bounded and say what they waited for.
 * Also: raw RPC calls to any node (`map`, `stats`), and `waitReplicated` / `waitConverged`
 * for the failure tests. `DSTORE_TEST_KEEP=1` keeps the data dir (and its node.log files).
 */
import { type ChildProcess, spawn } from 'node:child_process';
import { closeSync, existsSync, mkdirSync, mkdtempSync, openSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { connect, type Db } from '../../src/client/index.js';
import { partitionOf } from '../../src/core/partitioning.js';
import { RpcPool } from '../../src/rpc/transport.js';
import { nameserverArgs, storageArgs } from '../../src/process/node-args.js';
import { freePort } from '../../src/process/ports.js';
import { MAIN } from '../shared/dstore.js';

export { freePort, MAIN };

/** Polls `condition` every `intervalMs` until it returns a truthy value or `timeoutMs` passes. */
export async function waitFor<T>(
  what: string,
  condition: () => Promise<T | undefined | false> | T | undefined | false,
  timeoutMs = 30_000,
  intervalMs = 100,
): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  let lastError: unknown;
  while (Date.now() < deadline) {
    try {
      const v = await condition();
      if (v) return v;
    } catch (err) {
      lastError = err;
    }
    await new Promise((r) => setTimeout(r, intervalMs));
  }
  throw new Error(
    `timed out after ${timeoutMs} ms waiting for ` +
      `${what}${lastError ? ` (last error: ${(lastError as Error).message})` : ''}`,
  );
}

export interface ClusterOptions {
  readonly nodes?: number;
  readonly partitions?: number;
  readonly replicas?: number;
  readonly backend?: 'lmdb' | 'memory';
  /** `--backend` of storage server `name` (e.g. the URL of its own Redis); wins over `backend`. */
  readonly backendOf?: (name: string) => string;
  readonly heartbeatMs?: number;
  readonly deadAfterMs?: number;
  readonly extraStorageArgs?: readonly string[];
  /** `--min-write-replicas` of the nameserver (its default when undefined). */
  readonly minWriteReplicas?: number;
  /** `--rereplicate-after-ms` of the nameserver (its default when undefined). */
  readonly rereplicateAfterMs?: number;
  /** `--log-retain-entries` of every storage server (their default when undefined). */
  readonly logRetainEntries?: number;
  /** `--log-level` of every node (default info). */
  readonly logLevel?: string;
  /**
   * Called once per storage server before its first start, with its data dir (e.g. to mount
   * a small filesystem there); the cleanup it returns runs in `stop()` after every process
   * exited and before the directory is removed.
   */
  readonly setupDataDir?: (name: string, dataDir: string) => (() => void) | undefined;
}

/** A partition's configuration as the nameserver's `map` call returns it. */
export interface PartitionConfig {
  readonly partition: number;
  readonly epoch: number;
  readonly primary: string;
  readonly secondaries: readonly string[];
  readonly learners: readonly string[];
}

export interface ClusterMap {
  readonly formed: boolean;
  readonly partitions: number;
  readonly replicas: number;
  readonly minWriteReplicas: number;
  readonly version: number;
  readonly configs: readonly PartitionConfig[];
  /** node id → host:port */
  readonly addresses: Readonly<Record<string, string>>;
}

/** One replica's progress as a storage server's `stats` call reports it. */
export interface ReplicaStats {
  readonly partition: number;
  readonly epoch: number;
  readonly role: 'inactive' | 'primary' | 'secondary' | 'learner';
  readonly lastSeq: number;
  readonly lastEpoch: number;
  readonly commitSeq: number;
  readonly appliedSeq: number;
  readonly serving: boolean;
  readonly [more: string]: unknown;
}

export interface StorageStats {
  readonly nodeId: string;
  readonly keys: number;
  readonly partitions: readonly ReplicaStats[];
}

/** Members of a configuration: primary first, then secondaries (learners are not members yet). */
export const membersOf = (c: PartitionConfig): string[] => [c.primary, ...c.secondaries];

interface Proc {
  child: ChildProcess;
  args: string[];
  exited: Promise<number | null>;
}

export class LocalCluster implements AsyncDisposable {
  readonly dir = mkdtempSync(join(tmpdir(), 'dstore-test-'));
  readonly procs = new Map<string, Proc>();
  nameserverAddress = '';
  readonly storagePorts = new Map<string, number>();
  private clients: Db[] = [];
  private readonly cleanups: Array<() => void> = [];
  private readonly rpc = new RpcPool({ maxFrameBytes: 64 * 1024 * 1024, backoffMaxMs: 200 });

  constructor(readonly opts: ClusterOptions = {}) {}

  static async start(opts: ClusterOptions = {}): Promise<LocalCluster> {
    const c = new LocalCluster(opts);
    try {
      await c.startAll();
    } catch (err) {
      await c.stop();
      throw err;
    }
    return c;
  }

  private async startAll(): Promise<void> {
    const nodes = this.opts.nodes ?? 3;
    const nsPort = await freePort();
    this.nameserverAddress = `127.0.0.1:${nsPort}`;
    const o = this.opts;
    this.spawnProc('nameserver', [
      'nameserver',
      ...nameserverArgs({
        port: nsPort,
        dataDir: join(this.dir, 'nameserver'),
        partitions: o.partitions ?? 16,
        replicas: o.replicas ?? 3,
        // Every storage server started here is in the first map (not only the first R to register).
        initialNodes: Math.max(nodes, o.replicas ?? 3),
        heartbeatMs: o.heartbeatMs ?? 1000,
        deadAfterMs: o.deadAfterMs ?? 5000,
        minWriteReplicas: o.minWriteReplicas,
        rereplicateAfterMs: o.rereplicateAfterMs,
        logLevel: o.logLevel ?? 'info',
      }),
    ]);
    for (let i = 1; i <= nodes; i++) await this.spawnStorage(`s${i}`);
    await this.waitFormed(nodes);
  }

  async spawnStorage(name: string): Promise<void> {
    const first = !this.storagePorts.has(name);
    const port = this.storagePorts.get(name) ?? (await freePort());
    this.storagePorts.set(name, port);
    if (first && this.opts.setupDataDir) {
      const cleanup = this.opts.setupDataDir(name, join(this.dir, name));
      if (cleanup) this.cleanups.push(cleanup);
    }
    this.spawnProc(name, [
      'storage',
      ...storageArgs({
        nameserver: this.nameserverAddress,
        port,
        nodeId: name,
        dataDir: join(this.dir, name),
        backend: this.opts.backendOf?.(name) ?? this.opts.backend ?? 'lmdb',
        heartbeatMs: this.opts.heartbeatMs ?? 1000,
        logLevel: this.opts.logLevel ?? 'info',
        logRetainEntries: this.opts.logRetainEntries,
      }),
      ...(this.opts.extraStorageArgs ?? []),
    ]);
  }

  private spawnProc(name: string, args: string[]): void {
    // stderr to a file: a process that fails before its log is open says why there (logTail).
    mkdirSync(join(this.dir, name), { recursive: true });
    const stderr = openSync(join(this.dir, name, 'stderr.log'), 'a');
    const child = spawn(process.execPath, [MAIN, ...args], { stdio: ['ignore', 'ignore', stderr] });
    closeSync(stderr);
    const exited = new Promise<number | null>((res) => child.once('exit', (code) => res(code)));
    this.procs.set(name, { child, args, exited });
  }

  /** Waits until the map is formed and `n` storage servers are alive. */
  async waitFormed(n: number, timeoutMs = 30_000): Promise<void> {
    const db = await this.client();
    await waitFor(
      `a formed cluster with ${n} live storage servers`,
      async () => {
        for (const [name, p] of this.procs) {
          if (p.child.exitCode !== null)
            throw new Error(`${name} exited with ${p.child.exitCode}: ${this.logTail(name)}`);
        }
        const info = await db.nodes();
        return info.formed && info.nodes.filter((x) => x.role === 'storage' && x.state === 'alive').length >= n;
      },
      timeoutMs,
    );
  }

  /** Names of the storage servers started so far (s1, s2, …), running or not. */
  get storageNames(): string[] {
    return [...this.storagePorts.keys()];
  }

  storageAddress(name: string): string {
    const port = this.storagePorts.get(name);
    if (port === undefined) throw new Error(`no storage server ${name}`);
    return `127.0.0.1:${port}`;
  }

  isRunning(name: string): boolean {
    const p = this.procs.get(name);
    return p !== undefined && p.child.exitCode === null && p.child.signalCode === null;
  }

  /** One raw RPC call to `address` (host:port), bounded by `timeoutMs`. */
  call(address: string, body: unknown, timeoutMs = 5000): Promise<unknown> {
    return this.rpc.get(address).call(body, { timeoutMs });
  }

  /** The cluster map, straight from the nameserver. */
  async map(timeoutMs = 5000): Promise<ClusterMap> {
    return (await this.call(this.nameserverAddress, { t: 'map' }, timeoutMs)) as ClusterMap;
  }

  /** A storage server's `stats`: its node id, keys and per-partition progress. */
  async stats(name: string, timeoutMs = 5000): Promise<StorageStats> {
    return (await this.call(this.storageAddress(name), { t: 'stats' }, timeoutMs)) as StorageStats;
  }

  /** Partitions `node` is primary of in `map`. */
  static ledBy(map: ClusterMap, node: string): number[] {
    return map.configs.filter((c) => c.primary === node).map((c) => c.partition);
  }

  /** Partitions `node` is a member (primary or secondary) of in `map`. */
  static heldBy(map: ClusterMap, node: string): number[] {
    return map.configs.filter((c) => membersOf(c).includes(node)).map((c) => c.partition);
  }

  /** Waits until the nameserver reports storage server `name` as `state`. */
  async waitNodeState(name: string, state: 'alive' | 'dead', timeoutMs = 15_000): Promise<void> {
    const db = await this.client(2000);
    await waitFor(
      `${name} to be reported ${state} by the nameserver`,
      async () => {
        const info = await db.nodes();
        return info.nodes.some((n) => n.id === name && n.state === state);
      },
      timeoutMs,
      100,
    );
  }

  /**
   * Waits until every partition has `replicas` members (default R), none of them a learner,
   * every member is a running process, and each primary serves at the configuration's epoch.
   * Returns that map.
   */
  async waitReplicated(timeoutMs = 30_000, replicas?: number): Promise<ClusterMap> {
    return waitFor(
      `every partition to have ${replicas ?? 'R'} serving replicas and no learners`,
      async () => {
        const map = await this.map();
        const want = replicas ?? map.replicas;
        const short = map.configs.filter(
          (c) => membersOf(c).length !== want || c.learners.length > 0 || !membersOf(c).every((m) => this.isRunning(m)),
        );
        if (short.length > 0) {
          throw new Error(`${short.length} partitions not yet there, e.g. ${JSON.stringify(short[0])}`);
        }
        const primaries = [...new Set(map.configs.map((c) => c.primary))];
        const stats = new Map(await Promise.all(primaries.map(async (n) => [n, await this.stats(n, 2000)] as const)));
        for (const c of map.configs) {
          const r = stats.get(c.primary)?.partitions.find((x) => x.partition === c.partition);
          if (!r || r.epoch !== c.epoch || !r.serving)
            throw new Error(
              `partition ${c.partition}: primary ${c.primary} not serving at epoch ${c.epoch} (${JSON.stringify(r)})`,
            );
        }
        return map;
      },
      timeoutMs,
      200,
    );
  }

  /**
   * "All replicas converge": waits (writes stopped) until, for every partition, every member
   * of its configuration has applied the same seq at the configuration's epoch and holds the
   * same set of keys of that partition (from `dump`). With R = N this is "every storage
   * server's dump is equal". Returns the last map and per node its key count.
   */
  async waitConverged(db: Db, timeoutMs = 30_000): Promise<{ map: ClusterMap; keysByNode: Map<string, number> }> {
    return waitFor(
      'every replica of every partition to converge (same applied seq and key set)',
      async () => {
        const map = await this.map();
        const nodes = [...new Set(map.configs.flatMap(membersOf))];
        const stats = new Map(await Promise.all(nodes.map(async (n) => [n, await this.stats(n, 2000)] as const)));
        for (const c of map.configs) {
          const progress = membersOf(c).map((m) => ({
            m,
            r: stats.get(m)?.partitions.find((x) => x.partition === c.partition),
          }));
          const bad = progress.find(
            ({ r }) => !r || r.epoch !== c.epoch || r.role === 'inactive' || r.role === 'learner',
          );
          if (bad)
            throw new Error(
              `partition ${c.partition}: ${bad.m} is at ${JSON.stringify(bad.r)}, configuration epoch ${c.epoch}`,
            );
          const applied = new Set(progress.map(({ r }) => r!.appliedSeq));
          if (applied.size !== 1)
            throw new Error(
              `partition ${c.partition}: applied seqs differ: ` +
                `${progress.map(({ m, r }) => `${m}=${r!.appliedSeq}`).join(' ')}`,
            );
        }
        const dumps = await db.dump({ limit: 1_000_000 });
        const keySets = new Map<string, Map<number, Set<string>>>();
        for (const d of dumps) {
          if (d.error) {
            if (nodes.includes(d.nodeId)) throw new Error(`dump of ${d.nodeId} failed: ${d.error}`);
            continue;
          }
          if (d.truncated) throw new Error(`dump of ${d.nodeId} was truncated`);
          const byPartition = new Map<number, Set<string>>();
          for (const k of d.keys) {
            const p = partitionOf(k, map.partitions);
            let set = byPartition.get(p);
            if (!set) byPartition.set(p, (set = new Set()));
            set.add(Buffer.from(k).toString('latin1'));
          }
          keySets.set(d.nodeId, byPartition);
        }
        for (const c of map.configs) {
          const [first, ...rest] = membersOf(c).map((m) => ({
            m,
            keys: keySets.get(m)?.get(c.partition) ?? new Set<string>(),
          }));
          if (!keySets.has(first!.m)) throw new Error(`no dump from ${first!.m}`);
          for (const other of rest) {
            if (!keySets.has(other.m)) throw new Error(`no dump from ${other.m}`);
            const missing = [...first!.keys].filter((k) => !other.keys.has(k));
            const extra = [...other.keys].filter((k) => !first!.keys.has(k));
            if (missing.length || extra.length) {
              throw new Error(
                `partition ${c.partition}: ${other.m} differs from ${first!.m}: ${missing.length} keys missing, ` +
                  `${extra.length} extra (e.g. ${JSON.stringify(missing[0] ?? extra[0])})`,
              );
            }
          }
        }
        return { map, keysByNode: new Map(dumps.map((d) => [d.nodeId, d.keyCount])) };
      },
      timeoutMs,
      250,
    );
  }

  /** Lines of `name`'s node.log that match `pattern`. */
  logLines(name: string, pattern: RegExp): string[] {
    const path = join(this.dir, name, 'node.log');
    if (!existsSync(path)) return [];
    return readFileSync(path, 'utf8')
      .split('\n')
      .filter((l) => pattern.test(l));
  }

  async client(timeoutMs = 10_000): Promise<Db> {
    // lazy: tests connect while the nameserver may still be starting (waitFormed polls).
    const db = await connect(this.nameserverAddress, { timeoutMs, lazy: true });
    this.clients.push(db);
    return db;
  }

  kill(name: string, signal: NodeJS.Signals = 'SIGKILL'): Promise<number | null> {
    const p = this.procs.get(name);
    if (!p) throw new Error(`no process ${name}`);
    p.child.kill(signal);
    return p.exited;
  }

  async restart(name: string): Promise<void> {
    const p = this.procs.get(name);
    if (!p) throw new Error(`no process ${name}`);
    if (p.child.exitCode === null && p.child.signalCode === null) {
      p.child.kill('SIGKILL');
      await p.exited;
    }
    this.spawnProc(name, p.args);
  }

  logTail(name: string, lines = 20): string {
    const tail = (file: string): string | undefined => {
      const path = join(this.dir, name, file);
      if (!existsSync(path)) return undefined;
      const text = readFileSync(path, 'utf8').trim();
      return text === '' ? undefined : text.split('\n').slice(-lines).join('\n');
    };
    const log = tail('node.log');
    const stderr = tail('stderr.log');
    return [log ?? '(no log)', ...(stderr === undefined ? [] : [`stderr: ${stderr}`])].join('\n');
  }

  async stop(): Promise<void> {
    for (const db of this.clients) await db.close().catch(() => undefined);
    this.clients = [];
    for (const p of this.procs.values())
      if (p.child.exitCode === null && p.child.signalCode === null) p.child.kill('SIGKILL');
    await Promise.all([...this.procs.values()].map((p) => p.exited));
    this.rpc.close();
    for (const cleanup of this.cleanups.splice(0)) cleanup();
    if (process.env.DSTORE_TEST_KEEP) console.log(`# kept ${this.dir}`);
    else rmSync(this.dir, { recursive: true, force: true });
  }

  async [Symbol.asyncDispose](): Promise<void> {
    await this.stop();
  }
}

/**
 * `dstore up --ha` (issue 12): a local cluster of identical nodes — a 3-member etcd on loopback
 * (src/process/etcd-server.ts, data under `<dataDir>/etcd`) and N `dstore node` child processes
 * (`n1`, `n2`, …: a storage server and a nameserver candidate each, data under `<dataDir>/n1`,
 * …), every node's candidate a seed of every storage server and of the shell's client.
 *
 * The nodes are ManagedProcesses as in cluster.ts (IPC channel, own process group, restartable
 * with the same arguments and ports); etcd members run in their own process group too, and
 * EtcdCluster SIGKILLs any left when this process exits. `close` stops the nodes (SIGTERM: each
 * storage server closes and each candidate resigns), then etcd.
 *
 * etcd's members get new ports each time `up --ha` starts, so their data does not survive it:
 * a data dir that holds nodes of an earlier `up --ha` is refused rather than joined to an
 * empty etcd (whose new cluster map would not know the nodes' data).
 */
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import type { ClusterInfo, Db } from '../client/api.js';
import { formatHostPort } from '../process/address.js';
import { EtcdCluster } from '../process/etcd-server.js';
import {
  ClusterStartError,
  type ExitInfo,
  didNotForm,
  exitedWhileForming,
  ManagedProcess,
} from '../process/managed-process.js';
import { nodeArgs } from '../process/node-args.js';
import { freePort } from '../process/ports.js';
import { CliFailure, isPortFree, type SyncMode, UsageError } from './options.js';
import { childEnv } from './cluster.js';
import { describeError } from './shell.js';

export interface HaClusterOptions {
  /** Absolute path; holds `etcd/`, `n1/`, … and the `*.stderr.log` files. */
  readonly dataDir: string;
  readonly host: string;
  /** Nameserver port of n1 (n2 gets the next, …); 0: free ports chosen before the start. */
  readonly nameserverPort: number;
  /** Storage port of n1 (n2 gets the next, …); 0 lets the OS choose for each. */
  readonly storagePort: number;
  /** Issue 15: HTTP port of n1 (n2 gets the next, …); 0 lets the OS choose for each; undefined: none. */
  readonly httpPort?: number;
  /** How many nodes (n1..nN). */
  readonly nodes: number;
  readonly partitions: number;
  readonly replicas: number;
  readonly minWriteReplicas: number;
  readonly backend: 'memory' | 'lmdb';
  readonly sync: SyncMode;
  readonly heartbeatMs: number;
  readonly deadAfterMs: number;
  readonly rereplicateAfterMs?: number;
  /** S16: `--anti-entropy-ms` and `--repair` of every storage server (their defaults when undefined). */
  readonly antiEntropyMs?: number;
  readonly repair?: 'on' | 'off';
  readonly logRetainEntries?: number;
  readonly maxValueBytes: number;
  readonly leaseTtlMs: number;
  readonly logLevel: string;
  readonly clusterToken?: string;
  /** Bound on etcd, every node and the cluster forming, in ms. */
  readonly startTimeoutMs: number;
  /** Bound on a child's exit after SIGTERM before SIGKILL, in ms (default 5000). */
  readonly stopTimeoutMs?: number;
}

/** Members of the local etcd cluster. */
export const HA_ETCD_MEMBERS = 3;

/** Node ids of `up --ha`: n1..nN. */
export function haNodeIds(nodes: number): string[] {
  return Array.from({ length: nodes }, (_, i) => `n${i + 1}`);
}

/** The node dirs of an earlier `up --ha` in `dataDir` (refused: its etcd data is gone). */
export function earlierHaNodes(dataDir: string, nodes: number): string[] {
  return haNodeIds(nodes).filter((id) => existsSync(join(dataDir, id)));
}

export class HaCluster {
  readonly nodes = new Map<string, ManagedProcess>();
  etcd: EtcdCluster | undefined;
  /** Every node's nameserver address, in node order (fixed before the start). */
  private seeds: string[] = [];
  private closing: Promise<void> | undefined;
  private readonly env: NodeJS.ProcessEnv;
  onUnexpectedExit: ((p: ManagedProcess, info: ExitInfo) => void) | undefined;
  private readonly exitGuard = (): void => this.killAllNow();

  private constructor(readonly options: HaClusterOptions) {
    this.env = childEnv(options.clusterToken);
  }

  static create(options: HaClusterOptions): HaCluster {
    const cluster = new HaCluster(options);
    process.on('exit', cluster.exitGuard);
    return cluster;
  }

  /** The seeds: every node's nameserver address, comma-separated. */
  get nameserverAddress(): string {
    return this.seeds.join(',');
  }

  /** The nodes (what kill, pause, resume, restart and `nodes` work on). */
  get processes(): ManagedProcess[] {
    return [...this.nodes.values()];
  }

  process(name: string): ManagedProcess | undefined {
    return this.nodes.get(name);
  }

  /** The nameserver address of a node. */
  nameserverOf(id: string): string | undefined {
    const i = haNodeIds(this.options.nodes).indexOf(id);
    return i < 0 ? undefined : this.seeds[i];
  }

  private childExited(p: ManagedProcess, info: ExitInfo): void {
    if (!p.exitExpected && !this.closing) this.onUnexpectedExit?.(p, info);
  }

  /** Starts etcd, then every node, and waits until the cluster formed under a leader. Stops all on failure. */
  async start(connect: (nameserver: string) => Promise<Db>): Promise<ClusterInfo> {
    const o = this.options;
    try {
      const deadline = Date.now() + o.startTimeoutMs;
      await this.choosePorts();
      this.etcd = await EtcdCluster.start({
        dir: join(o.dataDir, 'etcd'),
        members: HA_ETCD_MEMBERS,
        host: o.host,
        startTimeoutMs: o.startTimeoutMs,
      });
      if (this.closing) {
        await this.etcd.stop(); // close() ran before the members existed
        throw new ClusterStartError('stopped while starting', undefined, undefined, '');
      }
      const endpoints = this.etcd.clientUrls;
      haNodeIds(o.nodes).forEach((id, i) => {
        const dir = join(o.dataDir, id);
        const nameserverPort = Number(/:(\d+)$/.exec(this.seeds[i] ?? '')?.[1]);
        const p = new ManagedProcess(
          id,
          'node',
          join(dir, 'nameserver'),
          join(o.dataDir, `${id}.stderr.log`),
          o.storagePort === 0 ? 0 : o.storagePort + i,
          (port, httpPort) =>
            nodeArgs({
              ...(httpPort === undefined ? {} : { httpPort }),
              etcd: endpoints,
              nameserver: this.nameserverAddress,
              listen: o.host,
              port,
              nameserverPort,
              nodeId: id,
              dataDir: dir,
              backend: o.backend,
              sync: o.sync,
              partitions: o.partitions,
              replicas: o.replicas,
              minWriteReplicas: o.minWriteReplicas,
              initialNodes: Math.max(o.replicas, o.nodes),
              heartbeatMs: o.heartbeatMs,
              deadAfterMs: o.deadAfterMs,
              rereplicateAfterMs: o.rereplicateAfterMs,
              logRetainEntries: o.logRetainEntries,
              antiEntropyMs: o.antiEntropyMs,
              repair: o.repair,
              maxValueBytes: o.maxValueBytes,
              leaseTtlMs: o.leaseTtlMs,
              logLevel: o.logLevel,
            }),
          this.env,
          (proc, info) => this.childExited(proc, info),
        );
        if (o.httpPort !== undefined) p.httpPort = o.httpPort === 0 ? 0 : o.httpPort + i;
        this.nodes.set(id, p);
      });
      await Promise.all(this.processes.map((p) => p.start(Math.max(1, deadline - Date.now()))));
      return await this.waitFormed(connect, deadline);
    } catch (err) {
      await this.close();
      throw err;
    }
  }

  /** Fixed nameserver ports (the seeds must be known before any node starts); taken ones refused. */
  private async choosePorts(): Promise<void> {
    const o = this.options;
    const ports: number[] = [];
    for (let i = 0; i < o.nodes; i++) {
      if (o.nameserverPort === 0) {
        let port = await freePort(o.host);
        while (ports.includes(port)) port = await freePort(o.host);
        ports.push(port);
      } else ports.push(o.nameserverPort + i);
    }
    for (const [i, port] of ports.entries()) {
      if (o.nameserverPort !== 0 && !(await isPortFree(o.host, port)))
        throw new CliFailure(
          `port ${port} on ${o.host} (nameserver of n${i + 1}) is already in use — is another dstore running? ` +
            'Choose other ports with --port (0 lets the OS pick)',
        );
      const storage = o.storagePort === 0 ? 0 : o.storagePort + i;
      if (storage !== 0 && !(await isPortFree(o.host, storage)))
        throw new CliFailure(
          `port ${storage} on ${o.host} (storage server of n${i + 1}) is already in use — is another dstore ` +
            'running? Choose other ports with --storage-port (0 lets the OS pick)',
        );
    }
    this.seeds = ports.map((port) => formatHostPort(o.host, port));
  }

  /** Polls `nodes()` until formed under a leader with every running node alive, or fails naming the laggard. */
  private async waitFormed(connect: (nameserver: string) => Promise<Db>, deadline: number): Promise<ClusterInfo> {
    const db = await connect(this.nameserverAddress);
    let problem = 'no nameserver has answered yet';
    let laggard: ManagedProcess | undefined;
    try {
      while (Date.now() < deadline) {
        const dead = this.processes.find((p) => p.state === 'exited');
        if (dead) throw exitedWhileForming(dead);
        try {
          const info = await db.nodes();
          const notAlive = this.processes.filter(
            (p) => p.running && info.nodes.find((n) => n.id === p.name)?.state !== 'alive',
          );
          const leads = info.leader !== undefined && info.leader.nodeId === info.nameserverId;
          if (leads && info.formed && notAlive.length === 0 && info.partitionsReady === info.partitions) return info;
          laggard = notAlive[0];
          problem = !leads
            ? 'no node leads yet'
            : notAlive.length > 0
              ? notAlive
                  .map((p) => `${p.name} is ${info.nodes.find((n) => n.id === p.name)?.state ?? 'not registered'}`)
                  .join(', ')
              : info.formed
                ? `${info.partitions - info.partitionsReady} of ${info.partitions} partitions have no serving ` +
                  'primary yet'
                : 'the leader has not formed the cluster map';
        } catch (err) {
          problem = `no nameserver answered: ${describeError(err)}`;
        }
        await sleep(Math.max(1, Math.min(100, deadline - Date.now())));
      }
      throw didNotForm(this.options.startTimeoutMs, problem, laggard);
    } finally {
      await db.close();
    }
  }

  /** Stops every node (SIGTERM, SIGKILL after the bound), then etcd. Idempotent. */
  close(): Promise<void> {
    this.closing ??= (async () => {
      const ms = this.options.stopTimeoutMs ?? 5000;
      try {
        await Promise.all(this.processes.map((p) => p.stop(ms)));
      } finally {
        try {
          await this.etcd?.stop(ms);
        } finally {
          this.killAllNow();
          process.off('exit', this.exitGuard);
        }
      }
    })();
    return this.closing;
  }

  /** Last resort (also from the process 'exit' handler): SIGKILL every node and etcd member still running. */
  killAllNow(): void {
    for (const p of this.processes) if (p.running) p.signal('SIGKILL');
    this.etcd?.killAllNow();
  }

  /** Used before the start: a data dir of an earlier `up --ha` is refused (see the module comment). */
  static checkFresh(dataDir: string, nodes: number): void {
    const earlier = earlierHaNodes(dataDir, nodes);
    if (earlier.length > 0)
      throw new UsageError(
        `${join(dataDir, earlier[0] as string)} holds a node of an earlier \`up --ha\`, whose cluster map lived in ` +
          'an etcd that does not outlive `up --ha`; remove the data dir or choose another with --data-dir',
      );
  }
}

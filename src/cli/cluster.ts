/**
 * A local cluster of child processes, for `dstore up` and `dstore bench --spawn`: one
 * nameserver and N storage servers, each `node dist/src/cli/main.js <role> …` with its data
 * under `<dataDir>/<node>`, its log in `<dataDir>/<node>/node.log` (written and rotated by the
 * node itself) and its stdout/stderr in `<dataDir>/<node>.stderr.log` (only what is not a log
 * line: a crash's stack trace, a refused start).
 *
 * Children get an IPC channel: they report the port they listen on through it, and they
 * shut themselves down when it closes, so a parent that dies (even by SIGKILL) leaves no
 * orphans. They run in their own process group, so the terminal's Ctrl-C reaches only the
 * parent, which stops them in order (storage servers, then the nameserver): SIGTERM, then
 * SIGKILL after a bounded wait. An `exit` handler SIGKILLs whatever is left.
 */
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import type { ClusterInfo, Db } from '../client/api.js';
import { CliFailure, isPortFree, type SyncMode, UsageError, type UpBackendName } from './options.js';
import { describeError } from './shell.js';
import {
  ClusterStartError,
  type ExitInfo,
  didNotForm,
  exitedWhileForming,
  ManagedProcess,
} from '../process/managed-process.js';
import { nameserverArgs, storageArgs } from '../process/node-args.js';
import { UP_CONTROL_ENV } from '../nameserver/up-control.js';

export {
  ClusterStartError,
  type ExitInfo,
  isListeningMessage,
  type ListeningMessage,
  logTail,
  ManagedProcess,
  type ProcessState,
} from '../process/managed-process.js';

export interface LocalClusterOptions {
  /** Absolute path; holds `nameserver/`, `s1/`, … and the `*.stderr.log` files. */
  readonly dataDir: string;
  readonly host: string;
  /** Nameserver port; 0 lets the OS choose (kept across restarts). */
  readonly port: number;
  /** Port of s1 (s2 gets the next, …); 0 lets the OS choose for each. */
  readonly storagePort: number;
  /**
   * Issue 15: the nameserver's HTTP port (0: chosen by the OS; undefined: none); with one, every
   * storage server gets an HTTP port chosen by the OS.
   */
  readonly httpPort?: number;
  /** Storage server ids to start, e.g. ['s1', 's2', 's3']. */
  readonly storageIds: readonly string[];
  readonly partitions: number;
  readonly replicas: number;
  readonly minWriteReplicas: number;
  readonly backend: UpBackendName;
  /** `--backend` of one storage server (default: `backend`), e.g. the URL of its own Redis. */
  readonly storageBackend?: (id: string) => string;
  /** Runs before a storage server starts (its Redis, for --backend redis). */
  readonly beforeStorageStart?: (id: string) => Promise<void>;
  readonly sync: SyncMode;
  readonly heartbeatMs: number;
  readonly deadAfterMs: number;
  /** `--rereplicate-after-ms` of the nameserver (its default when undefined). */
  readonly rereplicateAfterMs?: number;
  /** `--log-retain-entries` of every storage server (their default when undefined). */
  /** S16: `--anti-entropy-ms` and `--repair` of every storage server (their defaults when undefined). */
  readonly antiEntropyMs?: number;
  readonly repair?: 'on' | 'off';
  readonly logRetainEntries?: number;
  readonly maxValueBytes: number;
  readonly logLevel: string;
  readonly clusterToken?: string;
  /** Bound on starting everything and the cluster forming, in ms. */
  readonly startTimeoutMs: number;
  /** Bound on a child's exit after SIGTERM before SIGKILL, in ms (default 5000). */
  readonly stopTimeoutMs?: number;
  /** Issue 15: `up` answers the nameserver's node-action requests (its env gets DSTORE_UP_CONTROL=1). */
  readonly upControl?: boolean;
}

export function formatAddress(host: string, port: number): string {
  return host.includes(':') ? `[${host}]:${port}` : `${host}:${port}`;
}

/** Environment of a child: no inherited DSTORE_* (flags are explicit), the token by env, not argv. */
export function childEnv(clusterToken: string | undefined): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = {};
  for (const [k, v] of Object.entries(process.env)) if (!k.startsWith('DSTORE_')) env[k] = v;
  if (clusterToken !== undefined) env.DSTORE_CLUSTER_TOKEN = clusterToken;
  return env;
}

export class LocalCluster {
  readonly nameserver: ManagedProcess;
  readonly storage = new Map<string, ManagedProcess>();
  private closing: Promise<void> | undefined;
  private readonly env: NodeJS.ProcessEnv;
  /** Called when a child exits without being asked to (a crash). */
  onUnexpectedExit: ((p: ManagedProcess, info: ExitInfo) => void) | undefined;
  private readonly exitGuard = (): void => this.killAllNow();

  private constructor(readonly options: LocalClusterOptions) {
    this.env = childEnv(options.clusterToken);
    const o = options;
    this.nameserver = new ManagedProcess(
      'nameserver',
      'nameserver',
      join(o.dataDir, 'nameserver'),
      join(o.dataDir, 'nameserver.stderr.log'),
      o.port,
      (port, httpPort) =>
        nameserverArgs({
          listen: o.host,
          port,
          httpPort: httpPort ?? 'off',
          dataDir: join(o.dataDir, 'nameserver'),
          partitions: o.partitions,
          replicas: o.replicas,
          minWriteReplicas: o.minWriteReplicas,
          initialNodes: Math.max(o.replicas, o.storageIds.length),
          heartbeatMs: o.heartbeatMs,
          deadAfterMs: o.deadAfterMs,
          rereplicateAfterMs: o.rereplicateAfterMs,
          logLevel: o.logLevel,
        }),
      o.upControl ? { ...this.env, [UP_CONTROL_ENV]: '1' } : this.env,
      (p, info) => this.childExited(p, info),
    );
    this.nameserver.httpPort = o.httpPort;
    o.storageIds.forEach((id, i) => this.addStorage(id, o.storagePort === 0 ? 0 : o.storagePort + i));
  }

  get nameserverAddress(): string {
    return formatAddress(this.options.host, this.nameserver.port);
  }

  /** Issue 15: the dashboard's URL (the nameserver's HTTP port), once started; undefined without one. */
  get dashboardUrl(): string | undefined {
    const port = this.nameserver.httpPort;
    return port === undefined || port === 0 ? undefined : `http://${formatAddress(this.options.host, port)}/`;
  }

  /** Every child by node name ('nameserver', 's1', …). */
  get processes(): ManagedProcess[] {
    return [this.nameserver, ...this.storage.values()];
  }

  process(name: string): ManagedProcess | undefined {
    if (name === 'nameserver' || name === 'ns') return this.nameserver;
    return this.storage.get(name);
  }

  private addStorage(id: string, port: number): ManagedProcess {
    const o = this.options;
    const dir = join(o.dataDir, id);
    const p = new ManagedProcess(
      id,
      'storage',
      dir,
      join(o.dataDir, `${id}.stderr.log`),
      port,
      (port, httpPort) =>
        storageArgs({
          nameserver: this.nameserverAddress,
          listen: o.host,
          port,
          ...(httpPort === undefined ? {} : { httpPort }),
          nodeId: id,
          backend: o.storageBackend?.(id) ?? o.backend,
          dataDir: dir,
          sync: o.sync,
          heartbeatMs: o.heartbeatMs,
          maxValueBytes: o.maxValueBytes,
          logRetainEntries: o.logRetainEntries,
          antiEntropyMs: o.antiEntropyMs,
          repair: o.repair,
          logLevel: o.logLevel,
        }),
      this.env,
      (proc, info) => this.childExited(proc, info),
    );
    if (o.httpPort !== undefined) p.httpPort = 0;
    this.storage.set(id, p);
    return p;
  }

  private childExited(p: ManagedProcess, info: ExitInfo): void {
    if (!p.exitExpected && !this.closing) this.onUnexpectedExit?.(p, info);
  }

  /**
   * Starts the nameserver, then every storage server, and waits until the cluster is formed
   * with every storage server alive. On any failure everything started is stopped again.
   */
  static create(options: LocalClusterOptions): LocalCluster {
    const cluster = new LocalCluster(options);
    process.on('exit', cluster.exitGuard);
    return cluster;
  }

  async start(connect: (nameserver: string) => Promise<Db>): Promise<ClusterInfo> {
    const options = this.options;
    try {
      await this.checkPorts();
      const deadline = Date.now() + options.startTimeoutMs;
      await this.nameserver.start(options.startTimeoutMs);
      if (this.closing) throw new ClusterStartError('stopped while starting', undefined, undefined, '');
      await Promise.all(
        [...this.storage.values()].map(async (p) => {
          await options.beforeStorageStart?.(p.name);
          return p.start(Math.max(1, deadline - Date.now()));
        }),
      );
      return await this.waitFormed(connect, deadline);
    } catch (err) {
      await this.close();
      throw err;
    }
  }

  /** A port already taken is a clear error before anything is spawned. */
  private async checkPorts(): Promise<void> {
    const { host } = this.options;
    for (const p of this.processes) {
      if (p.port !== 0 && !(await isPortFree(host, p.port))) {
        const flag = p.role === 'nameserver' ? '--port' : '--storage-port';
        throw new CliFailure(
          `port ${p.port} on ${host} (for ${p.name}) is already in use — is another dstore running? Choose other ` +
            `ports with ${flag} (0 lets the OS pick)`,
        );
      }
      if (
        p.role === 'nameserver' &&
        p.httpPort !== undefined &&
        p.httpPort !== 0 &&
        !(await isPortFree(host, p.httpPort))
      )
        throw new CliFailure(
          `port ${p.httpPort} on ${host} (the nameserver's HTTP port) is already in use — is another dstore ` +
            'running? Choose another with --http-port (0 lets the OS pick, off: none)',
        );
    }
  }

  /** Polls `nodes()` until formed with every running storage server alive, or fails naming the laggard. */
  async waitFormed(connect: (nameserver: string) => Promise<Db>, deadline: number): Promise<ClusterInfo> {
    const db = await connect(this.nameserverAddress);
    let problem = 'the nameserver has not answered yet';
    let laggard: ManagedProcess | undefined;
    try {
      for (let attempt = 0; attempt < 1_000_000; attempt++) {
        const dead = this.processes.find((p) => p.state === 'exited');
        if (dead) throw exitedWhileForming(dead);
        try {
          const info = await db.nodes();
          const notAlive = [...this.storage.values()].filter(
            (p) => p.running && info.nodes.find((n) => n.id === p.name)?.state !== 'alive',
          );
          if (info.formed && notAlive.length === 0 && info.partitionsReady === info.partitions) return info;
          laggard = notAlive[0];
          problem =
            notAlive.length > 0
              ? notAlive
                  .map((p) => `${p.name} is ${info.nodes.find((n) => n.id === p.name)?.state ?? 'not registered'}`)
                  .join(', ')
              : info.formed
                ? `${info.partitions - info.partitionsReady} of ${info.partitions} ` +
                  `partitions have no serving primary yet`
                : 'the nameserver has not formed the cluster map';
          if (!laggard && !info.formed) laggard = this.nameserver;
        } catch (err) {
          problem = `the nameserver did not answer: ${describeError(err)}`;
          laggard = this.nameserver;
        }
        const left = deadline - Date.now();
        if (left <= 0) break;
        await sleep(Math.min(100, left));
      }
      throw didNotForm(this.options.startTimeoutMs, problem, laggard);
    } finally {
      await db.close();
    }
  }

  /** Starts a new storage server with a fresh id and data dir. */
  async spawnStorage(existsOnDisk: (id: string) => boolean): Promise<ManagedProcess> {
    let n = 0;
    for (const id of this.storage.keys()) n = Math.max(n, Number(/^s(\d+)$/.exec(id)?.[1] ?? 0));
    let id = `s${n + 1}`;
    for (let i = n + 1; i < n + 1000 && (this.storage.has(`s${i}`) || existsOnDisk(`s${i}`)); i++) id = `s${i + 1}`;
    if (this.closing) throw new UsageError('the cluster is stopping');
    const o = this.options;
    const port = o.storagePort === 0 ? 0 : o.storagePort + Number(id.slice(1)) - 1;
    const p = this.addStorage(id, port);
    try {
      await o.beforeStorageStart?.(id);
      await p.start(o.startTimeoutMs);
    } catch (err) {
      this.storage.delete(id);
      throw err;
    }
    return p;
  }

  /** Stops every child: storage servers first, then the nameserver. Idempotent. */
  close(): Promise<void> {
    this.closing ??= (async () => {
      const ms = this.options.stopTimeoutMs ?? 5000;
      try {
        await Promise.all([...this.storage.values()].map((p) => p.stop(ms)));
        await this.nameserver.stop(ms);
      } finally {
        this.killAllNow();
        process.off('exit', this.exitGuard);
      }
    })();
    return this.closing;
  }

  /** Last resort (also from the process 'exit' handler): SIGKILL every child still running. */
  killAllNow(): void {
    for (const p of this.processes) {
      if (p.running) p.signal('SIGKILL'); // SIGKILL also ends a paused (SIGSTOPped) process
    }
  }
}

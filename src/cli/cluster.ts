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
import { type ChildProcess, spawn } from 'node:child_process';
import { closeSync, existsSync, fstatSync, mkdirSync, openSync, readSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import type { ClusterInfo, Db } from '../client/api.js';
import { CliFailure, isPortFree, type SyncMode, UsageError, type UpBackendName } from './options.js';
import { describeError } from './shell.js';

/** What a child tells its parent through the IPC channel once it listens. */
export interface ListeningMessage {
  readonly dstore: 'listening';
  readonly port: number;
  readonly nodeId: string;
}

export function isListeningMessage(m: unknown): m is ListeningMessage {
  if (typeof m !== 'object' || m === null) return false;
  const r = m as Record<string, unknown>;
  return r.dstore === 'listening' && typeof r.port === 'number' && typeof r.nodeId === 'string';
}

export interface LocalClusterOptions {
  /** Absolute path; holds `nameserver/`, `s1/`, … and the `*.stderr.log` files. */
  readonly dataDir: string;
  readonly host: string;
  /** Nameserver port; 0 lets the OS choose (kept across restarts). */
  readonly port: number;
  /** Port of s1 (s2 gets the next, …); 0 lets the OS choose for each. */
  readonly storagePort: number;
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
  readonly logRetainEntries?: number;
  readonly maxValueBytes: number;
  readonly logLevel: string;
  readonly clusterToken?: string;
  /** Bound on starting everything and the cluster forming, in ms. */
  readonly startTimeoutMs: number;
  /** Bound on a child's exit after SIGTERM before SIGKILL, in ms (default 5000). */
  readonly stopTimeoutMs?: number;
}

/** A child failed to start or the cluster did not form in time. */
export class ClusterStartError extends Error {
  constructor(
    message: string,
    readonly node: string | undefined,
    readonly logPath: string | undefined,
    readonly logTail: string,
  ) {
    super(message);
    this.name = 'ClusterStartError';
  }
}

export type ProcessState = 'starting' | 'running' | 'paused' | 'stopping' | 'exited' | 'never started';

export interface ExitInfo {
  readonly code: number | null;
  readonly signal: NodeJS.Signals | null;
}

const MAIN_SCRIPT = fileURLToPath(new URL('./main.js', import.meta.url));
/** Bytes of a log file's end shown when a node fails. */
const LOG_TAIL_BYTES = 4096;
const LOG_TAIL_LINES = 15;
const KILL_WAIT_MS = 2000;

export function formatAddress(host: string, port: number): string {
  return host.includes(':') ? `[${host}]:${port}` : `${host}:${port}`;
}

/** The last lines of a log file ('' when it cannot be read). */
export function logTail(path: string, maxLines = LOG_TAIL_LINES): string {
  let fd: number | undefined;
  try {
    fd = openSync(path, 'r');
    const size = fstatSync(fd).size;
    const length = Math.min(size, LOG_TAIL_BYTES);
    const buf = Buffer.alloc(length);
    readSync(fd, buf, 0, length, size - length);
    const lines = buf.toString('utf8').split('\n').filter((l) => l.trim() !== '');
    if (size > length) lines.shift(); // probably cut in the middle
    return lines
      .slice(-maxLines)
      .map((l) => (l.length > 400 ? `${l.slice(0, 400)}…` : l))
      .join('\n');
  } catch (err) {
    return `(could not read ${path}: ${describeError(err)})`;
  } finally {
    if (fd !== undefined) closeSync(fd);
  }
}

/** Environment of a child: no inherited DSTORE_* (flags are explicit), the token by env, not argv. */
function childEnv(clusterToken: string | undefined): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = {};
  for (const [k, v] of Object.entries(process.env)) if (!k.startsWith('DSTORE_')) env[k] = v;
  if (clusterToken !== undefined) env.DSTORE_CLUSTER_TOKEN = clusterToken;
  return env;
}

/** One child process of the cluster, restartable with the same arguments, data and port. */
export class ManagedProcess {
  child: ChildProcess | undefined;
  state: ProcessState = 'never started';
  lastExit: ExitInfo | undefined;
  /** Set when the parent asked it to exit (kill, stop, restart, close). */
  exitExpected = false;
  private exited: Promise<ExitInfo> | undefined;

  constructor(
    readonly name: string,
    readonly role: 'nameserver' | 'storage',
    readonly dataDir: string,
    readonly logPath: string,
    /** Requested port; after the first start the actual one, so restarts keep the address. */
    public port: number,
    private readonly args: (port: number) => string[],
    private readonly env: NodeJS.ProcessEnv,
    private readonly onExit: (p: ManagedProcess, info: ExitInfo) => void,
    /**
     * A command that runs node for it, e.g. `['ip', 'netns', 'exec', NS]` (chaos runs each
     * node in its own network namespace). It must exec node in place (same pid), so signals
     * and the IPC channel reach the node itself.
     */
    private readonly wrapper: readonly string[] = [],
  ) {}

  get pid(): number | undefined {
    return this.child?.pid;
  }

  get running(): boolean {
    return this.state === 'starting' || this.state === 'running' || this.state === 'paused' || this.state === 'stopping';
  }

  /** Spawns the child and waits until it reports its port (bounded by `timeoutMs`). */
  async start(timeoutMs: number): Promise<number> {
    if (this.running) throw new UsageError(`${this.name} is already running (pid ${this.pid})`);
    mkdirSync(this.dataDir, { recursive: true });
    const logFd = openSync(this.logPath, 'a');
    let child: ChildProcess;
    try {
      const [command, ...prefix] = this.wrapper.length > 0 ? [...this.wrapper, process.execPath] : [process.execPath];
      child = spawn(command!, [...prefix, MAIN_SCRIPT, this.role, ...this.args(this.port)], {
        stdio: ['ignore', logFd, logFd, 'ipc'],
        detached: true,
        env: this.env,
      });
    } finally {
      closeSync(logFd);
    }
    this.child = child;
    this.state = 'starting';
    this.exitExpected = false;
    this.exited = new Promise<ExitInfo>((resolve) => {
      child.once('exit', (code, signal) => {
        const info = { code, signal };
        this.lastExit = info;
        if (this.child === child) this.state = 'exited';
        resolve(info);
        this.onExit(this, info);
      });
    });
    return new Promise<number>((resolve, reject) => {
      const timer = setTimeout(() => {
        cleanup();
        reject(this.startError(`${this.name} did not report listening within ${Math.round(timeoutMs / 1000)} s`));
      }, timeoutMs);
      const onMessage = (m: unknown): void => {
        if (!isListeningMessage(m)) return;
        cleanup();
        this.port = m.port;
        this.state = 'running';
        resolve(m.port);
      };
      const onExit = (code: number | null, signal: NodeJS.Signals | null): void => {
        cleanup();
        reject(this.startError(`${this.name} exited during start (${signal ? `signal ${signal}` : `exit code ${code}`})`));
      };
      const onError = (err: Error): void => {
        cleanup();
        if (this.child === child) this.state = 'exited';
        reject(new ClusterStartError(`could not start ${this.name}: ${err.message}`, this.name, this.logPath, ''));
      };
      const cleanup = (): void => {
        clearTimeout(timer);
        child.off('message', onMessage);
        child.off('exit', onExit);
        child.off('error', onError);
      };
      child.on('message', onMessage);
      child.once('exit', onExit);
      child.once('error', onError);
    });
  }

  /** The end of its stderr file (a crash, a refused start), else of its node.log (its log lines). */
  private startError(message: string): ClusterStartError {
    const stderrTail = logTail(this.logPath);
    const nodeLog = join(this.dataDir, 'node.log');
    if (stderrTail !== '' || !existsSync(nodeLog)) return new ClusterStartError(message, this.name, this.logPath, stderrTail);
    return new ClusterStartError(message, this.name, nodeLog, logTail(nodeLog));
  }

  /** Sends `signal`; false when the process is not running. */
  signal(signal: NodeJS.Signals): boolean {
    const child = this.child;
    if (!child || !this.running || child.pid === undefined) return false;
    if (signal === 'SIGKILL' || signal === 'SIGTERM' || signal === 'SIGINT') this.exitExpected = true;
    child.kill(signal);
    if (signal === 'SIGSTOP') this.state = 'paused';
    else if (signal === 'SIGCONT' && this.state === 'paused') this.state = 'running';
    return true;
  }

  /** Resolves true once the child exited, false after `ms`. */
  async waitExit(ms: number): Promise<boolean> {
    if (!this.running || !this.exited) return true;
    let timer: NodeJS.Timeout | undefined;
    const timeout = new Promise<false>((resolve) => (timer = setTimeout(() => resolve(false), ms)));
    try {
      return await Promise.race([this.exited.then(() => true as const), timeout]);
    } finally {
      clearTimeout(timer);
    }
  }

  /** SIGTERM (after SIGCONT if paused), then SIGKILL after `ms`. Resolves when it is gone. */
  async stop(ms: number): Promise<'stopped' | 'killed' | 'not running'> {
    if (!this.running) return 'not running';
    const wasPaused = this.state === 'paused';
    this.signal('SIGTERM');
    if (wasPaused) this.signal('SIGCONT'); // a stopped process cannot act on SIGTERM
    this.state = 'stopping';
    if (await this.waitExit(ms)) return 'stopped';
    this.signal('SIGKILL');
    if (!(await this.waitExit(KILL_WAIT_MS))) throw new Error(`${this.name} (pid ${this.pid}) did not exit after SIGKILL`);
    return 'killed';
  }

  /** What the PROCESS column of `nodes` shows. */
  describe(): string {
    const pid = this.pid === undefined ? '' : `pid ${this.pid}`;
    switch (this.state) {
      case 'running':
        return pid;
      case 'starting':
      case 'paused':
      case 'stopping':
        return `${this.state} (${pid})`;
      case 'exited': {
        const e = this.lastExit;
        const how = e?.signal ? e.signal : `code ${e?.code ?? '?'}`;
        return `exited (${how})`;
      }
      case 'never started':
        return 'not started';
    }
  }
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
      (port) => [
        '--listen', o.host,
        '--port', String(port),
        '--data-dir', join(o.dataDir, 'nameserver'),
        '--partitions', String(o.partitions),
        '--replicas', String(o.replicas),
        '--min-write-replicas', String(o.minWriteReplicas),
        '--initial-nodes', String(Math.max(o.replicas, o.storageIds.length)),
        '--heartbeat-ms', String(o.heartbeatMs),
        '--dead-after-ms', String(o.deadAfterMs),
        ...(o.rereplicateAfterMs === undefined ? [] : ['--rereplicate-after-ms', String(o.rereplicateAfterMs)]),
        '--log-level', o.logLevel,
      ],
      this.env,
      (p, info) => this.childExited(p, info),
    );
    o.storageIds.forEach((id, i) => this.addStorage(id, o.storagePort === 0 ? 0 : o.storagePort + i));
  }

  get nameserverAddress(): string {
    return formatAddress(this.options.host, this.nameserver.port);
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
      (port) => [
        '--nameserver', this.nameserverAddress,
        '--listen', o.host,
        '--port', String(port),
        '--node-id', id,
        '--backend', o.storageBackend?.(id) ?? o.backend,
        '--data-dir', dir,
        '--sync', o.sync,
        '--heartbeat-ms', String(o.heartbeatMs),
        '--max-value-bytes', String(o.maxValueBytes),
        ...(o.logRetainEntries === undefined ? [] : ['--log-retain-entries', String(o.logRetainEntries)]),
        '--log-level', o.logLevel,
      ],
      this.env,
      (proc, info) => this.childExited(proc, info),
    );
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
          `port ${p.port} on ${host} (for ${p.name}) is already in use — is another dstore running? Choose other ports with ${flag} (0 lets the OS pick)`,
        );
      }
    }
  }

  /** Polls `nodes()` until formed with every running storage server alive, or fails naming the laggard. */
  async waitFormed(connect: (nameserver: string) => Promise<Db>, deadline: number): Promise<ClusterInfo> {
    const db = await connect(this.nameserverAddress);
    let problem = 'the nameserver has not answered yet';
    let laggard: ManagedProcess | undefined;
    try {
      for (let attempt = 0; attempt < 1_000_000; attempt++) {
        for (const p of this.processes) {
          if (p.state === 'exited') {
            const e = p.lastExit;
            throw new ClusterStartError(
              `${p.name} exited while the cluster was forming (${e?.signal ? `signal ${e.signal}` : `exit code ${e?.code}`})`,
              p.name,
              p.logPath,
              logTail(p.logPath),
            );
          }
        }
        try {
          const info = await db.nodes();
          const notAlive = [...this.storage.values()].filter((p) => p.running && info.nodes.find((n) => n.id === p.name)?.state !== 'alive');
          if (info.formed && notAlive.length === 0 && info.partitionsReady === info.partitions) return info;
          laggard = notAlive[0];
          problem = notAlive.length > 0
            ? `${notAlive.map((p) => `${p.name} is ${info.nodes.find((n) => n.id === p.name)?.state ?? 'not registered'}`).join(', ')}`
            : info.formed
              ? `${info.partitions - info.partitionsReady} of ${info.partitions} partitions have no serving primary yet`
              : 'the nameserver has not formed the cluster map';
          if (!laggard && !info.formed) laggard = this.nameserver;
        } catch (err) {
          problem = `the nameserver did not answer: ${describeError(err)}`;
          laggard = this.nameserver;
        }
        const left = deadline - Date.now();
        if (left <= 0) break;
        await new Promise((r) => setTimeout(r, Math.min(100, left)));
      }
      const seconds = Math.round(this.options.startTimeoutMs / 1000);
      throw new ClusterStartError(
        `the cluster did not form within ${seconds} s: ${problem}`,
        laggard?.name,
        laggard?.logPath,
        laggard ? logTail(laggard.logPath) : '',
      );
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

/**
 * One child process of a local cluster (`dstore up`, `dstore bench --spawn`, chaos): a node
 * started as `node dist/src/cli/main.js <role> …`, restartable with the same arguments, data and
 * port; it reports its port through the IPC channel. src/cli/cluster.ts describes the whole.
 */
import { type ChildProcess, spawn } from 'node:child_process';
import { closeSync, existsSync, fstatSync, mkdirSync, openSync, readSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { assertNever } from '../core/types.js';
import { UsageError } from './errors.js';

/** What a child tells its parent through the IPC channel once it listens. */
export interface ListeningMessage {
  readonly dstore: 'listening';
  readonly port: number;
  readonly nodeId: string;
  /** Issue 15: the port of its HTTP server (/health, /ready, /metrics), when it has one. */
  readonly httpPort?: number;
}

export function isListeningMessage(m: unknown): m is ListeningMessage {
  if (typeof m !== 'object' || m === null) return false;
  const r = m as Record<string, unknown>;
  return (
    r.dstore === 'listening' &&
    typeof r.port === 'number' &&
    typeof r.nodeId === 'string' &&
    (r.httpPort === undefined || typeof r.httpPort === 'number')
  );
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

/** The start failure of a child that exited while its cluster was forming (its log's tail attached). */
export function exitedWhileForming(p: ManagedProcess): ClusterStartError {
  const e = p.lastExit;
  return new ClusterStartError(
    `${p.name} exited while the cluster was forming (${e?.signal ? `signal ${e.signal}` : `exit code ${e?.code}`})`,
    p.name,
    p.logPath,
    logTail(p.logPath),
  );
}

/** The start failure of a cluster that did not form in time: why, and the laggard's log tail. */
export function didNotForm(timeoutMs: number, problem: string, laggard: ManagedProcess | undefined): ClusterStartError {
  return new ClusterStartError(
    `the cluster did not form within ${Math.round(timeoutMs / 1000)} s: ${problem}`,
    laggard?.name,
    laggard?.logPath,
    laggard ? logTail(laggard.logPath) : '',
  );
}

export type ProcessState = 'starting' | 'running' | 'paused' | 'stopping' | 'exited' | 'never started';

export interface ExitInfo {
  readonly code: number | null;
  readonly signal: NodeJS.Signals | null;
}

const MAIN_SCRIPT = fileURLToPath(new URL('../cli/main.js', import.meta.url));
/** Bytes of a log file's end shown when a node fails. */
const LOG_TAIL_BYTES = 4096;
const LOG_TAIL_LINES = 15;
const KILL_WAIT_MS = 2000;

/** The last lines of a log file ('' when it cannot be read). */
export function logTail(path: string, maxLines = LOG_TAIL_LINES): string {
  let fd: number | undefined;
  try {
    fd = openSync(path, 'r');
    const size = fstatSync(fd).size;
    const length = Math.min(size, LOG_TAIL_BYTES);
    const buf = Buffer.alloc(length);
    readSync(fd, buf, 0, length, size - length);
    const lines = buf
      .toString('utf8')
      .split('\n')
      .filter((l) => l.trim() !== '');
    if (size > length) lines.shift(); // probably cut in the middle
    return lines
      .slice(-maxLines)
      .map((l) => (l.length > 400 ? `${l.slice(0, 400)}…` : l))
      .join('\n');
  } catch (err) {
    return `(could not read ${path}: ${err instanceof Error ? err.message : String(err)})`;
  } finally {
    if (fd !== undefined) closeSync(fd);
  }
}

/** One child process of the cluster, restartable with the same arguments, data and port. */
export class ManagedProcess {
  child: ChildProcess | undefined;
  state: ProcessState = 'never started';
  lastExit: ExitInfo | undefined;
  /** Set when the parent asked it to exit (kill, stop, restart, close). */
  exitExpected = false;
  /** Issue 15: every message the child sends over its IPC channel (each incarnation's). */
  onMessage: ((message: unknown) => void) | undefined;
  private exited: Promise<ExitInfo> | undefined;
  /**
   * Issue 15: the HTTP port asked for (undefined: none; 0: chosen by the OS), passed to `args`;
   * after the first start the one it reported, so restarts keep the address.
   */
  httpPort: number | undefined;

  constructor(
    readonly name: string,
    /** The subcommand: `node` is both in one process (issue 12, `up --ha`). */
    readonly role: 'nameserver' | 'storage' | 'node',
    readonly dataDir: string,
    readonly logPath: string,
    /** Requested port; after the first start the actual one, so restarts keep the address. */
    public port: number,
    private readonly args: (port: number, httpPort: number | undefined) => string[],
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
    return (
      this.state === 'starting' || this.state === 'running' || this.state === 'paused' || this.state === 'stopping'
    );
  }

  /** Spawns the child and waits until it reports its port (bounded by `timeoutMs`). */
  async start(timeoutMs: number): Promise<number> {
    if (this.running) throw new UsageError(`${this.name} is already running (pid ${this.pid})`);
    mkdirSync(this.dataDir, { recursive: true });
    const logFd = openSync(this.logPath, 'a');
    let child: ChildProcess;
    try {
      const [command, ...prefix] = this.wrapper.length > 0 ? [...this.wrapper, process.execPath] : [process.execPath];
      child = spawn(command!, [...prefix, MAIN_SCRIPT, this.role, ...this.args(this.port, this.httpPort)], {
        stdio: ['ignore', logFd, logFd, 'ipc'],
        detached: true,
        env: this.env,
      });
    } finally {
      closeSync(logFd);
    }
    this.child = child;
    child.on('message', (m: unknown) => this.onMessage?.(m));
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
        if (m.httpPort !== undefined) this.httpPort = m.httpPort;
        this.state = 'running';
        resolve(m.port);
      };
      const onExit = (code: number | null, signal: NodeJS.Signals | null): void => {
        cleanup();
        reject(
          this.startError(`${this.name} exited during start (${signal ? `signal ${signal}` : `exit code ${code}`})`),
        );
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
    if (stderrTail !== '' || !existsSync(nodeLog))
      return new ClusterStartError(message, this.name, this.logPath, stderrTail);
    return new ClusterStartError(message, this.name, nodeLog, logTail(nodeLog));
  }

  /** Sends `message` over the child's IPC channel; false when it has none (not running). */
  send(message: unknown): boolean {
    const child = this.child;
    if (!child?.connected) return false;
    child.send(message as object, (err) => {
      if (err) return; // it exited meanwhile: nobody waits for the answer
    });
    return true;
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
    if (!(await this.waitExit(KILL_WAIT_MS)))
      throw new Error(`${this.name} (pid ${this.pid}) did not exit after SIGKILL`);
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
      default:
        return assertNever(this.state);
    }
  }
}

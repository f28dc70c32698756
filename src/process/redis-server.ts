/**
 * Starts and stops a local `redis-server` for the redis backend: one per storage server in
 * `dstore up --backend redis` (as the original's compose file did), and a throwaway one
 * per test suite. It listens on loopback only, on a free port, keeps its files in `dir`
 * (AOF in `dir/appendonlydir`, log `dir/redis.log`, pid file `dir/redis.pid`) and runs with
 * `--appendonly yes --appendfsync always --save ''` by default: every write is fsynced
 * before Redis answers, which `--sync batch` requires (S14), and no RDB snapshots.
 *
 * A process that dies without stopping its Redis (SIGKILL) leaves it running; the pid file
 * lets the next start in the same dir find and stop it, so two Redis never share one AOF.
 */
import { type ChildProcess, spawn } from 'node:child_process';
import { existsSync, mkdirSync, readFileSync, rmSync } from 'node:fs';
import { connect } from 'node:net';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { findBinary } from './find-binary.js';
import { freePort } from './ports.js';

/** How to install redis-server, for messages. */
export const REDIS_INSTALL_HINT =
  'install it with `apt-get install redis-server` (Debian/Ubuntu) or `brew install redis` (macOS)';

const DEFAULT_START_TIMEOUT_MS = 10_000;
const DEFAULT_STOP_TIMEOUT_MS = 10_000;
const POLL_MS = 20;
/** Attempts at a free port (another process may take the one we picked). */
const PORT_ATTEMPTS = 5;

/** The redis-server binary on PATH (or a usual place), or undefined when it is not installed. */
export function findRedisServer(): string | undefined {
  return findBinary('redis-server');
}

export interface RedisServerOptions {
  /** Its working dir (AOF, log, pid file); created when missing. */
  readonly dir: string;
  /** 0 or undefined: a free port. */
  readonly port?: number;
  readonly host?: string;
  /** Default 'always' (S14). */
  readonly appendfsync?: 'always' | 'everysec' | 'no';
  /** Default true. */
  readonly appendonly?: boolean;
  /** More `--name value` arguments, e.g. ['--maxmemory-policy', 'allkeys-lru']. */
  readonly extraArgs?: readonly string[];
  /** Default: findRedisServer(). */
  readonly binary?: string;
  readonly startTimeoutMs?: number;
  /** Detach into its own process group (so a terminal's Ctrl-C reaches only the parent). */
  readonly detached?: boolean;
}

/**
 * Every server this process started and has not seen exit. When the process exits without
 * stopping them, each gets SIGTERM (after SIGCONT, in case it is paused): Redis then
 * flushes its AOF and exits on its own.
 */
const running = new Set<RedisServer>();
let exitGuardInstalled = false;

function installExitGuard(): void {
  if (exitGuardInstalled) return;
  exitGuardInstalled = true;
  process.on('exit', () => {
    for (const server of running) {
      server.kill('SIGCONT');
      server.kill('SIGTERM');
    }
  });
}

/**
 * The pid of the Redis answering on host:port (INFO server over a raw socket), or
 * undefined while nothing answers or it is still loading. The pid tells our server from
 * another that took the port first.
 */
function serverPid(host: string, port: number, timeoutMs: number): Promise<number | undefined> {
  return new Promise((resolve) => {
    const socket = connect({ host, port });
    let answer = '';
    const done = (pid: number | undefined): void => {
      clearTimeout(timer);
      socket.destroy();
      resolve(pid);
    };
    const timer = setTimeout(() => done(undefined), timeoutMs);
    socket.on('connect', () => socket.write('INFO server\r\n'));
    socket.on('data', (chunk) => {
      answer += chunk.toString('latin1');
      if (answer.startsWith('-')) return done(undefined);
      const m = /process_id:(\d+)\r\n/.exec(answer);
      if (m) done(Number(m[1]));
    });
    socket.on('error', () => done(undefined));
  });
}

function logTail(path: string, lines = 8): string {
  try {
    return readFileSync(path, 'utf8').trim().split('\n').slice(-lines).join('\n');
  } catch {
    return '(no log)';
  }
}

/** A pid file's process, if it still runs and is a redis-server. */
function livePidFrom(pidFile: string): number | undefined {
  if (!existsSync(pidFile)) return undefined;
  const pid = Number(readFileSync(pidFile, 'utf8').trim());
  if (!Number.isInteger(pid) || pid <= 1) return undefined;
  try {
    process.kill(pid, 0);
  } catch {
    return undefined; // gone
  }
  try {
    const cmdline = readFileSync(`/proc/${pid}/cmdline`, 'utf8');
    return cmdline.includes('redis-server') ? pid : undefined;
  } catch {
    return pid; // no /proc (macOS): trust the pid file
  }
}

async function waitGone(pid: number, ms: number): Promise<boolean> {
  const deadline = Date.now() + ms;
  while (Date.now() < deadline) {
    try {
      process.kill(pid, 0);
    } catch {
      return true;
    }
    await sleep(POLL_MS);
  }
  return false;
}

export class RedisServer {
  private child: ChildProcess | undefined;
  private exited: Promise<void> = Promise.resolve();

  private constructor(
    readonly binary: string,
    readonly dir: string,
    readonly host: string,
    /** Fixed after the first start, so a restart keeps the address. */
    public port: number,
    private readonly args: readonly string[],
    private readonly startTimeoutMs: number,
    private readonly detached: boolean,
  ) {}

  /** Starts a redis-server and waits until it answers. Throws when it is not installed. */
  static async start(options: RedisServerOptions): Promise<RedisServer> {
    const binary = options.binary ?? findRedisServer();
    if (binary === undefined) throw new Error(`redis-server is not installed: ${REDIS_INSTALL_HINT}`);
    const host = options.host ?? '127.0.0.1';
    const args = [
      '--bind',
      host,
      '--protected-mode',
      'yes',
      '--dir',
      options.dir,
      '--appendonly',
      options.appendonly === false ? 'no' : 'yes',
      '--appendfsync',
      options.appendfsync ?? 'always',
      '--save',
      '',
      '--daemonize',
      'no',
      '--logfile',
      join(options.dir, 'redis.log'),
      '--pidfile',
      join(options.dir, 'redis.pid'),
      ...(options.extraArgs ?? []),
    ];
    const server = new RedisServer(
      binary,
      options.dir,
      host,
      options.port ?? 0,
      args,
      options.startTimeoutMs ?? DEFAULT_START_TIMEOUT_MS,
      options.detached ?? false,
    );
    await server.startProcess();
    return server;
  }

  get url(): string {
    return `redis://${this.host.includes(':') ? `[${this.host}]` : this.host}:${this.port}`;
  }

  get pid(): number | undefined {
    return this.child?.pid;
  }

  get running(): boolean {
    return this.child !== undefined && running.has(this);
  }

  /** Starts it again (after kill or stop) on the same port with the same dir. */
  async restart(): Promise<void> {
    // A process just killed may not have reported its exit yet.
    if (this.running) await Promise.race([this.exited, sleep(DEFAULT_STOP_TIMEOUT_MS, undefined, { ref: false })]);
    if (this.running) throw new Error(`redis-server on port ${this.port} is still running`);
    await this.startProcess();
  }

  /** Resolves once the process has exited (after kill or stop). */
  waitExit(): Promise<void> {
    return this.exited;
  }

  /** Sends a signal (SIGKILL: a crash; SIGSTOP/SIGCONT: a hang). */
  kill(signal: NodeJS.Signals = 'SIGKILL'): void {
    if (this.child && running.has(this)) this.child.kill(signal);
  }

  /** SIGTERM (Redis flushes and exits), SIGKILL after `timeoutMs`; resolves once it is gone. */
  async stop(timeoutMs = DEFAULT_STOP_TIMEOUT_MS): Promise<void> {
    if (!this.running) return;
    this.kill('SIGCONT'); // a paused server cannot act on SIGTERM
    this.kill('SIGTERM');
    const gone = await Promise.race([
      this.exited.then(() => true),
      new Promise<false>((r) => setTimeout(() => r(false), timeoutMs).unref()),
    ]);
    if (!gone) {
      this.kill('SIGKILL');
      await this.exited;
    }
  }

  /** Stops it and deletes its dir (tests). */
  async destroy(): Promise<void> {
    try {
      await this.stop();
    } finally {
      rmSync(this.dir, { recursive: true, force: true });
    }
  }

  async [Symbol.asyncDispose](): Promise<void> {
    await this.destroy();
  }

  private async startProcess(): Promise<void> {
    mkdirSync(this.dir, { recursive: true });
    await this.stopLeftover();
    installExitGuard();
    const fixedPort = this.port !== 0;
    let lastProblem = '';
    for (let attempt = 0; attempt < (fixedPort ? 1 : PORT_ATTEMPTS); attempt++) {
      const port = fixedPort ? this.port : await freePort(this.host);
      const problem = await this.spawnOn(port);
      if (problem === undefined) {
        this.port = port;
        return;
      }
      lastProblem = problem;
      if (!/Address already in use/i.test(problem)) break;
    }
    throw new Error(`redis-server did not start in ${this.dir}: ${lastProblem}`);
  }

  /** A redis-server this dir's pid file names, left by a process that died: stop it. */
  private async stopLeftover(): Promise<void> {
    const pid = livePidFrom(join(this.dir, 'redis.pid'));
    if (pid === undefined || pid === this.child?.pid) return;
    process.kill(pid, 'SIGTERM');
    if (!(await waitGone(pid, DEFAULT_STOP_TIMEOUT_MS))) {
      process.kill(pid, 'SIGKILL');
      await waitGone(pid, DEFAULT_STOP_TIMEOUT_MS);
    }
  }

  /** Undefined once it answers on `port`; otherwise why it did not start. */
  private async spawnOn(port: number): Promise<string | undefined> {
    const child = spawn(this.binary, ['--port', String(port), ...this.args], {
      stdio: 'ignore',
      detached: this.detached,
    });
    this.child = child;
    running.add(this);
    let exitInfo: string | undefined;
    this.exited = new Promise<void>((resolve) => {
      child.once('exit', (code, signal) => {
        exitInfo = signal ? `signal ${signal}` : `exit code ${code}`;
        running.delete(this);
        resolve();
      });
      child.once('error', (err) => {
        exitInfo = err.message;
        running.delete(this);
        resolve();
      });
    });
    const deadline = Date.now() + this.startTimeoutMs;
    while (Date.now() < deadline) {
      if (exitInfo !== undefined) return `it exited (${exitInfo}): ${logTail(join(this.dir, 'redis.log'))}`;
      if ((await serverPid(this.host, port, 500)) === child.pid) return undefined;
      await sleep(POLL_MS);
    }
    this.kill('SIGKILL');
    await this.exited;
    return `it did not answer within ${this.startTimeoutMs} ms: ${logTail(join(this.dir, 'redis.log'))}`;
  }
}

/**
 * Starts and stops local `etcd` members for benchmarks and tests: a 3-member cluster (or any
 * size) on loopback, each member on a free client port and a free peer port, bootstrapped
 * statically (`--initial-cluster`), with its data dir and log (`etcd.log`) under one
 * throwaway dir. `start` waits, with a bound, until every member answers `/health` with
 * `{"health":"true"}` (which needs a leader); `stop` sends SIGTERM and SIGKILL after a bound;
 * `destroy` also removes the dir. Members run in their own process group (a terminal's
 * Ctrl-C reaches only the parent, which stops them in order) and an `exit` handler SIGKILLs
 * any member still running when this process exits, so none is left behind. A test can run the
 * members elsewhere, e.g. in a network namespace: a command prefix (`ip netns exec NS`), fixed
 * ports on that namespace's address, and a health check that runs there.
 */
import { type ChildProcess, spawn } from 'node:child_process';
import { closeSync, mkdirSync, openSync, readFileSync, rmSync } from 'node:fs';
import { request } from 'node:http';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { findBinary } from './find-binary.js';
import { freePort } from './ports.js';

/** How to install etcd, for messages. */
export const ETCD_INSTALL_HINT =
  'install it with `apt-get install etcd-server` (Debian/Ubuntu) or `brew install etcd` (macOS)';

const DEFAULT_START_TIMEOUT_MS = 30_000;
const DEFAULT_STOP_TIMEOUT_MS = 10_000;
const POLL_MS = 50;
/** Whole-cluster attempts (another process may take a port we picked before etcd binds it). */
const START_ATTEMPTS = 3;

/** The etcd binary on PATH (or a usual place), or undefined when it is not installed. */
export function findEtcd(): string | undefined {
  return findBinary('etcd');
}

export interface EtcdClusterOptions {
  /** Holds one dir per member (`m1/`, …: `data/` and `etcd.log`); created when missing. */
  readonly dir: string;
  /** Default 3. */
  readonly members?: number;
  /** Default 127.0.0.1. */
  readonly host?: string;
  /** Default: findEtcd(). */
  readonly binary?: string;
  /** Bound on every member being healthy, in ms (default 30 s). */
  readonly startTimeoutMs?: number;
  /** More `--name=value` arguments for every member. */
  readonly extraArgs?: readonly string[];
  /** A command the binary runs under, e.g. `['ip', 'netns', 'exec', NS]` (default: none). */
  readonly commandPrefix?: readonly string[];
  /** Each member's client and peer port, in that order (2 × members; default: free ports on `host`). */
  readonly ports?: readonly number[];
  /** Whether a member answers healthy (default: isHealthy from here, e.g. replaced for another namespace). */
  readonly healthCheck?: (clientUrl: string) => Promise<boolean>;
}

/** One member: its child process and addresses. */
export interface EtcdMember {
  readonly name: string;
  readonly clientUrl: string;
  readonly peerUrl: string;
  readonly dir: string;
  readonly child: ChildProcess;
  /** Resolves once the process has exited. */
  readonly exited: Promise<void>;
  exitInfo: string | undefined;
}

const running = new Set<ChildProcess>();
let exitGuardInstalled = false;

function installExitGuard(): void {
  if (exitGuardInstalled) return;
  exitGuardInstalled = true;
  process.on('exit', () => {
    for (const child of running) child.kill('SIGKILL');
  });
}

function logTail(path: string, lines = 8): string {
  try {
    return readFileSync(path, 'utf8').trim().split('\n').slice(-lines).join('\n');
  } catch {
    return '(no log)';
  }
}

/** True when `url`/health answers {"health":"true"} within `timeoutMs`. */
export function isHealthy(clientUrl: string, timeoutMs = 1000): Promise<boolean> {
  return new Promise((resolve) => {
    const req = request(`${clientUrl}/health`, { timeout: timeoutMs }, (res) => {
      let body = '';
      res.setEncoding('utf8');
      res.on('data', (chunk: string) => {
        body += chunk;
      });
      res.on('end', () => resolve(res.statusCode === 200 && /"health"\s*:\s*"true"/.test(body)));
      res.on('error', () => resolve(false));
    });
    req.on('timeout', () => req.destroy());
    req.on('error', () => resolve(false));
    req.end();
  });
}

export class EtcdCluster {
  private stopping: Promise<void> | undefined;

  private constructor(
    readonly dir: string,
    readonly members: readonly EtcdMember[],
  ) {}

  /** Client URLs, e.g. for `new Etcd3({ hosts })`. */
  get clientUrls(): string[] {
    return this.members.map((m) => m.clientUrl);
  }

  /** Pids of the members still running. */
  get pids(): number[] {
    return this.members.flatMap((m) => (m.exitInfo === undefined && m.child.pid !== undefined ? [m.child.pid] : []));
  }

  /** Starts the members and waits until each is healthy. Throws when etcd is not installed. */
  static async start(options: EtcdClusterOptions): Promise<EtcdCluster> {
    const binary = options.binary ?? findEtcd();
    if (binary === undefined) throw new Error(`etcd is not installed: ${ETCD_INSTALL_HINT}`);
    mkdirSync(options.dir, { recursive: true });
    installExitGuard();
    let lastProblem = '';
    for (let attempt = 0; attempt < START_ATTEMPTS; attempt++) {
      const cluster = await EtcdCluster.spawnAll(binary, options, attempt);
      const problem = await cluster.waitHealthy(
        options.startTimeoutMs ?? DEFAULT_START_TIMEOUT_MS,
        options.healthCheck ?? isHealthy,
      );
      if (problem === undefined) return cluster;
      await cluster.stop();
      lastProblem = problem;
      if (!/address already in use/i.test(problem) || options.ports !== undefined) break;
    }
    throw new Error(`etcd did not start in ${options.dir}: ${lastProblem}`);
  }

  private static async spawnAll(binary: string, o: EtcdClusterOptions, attempt: number): Promise<EtcdCluster> {
    const host = o.host ?? '127.0.0.1';
    const hostInUrl = host.includes(':') ? `[${host}]` : host;
    const count = o.members ?? 3;
    const names = Array.from({ length: count }, (_, i) => `m${i + 1}`);
    const ports: number[] = [...(o.ports ?? [])];
    if (o.ports !== undefined && ports.length !== 2 * count)
      throw new Error(`etcd: ${count} members need ${2 * count} ports, got ${ports.length}`);
    while (ports.length < 2 * count) {
      const port = await freePort(host);
      if (!ports.includes(port)) ports.push(port);
    }
    const clientUrl = (i: number): string => `http://${hostInUrl}:${ports[2 * i]}`;
    const peerUrl = (i: number): string => `http://${hostInUrl}:${ports[2 * i + 1]}`;
    const initialCluster = names.map((name, i) => `${name}=${peerUrl(i)}`).join(',');
    const token = `bench-${process.pid}-${Date.now()}-${attempt}`;
    const members = names.map((name, i): EtcdMember => {
      const dir = join(o.dir, name);
      rmSync(dir, { recursive: true, force: true }); // a failed attempt's data would not match the new ports
      mkdirSync(dir, { recursive: true });
      const log = openSync(join(dir, 'etcd.log'), 'a');
      const [command, ...prefixArgs] = [...(o.commandPrefix ?? []), binary];
      const child = spawn(
        command ?? binary,
        [
          ...prefixArgs,
          `--name=${name}`,
          `--data-dir=${join(dir, 'data')}`,
          `--listen-client-urls=${clientUrl(i)}`,
          `--advertise-client-urls=${clientUrl(i)}`,
          `--listen-peer-urls=${peerUrl(i)}`,
          `--initial-advertise-peer-urls=${peerUrl(i)}`,
          `--initial-cluster=${initialCluster}`,
          '--initial-cluster-state=new',
          `--initial-cluster-token=${token}`,
          '--log-level=warn',
          ...(o.extraArgs ?? []),
        ],
        { stdio: ['ignore', log, log], detached: true },
      );
      closeSync(log);
      running.add(child);
      const member: EtcdMember = {
        name,
        clientUrl: clientUrl(i),
        peerUrl: peerUrl(i),
        dir,
        child,
        exitInfo: undefined,
        exited: new Promise<void>((resolve) => {
          child.once('exit', (code, signal) => {
            member.exitInfo = signal ? `signal ${signal}` : `exit code ${code}`;
            running.delete(child);
            resolve();
          });
          child.once('error', (err) => {
            member.exitInfo = err.message;
            running.delete(child);
            resolve();
          });
        }),
      };
      return member;
    });
    return new EtcdCluster(o.dir, members);
  }

  /** Undefined once every member is healthy; otherwise why not. */
  private async waitHealthy(
    timeoutMs: number,
    healthy: (clientUrl: string) => Promise<boolean>,
  ): Promise<string | undefined> {
    const deadline = Date.now() + timeoutMs;
    const ok = new Set<string>();
    while (Date.now() < deadline) {
      const dead = this.members.find((m) => m.exitInfo !== undefined);
      if (dead) return `${dead.name} exited (${dead.exitInfo}): ${logTail(join(dead.dir, 'etcd.log'))}`;
      for (const m of this.members) {
        if (!ok.has(m.name) && (await healthy(m.clientUrl))) ok.add(m.name);
      }
      if (ok.size === this.members.length) return undefined;
      await sleep(POLL_MS);
    }
    const sick = this.members.filter((m) => !ok.has(m.name));
    return (
      `${sick.map((m) => m.name).join(', ')} not healthy within ${timeoutMs} ms: ` +
      logTail(join((sick[0] ?? (this.members[0] as EtcdMember)).dir, 'etcd.log'))
    );
  }

  /** SIGTERM to every member, SIGKILL after `timeoutMs`; resolves once all are gone. Idempotent. */
  stop(timeoutMs = DEFAULT_STOP_TIMEOUT_MS): Promise<void> {
    this.stopping ??= (async () => {
      const live = this.members.filter((m) => m.exitInfo === undefined);
      for (const m of live) m.child.kill('SIGTERM');
      const allGone = Promise.all(live.map((m) => m.exited)).then(() => true);
      const gone = await Promise.race([allGone, sleep(timeoutMs, false, { ref: false })]);
      if (!gone) {
        for (const m of live) if (m.exitInfo === undefined) m.child.kill('SIGKILL');
        await allGone;
      }
    })();
    return this.stopping;
  }

  /** Last resort: SIGKILL every member still running, at once. */
  killAllNow(): void {
    for (const m of this.members) if (m.exitInfo === undefined) m.child.kill('SIGKILL');
  }

  /** Stops every member and deletes the dir. */
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
}

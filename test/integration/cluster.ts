/**
 * Starts real dstore processes (`node dist/src/cli/main.js nameserver|storage`) on free
 * loopback ports in a temporary directory, and stops them — also when a test fails
 * (`await using`, or `stop()` in `t.after`). Waits are bounded and say what they waited for.
 */
import { type ChildProcess, spawn } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, existsSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { connect, type Db } from '../../src/client/index.js';

export const MAIN = resolve('dist/src/cli/main.js');

export async function freePort(): Promise<number> {
  return new Promise((res, rej) => {
    const srv = createServer();
    srv.once('error', rej);
    srv.listen(0, '127.0.0.1', () => {
      const addr = srv.address();
      const port = typeof addr === 'object' && addr ? addr.port : 0;
      srv.close(() => res(port));
    });
  });
}

/** Polls `condition` every `intervalMs` until it returns a truthy value or `timeoutMs` passes. */
export async function waitFor<T>(what: string, condition: () => Promise<T | undefined | false> | T | undefined | false, timeoutMs = 30_000, intervalMs = 100): Promise<T> {
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
  throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}${lastError ? ` (last error: ${(lastError as Error).message})` : ''}`);
}

export interface ClusterOptions {
  readonly nodes?: number;
  readonly partitions?: number;
  readonly replicas?: number;
  readonly backend?: 'lmdb' | 'memory';
  readonly heartbeatMs?: number;
  readonly deadAfterMs?: number;
  readonly extraStorageArgs?: readonly string[];
}

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
    this.spawnProc('nameserver', [
      'nameserver', '--port', String(nsPort), '--data-dir', join(this.dir, 'nameserver'),
      '--partitions', String(this.opts.partitions ?? 16), '--replicas', String(this.opts.replicas ?? 3),
      '--heartbeat-ms', String(this.opts.heartbeatMs ?? 1000), '--dead-after-ms', String(this.opts.deadAfterMs ?? 5000),
      '--log-level', 'info',
    ]);
    for (let i = 1; i <= nodes; i++) await this.spawnStorage(`s${i}`);
    await this.waitFormed(nodes);
  }

  async spawnStorage(name: string): Promise<void> {
    const port = this.storagePorts.get(name) ?? (await freePort());
    this.storagePorts.set(name, port);
    this.spawnProc(name, [
      'storage', '--nameserver', this.nameserverAddress, '--port', String(port), '--node-id', name,
      '--data-dir', join(this.dir, name), '--backend', this.opts.backend ?? 'lmdb',
      '--heartbeat-ms', String(this.opts.heartbeatMs ?? 1000), '--log-level', 'info',
      ...(this.opts.extraStorageArgs ?? []),
    ]);
  }

  private spawnProc(name: string, args: string[]): void {
    const child = spawn(process.execPath, [MAIN, ...args], { stdio: ['ignore', 'ignore', 'ignore'] });
    const exited = new Promise<number | null>((res) => child.once('exit', (code) => res(code)));
    this.procs.set(name, { child, args, exited });
  }

  /** Waits until the map is formed and `n` storage servers are alive. */
  async waitFormed(n: number, timeoutMs = 30_000): Promise<void> {
    const db = await this.client();
    await waitFor(`a formed cluster with ${n} live storage servers`, async () => {
      for (const [name, p] of this.procs) {
        if (p.child.exitCode !== null) throw new Error(`${name} exited with ${p.child.exitCode}: ${this.logTail(name)}`);
      }
      const info = await db.nodes();
      return info.formed && info.nodes.filter((x) => x.role === 'storage' && x.state === 'alive').length >= n;
    }, timeoutMs);
  }

  async client(timeoutMs = 10_000): Promise<Db> {
    const db = await connect(this.nameserverAddress, { timeoutMs });
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
    const path = join(this.dir, name, 'node.log');
    if (!existsSync(path)) return '(no log)';
    return readFileSync(path, 'utf8').trim().split('\n').slice(-lines).join('\n');
  }

  async stop(): Promise<void> {
    for (const db of this.clients) await db.close().catch(() => undefined);
    this.clients = [];
    for (const p of this.procs.values()) if (p.child.exitCode === null && p.child.signalCode === null) p.child.kill('SIGKILL');
    await Promise.all([...this.procs.values()].map((p) => p.exited));
    rmSync(this.dir, { recursive: true, force: true });
  }

  async [Symbol.asyncDispose](): Promise<void> {
    await this.stop();
  }
}

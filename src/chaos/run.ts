/**
 * A chaos run on real processes (issue 5): a local cluster of `dstore nameserver` and
 * `dstore storage` processes (ManagedProcess, as `dstore up` starts them), a client worker
 * (worker.ts) recording every operation, and a nemesis applying a seeded schedule
 * (schedule.ts) of SIGKILLs and restarts, SIGSTOP/SIGCONT, nameserver restarts, — with
 * network namespaces (network.ts, root only) — network partitions and — with each storage
 * server's data dir on a small tmpfs of its own (root only) — full disks (issue 9).
 *
 * `--backend redis`: each storage server gets its own redis-server on a free loopback port,
 * its files in `<node data dir>/redis` (so on that node's small tmpfs, and a full disk is
 * Redis' too), started before the storage server and again at the end of a disk-full fault
 * or when healing if it exited (Redis with `appendfsync always` exits when it cannot write
 * its AOF). The Redis servers listen on the runner's loopback, which the nodes' network
 * namespaces cannot reach, so network partitions are skipped with this backend.
 *
 * Timeline: start the cluster (bounded) → the worker waits until every partition serves →
 * load for `durationMs` with faults from the schedule → heal everything (SIGCONT, start what
 * is down, restore every link) → the worker stops the load, waits for the cluster to settle
 * (bounded) and reads every key once more → stop every process and remove the namespaces →
 * check the history for linearizability → report.
 *
 * `--ha` (issue 12): the cluster is a 3-member etcd on loopback (EtcdCluster) and `--nodes`
 * `dstore node` processes n1..nN (a storage server and a nameserver candidate each, as `up --ha`
 * starts them), the clients given every candidate as seeds. Each node reaches each etcd member
 * through a TCP relay in this process (relay.ts), so `isolate-leader` can cut one node off from
 * etcd only. `kill` and `pause` act on whole nodes; the leader faults (schedule.ts) find the
 * leader when they start (the candidate that says it leads itself). Everything runs on loopback:
 * the nodes' network namespaces could not reach etcd, so `isolate`/`split` are left out, and
 * `restart-nameserver` has no single nameserver to restart.
 *
 * Everything started is removed in `finally`, on an abort (SIGINT) and, as a last resort,
 * by a process 'exit' handler (SIGKILL to every child, namespaces deleted synchronously).
 */
import { type ChildProcess, spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { closeSync, mkdirSync, mkdtempSync, openSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { setTimeout as delay } from 'node:timers/promises';
import { fileURLToPath } from 'node:url';
import { checkHistory, type CheckResult, formatHistoryLine, type HistoryOp } from '../check/linearizability.js';
import { logTail, ManagedProcess } from '../process/managed-process.js';
import { EtcdCluster, type EtcdMember } from '../process/etcd-server.js';
import { nameserverArgs, nodeArgs, storageArgs } from '../process/node-args.js';
import { freePort } from '../process/ports.js';
import { RedisFleet } from '../process/redis-fleet.js';
import { SmallFs, smallFsUnavailableReason } from '../process/small-fs.js';
import { assertNever } from '../core/types.js';
import type { LeaderReply } from '../rpc/messages.js';
import { RpcPool } from '../rpc/transport.js';
import type { BackendKind } from '../storage/open.js';
import { ChaosNetwork, networkUnavailableReason, removeStaleNamespaces, SUBNET } from './network.js';
import { Relay } from './relay.js';
import { checkBank, formatBank } from './bank.js';
import { checkCounters, type CounterResult, formatCounters } from './counters.js';
import {
  type ChaosOp,
  type ChaosWorkload,
  type FromWorker,
  monotonicMs,
  type ToWorker,
  type WorkerConfig,
} from './protocol.js';
import {
  type AppliedFault,
  CHAOS_EXIT,
  type ChaosVerdict,
  formatReport,
  type UnexpectedExit,
  unavailability,
  type Window,
} from './report.js';
import {
  describeFault,
  DISK_FAULT_KINDS,
  type FaultKind,
  LEADER_FAULT_KINDS,
  NETWORK_FAULT_KINDS,
  NON_HA_FAULT_KINDS,
  type PlannedFault,
  planNemesis,
} from './schedule.js';

export interface ChaosOptions {
  readonly durationS: number;
  readonly seed: number;
  readonly historyPath?: string;
  readonly clients: number;
  readonly keys: number;
  readonly nodes: number;
  readonly partitions: number;
  readonly replicas: number;
  /** redis: one redis-server per storage server (see the file comment). */
  readonly backend: BackendKind;
  /** Network partitions wanted (they also need root). */
  readonly networkFaults: boolean;
  readonly faults: readonly FaultKind[];
  readonly ratePerSec: number;
  readonly timeoutMs: number;
  readonly attemptTimeoutMs: number;
  readonly heartbeatMs: number;
  readonly deadAfterMs: number;
  readonly settleTimeoutMs: number;
  readonly checkBudgetMs: number;
  readonly deleteExisted: boolean;
  /** Issue 14: `cas`: counters incremented by compare-and-set (default `kv`). */
  readonly workload?: ChaosWorkload;
  /** Where node data and logs go (kept); default a temporary dir, removed unless the run found a problem or `keep`. */
  readonly dataDir?: string;
  readonly keep: boolean;
  readonly logLevel: string;
  /** Issue 12: a 3-member etcd and `--nodes` `dstore node` processes (see the file comment). */
  readonly ha?: boolean;
  /** `--ha`: every candidate's `--lease-ttl-ms` (default 2000). */
  readonly leaseTtlMs?: number;
  /**
   * Issue 13: every storage server's `--anti-entropy-ms` (0: off). Nothing tampers with the
   * data in a chaos run, so any divergence the checks find is a bug: the verdict is a violation.
   */
  readonly antiEntropyMs?: number;
}

/** What the storage servers' background anti-entropy checks found over the run (S16). */
export interface ChaosAntiEntropy {
  readonly checks: number;
  readonly divergences: number;
  readonly incomplete: number;
  /** Servers whose counts could not be read after the run (their counts are missing). */
  readonly unread: readonly string[];
}

export interface ChaosResult {
  readonly seed: number;
  readonly verdict: ChaosVerdict;
  readonly exitCode: number;
  readonly plan: readonly PlannedFault[];
  readonly faults: readonly AppliedFault[];
  /**
   * The history's times are ms since the run's origin; the load started at this one (fault times are relative to it).
   */
  readonly loadStartMs: number;
  readonly ops: readonly ChaosOp[];
  readonly windows: readonly Window[];
  readonly check: CheckResult;
  readonly settle: { readonly ok: boolean; readonly ms?: number; readonly problem?: string };
  readonly unexpectedExits: readonly UnexpectedExit[];
  readonly antiEntropy?: ChaosAntiEntropy;
  /** Set when network partitions were wanted but could not run. */
  readonly networkSkipped?: string;
  /** Set when disk-full faults were wanted but could not run. */
  readonly diskSkipped?: string;
  /** `--ha`: the fault kinds left out (they have no meaning there). */
  readonly haSkipped?: string;
  readonly report: string;
}

const WORKER_SCRIPT = fileURLToPath(new URL('./worker.js', import.meta.url));
const NAMESERVER_PORT = 7000;
const STORAGE_PORT = 7101;
const START_TIMEOUT_MS = 30_000;
const STOP_TIMEOUT_MS = 5000;
const MIN_GAP_MS = 1000;
const ETCD_MEMBERS = 3;
const DEFAULT_LEASE_TTL_MS = 2000;
/** How long a leader fault may look for the leader before it gives up (noted). */
const FIND_LEADER_MS = 10_000;
/** Each storage server's small filesystem for disk-full faults (tmpfs: only what is written uses memory). */
const NODE_FS_BYTES = 64 * 1024 * 1024;

const keyNames = (n: number): string[] => Array.from({ length: n }, (_, i) => `k${i}`);

/** Runs one chaos run; `progress` gets a line per phase and fault. Rejects only on set-up failures or an abort. */
export async function runChaos(
  o: ChaosOptions,
  progress: (line: string) => void,
  signal?: AbortSignal,
): Promise<ChaosResult> {
  const durationMs = Math.round(o.durationS * 1000);
  const ha = o.ha === true;
  const storageIds = Array.from({ length: o.nodes }, (_, i) => `${ha ? 'n' : 's'}${i + 1}`);
  const replicas = Math.min(o.replicas, o.nodes);
  const leaseTtlMs = o.leaseTtlMs ?? DEFAULT_LEASE_TTL_MS;
  const etcdNames = Array.from({ length: ETCD_MEMBERS }, (_, i) => `m${i + 1}`);
  const haLeftOut = ha ? o.faults.filter((k) => NON_HA_FAULT_KINDS.includes(k)) : [];
  const haSkipped =
    haLeftOut.length === 0
      ? undefined
      : `${haLeftOut.join(', ')} left out with --ha (no single nameserver; the nodes run on loopback, where etcd is)`;

  // Partitions need namespaces; without them the network kinds are dropped from the schedule.
  const wantNetwork = !ha && o.networkFaults && o.faults.some((k) => NETWORK_FAULT_KINDS.includes(k));
  const networkSkipped = !wantNetwork
    ? undefined
    : o.backend === 'redis'
      ? "each Redis listens on the runner's loopback, which the nodes' network namespaces cannot reach (--backend " +
        'redis)'
      : networkUnavailableReason();
  const useNetwork = wantNetwork && networkSkipped === undefined;
  // Full disks need a small filesystem per storage server (root), and a backend that writes one.
  const wantDisk = o.faults.some((k) => DISK_FAULT_KINDS.includes(k));
  const diskSkipped = !wantDisk
    ? undefined
    : o.backend === 'memory'
      ? 'the memory backend writes no disk'
      : smallFsUnavailableReason('disk-full faults');
  const useDisk = wantDisk && diskSkipped === undefined;
  const kinds = o.faults.filter(
    (k) =>
      (useNetwork || !NETWORK_FAULT_KINDS.includes(k)) &&
      (useDisk || !DISK_FAULT_KINDS.includes(k)) &&
      !haLeftOut.includes(k) &&
      (ha || !(LEADER_FAULT_KINDS as readonly FaultKind[]).includes(k)),
  );
  const plan = planNemesis({
    seed: o.seed,
    durationMs,
    storageIds,
    kinds,
    ...(ha ? { etcdMembers: etcdNames, pastLeaseMs: leaseTtlMs + 1000 } : {}),
  });
  if (haSkipped) progress(`chaos: ${haSkipped}`);
  if (networkSkipped) progress(`chaos: network partitions skipped: ${networkSkipped}`);
  if (diskSkipped) progress(`chaos: disk-full faults skipped: ${diskSkipped}`);

  const dir = o.dataDir ? resolve(o.dataDir) : mkdtempSync(join(tmpdir(), 'dstore-chaos-'));
  mkdirSync(dir, { recursive: true });
  const token = useNetwork ? randomBytes(16).toString('hex') : undefined;
  const originNs = process.hrtime.bigint();
  const clock = (): number => monotonicMs(originNs);

  let net: ChaosNetwork | undefined;
  let etcd: EtcdCluster | undefined;
  const relays = new Map<string, Relay[]>();
  const etcdRestarted = new Map<string, ChildProcess>();
  const pool = new RpcPool({ maxFrameBytes: 64 * 1024 * 1024, backoffMaxMs: 200 });
  let fleet: RedisFleet | undefined;
  const disks = new Map<string, SmallFs>();
  const unmountAll = (): void => {
    for (const d of disks.values()) d.unmount();
  };
  let worker: ChildProcess | undefined;
  const procs: ManagedProcess[] = [];
  let closing = false;
  const unexpectedExits: UnexpectedExit[] = [];
  let loadStartMs = Number.NaN;
  const exitGuard = (): void => {
    for (const p of procs) if (p.running) p.signal('SIGKILL');
    worker?.kill('SIGKILL');
    etcd?.killAllNow();
    for (const child of etcdRestarted.values()) child.kill('SIGKILL');
    try {
      net?.destroy();
    } catch (err) {
      process.stderr.write(`chaos: ${(err as Error).message}\n`);
    }
    unmountAll(); // lazily: processes still holding files there are being killed
  };
  process.on('exit', exitGuard);

  const faults: AppliedFault[] = [];
  const ops: ChaosOp[] = [];
  const auditTotals: number[] = [];
  let antiEntropy: ChaosAntiEntropy | undefined;
  let settle: { ok: boolean; ms?: number; problem?: string } = {
    ok: false,
    problem: 'the run ended before the cluster was checked',
  };
  let loadStoppedMs = Number.NaN;
  try {
    // ---- the network and the processes ----
    if (useNetwork) {
      const stale = removeStaleNamespaces();
      if (stale > 0) progress(`chaos: removed ${stale} network namespaces left by an earlier run`);
      net = ChaosNetwork.create(['nameserver', ...storageIds, 'clients']);
    }
    const hostOf = (name: string): string => (net ? net.address(name) : '127.0.0.1');
    const nsPort = net ? NAMESERVER_PORT : await freePort('127.0.0.1');
    // --ha: etcd and each node's relays to it first (they hold their ports), then every node's candidate port,
    // fixed before any node starts (they are everyone's seeds).
    const etcdUrlsOf = new Map<string, string[]>();
    if (ha) {
      etcd = await EtcdCluster.start({
        dir: join(dir, 'etcd'),
        members: ETCD_MEMBERS,
        startTimeoutMs: START_TIMEOUT_MS,
      });
      for (const id of storageIds) {
        const made = await Promise.all(
          etcd.clientUrls.map((u) => {
            const { hostname, port } = new URL(u);
            return Relay.start({ host: hostname, port: Number(port) });
          }),
        );
        relays.set(
          id,
          made.map((m) => m.relay),
        );
        etcdUrlsOf.set(
          id,
          made.map((m) => m.url),
        );
      }
    }
    const seeds = new Map<string, string>();
    if (ha) for (const id of storageIds) seeds.set(id, `127.0.0.1:${await freePortNotIn(seeds)}`);
    const nameserverAddress = ha ? [...seeds.values()].join(',') : `${hostOf('nameserver')}:${nsPort}`;
    const env = childEnv(token);
    const onExit = (p: ManagedProcess, info: { code: number | null; signal: NodeJS.Signals | null }): void => {
      if (p.exitExpected || closing) return;
      const atMs = clock() - loadStartMs;
      unexpectedExits.push({ node: p.name, atMs, code: info.code, signal: info.signal, logTail: logTail(p.logPath) });
      progress(`chaos: ${p.name} exited on its own (${info.signal ?? `exit code ${info.code}`})`);
    };
    const nameserver = new ManagedProcess(
      'nameserver',
      'nameserver',
      join(dir, 'nameserver'),
      join(dir, 'nameserver.stderr.log'),
      nsPort,
      (port) =>
        nameserverArgs({
          listen: hostOf('nameserver'),
          port,
          dataDir: join(dir, 'nameserver'),
          partitions: o.partitions,
          replicas,
          minWriteReplicas: Math.min(2, replicas),
          initialNodes: o.nodes,
          heartbeatMs: o.heartbeatMs,
          deadAfterMs: o.deadAfterMs,
          logLevel: o.logLevel,
        }),
      env,
      onExit,
      net ? net.wrapper('nameserver') : [],
    );
    if (ha && etcd) {
      for (const id of storageIds) {
        const etcdUrls = etcdUrlsOf.get(id) ?? [];
        const nameserverPort = Number(/:(\d+)$/.exec(seeds.get(id) ?? '')?.[1]);
        procs.push(
          new ManagedProcess(
            id,
            'node',
            join(dir, id),
            join(dir, `${id}.stderr.log`),
            0,
            (port) =>
              nodeArgs({
                etcd: etcdUrls,
                nameserver: nameserverAddress,
                listen: '127.0.0.1',
                port,
                nameserverPort,
                nodeId: id,
                backend: o.backend,
                dataDir: join(dir, id),
                sync: 'batch',
                partitions: o.partitions,
                replicas,
                minWriteReplicas: Math.min(2, replicas),
                initialNodes: o.nodes,
                heartbeatMs: o.heartbeatMs,
                deadAfterMs: o.deadAfterMs,
                leaseTtlMs,
                ...(o.antiEntropyMs === undefined ? {} : { antiEntropyMs: o.antiEntropyMs }),
                logLevel: o.logLevel,
              }),
            env,
            onExit,
            [],
          ),
        );
      }
    } else procs.push(nameserver);
    for (const id of ha ? [] : storageIds) {
      procs.push(
        new ManagedProcess(
          id,
          'storage',
          join(dir, id),
          join(dir, `${id}.stderr.log`),
          net ? STORAGE_PORT : 0,
          (port) =>
            storageArgs({
              nameserver: nameserverAddress,
              listen: hostOf(id),
              port,
              nodeId: id,
              backend: fleet ? fleet.backendOf(id) : o.backend,
              dataDir: join(dir, id),
              sync: 'batch',
              heartbeatMs: o.heartbeatMs,
              ...(o.antiEntropyMs === undefined ? {} : { antiEntropyMs: o.antiEntropyMs }),
              logLevel: o.logLevel,
            }),
          env,
          onExit,
          net ? net.wrapper(id) : [],
        ),
      );
    }
    const byName = new Map(procs.map((p) => [p.name, p]));
    if (useDisk) {
      for (const id of storageIds) disks.set(id, SmallFs.mount(join(dir, id), NODE_FS_BYTES));
      progress(
        `chaos: each storage server's data dir is a ${NODE_FS_BYTES / (1024 * 1024)} MiB tmpfs ` +
          `of its own (disk-full faults)`,
      );
    }
    if (o.backend === 'redis') {
      fleet = RedisFleet.create(dir);
      for (const id of storageIds) await fleet.ensure(id);
    }
    const nodes: Nodes = {
      procs: byName,
      net,
      disks,
      fleet,
      ...(etcd ? { ha: { etcd, relays, etcdRestarted, seeds, pool } } : {}),
    };
    progress(
      ha
        ? `chaos: a 3-member etcd and ${o.nodes} nodes (dstore node: storage server + nameserver candidate, ` +
            `${o.backend}, lease TTL ${leaseTtlMs} ms) in ${dir} on loopback`
        : `chaos: starting a nameserver and ${o.nodes} storage servers (${o.backend}) in ` +
            `${dir}${net ? ` on ${SUBNET}, one network namespace each` : ' on loopback'}`,
    );
    if (ha) await Promise.all(procs.map((p) => p.start(START_TIMEOUT_MS)));
    else {
      await nameserver.start(START_TIMEOUT_MS);
      await Promise.all(procs.slice(1).map((p) => p.start(START_TIMEOUT_MS)));
    }
    signal?.throwIfAborted();

    // ---- the client worker ----
    const keys = keyNames(o.keys);
    const config: WorkerConfig = {
      nameserver: nameserverAddress,
      ...(token === undefined ? {} : { clusterToken: token }),
      clients: o.clients,
      keys,
      seed: o.seed,
      ratePerSec: o.ratePerSec,
      timeoutMs: o.timeoutMs,
      attemptTimeoutMs: o.attemptTimeoutMs,
      storageServers: o.nodes,
      partitions: o.partitions,
      replicas,
      deleteExisted: o.deleteExisted,
      workload: o.workload ?? 'kv',
      formTimeoutMs: START_TIMEOUT_MS,
      originNs: originNs.toString(),
    };
    const inbox = new Inbox();
    const workerLog = join(dir, 'worker.stderr.log');
    const fd = openSync(workerLog, 'a');
    try {
      const cmd = [...(net ? net.wrapper('clients') : []), process.execPath, WORKER_SCRIPT, JSON.stringify(config)];
      // Its own process group, as the nodes: a terminal's Ctrl-C reaches only the runner, which stops it.
      worker = spawn(cmd[0]!, cmd.slice(1), {
        stdio: ['ignore', fd, fd, 'ipc'],
        env: childEnv(undefined),
        detached: true,
      });
    } finally {
      closeSync(fd);
    }
    worker.on('message', (m: FromWorker) => {
      if (m.t === 'ops') ops.push(...m.ops);
      if (m.t === 'audits') auditTotals.push(...m.totals);
      else inbox.put(m);
    });
    const workerExited = new Promise<void>((r) => worker!.once('exit', () => r()));
    workerExited.then(
      () => inbox.put({ t: 'error', message: `the client worker exited: ${logTail(workerLog, 8) || '(no output)'}` }),
      () => undefined,
    );
    const toWorker = (m: ToWorker): void => {
      worker?.send(m);
    };
    await inbox.wait('ready', START_TIMEOUT_MS + 5000, signal);

    // ---- load and nemesis ----
    loadStartMs = clock();
    toWorker({ t: 'start' });
    progress(
      `chaos: load started: ${o.clients} clients on ${o.keys} keys, ${o.ratePerSec} ops/s; ${plan.length} faults ` +
        `planned over ${o.durationS} s`,
    );
    const untilLoad = (ms: number): Promise<void> => sleepUntil(() => clock() - loadStartMs, ms, signal);
    for (const f of plan) {
      await untilLoad(f.atMs);
      const startMs = clock() - loadStartMs;
      const applied: { target?: string } = {};
      let note = await inject(f, nodes, applied);
      progress(
        `chaos: ${(startMs / 1000).toFixed(1)} s  ${describeFault({ ...f, ...applied })}${note ? `  [${note}]` : ''}`,
      );
      // Its full length from when it began: a fault that starts late (the one before it healed
      // slowly on a loaded machine) still lasts as planned (past the lease TTL, for the leader's).
      await untilLoad(Math.max(f.atMs, startMs) + f.durationMs);
      const healNote = await heal(f, nodes, applied);
      if (healNote) note = note ? `${note}; ${healNote}` : healNote;
      const target = f.target ?? applied.target;
      faults.push({
        kind: f.kind,
        ...(target ? { target } : {}),
        ...(f.sides ? { sides: f.sides } : {}),
        startMs,
        endMs: clock() - loadStartMs,
        ...(note ? { note } : {}),
      });
    }
    await untilLoad(durationMs);

    // ---- heal everything, settle, final reads ----
    const leftovers = await healEverything(procs, nodes);
    if (leftovers.length > 0) progress(`chaos: healing: ${leftovers.join('; ')}`);
    progress(
      `chaos: load stopping; waiting for the cluster to settle (at most ` +
        `${Math.round(o.settleTimeoutMs / 1000)} s), then reading every key`,
    );
    toWorker({ t: 'stop', settleTimeoutMs: o.settleTimeoutMs });
    const stopped = (await inbox.wait('loadStopped', o.timeoutMs + 30_000, signal)) as Extract<
      FromWorker,
      { t: 'loadStopped' }
    >;
    loadStoppedMs = stopped.atMs - loadStartMs;
    const settled = (await inbox.wait('settled', o.settleTimeoutMs + o.timeoutMs + 30_000, signal)) as Extract<
      FromWorker,
      { t: 'settled' }
    >;
    settle = settled.ok
      ? { ok: true, ms: settled.atMs - stopped.atMs }
      : { ok: false, problem: settled.problem ?? 'unknown' };
    const done = (await inbox.wait('done', o.timeoutMs + 30_000, signal)) as Extract<FromWorker, { t: 'done' }>;
    if (!(await Promise.race([workerExited.then(() => true), delay(5000, false)]))) worker.kill('SIGKILL');
    if ((o.antiEntropyMs ?? 0) > 0)
      antiEntropy = done.antiEntropy ?? { checks: 0, divergences: 0, incomplete: 0, unread: ['(the nameserver)'] };
  } catch (err) {
    if (signal?.aborted || !(err instanceof Error)) throw err;
    throw new Error(`${err.message}\n(node data and logs kept in ${dir})`, { cause: err });
  } finally {
    closing = true;
    process.off('exit', exitGuard);
    worker?.kill('SIGKILL');
    await Promise.all(
      procs.map((p) => p.stop(STOP_TIMEOUT_MS).catch((err: unknown) => progress(`chaos: ${(err as Error).message}`))),
    );
    try {
      net?.destroy();
    } catch (err) {
      progress(`chaos: ${(err as Error).message}`);
    }
    pool.close();
    for (const list of relays.values()) for (const r of list) await r.close();
    for (const child of etcdRestarted.values()) await killChild(child);
    await etcd?.stop(STOP_TIMEOUT_MS).catch((err: unknown) => progress(`chaos: ${(err as Error).message}`));
    await fleet?.close().catch((err: unknown) => progress(`chaos: ${(err as Error).message}`));
    unmountAll();
    if (signal?.aborted && !o.dataDir && !o.keep) rmSync(dir, { recursive: true, force: true });
  }

  // ---- check and report ----
  if (o.historyPath)
    writeFileSync(
      o.historyPath,
      ops.map((op) => formatHistoryLine(op as HistoryOp)).join('\n') + (ops.length ? '\n' : ''),
    );
  progress(`chaos: checking ${ops.length} operations for linearizability`);
  const checkStarted = performance.now();
  const check = checkHistory(ops, { timeBudgetMs: o.checkBudgetMs });
  const checkMs = performance.now() - checkStarted;
  const finals = ops.filter((op) => String(op.client).startsWith('final-'));
  const finalReads = { ok: finals.filter((op) => op.status === 'ok').length, total: o.keys };
  const windows = unavailability(ops, faults, {
    fromMs: 0,
    toMs: Number.isNaN(loadStoppedMs) ? durationMs : Math.min(durationMs, loadStoppedMs),
    opOffsetMs: loadStartMs,
    partitions: o.partitions,
    minGapMs: MIN_GAP_MS,
  });
  const counters: CounterResult[] | undefined = o.workload === 'cas' ? checkCounters(ops, keyNames(o.keys)) : undefined;
  const bank = o.workload === 'bank' ? checkBank(ops, keyNames(o.keys), auditTotals) : undefined;
  const verdict: ChaosVerdict =
    check.verdict === 'violation' ||
    (antiEntropy?.divergences ?? 0) > 0 ||
    (counters ?? []).some((c) => c.problem !== undefined) ||
    bank?.problem !== undefined
      ? 'violation'
      : check.verdict === 'unknown'
        ? 'inconclusive'
        : !settle.ok || finalReads.ok < finalReads.total || unexpectedExits.length > 0
          ? 'liveness'
          : 'ok';
  const keep = o.dataDir !== undefined || o.keep || verdict !== 'ok';
  if (!keep) rmSync(dir, { recursive: true, force: true });
  const header =
    `dstore chaos: seed ${o.seed}, ${o.durationS} s, ` +
    (ha
      ? `${o.nodes} nodes (dstore node) and a ${ETCD_MEMBERS}-member etcd, lease TTL ${leaseTtlMs} ms`
      : `${o.nodes} storage servers`) +
    ` (${o.backend}), ${o.partitions} ` +
    `partitions, R=${replicas}, ` +
    `${o.clients} clients on ${o.keys} keys at ${o.ratePerSec} ops/s, heartbeat ${o.heartbeatMs} ms, dead after ` +
    `${o.deadAfterMs} ms, faults: ${kinds.join(',') || 'none'}`;
  const report = formatReport({
    header,
    networkNote:
      (ha
        ? 'network: loopback; each node reaches etcd through relays of its own (isolate-leader)' +
          (haSkipped ? `\n${haSkipped}` : '')
        : useNetwork
          ? `network: one namespace per node and one for the clients, on ${SUBNET}`
          : `network: loopback${networkSkipped ? ` (partitions skipped: ${networkSkipped})` : ''}`) +
      (useDisk
        ? `\ndisks: a ${NODE_FS_BYTES / (1024 * 1024)} MiB tmpfs per storage server`
        : diskSkipped
          ? `\ndisks: disk-full faults skipped: ${diskSkipped}`
          : ''),
    faults,
    ops,
    windows,
    settle,
    finalReads,
    unexpectedExits,
    ...(antiEntropy ? { antiEntropy } : {}),
    ...(counters ? { counters: formatCounters(counters) } : {}),
    ...(bank ? { counters: formatBank(bank) } : {}),
    check,
    checkMs,
    verdict,
    ...(o.historyPath ? { historyPath: o.historyPath } : {}),
    ...(keep ? { keptDir: dir } : {}),
  });
  return {
    seed: o.seed,
    verdict,
    exitCode: CHAOS_EXIT[verdict],
    plan,
    faults,
    loadStartMs,
    ops,
    windows,
    check,
    settle,
    unexpectedExits,
    ...(antiEntropy ? { antiEntropy } : {}),
    report,
    ...(networkSkipped ? { networkSkipped } : {}),
    ...(diskSkipped ? { diskSkipped } : {}),
    ...(haSkipped ? { haSkipped } : {}),
  };
}

// ---- faults ----

/** What the nemesis acts on. */
interface Nodes {
  readonly procs: Map<string, ManagedProcess>;
  readonly net: ChaosNetwork | undefined;
  /** Storage server → its small filesystem (disk-full faults only). */
  readonly disks: Map<string, SmallFs>;
  readonly fleet: RedisFleet | undefined;
  /** `--ha` only. */
  readonly ha?: HaParts;
}

/** What `--ha` adds: etcd, each node's relays to it, members started again, the candidates' addresses. */
interface HaParts {
  readonly etcd: EtcdCluster;
  /** Node → its relays (one per etcd member). */
  readonly relays: Map<string, Relay[]>;
  /** etcd member → its process since kill-etcd started it again (EtcdCluster knows only the first). */
  readonly etcdRestarted: Map<string, ChildProcess>;
  /** Node → its candidate's address. */
  readonly seeds: Map<string, string>;
  readonly pool: RpcPool;
}

/**
 * The node whose candidate says it leads itself, asked of every running node (bounded); undefined when none
 * did within FIND_LEADER_MS (e.g. an election still under way).
 */
async function findLeader(ha: HaParts, procs: Map<string, ManagedProcess>): Promise<string | undefined> {
  const deadline = Date.now() + FIND_LEADER_MS;
  while (Date.now() < deadline) {
    const names = [...ha.seeds.keys()].filter((n) => procs.get(n)?.state === 'running');
    const replies = await Promise.all(
      names.map((n) =>
        ha.pool
          .get(ha.seeds.get(n) ?? '', 'nameserver')
          .call({ t: 'leader' }, { timeoutMs: 1000 })
          .then(
            (r) => r as LeaderReply,
            () => undefined,
          ),
      ),
    );
    const leader = names.find((n, i) => replies[i]?.leader?.nodeId === n && replies[i]?.self === n);
    if (leader) return leader;
    await delay(100);
  }
  return undefined;
}

function etcdChild(ha: HaParts, m: EtcdMember): ChildProcess {
  return ha.etcdRestarted.get(m.name) ?? m.child;
}

function childRunning(c: ChildProcess): boolean {
  return c.exitCode === null && c.signalCode === null;
}

/** SIGKILLs a child and waits for it to be gone. */
async function killChild(c: ChildProcess): Promise<void> {
  if (!childRunning(c)) return;
  const gone = new Promise((r) => c.once('exit', r));
  c.kill('SIGKILL');
  await gone;
}

/** Starts a killed etcd member again with its command line and data dir (it rejoins with its data). */
function restartEtcd(ha: HaParts, m: EtcdMember): void {
  const [command, ...args] = m.child.spawnargs;
  const log = openSync(join(m.dir, 'etcd.log'), 'a');
  try {
    const child = spawn(command ?? 'etcd', args, { stdio: ['ignore', log, log], detached: true });
    child.on('error', () => undefined);
    ha.etcdRestarted.set(m.name, child);
  } finally {
    closeSync(log);
  }
}

async function inject(
  f: PlannedFault,
  { procs, net, disks, ha }: Nodes,
  applied: { target?: string },
): Promise<string | undefined> {
  const p = f.target ? procs.get(f.target) : undefined;
  switch (f.kind) {
    case 'kill-leader':
    case 'pause-leader':
    case 'isolate-leader': {
      if (!ha) return 'not an --ha cluster';
      const leader = await findLeader(ha, procs);
      if (!leader) return `no node said it leads within ${FIND_LEADER_MS / 1000} s`;
      applied.target = leader;
      const lp = procs.get(leader)!;
      if (f.kind === 'isolate-leader') {
        for (const r of ha.relays.get(leader) ?? []) r.cut = true;
        return undefined;
      }
      if (f.kind === 'pause-leader') {
        lp.signal('SIGSTOP');
        return undefined;
      }
      lp.signal('SIGKILL');
      if (!(await lp.waitExit(STOP_TIMEOUT_MS))) return `${leader} did not exit after SIGKILL`;
      return undefined;
    }
    case 'kill-etcd': {
      const m = ha?.etcd.members.find((x) => x.name === f.target);
      if (!ha || !m) return 'no such etcd member';
      const down = ha.etcd.members.filter((x) => !childRunning(etcdChild(ha, x)));
      if (down.length > 0) return `${down.map((x) => x.name).join(',')} still down: not killing a second member`;
      await killChild(etcdChild(ha, m));
      return undefined;
    }
    case 'kill':
      if (!p?.running) return `${f.target} was not running`;
      p.signal('SIGKILL');
      if (!(await p.waitExit(STOP_TIMEOUT_MS))) return `${f.target} did not exit after SIGKILL`;
      return undefined;
    case 'stop':
      if (!p?.running) return `${f.target} was not running`;
      await p.stop(STOP_TIMEOUT_MS);
      return undefined;
    case 'pause':
      if (!p?.running) return `${f.target} was not running`;
      p.signal('SIGSTOP');
      return undefined;
    case 'restart-nameserver':
      if (!p?.running) return 'the nameserver was not running';
      await p.stop(STOP_TIMEOUT_MS);
      return undefined;
    case 'isolate':
      if (!net) return 'no network namespaces';
      for (const other of ['nameserver', ...procs.keys(), 'clients']) if (other !== f.target) net.cut(f.target!, other);
      return undefined;
    case 'split':
      if (!net) return 'no network namespaces';
      for (const a of f.sides![0]) for (const b of f.sides![1]) net.cut(a, b);
      return undefined;
    case 'disk-full': {
      const disk = disks.get(f.target!);
      if (!disk) return 'no small filesystem';
      return `${(disk.fill() / (1024 * 1024)).toFixed(1)} MiB filler`;
    }
    default:
      return assertNever(f.kind);
  }
}

async function heal(
  f: PlannedFault,
  { procs, net, disks, fleet, ha }: Nodes,
  applied: { target?: string },
): Promise<string | undefined> {
  const target = f.target ?? applied.target;
  const p = target ? procs.get(target) : undefined;
  switch (f.kind) {
    case 'isolate-leader':
      for (const r of (target ? ha?.relays.get(target) : undefined) ?? []) r.heal();
      return undefined;
    case 'kill-etcd': {
      const m = ha?.etcd.members.find((x) => x.name === f.target);
      if (!ha || !m || childRunning(etcdChild(ha, m))) return undefined;
      restartEtcd(ha, m);
      return undefined;
    }
    case 'kill':
    case 'stop':
    case 'kill-leader':
    case 'restart-nameserver':
      if (!p || p.running) return undefined;
      try {
        await p.start(START_TIMEOUT_MS);
        return undefined;
      } catch (err) {
        return `restart failed: ${(err as Error).message.split('\n')[0]}`;
      }
    case 'pause':
    case 'pause-leader':
      if (p?.state === 'paused') p.signal('SIGCONT');
      return undefined;
    case 'isolate':
    case 'split':
      net?.healAll();
      return undefined;
    case 'disk-full':
      disks.get(f.target!)?.free();
      return ensureRedis(fleet, f.target!);
    default:
      return assertNever(f.kind);
  }
}

/** Starts storage server `id`'s Redis again if it exited (a full disk); a note when that failed. */
async function ensureRedis(fleet: RedisFleet | undefined, id: string): Promise<string | undefined> {
  try {
    await fleet?.ensure(id);
    return undefined;
  } catch (err) {
    return `its Redis could not be started again: ${(err as Error).message.split('\n')[0]}`;
  }
}

/** SIGCONT what is paused, start what is down, restore every link; returns what it had to do. */
async function healEverything(procs: readonly ManagedProcess[], { net, disks, fleet, ha }: Nodes): Promise<string[]> {
  const done: string[] = [];
  if (ha) {
    for (const [id, list] of ha.relays)
      if (list.some((r) => r.cut)) {
        for (const r of list) r.heal();
        done.push(`${id}'s links to etcd restored`);
      }
    for (const m of ha.etcd.members)
      if (!childRunning(etcdChild(ha, m))) {
        restartEtcd(ha, m);
        done.push(`etcd member ${m.name} started again`);
      }
  }
  for (const [id, disk] of disks) {
    disk.free();
    const note = await ensureRedis(fleet, id);
    if (note) done.push(`${id}: ${note}`);
  }
  if (net && net.cutLinks > 0) {
    done.push(`${net.cutLinks} links restored`);
    net.healAll();
  }
  for (const p of procs) {
    if (p.state === 'paused') {
      p.signal('SIGCONT');
      done.push(`${p.name} resumed`);
    } else if (!p.running) {
      try {
        await p.start(START_TIMEOUT_MS);
        done.push(`${p.name} started again`);
      } catch (err) {
        done.push(`${p.name} could not be started again: ${(err as Error).message.split('\n')[0]}`);
      }
    }
  }
  return done;
}

// ---- helpers ----

/** A free loopback port that none of `taken`'s addresses uses. */
async function freePortNotIn(taken: Map<string, string>): Promise<number> {
  const used = new Set([...taken.values()].map((a) => Number(a.split(':')[1])));
  for (let i = 0; i < 100; i++) {
    const port = await freePort('127.0.0.1');
    if (!used.has(port)) return port;
  }
  throw new Error('no free loopback port');
}

/** Children get no inherited DSTORE_* (flags are explicit); the token goes by environment. */
function childEnv(token: string | undefined): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = {};
  for (const [k, v] of Object.entries(process.env)) if (!k.startsWith('DSTORE_')) env[k] = v;
  if (token !== undefined) env.DSTORE_CLUSTER_TOKEN = token;
  return env;
}

/** Waits until `now()` reaches `ms` (a point on the schedule); rejects on abort. */
async function sleepUntil(now: () => number, ms: number, signal: AbortSignal | undefined): Promise<void> {
  const wait = ms - now();
  if (wait > 0) await delay(wait, undefined, signal ? { signal } : {});
  signal?.throwIfAborted();
}

/** Messages from the worker, awaited by type; an `error` message fails every wait. */
class Inbox {
  private readonly messages: FromWorker[] = [];
  private waiter: (() => void) | undefined;

  put(m: FromWorker): void {
    this.messages.push(m);
    this.waiter?.();
  }

  async wait(t: FromWorker['t'], timeoutMs: number, signal: AbortSignal | undefined): Promise<FromWorker> {
    const deadline = Date.now() + timeoutMs;
    for (let i = 0; i < 1_000_000; i++) {
      const idx = this.messages.findIndex((m) => m.t === t || m.t === 'error');
      if (idx >= 0) {
        const m = this.messages.splice(idx, 1)[0]!;
        if (m.t === 'error') throw new Error(`client worker: ${m.message}`);
        return m;
      }
      const left = deadline - Date.now();
      if (left <= 0) break;
      const ac = new AbortController();
      const onAbort = (): void => ac.abort();
      signal?.addEventListener('abort', onAbort, { once: true });
      try {
        await Promise.race([
          new Promise<void>((r) => (this.waiter = r)),
          delay(left, undefined, { signal: ac.signal }).catch(() => undefined),
        ]);
      } finally {
        this.waiter = undefined;
        ac.abort();
        signal?.removeEventListener('abort', onAbort);
      }
      signal?.throwIfAborted();
    }
    throw new Error(`the client worker sent no "${t}" within ${Math.round(timeoutMs / 1000)} s`);
  }
}

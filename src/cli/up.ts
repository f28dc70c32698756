/**
 * `dstore up`: a local cluster of child processes (see cluster.ts) with the shell on top,
 * plus the shell's node-control commands: kill (SIGKILL), stop (SIGTERM), pause/resume
 * (SIGSTOP/SIGCONT), restart, spawn, procs. With --no-shell it runs until SIGINT/SIGTERM.
 * Every exit path — quit, Ctrl-D, a signal, a failed start, and, when npm started it, the
 * parent going away — stops every child. It holds the lock of its data dir meanwhile.
 * With --ha (issue 12) the children are a local 3-member etcd and N identical `dstore node`
 * processes (ha-cluster.ts) instead of a nameserver and storage servers; the same commands work
 * on the nodes (not `spawn`), `procs` also lists the etcd members, and every exit path stops etcd too.
 */
import { existsSync, readdirSync, statSync } from 'node:fs';
import { join, resolve } from 'node:path';
import type { ClusterInfo, Db } from '../client/api.js';
import { DataDirError, type DataDirLock, openDataDir, waitUntilUnlocked } from '../process/data-dir.js';
import { LOG_ROTATE_BYTES, LOG_ROTATE_KEEP } from '../process/log.js';
import { startedByNpm, watchParent } from '../process/parent-watch.js';
import { ETCD_INSTALL_HINT, findEtcd } from '../process/etcd-server.js';
import { ClusterStartError, formatAddress, LocalCluster } from './cluster.js';
import { runNodeAction, STOP_TIMEOUT_MS, type UpCluster } from './node-actions.js';
import {
  isUpActionRequest,
  type NodeAction,
  type NodeActionResult,
  type UpActionReply,
} from '../nameserver/up-control.js';
import { assertNever } from '../core/types.js';
import { HA_ETCD_MEMBERS, HaCluster, haNodeIds } from './ha-cluster.js';
import { openDb } from './commands.js';
import { colourWanted, leaderLine, makeStyle, table, type Style } from './format.js';
import {
  HTTP_PORT_OFFSET,
  type HttpPortOption,
  MAX_UP_NODES,
  STORAGE_PORT_OFFSET,
  type SyncMode,
  type UpBackendName,
  UsageError,
} from './options.js';
import { RedisFleet } from '../process/redis-fleet.js';
import { Shell, type ShellCommand, type ShellContext } from './shell.js';
import type { Token } from './tokenize.js';

export interface UpOptions {
  readonly nodes: number;
  readonly partitions: number;
  readonly replicas: number;
  readonly minWriteReplicas: number;
  readonly backend: UpBackendName;
  readonly dataDir: string;
  readonly host: string;
  readonly port: number;
  /** Port of s1; undefined: --port + 101 (0 when --port is 0); 0: chosen by the OS. */
  readonly storagePort?: number;
  /** Issue 15: the nameserver's HTTP port (the dashboard); undefined: --port + 80 (0 with --port 0). */
  readonly httpPort?: HttpPortOption;
  readonly sync: SyncMode;
  readonly heartbeatMs: number;
  readonly deadAfterMs: number;
  readonly rereplicateAfterMs: number;
  readonly logRetainEntries: number;
  /** S16: the storage servers' `--anti-entropy-ms` and `--repair`. */
  readonly antiEntropyMs?: number;
  readonly repair?: 'on' | 'off';
  readonly maxValueBytes: number;
  readonly startTimeoutMs: number;
  readonly shell: boolean;
  readonly logLevel: string;
  readonly clusterToken?: string;
  /**
   * Issue 12: a local 3-member etcd and `nodes` identical `dstore node` processes (n1, n2, …)
   * instead of a nameserver and storage servers; needs the `etcd` binary.
   */
  readonly ha?: boolean;
  /** The etcd lease TTL of the nodes' candidates (with `ha`; default 3000). */
  readonly leaseTtlMs?: number;
  /** Which settings fixed at creation the user gave (not defaults), to say when they are ignored. */
  readonly given?: { readonly partitions?: boolean; readonly replicas?: boolean; readonly minWriteReplicas?: boolean };
}

const GROUP = 'Local cluster (dstore up)';
/** Bound on waiting for a node of an earlier, killed `up` to release its data dir, in ms. */
const CHILD_LOCK_WAIT_MS = 10_000;

/** Storage ids to start: s1..sN, plus sK (K > N) found in the data dir from an earlier `spawn`. */
export function storageIdsFor(dataDir: string, nodes: number): string[] {
  const ids = Array.from({ length: nodes }, (_, i) => `s${i + 1}`);
  if (!existsSync(dataDir)) return ids;
  const extra = readdirSync(dataDir)
    .map((name) => /^s(\d+)$/.exec(name))
    .filter(
      (m): m is RegExpExecArray => m !== null && Number(m[1]) > nodes && statSync(join(dataDir, m[0])).isDirectory(),
    )
    .map((m) => Number(m[1]))
    .sort((a, b) => a - b)
    .slice(0, MAX_UP_NODES - nodes)
    .map((n) => `s${n}`);
  return [...ids, ...extra];
}

export async function runUp(o: UpOptions): Promise<void> {
  if (o.nodes < o.replicas) {
    throw new UsageError(
      `--nodes (${o.nodes}) must be at least --replicas (${o.replicas}): the cluster map needs R storage servers to ` +
        `form; pass --replicas ${o.nodes}`,
    );
  }
  if (o.minWriteReplicas > o.replicas)
    throw new UsageError(`--min-write-replicas (${o.minWriteReplicas}) cannot exceed --replicas (${o.replicas})`);
  if (o.ha) {
    if (findEtcd() === undefined)
      throw new UsageError(`up --ha runs a local etcd, and etcd is not installed: ${ETCD_INSTALL_HINT}`);
    if (o.backend === 'redis') throw new UsageError('up --ha runs its nodes with --backend lmdb or memory, not redis');
  }
  // One owner per data dir (issue 9): a second `up` on it refuses to start; each child also
  // locks its own sub-dir, so a stray `dstore storage --data-dir <dir>/s3` is refused too.
  let lock: DataDirLock;
  try {
    lock = await openDataDir(o.dataDir, 'dstore up');
  } catch (err) {
    if (err instanceof DataDirError) throw new UsageError(err.message);
    throw err;
  }
  try {
    await runLocked(o);
  } finally {
    await lock.release();
  }
}

/** `up`'s HTTP port (issue 15): --http-port, else --port + 80 (0 with --port 0); undefined: off. */
export function upHttpPort(o: Pick<UpOptions, 'port' | 'httpPort'>): number | undefined {
  const p = o.httpPort ?? (o.port === 0 ? 0 : o.port + HTTP_PORT_OFFSET);
  if (p === 'off') return undefined;
  if (p > 65535) throw new UsageError(`--port ${o.port} leaves no default --http-port (--port + 80); give --http-port`);
  return p;
}

async function prepareClassic(o: UpOptions, dataDir: string): Promise<Prepared> {
  const storageIds = storageIdsFor(dataDir, o.nodes);
  const httpPort = upHttpPort(o);
  const storagePort = o.storagePort ?? (o.port === 0 ? 0 : o.port + STORAGE_PORT_OFFSET);
  const lastIndex = Math.max(...storageIds.map((id) => Number(id.slice(1))));
  if (storagePort !== 0 && storagePort + lastIndex - 1 > 65535) {
    throw new UsageError(
      `storage ports ${storagePort}..${storagePort + lastIndex - 1} go past 65535; choose a ` +
        `lower --port or --storage-port`,
    );
  }
  // --backend redis: one redis-server per storage server; refused before anything starts when missing.
  const fleet = o.backend === 'redis' ? RedisFleet.create(dataDir) : undefined;
  const extra = storageIds.slice(o.nodes);
  const err = process.stderr;
  // A child of an earlier `up` that was SIGKILLed may still be closing (it stops once its
  // parent is gone): wait for it, bounded, rather than fail on its lock.
  for (const dir of [join(dataDir, 'nameserver'), ...storageIds.map((id) => join(dataDir, id))]) {
    if (!existsSync(dir)) continue;
    await waitUntilUnlocked(dir, CHILD_LOCK_WAIT_MS, (e) =>
      err.write(
        `${e.message.replace(/; stop it first.*$/, '')}; waiting up to ` +
          `${CHILD_LOCK_WAIT_MS / 1000} s for it to exit …\n`,
      ),
    ).catch((e: unknown) => {
      throw e instanceof DataDirError ? new UsageError(e.message) : e;
    });
  }
  err.write(
    `starting a nameserver and ${storageIds.length} storage servers (${o.backend}) in ${dataDir}` +
      (extra.length ? ` (also ${extra.join(', ')}, found in the data dir)` : '') +
      ' …\n',
  );

  const cluster = LocalCluster.create({
    dataDir,
    host: o.host,
    port: o.port,
    storagePort,
    ...(httpPort === undefined ? {} : { httpPort }),
    storageIds,
    partitions: o.partitions,
    replicas: o.replicas,
    minWriteReplicas: o.minWriteReplicas,
    backend: o.backend,
    ...(fleet
      ? { storageBackend: (id: string) => fleet.backendOf(id), beforeStorageStart: (id: string) => fleet.ensure(id) }
      : {}),
    sync: o.sync,
    heartbeatMs: o.heartbeatMs,
    deadAfterMs: o.deadAfterMs,
    rereplicateAfterMs: o.rereplicateAfterMs,
    logRetainEntries: o.logRetainEntries,
    ...(o.antiEntropyMs === undefined ? {} : { antiEntropyMs: o.antiEntropyMs }),
    ...(o.repair === undefined ? {} : { repair: o.repair }),
    maxValueBytes: o.maxValueBytes,
    logLevel: o.logLevel,
    startTimeoutMs: o.startTimeoutMs,
    stopTimeoutMs: STOP_TIMEOUT_MS,
    ...(o.clusterToken === undefined ? {} : { clusterToken: o.clusterToken }),
    upControl: true,
  });

  // Every dstore process first, then their redis-servers.
  const closeAll = async (): Promise<void> => {
    try {
      await cluster.close();
    } finally {
      await fleet?.close();
    }
  };
  return { cluster, closeAll };
}

async function prepareHa(o: UpOptions, dataDir: string): Promise<Prepared> {
  const storagePort = o.storagePort ?? (o.port === 0 ? 0 : o.port + STORAGE_PORT_OFFSET);
  for (const [flag, first] of [
    ['--port', o.port],
    ['--storage-port', storagePort],
  ] as const) {
    if (first !== 0 && first + o.nodes - 1 > 65535)
      throw new UsageError(`${flag} ${first}: the ports of ${o.nodes} nodes go past 65535; choose a lower one`);
  }
  HaCluster.checkFresh(dataDir, o.nodes);
  const httpPort = upHttpPort(o);
  const ids = haNodeIds(o.nodes);
  process.stderr.write(
    `starting a ${HA_ETCD_MEMBERS}-member etcd and ${o.nodes} identical nodes (${ids.join(', ')}; ${o.backend}) ` +
      `in ${dataDir} …\n`,
  );
  const cluster = HaCluster.create({
    dataDir,
    host: o.host,
    nameserverPort: o.port,
    storagePort,
    ...(httpPort === undefined ? {} : { httpPort }),
    nodes: o.nodes,
    partitions: o.partitions,
    replicas: o.replicas,
    minWriteReplicas: o.minWriteReplicas,
    backend: o.backend === 'memory' ? 'memory' : 'lmdb',
    sync: o.sync,
    heartbeatMs: o.heartbeatMs,
    deadAfterMs: o.deadAfterMs,
    rereplicateAfterMs: o.rereplicateAfterMs,
    logRetainEntries: o.logRetainEntries,
    ...(o.antiEntropyMs === undefined ? {} : { antiEntropyMs: o.antiEntropyMs }),
    ...(o.repair === undefined ? {} : { repair: o.repair }),
    maxValueBytes: o.maxValueBytes,
    leaseTtlMs: o.leaseTtlMs ?? 3000,
    logLevel: o.logLevel,
    startTimeoutMs: o.startTimeoutMs,
    stopTimeoutMs: STOP_TIMEOUT_MS,
    ...(o.clusterToken === undefined ? {} : { clusterToken: o.clusterToken }),
  });
  return { cluster, closeAll: () => cluster.close() };
}

interface Prepared {
  readonly cluster: UpCluster;
  /** Every child, then what they depend on (redis-servers, etcd). */
  closeAll(): Promise<void>;
}

async function runLocked(o: UpOptions): Promise<void> {
  const dataDir = resolve(o.dataDir);
  const err = process.stderr;
  const { cluster, closeAll } = o.ha ? await prepareHa(o, dataDir) : await prepareClassic(o, dataDir);
  // A signal at any point (during the start too) stops every child, then exits.
  let shell: Shell | undefined;
  const onSignal = (signal: string): void => {
    err.write(`\n${signal}: stopping the cluster …\n`);
    closeAll().then(
      () => {
        err.write('stopped\n');
        // A requested stop that went cleanly is a success.
        process.exit(0);
      },
      (e: unknown) => {
        err.write(`error while stopping: ${e instanceof Error ? e.message : String(e)}\n`);
        process.exit(1);
      },
    );
  };
  const signals: NodeJS.Signals[] = ['SIGINT', 'SIGTERM', 'SIGHUP'];
  for (const s of signals) process.on(s, onSignal);
  // npm forwards SIGTERM only to the shell it runs us in, which dies without passing it on
  // (parent-watch.ts): under npm, the parent going away stops the cluster as SIGTERM would.
  const unwatch = startedByNpm() ? watchParent((ppid) => onSignal(`parent process ${ppid} exited`)) : undefined;

  try {
    const connect = (ns: string): Promise<Db> =>
      openDb({
        nameserver: ns,
        timeoutMs: 2000,
        ...(o.clusterToken === undefined ? {} : { clusterToken: o.clusterToken }),
      });
    const info = await cluster.start(connect);
    const isTTY = Boolean(process.stdin.isTTY && process.stdout.isTTY);
    const style = makeStyle(colourWanted(Boolean(process.stdout.isTTY)));
    // The cluster's settings, not the flags: an existing cluster keeps those it was created with.
    const ignored = ignoredSettings(o, info);
    if (ignored) err.write(`${style.yellow(ignored)}\n`);
    process.stdout.write(`${banner(cluster, o, info, style, dataDir)}\n`);
    if (cluster instanceof LocalCluster)
      answerDashboard(cluster, dataDir, (text) => (shell ? shell.print(text) : process.stdout.write(`${text}\n`)));
    cluster.onUnexpectedExit = (p, info) => {
      const how = info.signal ? `signal ${info.signal}` : `exit code ${info.code}`;
      const text = style.red(
        `[${p.name} exited unexpectedly (${how}); see ${p.logPath}; restart ${p.name} to start it again]`,
      );
      if (shell) shell.print(text);
      else err.write(`${text}\n`);
    };
    if (!o.shell) {
      process.stdout.write(
        `running until SIGINT (Ctrl-C) or SIGTERM; connect with: npx dstore client --nameserver ` +
          `${cluster.nameserverAddress}\n`,
      );
      // The signal handlers end the process; the interval keeps it alive even if every child died.
      await new Promise<never>(() => setInterval(() => undefined, 1 << 30));
    }
    const db = await openDb({
      nameserver: cluster.nameserverAddress,
      timeoutMs: 10_000,
      ...(o.clusterToken === undefined ? {} : { clusterToken: o.clusterToken }),
    });
    try {
      shell = new Shell({
        db,
        input: process.stdin,
        output: process.stdout,
        isTTY,
        extraCommands: nodeCommands(cluster, dataDir),
        processStates: () => new Map(cluster.processes.map((p) => [p.name, p.describe()])),
        greeting: style.dim('type help for commands; quit, Ctrl-D or Ctrl-C at an empty prompt stops the cluster'),
      });
      await shell.run();
    } finally {
      shell = undefined;
      await db.close();
    }
    err.write('stopping the cluster …\n');
    await closeAll();
    err.write('stopped\n');
  } catch (e) {
    await closeAll();
    if (e instanceof ClusterStartError && e.logTail) {
      throw new ClusterStartError(`${e.message}\nlast lines of ${e.logPath}:\n${e.logTail}`, e.node, e.logPath, '');
    }
    throw e;
  } finally {
    for (const s of signals) process.off(s, onSignal);
    unwatch?.();
  }
}

/**
 * The settings fixed at creation that the user gave (flag, environment or file) and the
 * existing cluster does not have, as one line naming what it has instead; undefined when none.
 */
export function ignoredSettings(
  o: Pick<UpOptions, 'partitions' | 'replicas' | 'minWriteReplicas' | 'given'>,
  info: Pick<ClusterInfo, 'partitions' | 'replicas' | 'minWriteReplicas'>,
): string | undefined {
  const given = o.given ?? {};
  const diffs: string[] = [];
  if (given.partitions && o.partitions !== info.partitions)
    diffs.push(`--partitions ${o.partitions} (it has ${info.partitions})`);
  if (given.replicas && o.replicas !== info.replicas)
    diffs.push(`--replicas ${o.replicas} (it has R=${info.replicas})`);
  if (given.minWriteReplicas && o.minWriteReplicas !== info.minWriteReplicas)
    diffs.push(`--min-write-replicas ${o.minWriteReplicas} (it has ${info.minWriteReplicas})`);
  if (diffs.length === 0) return undefined;
  return (
    `warning: ignored ${diffs.join(', ')}: these are fixed when a cluster is created, and the cluster in this ` +
    `data dir already exists; use a new --data-dir for other settings`
  );
}

function banner(cluster: UpCluster, o: UpOptions, info: ClusterInfo, style: Style, dataDir: string): string {
  const rows: string[][] = [];
  if (cluster instanceof LocalCluster) {
    rows.push(['  nameserver', cluster.nameserverAddress, `pid ${cluster.nameserver.pid}`]);
    for (const p of cluster.storage.values()) rows.push([`  ${p.name}`, formatAddress(o.host, p.port), `pid ${p.pid}`]);
  } else {
    const leader = info.leader?.nodeId;
    for (const p of cluster.processes)
      rows.push([
        `  ${p.name}`,
        `storage ${formatAddress(o.host, p.port)}, nameserver ${cluster.nameserverOf(p.name)}`,
        `pid ${p.pid}`,
        ...(p.name === leader ? [style.bold('leader')] : []),
      ]);
    for (const m of cluster.etcd?.members ?? []) rows.push([`  etcd ${m.name}`, m.clientUrl, `pid ${m.child.pid}`]);
  }
  const ha =
    cluster instanceof HaCluster
      ? [
          `  leader      ${leaderLine(info, Date.now())?.replace(/^leader /, '') ?? 'none yet'}`,
          `  etcd data   ${join(dataDir, 'etcd')} (a new etcd each time: it does not outlive up --ha)`,
        ]
      : [];
  const logDir = join(dataDir, '<node>', ...(cluster instanceof HaCluster ? ['{storage,nameserver}'] : []));
  return [
    style.bold(
      `dstore up: local cluster ready (${info.partitions} partitions, R=${info.replicas}, min write replicas ` +
        `${info.minWriteReplicas}, backend ${o.backend}, sync ${o.sync})`,
    ),
    table(rows),
    ...ha,
    `  data dir    ${dataDir}`,
    `  logs        ${join(logDir, 'node.log')} (rotated at ${LOG_ROTATE_BYTES / 1024 / 1024} MiB, ` +
      `${LOG_ROTATE_KEEP} kept); crash output in ${join(dataDir, '<node>.stderr.log')}`,
    `  connect     npx dstore client --nameserver ${cluster.nameserverAddress}`,
    ...dashboardLines(cluster, o, info),
  ].join('\n');
}

/** Issue 15: where the dashboard is (the leader's HTTP port in HA), and each node's /metrics. */
function dashboardLines(cluster: UpCluster, o: UpOptions, info: ClusterInfo): string[] {
  if (cluster instanceof LocalCluster) {
    const url = cluster.dashboardUrl;
    return url === undefined ? [] : [`  dashboard   ${url}  (also /health, /ready, /metrics)`];
  }
  const leader = cluster.processes.find((p) => p.name === info.leader?.nodeId) ?? cluster.processes[0];
  if (leader?.httpPort === undefined || leader.httpPort === 0) return [];
  return [`  dashboard   http://${formatAddress(o.host, leader.httpPort)}/  (the leader's; each node serves one)`];
}

/** The node-control commands `up` adds to the shell: each runs runNodeAction, as the dashboard's buttons do. */
export function nodeCommands(cluster: UpCluster, dataDir: string): ShellCommand[] {
  const nodeArg = { usage: '<node>', minArgs: 1, maxArgs: 1, group: GROUP } as const;
  const run =
    (action: NodeAction) =>
    async (args: readonly Token[], ctx: ShellContext): Promise<void> => {
      const r = await runNodeAction(cluster, dataDir, action, args[0]?.text);
      ctx.print(printable(r, ctx.style));
    };

  const commands: (ShellCommand & { classicOnly?: boolean })[] = [
    {
      ...nodeArg,
      name: 'kill',
      summary: 'SIGKILL a node (a crash: no clean shutdown)',
      details: 'Storage servers are declared dead after --dead-after-ms without heartbeats; `nodes` shows it.',
      run: run('kill'),
    },
    {
      ...nodeArg,
      name: 'stop',
      summary: 'SIGTERM a node (clean shutdown; SIGKILL after 5 s)',
      run: run('stop'),
    },
    {
      ...nodeArg,
      name: 'pause',
      summary: 'SIGSTOP a node: it keeps its connections but answers nothing',
      run: run('pause'),
    },
    {
      ...nodeArg,
      name: 'resume',
      summary: 'SIGCONT a paused node',
      run: run('resume'),
    },
    {
      ...nodeArg,
      name: 'restart',
      aliases: ['start'],
      summary: 'stop a node if it runs, then start it again with the same data dir and port',
      details: 'A restarted storage server rejoins as a learner and catches up from the primaries.',
      run: run('restart'),
    },
    {
      name: 'spawn',
      classicOnly: true,
      usage: '',
      minArgs: 0,
      maxArgs: 0,
      group: GROUP,
      summary: 'start a new storage server with a new id and data dir',
      details: 'It registers with the nameserver and becomes eligible for new replicas.',
      run: run('spawn'),
    },
    {
      name: 'procs',
      aliases: ['ps'],
      usage: '',
      minArgs: 0,
      maxArgs: 0,
      group: GROUP,
      summary: 'the child processes: pid, state, port, log file',
      run(_args, ctx) {
        const rows = [['NODE', 'PROCESS', 'PORT', 'LOG'].map((h) => ctx.style.bold(h))];
        for (const p of cluster.processes) rows.push([p.name, p.describe(), String(p.port), p.logPath]);
        if (cluster instanceof HaCluster) {
          for (const m of cluster.etcd?.members ?? []) {
            const state = m.exitInfo === undefined ? `pid ${m.child.pid}` : `exited (${m.exitInfo})`;
            rows.push([`etcd ${m.name}`, state, new URL(m.clientUrl).port, join(m.dir, 'etcd.log')]);
          }
        }
        ctx.print(table(rows));
      },
    },
  ];
  // `spawn` adds a storage server of the classic roles; `up --ha` has identical nodes only.
  return commands.filter((c) => !(c.classicOnly && cluster instanceof HaCluster)).map(({ classicOnly: _, ...c }) => c);
}

/** A node action's result as the shell prints it: a refusal or remark in yellow, a failure in red. */
function printable(r: NodeActionResult, style: Style): string {
  switch (r.outcome) {
    case 'done':
      return r.message;
    case 'warning':
    case 'refused':
      return style.yellow(r.message);
    case 'failed':
      return style.red(r.message);
    default:
      return assertNever(r.outcome);
  }
}

/**
 * Issue 15: the dashboard's node actions. The nameserver (started with DSTORE_UP_CONTROL=1)
 * asks over its IPC channel; `up` runs the shell command's function, says so, and answers.
 */
function answerDashboard(cluster: LocalCluster, dataDir: string, say: (text: string) => void): void {
  cluster.nameserver.onMessage = (m) => {
    if (!isUpActionRequest(m)) return;
    const what = `${m.action}${m.node === undefined ? '' : ` ${m.node}`}`;
    runNodeAction(cluster, dataDir, m.action, m.node)
      .catch(
        (e: unknown): NodeActionResult => ({
          outcome: 'failed',
          message: e instanceof Error ? e.message : String(e),
        }),
      )
      .then((r) => {
        say(`[dashboard: ${what}: ${r.message}]`);
        const reply: UpActionReply = { type: 'dstore-up-action-result', id: m.id, ...r };
        cluster.nameserver.send(reply);
      });
  };
}

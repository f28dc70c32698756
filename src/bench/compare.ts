/**
 * `npm run bench:compare`: the same closed-loop workload against Redis (primary + 2 replicas,
 * SET + WAIT 2 0), a 3-member etcd and dstore (3 storage servers, R=3, lmdb, --sync batch;
 * optionally --sync none and --backend memory), one system at a time, and one table of
 * ops/s, p50, p99 and server CPU µs per operation, with each dstore figure as a ratio of the
 * peers'. Every system: keys written once first (not measured), then per cell a fixed time of
 * C callers doing only writes or only reads. A system whose binary is missing is skipped with
 * one line saying how to install it. Every process started is stopped on every exit path: the
 * end, a failure, Ctrl-C (a second Ctrl-C exits at once; exit handlers kill what is left).
 */
import { randomBytes } from 'node:crypto';
import { loadavg } from 'node:os';
import { Command, InvalidArgumentError, Option } from 'commander';
import { describeError } from '../cli/shell.js';
import { assertNever } from '../core/types.js';
import { ETCD_INSTALL_HINT, findEtcd } from '../process/etcd-server.js';
import { findRedisServer, REDIS_INSTALL_HINT } from '../process/redis-server.js';
import { type OpKind, type Peer, preload, runCell } from './closed-loop.js';
import { handleStopSignals } from './signals.js';
import { DstorePeer, dstoreLabel } from './dstore-peer.js';
import { EtcdPeer } from './etcd-peer.js';
import { sampleCpuUs } from './proc-cpu.js';
import { RedisPeer } from './redis-peer.js';
import { type CompareReport, type CompareRow, ETCD_SYSTEM, formatReport, REDIS_SYSTEM, withRatios } from './report.js';

const SYSTEMS = ['redis', 'etcd', 'dstore'] as const;
type SystemName = (typeof SYSTEMS)[number];
const OPS: readonly OpKind[] = ['write', 'read'];
const PRELOAD_CONCURRENCY = 64;
const MAX_CONCURRENCY = 1024;

interface CompareOptions {
  readonly durationS: number;
  readonly concurrency: number[];
  readonly ops: OpKind[];
  readonly keys: number;
  readonly valueSize: number;
  readonly systems: SystemName[];
  readonly withSyncNone: boolean;
  readonly withMemory: boolean;
  readonly json: boolean;
  readonly logLevel: string;
}

/** One system to run: how to start it, or why it is skipped. */
interface Plan {
  readonly label: string;
  readonly missing?: string;
  start(onStarted: (stop: () => Promise<void>) => void): Promise<Peer>;
}

function listParser<T>(what: string, parse: (item: string) => T | undefined): (value: string) => T[] {
  return (value) => {
    const items = value.split(',').map((s) => s.trim());
    const parsed = items.map(parse);
    if (items.length === 0 || parsed.some((p) => p === undefined)) {
      throw new InvalidArgumentError(`Expected a comma-separated list of ${what}.`);
    }
    return [...new Set(parsed as T[])];
  };
}

const numberParser =
  (what: string, min: number, max: number, integer: boolean) =>
  (value: string): number => {
    const n = Number(value);
    if (value.trim() === '' || !Number.isFinite(n) || n < min || n > max || (integer && !Number.isInteger(n))) {
      throw new InvalidArgumentError(`Expected ${what} from ${min} to ${max}.`);
    }
    return n;
  };

export function compareProgram(run: (o: CompareOptions) => Promise<number>): Command {
  const program = new Command('bench:compare')
    .description(
      'run the same closed-loop workload against Redis (primary + 2 replicas, SET + WAIT 2 0), a 3-member etcd ' +
        'and dstore (3 storage servers, R=3), one at a time, and print one table: ops/s, p50, p99, server CPU ' +
        'µs per op, and dstore as a ratio of each peer',
    )
    .addOption(
      new Option('--duration <s>', 'seconds per cell (one system × op × concurrency)')
        .argParser(numberParser('seconds', 0.05, 3600, false))
        .default(5),
    )
    .addOption(
      new Option('--concurrency <list>', 'closed-loop callers per cell, comma-separated')
        .argParser(
          listParser('integers from 1 to 1024', (s) => {
            const n = Number(s);
            return Number.isInteger(n) && n >= 1 && n <= MAX_CONCURRENCY ? n : undefined;
          }),
        )
        .default([1, 16, 64], '1,16,64'),
    )
    .addOption(
      new Option('--ops <list>', 'which cells: write, read or both')
        .argParser(listParser('write, read', (s) => OPS.find((op) => op === s)))
        .default(['write', 'read'], 'write,read'),
    )
    .addOption(
      new Option('--keys <n>', 'keys, chosen uniformly; each written once before measuring')
        .argParser(numberParser('an integer', 1, 10_000_000, true))
        .default(10_000),
    )
    .addOption(
      new Option('--value-size <bytes>', 'bytes per value')
        .argParser(numberParser('an integer', 1, 1024 * 1024, true))
        .default(100),
    )
    .addOption(
      new Option('--systems <list>', 'systems to run: redis, etcd, dstore')
        .argParser(listParser('redis, etcd, dstore', (s) => SYSTEMS.find((n) => n === s)))
        .default([...SYSTEMS], 'redis,etcd,dstore'),
    )
    .option('--with-sync-none', 'also run dstore with --sync none', false)
    .option('--with-memory', 'also run dstore with --backend memory', false)
    .option('--json', 'print the report as JSON', false)
    .addOption(
      new Option('--log-level <level>', 'log level of the dstore nodes')
        .choices(['trace', 'debug', 'info', 'warn', 'error', 'fatal', 'silent'])
        .default('info'),
    )
    .showHelpAfterError()
    .action(async (raw: Record<string, unknown>) => {
      process.exitCode = await run({
        durationS: raw.duration as number,
        concurrency: raw.concurrency as number[],
        ops: raw.ops as OpKind[],
        keys: raw.keys as number,
        valueSize: raw.valueSize as number,
        systems: raw.systems as SystemName[],
        withSyncNone: raw.withSyncNone as boolean,
        withMemory: raw.withMemory as boolean,
        json: raw.json as boolean,
        logLevel: raw.logLevel as string,
      });
    });
  return program;
}

function plans(o: CompareOptions): Plan[] {
  const maxConcurrency = Math.max(...o.concurrency, PRELOAD_CONCURRENCY);
  const out: Plan[] = [];
  const dstore = (backend: 'lmdb' | 'memory', sync: 'batch' | 'none'): Plan => ({
    label: dstoreLabel({ backend, sync }),
    start: (onStarted) => DstorePeer.start({ backend, sync, valueSize: o.valueSize, logLevel: o.logLevel }, onStarted),
  });
  for (const system of o.systems) {
    switch (system) {
      case 'redis':
        out.push({
          label: REDIS_SYSTEM,
          ...(findRedisServer() === undefined
            ? { missing: `redis-server is not installed: ${REDIS_INSTALL_HINT}` }
            : {}),
          start: (onStarted) => RedisPeer.start({ maxConcurrency }, onStarted),
        });
        break;
      case 'etcd':
        out.push({
          label: ETCD_SYSTEM,
          ...(findEtcd() === undefined ? { missing: `etcd is not installed: ${ETCD_INSTALL_HINT}` } : {}),
          start: (onStarted) => EtcdPeer.start(onStarted),
        });
        break;
      case 'dstore':
        out.push(dstore('lmdb', 'batch'));
        if (o.withSyncNone) out.push(dstore('lmdb', 'none'));
        if (o.withMemory) out.push(dstore('memory', 'batch'));
        break;
      default:
        assertNever(system);
    }
  }
  return out;
}

/** `f` run at most once; later calls get the first call's promise. */
function once(f: () => Promise<void>): () => Promise<void> {
  let p: Promise<void> | undefined;
  return () => {
    p ??= f();
    return p;
  };
}

/** Runs the comparison; resolves to the exit code (0, 1 when a system failed, 130 after Ctrl-C). */
export async function runCompare(o: CompareOptions): Promise<number> {
  const err = process.stderr;
  const loadStart = loadavg();
  const value = randomBytes(o.valueSize);
  const rows: CompareRow[] = [];
  const systems: { name: string; description: string; pids: number[] }[] = [];
  const skipped: { system: string; reason: string }[] = [];
  let stopCurrent: (() => Promise<void>) | undefined;
  let failed = false;
  const signals = handleStopSignals(err, () => stopCurrent);
  const shouldStop = signals.requested;
  try {
    for (const plan of plans(o)) {
      if (signals.requested()) break;
      if (plan.missing !== undefined) {
        err.write(`skipping ${plan.label}: ${plan.missing}\n`);
        skipped.push({ system: plan.label, reason: plan.missing });
        continue;
      }
      err.write(`starting ${plan.label} …\n`);
      let stop: (() => Promise<void>) | undefined;
      try {
        const peer = await plan.start((s) => {
          stop = once(s);
          stopCurrent = stop;
        });
        systems.push({ name: peer.name, description: peer.description, pids: peer.serverPids() });
        const t0 = performance.now();
        await preload(peer, o.keys, PRELOAD_CONCURRENCY, value, shouldStop);
        err.write(`  preloaded ${o.keys} keys in ${((performance.now() - t0) / 1000).toFixed(1)} s\n`);
        for (const op of o.ops) {
          for (const concurrency of o.concurrency) {
            if (signals.requested()) break;
            const pids = peer.serverPids(); // the same processes before and after: one gone → no figure
            const cpu0 = sampleCpuUs(pids);
            const cell = await runCell(
              peer,
              { op, concurrency, durationS: o.durationS, keys: o.keys, value },
              shouldStop,
            );
            const cpu1 = sampleCpuUs(pids);
            const cpuUsPerOp =
              cpu0 === undefined || cpu1 === undefined || cell.ops === 0 ? null : (cpu1 - cpu0) / cell.ops;
            const row: CompareRow = {
              system: peer.name,
              op,
              concurrency,
              ops: cell.ops,
              elapsedS: cell.elapsedS,
              opsPerSec: cell.ops / cell.elapsedS,
              p50Ms: cell.latency.percentileMs(50),
              p99Ms: cell.latency.percentileMs(99),
              cpuUsPerOp,
              errors: cell.errors,
              ...(cell.errorSample === undefined ? {} : { errorSample: cell.errorSample }),
            };
            rows.push(row);
            err.write(
              `  ${op} C=${concurrency}: ${Math.round(row.opsPerSec)} ops/s, p50 ${row.p50Ms.toFixed(2)} ms, ` +
                `p99 ${row.p99Ms.toFixed(2)} ms, CPU ${cpuUsPerOp === null ? 'n/a' : Math.round(cpuUsPerOp)} µs/op` +
                `${cell.errors > 0 ? `, ${cell.errors} errors` : ''}\n`,
            );
          }
        }
      } catch (e) {
        if (signals.requested()) break;
        failed = true;
        const reason = `failed: ${describeError(e)}`;
        err.write(`${plan.label} ${reason}\n`);
        skipped.push({ system: plan.label, reason });
      } finally {
        const t0 = performance.now();
        stopCurrent = undefined;
        await stop?.();
        err.write(`stopped ${plan.label} in ${((performance.now() - t0) / 1000).toFixed(1)} s\n`);
      }
    }
  } finally {
    signals.dispose();
  }
  if (signals.requested()) return 130;
  const report: CompareReport = {
    config: {
      durationS: o.durationS,
      keys: o.keys,
      valueSize: o.valueSize,
      concurrency: o.concurrency,
      ops: o.ops,
    },
    loadAverage: { start: loadStart, end: loadavg() },
    systems,
    skipped,
    rows: withRatios(rows),
  };
  process.stdout.write(`${o.json ? JSON.stringify(report, null, 2) : formatReport(report)}\n`);
  return failed ? 1 : 0;
}

await compareProgram(runCompare)
  .parseAsync(process.argv)
  .catch((e: unknown) => {
    process.stderr.write(`bench:compare: ${describeError(e)}\n`);
    process.exitCode = 1;
  });
// The clients' sockets are closed; whatever timer a library leaves must not keep the process up.
process.exit(process.exitCode ?? 0);

/**
 * `npm run bench:size`: how dstore holds up as the store grows (issue 11, "Size"). On one
 * temporary cluster (the one of `dstore bench --spawn`: a nameserver and 3 storage servers,
 * R=3), three phases:
 *  1. empty: a small keyspace (10,000 keys, fewer when --keys is smaller) written once, then a
 *     closed-loop write cell over it; the memory of each storage server;
 *  2. load: keys 0..N-1 written once, with progress on stderr and, at each checkpoint, every
 *     storage server's memory (VmRSS, RssAnon, RssFile, VmHWM from /proc/PID/status) and the
 *     size of its data dir, so growth with the number of keys shows;
 *  3. full: the same write cell over random keys of all N, then a read cell for reference.
 * One table (or --json) and two verdicts: write throughput full ÷ empty (goal ≥ 0.8) and the
 * anonymous RSS (JS heap + malloc) growth per million keys, between the first and the last
 * checkpoint. Every process is stopped on every exit path: the end, a failure, Ctrl-C.
 */
import { randomBytes } from 'node:crypto';
import { loadavg } from 'node:os';
import { performance } from 'node:perf_hooks';
import { Command, InvalidArgumentError, Option } from 'commander';
import { table } from '../cli/format.js';
import type { BackendName, SyncMode } from '../cli/options.js';
import { describeError } from '../cli/shell.js';
import { type CellResult, type OpKind, preload, runCell, writeKeys } from './closed-loop.js';
import { handleStopSignals } from './signals.js';
import { DstorePeer } from './dstore-peer.js';
import { dirUsage, sampleMemory } from './proc-mem.js';

/** Keys of the empty store's write cell (fewer when --keys is smaller). */
const SMALL_KEYSPACE = 10_000;
/** The goal of issue 11: writes on the full store at least this fraction of the empty store's. */
export const WRITE_RATIO_GOAL = 0.8;
const PROGRESS_EVERY_MS = 5_000;
const MIB = 1024 * 1024;

interface SizeOptions {
  readonly keys: number;
  readonly valueSize: number;
  readonly concurrency: number;
  readonly durationS: number;
  readonly backend: BackendName;
  readonly sync: SyncMode;
  readonly checkpoints: number;
  readonly json: boolean;
  readonly logLevel: string;
}

/** One storage server at one point: memory (null without /proc) and data dir, in MiB. */
export interface ServerSample {
  readonly name: string;
  readonly pid: number | null;
  readonly vmRssMiB: number | null;
  readonly rssAnonMiB: number | null;
  readonly rssFileMiB: number | null;
  readonly vmHwmMiB: number | null;
  readonly dataDirMiB: number;
  readonly dataDirAllocatedMiB: number;
  readonly lmdbFileMiB: number;
  readonly lmdbAllocatedMiB: number;
}

export interface CellRow {
  readonly op: OpKind;
  /** Keys the cell chose from, uniformly. */
  readonly keyspace: number;
  readonly ops: number;
  readonly elapsedS: number;
  readonly opsPerSec: number;
  readonly p50Ms: number;
  readonly p99Ms: number;
  readonly errors: number;
  readonly errorSample?: string;
}

export interface Checkpoint {
  readonly keysLoaded: number;
  readonly elapsedS: number;
  /** Keys per second since the previous checkpoint. */
  readonly keysPerSec: number;
  readonly servers: readonly ServerSample[];
}

export interface MeasuredPhase {
  /** Keys in the store during the cells. */
  readonly keysHeld: number;
  readonly cells: readonly CellRow[];
  /** Memory after the cells. */
  readonly servers: readonly ServerSample[];
}

export interface SizeReport {
  readonly config: {
    readonly keys: number;
    readonly valueSize: number;
    readonly concurrency: number;
    readonly durationS: number;
    readonly backend: BackendName;
    readonly sync: SyncMode;
    readonly checkpoints: number;
  };
  readonly description: string;
  /** os.loadavg() at the start and the end (1, 5, 15 min): the machine is shared. */
  readonly loadAverage: { readonly start: readonly number[]; readonly end: readonly number[] };
  readonly phases: {
    readonly empty: MeasuredPhase;
    readonly load: {
      readonly keys: number;
      readonly elapsedS: number;
      readonly keysPerSec: number;
      readonly checkpoints: readonly Checkpoint[];
    };
    readonly full: MeasuredPhase;
  };
  readonly verdicts: {
    /** Write ops/s on the full store ÷ on the empty store; null when the empty cell did nothing. */
    readonly writeRatio: number | null;
    readonly writeRatioGoal: number;
    /** Per server, anonymous RSS growth scaled to 1,000,000 keys; null without two memory figures. */
    readonly anonGrowthMiBPer1MKeys: readonly { readonly name: string; readonly miB: number | null }[];
    /** Which points the growth is measured between (keys held at each). */
    readonly growthBetweenKeys: readonly [number, number];
    readonly note: string;
  };
}

const numberParser =
  (what: string, min: number, max: number, integer: boolean) =>
  (value: string): number => {
    const n = Number(value.replaceAll('_', ''));
    if (value.trim() === '' || !Number.isFinite(n) || n < min || n > max || (integer && !Number.isInteger(n))) {
      throw new InvalidArgumentError(`Expected ${what} from ${min} to ${max}.`);
    }
    return n;
  };

export function sizeProgram(run: (o: SizeOptions) => Promise<number>): Command {
  return new Command('bench:size')
    .description(
      'load N keys into a temporary dstore cluster (3 storage servers, R=3) and compare write throughput on the ' +
        'empty and the full store; print each storage server’s memory (RSS, anon, file) and data dir size as ' +
        'the store grows',
    )
    .addOption(
      new Option('--keys <n>', 'keys loaded (each written once)')
        .argParser(numberParser('an integer', 1, 100_000_000, true))
        .default(1_000_000),
    )
    .addOption(
      new Option('--value-size <bytes>', 'bytes per value')
        .argParser(numberParser('an integer', 1, 1024 * 1024, true))
        .default(100),
    )
    .addOption(
      new Option('--concurrency <n>', 'closed-loop callers (load and cells)')
        .argParser(numberParser('an integer', 1, 1024, true))
        .default(64),
    )
    .addOption(
      new Option('--duration <s>', 'seconds per measured cell')
        .argParser(numberParser('seconds', 0.05, 3600, false))
        .default(10),
    )
    .addOption(new Option('--backend <name>', 'storage backend').choices(['lmdb', 'memory']).default('lmdb'))
    .addOption(new Option('--sync <mode>', 'storage --sync mode').choices(['batch', 'none']).default('batch'))
    .addOption(
      new Option('--checkpoints <n>', 'memory samples during the load (at equal steps; the last at N keys)')
        .argParser(numberParser('an integer', 1, 100, true))
        .default(4),
    )
    .option('--json', 'print the report as JSON', false)
    .addOption(
      new Option('--log-level <level>', 'log level of the dstore nodes')
        .choices(['trace', 'debug', 'info', 'warn', 'error', 'fatal', 'silent'])
        .default('warn'),
    )
    .showHelpAfterError()
    .action(async (raw: Record<string, unknown>) => {
      process.exitCode = await run({
        keys: raw.keys as number,
        valueSize: raw.valueSize as number,
        concurrency: raw.concurrency as number,
        durationS: raw.duration as number,
        backend: raw.backend as BackendName,
        sync: raw.sync as SyncMode,
        checkpoints: raw.checkpoints as number,
        json: raw.json as boolean,
        logLevel: raw.logLevel as string,
      });
    });
}

const toMiB = (kib: number | undefined): number | null => (kib === undefined ? null : kib / 1024);

function sampleServers(peer: DstorePeer): ServerSample[] {
  return peer.storageServers().map((s) => {
    const mem = sampleMemory(s.pid);
    const disk = dirUsage(s.dataDir);
    return {
      name: s.name,
      pid: s.pid ?? null,
      vmRssMiB: toMiB(mem?.vmRssKiB),
      rssAnonMiB: toMiB(mem?.rssAnonKiB),
      rssFileMiB: toMiB(mem?.rssFileKiB),
      vmHwmMiB: toMiB(mem?.vmHwmKiB),
      dataDirMiB: disk.apparentBytes / MIB,
      dataDirAllocatedMiB: disk.allocatedBytes / MIB,
      lmdbFileMiB: disk.lmdbApparentBytes / MIB,
      lmdbAllocatedMiB: disk.lmdbAllocatedBytes / MIB,
    };
  });
}

function cellRow(op: OpKind, keyspace: number, cell: CellResult): CellRow {
  return {
    op,
    keyspace,
    ops: cell.ops,
    elapsedS: cell.elapsedS,
    opsPerSec: cell.ops / cell.elapsedS,
    p50Ms: cell.latency.percentileMs(50),
    p99Ms: cell.latency.percentileMs(99),
    errors: cell.errors,
    ...(cell.errorSample === undefined ? {} : { errorSample: cell.errorSample }),
  };
}

/** Anonymous RSS growth per 1,000,000 keys of each server between two samples. */
function anonGrowth(
  a: { keys: number; servers: readonly ServerSample[] },
  b: { keys: number; servers: readonly ServerSample[] },
): { name: string; miB: number | null }[] {
  return b.servers.map((s) => {
    const before = a.servers.find((p) => p.name === s.name)?.rssAnonMiB ?? null;
    const after = s.rssAnonMiB;
    const miB =
      before === null || after === null || b.keys <= a.keys ? null : ((after - before) * 1_000_000) / (b.keys - a.keys);
    return { name: s.name, miB };
  });
}

/** `f` run at most once; later calls get the first call's promise. */
function once(f: () => Promise<void>): () => Promise<void> {
  let p: Promise<void> | undefined;
  return () => {
    p ??= f();
    return p;
  };
}

const int = (n: number): string => Math.round(n).toLocaleString('en-US');
const ms = (n: number): string => n.toFixed(n < 10 ? 2 : 1);
const mib = (n: number | null): string => (n === null ? 'n/a' : n.toFixed(n < 10 ? 1 : 0));
const loads = (l: readonly number[]): string => l.map((n) => n.toFixed(2)).join(' ');
const memCell = (s: ServerSample): string => `${mib(s.vmRssMiB)}/${mib(s.rssAnonMiB)}/${mib(s.rssFileMiB)}`;

function memLine(servers: readonly ServerSample[]): string {
  return servers
    .map((s) => `${s.name} RSS ${mib(s.vmRssMiB)} anon ${mib(s.rssAnonMiB)} file ${mib(s.rssFileMiB)} MiB`)
    .join(', ');
}

export function formatSizeReport(r: SizeReport): string {
  const c = r.config;
  const names = r.phases.empty.servers.map((s) => s.name);
  const header = [
    'phase',
    'keys held',
    'op',
    'ops/s',
    'p50 ms',
    'p99 ms',
    ...names.map((n) => `${n} RSS/anon/file MiB`),
    `data dir MiB (${names.join('/')})`,
  ];
  const rows: string[][] = [header];
  const disk = (servers: readonly ServerSample[]): string => servers.map((s) => mib(s.dataDirMiB)).join('/');
  const phaseRows = (phase: string, p: MeasuredPhase): void => {
    p.cells.forEach((cell, i) => {
      const last = i === p.cells.length - 1; // memory is sampled after the phase's cells
      rows.push([
        phase,
        int(p.keysHeld),
        cell.op,
        int(cell.opsPerSec),
        ms(cell.p50Ms),
        ms(cell.p99Ms),
        ...(last ? p.servers.map(memCell) : names.map(() => '')),
        last ? disk(p.servers) : '',
      ]);
    });
  };
  phaseRows('empty', r.phases.empty);
  for (const cp of r.phases.load.checkpoints) {
    rows.push([
      'load',
      int(cp.keysLoaded),
      'load',
      int(cp.keysPerSec),
      '',
      '',
      ...cp.servers.map(memCell),
      disk(cp.servers),
    ]);
  }
  phaseRows('full', r.phases.full);
  const v = r.verdicts;
  const growth = v.anonGrowthMiBPer1MKeys.map((g) => `${g.name} ${g.miB === null ? 'n/a' : g.miB.toFixed(1)}`);
  const last = r.phases.load.checkpoints.at(-1);
  const lines = [
    `bench:size: ${int(c.keys)} keys of ${c.valueSize} bytes, backend ${c.backend}, --sync ${c.sync}, ` +
      `C = ${c.concurrency}, ${c.durationS} s per cell (closed loop, uniform random keys)`,
    `  ${r.description}`,
    `load average at start ${loads(r.loadAverage.start)}, at end ${loads(r.loadAverage.end)} (1, 5, 15 min)`,
    `load: ${int(r.phases.load.keys)} keys in ${r.phases.load.elapsedS.toFixed(1)} s ` +
      `(${int(r.phases.load.keysPerSec)} keys/s)`,
    '',
    table(rows, new Set([1, 3, 4, 5])),
    '',
    `  memory: after the cells of a phase and at each load checkpoint, from /proc/PID/status (VmRSS/RssAnon/RssFile); ` +
      'anon ≈ JS heap + malloc, file ≈ mapped files (LMDB’s data pages: page cache)',
    `  peak RSS (VmHWM) at the end: ${r.phases.full.servers.map((s) => `${s.name} ${mib(s.vmHwmMiB)}`).join(', ')} MiB`,
    ...(last === undefined
      ? []
      : [
          `  data dir at ${int(last.keysLoaded)} keys (apparent / allocated MiB; LMDB data file apparent / ` +
            `allocated): ${last.servers
              .map(
                (s) =>
                  `${s.name} ${mib(s.dataDirMiB)} / ${mib(s.dataDirAllocatedMiB)} ` +
                  `(${mib(s.lmdbFileMiB)} / ${mib(s.lmdbAllocatedMiB)})`,
              )
              .join(', ')}`,
        ]),
    '',
    `write throughput full ÷ empty = ${v.writeRatio === null ? 'n/a' : v.writeRatio.toFixed(2)} ` +
      `(goal ≥ ${v.writeRatioGoal})`,
    `anon RSS growth per 1M keys = ${growth.join(', ')} MiB ` +
      `(between ${int(v.growthBetweenKeys[0])} and ${int(v.growthBetweenKeys[1])} keys` +
      `${v.growthBetweenKeys[1] - v.growthBetweenKeys[0] < 100_000 ? '; extrapolated from under 100,000 keys: noise' : ''})`,
    `  ${v.note}`,
  ];
  for (const [phase, p] of [
    ['empty', r.phases.empty],
    ['full', r.phases.full],
  ] as const) {
    for (const cell of p.cells) {
      if (cell.errorSample !== undefined) {
        lines.push(`  ${phase} ${cell.op}: ${int(cell.errors)} errors, e.g. ${cell.errorSample}`);
      }
    }
  }
  return lines.join('\n');
}

/** Runs the size benchmark; resolves to the exit code (0, 1 on a failure, 130 after Ctrl-C). */
export async function runSize(o: SizeOptions): Promise<number> {
  const err = process.stderr;
  const loadStart = loadavg();
  const value = randomBytes(o.valueSize);
  const smallKeys = Math.min(SMALL_KEYSPACE, o.keys);
  let stop: (() => Promise<void>) | undefined;
  const signals = handleStopSignals(err, () => stop);
  const shouldStop = signals.requested;
  let report: SizeReport | undefined;
  try {
    err.write(`starting a temporary cluster (backend ${o.backend}, --sync ${o.sync}) …\n`);
    const peer = await DstorePeer.start(
      { backend: o.backend, sync: o.sync, valueSize: o.valueSize, logLevel: o.logLevel },
      (s) => {
        stop = once(s);
      },
    );
    const cell = async (op: OpKind, keyspace: number): Promise<CellRow> => {
      const row = cellRow(
        op,
        keyspace,
        await runCell(
          peer,
          { op, concurrency: o.concurrency, durationS: o.durationS, keys: keyspace, value },
          shouldStop,
        ),
      );
      err.write(
        `  ${op} over ${int(keyspace)} keys: ${int(row.opsPerSec)} ops/s, p50 ${ms(row.p50Ms)} ms, ` +
          `p99 ${ms(row.p99Ms)} ms${row.errors > 0 ? `, ${row.errors} errors` : ''}\n`,
      );
      return row;
    };

    // 1. Empty store: a small keyspace written once, then the write cell over it.
    err.write(`empty store: writing ${int(smallKeys)} keys, then ${o.durationS} s of writes over them\n`);
    await preload(peer, smallKeys, o.concurrency, value, shouldStop);
    const emptyWrite = await cell('write', smallKeys);
    const empty: MeasuredPhase = { keysHeld: smallKeys, cells: [emptyWrite], servers: sampleServers(peer) };
    err.write(`  memory: ${memLine(empty.servers)}\n`);

    // 2. Load keys 0..N-1 once, sampling memory at each checkpoint.
    err.write(`loading ${int(o.keys)} keys (C = ${o.concurrency}) …\n`);
    const loadT0 = performance.now();
    let written = 0;
    let lastReportAt = loadT0;
    let lastReportKeys = 0;
    const onWritten = (): void => {
      written++;
      const now = performance.now();
      if (now - lastReportAt >= PROGRESS_EVERY_MS) {
        const rate = ((written - lastReportKeys) * 1000) / (now - lastReportAt);
        err.write(`  ${int(written)} of ${int(o.keys)} keys loaded, ${int(rate)} keys/s\n`);
        lastReportAt = now;
        lastReportKeys = written;
      }
    };
    const checkpoints: Checkpoint[] = [];
    let from = 0;
    let segmentT0 = loadT0;
    for (let i = 1; i <= o.checkpoints && !signals.requested(); i++) {
      const to = Math.round((o.keys * i) / o.checkpoints);
      if (to <= from) continue;
      await writeKeys(peer, { from, to, concurrency: o.concurrency, value }, shouldStop, onWritten);
      if (signals.requested()) break;
      const now = performance.now();
      const cp: Checkpoint = {
        keysLoaded: to,
        elapsedS: (now - loadT0) / 1000,
        keysPerSec: ((to - from) * 1000) / (now - segmentT0),
        servers: sampleServers(peer),
      };
      checkpoints.push(cp);
      err.write(
        `  checkpoint ${int(to)} keys (${int(cp.keysPerSec)} keys/s): ${memLine(cp.servers)}; data dir ` +
          `${cp.servers.map((s) => `${s.name} ${mib(s.dataDirMiB)}`).join(', ')} MiB\n`,
      );
      from = to;
      segmentT0 = performance.now();
    }
    if (signals.requested()) return 130;
    const loadS = (performance.now() - loadT0) / 1000;

    // 3. Full store: the same write cell over all N keys, then reads for reference.
    err.write(`full store: ${o.durationS} s of writes, then of reads, over ${int(o.keys)} keys\n`);
    const fullWrite = await cell('write', o.keys);
    const fullRead = await cell('read', o.keys);
    const full: MeasuredPhase = { keysHeld: o.keys, cells: [fullWrite, fullRead], servers: sampleServers(peer) };
    err.write(`  memory: ${memLine(full.servers)}\n`);
    if (signals.requested()) return 130;

    const first = checkpoints[0];
    const lastCp = checkpoints.at(-1);
    // Between the first and the last checkpoint (past the start-up and warm-up); one checkpoint: from the empty store.
    const growthFrom =
      first !== undefined && lastCp !== undefined && checkpoints.length >= 2
        ? { keys: first.keysLoaded, servers: first.servers }
        : { keys: smallKeys, servers: empty.servers };
    const growthTo =
      lastCp === undefined
        ? { keys: o.keys, servers: full.servers }
        : { keys: lastCp.keysLoaded, servers: lastCp.servers };
    report = {
      config: {
        keys: o.keys,
        valueSize: o.valueSize,
        concurrency: o.concurrency,
        durationS: o.durationS,
        backend: o.backend,
        sync: o.sync,
        checkpoints: o.checkpoints,
      },
      description: peer.description,
      loadAverage: { start: loadStart, end: loadavg() },
      phases: {
        empty,
        load: { keys: o.keys, elapsedS: loadS, keysPerSec: o.keys / loadS, checkpoints },
        full,
      },
      verdicts: {
        writeRatio: emptyWrite.ops > 0 ? fullWrite.opsPerSec / emptyWrite.opsPerSec : null,
        writeRatioGoal: WRITE_RATIO_GOAL,
        anonGrowthMiBPer1MKeys: anonGrowth(growthFrom, growthTo),
        growthBetweenKeys: [growthFrom.keys, growthTo.keys],
        note:
          o.backend === 'memory'
            ? 'backend memory: the data lives on the JS heap, so anon RSS grows with the keys (expected)'
            : 'backend lmdb: the data lives in LMDB’s mapped file (file RSS, page cache); anon RSS should stay ' +
              'flat once each partition’s in-memory log tail (bounded: up to 2 × logRetainEntries entries) has filled',
      },
    };
  } catch (e) {
    if (signals.requested()) return 130;
    err.write(`bench:size failed: ${describeError(e)}\n`);
    return 1;
  } finally {
    const t0 = performance.now();
    await stop?.();
    err.write(`stopped the cluster in ${((performance.now() - t0) / 1000).toFixed(1)} s\n`);
    signals.dispose();
  }
  if (report === undefined) return 1; // not reached: every path without a report returned above
  process.stdout.write(`${o.json ? JSON.stringify(report, null, 2) : formatSizeReport(report)}\n`);
  return 0;
}

await sizeProgram(runSize)
  .parseAsync(process.argv)
  .catch((e: unknown) => {
    process.stderr.write(`bench:size: ${describeError(e)}\n`);
    process.exitCode = 1;
  });
// The client's sockets are closed; whatever timer a library leaves must not keep the process up.
process.exit(process.exitCode ?? 0);

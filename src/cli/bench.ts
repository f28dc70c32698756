/**
 * `dstore bench`: a closed-loop load generator through the client library. C callers each
 * loop: pick get or put per --ratio on a uniformly random key of --keys, wait for the
 * answer, record its latency, repeat until --duration ends. Latencies go into bounded
 * histograms (histogram.ts); the report gives ops, ops/s and p50/p99/max for reads, writes
 * and both. With --spawn it first starts a temporary 3-node cluster (R=3) in a temp dir,
 * through the same child-process code as `dstore up`, and removes it afterwards.
 * Against a user's cluster it writes only keys under its own prefix (--prefix; by default
 * new each run, so it never overwrites a key it did not create), says so when it starts,
 * and deletes every key it wrote at the end (also after Ctrl-C) unless --keep.
 */
import { randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { performance } from 'node:perf_hooks';
import type { Db } from '../client/api.js';
import { DstoreError } from '../core/errors.js';
import { ClusterStartError, LocalCluster } from './cluster.js';
import { openDb } from './commands.js';
import { table } from './format.js';
import { Histogram } from './histogram.js';
import { type BackendName, CliFailure, type SyncMode } from './options.js';
import { describeError } from './shell.js';

export interface BenchOptions {
  readonly nameserver: string;
  readonly concurrency: number;
  readonly durationS: number;
  readonly valueSize: number;
  readonly keys: number;
  readonly ratio: { readonly reads: number; readonly writes: number };
  readonly spawn: boolean;
  readonly json: boolean;
  /** Write every key once before measuring, so reads find values. */
  readonly preload: boolean;
  readonly backend: BackendName;
  readonly sync: SyncMode;
  readonly timeoutMs: number;
  readonly attemptTimeoutMs?: number;
  readonly logLevel: string;
  readonly clusterToken?: string;
  /** Prefix of every key written (issue 9: never over keys the bench did not create). */
  readonly prefix: string;
  /** Keep the written keys instead of deleting them at the end. */
  readonly keep: boolean;
  /** Issue 14: each write is a transaction writing this many random keys (0: plain puts). */
  readonly txnKeys?: number;
}

export interface OpStats {
  readonly ops: number;
  readonly opsPerSec: number;
  readonly p50Ms: number;
  readonly p99Ms: number;
  readonly maxMs: number;
  readonly meanMs: number;
}

export interface BenchReport {
  readonly config: {
    readonly nameserver: string;
    readonly concurrency: number;
    readonly durationS: number;
    readonly valueSize: number;
    readonly keys: number;
    readonly ratio: string;
    /** Issue 14: keys per transaction, when each write was one. */
    readonly txnKeys?: number;
    readonly spawned?: {
      readonly storageServers: number;
      readonly replicas: number;
      readonly backend: BackendName;
      readonly sync: SyncMode;
    };
  };
  readonly elapsedS: number;
  readonly reads: OpStats;
  readonly writes: OpStats;
  readonly total: OpStats;
  /** Failed operations by error code (not in the latency figures). */
  readonly errors: Readonly<Record<string, number>>;
}

export const SPAWN_STORAGE_SERVERS = 3;
export const SPAWN_REPLICAS = 3;
/** Distinct error messages remembered for the report. */
const MAX_ERROR_SAMPLES = 5;

/** The default prefix: new each run, so a bench never writes over keys it did not create. */
export function randomBenchPrefix(): string {
  return `bench-${randomBytes(4).toString('hex')}-`;
}

export function keyName(prefix: string, i: number): string {
  return `${prefix}${i.toString().padStart(8, '0')}`;
}

/** Which of the keys 0..n-1 the bench wrote (one bit each), so it deletes exactly those. */
export class WrittenKeys {
  private readonly bits: Uint8Array;
  count = 0;
  constructor(readonly size: number) {
    this.bits = new Uint8Array(Math.ceil(size / 8));
  }
  add(i: number): void {
    const byte = i >> 3;
    const mask = 1 << (i & 7);
    if (((this.bits[byte] as number) & mask) !== 0) return;
    this.bits[byte] = (this.bits[byte] as number) | mask;
    this.count++;
  }
  has(i: number): boolean {
    return ((this.bits[i >> 3] as number) & (1 << (i & 7))) !== 0;
  }
}

/** A printable value of `size` bytes (printable so `dump`/`get` stay readable after a bench). */
export function makeValue(size: number): Uint8Array {
  const alphabet = 'abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789';
  const v = new Uint8Array(size);
  for (let i = 0; i < size; i++) v[i] = alphabet.charCodeAt(Math.floor(Math.random() * alphabet.length));
  return v;
}

function stats(h: Histogram, elapsedS: number): OpStats {
  return {
    ops: h.count,
    opsPerSec: elapsedS > 0 ? h.count / elapsedS : 0,
    p50Ms: h.percentileMs(50),
    p99Ms: h.percentileMs(99),
    maxMs: h.maxMs,
    meanMs: h.meanMs,
  };
}

const int = (n: number): string => Math.round(n).toLocaleString('en-US');
const ms = (n: number): string => n.toFixed(n < 10 ? 2 : 1);

export function formatReport(r: BenchReport): string {
  const c = r.config;
  const spawned = c.spawned
    ? `; spawned ${c.spawned.storageServers} storage servers, R=${c.spawned.replicas}, ` +
      `${c.spawned.backend}, sync ${c.spawned.sync}`
    : '';
  const rows = [['', 'ops', 'ops/s', 'p50 ms', 'p99 ms', 'max ms']];
  for (const [name, s] of [
    ['reads', r.reads],
    ['writes', r.writes],
    ['total', r.total],
  ] as const) {
    rows.push([name, int(s.ops), int(s.opsPerSec), ms(s.p50Ms), ms(s.p99Ms), ms(s.maxMs)]);
  }
  const errorCount = Object.values(r.errors).reduce((a, b) => a + b, 0);
  const errors =
    errorCount === 0
      ? 'errors: 0'
      : `errors: ${int(errorCount)} (${Object.entries(r.errors)
          .map(([k, v]) => `${k} ${int(v)}`)
          .join(', ')}; not in the figures above)`;
  return [
    `dstore bench: ${c.concurrency} callers for ${r.elapsedS.toFixed(1)} s, ${c.valueSize}-byte values, ` +
      `${int(c.keys)} keys, reads:writes ${c.ratio}` +
      `${c.txnKeys ? `, each write a transaction of ${c.txnKeys} key(s)` : ''} (nameserver ${c.nameserver}${spawned})`,
    '',
    table(rows, new Set([1, 2, 3, 4, 5])),
    errors,
  ].join('\n');
}

/** Runs the closed loop against `db`; `shouldStop` ends it early (SIGINT). */
export async function runLoad(
  db: Db,
  o: Pick<BenchOptions, 'concurrency' | 'durationS' | 'valueSize' | 'keys' | 'ratio' | 'prefix' | 'txnKeys'>,
  written: WrittenKeys,
  onSecond: (elapsedS: number, opsSoFar: number, opsLastSecond: number) => void,
  shouldStop: () => boolean,
): Promise<{
  reads: Histogram;
  writes: Histogram;
  errors: Map<string, number>;
  errorSamples: string[];
  elapsedS: number;
}> {
  const reads = new Histogram();
  const writes = new Histogram();
  const errors = new Map<string, number>();
  const errorSamples: string[] = [];
  const value = makeValue(o.valueSize);
  const readShare = o.ratio.reads / (o.ratio.reads + o.ratio.writes);
  const start = performance.now();
  const end = start + o.durationS * 1000;
  let done = 0;
  let lastDone = 0;
  const ticker = setInterval(() => {
    onSecond((performance.now() - start) / 1000, done, done - lastDone);
    lastDone = done;
  }, 1000);
  const caller = async (): Promise<void> => {
    while (!shouldStop()) {
      const t0 = performance.now();
      if (t0 >= end) return;
      const index = Math.floor(Math.random() * o.keys);
      const key = keyName(o.prefix, index);
      const isRead = Math.random() < readShare;
      try {
        if (isRead) await db.get(key);
        else if ((o.txnKeys ?? 0) > 0) {
          // Issue 14: one transaction writing txnKeys distinct random keys (so most span partitions).
          const indexes = new Set([index]);
          for (let k = 0; indexes.size < Math.min(o.txnKeys!, o.keys) && k < 1000; k++)
            indexes.add(Math.floor(Math.random() * o.keys));
          for (const i of indexes) written.add(i);
          await db.transaction(async (tx) => {
            for (const i of indexes) tx.put(keyName(o.prefix, i), value);
          });
        } else {
          written.add(index); // before the call: a failed put may still have been applied
          await db.put(key, value);
        }
        (isRead ? reads : writes).recordMs(performance.now() - t0);
        done++;
      } catch (err) {
        const code = err instanceof DstoreError ? err.code : 'OTHER';
        errors.set(code, (errors.get(code) ?? 0) + 1);
        const sample = describeError(err);
        if (errorSamples.length < MAX_ERROR_SAMPLES && !errorSamples.includes(sample)) errorSamples.push(sample);
      }
    }
  };
  try {
    await Promise.all(Array.from({ length: o.concurrency }, caller));
  } finally {
    clearInterval(ticker);
  }
  return { reads, writes, errors, errorSamples, elapsedS: (performance.now() - start) / 1000 };
}

/** Writes keys 0..keys-1 once with `concurrency` callers. */
async function preload(
  db: Db,
  prefix: string,
  keys: number,
  concurrency: number,
  value: Uint8Array,
  written: WrittenKeys,
  shouldStop: () => boolean,
): Promise<void> {
  let next = 0;
  const caller = async (): Promise<void> => {
    while (next < keys && !shouldStop()) {
      const i = next++;
      written.add(i);
      await db.put(keyName(prefix, i), value);
    }
  };
  await Promise.all(Array.from({ length: Math.min(concurrency, keys) }, caller));
}

/** Deletes every key the bench wrote; returns how many could not be deleted (and one reason). */
export async function deleteWritten(
  db: Db,
  prefix: string,
  written: WrittenKeys,
  concurrency: number,
  shouldStop: () => boolean,
): Promise<{ failed: number; sample?: string }> {
  let next = 0;
  let failed = 0;
  let sample: string | undefined;
  const caller = async (): Promise<void> => {
    while (next < written.size && !shouldStop()) {
      const i = next++;
      if (!written.has(i)) continue;
      try {
        await db.delete(keyName(prefix, i));
      } catch (err) {
        failed++;
        sample ??= describeError(err);
      }
    }
  };
  await Promise.all(Array.from({ length: Math.max(1, Math.min(concurrency, written.count)) }, caller));
  // Stopped early: what was not reached counts as not deleted.
  for (let i = next; i < written.size; i++) if (written.has(i)) failed++;
  return sample === undefined ? { failed } : { failed, sample };
}

/** Deletes the written keys, saying so; a key left behind is reported with the prefix to find it. */
async function cleanUpWritten(db: Db, o: BenchOptions, written: WrittenKeys, shouldStop: () => boolean): Promise<void> {
  const err = process.stderr;
  const t0 = performance.now();
  err.write(`deleting the ${int(written.count)} keys written (prefix ${JSON.stringify(o.prefix)}) …\n`);
  const { failed, sample } = await deleteWritten(db, o.prefix, written, o.concurrency, shouldStop);
  if (failed === 0) {
    err.write(`deleted ${int(written.count)} keys in ${((performance.now() - t0) / 1000).toFixed(1)} s\n`);
    return;
  }
  throw new CliFailure(
    `${int(failed)} of the ${int(written.count)} keys written (prefix ${JSON.stringify(o.prefix)}) were not ` +
      `deleted${sample ? ` (${sample})` : ''}; find them with dstore dump --all`,
  );
}

/** What a temporary cluster (`--spawn`, bench:compare) is made of. */
export interface TempClusterOptions {
  readonly backend: BackendName;
  readonly sync: SyncMode;
  readonly valueSize: number;
  readonly logLevel: string;
  readonly clusterToken?: string;
}

/** A temporary cluster in `dataDir` (3 storage servers, R=3), not started yet. */
export function createTempCluster(dataDir: string, o: TempClusterOptions): LocalCluster {
  return LocalCluster.create({
    dataDir,
    host: '127.0.0.1',
    port: 0,
    storagePort: 0,
    storageIds: Array.from({ length: SPAWN_STORAGE_SERVERS }, (_, i) => `s${i + 1}`),
    partitions: 16,
    replicas: SPAWN_REPLICAS,
    minWriteReplicas: 2,
    backend: o.backend,
    sync: o.sync,
    heartbeatMs: 1000,
    deadAfterMs: 5000,
    maxValueBytes: Math.max(1024 * 1024, o.valueSize),
    logLevel: o.logLevel,
    startTimeoutMs: 30_000,
    ...(o.clusterToken === undefined ? {} : { clusterToken: o.clusterToken }),
  });
}

/** Starts `cluster` and waits until it serves; a failed start's error carries the node's log tail. */
export async function startTempCluster(cluster: LocalCluster, clusterToken: string | undefined): Promise<void> {
  await cluster
    .start((ns) => openDb({ nameserver: ns, timeoutMs: 2000, ...(clusterToken === undefined ? {} : { clusterToken }) }))
    .catch((e: unknown) => {
      throw e instanceof ClusterStartError && e.logTail
        ? new ClusterStartError(`${e.message}\nlast lines of ${e.logPath}:\n${e.logTail}`, e.node, e.logPath, '')
        : e;
    });
}

export async function runBench(o: BenchOptions): Promise<void> {
  const err = process.stderr;
  const isTTY = Boolean(err.isTTY);
  let stopRequested = false;
  let cluster: LocalCluster | undefined;
  let tempDir: string | undefined;
  let secondSignal = false;
  const onSignal = (signal: NodeJS.Signals): void => {
    if (stopRequested) {
      secondSignal = true;
      err.write(`\n${signal} again: exiting\n`);
      cluster?.killAllNow();
      if (tempDir) rmSync(tempDir, { recursive: true, force: true });
      process.exit(130);
    }
    stopRequested = true;
    err.write(
      `\n${signal}: stopping the load (again to exit at ` +
        `once${o.spawn || o.keep ? '' : ', leaving the keys written'})\n`,
    );
    // During the start there is no load to stop: stopping the cluster ends the start.
    cluster?.close().catch((e: unknown) => err.write(`error while stopping the cluster: ${describeError(e)}\n`));
  };
  process.on('SIGINT', onSignal);
  process.on('SIGTERM', onSignal);
  try {
    let nameserver = o.nameserver;
    if (o.spawn) {
      tempDir = mkdtempSync(join(tmpdir(), 'dstore-bench-'));
      err.write(
        `starting a temporary cluster: ${SPAWN_STORAGE_SERVERS} storage servers, R=${SPAWN_REPLICAS}, ` +
          `${o.backend}, in ${tempDir} …\n`,
      );
      cluster = createTempCluster(tempDir, o);
      await startTempCluster(cluster, o.clusterToken);
      nameserver = cluster.nameserverAddress;
      err.write(`cluster ready at ${nameserver}\n`);
    }
    const db = await openDb({
      nameserver,
      timeoutMs: o.timeoutMs,
      ...(o.attemptTimeoutMs === undefined ? {} : { attemptTimeoutMs: o.attemptTimeoutMs }),
      ...(o.clusterToken === undefined ? {} : { clusterToken: o.clusterToken }),
    });
    const written = new WrittenKeys(o.keys);
    // A cluster of the user's (not --spawn): say where the load goes, and clean it up after.
    const cleanUp = !o.spawn && !o.keep;
    if (!o.spawn) {
      err.write(
        `writing keys ${keyName(o.prefix, 0)} … ${keyName(o.prefix, o.keys - 1)} (prefix ` +
          `${JSON.stringify(o.prefix)}); ` +
          `${cleanUp ? 'they are deleted at the end (--keep keeps them)' : 'kept at the end (--keep)'}\n`,
      );
    }
    try {
      if (o.preload && o.ratio.reads > 0 && !stopRequested) {
        const t0 = performance.now();
        await preload(db, o.prefix, o.keys, o.concurrency, makeValue(o.valueSize), written, () => stopRequested);
        err.write(`preloaded ${int(o.keys)} keys in ${((performance.now() - t0) / 1000).toFixed(1)} s\n`);
      }
      const result = await runLoad(
        db,
        o,
        written,
        (elapsedS, total, lastSecond) => {
          const line =
            `${elapsedS.toFixed(0).padStart(4)}s  ${int(lastSecond).padStart(9)} ops/s  ` +
            `(${int(total / elapsedS)} ops/s so far, ${int(total)} ops)`;
          err.write(isTTY ? `\r\x1b[K${line}` : `${line}\n`);
        },
        () => stopRequested,
      );
      if (isTTY) err.write('\r\x1b[K');
      const both = new Histogram();
      both.add(result.reads);
      both.add(result.writes);
      const report: BenchReport = {
        config: {
          nameserver,
          concurrency: o.concurrency,
          durationS: o.durationS,
          valueSize: o.valueSize,
          keys: o.keys,
          ratio: `${o.ratio.reads}:${o.ratio.writes}`,
          ...((o.txnKeys ?? 0) > 0 ? { txnKeys: o.txnKeys } : {}),
          ...(o.spawn
            ? {
                spawned: {
                  storageServers: SPAWN_STORAGE_SERVERS,
                  replicas: SPAWN_REPLICAS,
                  backend: o.backend,
                  sync: o.sync,
                },
              }
            : {}),
        },
        elapsedS: result.elapsedS,
        reads: stats(result.reads, result.elapsedS),
        writes: stats(result.writes, result.elapsedS),
        total: stats(both, result.elapsedS),
        errors: Object.fromEntries(result.errors),
      };
      process.stdout.write(`${o.json ? JSON.stringify(report, null, 2) : formatReport(report)}\n`);
      for (const sample of result.errorSamples) err.write(`error sample: ${sample}\n`);
    } finally {
      try {
        if (cleanUp && written.count > 0) await cleanUpWritten(db, o, written, () => secondSignal);
      } finally {
        await db.close();
      }
    }
  } finally {
    process.off('SIGINT', onSignal);
    process.off('SIGTERM', onSignal);
    if (cluster) {
      err.write('stopping the temporary cluster …\n');
      await cluster.close();
    }
    if (tempDir) rmSync(tempDir, { recursive: true, force: true });
  }
}

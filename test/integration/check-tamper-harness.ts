/**
 * Helpers of the `dstore check` tamper tests (check-tamper.test.ts, issue 13, S16): run
 * `dstore check --json` as a real process and parse its report, wait (bounded) until it
 * checks clean with a given node back among the members, remember acknowledged writes and
 * read them back, and rewrite a stored value behind dstore's back: in a stopped node's LMDB
 * environment, or in a running node's Redis, always as a *valid* record (encodeStoredValue,
 * the checksum bound to the key, the same version): a silent divergence, no checksum failure.
 */
import assert from 'node:assert/strict';
import { join } from 'node:path';
import type { Redis } from 'ioredis';
import { open as openLmdb } from 'lmdb';
import type { Db } from '../../src/client/api.js';
import { decodeStoredValue, encodeStoredValue } from '../../src/storage/log-record.js';
import { runDstore } from '../shared/dstore.js';
import { type LocalCluster, waitFor } from './cluster.js';

/** One member's entry in `dstore check --json`. */
export interface CheckMemberJson {
  readonly node: string;
  readonly role: 'primary' | 'secondary';
  readonly digest?: string;
  readonly keys?: number;
  readonly error?: string;
}

/** One partition's entry in `dstore check --json` (src/cli/check.ts checkToJson). */
export interface CheckPartitionJson {
  readonly partition: number;
  readonly epoch: number;
  readonly seq?: number;
  readonly members: readonly CheckMemberJson[];
  readonly agree?: boolean;
  readonly odd: readonly string[];
  readonly differing: ReadonlyArray<{ readonly key: string | { hex: string }; readonly replicas: unknown }>;
  readonly differingTruncated: boolean;
  readonly repaired: readonly string[];
  readonly error?: string;
}

export interface CheckRun {
  readonly code: number | null;
  readonly ok?: boolean;
  readonly partitions: readonly CheckPartitionJson[];
  readonly stdout: string;
  readonly stderr: string;
}

/** `dstore check --json [args…]` against the cluster; the exit code and the parsed report. */
export async function runCheck(cluster: LocalCluster, args: readonly string[] = []): Promise<CheckRun> {
  const r = await runDstore(['check', '--nameserver', cluster.nameserverAddress, '--json', ...args], {
    timeoutMs: 60_000,
  });
  const stdout = r.stdout.toString();
  const stderr = r.stderr.toString();
  let parsed: { ok?: boolean; partitions?: CheckPartitionJson[] } = {};
  try {
    if (stdout.trim() !== '') parsed = JSON.parse(stdout) as typeof parsed;
  } catch (err) {
    throw new Error(`dstore check printed no JSON (exit ${r.code}): ${(err as Error).message}: ${stdout} ${stderr}`);
  }
  return { code: r.code, ok: parsed.ok, partitions: parsed.partitions ?? [], stdout, stderr };
}

/** The report of partition `p`; fails the test when the run has none. */
export function partitionOfRun(run: CheckRun, p: number): CheckPartitionJson {
  const found = run.partitions.find((x) => x.partition === p);
  assert.ok(found, `dstore check reported no partition ${p} (exit ${run.code}): ${run.stdout} ${run.stderr}`);
  return found;
}

/** A short, readable line per partition of a run, for failure messages. */
export function describeRun(run: CheckRun): string {
  const parts = run.partitions.map(
    (p) =>
      `p${p.partition}@${p.seq ?? '-'}: agree=${p.agree} odd=[${p.odd.join(',')}] ` +
      `members=[${p.members.map((m) => `${m.node}:${m.digest?.slice(0, 8) ?? `error(${m.error})`}`).join(' ')}]` +
      (p.error ? ` error=${p.error}` : ''),
  );
  return `exit ${run.code}; ${parts.join('; ')}${run.stderr.trim() ? `; stderr: ${run.stderr.trim()}` : ''}`;
}

/**
 * Waits (bounded) until `dstore check` exits 0 with `node` among the members (primary or
 * secondary) of every partition in `partitions`, each with R members: the node relearned and
 * is compared again, not merely left out. Returns that run.
 */
export async function waitCheckClean(
  cluster: LocalCluster,
  node: string,
  partitions: readonly number[],
  replicas: number,
  timeoutMs = 60_000,
): Promise<CheckRun> {
  let last: CheckRun | undefined;
  try {
    return await waitFor(
      `dstore check to exit 0 with ${node} a compared member of partitions ${partitions.join(',')}`,
      async () => {
        last = await runCheck(cluster);
        if (last.code !== 0) return undefined;
        const back = partitions.every((p) => {
          const members = partitionOfRun(last!, p).members;
          return members.length === replicas && members.some((m) => m.node === node && m.digest !== undefined);
        });
        return back ? last : undefined;
      },
      timeoutMs,
      250,
    );
  } catch (err) {
    throw new Error(`${(err as Error).message}; last check: ${last ? describeRun(last) : 'none'}`);
  }
}

/** Acknowledged writes, by key: the value and version each last acknowledged put returned. */
export class Acked {
  readonly values = new Map<string, { value: string; version: number }>();

  async put(db: Db, key: string, value: string): Promise<void> {
    const version = await db.put(key, value);
    this.values.set(key, { value, version });
  }

  /** Every key whose read back differs from its acknowledged value, with what was read. */
  async lost(db: Db): Promise<string[]> {
    const out: string[] = [];
    for (const [key, want] of this.values) {
      const got = await db.get(key);
      const text = got ? Buffer.from(got.value).toString('utf8') : undefined;
      if (text !== want.value || got?.version !== want.version)
        out.push(`${key}: read ${JSON.stringify(text)} v${got?.version}, acknowledged ${want.value} v${want.version}`);
    }
    return out;
  }
}

/**
 * In the LMDB environment of a *stopped* storage server (`<dataDir>/lmdb`, database `data`,
 * keys partition·generation·key: src/storage/lmdb/layout.ts), replaces the stored value of
 * `key` in partition `p` (its newest generation) with a valid record of `newValue` at the
 * same version. Returns that version.
 */
export async function rewriteLmdbValue(dataDir: string, p: number, key: string, newValue: string): Promise<number> {
  const env = openLmdb<Buffer, Buffer>({
    path: join(dataDir, 'lmdb'),
    maxDbs: 8,
    keyEncoding: 'binary',
    encoding: 'binary',
    eventTurnBatching: false,
  });
  try {
    const data = env.openDB<Buffer, Buffer>('data', { keyEncoding: 'binary', encoding: 'binary' });
    const keyBytes = Buffer.from(key, 'utf8');
    let found: { dataKey: Buffer; raw: Buffer; generation: number } | undefined;
    for (const { key: k, value } of data.getRange()) {
      const dk = Buffer.from(k);
      if (dk.length !== 8 + keyBytes.length || dk.readUInt32BE(0) !== p || !dk.subarray(8).equals(keyBytes)) continue;
      const generation = dk.readUInt32BE(4);
      if (!found || generation > found.generation) found = { dataKey: dk, raw: Buffer.from(value), generation };
    }
    assert.ok(found, `no stored value of ${key} (partition ${p}) in ${dataDir}/lmdb`);
    const { version } = decodeStoredValue(found.raw, keyBytes, `${key}`, (b) => b);
    const record = encodeStoredValue(keyBytes, version, Buffer.from(newValue, 'utf8'));
    await data.put(found.dataKey, record);
    const back = data.get(found.dataKey);
    assert.ok(back && Buffer.from(back).equals(record), `the rewritten value of ${key} did not read back`);
    return version;
  } finally {
    await env.close();
  }
}

/**
 * In a *running* storage server's Redis (`ds:d:<p>:<g>`, src/storage/redis.ts), replaces the
 * stored value of `key` in partition `p` with a valid record of `newValue` at the same version.
 * Returns that version.
 */
export async function rewriteRedisValue(redis: Redis, p: number, key: string, newValue: string): Promise<number> {
  const generation = await redis.hget(`ds:p:${p}`, 'g');
  assert.ok(generation !== null, `partition ${p} has no generation in Redis`);
  const hash = `ds:d:${p}:${generation}`;
  const keyBytes = Buffer.from(key, 'utf8');
  const raw = await redis.hgetBuffer(hash, keyBytes);
  assert.ok(raw, `no stored value of ${key} in ${hash}`);
  const { version } = decodeStoredValue(raw, keyBytes, key, (b) => b);
  await redis.hset(hash, keyBytes, encodeStoredValue(keyBytes, version, Buffer.from(newValue, 'utf8')));
  return version;
}

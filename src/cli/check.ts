/**
 * `dstore check [--partition N] [--repair] [--json]` (issue 13, S16): compares every
 * partition's replicas at one digest entry each (src/check/replicas.ts), names the keys that
 * differ, and with --repair has each odd replica relearn its partition.
 *
 * Exit codes: 0 every partition checked and its replicas agree; 1 some replicas differ
 * (repaired or not); 2 no divergence found, but some partition could not be checked.
 */
import type { Admin } from '../client/client.js';
import { checkPartition, type CheckTransport, type PartitionCheck } from '../check/replicas.js';
import { InvalidArgumentError } from '../core/errors.js';
import { type ClientCliOptions, CliExit, withAdmin } from './commands.js';
import { bytesToJson, colourWanted, formatKey, makeStyle, table } from './format.js';

export interface CheckCliOptions extends ClientCliOptions {
  readonly partition?: number;
  readonly repair?: boolean;
  readonly json?: boolean;
}

/** Partitions checked at once: each logs up to two digest entries and waits for every member. */
const PARALLEL = 4;

export async function checkCommand(o: CheckCliOptions): Promise<void> {
  const results = await withAdmin(o, (admin) => checkCluster(admin, o));
  if (o.json) process.stdout.write(`${JSON.stringify(checkToJson(results), null, 2)}\n`);
  else process.stdout.write(`${formatCheck(results, colourWanted(Boolean(process.stdout.isTTY)))}\n`);
  if (results.some((r) => r.agree === false)) throw new CliExit(1);
  if (results.some((r) => r.agree === undefined)) throw new CliExit(2);
}

async function checkCluster(db: Admin, o: CheckCliOptions): Promise<PartitionCheck[]> {
  const map = await db.clusterMap();
  if (o.partition !== undefined && o.partition >= map.partitions)
    throw new InvalidArgumentError(`partition ${o.partition} does not exist (the cluster has ${map.partitions})`);
  const addressOf = (node: string): string => {
    const a = map.addresses[node];
    if (a === undefined) throw new InvalidArgumentError(`the cluster map has no address for ${node}`);
    return a;
  };
  const t: CheckTransport = {
    propose: (p, buckets) => db.proposeDigest(p, buckets),
    digestAt: (node, p, seq) => db.digestAt(addressOf(node), p, seq),
    relearn: (node, p, seq, digest, reason) => db.relearn(addressOf(node), p, seq, digest, reason),
  };
  const configs = map.configs
    .filter((c) => o.partition === undefined || c.partition === o.partition)
    .sort((a, b) => a.partition - b.partition);
  const results: PartitionCheck[] = [];
  const progress = process.stderr.isTTY && !o.json && configs.length > 1;
  let next = 0;
  const worker = async (): Promise<void> => {
    for (let i = next++; i < configs.length; i = next++) {
      results.push(await checkPartition(t, configs[i]!, { repair: o.repair === true }));
      if (progress) process.stderr.write(`\rchecked ${results.length}/${configs.length} partitions`);
    }
  };
  await Promise.all(Array.from({ length: Math.min(PARALLEL, configs.length) }, worker));
  if (progress) process.stderr.write('\r\x1b[K');
  return results.sort((a, b) => a.partition - b.partition);
}

export function formatCheck(results: readonly PartitionCheck[], colour: boolean): string {
  const style = makeStyle(colour);
  const rows: string[][] = [['PARTITION', 'SEQ', 'REPLICAS', 'KEYS', 'RESULT']];
  const details: string[] = [];
  for (const r of results) {
    const keys = [...new Set(r.members.flatMap((m) => (m.keys === undefined ? [] : [m.keys])))].join('/');
    const result =
      r.agree === true
        ? style.green('agree')
        : r.agree === false
          ? style.red(`DIFFER${r.odd.length > 0 ? ` (odd: ${r.odd.join(', ')})` : ' (no majority)'}`)
          : style.yellow('unknown');
    rows.push([String(r.partition), r.seq === undefined ? '-' : String(r.seq), String(r.members.length), keys, result]);
    if (r.agree === false) {
      details.push(`partition ${r.partition} at seq ${r.seq}:`);
      for (const m of r.members) details.push(`  ${m.node} (${m.role}): ${m.digest ?? m.error} keys ${m.keys ?? '?'}`);
      for (const k of r.differing) {
        const per = Object.entries(k.replicas)
          .map(([n, v]) => `${n}=${v === null ? 'absent' : `v${v.version}:${v.hash.slice(0, 8)}`}`)
          .join(' ');
        details.push(`  key ${formatKey(k.key)}: ${per}`);
      }
      if (r.differingTruncated) details.push('  (more keys differ)');
      if (r.repaired.length > 0) details.push(`  relearning: ${r.repaired.join(', ')}`);
      else if (r.odd.length === 0) details.push('  no majority agrees: nothing repaired (S16)');
    }
    if (r.error !== undefined) details.push(`partition ${r.partition}: ${r.error}`);
  }
  const agree = results.filter((r) => r.agree === true).length;
  const differ = results.filter((r) => r.agree === false).length;
  const summary =
    `${results.length} partitions: ${agree} agree, ${differ} differ` +
    (results.length - agree - differ > 0 ? `, ${results.length - agree - differ} not fully checked` : '');
  return [table(rows, new Set([0, 1, 2, 3])), ...(details.length > 0 ? ['', ...details] : []), '', summary].join('\n');
}

export function checkToJson(results: readonly PartitionCheck[]): unknown {
  return {
    ok: results.every((r) => r.agree === true),
    partitions: results.map((r) => ({
      ...r,
      differing: r.differing.map((k) => ({ key: bytesToJson(k.key), replicas: k.replicas })),
    })),
  };
}

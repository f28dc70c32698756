/**
 * The client-side commands: `dstore client` (the shell against a running cluster) and the
 * one-shot commands for scripts — put, get (exit 1 when absent), del, dump, nodes.
 */
import { isatty } from 'node:tty';
import type { ConfigReply, Db, WriteOptions } from '../client/api.js';
import type { Admin } from '../client/client.js';
import { keyBytes, readPutValue } from './argv.js';
import { UsageError } from '../process/errors.js';
import {
  bytesToJson,
  colourWanted,
  dumpToJson,
  formatDump,
  formatNodes,
  formatScan,
  formatValue,
  makeStyle,
  scanToJson,
  toHex,
  utf8OrUndefined,
} from './format.js';
import { nodesWithFreshKeys } from './nodes-view.js';
import { describeError, DUMP_ALL_LIMIT, DUMP_DEFAULT_LIMIT, formatTtl, runShell } from './shell.js';
import { quoteArg } from './tokenize.js';

export interface ClientCliOptions {
  readonly nameserver: string;
  readonly timeoutMs: number;
  /** Bound on one attempt (client default when undefined). */
  readonly attemptTimeoutMs?: number;
  readonly clusterToken?: string;
}

/** Ends the command with this exit code (e.g. 1 for `get` of an absent key). */
export class CliExit extends Error {
  constructor(readonly exitCode: number) {
    super(`exit ${exitCode}`);
    this.name = 'CliExit';
  }
}

/** Bound on the shell's greeting lookup, in ms (the shell starts even when the cluster is down). */
const GREETING_TIMEOUT_MS = 2000;

/** `lazy`: do not check that the nameserver answers before returning (connect()'s option). */
export async function openDb(o: ClientCliOptions, timeoutMs = o.timeoutMs, lazy = true): Promise<Db> {
  const { connect } = await import('../client/index.js');
  return connect(o.nameserver, {
    timeoutMs,
    lazy,
    ...(o.attemptTimeoutMs === undefined ? {} : { attemptTimeoutMs: o.attemptTimeoutMs }),
    ...(o.clusterToken === undefined ? {} : { clusterToken: o.clusterToken }),
  });
}

/**
 * Administration commands (check, backup, restore): the client with its calls to one storage
 * server, checked against the nameserver first like the one-shot commands; closed after `fn`.
 */
export async function withAdmin<T>(o: ClientCliOptions, fn: (admin: Admin) => Promise<T>): Promise<T> {
  const { connectAdmin } = await import('../client/index.js');
  const admin = await connectAdmin(o.nameserver, {
    timeoutMs: o.timeoutMs,
    ...(o.attemptTimeoutMs === undefined ? {} : { attemptTimeoutMs: o.attemptTimeoutMs }),
    ...(o.clusterToken === undefined ? {} : { clusterToken: o.clusterToken }),
  });
  try {
    return await fn(admin);
  } finally {
    await admin.close();
  }
}

/** One-shot commands check the nameserver first: a wrong address fails with one line, exit 1. */
async function withDb<T>(o: ClientCliOptions, fn: (db: Db) => Promise<T>, lazy = false): Promise<T> {
  const db = await openDb(o, o.timeoutMs, lazy);
  try {
    return await fn(db);
  } finally {
    await db.close();
  }
}

const out = (text: string): void => {
  process.stdout.write(`${text}\n`);
};
const json = (value: unknown): void => out(JSON.stringify(value, null, 2));

export async function clientCommand(o: ClientCliOptions): Promise<void> {
  const isTTY = Boolean(process.stdin.isTTY && process.stdout.isTTY);
  const greeting = isTTY ? await greetingFor(o) : undefined;
  await withDb(
    o,
    async (db) => {
      await runShell({
        db,
        input: process.stdin,
        output: process.stdout,
        isTTY,
        ...(greeting === undefined ? {} : { greeting }),
      });
    },
    true,
  ); // the shell starts even when the cluster is down
}

const GREETING_HINT = 'type help for commands; quit, Ctrl-D or Ctrl-C at an empty prompt leaves';

async function greetingFor(o: ClientCliOptions): Promise<string> {
  const style = makeStyle(colourWanted(true));
  const db = await openDb(o, GREETING_TIMEOUT_MS);
  try {
    const info = await db.nodes();
    const storage = info.nodes.filter((n) => n.role === 'storage');
    const alive = storage.filter((n) => n.state === 'alive').length;
    return (
      `connected to ${o.nameserver}: cluster ${info.clusterId.slice(0, 8)}, ${alive}/${storage.length} storage ` +
      `servers alive, ${info.partitions} partitions, ` +
      `R=${info.replicas}${info.formed ? '' : style.yellow(' (not formed yet)')}\n${style.dim(GREETING_HINT)}`
    );
  } catch (err) {
    const why = describeError(err);
    const warning = `the nameserver at ${o.nameserver} did not answer (${why}); commands will keep trying`;
    return `${style.yellow(warning)}\n${style.dim(GREETING_HINT)}`;
  } finally {
    await db.close();
  }
}

/** How a key given on the command line is shown back: as typed (hex with --key-hex). */
function keyShown(key: string, keyHex: boolean | undefined): string {
  return keyHex ? `${key.toLowerCase()} (hex)` : quoteArg(key);
}

export async function putCommand(
  o: ClientCliOptions & { json?: boolean; file?: string; keyHex?: boolean; ifVersion?: number; ttl?: number },
  key: string,
  value: string | undefined,
): Promise<void> {
  const k = keyBytes(key, o.keyHex);
  // Read the value before connecting: bad input fails fast, with nothing sent.
  const v = await readPutValue(value, o.file, () => ({ isTTY: isatty(0), stream: process.stdin }));
  const version = await withDb(o, (db) => db.put(k, v, writeOptionsOf(o)));
  if (o.json) json({ version });
  else out(`OK (version ${version})`);
}

export async function getCommand(
  o: ClientCliOptions & { json?: boolean; raw?: boolean; keyHex?: boolean },
  key: string,
): Promise<void> {
  const got = await getOrExit(o, key);
  if (o.json) {
    json({ value: bytesToJson(got.value), version: got.version });
  } else if (o.raw) {
    await new Promise<void>((resolve, reject) =>
      process.stdout.write(got.value, (err) => (err ? reject(err) : resolve())),
    );
  } else {
    const text = utf8OrUndefined(got.value);
    if (text !== undefined) out(text);
    else out(`${formatValue(got.value, Number.MAX_SAFE_INTEGER)} (use --raw for the bytes)`);
  }
}

export async function delCommand(
  o: ClientCliOptions & { json?: boolean; keyHex?: boolean; ifVersion?: number },
  key: string,
): Promise<void> {
  const k = keyBytes(key, o.keyHex);
  const existed = await withDb(o, (db) => db.delete(k, writeOptionsOf(o)));
  if (o.json) json({ existed });
  else
    out(
      existed
        ? `OK deleted ${keyShown(key, o.keyHex)}`
        : `(not found) no key ${keyShown(key, o.keyHex)}; nothing deleted`,
    );
}

/** §16: `--if-version` and `--ttl` as the client's write options. */
function writeOptionsOf(o: { ifVersion?: number; ttl?: number }): WriteOptions {
  return {
    ...(o.ifVersion === undefined ? {} : { ifVersion: o.ifVersion }),
    ...(o.ttl === undefined ? {} : { ttlMs: o.ttl }),
  };
}

type TxnOp = { t: 'get'; key: string } | { t: 'put'; key: string; value: string } | { t: 'del'; key: string };

/** `dstore txn` OPS: `get K`, `put K V`, `del K`, in order; a usage error (exit code 2) otherwise. */
export function parseTxnOps(words: readonly string[]): TxnOp[] {
  const ops: TxnOp[] = [];
  for (let i = 0; i < words.length; ) {
    const w = words[i]!;
    const key = words[i + 1];
    if ((w === 'get' || w === 'del' || w === 'delete') && key !== undefined) {
      ops.push(w === 'get' ? { t: 'get', key } : { t: 'del', key });
      i += 2;
    } else if ((w === 'put' || w === 'set') && key !== undefined && words[i + 2] !== undefined) {
      ops.push({ t: 'put', key, value: words[i + 2]! });
      i += 3;
    } else
      throw new UsageError(
        `txn: cannot read ${JSON.stringify(words.slice(i).join(' '))}; ops are get KEY, put KEY VALUE, del KEY`,
      );
  }
  return ops;
}

/** Issue 14: one transaction from the command line; prints each get's value (or JSON with --json). */
export async function txnCommand(
  o: ClientCliOptions & {
    json?: boolean;
    txnTimeoutMs: number;
    maxKeys: number;
    maxBytes: number;
    maxAttempts: number;
  },
  words: readonly string[],
): Promise<void> {
  const ops = parseTxnOps(words);
  const reads = await withDb(o, (db) =>
    db.transaction(
      async (tx) => {
        const got: Array<{ key: string; value: string | null }> = [];
        for (const op of ops) {
          if (op.t === 'get') {
            const r = await tx.get(op.key);
            got.push({ key: op.key, value: r === undefined ? null : Buffer.from(r.value).toString('utf8') });
          } else if (op.t === 'put') tx.put(op.key, op.value);
          else tx.delete(op.key);
        }
        return got;
      },
      { timeoutMs: o.txnTimeoutMs, maxKeys: o.maxKeys, maxBytes: o.maxBytes, maxAttempts: o.maxAttempts },
    ),
  );
  const writes = ops.filter((op) => op.t !== 'get').length;
  if (o.json) json({ committed: true, reads });
  else {
    for (const r of reads) out(r.value === null ? `${r.key}: (not found)` : `${r.key}: ${r.value}`);
    out(
      `OK committed (${writes} write${writes === 1 ? '' : 's'}, ${reads.length} read${reads.length === 1 ? '' : 's'})`,
    );
  }
}

/** KEY's value, or exit code 1 saying it is absent (`null` first with --json). */
async function getOrExit(
  o: ClientCliOptions & { json?: boolean; keyHex?: boolean },
  key: string,
): Promise<NonNullable<Awaited<ReturnType<Db['get']>>>> {
  const k = keyBytes(key, o.keyHex);
  const got = await withDb(o, (db) => db.get(k));
  if (got !== undefined) return got;
  if (o.json) json(null);
  process.stderr.write(`(not found) no key ${keyShown(key, o.keyHex)}\n`);
  throw new CliExit(1);
}

/** §16: how long KEY has left; exit code 1 when it is absent. */
export async function ttlCommand(
  o: ClientCliOptions & { json?: boolean; keyHex?: boolean },
  key: string,
): Promise<void> {
  const got = await getOrExit(o, key);
  if (o.json) json({ ttlMs: got.ttlMs ?? null, version: got.version });
  else if (got.ttlMs === undefined) out(`${keyShown(key, o.keyHex)} does not expire`);
  else out(`${keyShown(key, o.keyHex)} expires in ${formatTtl(got.ttlMs)} (${got.ttlMs} ms)`);
}

export async function dumpCommand(
  o: ClientCliOptions & { json?: boolean; all?: boolean; limit?: number },
): Promise<void> {
  const limit = o.all ? DUMP_ALL_LIMIT : (o.limit ?? DUMP_DEFAULT_LIMIT);
  const dumps = await withDb(o, (db) => db.dump({ limit }));
  if (o.json) json(dumpToJson(dumps));
  else out(formatDump(dumps, makeStyle(colourWanted(Boolean(process.stdout.isTTY))), Boolean(o.all)));
  // A listing with a server missing is not a success, even though what was read is printed.
  const failed = dumps.filter((d) => d.error !== undefined);
  if (failed.length > 0) {
    process.stderr.write(
      `error: could not list the keys of ${failed.map((d) => `${d.nodeId} (${d.address}): ${d.error}`).join('; ')}\n`,
    );
    throw new CliExit(1);
  }
}

/**
 * Issue 14: `dstore scan`: a page of keys in byte order (with values when asked) and, when more
 * remain, the cursor to go on with (`--start-after`, hex with --key-hex for keys not UTF-8).
 */
export async function scanCommand(
  o: ClientCliOptions & {
    json?: boolean;
    prefix?: string;
    startAfter?: string;
    limit?: number;
    values?: boolean;
    keyHex?: boolean;
  },
): Promise<void> {
  const prefix = o.prefix === undefined ? undefined : keyBytes(o.prefix, o.keyHex);
  const startAfter = o.startAfter === undefined ? undefined : keyBytes(o.startAfter, o.keyHex);
  const result = await withDb(o, (db) =>
    db.scan({
      ...(prefix === undefined ? {} : { prefix }),
      ...(startAfter === undefined ? {} : { startAfter }),
      ...(o.limit === undefined ? {} : { limit: o.limit }),
      values: o.values === true,
    }),
  );
  if (o.json) {
    json(scanToJson(result));
    return;
  }
  const resume = (next: Uint8Array): string => {
    const text = utf8OrUndefined(next);
    // The prefix is given back the way the cursor is: hex when the cursor needs --key-hex.
    const hex = text === undefined || o.keyHex === true;
    const shownPrefix = prefix === undefined ? '' : ` --prefix ${hex ? toHex(prefix) : quoteArg(o.prefix!)}`;
    const after = hex ? `${toHex(next)} --key-hex` : quoteArg(text!);
    return `resume with dstore scan${shownPrefix} --start-after ${after}`;
  };
  out(formatScan(result, makeStyle(colourWanted(Boolean(process.stdout.isTTY))), resume));
}

export async function nodesCommand(o: ClientCliOptions & { json?: boolean }): Promise<void> {
  const info = await withDb(o, (db) => nodesWithFreshKeys(db));
  if (o.json) json(info);
  else out(formatNodes(info, makeStyle(colourWanted(Boolean(process.stdout.isTTY))), Date.now()));
}

/**
 * Issue 15: `dstore config get [setting]` and `dstore config set <setting> <value> [--node]
 * [--force]`: the live settings at the nameserver. A refused switch is its typed error (exit 2
 * for INVALID_ARGUMENT, e.g. a weakening switch without --force, with what it weakens).
 */
export async function configCommand(
  o: ClientCliOptions & { node?: string; force?: boolean; json?: boolean },
  action: string,
  setting: string | undefined,
  value: string | undefined,
): Promise<void> {
  const { LIVE_SETTING_NAMES } = await import('../core/nameserver/live.js');
  if (action === 'get') {
    if (value !== undefined) throw new UsageError('config get takes at most one setting');
    if (setting !== undefined && !(LIVE_SETTING_NAMES as readonly string[]).includes(setting))
      throw new UsageError(`unknown setting '${setting}' (settings: ${LIVE_SETTING_NAMES.join(', ')})`);
    const reply = await withDb(o, (db) => callConfig(db, (c) => c()));
    if (o.json) json(setting === undefined ? reply : { [setting]: liveValue(reply.live, setting) });
    else out(formatLive(reply, setting));
    return;
  }
  if (action === 'set') {
    if (setting === undefined || value === undefined)
      throw new UsageError('usage: dstore config set <setting> <value>');
    const reply = await withDb(o, (db) =>
      callConfig(db, undefined, (set) =>
        set(setting, value, {
          ...(o.node === undefined ? {} : { node: o.node }),
          ...(o.force === true ? { force: true } : {}),
        }),
      ),
    );
    if (o.json) json(reply);
    else {
      out(`${reply.summary ?? `${setting} = ${value}`} (live settings epoch ${reply.live.epoch})`);
      if (reply.weakens !== undefined) out(`warning: ${reply.weakens}`);
    }
    return;
  }
  throw new UsageError(`config: unknown action '${action}' (get or set)`);
}

type ConfigGet = NonNullable<Db['config']>;
type ConfigSet = NonNullable<Db['setConfig']>;

async function callConfig(
  db: Db,
  get?: (c: ConfigGet) => Promise<ConfigReply>,
  set?: (s: ConfigSet) => Promise<ConfigReply>,
): Promise<ConfigReply> {
  if (!db.config || !db.setConfig) throw new UsageError('this client cannot reach live settings');
  if (get) return get(db.config.bind(db));
  return set!(db.setConfig.bind(db));
}

/** One setting's value as `config get` shows it (`sync`: per node, or "batch (every node)"). */
export function liveValue(live: ConfigReply['live'], setting: string): unknown {
  switch (setting) {
    case 'read-mode':
      return live.readMode;
    case 'min-write-replicas':
      return live.minWriteReplicas;
    case 'heartbeat-ms':
      return live.heartbeatMs;
    case 'dead-after-ms':
      return live.deadAfterMs;
    case 'log-level':
      return live.logLevel;
    case 'sync':
      return live.sync;
    default:
      return undefined;
  }
}

/** `config get`'s table: one line per setting (or the one asked for). */
export function formatLive(reply: ConfigReply, setting?: string): string {
  const { live } = reply;
  const names = ['read-mode', 'min-write-replicas', 'heartbeat-ms', 'dead-after-ms', 'log-level', 'sync'];
  const lines: string[] = [];
  for (const name of setting === undefined ? names : [setting]) {
    let v = liveValue(live, name);
    if (name === 'sync') {
      const entries = Object.entries(live.sync);
      v = entries.length === 0 ? "each node's --sync" : entries.map(([n, m]) => `${n}=${m}`).join(' ');
    }
    if (name === 'min-write-replicas') v = `${String(v)} (R=${reply.replicas})`;
    if (name === 'read-mode' && v === 'fast') v = 'fast (reads may be stale)';
    lines.push(`${name.padEnd(20)}${String(v)}`);
  }
  if (setting === undefined) lines.push(`${'epoch'.padEnd(20)}${live.epoch} (map version ${reply.mapVersion})`);
  return lines.join('\n');
}

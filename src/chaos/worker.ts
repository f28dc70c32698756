/**
 * The chaos run's client host: `node worker.js '<WorkerConfig as JSON>'`, started by the
 * runner with an IPC channel (protocol.ts), in the clients' network namespace when
 * partitions are on.
 *
 * 1. Waits (bounded) until the cluster is formed with every partition serving; says `ready`.
 * 2. On `start`: C clients, each with its own connection (`connect`), loop over put (45 %),
 *    get (45 %) and delete (10 %) on keys drawn from the seed, paced to `ratePerSec`
 *    overall. Every value written is unique (`c3-17`: client 3's 17th write), so the checker
 *    can tell writes apart. Each operation is recorded with its invocation and completion
 *    on the shared monotonic clock: `ok`; `unknown` (S9, `mayHaveApplied`) for OUTCOME_UNKNOWN, TIMEOUT, a lost
 *    connection or any error the client cannot classify (a write may have happened); `fail`
 *    for a definite error (the write did not happen). Batches go to the runner every 250 ms.
 * 3. On `stop`: ends the loops, waits for operations in flight (each bounded by the call
 *    deadline), then waits (bounded) for the cluster to settle — every storage server alive,
 *    every partition with R members, no learner, a serving primary — then reads every key
 *    once more (clients `final-<key>`), sends the rest of the history and exits.
 * The worker exits when the runner goes away (its IPC channel closes).
 */
import { setTimeout as sleep } from 'node:timers/promises';
import { ConditionFailedError, connect, DstoreError, type Db, mayHaveApplied } from '../client/index.js';
import { NameserverSeeds, parseSeeds } from '../rpc/seeds.js';
import { RpcPool } from '../rpc/transport.js';
import { tokenField } from '../rpc/token.js';
import {
  BANK_INITIAL,
  type ChaosOp,
  type FromWorker,
  monotonicMs,
  type ToWorker,
  type WorkerConfig,
} from './protocol.js';
import { Rng } from '../core/rng.js';

const FLUSH_EVERY_MS = 250;
const POLL_MS = 250;
/** After an error, a client pauses this long rather than spin on a partition that refuses. */
const ERROR_PAUSE_MS = 50;

const config = JSON.parse(process.argv[2] ?? '{}') as WorkerConfig;
const origin = BigInt(config.originNs);
const now = (): number => monotonicMs(origin);

function send(m: FromWorker): void {
  process.send?.(m);
}

let pending: ChaosOp[] = [];
function record(op: ChaosOp): void {
  pending.push(op);
}
function flush(): void {
  if (pending.length === 0) return;
  send({ t: 'ops', ops: pending });
  pending = [];
}

const opts = {
  timeoutMs: config.timeoutMs,
  attemptTimeoutMs: config.attemptTimeoutMs,
  ...(config.clusterToken === undefined ? {} : { clusterToken: config.clusterToken }),
};

function errorCode(err: unknown): string {
  return err instanceof DstoreError
    ? err.code
    : err instanceof Error
      ? `${err.name}: ${err.message.slice(0, 200)}`
      : String(err);
}

async function doOp(
  db: Db,
  client: string,
  op: 'put' | 'get' | 'delete',
  key: string,
  value: string,
): Promise<boolean> {
  const invoke = now();
  try {
    if (op === 'put') {
      await db.put(key, value);
      record({ client, op, key, value, invoke, complete: now(), status: 'ok' });
    } else if (op === 'get') {
      const got = await db.get(key);
      record({
        client,
        op,
        key,
        value: got ? Buffer.from(got.value).toString('utf8') : null,
        invoke,
        complete: now(),
        status: 'ok',
      });
    } else {
      const existed = await db.delete(key);
      record({ client, op, key, ...(config.deleteExisted ? { existed } : {}), invoke, complete: now(), status: 'ok' });
    }
    return true;
  } catch (err) {
    const complete = now();
    const base = { client, op, key, ...(op === 'put' ? { value } : {}), invoke, error: errorCode(err) };
    if (mayHaveApplied(err)) record({ ...base, complete: null, status: 'unknown', end: complete });
    else record({ ...base, complete, status: 'fail' });
    return false;
  }
}

/**
 * Issue 14: one increment of counter `key` by compare-and-set: a get, then a put of the
 * value + 1 with the version the get returned (0: absent, counting from 0). Both go in the
 * history: the put as a `cas` expecting the value read, so the checker holds it to that; a
 * CONDITION_FAILED (another client got there first) is a definite `fail`.
 */
async function casIncrement(db: Db, client: string, key: string): Promise<boolean> {
  const invoke = now();
  let got: Awaited<ReturnType<Db['get']>>;
  try {
    got = await db.get(key);
  } catch (err) {
    record({ client, op: 'get', key, invoke, complete: now(), status: 'fail', error: errorCode(err) });
    return false;
  }
  const read = got ? Buffer.from(got.value).toString('utf8') : null;
  record({ client, op: 'get', key, value: read, invoke, complete: now(), status: 'ok' });
  const next = String(Number(read ?? '0') + 1);
  const casInvoke = now();
  const base = { client, op: 'cas' as const, key, expect: read, value: next, invoke: casInvoke };
  try {
    await db.put(key, next, { ifVersion: got?.version ?? 0 });
    record({ ...base, complete: now(), status: 'ok' });
    return true;
  } catch (err) {
    const complete = now();
    if (mayHaveApplied(err))
      record({ ...base, complete: null, status: 'unknown', end: complete, error: errorCode(err) });
    else record({ ...base, complete, status: 'fail', error: errorCode(err) });
    // Losing the race is the workload working, not an error to back off from.
    return err instanceof ConditionFailedError;
  }
}

/**
 * Issue 14, the bank workload: a transfer of 1–10 between two accounts in one transaction
 * (never below 0). In the history it is a `cas` on each account (the balance read, the new
 * one), taking effect at the commit point: the linearizability checker judges every account's
 * register, and the audits check that transfers are atomic.
 */
async function bankTransfer(db: Db, client: string, rng: Rng): Promise<boolean> {
  const from = rng.pick(config.keys);
  let to = rng.pick(config.keys);
  if (to === from) to = config.keys[(config.keys.indexOf(from) + 1) % config.keys.length]!;
  const amount = 1 + Math.floor(rng.float() * 10);
  const balance = (got: { value: Uint8Array } | undefined): number => Number(Buffer.from(got?.value ?? []).toString());
  const invoke = now();
  // What the last run of the transaction function read and wrote.
  let last: { a: number; b: number; moved: number } | undefined;
  const casOps = (l: { a: number; b: number; moved: number }) => [
    { client, op: 'cas' as const, key: from, expect: String(l.a), value: String(l.a - l.moved), invoke },
    { client, op: 'cas' as const, key: to, expect: String(l.b), value: String(l.b + l.moved), invoke },
  ];
  try {
    await db.transaction(async (tx) => {
      const a = balance(await tx.get(from));
      const b = balance(await tx.get(to));
      const moved = Math.min(amount, a);
      last = { a, b, moved };
      tx.put(from, String(a - moved));
      tx.put(to, String(b + moved));
    });
    const complete = now();
    for (const op of casOps(last!)) record({ ...op, complete, status: 'ok' });
    return true;
  } catch (err) {
    const complete = now();
    // The last run's writes may have committed (S9): both are unknown. An abort changed nothing.
    if (last !== undefined && mayHaveApplied(err))
      for (const op of casOps(last))
        record({ ...op, complete: null, status: 'unknown', end: complete, error: errorCode(err) });
    return false;
  }
}

/** Issue 14: an audit: every account read in one read-only transaction; its sum goes to the runner. */
async function bankAudit(db: Db, client: string): Promise<boolean> {
  const invoke = now();
  try {
    const balances = await db.transaction(async (tx) => {
      const out: Array<[string, string | null]> = [];
      for (const key of config.keys) {
        const got = await tx.get(key);
        out.push([key, got ? Buffer.from(got.value).toString() : null]);
      }
      return out;
    });
    const complete = now();
    for (const [key, value] of balances) record({ client, op: 'get', key, value, invoke, complete, status: 'ok' });
    auditTotals.push(balances.reduce((s, [, v]) => s + Number(v ?? 0), 0));
    return true;
  } catch {
    return false; // a read-only transaction that gave up changed nothing
  }
}

const auditTotals: number[] = [];

let running = false;

async function clientLoop(index: number, db: Db): Promise<void> {
  const name = `c${index}`;
  const rng = new Rng((config.seed * 1000 + index + 1) >>> 0);
  const periodMs = (config.clients * 1000) / config.ratePerSec;
  let writes = 0;
  let nextAt = now();
  for (let i = 0; running && i < 100_000_000; i++) {
    const key = rng.pick(config.keys);
    const r = rng.float();
    let ok: boolean;
    if (config.workload === 'cas') ok = await casIncrement(db, name, key);
    else if (config.workload === 'bank') ok = r < 0.75 ? await bankTransfer(db, name, rng) : await bankAudit(db, name);
    else {
      const op = r < 0.45 ? 'put' : r < 0.9 ? 'get' : 'delete';
      const value = `${name}-${op === 'put' ? ++writes : 0}`;
      ok = await doOp(db, name, op, key, value);
    }
    nextAt = Math.max(nextAt + periodMs, now());
    await sleep(Math.max(nextAt - now(), ok ? 0 : ERROR_PAUSE_MS));
  }
}

/**
 * Issue 13: the storage servers' anti-entropy counts from `nodes` (their last heartbeats),
 * summed; none when the nameserver does not answer.
 */
async function antiEntropyTotals(db: Db): Promise<Partial<Extract<FromWorker, { t: 'done' }>>> {
  try {
    const storage = (await db.nodes()).nodes.filter((n) => n.role === 'storage');
    const sum = (f: (a: NonNullable<(typeof storage)[number]['antiEntropy']>) => number): number =>
      storage.reduce((t, n) => t + (n.antiEntropy ? f(n.antiEntropy) : 0), 0);
    return {
      antiEntropy: {
        checks: sum((a) => a.checks),
        divergences: sum((a) => a.divergences),
        incomplete: sum((a) => a.incomplete),
        unread: storage.filter((n) => n.antiEntropy === undefined).map((n) => n.id),
      },
    };
  } catch {
    return {};
  }
}

/** What keeps the cluster from being settled, or undefined when it is. */
async function unsettled(db: Db, nameservers: NameserverSeeds): Promise<string | undefined> {
  const info = await db.nodes();
  if (!info.formed) return 'the cluster map is not formed';
  const storage = info.nodes.filter((n) => n.role === 'storage');
  const notAlive = storage.filter((n) => n.state !== 'alive').map((n) => `${n.id} is ${n.state}`);
  if (notAlive.length > 0 || storage.length < config.storageServers)
    return (
      `storage servers not alive: ` +
      `${notAlive.join(', ') || `${storage.length} of ${config.storageServers} registered`}`
    );
  if (info.partitionsReady !== info.partitions)
    return `${info.partitions - info.partitionsReady} of ${info.partitions} partitions have no serving primary`;
  const map = (await nameservers.call({ t: 'map', ...tokenField(config.clusterToken) }, config.attemptTimeoutMs)) as {
    configs: { partition: number; epoch: number; primary: string; secondaries: string[]; learners: string[] }[];
  };
  const short = map.configs.filter((c) => 1 + c.secondaries.length !== config.replicas || c.learners.length > 0);
  if (short.length > 0) {
    const c = short[0]!;
    return (
      `${short.length} partitions short of ${config.replicas} members or with learners, e.g. partition ` +
      `${c.partition} at epoch ${c.epoch}: primary ${c.primary}, secondaries [${c.secondaries.join(',')}], ` +
      `learners [${c.learners.join(',')}]`
    );
  }
  return undefined;
}

/** Polls until `unsettled` says nothing or `timeoutMs` passes; returns the last problem. */
async function waitSettled(db: Db, nameservers: NameserverSeeds, timeoutMs: number): Promise<string | undefined> {
  const deadline = Date.now() + timeoutMs;
  let problem: string | undefined = 'not checked yet';
  for (let i = 0; i < 1_000_000 && Date.now() < deadline; i++) {
    try {
      problem = await unsettled(db, nameservers);
    } catch (err) {
      problem = `the nameserver did not answer: ${errorCode(err)}`;
    }
    if (problem === undefined) return undefined;
    await sleep(Math.min(POLL_MS, deadline - Date.now()));
  }
  return problem;
}

async function waitFormed(db: Db): Promise<void> {
  const deadline = Date.now() + config.formTimeoutMs;
  let problem = 'the nameserver has not answered';
  for (let i = 0; i < 1_000_000 && Date.now() < deadline; i++) {
    try {
      const info = await db.nodes();
      const alive = info.nodes.filter((n) => n.role === 'storage' && n.state === 'alive').length;
      if (info.formed && alive >= config.storageServers && info.partitionsReady === info.partitions) return;
      problem =
        `formed ${info.formed}, ${alive} of ${config.storageServers} storage servers alive, ` +
        `${info.partitionsReady} of ${info.partitions} partitions ready`;
    } catch (err) {
      problem = `the nameserver did not answer: ${errorCode(err)}`;
    }
    await sleep(POLL_MS);
  }
  throw new Error(`the cluster did not form within ${config.formTimeoutMs} ms: ${problem}`);
}

async function main(): Promise<void> {
  const rpc = new RpcPool({ maxFrameBytes: 64 * 1024 * 1024, backoffMaxMs: 500 });
  const nameservers = new NameserverSeeds(parseSeeds(config.nameserver), rpc);
  const control = await connect(config.nameserver, opts);
  const dbs: Db[] = [];
  try {
    await waitFormed(control);
    if (config.workload === 'bank') {
      // Every account opens with BANK_INITIAL, before the load and the faults.
      for (const key of config.keys) {
        const invoke = now();
        await control.put(key, String(BANK_INITIAL));
        record({ client: 'open', op: 'put', key, value: String(BANK_INITIAL), invoke, complete: now(), status: 'ok' });
      }
    }
    for (let i = 0; i < config.clients; i++) dbs.push(await connect(config.nameserver, opts));
    const command = (t: ToWorker['t']): Promise<ToWorker> =>
      new Promise((resolve) => {
        const on = (m: ToWorker): void => {
          if (m.t !== t) return;
          process.off('message', on);
          resolve(m);
        };
        process.on('message', on);
      });
    const started = command('start');
    send({ t: 'ready', formedMs: now() });
    await started;
    const stopped = command('stop');
    running = true;
    const flusher = setInterval(flush, FLUSH_EVERY_MS);
    const loops = dbs.map((db, i) => clientLoop(i + 1, db));
    const stop = (await stopped) as Extract<ToWorker, { t: 'stop' }>;
    running = false;
    await Promise.all(loops);
    clearInterval(flusher);
    flush();
    if (config.workload === 'bank') send({ t: 'audits', totals: auditTotals });
    send({ t: 'loadStopped', atMs: now() });

    const problem = await waitSettled(control, nameservers, stop.settleTimeoutMs);
    send({ t: 'settled', ok: problem === undefined, atMs: now(), ...(problem === undefined ? {} : { problem }) });
    // Final reads, every key at once (client `final-<key>`), each bounded by the call deadline.
    await Promise.all(config.keys.map((key) => doOp(control, `final-${key}`, 'get', key, '')));
    flush();
    send({ t: 'done', ...(await antiEntropyTotals(control)) });
  } finally {
    for (const db of dbs) await db.close();
    await control.close();
    rpc.close();
  }
}

process.on('disconnect', () => process.exit(0)); // the runner is gone
main().then(
  () => process.disconnect?.(),
  (err: unknown) => {
    send({ t: 'error', message: err instanceof Error ? err.message : String(err) });
    process.disconnect?.();
    process.exitCode = 1;
  },
);

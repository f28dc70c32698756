/**
 * The workload half of ha-isolate-netns.test.ts, run in the hub namespace (the test's own
 * namespace has no route to the nodes): `node ha-isolate-netns-client.js SEEDS PARTITIONS`
 * with the cluster token in DSTORE_CLUSTER_TOKEN. It reads one JSON command per line on stdin
 * and answers each with one JSON line on stdout, `{ id, ok: true, … }` or `{ id, ok: false,
 * error }`:
 *
 * - `formed`: waits (bounded) until the cluster is formed with every partition ready;
 * - `leaders` { addresses? }: each seed's (or each of `addresses`') answer to `leader`: the node
 *   id it names, or null without an answer within 1 s;
 * - `startLoad`: 4 closed-loop writers and one probe per partition (failures-harness.ts);
 * - `progress`: how many writes were acknowledged so far;
 * - `register` { address }: a storage registration sent to that seed only: the error code it
 *   answered with (or null when it took it) and how long the answer took;
 * - `finish`: stops the load, reads every key back and returns the counts, the keys whose
 *   writes were not all acknowledged and the checker's violations (S9).
 *
 * stdin closing ends the process.
 */
import { createInterface } from 'node:readline';
import { connect, type Db, DstoreError } from '../../src/client/index.js';
import type { LeaderReply } from '../../src/rpc/messages.js';
import { tokenField } from '../../src/rpc/token.js';
import { RpcPool } from '../../src/rpc/transport.js';
import { History, keysByPartition, WriteLoad } from './failures-harness.js';

const [seedsArg = '', partitionsArg = '6'] = process.argv.slice(2);
const seeds = seedsArg.split(',');
const partitions = Number(partitionsArg);
const token = process.env.DSTORE_CLUSTER_TOKEN;
const FORM_TIMEOUT_MS = 60_000;
const LEADER_TIMEOUT_MS = 1000;

const pool = new RpcPool({ maxFrameBytes: 64 * 1024 * 1024, backoffMaxMs: 200 });
const dbs: Db[] = [];
const history = new History(partitions);
let load: WriteLoad | undefined;

async function db(i: number): Promise<Db> {
  while (dbs.length <= i) dbs.push(await connect(seeds, { timeoutMs: 10_000, clusterToken: token ?? '', lazy: true }));
  return dbs[i] as Db;
}

function call(address: string, body: Record<string, unknown>, timeoutMs: number): Promise<unknown> {
  return pool.get(address).call({ ...body, ...tokenField(token) }, { timeoutMs });
}

async function formed(): Promise<Record<string, unknown>> {
  const client = await db(0);
  const deadline = Date.now() + FORM_TIMEOUT_MS;
  for (;;) {
    const info = await client.nodes().catch(() => undefined);
    const alive = info?.nodes.filter((n) => n.role === 'storage' && n.state === 'alive').length ?? 0;
    if (info?.formed && info.partitionsReady === info.partitions && alive >= seeds.length) return { alive };
    if (Date.now() > deadline)
      throw new Error(`cluster not formed within ${FORM_TIMEOUT_MS} ms: ${JSON.stringify(info ?? 'no answer')}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

async function leaders(addresses: readonly string[]): Promise<Record<string, unknown>> {
  const replies = await Promise.all(
    addresses.map((s) =>
      call(s, { t: 'leader' }, LEADER_TIMEOUT_MS).then(
        (r) => (r as LeaderReply).leader?.nodeId ?? null,
        () => null,
      ),
    ),
  );
  return { leaders: Object.fromEntries(addresses.map((s, i) => [s, replies[i]])) };
}

async function register(address: string): Promise<Record<string, unknown>> {
  const started = Date.now();
  const body = {
    t: 'register',
    nodeId: 's9',
    address: '10.213.12.99:1',
    backend: 'memory',
    incarnation: 's9-1',
    durable: false,
  };
  try {
    await call(address, body, 10_000);
    return { code: null, ms: Date.now() - started };
  } catch (err) {
    const code = err instanceof DstoreError ? err.code : `not a DstoreError: ${String(err)}`;
    return { code, message: (err as Error).message, ms: Date.now() - started };
  }
}

async function finish(): Promise<Record<string, unknown>> {
  await load?.stop();
  load = undefined;
  const notOk = history.records.filter((r) => r.outcome.kind !== 'ok');
  return {
    writes: history.records.length,
    counts: history.counts(),
    notOk: notOk.slice(0, 20).map((r) => `${r.key}: ${JSON.stringify(r.outcome)}`),
    violations: await history.check(await db(0)),
  };
}

async function run(cmd: { op?: string; address?: string; addresses?: string[] }): Promise<Record<string, unknown>> {
  switch (cmd.op) {
    case 'formed':
      return formed();
    case 'leaders':
      return leaders(cmd.addresses ?? seeds);
    case 'startLoad':
      load = new WriteLoad(history, [await db(0), await db(1)], {
        writers: 4,
        keys: keysByPartition(partitions, 10, 'k').flat(),
        probeKeys: keysByPartition(partitions, 1, 'probe').map((l) => l[0] as string),
      });
      return {};
    case 'progress':
      return { acknowledged: history.counts().ok };
    case 'register':
      return register(cmd.address ?? '');
    case 'finish':
      return finish();
    default:
      throw new Error(`unknown command ${JSON.stringify(cmd.op)}`);
  }
}

const lines = createInterface({ input: process.stdin });
lines.on('line', (line) => {
  let cmd: { id?: number; op?: string; address?: string; addresses?: string[] };
  try {
    cmd = JSON.parse(line) as typeof cmd;
  } catch {
    process.stdout.write(`${JSON.stringify({ ok: false, error: `not JSON: ${line.slice(0, 100)}` })}\n`);
    return;
  }
  run(cmd).then(
    (result) => process.stdout.write(`${JSON.stringify({ id: cmd.id, ok: true, ...result })}\n`),
    (err: unknown) =>
      process.stdout.write(
        `${JSON.stringify({ id: cmd.id, ok: false, error: err instanceof Error ? err.message : String(err) })}\n`,
      ),
  );
});
lines.on('close', () => {
  void (async () => {
    await load?.stop();
    for (const d of dbs) await d.close().catch(() => undefined);
    pool.close();
    process.exit(0);
  })();
});

/**
 * Issue 12, with network namespaces: the leading node cut off from etcd only. (The same
 * scenario with TCP relays on loopback, no root needed: ha-isolate.test.ts.)
 *
 * The network (netns.ts): a hub namespace with a bridge, where the 3 etcd members listen
 * (10.213.12.2) and the workload runs (10.213.12.1, ha-isolate-netns-client.ts, driven over its
 * stdin/stdout); three identical `dstore node` processes (storage server + candidate; lease TTL
 * 2 s, heartbeats 250 ms, dead after 2 s), each in a namespace of its own (10.213.12.11–13)
 * with a veth on the bridge. The leader's cut is a pair of blackhole rules in the hub between
 * its address and etcd's: its etcd connections stall, new ones go unanswered, while clients
 * and the other nodes still reach it.
 *
 * Under 4 writers: the cut-off leader logs that it steps down within the TTL (+ slack), another
 * node leads within the TTL + 1 s of the cut (+ slack), the isolated one refuses a registration
 * with NOT_LEADER at once, and once healed it follows the new leader; every write is
 * acknowledged and reads back. SLACK_MS is an allowance for this noisy shared 2-core machine.
 *
 * Needs root, `ip` (iproute2) and etcd; otherwise skipped with the reason. Namespaces are named
 * dsiso-<pid>-<random>-<host> and removed with everything in them in a finally block; a later
 * run also removes those of a run that was killed.
 */
import assert from 'node:assert/strict';
import { type ChildProcess, spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { createInterface } from 'node:readline';
import { test } from 'node:test';
import { ETCD_INSTALL_HINT, EtcdCluster, findEtcd } from '../../src/process/etcd-server.js';
import { netnsUnavailableReason } from '../../src/process/netns.js';
import { MAIN, waitFor } from './cluster.js';
import { EtcdCutNetwork, removeStaleIsolateNamespaces } from './netns.js';
import { cleanEnv, Processes } from './spawned.js';

const CLIENT_SCRIPT = resolve('dist/test/integration/ha-isolate-netns-client.js');
const NODES = ['n1', 'n2', 'n3'];
const P = 6;
const LEASE_TTL_MS = 2000;
/** Allowance on the step-down and takeover bounds for a shared, noisy 2-core machine. */
const SLACK_MS = 1000;
const NAMESERVER_PORT = 7000;
const STORAGE_PORT = 7101;
/** etcd members' client and peer ports on the hub's etcd address (a fresh namespace: all free). */
const ETCD_PORTS = [2379, 2380, 2381, 2382, 2383, 2384];

const skip =
  netnsUnavailableReason("the isolate-leader test's 4 hosts") ??
  (findEtcd() === undefined ? `etcd is not installed: ${ETCD_INSTALL_HINT}` : false);

/** The `time` of the last JSON log line matching `re`. */
function logTime(stderr: string, re: RegExp): number | undefined {
  const line = stderr
    .split('\n')
    .filter((l) => re.test(l))
    .at(-1);
  const time = line === undefined ? undefined : (JSON.parse(line) as { time?: unknown }).time;
  return typeof time === 'number' ? time : undefined;
}

/** The workload script in the hub: one JSON command per line in, one JSON answer per line out. */
class Workload {
  private nextId = 0;
  private readonly waiting = new Map<number, (answer: Record<string, unknown>) => void>();
  stderr = '';
  readonly exited: Promise<void>;

  constructor(readonly child: ChildProcess) {
    createInterface({ input: child.stdout! }).on('line', (line) => {
      let answer: { id?: number } & Record<string, unknown>;
      try {
        answer = JSON.parse(line) as typeof answer;
      } catch {
        this.stderr += `(stdout) ${line}\n`;
        return;
      }
      if (answer.id !== undefined) this.waiting.get(answer.id)?.(answer);
    });
    child.stderr?.on('data', (b: Buffer) => (this.stderr = (this.stderr + b.toString('utf8')).slice(-16_384)));
    this.exited = new Promise((r) => child.once('exit', () => r()));
  }

  /** Sends `op` and waits (bounded) for its answer; throws with the script's error. */
  async ask(op: string, extra: Record<string, unknown> = {}, timeoutMs = 10_000): Promise<Record<string, unknown>> {
    const id = this.nextId++;
    let timer: NodeJS.Timeout | undefined;
    try {
      const answer = await Promise.race([
        new Promise<Record<string, unknown>>((r) => {
          this.waiting.set(id, r);
          this.child.stdin?.write(`${JSON.stringify({ id, op, ...extra })}\n`);
        }),
        this.exited.then(() => {
          throw new Error(`the workload exited before answering ${op}: ${this.stderr.slice(-2000)}`);
        }),
        new Promise<never>((_, reject) => {
          timer = setTimeout(
            () => reject(new Error(`the workload did not answer ${op} within ${timeoutMs} ms`)),
            timeoutMs,
          );
        }),
      ]);
      if (answer.ok !== true) throw new Error(`workload ${op}: ${String(answer.error)}`);
      return answer;
    } finally {
      clearTimeout(timer);
      this.waiting.delete(id);
    }
  }

  /** Closes its stdin (it stops its load and exits) and SIGKILLs it if it has not exited within `timeoutMs`. */
  async stop(timeoutMs = 15_000): Promise<void> {
    if (this.child.exitCode !== null || this.child.signalCode !== null) return;
    this.child.stdin?.end();
    let timer: NodeJS.Timeout | undefined;
    await Promise.race([this.exited, new Promise((r) => (timer = setTimeout(r, timeoutMs)))]);
    clearTimeout(timer);
    if (this.child.exitCode === null && this.child.signalCode === null) {
      this.child.kill('SIGKILL');
      await this.exited;
    }
  }
}

test('the leader cut off from etcd by network namespaces steps down when its lease expires; another leads; ' +
  'it follows once healed', { skip, timeout: 180_000 }, async (t) => {
  const stale = removeStaleIsolateNamespaces();
  if (stale > 0) t.diagnostic(`removed ${stale} namespaces left by an earlier run`);
  const dir = mkdtempSync(join(tmpdir(), 'dstore-isolate-netns-'));
  const procs = new Processes();
  const token = randomBytes(16).toString('hex');
  const env = cleanEnv({ DSTORE_CLUSTER_TOKEN: token });
  let net: EtcdCutNetwork | undefined;
  let etcd: EtcdCluster | undefined;
  let workload: Workload | undefined;
  try {
    const network = EtcdCutNetwork.create(NODES);
    net = network;
    etcd = await EtcdCluster.start({
      dir: join(dir, 'etcd'),
      members: 3,
      host: network.etcdAddress,
      ports: ETCD_PORTS,
      commandPrefix: network.hubWrapper,
      healthCheck: (url) => network.healthCheckInHub(url),
    });
    const seedOf = new Map(NODES.map((n) => [n, `${network.address(n)}:${NAMESERVER_PORT}`]));
    const seeds = [...seedOf.values()];
    for (const name of NODES) {
      const [command, ...prefix] = network.wrapper(name);
      procs.start(
        name,
        command ?? 'ip',
        [
          ...prefix,
          process.execPath,
          MAIN,
          'node',
          `--etcd=${etcd.clientUrls.join(',')}`,
          '--etcd-prefix=/dstore/isolate/',
          `--lease-ttl-ms=${LEASE_TTL_MS}`,
          `--nameserver=${seeds.join(',')}`,
          `--listen=${network.address(name)}`,
          `--port=${STORAGE_PORT}`,
          `--nameserver-port=${NAMESERVER_PORT}`,
          `--node-id=${name}`,
          `--data-dir=${join(dir, name)}`,
          '--backend=memory',
          `--partitions=${P}`,
          '--replicas=3',
          '--min-write-replicas=2',
          '--heartbeat-ms=250',
          '--dead-after-ms=2000',
          '--log-level=info',
        ],
        env,
      );
    }
    const [wCommand, ...wPrefix] = network.hubWrapper;
    const w = new Workload(
      spawn(wCommand ?? 'ip', [...wPrefix, process.execPath, CLIENT_SCRIPT, seeds.join(','), String(P)], {
        stdio: ['pipe', 'pipe', 'pipe'],
        env,
      }),
    );
    workload = w;
    await w.ask('formed', {}, 70_000);

    /** Each node's answer to `leader` (of `names`): the node it names (null: no answer within 1 s). */
    const leaders = async (names = NODES): Promise<Map<string, string | null>> => {
      const addresses = names.map((n) => seedOf.get(n) ?? '');
      const byAddress = (await w.ask('leaders', { addresses })).leaders as Record<string, string | null>;
      return new Map(names.map((n) => [n, byAddress[seedOf.get(n) ?? ''] ?? null]));
    };
    const old = await waitFor(
      'every node names the same leader',
      async () => {
        const named = new Set((await leaders()).values());
        const [leader] = [...named];
        return named.size === 1 && leader !== null && leader !== undefined && NODES.includes(leader)
          ? leader
          : undefined;
      },
      30_000,
      50,
    );
    const oldProc = procs.all.get(old);
    const stepDowns = (): number => (oldProc?.stderr.match(/stepping down/g) ?? []).length;
    await w.ask('startLoad');
    await waitFor(
      'the load has 200 acknowledged writes before the cut',
      async () => ((await w.ask('progress')).acknowledged as number) >= 200 || undefined,
      30_000,
      50,
    );

    const stepDownsBefore = stepDowns();
    const cutAt = Date.now();
    network.cutFromEtcd(old);
    const others = NODES.filter((n) => n !== old);
    const steppedDown = await waitFor(
      `${old} logs that it steps down once its lease may have expired`,
      () => stepDowns() > stepDownsBefore && Date.now(),
      LEASE_TTL_MS + 10_000,
      20,
    );
    // Only the others are asked: the isolated one's answer waits up to 1 s for etcd.
    const next = await waitFor(
      'another node leads',
      async () => {
        const replies = await leaders(others);
        return others.find((n) => replies.get(n) === n);
      },
      LEASE_TTL_MS + 10_000,
      20,
    );
    const stepDownMs = steppedDown - cutAt;
    const nextMs = Date.now() - cutAt;
    t.diagnostic(`${old} cut off from etcd: stepped down after ${stepDownMs} ms, ${next} leads after ${nextMs} ms`);
    const elected = logTime(procs.all.get(next)?.stderr ?? '', /elected leader of the nameservers/);
    if (elected !== undefined) t.diagnostic(`${next} logged its election ${elected - cutAt} ms after the cut`);
    for (const line of (oldProc?.stderr ?? '').split('\n'))
      if (/stepping down/.test(line)) t.diagnostic(line.slice(0, 300));
    assert.ok(
      stepDownMs <= LEASE_TTL_MS + SLACK_MS,
      `it steps down within the lease TTL + ${SLACK_MS} ms slack (${stepDownMs} ms)`,
    );
    assert.ok(
      nextMs <= LEASE_TTL_MS + 1000 + SLACK_MS,
      `a new leader within TTL + 1 s + ${SLACK_MS} ms slack of the cut (${nextMs} ms)`,
    );

    const refused = await w.ask('register', { address: seedOf.get(old) }, 15_000);
    t.diagnostic(`register at the isolated ${old}: ${String(refused.code)} after ${String(refused.ms)} ms`);
    assert.equal(refused.code, 'NOT_LEADER', `the isolated one no longer takes registrations (${refused.message})`);
    assert.ok((refused.ms as number) < 3000, `NOT_LEADER without waiting for etcd's deadlines (${refused.ms} ms)`);

    network.healFromEtcd(old);
    const healedAt = Date.now();
    await waitFor(
      `${old} follows ${next} once healed`,
      async () => (await leaders()).get(old) === next || undefined,
      15_000,
      100,
    );
    t.diagnostic(`${old} names ${next} as the leader ${Date.now() - healedAt} ms after the heal`);

    const result = await w.ask('finish', {}, 60_000);
    const counts = result.counts as { ok: number; failed: number; unknown: number; failedCodes: string[] };
    t.diagnostic(
      `${String(result.writes)} writes: ${counts.ok} acknowledged, ${counts.unknown} unknown, ${counts.failed} failed`,
    );
    assert.equal(counts.failed, 0, `no write reported as definitely failed (${counts.failedCodes.join(',')})`);
    assert.deepEqual(result.notOk, [], 'every write acknowledged (only the control plane was cut)');
    assert.deepEqual(result.violations, [], 'every acknowledged write reads back');
  } catch (err) {
    t.diagnostic(procs.describe(15));
    if (workload) t.diagnostic(`--- workload\n${workload.stderr.slice(-3000)}`);
    if (net) t.diagnostic(`hub rules:\n${net.describeRules()}`);
    throw err;
  } finally {
    await workload?.stop();
    await procs.stopAll();
    await etcd?.stop();
    net?.destroy();
    if (!process.env.DSTORE_TEST_KEEP) rmSync(dir, { recursive: true, force: true });
  }
});

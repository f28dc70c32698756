/**
 * Issue 12, callers of the nameserver with a list of seeds, on real sockets and processes:
 * - a dead seed first, then a live `dstore nameserver`: calls succeed and stick to the live one;
 * - NOT_LEADER with the leader's address (a stub nameserver that answers every call so stands in
 *   for a follower): the client library and a real storage server given `--nameserver
 *   <dead>,<stub>` end up at the real nameserver, which is not even in their list: a cluster
 *   forms, a put and a get work;
 * - every seed dead, or every seed a follower that knows no leader: a bounded error naming the
 *   seeds, without a busy loop;
 * - connect's and --nameserver's validation of the list.
 */
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { type AddressInfo, createServer, type Server, type Socket } from 'node:net';
import { after, before, describe, test } from 'node:test';
import { parseNameserverSeeds } from '../../src/cli/options.js';
import { connect } from '../../src/client/client.js';
import { ConnectionClosedError, InvalidArgumentError, NotLeaderError, TimeoutError } from '../../src/core/errors.js';
import { NameserverSeeds, parseSeeds } from '../../src/rpc/seeds.js';
import { RpcPool, RpcServer } from '../../src/rpc/transport.js';
import { freePort, MAIN, waitFor } from './cluster.js';
import { cleanEnv, Processes } from './spawned.js';

const dir = mkdtempSync(join(tmpdir(), 'dstore-seeds-'));
const procs = new Processes();
const stubs: RpcServer[] = [];
const pools: RpcPool[] = [];
const servers: Server[] = [];
const sockets: Socket[] = [];
let real = '';
let dead = '';
let dead2 = '';

/** A nameserver that is not the leader: every call gets NOT_LEADER, naming `leader` if given. */
async function stubFollower(leader: string | undefined): Promise<{ address: string; calls: string[] }> {
  const calls: string[] = [];
  const server = new RpcServer({
    host: '127.0.0.1',
    port: 0,
    role: 'nameserver',
    maxFrameBytes: 1024 * 1024,
    handler: (body) => {
      calls.push(String((body as { t?: unknown }).t));
      throw new NotLeaderError('this nameserver is a follower', leader);
    },
  });
  stubs.push(server);
  return { address: `127.0.0.1:${await server.listen()}`, calls };
}

function newPool(): RpcPool {
  const pool = new RpcPool({ maxFrameBytes: 1024 * 1024 });
  pools.push(pool);
  return pool;
}

before(async () => {
  dead = `127.0.0.1:${await freePort()}`;
  dead2 = `127.0.0.1:${await freePort()}`;
  const nsPort = await freePort();
  real = `127.0.0.1:${nsPort}`;
  const args = ['nameserver', '--port', String(nsPort), '--http-port', 'off', '--data-dir', join(dir, 'nameserver')];
  procs.start(
    'nameserver',
    process.execPath,
    [MAIN, ...args, '--replicas', '1', '--min-write-replicas', '1'],
    cleanEnv(),
  );
  const probe = new NameserverSeeds([real], newPool());
  await waitFor('the nameserver to answer', () => probe.call({ t: 'nodes' }, 1000).then(() => true), 20_000).catch(
    (err: unknown) => {
      throw new Error(`${(err as Error).message}\n${procs.describe()}`);
    },
  );
});

after(async () => {
  for (const pool of pools) pool.close();
  for (const stub of stubs) await stub.close();
  for (const socket of sockets) socket.destroy();
  for (const server of servers) server.close();
  await procs.stopAll();
  if (!process.env.DSTORE_TEST_KEEP) rmSync(dir, { recursive: true, force: true });
});

describe('nameserver seeds', () => {
  test('a dead seed first, then a live nameserver: calls succeed and stick to the live one', async () => {
    const hops: string[] = [];
    const seeds = new NameserverSeeds([dead, real], newPool(), {
      logger: { debug: (obj) => hops.push((obj as { nameserver: string }).nameserver) },
    });
    assert.equal(seeds.target, dead);
    const info = (await seeds.call({ t: 'nodes' }, 5000)) as { nodes: unknown[] };
    assert.ok(Array.isArray(info.nodes), JSON.stringify(info));
    assert.equal(seeds.target, real);
    assert.deepEqual(hops, [dead], 'one failed hop, at the dead seed');
    for (let i = 0; i < 5; i++) await seeds.call({ t: 'map' }, 5000);
    assert.deepEqual(hops, [dead], 'later calls went straight to the live nameserver');
    assert.equal(seeds.target, real);
  });

  test('NOT_LEADER naming the leader: a storage server and the client given <dead>,<follower> reach the ' +
    'leader; a cluster forms and a put and a get work', { timeout: 60_000 }, async () => {
    const follower = await stubFollower(real);
    const seedList = `${dead},${follower.address}`;
    const storageArgs = ['storage', '--nameserver', seedList, '--port', String(await freePort())];
    const more = ['--node-id', 's1', '--backend', 'memory', '--data-dir', join(dir, 's1')];
    const s1 = procs.start('s1', process.execPath, [MAIN, ...storageArgs, ...more], cleanEnv());
    const db = await connect([dead, follower.address], { timeoutMs: 10_000 });
    try {
      const info = await waitFor(
        'the cluster to form with s1 alive',
        async () => {
          const i = await db.nodes();
          return i.formed && i.nodes.some((n) => n.id === 's1' && n.state === 'alive') ? i : undefined;
        },
        30_000,
      ).catch((err: unknown) => {
        throw new Error(`${(err as Error).message}\n${procs.describe()}`);
      });
      assert.ok(info.formed);
      assert.ok(follower.calls.includes('register'), `the follower saw: ${follower.calls.join(',')}`);
      assert.ok(follower.calls.includes('map'), `the follower saw: ${follower.calls.join(',')}`);
      await db.put('seeded', 'yes');
      const got = await db.get('seeded');
      assert.equal(Buffer.from(got?.value ?? []).toString(), 'yes');
      // The leader is remembered: heartbeats and map fetches no longer go through the follower.
      const seen = follower.calls.length;
      await db.nodes();
      await db.put('seeded', 'again');
      // Several heartbeat periods (default 500 ms): s1 keeps heartbeating to the leader.
      const lastHeartbeat = async (): Promise<number> =>
        (await db.nodes()).nodes.find((n) => n.id === 's1')?.lastHeartbeatMs ?? 0;
      const first = await lastHeartbeat();
      await waitFor('a newer heartbeat from s1 at the leader', async () => (await lastHeartbeat()) > first, 10_000);
      assert.equal(follower.calls.length, seen, `the follower saw: ${follower.calls.slice(seen).join(',')}`);
      assert.equal(s1.child.exitCode, null, procs.describe());
    } finally {
      await db.close();
    }
  });

  test('every seed dead: a bounded CONNECTION_CLOSED naming each seed, from calls and connect', async () => {
    const seeds = new NameserverSeeds([dead, dead2], newPool());
    const t0 = performance.now();
    const err = await seeds.call({ t: 'map' }, 5000).catch((e: unknown) => e);
    const tookMs = performance.now() - t0;
    assert.ok(err instanceof ConnectionClosedError, String(err));
    assert.ok(err.notSent, 'never sent anywhere');
    assert.match(err.message, new RegExp(`^no nameserver leader among ${dead}, ${dead2} after \\d+ ms \\(`));
    assert.match(err.message, new RegExp(`${dead}: .*ECONNREFUSED`));
    assert.match(err.message, new RegExp(`${dead2}: .*ECONNREFUSED`));
    assert.ok(tookMs < 1000, `took ${tookMs} ms: one round, then it gives up (as with one nameserver)`);

    const c = await connect([dead, dead2], { timeoutMs: 5000 }).catch((e: unknown) => e);
    assert.ok(c instanceof ConnectionClosedError, String(c));
    assert.match(c.message, new RegExp(`^no dstore nameserver answers at one of ${dead}, ${dead2} \\(no nameserver`));
  });

  test('every seed a follower that knows no leader: NOT_LEADER naming them, hops bounded', async () => {
    const a = await stubFollower(undefined);
    const b = await stubFollower(undefined);
    const seeds = new NameserverSeeds([a.address, b.address], newPool());
    const t0 = performance.now();
    const err = await seeds.call({ t: 'register' }, 5000).catch((e: unknown) => e);
    const tookMs = performance.now() - t0;
    assert.ok(err instanceof NotLeaderError, String(err));
    assert.match(err.message, new RegExp(`^no nameserver leader among ${a.address}, ${b.address}`));
    assert.match(err.message, /not the leader, and it knows no leader/);
    const calls = a.calls.length + b.calls.length;
    assert.ok(calls <= 7, `${calls} calls: at most 3 per seed + 1`);
    assert.ok(tookMs >= 50, `took ${tookMs} ms: a round where every seed refused is followed by a backoff`);
    assert.ok(tookMs < 3000, `took ${tookMs} ms`);
  });

  test(
    'a silent seed (accepts, never answers): a map fetch moves on after the hop bound; a register is not ' +
      'repeated elsewhere (S9) but the next call starts at the next seed',
    async () => {
      const silent = createServer((socket) => sockets.push(socket));
      servers.push(silent);
      await new Promise<void>((r) => silent.listen(0, '127.0.0.1', r));
      const address = `127.0.0.1:${(silent.address() as AddressInfo).port}`;
      const seeds = new NameserverSeeds([address, real], newPool(), { hopTimeoutMs: 300 });
      const t0 = performance.now();
      await seeds.call({ t: 'map' }, 5000);
      assert.ok(performance.now() - t0 < 2000, `took ${performance.now() - t0} ms`);
      assert.equal(seeds.target, real);

      const writes = new NameserverSeeds([address, real], newPool(), { hopTimeoutMs: 300 });
      const err = await writes.call({ t: 'register' }, 5000).catch((e: unknown) => e);
      assert.ok(err instanceof TimeoutError, `not sent again to ${real}: ${String(err)}`);
      assert.equal(writes.target, real, 'the next call goes to the next seed');
    },
  );

  test('a follower redirecting to itself or to a dead leader does not loop', async () => {
    const loop = await stubFollower(dead);
    const seeds = new NameserverSeeds([loop.address], newPool());
    const err = await seeds.call({ t: 'map' }, 3000).catch((e: unknown) => e);
    assert.ok(err instanceof Error && /no nameserver leader among/.test(err.message), String(err));
    assert.ok(loop.calls.length <= 4, `${loop.calls.length} calls to the follower`);
  });
});

describe('seed lists: validation', () => {
  test('connect: clear INVALID_ARGUMENT errors', async () => {
    const seventeen = Array.from({ length: 17 }, (_, i) => `127.0.0.1:${7000 + i}`);
    const cases: Array<[string, unknown, RegExp]> = [
      ['empty array', [], /^connect: nameserver: the list of nameserver addresses is empty$/],
      ['empty string', '', /^connect: nameserver: the list of nameserver addresses is empty$/],
      ['a malformed address', ['127.0.0.1:7000', 'nohost'], /nameserver address "nohost" is not HOST:PORT$/],
      ['an empty entry', '127.0.0.1:7000,,127.0.0.1:7001', /nameserver address "" is not HOST:PORT$/],
      ['17 seeds', seventeen, /17 nameserver addresses, more than the 16 allowed$/],
      [
        'a number in the array',
        ['127.0.0.1:7000', 7001],
        /^connect: nameserver\[1\] must be .* got a number \(7001\)$/,
      ],
      ['an object', { host: 'x' }, /^connect: nameserver must be .* got an object$/],
    ];
    for (const [what, arg, pattern] of cases) {
      const err = await connect(arg as string, { lazy: true }).catch((e: unknown) => e);
      assert.ok(err instanceof InvalidArgumentError, `${what}: ${String(err)}`);
      assert.match(err.message, pattern, what);
    }
    const sixteen = seventeen.slice(0, 16);
    const db = await connect(sixteen, { lazy: true });
    await db.close();
    assert.deepEqual(parseSeeds(' 127.0.0.1:7000, [::1]:7001,127.0.0.1:7000'), ['127.0.0.1:7000', '[::1]:7001']);
  });

  test('--nameserver: host:port[,host:port…]', () => {
    assert.equal(parseNameserverSeeds('127.0.0.1:7000'), '127.0.0.1:7000');
    assert.equal(parseNameserverSeeds('a:7000,b:7000,[::1]:7000'), 'a:7000,b:7000,[::1]:7000');
    for (const bad of ['a:7000,', 'a:7000,nohost', ',a:7000', 'a:0'])
      assert.throws(() => parseNameserverSeeds(bad), /Expected HOST:PORT/, bad);
    const seventeen = Array.from({ length: 17 }, (_, i) => `h:${7000 + i}`).join(',');
    assert.throws(() => parseNameserverSeeds(seventeen), /at most 16 HOST:PORT/);
  });
});

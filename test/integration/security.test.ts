/**
 * DESIGN §12, the cluster token: a nameserver (its settings from a YAML --config file) and
 * three storage servers (token from DSTORE_CLUSTER_TOKEN) on loopback. Proves each refusal:
 * a storage server with a wrong or missing token cannot register and exits with a clear
 * error; the nameserver refuses every call (map, nodes, register, heartbeat, promote,
 * confirmEpoch) without the right token; a storage server refuses every client call (put,
 * get, del, scan, dump, stats, snapshotRead) without it and drops peer messages without it;
 * the `dstore` command prints "wrong or missing cluster token" with UNAUTHORIZED and exits 1.
 * With the right token, the library and the command work.
 */
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { connect, type Db, UnauthorizedError } from '../../src/client/index.js';
import { RpcPool } from '../../src/rpc/transport.js';
import { freePort, MAIN, waitFor } from './cluster.js';
import { cleanEnv, Processes } from './spawned.js';

const TOKEN = `t-${randomBytes(12).toString('hex')}`;
const WRONG = `${TOKEN}x`;

describe('a cluster with a token', () => {
  const dir = mkdtempSync(join(tmpdir(), 'dstore-security-'));
  const procs = new Processes();
  const pool = new RpcPool({ maxFrameBytes: 16 * 1024 * 1024, backoffMaxMs: 200 });
  const clients: Db[] = [];
  let nameserver = '';
  const storage = new Map<string, string>();

  const dstore = (args: string[], env: NodeJS.ProcessEnv = {}) =>
    procs.start(`cli-${procs.all.size}`, process.execPath, [MAIN, ...args], cleanEnv(env));
  const call = (address: string, body: unknown) => pool.get(address).call(body, { timeoutMs: 5000 });
  async function client(token: string | undefined): Promise<Db> {
    const db = await connect(nameserver, {
      timeoutMs: 5000,
      lazy: true,
      ...(token === undefined ? {} : { clusterToken: token }),
    });
    clients.push(db);
    return db;
  }

  async function startStorage(name: string, token: string | undefined): Promise<string> {
    const port = await freePort();
    procs.start(
      name,
      process.execPath,
      [
        MAIN,
        'storage',
        '--nameserver',
        nameserver,
        '--port',
        String(port),
        '--node-id',
        name,
        '--data-dir',
        join(dir, name),
        '--backend',
        'memory',
        '--heartbeat-ms',
        '200',
        '--log-level',
        'info',
      ],
      cleanEnv(token === undefined ? {} : { DSTORE_CLUSTER_TOKEN: token }),
    );
    return `127.0.0.1:${port}`;
  }

  before(async () => {
    const nsPort = await freePort();
    nameserver = `127.0.0.1:${nsPort}`;
    // The nameserver's settings, token included, come from a config file.
    const config = join(dir, 'nameserver.yaml');
    writeFileSync(
      config,
      [
        '# dstore nameserver settings (test)',
        `port: ${nsPort}`,
        `dataDir: ${JSON.stringify(join(dir, 'nameserver'))}`,
        'partitions: 4',
        'replicas: 3',
        'heartbeatMs: 200',
        `clusterToken: ${JSON.stringify(TOKEN)}`,
        '',
      ].join('\n'),
    );
    procs.start(
      'nameserver',
      process.execPath,
      [MAIN, 'nameserver', '--config', config, '--http-port', 'off'],
      cleanEnv(),
    );
    for (const name of ['s1', 's2', 's3']) storage.set(name, await startStorage(name, TOKEN));
    const db = await client(TOKEN);
    await waitFor(
      'a formed cluster with every partition serving',
      async () => {
        const info = await db.nodes().catch(() => undefined);
        return (
          info?.formed === true &&
          info.partitionsReady === info.partitions &&
          info.nodes.filter((n) => n.state === 'alive').length === 4
        );
      },
      30_000,
    ).catch((err: unknown) => {
      throw new Error(`${(err as Error).message}\n${procs.describe()}`);
    });
  });

  after(async () => {
    for (const db of clients) await db.close();
    pool.close();
    await procs.stopAll();
    rmSync(dir, { recursive: true, force: true });
  });

  test('a storage server with a wrong or missing token cannot register, and says why', async () => {
    for (const [name, token] of [
      ['s8', WRONG],
      ['s9', undefined],
    ] as const) {
      await startStorage(name, token);
      const exit = await procs.waitExit(name, 20_000);
      const stderr = procs.all.get(name)!.stderr;
      assert.ok(exit, `${name} still running: ${stderr}`);
      assert.equal(exit.code, 1, stderr);
      const last = stderr.trim().split('\n').at(-1) ?? '';
      assert.match(
        last,
        new RegExp(
          `^error: nameserver ${nameserver} refused to register ${name}: wrong or missing cluster token: the ` +
            `nameserver refused the call \\(set --cluster-token or DSTORE_CLUSTER_TOKEN to the ` +
            `cluster's token\\) \\(UNAUTHORIZED\\)$`,
        ),
      );
    }
    const info = await (await client(TOKEN)).nodes();
    assert.deepEqual(
      info.nodes.map((n) => n.id).sort(),
      ['nameserver', 's1', 's2', 's3'],
      'the refused servers are not members',
    );
  });

  test('the nameserver refuses every call without the right token', async () => {
    const bodies = [
      { t: 'map' },
      { t: 'nodes' },
      {
        t: 'register',
        nodeId: 'intruder',
        address: '127.0.0.1:9',
        backend: 'memory',
        incarnation: 'i1',
        durable: false,
      },
      { t: 'heartbeat', nodeId: 's1', incarnation: 'i1', uptimeMs: 0, keys: 0, progress: [] },
      { t: 'promote', p: 0, epoch: 1, learner: 's1', learnerIncarnation: 'x' },
      { t: 'confirmEpoch', p: 0, epoch: 1 },
    ];
    for (const body of bodies) {
      for (const token of [{}, { token: WRONG }, { token: '' }]) {
        await assert.rejects(
          call(nameserver, { ...body, ...token }),
          (err: unknown) => err instanceof UnauthorizedError && /wrong or missing cluster token/.test(err.message),
          `${body.t} ${JSON.stringify(token)}`,
        );
      }
    }
    for (const token of [undefined, WRONG]) {
      // connect() itself asks the nameserver (unless lazy), so a wrong token fails there.
      await assert.rejects(
        connect(nameserver, { timeoutMs: 5000, ...(token === undefined ? {} : { clusterToken: token }) }),
        UnauthorizedError,
      );
      const db = await client(token);
      await assert.rejects(db.nodes(), UnauthorizedError);
      await assert.rejects(db.put('k', 'v'), UnauthorizedError);
      await assert.rejects(db.get('k'), UnauthorizedError);
    }
    assert.equal(((await call(nameserver, { t: 'map', token: TOKEN })) as { formed: boolean }).formed, true);
  });

  test('a storage server refuses every client call without the right token', async () => {
    const key = new TextEncoder().encode('k');
    const bodies = [
      { t: 'put', p: 0, key, value: key },
      { t: 'del', p: 0, key },
      { t: 'get', p: 0, key },
      { t: 'scan', p: 0, limit: 10 },
      { t: 'dump', limit: 10 },
      { t: 'stats' },
      { t: 'snapshotRead', p: 0, epoch: 1 },
    ];
    for (const [name, address] of storage) {
      for (const body of bodies) {
        for (const token of [{}, { token: WRONG }]) {
          await assert.rejects(
            call(address, { ...body, ...token }),
            (err: unknown) =>
              err instanceof UnauthorizedError && err.message.includes(`storage server ${name} refused`),
            `${name} ${body.t} ${JSON.stringify(token)}`,
          );
        }
      }
      const stats = (await call(address, { t: 'stats', token: TOKEN })) as { nodeId: string };
      assert.equal(stats.nodeId, name);
    }
  });

  test('a storage server drops peer messages without the right token', async () => {
    const s1 = storage.get('s1')!;
    pool.get(s1).send({
      t: 'peer',
      from: 'intruder',
      addr: '127.0.0.1:9',
      m: { kind: 'prepareAck', partition: 0, epoch: 1, seq: 1, incarnation: 'x' },
      token: WRONG,
    });
    await waitFor(
      's1 logging the dropped peer message',
      () => {
        const log = readFileSync(join(dir, 's1', 'node.log'), 'utf8');
        return log
          .split('\n')
          .some(
            (l) => l.includes('peer message with a wrong or missing cluster token dropped') && l.includes('intruder'),
          );
      },
      10_000,
    );
  });

  test('the dstore command says the token is wrong or missing, with exit code 1', async () => {
    for (const env of [{}, { DSTORE_CLUSTER_TOKEN: WRONG }]) {
      for (const args of [['nodes'], ['get', 'k'], ['put', 'k', 'v']]) {
        const name = `cli-${procs.all.size}`;
        dstore([...args, '--nameserver', nameserver, '--timeout-ms', '5000'], env);
        const exit = await procs.waitExit(name, 20_000);
        const stderr = procs.all.get(name)!.stderr;
        assert.equal(exit?.code, 1, stderr);
        assert.equal(
          stderr,
          'error: wrong or missing cluster token: the nameserver refused the call (set --cluster-token or ' +
            "DSTORE_CLUSTER_TOKEN to the cluster's token) (UNAUTHORIZED)\n",
        );
      }
    }
  });

  test('with the right token the library and the command work, storage calls included', async () => {
    const db = await client(TOKEN);
    for (let i = 0; i < 50; i++) await db.put(`key-${i}`, `value-${i}`);
    for (let i = 0; i < 50; i++) assert.equal(Buffer.from((await db.get(`key-${i}`))!.value).toString(), `value-${i}`);
    const dumps = await db.dump();
    assert.equal(dumps.length, 3);
    for (const d of dumps) assert.equal(d.error, undefined, d.error);
    assert.equal(
      dumps.reduce((n, d) => n + d.keyCount, 0),
      150,
      'R=3: every key on every server',
    );

    const name = `cli-${procs.all.size}`;
    dstore(['get', 'key-7', '--nameserver', nameserver], { DSTORE_CLUSTER_TOKEN: TOKEN });
    const exit = await procs.waitExit(name, 20_000);
    assert.equal(exit?.code, 0, procs.all.get(name)!.stderr);
    assert.match(procs.all.get(name)!.stdout, /value-7/);
  });
});

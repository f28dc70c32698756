/**
 * Issue 9, one owner per data dir and per node id, on real processes:
 * - a second nameserver, storage server or `dstore up` on a data dir that a live process
 *   holds exits with code 2 and one line naming the directory and the holder's pid; a
 *   stray `dstore storage` on a sub-dir of a running `up` is refused the same way; after
 *   SIGKILL of the holder a restart on the same dir succeeds at once (the kernel released
 * the lock; a restarted `up` waits, bounded, for the children of the killed one to close). The non-Linux fallback (a
 * socket file) replaces a dead holder's stale file.
 * - the nameserver refuses a node id alive at another address (NODE_ID_IN_USE, in its log and
 *   in the refused server's error, exit code 2 once the holder kept heartbeating); a server
 *   restarted on a new address waits until the old one is dead, then registers.
 * - bad --data-dir values (empty, uncreatable like /proc/dstore, a file) exit 2 with one line,
 *   at once, for up, storage and nameserver.
 */
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, test } from 'node:test';
import { connect } from '../../src/client/index.js';
import { DataDirLockedError, lockDataDir, prepareDataDir } from '../../src/process/data-dir.js';
import { freePort, MAIN, waitFor } from './cluster.js';
import { cleanEnv, Processes, type Spawned } from './spawned.js';

const dir = mkdtempSync(join(tmpdir(), 'dstore-ownership-'));
const procs = new Processes();
after(async () => {
  await procs.stopAll();
  if (!process.env.DSTORE_TEST_KEEP) rmSync(dir, { recursive: true, force: true });
});

let seq = 0;
const dstore = (name: string, args: string[]): Spawned =>
  procs.start(`${name}-${++seq}`, process.execPath, [MAIN, ...args], cleanEnv());

/** Waits for `p` to exit (bounded) and returns its code and last stderr line. */
async function exitOf(p: Spawned, timeoutMs = 20_000): Promise<{ code: number | null; last: string; ms: number }> {
  const t0 = Date.now();
  const exit = await procs.waitExit(p.name, timeoutMs);
  assert.ok(exit, `${p.name} still running after ${timeoutMs} ms:\n${procs.describe()}`);
  return { code: exit.code, last: p.stderr.trim().split('\n').at(-1) ?? '', ms: Date.now() - t0 };
}

const waitLog = (p: Spawned, text: string, timeoutMs = 20_000): Promise<true> =>
  waitFor(
    `${p.name} to log "${text}"`,
    () => {
      if (p.child.exitCode !== null)
        throw new Error(`${p.name} exited (${p.child.exitCode}): ${p.stderr.slice(-2000)}`);
      return p.stderr.includes(text);
    },
    timeoutMs,
  ).catch((err: unknown) => {
    throw new Error(`${(err as Error).message}\n${procs.describe()}`);
  });

const lockedLine = (d: string, pid: number | undefined): RegExp =>
  new RegExp(
    `^error: data dir ${d.replace(/[.*+?^${}()|[\]\\/]/g, '\\$&')} is in use by another dstore process, pid ` +
      `${pid}\\b.*; stop it first or choose another --data-dir$`,
  );

describe('data dir lock', () => {
  test(
    'a second nameserver on the same data dir exits 2 naming the dir and the pid; after ' +
      'SIGKILL a restart succeeds at once',
    async () => {
      const d = join(dir, 'ns-lock');
      const ns = (port: number) =>
        dstore('ns', ['nameserver', '--port', String(port), '--http-port', 'off', '--data-dir', d, '--replicas', '1']);
      const first = ns(await freePort());
      await waitLog(first, 'nameserver listening');
      const second = ns(await freePort());
      const { code, last } = await exitOf(second);
      assert.equal(code, 2, second.stderr);
      assert.match(last, lockedLine(d, first.child.pid));
      assert.match(last, /\(nameserver\)/);
      first.child.kill('SIGKILL');
      await procs.waitExit(first.name, 10_000);
      const third = ns(await freePort());
      await waitLog(third, 'nameserver listening', 10_000);
    },
  );

  test('a second storage server on the same data dir exits 2 naming the dir and the pid', async () => {
    const d = join(dir, 'storage-lock');
    // No nameserver: the first keeps retrying to register and holds its data dir meanwhile.
    const nameserver = `127.0.0.1:${await freePort()}`;
    const storage = async () =>
      dstore('st', [
        'storage',
        '--nameserver',
        nameserver,
        '--port',
        String(await freePort()),
        '--node-id',
        's1',
        '--data-dir',
        d,
      ]);
    const first = await storage();
    await waitLog(first, 'storage server listening');
    const second = await storage();
    const { code, last } = await exitOf(second);
    assert.equal(code, 2, second.stderr);
    assert.match(last, lockedLine(d, first.child.pid));
    assert.match(last, /\(storage server s1\)/);
    first.child.kill('SIGKILL');
    await procs.waitExit(first.name, 10_000);
    const third = await storage();
    await waitLog(third, 'storage server listening', 10_000);
  });

  test(
    'a second `up` on the same data dir, and a stray storage server on one of its node ' +
      'dirs, exit 2 naming the holder',
    async () => {
      const d = join(dir, 'up-lock');
      const up = () =>
        dstore('up', [
          'up',
          '--no-shell',
          '--data-dir',
          d,
          '--port',
          '0',
          '--nodes',
          '1',
          '--replicas',
          '1',
          '--min-write-replicas',
          '1',
        ]);
      const first = up();
      await waitFor(
        'the first up to be ready',
        () => {
          if (first.child.exitCode !== null) throw new Error(`up exited: ${first.stderr}`);
          return first.stdout.includes('local cluster ready');
        },
        60_000,
      );
      const second = up();
      const r = await exitOf(second);
      assert.equal(r.code, 2, second.stderr);
      assert.match(r.last, lockedLine(d, first.child.pid));
      assert.match(r.last, /\(dstore up\)/);
      assert.doesNotMatch(second.stdout + second.stderr, /starting a nameserver/, 'nothing was started');

      const s1Pid = Number(/ s1 +\S+ +pid (\d+)/.exec(first.stdout)?.[1]);
      assert.ok(s1Pid > 0, first.stdout);
      const stray = dstore('stray', [
        'storage',
        '--nameserver',
        '127.0.0.1:9',
        '--port',
        String(await freePort()),
        '--data-dir',
        join(d, 's1'),
      ]);
      const s = await exitOf(stray);
      assert.equal(s.code, 2, stray.stderr);
      assert.match(s.last, lockedLine(join(d, 's1'), s1Pid));

      // The first cluster still serves: nothing of it was touched.
      const ns = /connect with: npx dstore client --nameserver (\S+)/.exec(first.stdout)?.[1];
      assert.ok(ns, first.stdout);
      const db = await connect(ns, { timeoutMs: 10_000 });
      try {
        assert.equal(typeof (await db.put('k', 'v')), 'number');
      } finally {
        await db.close();
      }

      // SIGKILL of `up`: its children stop by themselves; a restart at once waits for them and starts.
      first.child.kill('SIGKILL');
      await procs.waitExit(first.name, 10_000);
      const restarted = up();
      await waitFor(
        'the restarted up to be ready',
        () => {
          if (restarted.child.exitCode !== null) throw new Error(`up exited: ${restarted.stderr}`);
          return restarted.stdout.includes('local cluster ready');
        },
        60_000,
      );
      restarted.child.kill('SIGTERM');
      assert.equal((await exitOf(restarted)).code, 0, restarted.stderr);
    },
  );

  test("the socket-file fallback: a dead holder's stale socket is replaced, a live one is named", async () => {
    const d = prepareDataDir(join(dir, 'fallback'));
    const dataDirModule = new URL('../../src/process/data-dir.js', import.meta.url).href;
    const holderScript = `
      const { lockDataDir } = await import(${JSON.stringify(dataDirModule)});
      await lockDataDir(${JSON.stringify(d)}, 'test holder', { mode: 'socket-file' });
      console.log('locked');
      setInterval(() => {}, 1 << 30);`;
    const holder = procs.start(
      'fallback-holder',
      process.execPath,
      ['--input-type=module', '-e', holderScript],
      cleanEnv(),
    );
    await waitFor('the holder to lock', () => holder.stdout.includes('locked'), 10_000);
    await assert.rejects(
      lockDataDir(d, 'test', { mode: 'socket-file' }),
      (err: unknown) =>
        err instanceof DataDirLockedError && err.holderPid === holder.child.pid && err.holderRole === 'test holder',
    );
    holder.child.kill('SIGKILL'); // leaves its socket file behind
    await procs.waitExit(holder.name, 10_000);
    const lock = await lockDataDir(d, 'test', { mode: 'socket-file' });
    await lock.release();
  });
});

describe('node ids', () => {
  test('a node id alive at another address is refused (NODE_ID_IN_USE) until that server is dead', async () => {
    const nsPort = await freePort();
    const nameserver = `127.0.0.1:${nsPort}`;
    const ns = dstore('ns-ids', [
      'nameserver',
      '--port',
      String(nsPort),
      '--http-port',
      'off',
      '--data-dir',
      join(dir, 'ids-ns'),
      '--replicas',
      '1',
      '--min-write-replicas',
      '1',
      '--heartbeat-ms',
      '200',
      '--dead-after-ms',
      '1000',
    ]);
    await waitLog(ns, 'nameserver listening');
    const storage = async (dataDir: string) => {
      const port = await freePort();
      return {
        port,
        p: dstore('s1', [
          'storage',
          '--nameserver',
          nameserver,
          '--port',
          String(port),
          '--node-id',
          's1',
          '--backend',
          'memory',
          '--data-dir',
          join(dir, dataDir),
          '--heartbeat-ms',
          '200',
        ]),
      };
    };
    const holder = await storage('ids-a');
    await waitLog(holder.p, 'registered with the nameserver');

    // A second live server with the same id: refused, said in both logs; it gives up with exit 2.
    const dup = await storage('ids-b');
    const r = await exitOf(dup.p);
    assert.equal(r.code, 2, dup.p.stderr);
    assert.match(
      r.last,
      new RegExp(
        `^error: node id s1 is in use by a live storage server at 127\\.0\\.0\\.1:${holder.port} ` +
          `.*\\(NODE_ID_IN_USE\\)$`,
      ),
    );
    assert.match(
      dup.p.stderr,
      new RegExp(
        `node id s1 is alive at 127\\.0\\.0\\.1:${holder.port} .*the server at 127\\.0\\.0\\.1:${dup.port} is ` +
          `refused until that one is dead`,
      ),
    );
    assert.match(ns.stderr, new RegExp(`registration refused: node id s1 is alive at 127\\.0\\.0\\.1:${holder.port}`));
    const db = await connect(nameserver, { timeoutMs: 10_000 });
    try {
      assert.equal(
        (await db.nodes()).nodes.find((n) => n.id === 's1')?.address,
        `127.0.0.1:${holder.port}`,
        'the holder keeps its id and address',
      );

      // The same server restarted on a new address while the old one is not yet dead: it waits, then registers.
      const moved = await storage('ids-b');
      await waitLog(moved.p, 'is refused until that one is dead');
      holder.p.child.kill('SIGKILL');
      await waitLog(moved.p, 'registered with the nameserver', 15_000);
      await waitFor(
        's1 alive at its new address',
        async () => {
          const n = (await db.nodes()).nodes.find((x) => x.id === 's1');
          return n?.address === `127.0.0.1:${moved.port}` && n.state === 'alive';
        },
        15_000,
      );
    } finally {
      await db.close();
    }
  });
});

describe('bad --data-dir values', () => {
  const file = join(dir, 'a-file');
  writeFileSync(file, 'not a directory\n');
  const cases: [string, RegExp][] = [
    ['', /^error: --data-dir is empty; give a directory/],
    ['/proc/dstore', /^error: --data-dir \/proc\/dstore: cannot create \/proc\/dstore \(ENOENT\)$/],
    [file, /^error: --data-dir .*a-file: it exists and is not a directory$/],
  ];
  for (const command of ['up', 'storage', 'nameserver']) {
    test(`${command}: one line, exit code 2, at once`, async () => {
      for (const [value, expected] of cases) {
        if (value === '/proc/dstore' && process.platform !== 'linux') continue;
        const extra =
          command === 'up'
            ? ['--no-shell', '--port', '0']
            : command === 'storage'
              ? ['--nameserver', '127.0.0.1:9', '--port', '0']
              : ['--port', '0'];
        const p = dstore(`bad-${command}`, [command, '--data-dir', value, ...extra]);
        // Before the fix, /proc/dstore spun at 100 % CPU forever: the bound is the test.
        const r = await exitOf(p, 10_000);
        assert.equal(r.code, 2, `${JSON.stringify(value)}: ${p.stderr}`);
        assert.equal(p.stderr.trim().split('\n').length, 1, p.stderr);
        assert.match(r.last, expected);
      }
    });
  }
});

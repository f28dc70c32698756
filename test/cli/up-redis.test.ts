/**
 * `dstore up --backend redis` against real processes: it starts one redis-server per
 * storage server (files in <data-dir>/<node>/redis, loopback, AOF fsync always), the
 * storage servers keep their data there (`nodes` says redis), SIGTERM stops every dstore
 * process and then every redis-server, and a second `up` on the same data dir finds the
 * data again. Without redis-server, `up --backend redis` refuses before starting anything
 * and says how to install it; `dstore storage --backend` takes lmdb, memory or a Redis URL
 * and refuses `redis` alone or a bad URL with exit code 2. Skips (one line) when
 * redis-server is not installed; the cluster is stopped and the data dir removed even when
 * a test fails.
 */
import assert from 'node:assert/strict';
import { type ChildProcess, spawn, spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, test } from 'node:test';
import { fileURLToPath } from 'node:url';
import { CliFailure } from '../../src/cli/options.js';
import { RedisFleet } from '../../src/process/redis-fleet.js';
import { REDIS_SKIP, redisInstalled } from '../storage/redis-server.js';

const MAIN = fileURLToPath(new URL('../../src/cli/main.js', import.meta.url));
const START_TIMEOUT_MS = 60_000;
const STOP_TIMEOUT_MS = 30_000;

function cleanEnv(): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = { NO_COLOR: '1' };
  for (const [k, v] of Object.entries(process.env)) if (!k.startsWith('DSTORE_')) env[k] = v;
  return env;
}

function dstore(args: string[]): { status: number | null; stdout: string; stderr: string } {
  const r = spawnSync(process.execPath, [MAIN, ...args], { env: cleanEnv(), encoding: 'utf8', timeout: 30_000 });
  return { status: r.status, stdout: r.stdout, stderr: r.stderr };
}

const alive = (pid: number): boolean => {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
};

/** `dstore up --backend redis --no-shell` in `dataDir`; resolves with its nameserver once ready. */
async function up(
  dataDir: string,
): Promise<{ child: ChildProcess; nameserver: string; stop(): Promise<number | null> }> {
  const child = spawn(
    process.execPath,
    [MAIN, 'up', '--backend', 'redis', '--no-shell', '--port', '0', '--nodes', '3', '--data-dir', dataDir],
    {
      env: cleanEnv(),
      stdio: ['ignore', 'pipe', 'pipe'],
    },
  );
  let out = '';
  child.stdout!.on('data', (c: Buffer) => (out += c.toString('utf8')));
  child.stderr!.on('data', (c: Buffer) => (out += c.toString('utf8')));
  const exited = new Promise<number | null>((resolve) => child.once('exit', (code) => resolve(code)));
  const stop = async (): Promise<number | null> => {
    if (child.exitCode === null && child.signalCode === null) child.kill('SIGTERM');
    const timer = setTimeout(() => child.kill('SIGKILL'), STOP_TIMEOUT_MS);
    try {
      return await exited;
    } finally {
      clearTimeout(timer);
    }
  };
  const deadline = Date.now() + START_TIMEOUT_MS;
  while (Date.now() < deadline) {
    const m = /--nameserver (127\.0\.0\.1:\d+)/.exec(out);
    if (m && out.includes('running until SIGINT')) return { child, nameserver: m[1]!, stop };
    if (child.exitCode !== null) break;
    await new Promise((r) => setTimeout(r, 100));
  }
  await stop();
  throw new Error(`dstore up --backend redis did not start: ${out}`);
}

function redisPid(dataDir: string, node: string): number {
  const file = join(dataDir, node, 'redis', 'redis.pid');
  assert.ok(existsSync(file), `${file} exists`);
  return Number(readFileSync(file, 'utf8').trim());
}

describe('dstore up --backend redis', () => {
  test('one redis-server per storage server, data kept there, all stopped with up, found again by the next up', {
    skip: redisInstalled ? false : REDIS_SKIP,
  }, async () => {
    const dataDir = mkdtempSync(join(tmpdir(), 'dstore-up-redis-'));
    try {
      let cluster = await up(dataDir);
      let pids: number[];
      try {
        assert.equal(dstore(['put', 'greeting', 'hello redis', '--nameserver', cluster.nameserver]).status, 0);
        const got = dstore(['get', 'greeting', '--nameserver', cluster.nameserver]);
        assert.equal(got.stdout.trim(), 'hello redis');
        const nodes = JSON.parse(dstore(['nodes', '--json', '--nameserver', cluster.nameserver]).stdout) as {
          nodes: Array<{ id: string; backend?: string }>;
        };
        assert.deepStrictEqual(
          nodes.nodes.filter((n) => n.id !== 'nameserver').map((n) => n.backend),
          ['redis', 'redis', 'redis'],
        );
        pids = ['s1', 's2', 's3'].map((n) => redisPid(dataDir, n));
        assert.equal(new Set(pids).size, 3, 'three redis-servers');
        for (const pid of pids) assert.ok(alive(pid), `redis-server ${pid} runs`);
      } finally {
        assert.equal(await cluster.stop(), 0, 'up stops cleanly on SIGTERM');
      }
      for (const pid of pids) assert.ok(!alive(pid), `redis-server ${pid} was stopped with up`);
      cluster = await up(dataDir);
      try {
        assert.equal(dstore(['get', 'greeting', '--nameserver', cluster.nameserver]).stdout.trim(), 'hello redis');
      } finally {
        await cluster.stop();
      }
    } finally {
      rmSync(dataDir, { recursive: true, force: true });
    }
  });

  test('without redis-server, up --backend redis refuses before starting anything and says how to install it', () => {
    assert.throws(
      () => RedisFleet.create('/nonexistent', () => undefined),
      (err: unknown) => {
        assert.ok(err instanceof CliFailure);
        assert.match(
          err.message,
          new RegExp(
            'redis-server is not installed: install it with `apt-get install redis-server` \\(Debian/Ubuntu\\) ' +
              'or `brew install redis`',
          ),
        );
        return true;
      },
    );
  });

  test(
    'dstore storage --backend takes lmdb, memory or ' + 'redis://HOST:PORT[/DB]; redis alone or a bad URL is exit 2',
    () => {
      const help = dstore(['storage', '--help']);
      assert.match(help.stdout.replace(/\s+/g, ' '), /redis:\/\/HOST:PORT\[\/DB\]/);
      for (const [value, message] of [
        ['redis', /needs the URL of this server's own Redis: redis:\/\/HOST:PORT\[\/DB\]/],
        ['redis://127.0.0.1:99999', /the port must be 1\.\.65535/],
        ['rocksdb', /Allowed choices are lmdb, memory, or redis:\/\/HOST:PORT\[\/DB\]/],
      ] as const) {
        const r = dstore(['storage', '--backend', value, '--nameserver', '127.0.0.1:1']);
        assert.equal(r.status, 2, `${value}: ${r.stderr}`);
        assert.match(r.stderr, message);
        assert.equal(r.stderr.trim().split('\n').length, 1, 'one line');
      }
    },
  );
});

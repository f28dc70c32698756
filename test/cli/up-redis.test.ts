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
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, test } from 'node:test';
import { CliFailure } from '../../src/cli/options.js';
import { RedisFleet } from '../../src/process/redis-fleet.js';
import { alive, runDstoreSync, startUp, type UpCluster } from '../shared/dstore.js';
import { REDIS_SKIP, redisInstalled } from '../storage/redis-server.js';

const START_TIMEOUT_MS = 60_000;
const STOP_TIMEOUT_MS = 30_000;

const dstore = (args: string[]) => runDstoreSync(args);

/** `dstore up --backend redis --no-shell` in `dataDir`, once ready. */
const up = (dataDir: string): Promise<UpCluster> =>
  startUp(['--backend', 'redis', '--port', '0', '--nodes', '3', '--data-dir', dataDir], START_TIMEOUT_MS);

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
        assert.equal(dstore(['put', 'greeting', 'hello redis', '--nameserver', cluster.nameserver]).code, 0);
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
        assert.equal((await cluster.stop(STOP_TIMEOUT_MS)).code, 0, 'up stops cleanly on SIGTERM');
      }
      for (const pid of pids) assert.ok(!alive(pid), `redis-server ${pid} was stopped with up`);
      cluster = await up(dataDir);
      try {
        assert.equal(dstore(['get', 'greeting', '--nameserver', cluster.nameserver]).stdout.trim(), 'hello redis');
      } finally {
        await cluster.stop(STOP_TIMEOUT_MS);
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
        assert.equal(r.code, 2, `${value}: ${r.stderr}`);
        assert.match(r.stderr, message);
        assert.equal(r.stderr.trim().split('\n').length, 1, 'one line');
      }
    },
  );
});

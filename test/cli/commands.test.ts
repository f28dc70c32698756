/**
 * The `dstore` command line without a cluster: `--help` on the program and on every
 * subcommand exits 0 and names each flag's environment variable; bad input (unknown flag or
 * command, bad port, unknown backend, missing or extra arguments, a bad value from an
 * environment variable) exits 2 with exactly one line on stderr and no stack trace; nothing
 * listens off loopback without a cluster token.
 */
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { describe, test } from 'node:test';
import { fileURLToPath } from 'node:url';

const MAIN = fileURLToPath(new URL('../../src/cli/main.js', import.meta.url));

function dstore(args: string[], env: NodeJS.ProcessEnv = {}): { code: number | null; stdout: string; stderr: string } {
  const clean: NodeJS.ProcessEnv = {};
  for (const [k, v] of Object.entries(process.env)) if (!k.startsWith('DSTORE_')) clean[k] = v;
  const r = spawnSync(process.execPath, [MAIN, ...args], { env: { ...clean, ...env }, encoding: 'utf8', timeout: 30_000 });
  return { code: r.status, stdout: r.stdout, stderr: r.stderr };
}

/** Each subcommand with the environment variables its --help must show. */
const HELP: Record<string, string[]> = {
  up: ['DSTORE_NODES', 'DSTORE_PARTITIONS', 'DSTORE_REPLICAS', 'DSTORE_MIN_WRITE_REPLICAS', 'DSTORE_BACKEND', 'DSTORE_DATA_DIR', 'DSTORE_PORT', 'DSTORE_STORAGE_PORT', 'DSTORE_NO_SHELL', 'DSTORE_LOG_LEVEL'],
  nameserver: ['DSTORE_LISTEN', 'DSTORE_ADVERTISE', 'DSTORE_CONFIG', 'DSTORE_PORT', 'DSTORE_DATA_DIR', 'DSTORE_PARTITIONS', 'DSTORE_REPLICAS', 'DSTORE_MIN_WRITE_REPLICAS', 'DSTORE_HEARTBEAT_MS', 'DSTORE_DEAD_AFTER_MS', 'DSTORE_LOG_LEVEL'],
  storage: ['DSTORE_NAMESERVER', 'DSTORE_LISTEN', 'DSTORE_CONFIG', 'DSTORE_PORT', 'DSTORE_ADVERTISE', 'DSTORE_NODE_ID', 'DSTORE_BACKEND', 'DSTORE_DATA_DIR', 'DSTORE_SYNC', 'DSTORE_MAX_VALUE_BYTES', 'DSTORE_LOG_LEVEL'],
  client: ['DSTORE_NAMESERVER', 'DSTORE_TIMEOUT_MS', 'DSTORE_CLUSTER_TOKEN'],
  put: ['DSTORE_NAMESERVER', 'DSTORE_JSON'],
  get: ['DSTORE_NAMESERVER', 'DSTORE_JSON', 'DSTORE_RAW'],
  del: ['DSTORE_NAMESERVER'],
  dump: ['DSTORE_NAMESERVER', 'DSTORE_JSON', 'DSTORE_DUMP_ALL'],
  nodes: ['DSTORE_NAMESERVER', 'DSTORE_JSON'],
  bench: ['DSTORE_NAMESERVER', 'DSTORE_BENCH_CONCURRENCY', 'DSTORE_BENCH_DURATION', 'DSTORE_BENCH_VALUE_SIZE', 'DSTORE_BENCH_KEYS', 'DSTORE_BENCH_RATIO', 'DSTORE_BENCH_SPAWN'],
};

describe('dstore --help', () => {
  test('the program lists every subcommand', () => {
    const r = dstore(['--help']);
    assert.equal(r.code, 0, r.stderr);
    for (const name of Object.keys(HELP)) assert.match(r.stdout, new RegExp(`^ +${name}\\b`, 'm'), name);
  });

  for (const [name, envs] of Object.entries(HELP)) {
    test(`dstore ${name} --help exits 0 and shows the environment variables`, () => {
      const r = dstore([name, '--help']);
      assert.equal(r.code, 0, r.stderr);
      assert.match(r.stdout, new RegExp(`^Usage: dstore ${name}`));
      const flat = r.stdout.replace(/\s+/g, ' '); // help text wraps at the terminal width
      for (const env of envs) assert.ok(flat.includes(`env: ${env}`), `${name} --help should mention ${env}`);
      // Every option line (except --help) carries an env name.
      const options = r.stdout.split('\nOptions:\n')[1] ?? '';
      const flags = [...options.matchAll(/^ {2}(?:-\w, )?(--[a-z-]+)/gm)].map((m) => m[1]).filter((f) => f !== '--help');
      const envCount = (options.replace(/\s+/g, ' ').match(/env: DSTORE_/g) ?? []).length;
      assert.equal(envCount, flags.length, `every flag of ${name} has an env variable: ${flags.join(' ')}`);
    });
  }
});

describe('bad input exits 2 with one line', () => {
  const cases: [string, string[], NodeJS.ProcessEnv, RegExp][] = [
    ['unknown flag', ['up', '--bogus'], {}, /unknown option '--bogus'/],
    ['unknown command', ['frobnicate'], {}, /unknown command 'frobnicate'/],
    ['bad port', ['nameserver', '--port', '70000'], {}, /--port.*Expected a port number from 0 to 65535/],
    ['bad port from the environment', ['nameserver'], { DSTORE_PORT: 'seven' }, /from env 'DSTORE_PORT' is invalid/],
    ['unknown backend', ['storage', '--backend', 'redis2'], {}, /Allowed choices are lmdb, memory/],
    ['missing argument', ['get'], {}, /missing required argument 'key'/],
    ['too many arguments', ['put', 'a', 'b', 'c'], {}, /too many arguments/],
    ['bad nameserver address', ['get', 'k', '--nameserver', 'nohost'], {}, /Expected HOST:PORT/],
    ['bad ratio', ['bench', '--ratio', '0:0'], {}, /READS:WRITES/],
    ['min write replicas above R', ['up', '--replicas', '2', '--min-write-replicas', '3', '--port', '0'], {}, /cannot exceed --replicas/],
    ['fewer nodes than replicas', ['up', '--nodes', '2', '--port', '0'], {}, /--nodes \(2\) must be at least --replicas \(3\)/],
    ['listening off loopback without a token', ['nameserver', '--host', '0.0.0.0', '--port', '0'], {}, /refusing to listen on 0\.0\.0\.0 without a cluster token/],
    ['a nameserver on a non-loopback --listen without a token', ['nameserver', '--listen', '10.77.0.1', '--port', '0'], {}, /refusing to listen on 10\.77\.0\.1 without a cluster token/],
    ['a storage server on a non-loopback --listen without a token', ['storage', '--listen', '0.0.0.0', '--port', '0'], {}, /refusing to listen on 0\.0\.0\.0 without a cluster token/],
    ['a non-loopback listen from the environment without a token', ['storage', '--port', '0'], { DSTORE_LISTEN: '::' }, /refusing to listen on :: without a cluster token/],
    ['an empty cluster token', ['up', '--listen', '0.0.0.0', '--port', '0'], { DSTORE_CLUSTER_TOKEN: '' }, /refusing to listen on 0\.0\.0\.0 without a cluster token/],
    ['--listen and its old name --host disagreeing', ['nameserver', '--listen', '127.0.0.1', '--host', '127.0.0.2', '--port', '0'], {}, /--host is the old name of --listen/],
  ];
  for (const [what, args, env, expected] of cases) {
    test(what, () => {
      const r = dstore(args, env);
      assert.equal(r.code, 2, `exit code of dstore ${args.join(' ')}: stderr ${r.stderr}`);
      assert.match(r.stderr, expected);
      assert.match(r.stderr, /^error: /);
      assert.equal(r.stderr.trimEnd().split('\n').length, 1, `one line: ${r.stderr}`);
      assert.doesNotMatch(r.stderr, /\n\s+at /, 'no stack trace');
      assert.equal(r.stdout, '');
    });
  }
});

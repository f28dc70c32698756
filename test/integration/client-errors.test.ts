/**
 * The client library and the wire protocol against real processes (issue 9): a cluster of a
 * nameserver and 3 lmdb storage servers started with --max-value-bytes 8388608. Proves:
 * - limits hold end to end: the map carries the cluster's limits; a real 5 MB value is
 *   written and read back (the client sizes its frames from the cluster, not a fixed 4 MiB);
 *   a 20 MB value is VALUE_TOO_LARGE before it is sent, and also from the storage server
 *   itself when a caller sends it anyway (a call over its frame limit);
 * - `connect` checks that a dstore nameserver answers: a closed port, an HTTP server and a
 *   storage server's port each fail `connect` with a typed, non-retryable error naming the
 *   address (CONNECTION_CLOSED for the closed port); `lazy: true` connects without asking;
 *   the CLI prints one line and exits 1 for each;
 * - arguments are checked: undefined, null, numbers and objects as keys or values, and
 *   strings with a lone surrogate, throw InvalidArgumentError naming the method and argument;
 * - a read of a partition whose replicas are all down ends with UNAVAILABLE naming the
 *   partition and its unreachable primary, without the retry details.
 */
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { createServer as createHttpServer, type Server } from 'node:http';
import { type AddressInfo, createServer } from 'node:net';
import { after, before, describe, test } from 'node:test';
import {
  ConnectionClosedError,
  InvalidArgumentError,
  ProtocolMismatchError,
  TimeoutError,
  UnavailableError,
  ValueTooLargeError,
  WrongRoleError,
  connect,
  type Db,
} from '../../src/client/index.js';
import { partitionOf } from '../../src/core/partitioning.js';
import { RpcConnection } from '../../src/rpc/transport.js';
import { rejection } from '../rpc/helpers.js';
import { LocalCluster, MAIN, freePort } from './cluster.js';

const MAX_VALUE = 8 * 1024 * 1024;
const P = 16;

/** Runs the CLI without blocking this process (the HTTP server it talks to lives here). */
function runCli(args: readonly string[], timeoutMs = 30_000): Promise<{ status: number | null; stderr: string }> {
  return new Promise((resolve) => {
    const child = spawn(process.execPath, [MAIN, ...args], { stdio: ['ignore', 'ignore', 'pipe'] });
    let stderr = '';
    child.stderr.on('data', (d: Buffer) => (stderr += d.toString('utf8')));
    const timer = setTimeout(() => child.kill('SIGKILL'), timeoutMs);
    child.once('close', (status) => {
      clearTimeout(timer);
      resolve({ status, stderr });
    });
  });
}

describe('the client against a cluster with --max-value-bytes 8388608', () => {
  let cluster: LocalCluster;
  let db: Db;
  let http: Server;
  let httpAddress = '';

  before(async () => {
    cluster = await LocalCluster.start({
      nodes: 3,
      partitions: P,
      replicas: 3,
      backend: 'lmdb',
      extraStorageArgs: ['--max-value-bytes', String(MAX_VALUE)],
    });
    await cluster.waitFormed(3);
    db = await cluster.client(20_000);
    http = createHttpServer((_req, res) => res.end('not dstore'));
    await new Promise<void>((resolve) => http.listen(0, '127.0.0.1', resolve));
    const a = http.address();
    httpAddress = typeof a === 'object' && a ? `127.0.0.1:${a.port}` : '';
  });
  after(async () => {
    await new Promise<void>((resolve) => http.close(() => resolve()));
    await cluster.stop();
  });

  test(
    'the map carries the cluster limits; a 5 MB value round-trips; 20 MB is VALUE_TOO_LARGE from ' +
      'the client and from the server',
    async () => {
      const map = (await cluster.map()) as unknown as {
        limits?: { maxKeyBytes: number; maxValueBytes: number; maxFrameBytes: number };
      };
      assert.deepEqual(map.limits?.maxValueBytes, MAX_VALUE);
      assert.equal(map.limits?.maxKeyBytes, 1024);
      assert.ok((map.limits?.maxFrameBytes ?? 0) >= 2 * MAX_VALUE, JSON.stringify(map.limits));

      const five = Buffer.alloc(5_000_000);
      for (let i = 0; i < five.length; i += 4096) five[i] = i % 251;
      const started = Date.now();
      const version = await db.put('five-mb', five);
      const got = await db.get('five-mb');
      console.log(`# 5 MB put + get: ${Date.now() - started} ms`);
      assert.ok(version > 0);
      assert.ok(got && Buffer.from(got.value).equals(five), 'the 5 MB value reads back intact');

      const twenty = Buffer.alloc(20_000_000, 1);
      const err = await rejection(db.put('twenty-mb', twenty));
      assert.ok(err instanceof ValueTooLargeError, String(err));
      assert.equal(err.valueBytes, 20_000_000);
      assert.equal(err.maxValueBytes, MAX_VALUE);
      assert.equal(await db.get('twenty-mb'), undefined);

      // A caller that skips the check (another build, a raw client): the primary itself answers
      // VALUE_TOO_LARGE for a call over its frame limit, and the connection goes on serving.
      const key = Buffer.from('twenty-mb');
      const p = partitionOf(key, P);
      const m = await cluster.map();
      const primary = m.addresses[m.configs[p]!.primary]!;
      const [host, port] = primary.split(':');
      const raw = new RpcConnection({
        host: host!,
        port: Number(port),
        maxFrameBytes: 64 * 1024 * 1024,
        expectRole: 'storage',
      });
      try {
        const serverErr = await rejection(
          raw.call({ t: 'put', p, key, value: twenty, cid: 'raw', rs: 1 }, { timeoutMs: 20_000 }),
        );
        assert.ok(serverErr instanceof ValueTooLargeError, String(serverErr));
        assert.equal(serverErr.valueBytes, 20_000_000);
        assert.equal(serverErr.maxValueBytes, MAX_VALUE);
        const after = (await raw.call({ t: 'get', p, key }, { timeoutMs: 5000 })) as { found: boolean };
        assert.equal(after.found, false, 'nothing was written, and the same connection still serves');
      } finally {
        raw.close();
      }
    },
  );

  test(
    'connect() checks that a dstore nameserver answers; ' + 'lazy connects without asking; the CLI prints one line',
    async () => {
      const closedPort = `127.0.0.1:${await freePort()}`;
      const storageAddress = `127.0.0.1:${cluster.storagePorts.get('s1')}`;

      const closed = await rejection(connect(closedPort, { timeoutMs: 3000 }));
      assert.ok(closed instanceof ConnectionClosedError, String(closed));
      assert.match(
        closed.message,
        new RegExp(`no dstore nameserver answers at ${closedPort} \\(connect failed: .*ECONNREFUSED`),
      );

      const httpErr = await rejection(connect(httpAddress, { timeoutMs: 3000 }));
      assert.ok(httpErr instanceof ProtocolMismatchError, String(httpErr));
      assert.equal(httpErr.retryable, false);
      assert.match(
        httpErr.message,
        new RegExp(`${httpAddress} does not speak the dstore protocol \\(it answered like an HTTP server\\)`),
      );

      const roleErr = await rejection(connect(storageAddress, { timeoutMs: 3000 }));
      assert.ok(roleErr instanceof WrongRoleError, String(roleErr));
      assert.equal(roleErr.retryable, false);
      assert.match(roleErr.message, new RegExp(`${storageAddress} is a dstore storage server, not a nameserver`));

      // A service that accepts and waits for a line of its own protocol (Redis does) never
      // answers the greeting: the deadline's message says so.
      const silent = createServer(() => {});
      await new Promise<void>((res) => silent.listen(0, '127.0.0.1', res));
      try {
        const silentAddress = `127.0.0.1:${(silent.address() as AddressInfo).port}`;
        const silentErr = await rejection(connect(silentAddress, { timeoutMs: 1000 }));
        assert.ok(silentErr instanceof TimeoutError, String(silentErr));
        assert.match(
          silentErr.message,
          new RegExp(
            `no dstore nameserver answered at ${silentAddress} ` +
              `within 1000 ms: it accepted the ` +
              `connection but sent no dstore greeting`,
          ),
        );
      } finally {
        silent.close();
      }

      const lazy = await connect(closedPort, { timeoutMs: 1000, lazy: true });
      await lazy.close();

      for (const [address, code, pattern] of [
        [httpAddress, 'PROTOCOL_MISMATCH', /does not speak the dstore protocol/],
        [storageAddress, 'WRONG_ROLE', /is a dstore storage server, not a nameserver/],
        [closedPort, 'CONNECTION_CLOSED', /no dstore nameserver answers/],
      ] as const) {
        const r = await runCli(['get', 'k', '--nameserver', address, '--timeout-ms', '3000']);
        assert.equal(r.status, 1, `exit code for ${address}: ${r.stderr}`);
        const lines = r.stderr.trim().split('\n');
        assert.equal(lines.length, 1, `one line: ${r.stderr}`);
        assert.match(lines[0]!, pattern);
        assert.match(lines[0]!, new RegExp(`\\(${code}\\)$`));
      }
    },
  );

  test(
    'arguments of the wrong type throw InvalidArgumentError ' + 'naming the argument, before anything is sent',
    async () => {
      const cases: [string, () => Promise<unknown>, RegExp][] = [
        [
          'get(undefined)',
          () => db.get(undefined as unknown as string),
          /^get: key must be a string or a Uint8Array, got undefined$/,
        ],
        ['get(null)', () => db.get(null as unknown as string), /^get: key must be a string or a Uint8Array, got null$/],
        [
          'get(5)',
          () => db.get(5 as unknown as string),
          /^get: key must be a string or a Uint8Array, got a number \(5\)$/,
        ],
        ['delete({})', () => db.delete({} as unknown as string), /^delete: key must be .* got an object$/],
        [
          'put(k, undefined)',
          () => db.put('k', undefined as unknown as string),
          /^put: value must be .* got undefined$/,
        ],
        ['put(k, 5)', () => db.put('k', 5 as unknown as string), /^put: value must be .* got a number \(5\)$/],
        ['put(k, {})', () => db.put('k', { a: 1 } as unknown as string), /^put: value must be .* got an object$/],
        [
          'put(k, ArrayBuffer)',
          () => db.put('k', new ArrayBuffer(4) as unknown as string),
          /ArrayBuffer \(wrap it: new Uint8Array\(buffer\)\)/,
        ],
        ['put(null, v)', () => db.put(null as unknown as string, 'v'), /^put: key must be .* got null$/],
        [
          'put(lone surrogate, v)',
          () => db.put('a\uD800b', 'v'),
          /^put: key is a string with a lone surrogate at index 1/,
        ],
        ['dump({ limit: -1 })', () => db.dump({ limit: -1 }), /^dump: options\.limit must be an integer/],
        [
          'connect(7000)',
          () => connect(7000 as unknown as string),
          /^connect: nameserver must be a "HOST:PORT" string, .* got a number \(7000\)$/,
        ],
        [
          'connect(timeoutMs: "x")',
          () => connect(cluster.nameserverAddress, { timeoutMs: 'x' as unknown as number }),
          /^connect: options\.timeoutMs must be a number of ms > 0/,
        ],
      ];
      for (const [what, call, pattern] of cases) {
        let thrown: unknown;
        try {
          await call();
        } catch (err) {
          thrown = err;
        }
        assert.ok(thrown instanceof InvalidArgumentError, `${what}: ${String(thrown)}`);
        assert.match((thrown as Error).message, pattern, what);
      }
      assert.equal(await db.get('k'), undefined, 'nothing was written');
    },
  );

  test(
    'a read of a partition whose replicas are all down is UNAVAILABLE naming the partition and ' +
      'its primary, no retry details',
    async () => {
      const key = 'read-me';
      await db.put(key, 'v');
      const p = partitionOf(Buffer.from(key), P);
      const config = (await cluster.map()).configs[p]!;
      for (const name of cluster.storageNames) await cluster.kill(name, 'SIGKILL');
      const short = await connect(cluster.nameserverAddress, { timeoutMs: 2000, attemptTimeoutMs: 500 });
      try {
        const err = await rejection(short.get(key));
        assert.ok(err instanceof UnavailableError, String(err));
        assert.match(
          err.message,
          new RegExp(
            `^partition ${p} is unavailable: its primary ${config.primary} ` +
              `\\(127\\.0\\.0\\.1:\\d+\\) cannot be reached \\(`,
          ),
        );
        assert.match(err.message, /took over within 2000 ms$/);
        assert.doesNotMatch(err.message, /next attempt/);
        console.log(`# ${err.message} (${err.code})`);
      } finally {
        await short.close();
      }
    },
  );
});

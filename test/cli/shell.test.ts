/**
 * The shell driven through piped streams against an in-memory `Db` (no cluster needed):
 * insert/put/set, get with value and version, quoted values and UTF-8, "not found",
 * delete/del, dump and dump --all, nodes/status as a table, help and help <command>, an
 * unknown command (with a suggestion), a wrong argument count and an unbalanced quote all
 * print a hint and the shell goes on; a failing Db call prints `error: … (CODE)` and the
 * shell goes on; a parse error names the problem (an unknown escape, never guessed) without an
 * unrelated hint; node control outside `up` says that it needs `up`; on a terminal Ctrl-C
 * clears typed input and leaves at an empty prompt; quit and end of input end it; piped output carries no prompt or
 * colours;
 * extra commands (as `up` adds) run and show in help; binary values print as hex.
 */
import assert from 'node:assert/strict';
import { PassThrough } from 'node:stream';
import { describe, test } from 'node:test';
import type {
  ClusterInfo,
  Db,
  GetResult,
  ScanOptions,
  ScanResult,
  StorageDump,
  WriteOptions,
} from '../../src/client/api.js';
import { ConditionFailedError, UnavailableError } from '../../src/core/errors.js';
import { runShell, type ShellCommand, type ShellEnd } from '../../src/cli/shell.js';

/** A Db over a Map, with an optional failure injected per method. */
class FakeDb implements Db {
  readonly data = new Map<string, { value: Uint8Array; version: number; ttlMs?: number }>();
  version = 0;
  failNext: Error | undefined;
  lastDumpLimit: number | undefined;
  lastScan: ScanOptions | undefined;

  private check(): void {
    const e = this.failNext;
    this.failNext = undefined;
    if (e) throw e;
  }
  private static key(k: Uint8Array | string): string {
    return Buffer.from(typeof k === 'string' ? Buffer.from(k) : k).toString('hex');
  }
  async put(key: Uint8Array | string, value: Uint8Array | string, options?: WriteOptions): Promise<number> {
    this.check();
    this.checkVersion(key, options);
    const v = typeof value === 'string' ? new TextEncoder().encode(value) : new Uint8Array(value);
    const ttl = options?.ttlMs === undefined ? {} : { ttlMs: options.ttlMs };
    this.data.set(FakeDb.key(key), { value: v, version: ++this.version, ...ttl });
    return this.version;
  }
  async get(key: Uint8Array | string): Promise<GetResult | undefined> {
    this.check();
    return this.data.get(FakeDb.key(key));
  }
  private checkVersion(key: Uint8Array | string, options: WriteOptions | undefined): void {
    const current = this.data.get(FakeDb.key(key))?.version ?? 0;
    if (options?.ifVersion !== undefined && options.ifVersion !== current)
      throw new ConditionFailedError(options.ifVersion, current);
  }
  async delete(key: Uint8Array | string, options?: WriteOptions): Promise<boolean> {
    this.check();
    this.checkVersion(key, options);
    return this.data.delete(FakeDb.key(key));
  }
  async transaction<T>(): Promise<T> {
    throw new Error('the fake Db runs no transactions');
  }
  async scan(options: ScanOptions = {}): Promise<ScanResult> {
    this.check();
    const bytes = (x: Uint8Array | string | undefined) => (x === undefined ? undefined : Buffer.from(x));
    const prefix = bytes(options.prefix);
    const after = bytes(options.startAfter);
    const limit = options.limit ?? 1000;
    this.lastScan = options;
    const keys = [...this.data.keys()]
      .map((k) => Buffer.from(k, 'hex'))
      .filter((k) => prefix === undefined || k.subarray(0, prefix.length).equals(prefix))
      .filter((k) => after === undefined || Buffer.compare(k, after) > 0)
      .sort(Buffer.compare);
    const entries = keys.slice(0, limit).map((key) => {
      const v = this.data.get(key.toString('hex'))!;
      return options.values ? { key, value: v.value, version: v.version } : { key };
    });
    return keys.length > limit ? { entries, next: entries[entries.length - 1]!.key } : { entries };
  }
  async getMany(keys: ReadonlyArray<Uint8Array | string>): Promise<Array<GetResult | undefined>> {
    this.check();
    return keys.map((k) => this.data.get(FakeDb.key(k)));
  }
  async putMany(entries: ReadonlyArray<{ key: Uint8Array | string; value: Uint8Array | string }>): Promise<number[]> {
    const out: number[] = [];
    for (const e of entries) out.push(await this.put(e.key, e.value));
    return out;
  }
  async *keys(): AsyncIterable<Uint8Array> {
    for (const e of (await this.scan({ limit: 100_000 })).entries) yield e.key;
  }
  async drain(node: string): Promise<{ node: string; draining: string[]; held: number; led: number }> {
    return { node, draining: [node], held: 0, led: 0 };
  }

  async nodes(): Promise<ClusterInfo> {
    this.check();
    const now = Date.now();
    return {
      clusterId: 'abcdef0123456789',
      partitions: 16,
      replicas: 3,
      minWriteReplicas: 2,
      partitionsReady: 16,
      formed: true,
      mapVersion: 7,
      nodes: [
        {
          id: 'nameserver',
          role: 'nameserver',
          address: '127.0.0.1:7000',
          state: 'alive',
          partitionsHeld: 0,
          partitionsLed: 0,
          keys: 0,
          uptimeMs: 65_000,
        },
        {
          id: 's1',
          role: 'storage',
          address: '127.0.0.1:7101',
          state: 'alive',
          lastHeartbeatMs: now - 400,
          partitionsHeld: 16,
          partitionsLed: 6,
          keys: this.data.size,
          backend: 'memory',
          uptimeMs: 64_000,
        },
        {
          id: 's2',
          role: 'storage',
          address: '127.0.0.1:7102',
          state: 'dead',
          lastHeartbeatMs: now - 7_300,
          partitionsHeld: 16,
          partitionsLed: 5,
          keys: this.data.size,
          backend: 'memory',
          uptimeMs: 3_000,
        },
        {
          id: 's3',
          role: 'storage',
          address: '127.0.0.1:7103',
          state: 'unknown',
          partitionsHeld: 0,
          partitionsLed: 0,
          keys: 0,
          backend: 'memory',
          uptimeMs: 0,
        },
      ],
    };
  }
  async dump(options?: { limit?: number }): Promise<StorageDump[]> {
    this.check();
    this.lastDumpLimit = options?.limit;
    const keys = [...this.data.keys()].sort().map((k) => new Uint8Array(Buffer.from(k, 'hex')));
    const limit = options?.limit ?? 100;
    return ['s1', 's2'].map((nodeId, i) => ({
      nodeId,
      address: `127.0.0.1:710${i + 1}`,
      keyCount: keys.length,
      keys: keys.slice(0, limit),
      truncated: keys.length > limit,
    }));
  }
  async close(): Promise<void> {}
}

/** Polls `condition` (bounded: 5 s) instead of sleeping a guessed time. */
async function waitUntil(condition: () => boolean, explain: () => string): Promise<void> {
  const deadline = Date.now() + 5000;
  while (!condition()) {
    if (Date.now() > deadline) throw new Error(`timed out: ${explain()}`);
    await new Promise((r) => setTimeout(r, 10));
  }
}

/** Runs the shell over `lines` (piped, as `echo … | dstore client`) and returns its output. */
async function drive(
  db: Db,
  lines: string[],
  opts: { end?: boolean; extraCommands?: ShellCommand[] } = {},
): Promise<{ out: string; end: ShellEnd }> {
  const input = new PassThrough();
  const output = new PassThrough();
  let out = '';
  output.on('data', (chunk: Buffer) => (out += chunk.toString('utf8')));
  const done = runShell({
    db,
    input,
    output,
    isTTY: false,
    ...(opts.extraCommands ? { extraCommands: opts.extraCommands } : {}),
  });
  input.write(lines.map((l) => `${l}\n`).join(''));
  if (opts.end !== false) input.end();
  const end = await done;
  return { out, end };
}

describe('shell (piped, over a fake Db)', () => {
  test('insert, get, quoted values, UTF-8, not found, delete; ends at EOF', async () => {
    const db = new FakeDb();
    const { out, end } = await drive(db, [
      'insert greeting "hello world"',
      'get greeting',
      'put ключ "値 🎉"',
      'get ключ',
      'set k v',
      'get missing',
      'delete greeting',
      'get greeting',
      'del greeting',
      '',
    ]);
    assert.equal(end, 'eof');
    const lines = out.trimEnd().split('\n');
    assert.deepEqual(lines, [
      'OK (version 1)',
      '"hello world" (version 1)',
      'OK (version 2)',
      '"値 🎉" (version 2)',
      'OK (version 3)',
      '(not found) no key missing',
      'OK deleted greeting',
      '(not found) no key greeting',
      '(not found) no key greeting; nothing deleted',
    ]);
    assert.doesNotMatch(out, /dstore>/, 'no prompt when piped');
    assert.doesNotMatch(out, /\x1b\[/, 'no colours when piped');
  });

  test('scan [prefix] [limit] lists keys in byte order and says where more remain; mget reads several', async () => {
    const db = new FakeDb();
    const { out } = await drive(db, [
      'insert b/2 x',
      'insert a/1 y',
      'insert b/1 z',
      'insert c "w w"',
      'scan',
      'scan b/',
      'scan "" 2',
      'scan b/ many',
      'mget a/1 nope c',
    ]);
    const lines = out.trimEnd().split('\n').slice(4);
    assert.deepEqual(lines, [
      'a/1',
      'b/1',
      'b/2',
      'c',
      '(4 keys; end of the scan)',
      'b/1',
      'b/2',
      '(2 keys; end of the scan)',
      'a/1',
      'b/1',
      '(2 keys; more remain: the next key is after b/1)',
      'limit must be an integer from 1 to 100000, got many',
      'a/1: "y" (version 2)',
      'nope: (not found)',
      'c: "w w" (version 4)',
    ]);
    assert.equal(db.lastScan?.limit, 2);
  });

  test('unknown command, wrong argument count and an unbalanced quote print hints; the shell goes on', async () => {
    const db = new FakeDb();
    const { out, end } = await drive(db, [
      'frobnicate',
      'gte k',
      'insert onlykey',
      'get a b',
      'insert k "unclosed',
      'insert k after',
      'get k',
    ]);
    assert.equal(end, 'eof');
    const lines = out.trimEnd().split('\n');
    assert.match(lines[0] ?? '', /^unknown command frobnicate.*type help/);
    assert.match(lines[1] ?? '', /^unknown command gte; did you mean get\?/);
    assert.match(
      lines[2] ?? '',
      /^usage: insert <key> <value> \[--if-version <n>\] \[--ttl <duration>\] \(got 1 argument/,
    );
    assert.match(lines[3] ?? '', /^usage: get <key> \(got 2 arguments; quote arguments with spaces/);
    assert.match(lines[4] ?? '', /unbalanced quote/);
    assert.equal(lines[5], 'OK (version 1)');
    assert.equal(lines[6], '"after" (version 1)');
  });

  test('compare-and-set: insert --if-version, cas and delete --if-version; a bad flag is named', async () => {
    const db = new FakeDb();
    const { out, end } = await drive(db, [
      'insert k v1 --if-version 0',
      'insert k v2 --if-version 0',
      'cas k 1 v2',
      'cas k 1 v3',
      'delete k --if-version 1',
      'delete k --if-version 2',
      'insert k v --if-versoin 2',
      'insert k v --if-version -1',
      'get k',
    ]);
    assert.equal(end, 'eof');
    const lines = out.trimEnd().split('\n');
    assert.equal(lines[0], 'OK (version 1)');
    assert.match(
      lines[1] ?? '',
      /^error: condition failed: expected version 0 \(absent\), the key is at version 1 \(CONDITION_FAILED\)/,
    );
    assert.equal(lines[2], 'OK (version 2)');
    assert.match(lines[3] ?? '', /expected version 1, the key is at version 2 \(CONDITION_FAILED\)/);
    assert.match(lines[4] ?? '', /CONDITION_FAILED/);
    assert.equal(lines[5], 'OK deleted k');
    assert.match(
      lines[6] ?? '',
      /unexpected --if-versoin 2; the options are --if-version <n> and --ttl <duration> \(INVALID_ARGUMENT\)/,
    );
    assert.match(lines[7] ?? '', /--if-version takes a version .*got -1 \(INVALID_ARGUMENT\)/);
    assert.equal(lines[8], '(not found) no key k');
  });

  test('TTL: insert --ttl with units, get and ttl show what is left; a bad duration is named', async () => {
    const db = new FakeDb();
    const { out } = await drive(db, [
      'insert t v --ttl 90s',
      'get t',
      'ttl t',
      'insert p v',
      'ttl p',
      'ttl missing',
      'insert t v --ttl 5parsecs',
      'insert t v --ttl 2h --if-version 1',
      'ttl t',
      'delete t --ttl 3s',
    ]);
    const lines = out.trimEnd().split('\n');
    assert.equal(lines[0], 'OK (version 1)');
    assert.equal(lines[1], '"v" (version 1, expires in 1m 30s)');
    assert.equal(lines[2], 't expires in 1m 30s (90000 ms)');
    assert.equal(lines[3], 'OK (version 2)');
    assert.equal(lines[4], 'p does not expire');
    assert.equal(lines[5], '(not found) no key missing');
    assert.match(lines[6] ?? '', /--ttl takes a duration such as 500ms, 30s.*got 5parsecs \(INVALID_ARGUMENT\)/);
    assert.equal(lines[7], 'OK (version 3)');
    assert.equal(lines[8], 't expires in 2h 0m (7200000 ms)');
    assert.match(lines[9] ?? '', /delete: unexpected --ttl 3s; the options are --if-version <n> \(INVALID_ARGUMENT\)/);
  });

  test('drain starts and cancels a drain; a bad flag is named', async () => {
    const { out } = await drive(new FakeDb(), ['drain s3', 'drain s3 --cancel', 'drain s3 --now', 'drain']);
    const lines = out.trimEnd().split('\n');
    assert.equal(lines[0], 'OK draining s3: it holds 0 partition(s) and leads 0; nodes shows the rest');
    assert.equal(lines[1], 'OK drain of s3 cancelled');
    assert.match(lines[2]!, /unknown option --now; usage: drain <node> \[--cancel\]/);
    assert.match(lines[3]!, /drain/);
  });

  test('a parse error says only what is wrong; an unknown escape is named, not guessed', async () => {
    const db = new FakeDb();
    const { out } = await drive(db, ['get "a\\q"', 'insert bin\\x00 v', 'get "bin\\x00"']);
    const lines = out.trimEnd().split('\n');
    assert.match(lines[0] ?? '', /^unknown escape \\q at column 7/);
    assert.doesNotMatch(lines[0] ?? '', /quote arguments with spaces/);
    assert.equal(lines[1], 'OK (version 1)');
    assert.equal(lines[2], '"v" (version 1)', 'unquoted bin\\x00 is the same key as "bin\\x00"');
    assert.equal(db.data.size, 1);
  });

  test('node control outside `dstore up` says it needs dstore up, not just "unknown command"', async () => {
    const { out } = await drive(new FakeDb(), ['kill s1', 'restart s2', 'spawn']);
    const lines = out.trimEnd().split('\n');
    assert.equal(lines.length, 3, out);
    for (const [i, name] of ['kill', 'restart', 'spawn'].entries()) {
      assert.match(
        lines[i] ?? '',
        new RegExp(`^${name} controls the nodes of a local cluster: only the shell of \`dstore up\` has it`),
      );
    }
  });

  test('on a terminal Ctrl-C clears typed input, and at an empty prompt leaves the shell', async () => {
    const input = new PassThrough();
    const output = new PassThrough();
    let out = '';
    output.on('data', (c: Buffer) => (out += c.toString('utf8')));
    const db = new FakeDb();
    const done = runShell({ db, input, output, isTTY: true, env: { NO_COLOR: '1' } });
    input.write('insert typed but cleared');
    input.write('\x03'); // Ctrl-C with input: the line is dropped, the shell goes on
    input.write('insert a b\r');
    await waitUntil(
      () => db.data.size === 1,
      () => `insert a b did not run: ${JSON.stringify(out)}`,
    );
    input.write('\x03'); // Ctrl-C at an empty prompt: leaves, once
    assert.equal(await done, 'eof');
    assert.equal(db.data.size, 1, 'the cleared line never ran');
    assert.doesNotMatch(out, /press Ctrl-C again/);
  });

  test('a failing call prints error: message (CODE) and the shell goes on', async () => {
    const db = new FakeDb();
    db.failNext = new UnavailableError('partition 3 has no primary');
    const { out } = await drive(db, ['insert a b', 'insert a c', 'get a']);
    const lines = out.trimEnd().split('\n');
    assert.equal(lines[0], 'error: partition 3 has no primary (UNAVAILABLE)');
    assert.equal(lines[1], 'OK (version 1)');
    assert.equal(lines[2], '"c" (version 1)');
  });

  test('a non-dstore exception is also caught', async () => {
    const db = new FakeDb();
    db.failNext = new TypeError('boom');
    const { out } = await drive(db, ['nodes', 'get x']);
    assert.match(out, /^error: boom\n\(not found\) no key x\n$/);
  });

  test('quit, exit, q and x end the shell; later lines are not run', async () => {
    for (const word of ['quit', 'exit', 'q', 'x']) {
      const db = new FakeDb();
      const { out, end } = await drive(db, ['insert a 1', word, 'insert b 2'], { end: false });
      assert.equal(end, 'quit', word);
      assert.equal(out, 'OK (version 1)\n');
      assert.equal(db.data.size, 1);
    }
  });

  test('dump lists keys per storage server, 100 by default and every key with --all', async () => {
    const db = new FakeDb();
    for (let i = 0; i < 120; i++) await db.put(`k${String(i).padStart(3, '0')}`, 'v');
    await db.put('with space', 'v');
    const { out } = await drive(db, ['dump', 'dump --all', 'dump --bogus']);
    assert.match(out, /^s1 \(127\.0\.0\.1:7101\): 121 keys\n {2}k000\n/);
    assert.match(out, / {2}… 21 more \(dump --all lists every key\)/);
    assert.match(out, / {2}"with space"\n/);
    assert.match(out, /usage: dump \[--all\]/);
    assert.equal(db.lastDumpLimit, 100_000_000);
    assert.equal((out.match(/^s2 /gm) ?? []).length, 2);
  });

  test('nodes and status print a table with heartbeat ages, partitions and keys', async () => {
    const db = new FakeDb();
    const { out } = await drive(db, ['nodes', 'status']);
    const [first] = out.split(/\n(?=NODE)/);
    assert.match(first ?? '', /^NODE +ROLE +ADDRESS +STATE +HEARTBEAT +HELD +LED +KEYS +BACKEND +UPTIME\n/);
    assert.match(out, /nameserver +nameserver +127\.0\.0\.1:7000 +alive +- +- +- +- +- +1m 5s/);
    assert.match(out, /s1 +storage +127\.0\.0\.1:7101 +alive +0\.4s ago +16 +6 +0 +memory +1m 4s/);
    assert.match(
      out,
      /s2 +storage +127\.0\.0\.1:7102 +dead +7\.3s ago +16 +5 +\d+ +memory +-\n/,
      'a dead node shows no uptime',
    );
    assert.match(
      out,
      /s3 +storage +127\.0\.0\.1:7103 +unknown +- +0 +0 +0 +memory +-\n/,
      'not heard from since the nameserver restarted: no heartbeat, no uptime',
    );
    assert.match(
      out,
      /cluster abcdef01: formed, map version 7, 16 partitions, R=3, min write replicas 2, 1\/3 storage servers alive/,
    );
    assert.equal((out.match(/^NODE/gm) ?? []).length, 2);
  });

  test('help lists every command and help <command> explains one', async () => {
    const db = new FakeDb();
    const { out } = await drive(db, ['help', 'help insert', 'help put', 'help nosuch']);
    for (const c of ['help', 'insert <key> <value>', 'get <key>', 'delete <key>', 'dump [--all]', 'nodes', 'quit'])
      assert.ok(out.includes(c), c);
    assert.match(out, /aliases: put, set/);
    assert.match(out, /usage: insert <key> <value> \[--if-version <n>\] \[--ttl <duration>\]\n/);
    assert.match(out, /unknown command nosuch/);
  });

  test('binary values print as hex with a note; long values are cut', async () => {
    const db = new FakeDb();
    await db.put('bin', new Uint8Array([0xff, 0x00, 0x41]));
    await db.put('long', 'x'.repeat(5000));
    const { out } = await drive(db, ['get bin', 'insert raw "\\xc3\\xa9"', 'get raw', 'get long']);
    const lines = out.trimEnd().split('\n');
    assert.equal(lines[0], '0xff0041 (not valid UTF-8: shown as hex, 3 bytes) (version 1)');
    assert.equal(lines[2], '"é" (version 3)');
    assert.match(lines[3] ?? '', /^"x{4096}" … \(5000 bytes; showing the first 4096/);
  });

  test('extra commands run, show in help under their group, and their errors are caught', async () => {
    const db = new FakeDb();
    const calls: string[] = [];
    const extra: ShellCommand[] = [
      {
        name: 'kill',
        usage: '<node>',
        minArgs: 1,
        maxArgs: 1,
        group: 'Local cluster',
        summary: 'kill a node',
        run: (args, ctx) => {
          calls.push(args[0]?.text ?? '');
          ctx.print(`killed ${args[0]?.text}`);
        },
      },
      {
        name: 'spawn',
        usage: '',
        minArgs: 0,
        maxArgs: 0,
        group: 'Local cluster',
        summary: 'spawn a node',
        run: () => {
          throw new Error('no room');
        },
      },
    ];
    const { out } = await drive(db, ['kill s2', 'kill', 'spawn', 'help'], { extraCommands: extra });
    assert.deepEqual(calls, ['s2']);
    assert.match(out, /^killed s2\nusage: kill <node> \(got 0 arguments\)\nerror: no room\n/);
    assert.match(out, /Local cluster:\n {2}kill <node> +kill a node/);
  });

  test('a terminal gets a prompt and a greeting; NO_COLOR keeps it plain', async () => {
    const input = new PassThrough();
    const output = new PassThrough();
    let out = '';
    output.on('data', (c: Buffer) => (out += c.toString('utf8')));
    const done = runShell({
      db: new FakeDb(),
      input,
      output,
      isTTY: true,
      greeting: 'hello there',
      env: { NO_COLOR: '1' },
    });
    input.write('insert a b\r');
    input.write('quit\r');
    assert.equal(await done, 'quit');
    assert.match(out, /hello there/);
    assert.match(out, /dstore> /);
    assert.match(out, /OK \(version 1\)/);
    assert.doesNotMatch(out, /\x1b\[3[1-6]m/);
  });
});

/**
 * The HTTP router (src/http/server.ts) and the process's probe and metrics routes
 * (src/http/process-http.ts), on a real loopback socket:
 * - the access rules of a guarded route (DESIGN §12), each alone: the Host header, the
 *   anti-forgery header on a POST, the cluster token off loopback (accessRefusal, pure: off
 *   loopback cannot be reached from a test on one machine);
 * - bad requests (unknown path 404, wrong method 405, oversized body 413, malformed JSON 400,
 *   a handler's throw 500) get a JSON error and the server keeps serving;
 * - /health and /ready: 503 "starting" without a role, the roles' reasons, a probe that hangs
 *   bounded; /metrics parses as Prometheus text;
 * - the metrics' own logic: reconfiguration kinds and the replication lag gauges.
 */
import assert from 'node:assert/strict';
import { request } from 'node:http';
import { describe, test } from 'node:test';
import parsePrometheusTextFormat from 'parse-prometheus-text-format';
import { Nameserver, type PersistedMap } from '../../src/core/nameserver/nameserver.js';
import type { Config } from '../../src/core/types.js';
import { ProcessHttp } from '../../src/http/process-http.js';
import { accessRefusal, HttpServer, MAX_HTTP_BODY_BYTES } from '../../src/http/server.js';
import { NameserverMetrics, reconfigurationKind } from '../../src/nameserver/metrics.js';
import { createLogger } from '../../src/process/log.js';
import { StorageMetrics } from '../../src/storageserver/metrics.js';

const log = createLogger({ name: 'http-test', level: 'fatal', stderr: false });

interface Reply {
  readonly status: number;
  readonly body: string;
  readonly json: { error?: { code: string } } & Record<string, unknown>;
}

/** One request with exactly these headers (fetch would not let a test set Host). */
function call(
  port: number,
  method: string,
  path: string,
  headers: Record<string, string> = {},
  body?: string | Buffer,
): Promise<Reply> {
  return new Promise((resolve, reject) => {
    const req = request({ host: '127.0.0.1', port, method, path, headers }, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => chunks.push(c));
      res.on('end', () => {
        const text = Buffer.concat(chunks).toString('utf8');
        let json: Reply['json'] = {};
        try {
          json = JSON.parse(text) as Reply['json'];
        } catch {
          // not JSON (metrics)
        }
        resolve({ status: res.statusCode ?? 0, body: text, json });
      });
    });
    req.on('error', reject);
    req.end(body);
  });
}

describe('accessRefusal: the rules of a guarded route', () => {
  const base = {
    method: 'GET',
    host: '127.0.0.1:7080',
    antiForgery: undefined,
    authorization: undefined,
    fromLoopback: true,
    clusterToken: undefined,
  };

  test('the Host header must name an IP address or localhost (no DNS rebinding)', () => {
    for (const host of ['127.0.0.1:7080', '[::1]:7080', 'localhost:7080', 'localhost', '10.1.2.3'])
      assert.equal(accessRefusal({ ...base, host }), undefined, host);
    for (const host of ['evil.example:7080', 'evil.example', undefined, '', '[::1'])
      assert.equal(accessRefusal({ ...base, host })?.status, 403, String(host));
  });

  test('a POST needs X-Dstore-Request: 1; a GET does not', () => {
    assert.equal(accessRefusal({ ...base, method: 'POST' })?.status, 403);
    assert.equal(accessRefusal({ ...base, method: 'POST', antiForgery: '0' })?.status, 403);
    assert.equal(accessRefusal({ ...base, method: 'POST', antiForgery: '1' }), undefined);
  });

  test('off loopback the cluster token is needed as a Bearer; without one configured, refused', () => {
    const off = { ...base, fromLoopback: false };
    assert.equal(accessRefusal(off)?.status, 401, 'no token configured');
    const token = 's3cret-token';
    assert.equal(accessRefusal({ ...off, clusterToken: token })?.status, 401, 'none sent');
    assert.equal(accessRefusal({ ...off, clusterToken: token, authorization: 'Bearer wrong' })?.status, 401);
    assert.equal(accessRefusal({ ...off, clusterToken: token, authorization: token })?.status, 401, 'no Bearer');
    assert.equal(accessRefusal({ ...off, clusterToken: token, authorization: `Bearer ${token}` }), undefined);
    assert.equal(accessRefusal({ ...base, clusterToken: token }), undefined, 'loopback needs none');
  });
});

describe('HttpServer on loopback', () => {
  test('bad requests get JSON errors and the server keeps serving; guards apply to guarded routes only', async () => {
    const http = new HttpServer({ host: '127.0.0.1', port: 0, log });
    http
      .route('GET', '/ping', () => ({ body: { pong: true } }))
      .route('POST', '/echo', (req) => ({ body: { got: req.body } }), { guarded: true })
      .route('GET', '/boom', () => {
        throw new Error('handler bug');
      });
    const port = await http.listen();
    try {
      const notFound = await call(port, 'GET', '/nope');
      assert.equal(notFound.status, 404);
      assert.equal(notFound.json.error?.code, 'NOT_FOUND');
      const wrongMethod = await call(port, 'DELETE', '/ping');
      assert.equal(wrongMethod.status, 405);
      assert.equal(wrongMethod.json.error?.code, 'METHOD_NOT_ALLOWED');
      const guardHeaders = { 'x-dstore-request': '1', 'content-type': 'application/json' };
      const big = Buffer.alloc(MAX_HTTP_BODY_BYTES + 1024, 'a');
      const tooLarge = await call(port, 'POST', '/echo', guardHeaders, big);
      assert.equal(tooLarge.status, 413);
      assert.equal(tooLarge.json.error?.code, 'BODY_TOO_LARGE');
      const malformed = await call(port, 'POST', '/echo', guardHeaders, '{not json');
      assert.equal(malformed.status, 400);
      assert.equal(malformed.json.error?.code, 'MALFORMED');
      const boom = await call(port, 'GET', '/boom');
      assert.equal(boom.status, 500);
      assert.equal(boom.json.error?.code, 'INTERNAL');
      // Guards: Host and the anti-forgery header (on loopback no token is needed).
      const rebound = await call(port, 'POST', '/echo', { ...guardHeaders, host: 'evil.example' }, '{}');
      assert.equal(rebound.status, 403);
      const forged = await call(port, 'POST', '/echo', { 'content-type': 'application/json' }, '{}');
      assert.equal(forged.status, 403);
      const echoed = await call(port, 'POST', '/echo', guardHeaders, '{"a":1}');
      assert.equal(echoed.status, 200);
      assert.deepEqual(echoed.json, { got: { a: 1 } });
      // An unguarded route takes any Host.
      assert.equal((await call(port, 'GET', '/ping', { host: 'evil.example' })).status, 200);
      const head = await call(port, 'HEAD', '/ping');
      assert.equal(head.status, 200);
      assert.equal(head.body, '');
      // Still serving after all of it.
      assert.deepEqual((await call(port, 'GET', '/ping')).json, { pong: true });
    } finally {
      await http.close();
    }
  });
});

describe('ProcessHttp: /health, /ready, /metrics', () => {
  test('503 while starting, the roles reasons, a hanging probe bounded, metrics that parse', async () => {
    const http = new ProcessHttp({ host: '127.0.0.1', port: 0, log });
    const port = await http.listen();
    try {
      const starting = await call(port, 'GET', '/ready');
      assert.equal(starting.status, 503);
      assert.deepEqual(starting.json.reasons, ['the process is starting']);
      const metrics = new StorageMetrics();
      let ready = false;
      http.addRole({
        name: 'storage',
        registry: metrics.registry,
        health: async () => ({ ok: true, reasons: [] }),
        ready: async () => (ready ? { ok: true, reasons: [] } : { ok: false, reasons: ['partition 3 not active'] }),
      });
      assert.equal((await call(port, 'GET', '/health')).status, 200);
      const notReady = await call(port, 'GET', '/ready');
      assert.equal(notReady.status, 503);
      assert.deepEqual(notReady.json.reasons, ['storage: partition 3 not active']);
      ready = true;
      assert.equal((await call(port, 'GET', '/ready')).status, 200);
      http.addRole({
        name: 'nameserver',
        registry: new NameserverMetrics().registry,
        health: () => new Promise(() => undefined), // never answers
        ready: async () => ({ ok: true, reasons: [] }),
      });
      const hung = await call(port, 'GET', '/health');
      assert.equal(hung.status, 503);
      assert.match(String((hung.json.reasons as string[])[0]), /nameserver: nameserver health did not answer/);
      metrics.call('put', 0.001);
      metrics.call('put', 0.002, new Error('x'));
      const text = (await call(port, 'GET', '/metrics')).body;
      const families = parsePrometheusTextFormat(text);
      const names = families.map((f) => f.name);
      assert.equal(new Set(names).size, names.length, 'no family twice');
      const byName = new Map(families.map((f) => [f.name, f]));
      assert.equal(byName.get('process_cpu_user_seconds_total')?.type, 'COUNTER');
      assert.equal(byName.get('dstore_storage_operation_duration_seconds')?.type, 'HISTOGRAM');
      assert.equal(byName.get('dstore_reconfigurations_total')?.type, 'COUNTER');
      const ops = byName.get('dstore_storage_operations_total')!;
      const put = (outcome: string) =>
        ops.metrics.find((m) => m.labels?.op === 'put' && m.labels?.outcome === outcome)?.value;
      assert.equal(put('ok'), '1');
      assert.equal(put('INTERNAL'), '1');
    } finally {
      await http.close();
    }
  });
});

describe('metrics logic', () => {
  const cfg = (primary: string, secondaries: string[], learners: string[] = [], epoch = 1): Config =>
    ({ partition: 0, epoch, primary, secondaries, learners }) as unknown as Config;

  test('reconfiguration kinds', () => {
    assert.equal(reconfigurationKind(cfg('a', ['b', 'c']), cfg('b', ['c'], [], 2)), 'failover');
    assert.equal(reconfigurationKind(cfg('a', ['b'], ['c']), cfg('a', ['b', 'c'], [], 2)), 'promotion');
    assert.equal(reconfigurationKind(cfg('a', ['b']), cfg('a', ['b'], ['c'], 2)), 'learner_added');
    assert.equal(reconfigurationKind(cfg('a', ['b', 'c']), cfg('a', ['b'], [], 2)), 'member_removed');
  });

  test('the nameserver counts formed partitions, failovers and promotions from the maps it persists', async () => {
    const m = new NameserverMetrics();
    const settings = { partitions: 2, replicas: 2, minWriteReplicas: 1, initialNodes: 2 };
    const empty = Nameserver.newMap('c', settings);
    const withConfigs = (configs: Config[], version: number): PersistedMap => ({ ...empty, configs, version });
    m.onMapPersisted(empty);
    m.onMapPersisted(withConfigs([cfg('a', ['b']), { ...cfg('b', ['a']), partition: 1 } as Config], 2));
    m.onMapPersisted(withConfigs([cfg('b', [], [], 2), { ...cfg('b', ['a']), partition: 1 } as Config], 3));
    m.onMapPersisted(withConfigs([cfg('b', [], ['c'], 3), { ...cfg('b', ['a']), partition: 1 } as Config], 4));
    m.onMapPersisted(withConfigs([cfg('b', ['c'], [], 4), { ...cfg('b', ['a']), partition: 1 } as Config], 5));
    const f = new Map(parsePrometheusTextFormat(await m.registry.metrics()).map((x) => [x.name, x]));
    const kind = (k: string) =>
      f.get('dstore_reconfigurations_total')?.metrics.find((s) => s.labels?.kind === k)?.value;
    assert.equal(kind('formed'), '2');
    assert.equal(kind('failover'), '1');
    assert.equal(kind('learner_added'), '1');
    assert.equal(kind('promotion'), '1');
    assert.equal(f.get('dstore_failovers_total')?.metrics[0]?.value, '1');
    assert.equal(f.get('dstore_learner_promotions_total')?.metrics[0]?.value, '1');
  });

  test('replication lag: entries behind, and the age of the oldest unacked entry', async () => {
    const m = new StorageMetrics();
    let lastSeq = 10;
    m.source = {
      primaries: () => [
        {
          partition: 4,
          lastSeq,
          peers: [
            ['s2', 10],
            ['s3', 7],
          ] as const,
        },
      ],
      connections: () => ({ inbound: 3, outbound: 2 }),
    };
    const now = Date.now();
    m.sampleLastSeq(4, 5, now - 4000);
    m.sampleLastSeq(4, 8, now - 2000);
    m.sampleLastSeq(4, 10, now - 1000);
    const read = async () => new Map(parsePrometheusTextFormat(await m.registry.metrics()).map((x) => [x.name, x]));
    let f = await read();
    const lag = (name: string, replica: string) =>
      Number(f.get(name)?.metrics.find((s) => s.labels?.replica === replica && s.labels?.partition === '4')?.value);
    assert.equal(lag('dstore_replication_lag_entries', 's2'), 0);
    assert.equal(lag('dstore_replication_lag_entries', 's3'), 3);
    assert.equal(lag('dstore_replication_lag_seconds', 's2'), 0);
    // s3 acked 7: entry 8 was first seen 2 s ago.
    const s3 = lag('dstore_replication_lag_seconds', 's3');
    assert.ok(s3 >= 2 && s3 < 3, `lag ${s3} s`);
    lastSeq = 10;
    m.forgetPartition(4);
    f = await read();
    assert.equal(lag('dstore_replication_lag_seconds', 's3'), 0, 'no samples: unknown age reads 0');
    assert.equal(f.get('dstore_connections')?.metrics.find((s) => s.labels?.direction === 'inbound')?.value, '3');
  });
});

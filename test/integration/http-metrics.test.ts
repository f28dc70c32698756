/**
 * Issue 15, with real processes: the HTTP ports of the nameserver and the storage servers.
 *
 * - `dstore up` (its nameserver's HTTP port chosen by the OS, and its storage servers'): the
 *   banner names the dashboard; `nodes` lists each storage server's HTTP address; /health and
 *   /ready answer 200 everywhere; /metrics parses as Prometheus text with the expected
 *   families and types; after a fixed number of writes through the client library, the put
 *   counter with outcome ok summed over the storage servers (only a primary acks a put)
 *   equals the writes acknowledged, exactly; bad requests get JSON errors and the servers keep
 *   serving.
 * - A nameserver whose storage servers have not all registered: /health 200, /ready 503 with
 *   the reason; ready once they registered.
 */
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, test } from 'node:test';
import parsePrometheusTextFormat, { type PromFamily } from 'parse-prometheus-text-format';
import { connect } from '../../src/client/index.js';
import { ManagedProcess } from '../../src/process/managed-process.js';
import { nameserverArgs, storageArgs } from '../../src/process/node-args.js';
import { cleanEnv, startUp } from '../shared/dstore.js';
import { waitFor } from './cluster.js';

const WRITES = 200;

interface Got {
  readonly status: number;
  readonly text: string;
  readonly json: Record<string, unknown> & { reasons?: string[]; error?: { code: string } };
}

async function get(url: string, init: RequestInit = {}): Promise<Got> {
  const res = await fetch(url, { ...init, signal: AbortSignal.timeout(5000) });
  const text = await res.text();
  let json: Got['json'] = {};
  try {
    json = JSON.parse(text) as Got['json'];
  } catch {
    // /metrics is text
  }
  return { status: res.status, text, json };
}

async function families(base: string): Promise<Map<string, PromFamily>> {
  const got = await get(`${base}/metrics`);
  assert.equal(got.status, 200);
  const parsed = parsePrometheusTextFormat(got.text);
  const names = parsed.map((f) => f.name);
  assert.equal(new Set(names).size, names.length, `a family appears twice in ${base}/metrics`);
  return new Map(parsed.map((f) => [f.name, f]));
}

function expectTypes(f: Map<string, PromFamily>, expected: Record<string, PromFamily['type']>, where: string): void {
  for (const [name, type] of Object.entries(expected))
    assert.equal(f.get(name)?.type, type, `${where}: ${name} should be a ${type}`);
}

/** The value of the put counter with outcome ok (0 when absent). */
function putsOk(f: Map<string, PromFamily>): number {
  const s = f
    .get('dstore_storage_operations_total')
    ?.metrics.find((m) => m.labels?.op === 'put' && m.labels?.outcome === 'ok');
  return Number(s?.value ?? 0);
}

describe('HTTP ports of a cluster started by dstore up', () => {
  test('health, readiness and metrics; the put counter matches the acknowledged writes exactly', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'dstore-http-'));
    const up = await startUp([
      '--port',
      '0',
      '--nodes',
      '3',
      '--partitions',
      '8',
      '--backend',
      'memory',
      '--heartbeat-ms',
      '500',
      '--data-dir',
      dir,
    ]);
    const db = await connect(up.nameserver);
    try {
      const dashboard = /^ {2}dashboard\s+(http:\/\/\S+)\//m.exec(up.stdout())?.[1];
      assert.ok(dashboard, `the banner names the dashboard:\n${up.stdout()}`);
      const info = await db.nodes();
      const storage = info.nodes.filter((n) => n.role === 'storage');
      assert.equal(storage.length, 3);
      const bases = storage.map((n) => {
        assert.ok(n.httpAddress, `${n.id} has an HTTP address in nodes`);
        return `http://${n.httpAddress}`;
      });

      // Health and readiness: 200 with JSON bodies everywhere.
      for (const base of [dashboard, ...bases]) {
        for (const probe of ['health', 'ready']) {
          const got = await get(`${base}/${probe}`);
          assert.equal(got.status, 200, `${base}/${probe}: ${got.text}`);
          assert.equal(got.json.status, 'ok');
        }
      }
      const nsReady = await get(`${dashboard}/ready`);
      assert.equal(
        (nsReady.json.roles as { nameserver: { detail: { formed: boolean } } }).nameserver.detail.formed,
        true,
      );

      // Metrics parse, with the expected families and types.
      const ns = await families(dashboard);
      expectTypes(
        ns,
        {
          dstore_reconfigurations_total: 'COUNTER',
          dstore_failovers_total: 'COUNTER',
          dstore_learner_promotions_total: 'COUNTER',
          dstore_nodes: 'GAUGE',
          dstore_partitions_ready: 'GAUGE',
          dstore_nameserver_requests_total: 'COUNTER',
          dstore_nameserver_connections: 'GAUGE',
          process_cpu_user_seconds_total: 'COUNTER',
          nodejs_eventloop_lag_seconds: 'GAUGE',
        },
        'nameserver',
      );
      const alive = ns.get('dstore_nodes')?.metrics.find((m) => m.labels?.state === 'alive');
      assert.equal(alive?.value, '3');
      assert.equal(ns.get('dstore_partitions_ready')?.metrics[0]?.value, '8');
      const before = await Promise.all(bases.map((b) => families(b)));
      for (const [i, f] of before.entries())
        expectTypes(
          f,
          {
            dstore_storage_operations_total: 'COUNTER',
            dstore_storage_operation_duration_seconds: 'HISTOGRAM',
            dstore_errors_total: 'COUNTER',
            dstore_group_commit_batch_ops: 'HISTOGRAM',
            dstore_group_commit_write_duration_seconds: 'HISTOGRAM',
            dstore_replication_lag_entries: 'GAUGE',
            dstore_replication_lag_seconds: 'GAUGE',
            dstore_snapshot_transfers_total: 'COUNTER',
            dstore_learner_catchup_bytes_total: 'COUNTER',
            dstore_connections: 'GAUGE',
            process_resident_memory_bytes: 'GAUGE',
          },
          storage[i]!.id,
        );
      const putsBefore = before.reduce((sum, f) => sum + putsOk(f), 0);

      // A fixed number of writes; count what was acknowledged.
      let acked = 0;
      const failures: string[] = [];
      const keys = Array.from({ length: WRITES }, (_, i) => `metrics-key-${i}`);
      for (let i = 0; i < keys.length; i += 20)
        await Promise.all(
          keys.slice(i, i + 20).map((k) =>
            db.put(k, `value-${k}`).then(
              () => acked++,
              (err: unknown) => failures.push(String(err)),
            ),
          ),
        );
      assert.equal(acked, WRITES, `every write acknowledged; failures: ${failures.join('; ')}`);

      const after = await Promise.all(bases.map((b) => families(b)));
      const putsAfter = after.reduce((sum, f) => sum + putsOk(f), 0);
      console.log(`# put ok over the storage servers: ${putsAfter - putsBefore}; acknowledged: ${acked}`);
      assert.equal(putsAfter - putsBefore, acked, 'the put counters moved by exactly the writes acknowledged');
      // Group commit wrote batches; every primary's secondaries appear in the lag gauges.
      for (const [i, f] of after.entries()) {
        const batches = f.get('dstore_group_commit_batch_ops')?.metrics[0]?.count;
        assert.ok(Number(batches) > 0, `${storage[i]!.id} wrote group-commit batches`);
      }
      const lagSeries = after.reduce((n, f) => n + (f.get('dstore_replication_lag_entries')?.metrics.length ?? 0), 0);
      assert.equal(lagSeries, 8 * 2, 'one lag series per partition and secondary');

      // Bad requests: JSON errors, and the servers keep serving.
      for (const base of [dashboard, bases[0]!]) {
        const missing = await get(`${base}/no-such-path`);
        assert.equal(missing.status, 404);
        assert.equal(missing.json.error?.code, 'NOT_FOUND');
        const wrong = await get(`${base}/metrics`, { method: 'POST', body: 'x'.repeat(100_000) });
        assert.equal(wrong.status, 405);
        assert.equal(wrong.json.error?.code, 'METHOD_NOT_ALLOWED');
        assert.equal((await get(`${base}/health`)).status, 200, `${base} still serves`);
      }
    } finally {
      await db.close();
      const exit = await up.stop();
      rmSync(dir, { recursive: true, force: true });
      assert.equal(exit.code, 0, `up exited cleanly: ${up.stderr()}`);
    }
  });
});

describe('readiness before the cluster forms', () => {
  test('the nameserver is alive but not ready until its storage servers registered', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'dstore-ready-'));
    const procs: ManagedProcess[] = [];
    const managed = (name: string, role: 'nameserver' | 'storage', args: (port: number, http?: number) => string[]) => {
      const p = new ManagedProcess(
        name,
        role,
        join(dir, name),
        join(dir, `${name}.stderr.log`),
        0,
        args,
        cleanEnv(),
        () => undefined,
      );
      p.httpPort = 0;
      procs.push(p);
      return p;
    };
    try {
      const ns = managed('nameserver', 'nameserver', (port, httpPort) =>
        nameserverArgs({
          port,
          ...(httpPort === undefined ? {} : { httpPort }),
          dataDir: join(dir, 'nameserver'),
          partitions: 4,
          replicas: 2,
          initialNodes: 2,
          heartbeatMs: 300,
          deadAfterMs: 3000,
          logLevel: 'info',
        }),
      );
      await ns.start(20_000);
      const nsHttp = `http://127.0.0.1:${ns.httpPort}`;
      assert.equal((await get(`${nsHttp}/health`)).status, 200);
      const unformed = await get(`${nsHttp}/ready`);
      assert.equal(unformed.status, 503);
      assert.match(unformed.json.reasons?.join('; ') ?? '', /the cluster is not formed yet \(0 storage servers/);

      const storage = (id: string) =>
        managed(id, 'storage', (port, httpPort) =>
          storageArgs({
            nameserver: `127.0.0.1:${ns.port}`,
            port,
            ...(httpPort === undefined ? {} : { httpPort }),
            nodeId: id,
            backend: 'memory',
            dataDir: join(dir, id),
            heartbeatMs: 300,
            logLevel: 'info',
          }),
        );
      const s1 = storage('s1');
      await s1.start(20_000);
      assert.equal((await get(`http://127.0.0.1:${s1.httpPort}/health`)).status, 200);
      const one = await get(`${nsHttp}/ready`);
      assert.equal(one.status, 503, 'one of two storage servers: not formed');
      assert.match(one.json.reasons?.join('; ') ?? '', /1 storage servers registered/);

      const s2 = storage('s2');
      await s2.start(20_000);
      let last: Got | undefined;
      await waitFor(
        'the nameserver to be ready once both registered',
        async () => {
          last = await get(`${nsHttp}/ready`);
          return last.status === 200;
        },
        15_000,
      ).catch((err: unknown) => {
        throw new Error(`${String(err)}; last: ${last?.text}`);
      });
      // Each storage server: ready once every partition it is a member of (all 4: R=2, 2 servers) is active.
      for (const s of [s1, s2]) {
        let ready: Got | undefined;
        const held = (g: Got | undefined): number => {
          const d = (g?.json.roles as { storage?: { detail?: { primaries: number; secondaries: number } } })?.storage
            ?.detail;
          return (d?.primaries ?? 0) + (d?.secondaries ?? 0);
        };
        await waitFor(
          `${s.name} to be ready with its 4 partitions`,
          async () => {
            ready = await get(`http://127.0.0.1:${s.httpPort}/ready`);
            return ready.status === 200 && held(ready) === 4;
          },
          15_000,
        ).catch((err: unknown) => {
          throw new Error(`${String(err)}; last: ${ready?.text}`);
        });
      }
    } finally {
      for (const p of procs.reverse()) await p.stop(5000);
      rmSync(dir, { recursive: true, force: true });
    }
  });
});

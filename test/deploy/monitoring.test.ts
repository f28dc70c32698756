/**
 * Issue 15: the monitoring examples agree with what the processes serve, checked without
 * Prometheus or Grafana: deploy/grafana/dstore.json is a valid dashboard on a Prometheus data
 * source whose queries use only metrics the processes register (or prom-client's process
 * metrics), deploy/prometheus.yml scrapes the compose files' HTTP ports, and docs/metrics.md
 * lists every dstore metric.
 */
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { describe, test } from 'node:test';
import { collectDefaultMetrics, Registry } from 'prom-client';
import { parse } from 'yaml';
import { NameserverMetrics } from '../../src/nameserver/metrics.js';
import { StorageMetrics } from '../../src/storageserver/metrics.js';

interface Panel {
  readonly type: string;
  readonly title: string;
  readonly datasource?: { type?: string };
  readonly targets?: ReadonlyArray<{ expr: string; datasource?: { type?: string } }>;
}

/** Every metric family the processes register: dstore's and the process metrics. */
async function registered(): Promise<Set<string>> {
  const process = new Registry();
  collectDefaultMetrics({ register: process });
  const names = new Set<string>();
  for (const r of [process, new StorageMetrics().registry, new NameserverMetrics().registry])
    for (const m of await r.getMetricsAsJSON()) names.add(m.name);
  return names;
}

describe('monitoring examples', () => {
  test('the Grafana dashboard: valid JSON, Prometheus queries over registered metrics only', async () => {
    const dash = JSON.parse(readFileSync('deploy/grafana/dstore.json', 'utf8')) as {
      title: string;
      uid: string;
      panels: Panel[];
    };
    assert.equal(dash.title, 'dstore');
    const names = await registered();
    const panels = dash.panels.filter((p) => p.type !== 'row');
    assert.ok(panels.length >= 10, 'a dashboard worth the name');
    const used = new Set<string>();
    for (const p of panels) {
      assert.equal(p.datasource?.type, 'prometheus', `${p.title}: Prometheus data source`);
      assert.ok(p.targets && p.targets.length > 0, `${p.title} has queries`);
      for (const t of p.targets) {
        for (const m of t.expr.match(/\b(dstore|process|nodejs)_[a-z0-9_]+/g) ?? []) {
          const family = m.replace(/_(bucket|sum|count)$/, '');
          assert.ok(names.has(family), `${p.title}: ${m} is a registered metric`);
          used.add(family);
        }
      }
    }
    for (const m of ['dstore_storage_operations_total', 'dstore_replication_lag_seconds', 'dstore_failovers_total'])
      assert.ok(used.has(m), `the dashboard shows ${m}`);
  });

  test('the Prometheus scrape config targets the compose files’ HTTP ports', () => {
    const cfg = parse(readFileSync('deploy/prometheus.yml', 'utf8')) as {
      scrape_configs: Array<{ job_name: string; static_configs: Array<{ targets: string[] }> }>;
    };
    const targets = cfg.scrape_configs.flatMap((j) => j.static_configs.flatMap((s) => s.targets));
    const compose = parse(readFileSync('docker-compose.yml', 'utf8')) as {
      services: Record<string, { environment?: Record<string, string> }>;
    };
    const expected = Object.entries(compose.services).flatMap(([name, s]) => {
      const port = s.environment?.DSTORE_HTTP_PORT ?? s.environment?.DSTORE_STORAGE_HTTP_PORT;
      return port === undefined ? [] : [`${name}:${port}`];
    });
    assert.equal(expected.length, 4, 'the nameserver and three storage servers have HTTP ports');
    assert.deepEqual([...targets].sort(), [...expected].sort());
  });

  test('docs/metrics.md lists every dstore metric', async () => {
    const doc = readFileSync('docs/metrics.md', 'utf8');
    for (const name of await registered())
      if (name.startsWith('dstore_')) assert.ok(doc.includes(`\`${name}\``), `docs/metrics.md lists ${name}`);
  });
});

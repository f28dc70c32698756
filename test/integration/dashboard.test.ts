/**
 * Issue 15, the web dashboard in a real browser (Debian's chromium driven by playwright-core)
 * and `dstore top --once`, against a cluster started by `dstore up --no-shell` (ports chosen
 * by the OS, short heartbeat and dead-after). The test:
 * - writes and reads through the client and sees the calls in the overview's series;
 * - runs `dstore top --once` (table and --json) and checks the nodes and partitions, and
 *   `dstore top` refreshing until SIGINT (exit code 0);
 * - opens the page and checks the nodes table (s1..s3 alive) and the partition map;
 * - kills a node with its button: the page shows it dead, and every partition it led gets a
 *   new primary within the detection time (a bound printed and asserted generously);
 * - flips the read mode to fast in the page: `dstore config get` and `nodes --json` show it, and a
 *   `dstore get` that follows the cluster's mode is answered as a fast read, labelled stale;
 * - spawns a node with the button: it appears alive and, with a short
 *   --rereplicate-after-ms (the killed node's replicas are missing), takes a partition;
 * - stops the nameserver (SIGSTOP): the page says "nameserver unreachable", then live again
 *   after SIGCONT.
 * Skips with the command to install chromium when /usr/bin/chromium is missing.
 */
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import type { Browser, Page } from 'playwright-core';
import { connect } from '../../src/client/index.js';
import type { ClusterOverview } from '../../src/rpc/messages.js';
import { alive, cleanEnv, MAIN, runDstoreText, startUp, type UpCluster, waitFor } from '../shared/dstore.js';

const CHROMIUM = '/usr/bin/chromium';
const HEARTBEAT_MS = 200;
const DEAD_AFTER_MS = 1500;
/** Generous bound on a dead primary's partitions moving: dead-after, a few ticks, and the page's poll. */
const MOVE_BOUND_MS = DEAD_AFTER_MS + 8000;

const skip = existsSync(CHROMIUM)
  ? false
  : `${CHROMIUM} is missing: apt-get install chromium (the dashboard test drives it with playwright-core)`;

/** The rows' text of a table column, by the cell's class. */
async function column(page: Page, table: string, cls: string): Promise<string[]> {
  return page.$$eval(`#${table} tbody td.${cls}`, (cells) => cells.map((c) => c.textContent ?? ''));
}

async function nodeState(page: Page, id: string): Promise<string | undefined> {
  const cell = await page.$(`#nodes tbody tr[data-node="${id}"] td.state`);
  return cell ? ((await cell.textContent()) ?? undefined) : undefined;
}

/** Polls `check` (async) every 100 ms until true; fails with `explain()` after `ms`. */
async function until(
  check: () => Promise<boolean>,
  ms: number,
  explain: () => Promise<string> | string,
): Promise<void> {
  const deadline = Date.now() + ms;
  for (;;) {
    if (await check()) return;
    if (Date.now() > deadline) throw new Error(`timed out after ${ms} ms: ${await explain()}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

test('the dashboard in chromium: nodes, kill with failover, spawn, nameserver unreachable; dstore top --once', {
  skip,
  timeout: 180_000,
}, async () => {
  const { chromium } = await import('playwright-core');
  const dir = mkdtempSync(join(tmpdir(), 'dstore-dashboard-'));
  let up: UpCluster | undefined;
  let browser: Browser | undefined;
  const extraPids: number[] = [];
  try {
    up = await startUp([
      '--port',
      '0',
      '--nodes',
      '3',
      '--data-dir',
      join(dir, 'c'),
      '--heartbeat-ms',
      String(HEARTBEAT_MS),
      '--dead-after-ms',
      String(DEAD_AFTER_MS),
      '--rereplicate-after-ms',
      '1000',
    ]);
    const cluster = up;
    const url = /^\s*dashboard\s+(http:\/\/\S+)/m.exec(cluster.stdout())?.[1];
    assert.ok(url, `the banner names the dashboard: ${cluster.stdout()}`);

    // Calls reach the series: 300 writes and 300 reads through the client, then the overview's series
    // and the nodes' rates show them (the storage servers report their calls with each heartbeat).
    const db = await connect(cluster.nameserver, { timeoutMs: 10_000 });
    try {
      const keys = Array.from({ length: 300 }, (_, i) => `dash-${i}`);
      for (let i = 0; i < keys.length; i += 10) await Promise.all(keys.slice(i, i + 10).map((k) => db.put(k, 'v')));
      for (let i = 0; i < keys.length; i += 10) await Promise.all(keys.slice(i, i + 10).map((k) => db.get(k)));
      let seen: ClusterOverview | undefined;
      const deadline = Date.now() + 10_000;
      const counted = (o: ClusterOverview, f: 'writesPerSec' | 'readsPerSec'): number =>
        o.series.reduce((sum, p) => sum + p[f], 0);
      for (;;) {
        seen = await db.overview();
        if (counted(seen, 'writesPerSec') > 0 && counted(seen, 'readsPerSec') > 0) break;
        if (Date.now() > deadline) throw new Error(`no calls in the series: ${JSON.stringify(seen.series.slice(-5))}`);
        await new Promise((r) => setTimeout(r, 200));
      }
      // One point a second of the rates each server reported over its last heartbeat (≈200 ms): the
      // sum over the points is the calls seen, give or take the sampling; bounded loosely both ways.
      const writes = counted(seen, 'writesPerSec');
      console.log(
        `dashboard: 300 writes, 300 reads; the series' sum: ${writes.toFixed(0)} writes, ${counted(seen, 'readsPerSec').toFixed(0)} reads`,
      );
      assert.ok(writes < 300 * 10, `writes not wildly over-counted (${writes})`);
      assert.ok(
        seen.series.some((p) => p.p99Ms > 0 && p.p50Ms > 0 && p.p99Ms >= p.p50Ms),
        'a latency point with p50 <= p99',
      );
    } finally {
      await db.close();
    }

    // dstore top --once: the same view in a terminal, and as JSON.
    const top = await runDstoreText(['top', '--once', '--nameserver', cluster.nameserver]);
    assert.equal(top.code, 0, top.stderr);
    for (const id of ['s1', 's2', 's3']) assert.match(top.stdout, new RegExp(`^${id}\\s+alive`, 'm'));
    assert.match(top.stdout, /16\/16 partitions ready/);
    assert.match(top.stdout, /^PARTITION\s+EPOCH\s+PRIMARY/m);
    const topJson = await runDstoreText(['top', '--once', '--json', '--nameserver', cluster.nameserver]);
    assert.equal(topJson.code, 0, topJson.stderr);
    const view = JSON.parse(topJson.stdout) as ClusterOverview;
    assert.equal(view.partitions.length, 16);
    assert.ok(view.events.some((e) => e.kind === 'formed'));

    // dstore top refreshing (piped: one view after the other) until SIGINT, which ends it cleanly.
    const live = spawn(process.execPath, [MAIN, 'top', '--interval', '200ms', '--nameserver', cluster.nameserver], {
      env: cleanEnv(),
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let liveOut = '';
    live.stdout.on('data', (c: Buffer) => (liveOut += c.toString('utf8')));
    const liveExit = new Promise<number | null>((resolve) => live.once('exit', (code) => resolve(code)));
    try {
      await waitFor(
        () => (liveOut.match(/^dstore top/gm) ?? []).length >= 3,
        10_000,
        () => `dstore top did not refresh: ${liveOut}`,
      );
      live.kill('SIGINT');
      const code = await Promise.race([liveExit, new Promise((r) => setTimeout(() => r('timeout'), 5000))]);
      assert.equal(code, 0, 'dstore top exits 0 on SIGINT');
    } finally {
      if (live.exitCode === null) live.kill('SIGKILL');
    }

    browser = await chromium.launch({ executablePath: CHROMIUM });
    const page = await browser.newPage();
    const pageErrors: string[] = [];
    page.on('pageerror', (e) => pageErrors.push(String(e)));
    await page.goto(url);

    // The nodes table: the nameserver and s1..s3, alive; the partition map.
    await until(
      async () => (await nodeState(page, 's3')) === 'alive',
      15_000,
      async () => `nodes table: ${await page.textContent('#nodes')}`,
    );
    for (const id of ['nameserver', 's1', 's2', 's3']) assert.equal(await nodeState(page, id), 'alive', id);
    assert.equal((await column(page, 'partitions', 'primary')).length, 16);
    assert.match((await page.textContent('#status')) ?? '', /^live/);
    assert.ok(await page.isVisible('#spawn'), 'a cluster started by up offers spawn');

    // Read mode flipped in the page: `dstore config get` and `nodes --json` show it (issue 15 live settings).
    await until(
      async () => page.isVisible('#read-mode'),
      10_000,
      () => 'the read-mode control is shown',
    );
    assert.equal(await page.inputValue('#read-mode'), 'linearizable');
    await page.selectOption('#read-mode', 'fast');
    await page.click('#read-mode-apply');
    await until(
      async () => /read.mode/i.test((await page.textContent('#config-result')) ?? ''),
      10_000,
      async () => `config result: ${await page.textContent('#config-result')}`,
    );
    const config = await runDstoreText(['config', 'get', '--nameserver', cluster.nameserver]);
    assert.equal(config.code, 0, config.stderr);
    assert.match(config.stdout, /^read-mode\s+fast \(reads may be stale\)$/m);
    const nodes = await runDstoreText(['nodes', '--json', '--nameserver', cluster.nameserver]);
    assert.equal((JSON.parse(nodes.stdout) as { readMode?: string }).readMode, 'fast');
    // A client that follows the cluster's read mode now reads fast, and says the value may be stale.
    const fast = await runDstoreText(['get', 'dash-0', '--json', '--nameserver', cluster.nameserver]);
    assert.equal(fast.code, 0, fast.stderr);
    assert.deepEqual(JSON.parse(fast.stdout), { value: 'v', version: JSON.parse(fast.stdout).version, stale: true });
    await until(
      async () => /read mode fast/.test((await page.textContent('#live-settings')) ?? ''),
      5000,
      async () => `live settings: ${await page.textContent('#live-settings')}`,
    );

    // Kill s2 with its button: dead, and its partitions get a new primary.
    const victim = 's2';
    const led = (await column(page, 'partitions', 'primary')).filter((p) => p === victim).length;
    assert.ok(led > 0, `${victim} leads partitions`);
    const killedAt = Date.now();
    await page.click(`button[data-action="kill"][data-node="${victim}"]`);
    await until(
      async () => /killed \(SIGKILL\)/.test((await page.textContent('#action-result')) ?? ''),
      10_000,
      async () => `action result: ${await page.textContent('#action-result')}`,
    );
    await until(
      async () => (await nodeState(page, victim)) === 'dead',
      MOVE_BOUND_MS,
      async () => `${victim}: ${await nodeState(page, victim)}`,
    );
    await until(
      async () => !(await column(page, 'partitions', 'primary')).includes(victim),
      MOVE_BOUND_MS,
      async () => `primaries: ${(await column(page, 'partitions', 'primary')).join(' ')}`,
    );
    const movedMs = Date.now() - killedAt;
    console.log(`dashboard: ${victim} dead and its ${led} partitions under new primaries ${movedMs} ms after kill`);
    assert.ok(movedMs <= MOVE_BOUND_MS, `moved within ${MOVE_BOUND_MS} ms (took ${movedMs})`);
    await until(
      async () => ((await page.textContent('#events')) ?? '').includes(`${victim} is dead`),
      5000,
      async () => `events: ${await page.textContent('#events')}`,
    );
    assert.match((await page.textContent('#events')) ?? '', /new primary/);

    // Spawn with the button: s4 appears alive and takes a partition (re-replication of s2's replicas).
    await page.click('#spawn');
    await until(
      async () => /spawned s4/.test((await page.textContent('#action-result')) ?? ''),
      20_000,
      async () => `action result: ${await page.textContent('#action-result')}`,
    );
    const spawnedPid = /spawned s4 \(pid (\d+)/.exec((await page.textContent('#action-result')) ?? '')?.[1];
    if (spawnedPid !== undefined) extraPids.push(Number(spawnedPid));
    await until(
      async () => (await nodeState(page, 's4')) === 'alive',
      15_000,
      async () => `nodes table: ${await page.textContent('#nodes')}`,
    );
    await until(
      async () => Number(await page.textContent('#nodes tbody tr[data-node="s4"] td.held')) > 0,
      30_000,
      async () => `s4 holds nothing; partitions: ${await page.textContent('#partitions')}`,
    );
    const withS4 = [
      ...(await column(page, 'partitions', 'secondaries')),
      ...(await column(page, 'partitions', 'learners')),
    ].filter((c) => c.split(', ').includes('s4')).length;
    assert.ok(withS4 > 0, 's4 is a learner or secondary of a partition');

    // The nameserver stops answering: the page says so and keeps trying; then it is back.
    const nameserverPid = cluster.pids[0]!;
    process.kill(nameserverPid, 'SIGSTOP');
    try {
      await until(
        async () => /nameserver unreachable/.test((await page.textContent('#status')) ?? ''),
        10_000,
        async () => `status: ${await page.textContent('#status')}`,
      );
    } finally {
      process.kill(nameserverPid, 'SIGCONT');
    }
    await until(
      async () => /^live/.test((await page.textContent('#status')) ?? ''),
      10_000,
      async () => `status: ${await page.textContent('#status')}`,
    );
    assert.deepEqual(pageErrors, [], 'no script error in the page');
  } finally {
    await browser?.close();
    await up?.stop();
    for (const pid of extraPids) if (alive(pid)) process.kill(pid, 'SIGKILL');
    rmSync(dir, { recursive: true, force: true });
  }
});

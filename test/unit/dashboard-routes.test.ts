/**
 * Issue 15: the dashboard's routes on a real HttpServer (loopback, port 0) with a fake
 * overview and a fake `up` at the other end of the IPC channel: the page and its files (and
 * nothing else from the disk), the API's JSON, node actions refused with 409 for a cluster
 * `up` did not start, asked of `up` and answered when it did (bounded when it does not
 * answer), the anti-forgery header, and the config switch's body checks.
 */
import assert from 'node:assert/strict';
import { EventEmitter } from 'node:events';
import { after, before, describe, test } from 'node:test';
import { pino } from 'pino';
import { HttpServer } from '../../src/http/server.js';
import { installDashboard, NOT_STARTED_BY_UP } from '../../src/nameserver/dashboard.js';
import { type UpActionRequest, UpControl } from '../../src/nameserver/up-control.js';
import type { ClusterOverview } from '../../src/rpc/messages.js';

const log = pino({ level: 'silent' });
const overview: ClusterOverview = {
  clusterId: 'c-test',
  formed: true,
  mapVersion: 3,
  partitionsReady: 0,
  nowMs: 1,
  settings: { partitions: 1 },
  nodes: [],
  partitions: [],
  events: [],
  series: [],
};

/** The nameserver's end of an IPC channel to a fake `up` that answers with `answer` (or never). */
function fakeParent(answer: ((r: UpActionRequest) => { outcome: string; message: string }) | undefined) {
  const asked: UpActionRequest[] = [];
  const channel = Object.assign(new EventEmitter(), {
    connected: true,
    send(m: UpActionRequest, _h: unknown, _o: unknown, cb: (err: Error | null) => void): boolean {
      asked.push(m);
      cb(null);
      if (answer)
        setImmediate(() => channel.emit('message', { type: 'dstore-up-action-result', id: m.id, ...answer(m) }));
      return true;
    },
  });
  return { channel: channel as unknown as NodeJS.Process, asked };
}

async function serve(deps: Parameters<typeof installDashboard>[1]): Promise<{ url: string; close(): Promise<void> }> {
  const http = new HttpServer({ host: '127.0.0.1', port: 0, log });
  installDashboard(http, deps);
  const port = await http.listen();
  return { url: `http://127.0.0.1:${port}`, close: () => http.close() };
}

const post = (url: string, body?: unknown, forgeryHeader = true) =>
  fetch(url, {
    method: 'POST',
    headers: {
      ...(forgeryHeader ? { 'x-dstore-request': '1' } : {}),
      ...(body === undefined ? {} : { 'content-type': 'application/json' }),
    },
    ...(body === undefined ? {} : { body: JSON.stringify(body) }),
  });

describe('dashboard routes, a cluster not started by up', () => {
  let s: Awaited<ReturnType<typeof serve>>;
  const switched: unknown[] = [];
  before(async () => {
    s = await serve({
      overview: async () => overview,
      config: async () => ({ live: 'x' }),
      setConfig: async (name, value, options) => {
        switched.push({ name, value, ...options });
        return { summary: `${name} ${value}` };
      },
    });
  });
  after(() => s.close());

  test('the page, its files and uPlot; nothing else from the disk', async () => {
    const page = await fetch(`${s.url}/`);
    assert.equal(page.status, 200);
    assert.match(page.headers.get('content-type') ?? '', /text\/html/);
    assert.match(page.headers.get('content-security-policy') ?? '', /default-src 'self'/);
    assert.match(await page.text(), /<script type="module" src="\/web\/app.js">/);
    const app = await fetch(`${s.url}/web/app.js`);
    assert.equal(app.status, 200);
    assert.match(app.headers.get('content-type') ?? '', /text\/javascript/);
    assert.equal((await fetch(`${s.url}/vendor/uPlot.esm.js`)).status, 200);
    assert.equal((await fetch(`${s.url}/vendor/uPlot.min.css`)).status, 200);
    for (const path of ['/web/..%2fpackage.json', '/web/../package.json', '/web/nothing.js', '/web/'])
      assert.equal((await fetch(`${s.url}${path}`)).status, 404, path);
  });

  test('GET /api/cluster: the overview, and no node actions here', async () => {
    const r = await fetch(`${s.url}/api/cluster`);
    assert.equal(r.status, 200);
    const body = (await r.json()) as ClusterOverview & { control: { actions: boolean; reason?: string } };
    assert.equal(body.clusterId, 'c-test');
    assert.deepEqual(body.control, { actions: false, reason: NOT_STARTED_BY_UP });
  });

  test('actions: 403 without X-Dstore-Request, then 409 naming dstore up', async () => {
    assert.equal((await post(`${s.url}/api/nodes/s1/kill`, undefined, false)).status, 403);
    for (const path of ['/api/nodes/s1/kill', '/api/nodes/s2/restart', '/api/spawn']) {
      const r = await post(`${s.url}${path}`);
      assert.equal(r.status, 409, path);
      const { error } = (await r.json()) as { error: { code: string; message: string } };
      assert.equal(error.code, 'NOT_STARTED_BY_UP');
      assert.match(
        error.message,
        /not started by dstore up, so its nodes are started and stopped by its process manager/,
      );
    }
    assert.equal((await fetch(`${s.url}/api/nodes/s1/kill`)).status, 405);
  });

  test('POST /api/config: checked body, then the switch', async () => {
    for (const body of [undefined, {}, { name: 'read-mode' }, { name: 'read-mode', value: 'fast', force: 'yes' }])
      assert.equal((await post(`${s.url}/api/config`, body)).status, 400, JSON.stringify(body));
    const r = await post(`${s.url}/api/config`, { name: 'read-mode', value: 'fast' });
    assert.equal(r.status, 200);
    assert.deepEqual(switched, [{ name: 'read-mode', value: 'fast' }]);
    assert.deepEqual(await (await fetch(`${s.url}/api/config`)).json(), { live: 'x' });
  });
});

describe('dashboard routes, a cluster started by up', () => {
  test('an action is asked of up over IPC and its answer is the reply', async () => {
    const parent = fakeParent((m) =>
      m.node === 's9'
        ? { outcome: 'refused', message: 'no node s9' }
        : { outcome: 'done', message: `${m.node ?? 'new'} ${m.action}ed` },
    );
    const s = await serve({ overview: async () => overview, upControl: new UpControl(parent.channel) });
    try {
      const body = (await (await fetch(`${s.url}/api/cluster`)).json()) as { control: unknown };
      assert.deepEqual(body.control, { actions: true });
      const r = await post(`${s.url}/api/nodes/s1/kill`);
      assert.equal(r.status, 200);
      assert.deepEqual(await r.json(), { ok: true, outcome: 'done', message: 's1 killed' });
      assert.equal((await post(`${s.url}/api/spawn`)).status, 200);
      const refused = await post(`${s.url}/api/nodes/s9/pause`);
      assert.equal(refused.status, 409);
      assert.deepEqual(((await refused.json()) as { error: unknown }).error, {
        code: 'REFUSED',
        message: 'no node s9',
      });
      assert.deepEqual(
        parent.asked.map((m) => `${m.action} ${m.node ?? '-'}`),
        ['kill s1', 'spawn -', 'pause s9'],
      );
      // The nameserver serves the page: it is not killed from there. Unknown actions are 404.
      assert.equal((await post(`${s.url}/api/nodes/nameserver/kill`)).status, 409);
      assert.equal((await post(`${s.url}/api/nodes/s1/explode`)).status, 404);
      assert.equal((await post(`${s.url}/api/nodes/s1/spawn`)).status, 404);
      assert.equal(parent.asked.length, 3);
    } finally {
      await s.close();
    }
  });

  test('up that does not answer: a failure after the bound, not a hang', async () => {
    const parent = fakeParent(undefined);
    const control = new UpControl(parent.channel, 100);
    const started = Date.now();
    const r = await control.request('restart', 's1');
    assert.equal(r.outcome, 'failed');
    assert.match(r.message, /did not answer within 0.1 s/);
    assert.ok(Date.now() - started < 2000);
    assert.equal(parent.channel.listenerCount('message'), 0, 'no listener left behind');
  });
});

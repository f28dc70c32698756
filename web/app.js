// The dstore dashboard (issue 15): polls GET /api/cluster every second and draws the nodes,
// the partition map, the calls and latency charts (uPlot) and the recent events. The node
// buttons POST to /api/nodes/<id>/<action> and /api/spawn. Plain ES modules, no build step.
//
// Off loopback the API needs the cluster token: on a 401 the page asks for it and sends it as
// `Authorization: Bearer`. Every POST sends `X-Dstore-Request: 1` (the server's anti-forgery check).
import uPlot from '/vendor/uPlot.esm.js';

const POLL_MS = 1000;
const FETCH_TIMEOUT_MS = 3000;
const TOKEN_KEY = 'dstore-cluster-token';
const NODE_ACTIONS = ['kill', 'pause', 'resume', 'restart'];

const $ = (id) => document.getElementById(id);

let token = sessionStorage.getItem(TOKEN_KEY) ?? '';
let charts;
let busy = false;

function headers(extra = {}) {
  return token === '' ? extra : { ...extra, authorization: `Bearer ${token}` };
}

/** A fetch that gives up after FETCH_TIMEOUT_MS (a paused nameserver accepts and never answers). */
async function call(path, options = {}) {
  const abort = new AbortController();
  const timer = setTimeout(() => abort.abort(), options.timeoutMs ?? FETCH_TIMEOUT_MS);
  try {
    const res = await fetch(path, { ...options, headers: headers(options.headers), signal: abort.signal });
    const body = await res.json().catch(() => ({}));
    return { status: res.status, body };
  } finally {
    clearTimeout(timer);
  }
}

function setStatus(state, text) {
  const el = $('status');
  el.dataset.state = state;
  el.textContent = text;
  document.body.classList.toggle('stale', state !== 'live');
}

function el(tag, attrs = {}, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (k === 'dataset') Object.assign(e.dataset, v);
    else if (k === 'className') e.className = v;
    else e.setAttribute(k, v);
  }
  for (const c of children) e.append(c instanceof Node ? c : String(c));
  return e;
}

function duration(ms) {
  if (ms === undefined) return '';
  if (ms < 1000) return `${Math.round(ms)} ms`;
  const s = ms / 1000;
  if (s < 120) return `${s.toFixed(1)} s`;
  if (s < 7200) return `${Math.round(s / 60)} min`;
  return `${(s / 3600).toFixed(1)} h`;
}

function num(x, digits = 0) {
  return x === undefined ? '' : Number(x).toFixed(digits);
}

// ---- drawing ----

function renderSummary(o) {
  const s = o.settings;
  $('cluster').textContent = `cluster ${o.clusterId}`;
  const parts = [
    o.formed ? 'formed' : 'not formed yet',
    `map version ${o.mapVersion}`,
    `${o.partitionsReady}/${s.partitions} partitions ready`,
    `R=${s.replicas}`,
    `min write replicas ${s.minWriteReplicas}`,
    `dead after ${duration(s.deadAfterMs)}`,
  ];
  if (s.readMode !== undefined) parts.push(`read mode ${s.readMode}`);
  $('summary').replaceChildren(...parts.map((p) => el('span', {}, p)));
}

let readModeDirty = false;

function renderSettings(o) {
  const s = o.settings;
  if (s.readMode === undefined) {
    $('settings').hidden = true;
    return;
  }
  $('settings').hidden = false;
  const select = $('read-mode');
  if (!readModeDirty && document.activeElement !== select) select.value = s.readMode;
  const sync = Object.entries(s.sync ?? {})
    .map(([id, v]) => `${id}: ${v}`)
    .join(', ');
  $('live-settings').textContent =
    `epoch ${s.liveEpoch ?? s.epoch} · read mode ${s.readMode} · min write replicas ${s.minWriteReplicas} · ` +
    `heartbeat ${duration(s.heartbeatMs)} · dead after ${duration(s.deadAfterMs)} · log level ${s.logLevel}` +
    (sync === '' ? '' : ` · sync ${sync}`);
}

async function setConfig(name, value, force = false) {
  const result = $('config-result');
  result.dataset.outcome = 'pending';
  result.textContent = `${name} ${value} …`;
  try {
    const { status, body } = await call('/api/config', {
      method: 'POST',
      headers: { 'x-dstore-request': '1', 'content-type': 'application/json' },
      body: JSON.stringify(force ? { name, value, force } : { name, value }),
    });
    if (status === 200) {
      result.dataset.outcome = body.weakens === undefined ? 'done' : 'warning';
      result.textContent = body.summary ?? `${name} is ${value}`;
      readModeDirty = false;
      return;
    }
    const message = body.error?.message ?? `HTTP ${status}`;
    // A switch that weakens durability is refused without force: say what it weakens, and ask.
    if (!force && /without --force/.test(message) && window.confirm(`${message}\n\nApply it anyway?`))
      return setConfig(name, value, true);
    result.dataset.outcome = 'refused';
    result.textContent = message;
  } catch (e) {
    result.dataset.outcome = 'failed';
    result.textContent = `${name}: no answer (${e.message})`;
  }
}

function actionButtons(node, control) {
  const td = el('td', { className: 'actions' });
  if (node.role !== 'storage') return td;
  // Issue 15: draining is the nameserver's own, so it works on any cluster, not only under dstore up.
  const drain = node.moving === 'draining' ? 'undrain' : 'drain';
  const d = el('button', { type: 'button', dataset: { action: drain, node: node.id } }, drain);
  d.addEventListener('click', () => act(`/api/nodes/${encodeURIComponent(node.id)}/${drain}`, `${drain} ${node.id}`));
  td.append(d);
  if (!control.actions) return td;
  for (const action of NODE_ACTIONS) {
    const b = el('button', { type: 'button', dataset: { action, node: node.id } }, action);
    b.addEventListener('click', () =>
      act(`/api/nodes/${encodeURIComponent(node.id)}/${action}`, `${action} ${node.id}`),
    );
    td.append(b);
  }
  return td;
}

function renderNodes(o) {
  const rows = o.nodes.map((n) =>
    el(
      'tr',
      { dataset: { node: n.id, state: n.state } },
      el('td', { className: 'id' }, n.id),
      el('td', {}, n.address),
      el('td', { className: 'state', dataset: { state: n.state } }, n.moving ? `${n.state} (${n.moving})` : n.state),
      el('td', { className: 'num' }, n.role === 'storage' ? duration(n.heartbeatAgeMs) : ''),
      el('td', { className: 'num held' }, n.role === 'storage' ? n.partitionsHeld : ''),
      el('td', { className: 'num led' }, n.role === 'storage' ? n.partitionsLed : ''),
      el('td', { className: 'num' }, n.role === 'storage' ? n.keys : ''),
      el('td', {}, n.backend ?? ''),
      el('td', { className: 'num' }, duration(n.uptimeMs)),
      el('td', { className: 'num' }, num(n.opsPerSec, 1)),
      el('td', { className: 'num' }, num(n.p99Ms, 2)),
      actionButtons(n, o.control ?? { actions: false }),
    ),
  );
  $('nodes').tBodies[0].replaceChildren(...rows);
  const control = o.control ?? { actions: false };
  $('spawn').hidden = !control.actions;
  $('control-note').hidden = control.actions;
  $('control-note').textContent = control.actions ? '' : `Node actions: ${control.reason ?? 'not available'}.`;
}

function renderPartitions(o) {
  const rows = o.partitions.map((p) => {
    const lag = Object.entries(p.lag)
      .map(([id, n]) => `${id}: ${n}`)
      .join(', ');
    return el(
      'tr',
      { dataset: { partition: p.partition } },
      el('td', { className: 'num' }, p.partition),
      el('td', { className: 'num' }, p.epoch),
      el('td', { className: 'primary' }, p.primary),
      el('td', { className: 'secondaries' }, p.secondaries.join(', ')),
      el('td', { className: 'learners' }, p.learners.join(', ')),
      el('td', { className: 'num' }, p.lastSeq ?? ''),
      el('td', {}, lag),
      el('td', {}, p.serving ? 'yes' : 'no'),
    );
  });
  $('partitions').tBodies[0].replaceChildren(...rows);
}

function renderEvents(o) {
  const items = [...o.events]
    .reverse()
    .map((e) => el('li', { dataset: { kind: e.kind } }, `${new Date(e.atMs).toLocaleTimeString()}  ${e.message}`));
  $('events').replaceChildren(...items);
}

function chartWidth(id) {
  return Math.max(300, $(id).clientWidth - 2);
}

function makeCharts() {
  const axes = [{}, { size: 60 }];
  const ops = new uPlot(
    {
      width: chartWidth('chart-ops'),
      height: 220,
      axes,
      series: [
        {},
        { label: 'reads/s', stroke: '#1565c0', width: 1.5, points: { show: false } },
        { label: 'writes/s', stroke: '#2e7d32', width: 1.5, points: { show: false } },
        { label: 'errors/s', stroke: '#c62828', width: 1.5, points: { show: false } },
      ],
    },
    [[], [], [], []],
    $('chart-ops'),
  );
  const latency = new uPlot(
    {
      width: chartWidth('chart-latency'),
      height: 220,
      axes,
      series: [
        {},
        { label: 'p50 ms', stroke: '#6a1b9a', width: 1.5, points: { show: false } },
        { label: 'p99 ms', stroke: '#ef6c00', width: 1.5, points: { show: false } },
      ],
    },
    [[], [], []],
    $('chart-latency'),
  );
  window.addEventListener('resize', () => {
    ops.setSize({ width: chartWidth('chart-ops'), height: 220 });
    latency.setSize({ width: chartWidth('chart-latency'), height: 220 });
  });
  return { ops, latency };
}

function renderCharts(o) {
  charts ??= makeCharts();
  const t = o.series.map((p) => p.atMs / 1000);
  charts.ops.setData([
    t,
    o.series.map((p) => p.readsPerSec),
    o.series.map((p) => p.writesPerSec),
    o.series.map((p) => p.errorsPerSec),
  ]);
  charts.latency.setData([t, o.series.map((p) => p.p50Ms), o.series.map((p) => p.p99Ms)]);
}

function render(o) {
  renderSummary(o);
  renderSettings(o);
  renderNodes(o);
  renderPartitions(o);
  renderEvents(o);
  renderCharts(o);
}

// ---- polling, token, actions ----

function askToken(message) {
  $('token-form').hidden = false;
  $('token-error').textContent = message;
}

async function poll() {
  try {
    const { status, body } = await call('/api/cluster');
    if (status === 401) {
      setStatus('unauthorized', 'cluster token needed');
      askToken(token === '' ? '' : 'the nameserver refused this token');
    } else if (status !== 200) {
      setStatus('unreachable', `nameserver answered ${status}: ${body.error?.message ?? ''} — retrying`);
    } else {
      $('token-form').hidden = true;
      setStatus('live', `live · ${new Date(body.nowMs).toLocaleTimeString()}`);
      render(body);
    }
  } catch {
    setStatus('unreachable', 'nameserver unreachable — retrying');
  } finally {
    setTimeout(poll, POLL_MS);
  }
}

function showResult(outcome, message) {
  const p = $('action-result');
  p.dataset.outcome = outcome;
  p.textContent = message;
}

async function act(path, what) {
  if (busy) return;
  busy = true;
  showResult('pending', `${what} …`);
  try {
    const { status, body } = await call(path, {
      method: 'POST',
      headers: { 'x-dstore-request': '1' },
      timeoutMs: 20_000,
    });
    if (status === 200) showResult(body.outcome, body.message);
    else showResult(status === 409 ? 'refused' : 'failed', `${what}: ${body.error?.message ?? `HTTP ${status}`}`);
  } catch (e) {
    showResult('failed', `${what}: no answer (${e.message})`);
  } finally {
    busy = false;
  }
}

$('spawn').addEventListener('click', () => act('/api/spawn', 'spawn'));
$('read-mode').addEventListener('change', () => {
  readModeDirty = true;
});
$('read-mode-form').addEventListener('submit', (e) => {
  e.preventDefault();
  setConfig('read-mode', $('read-mode').value);
});
$('token-form').addEventListener('submit', (e) => {
  e.preventDefault();
  token = $('token').value;
  sessionStorage.setItem(TOKEN_KEY, token);
  $('token-error').textContent = '';
  $('token-form').hidden = true;
});
poll();

/**
 * `dstore top` (issue 15): the dashboard's live view in a terminal — the cluster's calls per
 * second and latency, the nodes and the partition map, the last events — refreshed every
 * `--interval` from the nameserver's `overview` call (the leader answers; the client's seeds,
 * token and retries as for every command). `--once` prints one view and exits; `--json`
 * prints the overview as JSON (one line per refresh without --once). On a terminal it draws
 * on the alternate screen and restores it on Ctrl-C.
 */
import type { ClusterOverview, Db } from '../client/api.js';
import { type ClientCliOptions, openDb } from './commands.js';
import { colourWanted, formatAgo, formatDuration, makeStyle, type Style, table } from './format.js';
import { describeError } from './shell.js';

export interface TopOptions extends ClientCliOptions {
  readonly intervalMs: number;
  readonly once?: boolean;
  readonly json?: boolean;
}

/** Smallest refresh period, in ms. */
export const MIN_TOP_INTERVAL_MS = 200;
const SPARK = '▁▂▃▄▅▆▇█';
/** Points of the calls' sparkline (one a second). */
const SPARK_POINTS = 60;
const EVENTS_SHOWN = 6;

function num(x: number | undefined, digits: number): string {
  return x === undefined ? '-' : x.toFixed(digits);
}

/** The last points of a series as a one-line bar chart, scaled to its largest. */
export function sparkline(values: readonly number[]): string {
  const max = Math.max(0, ...values);
  if (max === 0) return values.map(() => SPARK[0]).join('');
  return values.map((v) => SPARK[Math.min(SPARK.length - 1, Math.floor((v / max) * (SPARK.length - 1)))]).join('');
}

/**
 * One screen of `top`. `maxPartitionRows` bounds the partition map's rows (the rest summed up
 * in one line) so that the view fits a terminal.
 */
export function formatTop(o: ClusterOverview, style: Style, maxPartitionRows = Number.POSITIVE_INFINITY): string {
  const s = o.settings;
  const last = o.series.at(-1);
  const calls = o.series.slice(-SPARK_POINTS).map((p) => p.readsPerSec + p.writesPerSec);
  const storage = o.nodes.filter((n) => n.role === 'storage');
  const alive = storage.filter((n) => n.state === 'alive').length;
  const lines: string[] = [];
  lines.push(
    `${style.bold('dstore top')}  cluster ${o.clusterId.slice(0, 8)}  ` +
      `${o.formed ? 'formed' : style.yellow('not formed yet')}  map version ${o.mapVersion}  ` +
      `${o.partitionsReady}/${String(s.partitions)} partitions ready  R=${String(s.replicas)}  ` +
      `${alive}/${storage.length} storage servers alive  ` +
      `${s.readMode === 'fast' ? `${style.yellow('read mode fast (may be stale)')}  ` : ''}` +
      new Date(o.nowMs).toLocaleTimeString(),
  );
  lines.push(
    last === undefined
      ? style.dim('calls: no report yet')
      : `calls  ${style.bold(num(last.readsPerSec, 1))} reads/s  ${style.bold(num(last.writesPerSec, 1))} writes/s  ` +
          `${last.errorsPerSec > 0 ? style.red(num(last.errorsPerSec, 1)) : '0.0'} errors/s  ` +
          `p50 ${num(last.p50Ms, 2)} ms  p99 ${style.bold(num(last.p99Ms, 2))} ms  ${style.dim(sparkline(calls))}`,
  );
  lines.push('');
  const stateText = (state: string): string =>
    state === 'alive' ? style.green(state) : state === 'dead' ? style.red(state) : style.yellow(state);
  const nodeRows = [
    ['NODE', 'STATE', 'HEARTBEAT', 'HELD', 'LED', 'KEYS', 'CALLS/S', 'P99 MS', 'BACKEND', 'UPTIME', 'ADDRESS'].map(
      (h) => style.bold(h),
    ),
  ];
  for (const n of o.nodes) {
    const st = n.role === 'storage';
    nodeRows.push([
      n.id,
      stateText(n.state),
      n.heartbeatAgeMs === undefined ? '-' : formatAgo(n.heartbeatAgeMs),
      st ? String(n.partitionsHeld) : '-',
      st ? String(n.partitionsLed) : '-',
      st ? String(n.keys) : '-',
      num(n.opsPerSec, 1),
      num(n.p99Ms, 2),
      n.backend ?? '-',
      n.state === 'dead' || n.state === 'unknown' ? '-' : formatDuration(n.uptimeMs),
      n.address,
    ]);
  }
  lines.push(table(nodeRows, new Set([3, 4, 5, 6, 7])));
  lines.push('');
  const partRows = [
    ['PARTITION', 'EPOCH', 'PRIMARY', 'SECONDARIES', 'LEARNERS', 'LAST SEQ', 'LAG', 'SERVING'].map((h) =>
      style.bold(h),
    ),
  ];
  const shown = o.partitions.slice(0, Math.max(0, maxPartitionRows));
  for (const p of shown) {
    const lag = Object.entries(p.lag)
      .map(([id, n]) => `${id}:${n}`)
      .join(' ');
    partRows.push([
      String(p.partition),
      String(p.epoch),
      p.primary,
      p.secondaries.join(',') || '-',
      p.learners.length > 0 ? style.yellow(p.learners.join(',')) : '-',
      p.lastSeq === undefined ? '-' : String(p.lastSeq),
      lag || '-',
      p.serving ? 'yes' : style.yellow('no'),
    ]);
  }
  lines.push(table(partRows, new Set([0, 1, 5])));
  if (shown.length < o.partitions.length)
    lines.push(style.dim(`… ${o.partitions.length - shown.length} more partitions (a taller terminal shows them)`));
  lines.push('');
  lines.push(style.bold('EVENTS'));
  const events = o.events.slice(-EVENTS_SHOWN).reverse();
  if (events.length === 0) lines.push(style.dim('none yet'));
  for (const e of events) {
    const text = `${new Date(e.atMs).toLocaleTimeString()}  ${e.message}`;
    lines.push(e.kind === 'dead' || e.kind === 'failover' ? style.red(text) : text);
  }
  return lines.join('\n');
}

const ALT_SCREEN_ON = '\x1b[?1049h\x1b[?25l';
const ALT_SCREEN_OFF = '\x1b[?25h\x1b[?1049l';
const HOME_CLEAR = '\x1b[H\x1b[2J';

export async function topCommand(o: TopOptions): Promise<void> {
  const db = await openDb(o, o.timeoutMs);
  try {
    if (o.once) {
      const view = await db.overview();
      process.stdout.write(o.json ? `${JSON.stringify(view, null, 2)}\n` : `${formatTop(view, styleFor())}\n`);
      return;
    }
    await refreshLoop(db, o);
  } finally {
    await db.close();
  }
}

function styleFor(): Style {
  return makeStyle(colourWanted(Boolean(process.stdout.isTTY)));
}

/** Refreshes until SIGINT/SIGTERM; a failed call shows why and the next refresh tries again. */
async function refreshLoop(db: Db, o: TopOptions): Promise<void> {
  const out = process.stdout;
  const tty = Boolean(out.isTTY) && !o.json;
  const style = styleFor();
  let stop: () => void = () => undefined;
  const stopped = new Promise<void>((resolve) => {
    stop = resolve;
  });
  const onSignal = (): void => stop();
  process.on('SIGINT', onSignal);
  process.on('SIGTERM', onSignal);
  if (tty) out.write(ALT_SCREEN_ON);
  let lastGood: ClusterOverview | undefined;
  try {
    for (;;) {
      let frame: string;
      try {
        const view = await db.overview();
        lastGood = view;
        frame = o.json ? JSON.stringify(view) : formatTop(view, style, partitionRows(view));
      } catch (err) {
        const why = `nameserver unreachable (${describeError(err)}); retrying every ${o.intervalMs / 1000} s`;
        if (o.json) {
          process.stderr.write(`${why}\n`);
          frame = '';
        } else
          frame = `${style.red(why)}\n${lastGood ? style.dim(formatTop(lastGood, style, partitionRows(lastGood))) : ''}`;
      }
      if (frame !== '') out.write(tty ? `${HOME_CLEAR}${frame}\n` : `${frame}\n${o.json ? '' : '\n'}`);
      let timer: NodeJS.Timeout | undefined;
      const waited = await Promise.race([
        stopped.then(() => 'stop' as const),
        new Promise<'tick'>((resolve) => {
          timer = setTimeout(() => resolve('tick'), o.intervalMs);
        }),
      ]);
      clearTimeout(timer);
      if (waited === 'stop') return;
    }
  } finally {
    process.off('SIGINT', onSignal);
    process.off('SIGTERM', onSignal);
    if (tty) out.write(ALT_SCREEN_OFF);
  }
}

/** Partition rows that fit the terminal under the header, the nodes and the events. */
function partitionRows(view: ClusterOverview): number {
  const rows = process.stdout.rows;
  if (!rows) return Number.POSITIVE_INFINITY;
  return Math.max(3, rows - (view.nodes.length + EVENTS_SHOWN + 10));
}

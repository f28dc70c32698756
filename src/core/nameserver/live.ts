/**
 * Live settings (issue 15): what an operator switches without restarting anything, recorded
 * in the persisted cluster map (`PersistedMap.live`). Every change bumps `epoch` (and the
 * map's version); storage servers learn the settings from heartbeat and register replies
 * and ignore any with an epoch at or below the one they hold, so updates apply in order.
 * A map without the section (an older file) starts from the process's flags.
 *
 * Pure: validation and the next settings; the nameserver host persists and announces them.
 */
import { InvalidArgumentError } from '../errors.js';
import { assertNever } from '../types.js';

export type ReadMode = 'linearizable' | 'fast';
export type SyncSetting = 'batch' | 'none';
export type LiveLogLevel = 'trace' | 'debug' | 'info' | 'warn' | 'error' | 'fatal';

export interface LiveSettings {
  readonly epoch: number;
  /** DESIGN §7: the reads clients make unless told otherwise. */
  readonly readMode: ReadMode;
  /** S8: the live --min-write-replicas, 1 ≤ it ≤ R. */
  readonly minWriteReplicas: number;
  readonly heartbeatMs: number;
  /** > 2 × heartbeatMs. */
  readonly deadAfterMs: number;
  readonly logLevel: LiveLogLevel;
  /** Per storage server: its --sync, where switched live (absent: its command line's). */
  readonly sync: Readonly<Record<string, SyncSetting>>;
}

/** The settings that can be switched, as the CLI and the shell name them. */
export const LIVE_SETTING_NAMES = [
  'read-mode',
  'min-write-replicas',
  'heartbeat-ms',
  'dead-after-ms',
  'log-level',
  'sync',
] as const;
export type LiveSettingName = (typeof LIVE_SETTING_NAMES)[number];

const LOG_LEVELS: readonly LiveLogLevel[] = ['trace', 'debug', 'info', 'warn', 'error', 'fatal'];

export function defaultLive(d: {
  minWriteReplicas: number;
  heartbeatMs: number;
  deadAfterMs: number;
  logLevel?: string;
}): LiveSettings {
  const logLevel = (LOG_LEVELS as readonly string[]).includes(d.logLevel ?? '') ? (d.logLevel as LiveLogLevel) : 'info';
  return {
    epoch: 0,
    readMode: 'linearizable',
    minWriteReplicas: d.minWriteReplicas,
    heartbeatMs: d.heartbeatMs,
    deadAfterMs: d.deadAfterMs,
    logLevel,
    sync: {},
  };
}

export interface LiveChange {
  readonly live: LiveSettings;
  /** What the change weakens (durability), if anything: refused without `force`. */
  readonly weakens?: string;
  /** A human line: what changed. */
  readonly summary: string;
}

function integer(name: string, value: string, min: number, max: number): number {
  const n = Number(value);
  if (!/^[0-9]+$/.test(value.trim()) || !Number.isSafeInteger(n) || n < min || n > max)
    throw new InvalidArgumentError(`${name} must be an integer from ${min} to ${max} (got '${value}')`);
  return n;
}

/**
 * The settings after `name` = `value` (epoch + 1), or a typed error (unknown setting, bad
 * value, deadAfterMs ≤ 2 × heartbeatMs, minWriteReplicas outside 1..R, a weakening switch
 * without `force`, a sync switch on a backend that cannot make it live). `nodes`: the
 * storage servers of the map (for `sync`).
 */
export function changeLive(
  live: LiveSettings,
  replicas: number,
  nodes: Readonly<Record<string, { backend: string }>>,
  name: string,
  value: string,
  opts: { node?: string; force?: boolean } = {},
): LiveChange {
  if (!(LIVE_SETTING_NAMES as readonly string[]).includes(name))
    throw new InvalidArgumentError(`unknown setting '${name}' (settings: ${LIVE_SETTING_NAMES.join(', ')})`);
  const setting = name as LiveSettingName;
  if (opts.node !== undefined && setting !== 'sync')
    throw new InvalidArgumentError(`${setting} is a cluster setting; --node applies to sync only`);
  let next: LiveSettings;
  let weakens: string | undefined;
  switch (setting) {
    case 'read-mode':
      if (value !== 'linearizable' && value !== 'fast')
        throw new InvalidArgumentError(`read-mode must be linearizable or fast (got '${value}')`);
      next = { ...live, readMode: value };
      break;
    case 'min-write-replicas': {
      const n = integer('min-write-replicas', value, 1, replicas);
      if (n < live.minWriteReplicas)
        weakens =
          `lowering min-write-replicas from ${live.minWriteReplicas} to ${n} weakens durability: later writes ` +
          `may be acknowledged once ${n} replica${n === 1 ? '' : 's'} hold them`;
      next = { ...live, minWriteReplicas: n };
      break;
    }
    case 'heartbeat-ms': {
      const n = integer('heartbeat-ms', value, 10, 600_000);
      if (live.deadAfterMs <= 2 * n)
        throw new InvalidArgumentError(
          `dead-after-ms (${live.deadAfterMs}) must stay above 2 × heartbeat-ms (${2 * n}); raise dead-after-ms first`,
        );
      next = { ...live, heartbeatMs: n };
      break;
    }
    case 'dead-after-ms': {
      const n = integer('dead-after-ms', value, 1, 3_600_000);
      if (n <= 2 * live.heartbeatMs)
        throw new InvalidArgumentError(
          `dead-after-ms must be above 2 × heartbeat-ms (${2 * live.heartbeatMs}); got ${n}`,
        );
      next = { ...live, deadAfterMs: n };
      break;
    }
    case 'log-level':
      if (!(LOG_LEVELS as readonly string[]).includes(value))
        throw new InvalidArgumentError(`log-level must be one of ${LOG_LEVELS.join(', ')} (got '${value}')`);
      next = { ...live, logLevel: value as LiveLogLevel };
      break;
    case 'sync': {
      if (value !== 'batch' && value !== 'none')
        throw new InvalidArgumentError(`sync must be batch or none (got '${value}')`);
      if (opts.node === undefined) throw new InvalidArgumentError('sync is set per storage server: give --node <id>');
      const backend = nodes[opts.node]?.backend;
      if (backend === undefined) throw new InvalidArgumentError(`no storage server '${opts.node}' in the map`);
      // No durable backend switches its sync mode in place (docs/consistency.md, "Live settings").
      if (backend !== 'memory')
        throw new InvalidArgumentError(
          `${opts.node} runs the ${backend} backend, which cannot switch its sync mode live: restart it with ` +
            `--sync ${value} (it registers as not durable with --sync none, S4)`,
        );
      // The memory backend holds nothing durably in either mode: nothing to sync, nothing weakened.
      next = { ...live, sync: { ...live.sync, [opts.node]: value } };
      break;
    }
    default:
      return assertNever(setting);
  }
  if (weakens !== undefined && opts.force !== true)
    throw new InvalidArgumentError(`refused without --force: ${weakens}`);
  next = { ...next, epoch: live.epoch + 1 };
  const summary = `${setting}${opts.node === undefined ? '' : ` (${opts.node})`} = ${value}`;
  return weakens === undefined ? { live: next, summary } : { live: next, weakens, summary };
}

/** The settings a storage server is told: the cluster's, and its own sync switch. */
export type NodeLiveSettings = Omit<LiveSettings, 'sync'> & { readonly sync?: SyncSetting };

export function liveForNode(live: LiveSettings, node: string): NodeLiveSettings {
  const { sync, ...rest } = live;
  const own = sync[node];
  return own === undefined ? rest : { ...rest, sync: own };
}

/**
 * The nameserver process (DESIGN §1, §4, §6, S15): the nameserver host (./host.ts, around
 * the core in src/core/nameserver) with its map persisted in `<dataDir>/cluster-map.json`
 * and the network at the edge. This file is the glue: it decodes requests, executes the
 * host's effects in order — a changed map is written durably before any reply that depends
 * on it goes out (S3: persisted before announced) — and runs the tick timer.
 */
import { randomUUID } from 'node:crypto';
import { join } from 'node:path';
import { MalformedMessageError, UnauthorizedError } from '../core/errors.js';
import { defaultLimits } from '../core/limits.js';
import { type ClusterSettings, Nameserver, type PersistedMap } from '../core/nameserver/nameserver.js';
import { assertNever } from '../core/types.js';
import { advertisedAddress, formatHostPort } from '../process/address.js';
import { readFileIfExists, writeFileDurably } from '../process/files.js';
import type { Logger } from '../process/log.js';
import { type ClusterInfo, NameserverRequest, codec } from '../rpc/messages.js';
import { tokenMatches, unauthorizedMessage } from '../rpc/token.js';
import { RpcServer } from '../rpc/transport.js';
import { type NameserverEffect, NameserverHost, parseMap, tickPeriodMs } from './host.js';
import type { NameserverView } from './http.js';
import { NameserverMetrics } from './metrics.js';

export interface NameserverConfig {
  readonly host: string;
  readonly port: number;
  readonly dataDir: string;
  readonly settings: ClusterSettings;
  readonly heartbeatMs: number;
  readonly deadAfterMs: number;
  readonly rereplicateAfterMs: number;
  readonly clusterToken?: string;
  /** `--advertise`: the address `nodes` shows for the nameserver (default: the listen address). */
  readonly advertise?: string;
  /** `--log-level`, where live settings start from in a map without them (issue 15). */
  readonly logLevel?: string;
}

const request = codec(NameserverRequest);

/** S15: a fresh data dir gets a new map; an unreadable one refuses to start. */
export function loadMap(dataDir: string, settings: ClusterSettings): { map: PersistedMap; fresh: boolean } {
  const path = join(dataDir, 'cluster-map.json');
  const text = readFileIfExists(path);
  if (text === undefined) return { map: Nameserver.newMap(randomUUID(), settings), fresh: true };
  return { map: parseMap(text, path), fresh: false };
}

/**
 * The nameserver's listening socket (both drivers: this file's and the elected one): every
 * call goes to `handler`; resolves with the bound port and the advertised address.
 */
export async function listenNameserver(
  cfg: NameserverConfig,
  log: Logger,
  handler: (body: unknown) => unknown,
): Promise<{ server: RpcServer; port: number; address: string }> {
  const server = new RpcServer({
    host: cfg.host,
    port: cfg.port,
    maxFrameBytes: defaultLimits().maxFrameBytes,
    role: 'nameserver',
    logger: log,
    handler,
  });
  const port = await server.listen();
  return { server, port, address: advertisedAddress({ listen: cfg.host, port, advertise: cfg.advertise }) };
}

/** A call's body as a request, or the typed refusal: malformed, or without the cluster's token (§12). */
export function decodeNameserverRequest(body: unknown, clusterToken: string | undefined): NameserverRequest {
  const d = request.decode(body);
  if (!d.ok) throw new MalformedMessageError(`malformed request: ${d.reason}`);
  // DESIGN §12: every call carries the cluster token when the cluster has one.
  if (!tokenMatches(clusterToken, d.value.token)) throw new UnauthorizedError(unauthorizedMessage('the nameserver'));
  return d.value;
}

export class NameserverProcess {
  private readonly host: NameserverHost;
  private server: RpcServer | undefined;
  private timer: NodeJS.Timeout | undefined;
  private readonly mapPath: string;
  readonly metrics = new NameserverMetrics();
  /** What the HTTP port sees of this nameserver (src/nameserver/http.ts). */
  readonly view: NameserverView;
  private liveEpoch = -1;
  private tickHeartbeatMs = 0;
  private closed = false;

  constructor(
    private readonly cfg: NameserverConfig,
    private readonly log: Logger,
  ) {
    const { map, fresh } = loadMap(cfg.dataDir, cfg.settings);
    this.mapPath = join(cfg.dataDir, 'cluster-map.json');
    const { settings, deadAfterMs, rereplicateAfterMs, heartbeatMs } = cfg;
    const options = {
      settings,
      deadAfterMs,
      rereplicateAfterMs,
      heartbeatMs,
      ...(cfg.logLevel === undefined ? {} : { logLevel: cfg.logLevel }),
    };
    this.host = new NameserverHost(map, fresh, options, Date.now());
    this.execute(this.host.takeEffects());
    this.view = {
      request: async (req) => this.onCall({ ...req, token: this.cfg.clusterToken }),
      leading: () => true,
      elected: false,
      leader: async () => this.host.address,
      metrics: this.metrics,
    };
    this.metrics.source = async () => (await this.view.request({ t: 'nodes' })) as ClusterInfo;
  }

  /** The host, for the dashboard's `setSetting` (issue 15) and other in-process callers. */
  get nameserverHost(): NameserverHost {
    return this.host;
  }

  /**
   * Issue 15: switches a live setting (see NameserverHost.setSetting), executing its effects
   * (the map on disk first, S3) and applying it to this process; the reply as the host gave it.
   */
  setSetting(
    name: string,
    value: string,
    options: { readonly node?: string; readonly force?: boolean } = {},
  ): ReturnType<NameserverHost['setSetting']> {
    const step = this.host.setSetting(name, value, options, Date.now());
    this.execute(step.effects);
    return step;
  }

  async start(): Promise<number> {
    const { server, port, address } = await listenNameserver(this.cfg, this.log, (body) =>
      this.metrics.counted(body, (b) => this.onCall(b)),
    );
    this.server = server;
    this.metrics.connections = () => server.connectionCount;
    this.host.address = address;
    this.startTicking();
    const token = this.cfg.clusterToken ? 'required' : 'none';
    const listen = formatHostPort(this.cfg.host, port);
    this.log.info({ listen, advertise: this.host.address, token }, 'nameserver listening');
    return port;
  }

  /** The tick at the live heartbeat's period (issue 15: restarted when it changes). */
  private startTicking(): void {
    if (this.timer) clearInterval(this.timer);
    this.tickHeartbeatMs = this.host.live.heartbeatMs;
    this.timer = setInterval(() => this.execute(this.host.onTick(Date.now())), tickPeriodMs(this.tickHeartbeatMs));
  }

  /** Issue 15: live settings take effect in this process (tick period, log level) once persisted. */
  private applyLive(): void {
    const live = this.host.live;
    if (live.epoch === this.liveEpoch) return;
    this.liveEpoch = live.epoch;
    if (live.epoch === 0) return; // the flags' own values, already in effect
    if (this.log.level !== live.logLevel) this.log.level = live.logLevel;
    if (this.timer && live.heartbeatMs !== this.tickHeartbeatMs) this.startTicking();
    this.log.debug({ live }, 'live settings applied');
  }

  async close(): Promise<void> {
    this.closed = true;
    if (this.timer) clearInterval(this.timer);
    await this.server?.close();
  }

  /** The host's effects, in order: a map is on disk before what follows it (S3). */
  private execute(effects: readonly NameserverEffect[]): void {
    for (const e of effects) {
      switch (e.kind) {
        case 'persist':
          writeFileDurably(this.mapPath, JSON.stringify(e.map, null, 1));
          this.metrics.onMapPersisted(e.map);
          break;
        case 'log':
          this.log[e.level](e.fields, e.msg);
          break;
        default:
          assertNever(e);
      }
    }
    if (!this.closed) this.applyLive();
  }

  private onCall(body: unknown): unknown {
    const req = decodeNameserverRequest(body, this.cfg.clusterToken);
    const { effects, reply } = this.host.onRequest(req, Date.now());
    this.execute(effects);
    if (!reply.ok) throw reply.error;
    return reply.value;
  }
}

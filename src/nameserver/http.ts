/**
 * The nameserver's side of the HTTP port (DESIGN §13): its health and readiness, and the hook
 * where routes that need the nameserver are added (the dashboard and its JSON API).
 *
 * `nameserverRoutes(http, view)` is called once per nameserver process — `dstore nameserver`
 * (single or elected) and the candidate inside `dstore node` — with the process's router and
 * the nameserver's view. In `dstore node` the port is the node's: a route that needs the map
 * should check `view.leading()` and answer 503 (naming `view.leader()`) while the candidate
 * follows.
 */
import type { ClusterInfo, ClusterOverview, NameserverRequest } from '../rpc/messages.js';
import { HttpError } from '../http/server.js';
import { installDashboard } from './dashboard.js';
import { UpControl } from './up-control.js';
import type { HttpRole, Probe } from '../http/process-http.js';
import type { HttpServer } from '../http/server.js';
import type { NameserverMetrics } from './metrics.js';

/** What the HTTP side sees of a nameserver process (single or elected). */
export interface NameserverView {
  /**
   * Answers a request as a client's call would be answered (without the token check: this is
   * in-process). In HA, a follower answers what a follower answers (or refuses: NotLeaderError).
   */
  request(req: DistributiveOmit<NameserverRequest, 'token'>): Promise<unknown>;
  /** This process serves the map: always for a single nameserver, the leader's term in HA. */
  leading(): boolean;
  /** Elected through etcd (issue 12). */
  readonly elected: boolean;
  /** The leader's address as etcd names it (HA), or this nameserver's own (single). */
  leader(): Promise<string | undefined>;
  readonly metrics: NameserverMetrics;
}

type DistributiveOmit<T, K extends PropertyKey> = T extends unknown ? Omit<T, K> : never;

/** `nodes`, as the view answers it. */
export async function clusterInfo(view: NameserverView): Promise<ClusterInfo> {
  return (await view.request({ t: 'nodes' })) as ClusterInfo;
}

/**
 * The HTTP routes of a nameserver beyond /health, /ready and /metrics (which ProcessHttp
 * serves for every role). THE HOOK for the dashboard: add its routes here.
 */
export function nameserverRoutes(http: HttpServer, view: NameserverView): void {
  // Issue 15: the dashboard and its JSON API (./dashboard.ts); node actions only under `dstore up`.
  installDashboard(http, {
    overview: async () => {
      if (!view.leading()) {
        const leader = await view.leader();
        throw new HttpError(
          503,
          'NOT_LEADER',
          `this nameserver candidate follows; the dashboard's data is on the leader (${leader ?? 'none known yet'})`,
        );
      }
      return (await view.request({ t: 'overview' })) as ClusterOverview;
    },
    // Issue 15 live settings: answered as `dstore config get|set` (the leader's; a follower refuses).
    config: () => view.request({ t: 'configGet' }),
    setConfig: (name, value, options) => view.request({ t: 'configSet', name, value, ...options }),
    drain: (node, on) => view.request({ t: 'drain', node, on }),
    upControl: UpControl.fromEnv(),
  });
}

/**
 * The nameserver as a role of the HTTP port. `followerReady`: whether a following candidate
 * counts as ready (inside `dstore node`, whose readiness is its storage server's; a lone
 * `dstore nameserver --etcd` is ready only while it leads, so a load balancer finds the leader).
 */
export function nameserverRole(view: NameserverView, followerReady: boolean): HttpRole {
  return {
    name: 'nameserver',
    registry: view.metrics.registry,
    async health(): Promise<Probe> {
      // The map is loaded before the process listens (single); a candidate loads it when elected.
      return { ok: true, reasons: [], detail: { leading: view.leading(), elected: view.elected } };
    },
    async ready(): Promise<Probe> {
      if (!view.leading()) {
        const leader = await view.leader();
        const detail = { leading: false, ...(leader === undefined ? {} : { leader }) };
        if (followerReady) return { ok: true, reasons: [], detail };
        return {
          ok: false,
          reasons: [`this candidate follows (leader: ${leader ?? 'none known'})`],
          detail,
        };
      }
      const info = await clusterInfo(view);
      const registered = info.nodes.filter((n) => n.role === 'storage').length;
      const detail = {
        leading: true,
        formed: info.formed,
        partitions: info.partitions,
        partitionsReady: info.partitionsReady,
        storageServers: registered,
        mapVersion: info.mapVersion,
      };
      if (!info.formed)
        return {
          ok: false,
          reasons: [`the cluster is not formed yet (${registered} storage servers registered)`],
          detail,
        };
      return { ok: true, reasons: [], detail };
    },
  };
}

/**
 * Issue 15: the web dashboard on the nameserver's HTTP port — the page (static files in
 * `web/` at the package root, uPlot from node_modules, no build step) and its JSON API:
 *
 * - `GET /` and `GET /web/<file>`: the page; `GET /vendor/uPlot.esm.js`, `/vendor/uPlot.min.css`.
 * - `GET /api/cluster` (guarded): the overview (nodes, partition map, events, series) and
 *   whether node actions are possible here (`control`).
 * - `GET /api/config`, `POST /api/config` `{ name, value, node?, force? }` (guarded): the live
 *   settings and a switch of one (`dstore config get|set`); a weakening switch needs `force`.
 * - `POST /api/nodes/<id>/<kill|stop|pause|resume|restart>`, `POST /api/spawn` (guarded):
 *   asked of `dstore up` over the nameserver's IPC channel (./up-control.ts); refused with 409
 *   for a cluster `up` did not start.
 *
 * Guarded routes need the cluster token off loopback and, for a POST, `X-Dstore-Request: 1`
 * (src/http/server.ts).
 */
import { readdirSync, readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { HttpError, type HttpResponse, type HttpServer } from '../http/server.js';
import { assertNever } from '../core/types.js';
import type { ClusterOverview } from '../rpc/messages.js';
import { isNodeAction, type NodeAction, type NodeActionResult, type UpControl } from './up-control.js';

/** The page's files: `web/` at the package root (beside `dist/`). */
export const WEB_DIR = fileURLToPath(new URL('../../../web/', import.meta.url));

export interface DashboardDeps {
  /** The nameserver's `overview` (a follower refuses it: NOT_LEADER, a 409 with the leader's address). */
  overview(): Promise<ClusterOverview>;
  /** The live settings (configGet), and a switch of one (configSet; a typed error when refused). */
  config?(): Promise<unknown>;
  setConfig?(name: string, value: string, options: { node?: string; force?: boolean }): Promise<unknown>;
  /** Issue 15: start (`on`) or cancel a drain of a storage server (the `drain` call's answer). */
  drain?(node: string, on: boolean): Promise<unknown>;
  /** Present when `dstore up` started this nameserver and answers node actions. */
  readonly upControl?: UpControl | undefined;
  /** Where the page's files are (default WEB_DIR). */
  readonly webDir?: string;
}

/** The refusal for a cluster `up` did not start. */
export const NOT_STARTED_BY_UP =
  'this cluster was not started by dstore up, so its nodes are started and stopped by its process manager ' +
  '(systemd, Docker, Kubernetes, …): the dashboard cannot kill, pause, resume, restart or spawn them';

const CONTENT_TYPES: Readonly<Record<string, string>> = {
  '.html': 'text/html; charset=utf-8',
  '.js': 'text/javascript; charset=utf-8',
  '.css': 'text/css; charset=utf-8',
  '.svg': 'image/svg+xml',
  '.ico': 'image/x-icon',
};

function contentType(name: string): string {
  const dot = name.lastIndexOf('.');
  return CONTENT_TYPES[dot < 0 ? '' : name.slice(dot)] ?? 'application/octet-stream';
}

/** The directory of uPlot's built files, resolved where the package is installed. */
function uplotDist(): string | undefined {
  try {
    return dirname(createRequire(import.meta.url).resolve('uplot'));
  } catch {
    return undefined;
  }
}

/** A same-origin page: scripts, styles and API calls from this origin only; no framing. */
const PAGE_HEADERS = {
  'content-security-policy':
    "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data:; connect-src 'self'; " +
    "frame-ancestors 'none'; base-uri 'none'; form-action 'none'",
  'x-frame-options': 'DENY',
  'referrer-policy': 'no-referrer',
};

function file(path: string, name: string): HttpResponse {
  let body: Buffer;
  try {
    body = readFileSync(path);
  } catch {
    throw new HttpError(404, 'NOT_FOUND', `no such file: ${name} (is the package's web/ folder missing?)`);
  }
  return { body, contentType: contentType(name), headers: PAGE_HEADERS };
}

function actionReply(r: NodeActionResult): HttpResponse {
  switch (r.outcome) {
    case 'done':
    case 'warning':
      return { body: { ok: true, outcome: r.outcome, message: r.message } };
    case 'refused':
      return { status: 409, body: { error: { code: 'REFUSED', message: r.message } } };
    case 'failed':
      return { status: 500, body: { error: { code: 'ACTION_FAILED', message: r.message } } };
    default:
      return assertNever(r.outcome);
  }
}

/** Adds the dashboard's routes to a nameserver's HTTP server. */
export function installDashboard(http: HttpServer, deps: DashboardDeps): void {
  const webDir = deps.webDir ?? WEB_DIR;
  const uplot = uplotDist();
  const control = deps.upControl;

  http.route('GET', '/', () => file(join(webDir, 'index.html'), 'index.html'));
  http.route('GET', '/web/', (req) => {
    const name = req.path.slice('/web/'.length);
    // Only the files the folder holds, by exact name: no path from the request reaches the disk.
    let names: string[];
    try {
      names = readdirSync(webDir);
    } catch {
      names = [];
    }
    if (!names.includes(name) || !/^[A-Za-z0-9_-][A-Za-z0-9._-]*$/.test(name))
      throw new HttpError(404, 'NOT_FOUND', `no such file: ${req.path}`);
    return file(join(webDir, name), name);
  });
  for (const name of ['uPlot.esm.js', 'uPlot.min.css']) {
    http.route('GET', `/vendor/${name}`, () => {
      if (uplot === undefined) throw new HttpError(404, 'NOT_FOUND', 'uplot is not installed');
      return file(join(uplot, name), name);
    });
  }

  http.route(
    'GET',
    '/api/cluster',
    async () => {
      const overview = await deps.overview();
      return {
        body: {
          ...overview,
          control: control ? { actions: true } : { actions: false, reason: NOT_STARTED_BY_UP },
        },
      };
    },
    { guarded: true },
  );

  const { config, setConfig } = deps;
  if (config !== undefined) http.route('GET', '/api/config', async () => ({ body: await config() }), { guarded: true });
  if (setConfig !== undefined)
    http.route(
      'POST',
      '/api/config',
      async (req) => {
        const b = req.body as Record<string, unknown> | undefined;
        const text = (x: unknown): x is string => typeof x === 'string' && x.length > 0 && x.length <= 64;
        if (
          typeof b !== 'object' ||
          b === null ||
          !text(b.name) ||
          !text(b.value) ||
          (b.node !== undefined && !text(b.node)) ||
          (b.force !== undefined && typeof b.force !== 'boolean')
        )
          throw new HttpError(400, 'INVALID_ARGUMENT', 'expected a JSON body { name, value, node?, force? }');
        const options = {
          ...(typeof b.node === 'string' ? { node: b.node } : {}),
          ...(typeof b.force === 'boolean' ? { force: b.force } : {}),
        };
        return { body: await setConfig(b.name, b.value, options) };
      },
      { guarded: true },
    );

  const act = async (action: NodeAction, node?: string): Promise<HttpResponse> => {
    if (!control) throw new HttpError(409, 'NOT_STARTED_BY_UP', NOT_STARTED_BY_UP);
    return actionReply(await control.request(action, node));
  };
  http.route(
    'POST',
    '/api/nodes/',
    async (req) => {
      const parts = req.path.slice('/api/nodes/'.length).split('/');
      const [node, action] = parts;
      // Issue 15: a drain is the nameserver's own doing, on any cluster.
      if (parts.length === 2 && node !== undefined && node !== '' && (action === 'drain' || action === 'undrain')) {
        if (deps.drain === undefined) throw new HttpError(404, 'NOT_FOUND', 'this nameserver cannot drain');
        const body = await deps.drain(decodeURIComponent(node), action === 'drain');
        const d = body as { node: string; held: number; led: number };
        const message =
          action === 'drain'
            ? `draining ${d.node}: it holds ${d.held} partition(s) and leads ${d.led}`
            : `drain of ${d.node} cancelled`;
        return { body: { ok: true, outcome: 'done', message, ...d } };
      }
      if (parts.length !== 2 || node === undefined || node === '' || !isNodeAction(action) || action === 'spawn')
        throw new HttpError(
          404,
          'NOT_FOUND',
          `expected /api/nodes/<node>/<kill|stop|pause|resume|restart|drain|undrain>, got ${req.path}`,
        );
      const id = decodeURIComponent(node);
      if (id === 'nameserver' || id === 'ns')
        throw new HttpError(
          409,
          'REFUSED',
          'the dashboard is served by the nameserver: kill, pause or restart it from the shell of dstore up',
        );
      return act(action, id);
    },
    { guarded: true },
  );
  http.route('POST', '/api/spawn', () => act('spawn'), { guarded: true });
}

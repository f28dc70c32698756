/**
 * The HTTP port of one process (DESIGN §13): the router (./server.ts) with `/health`, `/ready`
 * and `/metrics`, answered for every role the process runs. `dstore nameserver` and
 * `dstore storage` run one role; `dstore node` (issue 12) runs both on one port: its storage
 * server, and its nameserver candidate. A role adds itself with `addRole` once it started;
 * until then the probes answer 503 ("starting").
 *
 * - `/health`: 200 when every role is alive (its backend answers, its map is loaded), else 503.
 * - `/ready`: 200 when every role serves (see each role's `ready`), else 503 with the reasons.
 * - `/metrics`: Prometheus text: the process metrics (once per process) and each role's registry.
 */
import { collectDefaultMetrics, Registry } from 'prom-client';
import { type HttpRequest, type HttpResponse, HttpServer, type HttpServerOptions } from './server.js';

/** What a probe found: `ok`, or why not. */
export interface Probe {
  readonly ok: boolean;
  /** Why it is not ok (empty when ok). */
  readonly reasons: readonly string[];
  /** Anything else worth showing (role-specific, JSON). */
  readonly detail?: Readonly<Record<string, unknown>>;
}

/** One role of the process, as its HTTP port reports it. */
export interface HttpRole {
  readonly name: 'nameserver' | 'storage';
  /** The role's metrics (no process metrics: those are the process's, once). */
  readonly registry: Registry;
  health(): Promise<Probe>;
  ready(): Promise<Probe>;
}

/** Bound on one probe, in ms: a probe that hangs is a failed one. */
export const PROBE_TIMEOUT_MS = 2000;

export class ProcessHttp {
  readonly server: HttpServer;
  /** Process and Node.js runtime metrics (prom-client's defaults), collected once per process. */
  readonly processRegistry = new Registry();
  private readonly roles: HttpRole[] = [];
  /** The bound port, once listening. */
  port: number | undefined;

  constructor(opts: HttpServerOptions) {
    this.server = new HttpServer(opts);
    collectDefaultMetrics({ register: this.processRegistry });
    this.server.route('GET', '/health', () => this.probe('health'));
    this.server.route('GET', '/ready', () => this.probe('ready'));
    this.server.route('GET', '/metrics', (req) => this.metrics(req));
  }

  addRole(role: HttpRole): void {
    this.roles.push(role);
  }

  async listen(): Promise<number> {
    this.port = await this.server.listen();
    return this.port;
  }

  async close(): Promise<void> {
    await this.server.close();
  }

  private async probe(kind: 'health' | 'ready'): Promise<HttpResponse> {
    if (this.roles.length === 0)
      return { status: 503, body: { status: 'fail', reasons: ['the process is starting'], roles: {} } };
    const results = await Promise.all(this.roles.map((r) => bounded(r[kind](), `${r.name} ${kind}`)));
    const roles: Record<string, Probe> = {};
    const reasons: string[] = [];
    this.roles.forEach((r, i) => {
      const p = results[i]!;
      roles[r.name] = p;
      for (const why of p.reasons) reasons.push(`${r.name}: ${why}`);
    });
    const ok = results.every((p) => p.ok);
    return { status: ok ? 200 : 503, body: { status: ok ? 'ok' : 'fail', reasons, roles } };
  }

  private async metrics(_req: HttpRequest): Promise<HttpResponse> {
    const parts = [await this.processRegistry.metrics()];
    for (const r of this.roles) parts.push(await r.registry.metrics());
    return { body: parts.filter((p) => p !== '').join('\n'), contentType: this.processRegistry.contentType };
  }
}

/** `p`, or a failed probe once PROBE_TIMEOUT_MS passed or when it throws. */
export async function bounded(p: Promise<Probe>, what: string, ms = PROBE_TIMEOUT_MS): Promise<Probe> {
  let timer: NodeJS.Timeout | undefined;
  const late = new Promise<Probe>((resolve) => {
    timer = setTimeout(() => resolve({ ok: false, reasons: [`${what} did not answer within ${ms} ms`] }), ms);
  });
  try {
    return await Promise.race([
      p.catch((err: unknown): Probe => ({ ok: false, reasons: [`${what} failed: ${errorText(err)}`] })),
      late,
    ]);
  } finally {
    clearTimeout(timer);
  }
}

export function errorText(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}

/**
 * The HTTP side of a process (DESIGN §14: the nameserver's port 7080; a storage server's
 * `--http-port`): health, readiness, Prometheus metrics and, on the nameserver, the dashboard
 * and its JSON API. A small router on `node:http`: exact paths, or a prefix ending in `/`.
 *
 * Bad input never escapes a handler: a body over the limit, malformed JSON or a handler's
 * throw is a JSON error reply (a DstoreError keeps its code), never a crash.
 *
 * Access (DESIGN §12): routes marked `guarded` (everything that changes the cluster or lists
 * its contents) need, from a peer off loopback, the cluster token in
 * `Authorization: Bearer <token>`; a guarded POST also needs the `X-Dstore-Request: 1` header,
 * which a cross-site form cannot send without a CORS preflight this server never grants, and
 * a Host header naming an IP address or localhost (no DNS rebinding onto loopback).
 */
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import { isIP } from 'node:net';
import { DstoreError } from '../core/errors.js';
import type { Logger } from '../process/log.js';
import { tokenMatches } from '../rpc/token.js';

/** Largest request body read, in bytes (the API's bodies are small JSON objects). */
export const MAX_HTTP_BODY_BYTES = 64 * 1024;

export interface HttpRequest {
  readonly method: string;
  /** The path without the query string, e.g. `/api/nodes`. */
  readonly path: string;
  readonly query: URLSearchParams;
  readonly headers: IncomingMessage['headers'];
  /** The parsed JSON body of a POST/PUT (undefined when there is none). */
  readonly body: unknown;
  /** The peer connects from a loopback address. */
  readonly fromLoopback: boolean;
}

export interface HttpResponse {
  readonly status?: number;
  /** A string or bytes are sent as they are; anything else as JSON. */
  readonly body: unknown;
  readonly contentType?: string;
  readonly headers?: Readonly<Record<string, string>>;
}

export type HttpHandler = (req: HttpRequest) => HttpResponse | Promise<HttpResponse>;

export interface RouteOptions {
  /** Needs the cluster token off loopback, and the anti-forgery header on a POST (see above). */
  readonly guarded?: boolean;
}

interface Route {
  readonly method: string;
  readonly path: string;
  readonly prefix: boolean;
  readonly handler: HttpHandler;
  readonly guarded: boolean;
}

export interface HttpServerOptions {
  readonly host: string;
  readonly port: number;
  readonly log: Logger;
  readonly clusterToken?: string;
}

export class HttpError extends Error {
  constructor(
    readonly status: number,
    readonly code: string,
    message: string,
  ) {
    super(message);
  }
}

export class HttpServer {
  private readonly routes: Route[] = [];
  private server: Server | undefined;

  constructor(private readonly opts: HttpServerOptions) {}

  /** `path` ending in `/` (other than `/` itself) matches every path under it. */
  route(method: string, path: string, handler: HttpHandler, options: RouteOptions = {}): this {
    const prefix = path.length > 1 && path.endsWith('/');
    this.routes.push({ method, path, prefix, handler, guarded: options.guarded === true });
    return this;
  }

  async listen(): Promise<number> {
    const server = createServer((req, res) => {
      this.serve(req, res).catch((err: unknown) => {
        this.opts.log.warn({ err: String(err) }, 'http: reply failed');
        res.destroy();
      });
    });
    // A slow or idle client does not hold a socket for ever.
    server.requestTimeout = 10_000;
    server.headersTimeout = 10_000;
    server.keepAliveTimeout = 5_000;
    this.server = server;
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen(this.opts.port, this.opts.host, () => {
        server.off('error', reject);
        resolve();
      });
    });
    const address = server.address();
    return typeof address === 'object' && address !== null ? address.port : this.opts.port;
  }

  async close(): Promise<void> {
    const server = this.server;
    if (!server) return;
    this.server = undefined;
    await new Promise<void>((resolve) => {
      server.close(() => resolve());
      server.closeAllConnections();
    });
  }

  private find(method: string, path: string): { route?: Route; pathKnown: boolean } {
    const matching = this.routes.filter((r) => (r.prefix ? path.startsWith(r.path) : path === r.path));
    const route = matching.find((r) => r.method === method || (method === 'HEAD' && r.method === 'GET'));
    return { ...(route === undefined ? {} : { route }), pathKnown: matching.length > 0 };
  }

  private async serve(req: IncomingMessage, res: ServerResponse): Promise<void> {
    let reply: HttpResponse;
    try {
      reply = await this.handle(req);
    } catch (err) {
      reply = errorReply(err);
      if (!(err instanceof HttpError) && !(err instanceof DstoreError))
        this.opts.log.warn({ err: String(err), url: req.url }, 'http: handler failed');
    }
    send(res, req.method === 'HEAD', reply);
  }

  private async handle(req: IncomingMessage): Promise<HttpResponse> {
    const url = new URL(req.url ?? '/', 'http://localhost');
    const method = req.method ?? 'GET';
    const { route, pathKnown } = this.find(method, url.pathname);
    if (!route) {
      if (pathKnown) throw new HttpError(405, 'METHOD_NOT_ALLOWED', `${method} is not allowed on ${url.pathname}`);
      throw new HttpError(404, 'NOT_FOUND', `no such path: ${url.pathname}`);
    }
    const fromLoopback = isLoopbackAddress(req.socket.remoteAddress);
    if (route.guarded) this.checkAccess(req, method, fromLoopback);
    const body = method === 'POST' || method === 'PUT' ? await readJsonBody(req) : undefined;
    return route.handler({
      method,
      path: url.pathname,
      query: url.searchParams,
      headers: req.headers,
      body,
      fromLoopback,
    });
  }

  private checkAccess(req: IncomingMessage, method: string, fromLoopback: boolean): void {
    const refusal = accessRefusal({
      method,
      host: req.headers.host,
      antiForgery: req.headers['x-dstore-request'],
      authorization: req.headers.authorization,
      fromLoopback,
      clusterToken: this.opts.clusterToken,
    });
    if (refusal) throw refusal;
  }
}

/** What a guarded route's access check looks at (DESIGN §12). */
export interface AccessRequest {
  readonly method: string;
  /** The Host header. */
  readonly host: string | undefined;
  /** The X-Dstore-Request header. */
  readonly antiForgery: string | string[] | undefined;
  /** The Authorization header. */
  readonly authorization: string | undefined;
  readonly fromLoopback: boolean;
  readonly clusterToken: string | undefined;
}

/**
 * Why a guarded route refuses a request (403: Host or anti-forgery header; 401: no token off
 * loopback), or undefined when it may go on. Pure, so each rule is unit-tested.
 */
export function accessRefusal(r: AccessRequest): HttpError | undefined {
  const host = hostName(r.host);
  if (host === undefined || !(isIP(host) !== 0 || host === 'localhost'))
    return new HttpError(403, 'FORBIDDEN', 'the Host header must name an IP address or localhost');
  if (r.method !== 'GET' && r.method !== 'HEAD' && r.antiForgery !== '1')
    return new HttpError(403, 'FORBIDDEN', 'a request that changes the cluster needs the header X-Dstore-Request: 1');
  if (r.fromLoopback) return undefined;
  const auth = r.authorization;
  const given = auth?.startsWith('Bearer ') ? auth.slice('Bearer '.length) : undefined;
  if (r.clusterToken === undefined || r.clusterToken === '' || !tokenMatches(r.clusterToken, given))
    return new HttpError(
      401,
      'UNAUTHORIZED',
      'off loopback this needs the cluster token: send Authorization: Bearer <token> (the cluster has ' +
        `${r.clusterToken ? 'one' : 'none, so it is only served on loopback'})`,
    );
  return undefined;
}

export function isLoopbackAddress(address: string | undefined): boolean {
  if (address === undefined) return false;
  return address === '::1' || address.startsWith('127.') || address.startsWith('::ffff:127.');
}

/** The host name of a Host header (`[::1]:7080` → `::1`, `localhost:7080` → `localhost`). */
function hostName(header: string | undefined): string | undefined {
  if (header === undefined || header === '') return undefined;
  if (header.startsWith('[')) {
    const end = header.indexOf(']');
    return end < 0 ? undefined : header.slice(1, end);
  }
  const colon = header.lastIndexOf(':');
  return colon < 0 ? header : header.slice(0, colon);
}

async function readJsonBody(req: IncomingMessage): Promise<unknown> {
  const chunks: Buffer[] = [];
  let size = 0;
  for await (const chunk of req) {
    size += (chunk as Buffer).length;
    if (size > MAX_HTTP_BODY_BYTES)
      throw new HttpError(413, 'BODY_TOO_LARGE', `request body over ${MAX_HTTP_BODY_BYTES} bytes`);
    chunks.push(chunk as Buffer);
  }
  if (size === 0) return undefined;
  const text = Buffer.concat(chunks).toString('utf8');
  try {
    return JSON.parse(text) as unknown;
  } catch {
    throw new HttpError(400, 'MALFORMED', 'the request body is not JSON');
  }
}

function errorReply(err: unknown): HttpResponse {
  if (err instanceof HttpError)
    return { status: err.status, body: { error: { code: err.code, message: err.message } } };
  if (err instanceof DstoreError) {
    const status = err.code === 'UNAUTHORIZED' ? 401 : err.code === 'INVALID_ARGUMENT' ? 400 : 409;
    return { status, body: { error: { code: err.code, message: err.message } } };
  }
  return { status: 500, body: { error: { code: 'INTERNAL', message: String(err) } } };
}

function send(res: ServerResponse, headOnly: boolean, reply: HttpResponse): void {
  let payload: string | Uint8Array;
  let type = reply.contentType;
  if (typeof reply.body === 'string' || reply.body instanceof Uint8Array) {
    payload = reply.body;
    type ??= 'text/plain; charset=utf-8';
  } else {
    payload = `${JSON.stringify(reply.body)}\n`;
    type ??= 'application/json; charset=utf-8';
  }
  res.writeHead(reply.status ?? 200, {
    'content-type': type,
    'content-length': Buffer.byteLength(payload),
    'cache-control': 'no-store',
    'x-content-type-options': 'nosniff',
    ...reply.headers,
  });
  res.end(headOnly ? undefined : payload);
}

/**
 * A tiny RPC server run as a child process by transport.test.ts, so a test can SIGKILL a
 * server mid-call. Usage: node echo-server.js <port>; prints the bound port on stdout.
 * Calls: { op: 'hang' } never answers; anything else is echoed.
 */
import { RpcServer } from '../../src/rpc/transport.js';

const server = new RpcServer({
  host: '127.0.0.1',
  port: Number(process.argv[2] ?? '0'),
  maxFrameBytes: 1 << 20,
  handler: (body: unknown) => {
    if (typeof body === 'object' && body !== null && (body as { op?: unknown }).op === 'hang')
      return new Promise<never>(() => undefined);
    return body;
  },
});
const port = await server.listen();
process.stdout.write(`${port}\n`);

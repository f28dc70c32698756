/**
 * Micro-benchmark of the RPC transport: closed-loop calls from 64 concurrent callers over one
 * RpcConnection to an echo RpcServer in a child process (so client and server each get a
 * core), for ~3 s after a short warm-up. Prints calls/s and latency percentiles.
 *
 *   npm run build && node dist/test/rpc/rpc.bench.js [--callers 64] [--seconds 3] [--in-process]
 */
import { spawn } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { RpcConnection, RpcServer } from '../../src/rpc/transport.js';

function arg(name: string, fallback: number): number {
  const at = process.argv.indexOf(`--${name}`);
  const value = at >= 0 ? Number(process.argv[at + 1]) : NaN;
  return Number.isFinite(value) ? value : fallback;
}

const callers = arg('callers', 64);
const seconds = arg('seconds', 3);
const inProcess = process.argv.includes('--in-process');

async function startServer(): Promise<{ port: number; stop: () => Promise<void> }> {
  if (inProcess) {
    const server = new RpcServer({
      host: '127.0.0.1',
      port: 0,
      maxFrameBytes: 1 << 20,
      handler: (body: unknown) => body,
    });
    const port = await server.listen();
    return { port, stop: () => server.close() };
  }
  const script = fileURLToPath(new URL('./echo-server.js', import.meta.url));
  const child = spawn(process.execPath, [script, '0'], { stdio: ['ignore', 'pipe', 'inherit'] });
  const port = await new Promise<number>((resolve, reject) => {
    let out = '';
    child.stdout.on('data', (d: Buffer) => {
      out += d.toString();
      if (out.includes('\n')) resolve(Number(out.trim()));
    });
    child.once('exit', (code) => reject(new Error(`echo server exited with ${code}`)));
  });
  return {
    port,
    stop: async () => {
      child.kill('SIGKILL');
    },
  };
}

const { port, stop } = await startServer();
const conn = new RpcConnection({ host: '127.0.0.1', port, maxFrameBytes: 1 << 20 });
const body = { t: 'get', p: 17, key: Buffer.from('user:0000000042') };

let measuring = false;
let stopAt = 0;
let calls = 0;
const latenciesUs: number[] = [];

async function caller(): Promise<void> {
  while (performance.now() < stopAt) {
    const started = performance.now();
    const reply = (await conn.call(body, { timeoutMs: 5000 })) as { p?: unknown };
    if (reply.p !== body.p) throw new Error(`wrong reply: ${JSON.stringify(reply)}`);
    if (measuring) {
      calls++;
      if ((calls & 15) === 0) latenciesUs.push((performance.now() - started) * 1000);
    }
  }
}

// Warm-up (JIT, connection), then the measured run.
stopAt = performance.now() + 500;
await Promise.all(Array.from({ length: callers }, () => caller()));
measuring = true;
const started = performance.now();
stopAt = started + seconds * 1000;
await Promise.all(Array.from({ length: callers }, () => caller()));
const elapsedS = (performance.now() - started) / 1000;

latenciesUs.sort((a, b) => a - b);
const pct = (p: number): string =>
  (latenciesUs[Math.min(latenciesUs.length - 1, Math.floor(p * latenciesUs.length))] ?? 0).toFixed(0);
console.log(
  `rpc bench: ${callers} callers, one connection, ${inProcess ? 'server in process' : 'server in a child process'}: ` +
    `${Math.round(calls / elapsedS)} calls/s over ${elapsedS.toFixed(1)} ` +
    `s (latency p50 ${pct(0.5)} us, p99 ${pct(0.99)} us)`,
);
conn.close();
await stop();

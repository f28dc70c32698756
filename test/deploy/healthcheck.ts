/**
 * Issue 15: the health checks of the compose files. The image has no curl, so each is
 * `node -e "fetch('http://127.0.0.1:PORT/PATH')…"`: checked here to be that command, to
 * compile as JavaScript, and to probe the service's own HTTP port; `runHealthScript` runs one
 * (its port swapped) against a real server.
 */
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { Script } from 'node:vm';

export interface HealthProbe {
  readonly script: string;
  readonly port: number;
  readonly path: 'health' | 'ready';
}

/** The probe of a compose healthcheck test, checked; `what` names the service in messages. */
export function healthProbe(test: readonly string[] | undefined, what: string): HealthProbe {
  assert.ok(test, `${what} has a health check`);
  assert.deepEqual(test.slice(0, 3), ['CMD', 'node', '-e'], `${what}: the check runs node -e (no shell, no curl)`);
  assert.equal(test.length, 4, `${what}: one script`);
  const script = test[3]!;
  assert.doesNotThrow(() => new Script(script), `${what}: the script compiles`);
  const m = /fetch\('http:\/\/127\.0\.0\.1:(\d+)\/(health|ready)'\)/.exec(script);
  assert.ok(m, `${what}: the script fetches /health or /ready on loopback`);
  assert.match(script, /process\.exit\(r\.ok \? 0 : 1\)/, `${what}: exit 0 only on a 2xx`);
  return { script, port: Number(m[1]), path: m[2] as HealthProbe['path'] };
}

/** Runs the probe's script against `port` instead (asynchronously: the server may be this process); its exit code. */
export function runHealthScript(probe: HealthProbe, port: number): Promise<number | null> {
  const script = probe.script.replace(`127.0.0.1:${probe.port}/`, `127.0.0.1:${port}/`);
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, ['-e', script], { stdio: 'ignore', timeout: 15_000 });
    child.once('error', reject);
    child.once('exit', (code) => resolve(code));
  });
}

/**
 * What the real `dstore` CLI makes of a deployment's settings, for the deployment tests:
 * the flags and variables its --help lists, and the settings its parser resolves from a
 * command line and an environment (flags > env > --config file > defaults).
 */
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { listenOf } from '../../src/cli/config.js';
import { buildProgram } from '../../src/cli/program.js';
import { MAIN } from '../integration/cluster.js';

/** Flags and environment variables of `dstore <sub> --help`, from the real CLI. */
const helpCache = new Map<string, { flags: Set<string>; envs: Set<string>; text: string }>();
export function help(sub: string): { flags: Set<string>; envs: Set<string>; text: string } {
  let h = helpCache.get(sub);
  if (!h) {
    const r = spawnSync(process.execPath, [MAIN, sub, '--help'], { encoding: 'utf8', timeout: 30_000 });
    assert.equal(r.status, 0, `dstore ${sub} --help: ${r.stderr}`);
    const text = r.stdout.replace(/\s+/g, ' ');
    h = {
      text,
      flags: new Set([...r.stdout.matchAll(/^ {2}(?:-\w, )?(--[a-z-]+)/gm)].map((m) => m[1]!)),
      envs: new Set([...text.matchAll(/env: (DSTORE_[A-Z0-9_]+)/g)].map((m) => m[1]!)),
    };
    helpCache.set(sub, h);
  }
  return h;
}

/** The settings a service's process gets, exactly as the CLI resolves them (flags, env, defaults). */
export async function resolvedSettings(
  sub: string,
  args: string[],
  env: Record<string, string>,
): Promise<Record<string, unknown>> {
  const saved = { ...process.env };
  for (const k of Object.keys(process.env)) if (k.startsWith('DSTORE_')) delete process.env[k];
  Object.assign(process.env, env);
  try {
    const program = buildProgram();
    const cmd = program.commands.find((c) => c.name() === sub);
    assert.ok(cmd, `dstore has a ${sub} command`);
    let got: Record<string, unknown> | undefined;
    cmd.action((o: Record<string, unknown>) => {
      got = { ...o, ...(cmd.options.some((x) => x.long === '--listen') ? { listen: listenOf(cmd) } : {}) };
    });
    await program.parseAsync(['node', 'dstore', sub, ...args]);
    assert.ok(got);
    return got;
  } finally {
    for (const k of Object.keys(process.env)) if (!(k in saved)) delete process.env[k];
    Object.assign(process.env, saved);
  }
}

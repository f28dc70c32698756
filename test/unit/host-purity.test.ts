/**
 * The pure hosts (issue 10) stay pure: src/nameserver/host.ts and src/client/retry.ts, and
 * every module they import from this repository, use no `node:*` module, timer, clock or
 * randomness; time comes in as `nowMs` and the drivers do the I/O.
 */
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { test } from 'node:test';
import { fileURLToPath } from 'node:url';

const root = resolve(dirname(fileURLToPath(import.meta.url)), '../../..');
const HOSTS = ['src/nameserver/host.ts', 'src/client/retry.ts'];
const FORBIDDEN: Array<[RegExp, string]> = [
  [/from '(node:[^']+)'/, 'a node:* module'],
  [/\bDate\.now\(|\bnew Date\(/, 'the clock'],
  [/\bMath\.random\(/, 'randomness'],
  [/\b(setTimeout|setInterval|setImmediate|queueMicrotask)\(/, 'a timer'],
  [/\bprocess\./, 'the process'],
];

/** The repository's modules `file` imports, transitively (type imports too). */
function closure(files: string[]): Set<string> {
  const seen = new Set<string>();
  const todo = [...files];
  while (todo.length > 0) {
    const f = todo.pop()!;
    if (seen.has(f)) continue;
    seen.add(f);
    const text = readFileSync(join(root, f), 'utf8');
    for (const m of text.matchAll(/from '(\.{1,2}\/[^']+)\.js'/g)) todo.push(join(dirname(f), `${m[1]}.ts`));
  }
  return seen;
}

test('the nameserver host and the client retry logic import no I/O, clock, timer or randomness', () => {
  const found: string[] = [];
  for (const f of closure(HOSTS)) {
    const text = readFileSync(join(root, f), 'utf8').replace(/^\s*(\/\/|\*|\/\*).*$/gm, '');
    for (const [re, what] of FORBIDDEN) {
      const m = re.exec(text);
      if (m) found.push(`${f}: ${what} (${m[0]})`);
    }
  }
  assert.deepEqual(found, []);
});

/**
 * Purity enforced (STYLE §1, issue 10): the modules that decide — `src/core` and the pure
 * hosts (storage server, nameserver, the client's retry logic) — touch no clock, no
 * randomness, no timers and no I/O. One list says which modules are pure: the `include` of
 * tsconfig.pure.json (add a module there to cover it). Two checks use it:
 * - `npm run build` compiles them with `"types": []`, so `node:*`, `Buffer`, `setTimeout`
 *   and `process` do not resolve;
 * - this test reads their text, and the text of every module of this repository they import
 *   (type imports too), for what the compiler cannot see (`Date`, `Math.random` are plain
 *   ES) and for imports of packages.
 */
import assert from 'node:assert/strict';
import { existsSync, readdirSync, readFileSync, statSync } from 'node:fs';
import { join, posix, relative, sep } from 'node:path';
import { test } from 'node:test';
import { fileURLToPath } from 'node:url';

const ROOT = fileURLToPath(new URL('../../../', import.meta.url));

/** Packages a pure module may import: schemas and their validation, no I/O. */
const PURE_PACKAGES = ['@sinclair/typebox'];

/** What a pure module must not contain, after comments are removed. */
const FORBIDDEN: ReadonlyArray<readonly [RegExp, string]> = [
  [/\bDate\.now\s*\(/, 'Date.now() (time comes as nowMs in an input)'],
  [/\bnew\s+Date\b/, 'new Date (time comes as nowMs in an input)'],
  [/\bperformance\.now\s*\(/, 'performance.now()'],
  [/\bMath\.random\s*\(/, 'Math.random() (randomness comes from a seeded Rng)'],
  [/\b(setTimeout|setInterval|setImmediate|clearTimeout|clearInterval|queueMicrotask)\s*\(/, 'a timer'],
  [/\bprocess\.\w/, 'process'],
  [/\bfrom\s+['"]node:|\bimport\s*\(\s*['"]node:|\brequire\s*\(/, 'a node:* import'],
  [
    new RegExp(`\\bfrom\\s+['"](?!\\.|(?:${PURE_PACKAGES.join('|')})['"/])|\\bimport\\s*\\(\\s*['"][^.'"]`),
    'an import of a package (I/O, codecs)',
  ],
];

/** The `include` globs of tsconfig.pure.json as regular expressions over repo-relative paths. */
function pureGlobs(): RegExp[] {
  const config = JSON.parse(readFileSync(join(ROOT, 'tsconfig.pure.json'), 'utf8')) as { include: string[] };
  return config.include.map((glob) => {
    const escaped = glob.replace(/[.+^${}()|[\]\\]/g, '\\$&');
    const pattern = escaped
      .replace(/\*\*\//g, '\u0000')
      .replace(/\*/g, '[^/]*')
      .replace(/\u0000/g, '(?:.+/)?');
    return new RegExp(`^${pattern}$`);
  });
}

function filesUnder(dir: string): string[] {
  const out: string[] = [];
  for (const name of readdirSync(dir)) {
    const p = join(dir, name);
    if (statSync(p).isDirectory()) out.push(...filesUnder(p));
    else if (name.endsWith('.ts')) out.push(relative(ROOT, p).split(sep).join('/'));
  }
  return out;
}

/** The text without comments (a rough cut: good enough for source that keeps // out of strings). */
function code(text: string): string {
  return text.replace(/\/\*[\s\S]*?\*\//g, '').replace(/(^|[^:'"`])\/\/.*$/gm, '$1');
}

/** The modules tsconfig.pure.json names. */
export function pureModules(): string[] {
  const globs = pureGlobs();
  return filesUnder(join(ROOT, 'src')).filter((f) => globs.some((g) => g.test(f)));
}

/** `files` and the modules of this repository they import, transitively (type imports too). */
function withImports(files: readonly string[]): string[] {
  const seen = new Set<string>();
  const todo = [...files];
  while (todo.length > 0) {
    const f = todo.pop()!;
    if (seen.has(f)) continue;
    seen.add(f);
    for (const m of code(readFileSync(join(ROOT, f), 'utf8')).matchAll(/from\s+['"](\.{1,2}\/[^'"]+)\.js['"]/g)) {
      const imported = posix.join(posix.dirname(f), `${m[1]}.ts`);
      if (existsSync(join(ROOT, imported))) todo.push(imported);
    }
  }
  return [...seen].sort();
}

test('the pure modules and what they import use no clock, randomness, timers, process or I/O', () => {
  const pure = pureModules();
  for (const covered of ['src/core/replica/', 'src/core/nameserver/', 'src/nameserver/host', 'src/storageserver/host'])
    assert.ok(
      pure.some((f) => f.startsWith(covered)),
      `tsconfig.pure.json covers ${covered}: ${pure.join(', ')}`,
    );
  const files = withImports(pure);
  const problems: string[] = [];
  for (const file of files) {
    const lines = code(readFileSync(join(ROOT, file), 'utf8')).split('\n');
    lines.forEach((line, i) => {
      for (const [pattern, what] of FORBIDDEN) {
        if (pattern.test(line)) problems.push(`${file}:${i + 1}: ${what}: ${line.trim()}`);
      }
    });
  }
  assert.deepEqual(problems, [], `pure modules must stay pure:\n${problems.join('\n')}`);
});

test('the purity scan catches what it forbids', () => {
  const bad = [
    'const t = Date.now();',
    'const d = new Date();',
    'const r = Math.random();',
    'setTimeout(() => undefined, 1);',
    "import { readFileSync } from 'node:fs';",
    "import { pack } from 'msgpackr';",
    "import { Redis } from 'ioredis';",
    'if (process.env.X) {}',
  ];
  for (const line of bad)
    assert.ok(
      FORBIDDEN.some(([p]) => p.test(code(line))),
      line,
    );
  const fine = [
    "import { assert } from '../types.js';",
    "import { Type } from '@sinclair/typebox';",
    "import { TypeCompiler } from '@sinclair/typebox/compiler';",
    '// Date.now() in a comment',
    'const nowMs = input.nowMs;',
  ];
  for (const line of fine) assert.ok(!FORBIDDEN.some(([p]) => p.test(code(line))), line);
});

test('the scan follows imports out of the list: the nameserver host reaches the wire messages', () => {
  const reached = withImports(['src/nameserver/host.ts']);
  assert.ok(reached.includes('src/core/types.ts'), reached.join(', '));
  assert.ok(reached.includes('src/rpc/messages.ts'), reached.join(', '));
});

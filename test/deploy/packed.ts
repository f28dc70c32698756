/** What `npm pack` puts in the package (the files an install to /opt/dstore gets), read once. */
import { spawnSync } from 'node:child_process';

let cached: string[] | undefined;

/** The paths inside the package, from `npm pack --dry-run --json` (nothing is written). */
export function packedFiles(): string[] {
  if (cached) return cached;
  const r = spawnSync('npm', ['pack', '--dry-run', '--json', '--ignore-scripts'], {
    encoding: 'utf8',
    timeout: 60_000,
  });
  if (r.status !== 0) throw new Error(`npm pack --dry-run failed (${r.status}): ${r.stderr}`);
  const out = JSON.parse(r.stdout) as { files: { path: string }[] }[];
  cached = out[0]!.files.map((f) => f.path);
  return cached;
}

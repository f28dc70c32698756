#!/usr/bin/env node
/**
 * The `dstore` command (package.json "bin"): up, nameserver, storage, client, put, get,
 * del, dump, nodes, bench, chaos. See program.ts for the commands and exit codes.
 */

// zlib.crc32 (the partition hash and every record checksum) arrived in Node 20.15. Check
// before anything imports it, so an older Node gets one line instead of a link error.
const [major = 0, minor = 0] = process.versions.node.split('.').map(Number);
if (major < 20 || (major === 20 && minor < 15)) {
  process.stderr.write(`error: dstore needs Node.js 20.15 or newer; this is ${process.version}\n`);
  process.exit(2);
}
const { rawCommandLine } = await import('./argv.js');
const { runCli } = await import('./program.js');

// A reader that went away (`dstore --help | head`) is not an error of ours: stop quietly.
for (const stream of [process.stdout, process.stderr]) {
  stream.on('error', (err: NodeJS.ErrnoException) => {
    if (err.code === 'EPIPE') process.exit(0);
    throw err;
  });
}

// Arguments that are not valid UTF-8 are refused before anything runs (argv.ts), exit 2.
const code = await runCli(process.argv, rawCommandLine());
// Long-running commands (up, nameserver, storage) exit from their own signal handlers; the
// others end here. Let stdout and stderr drain first, so piped output is never cut short.
await Promise.all(
  [process.stdout, process.stderr].map((s) => new Promise<void>((resolve) => s.write('', () => resolve()))),
);
process.exit(code);

/**
 * Structured logs: one JSON object per line (pino) to stderr and to `<dataDir>/node.log`,
 * so a node's history survives it.
 */
import { mkdirSync, openSync } from 'node:fs';
import { join } from 'node:path';
import { pino, type Logger } from 'pino';

export type { Logger };

/** Write errors of a full or failing disk (or a closed pipe) on stderr: the line is lost, not the process. */
const DISK_WRITE_ERRORS = new Set(['ENOSPC', 'EIO', 'EROFS', 'EDQUOT', 'EPIPE']);
let stderrGuarded = false;

/**
 * Issue 9: stderr redirected to a file (`dstore up`, the chaos runner) on a full disk fails
 * its writes with ENOSPC, and Node turns that into an 'error' event that, unhandled, exits the
 * process. Such a line is dropped (node.log says it could not write, or catches up later);
 * any other stderr error stays fatal.
 */
function guardStderr(): void {
  if (stderrGuarded) return;
  stderrGuarded = true;
  process.stderr.on('error', (err: NodeJS.ErrnoException) => {
    if (err.code !== undefined && DISK_WRITE_ERRORS.has(err.code)) return;
    throw err;
  });
}

export function createLogger(options: { name: string; level: string; dataDir?: string; stderr?: boolean }): Logger {
  const streams: pino.StreamEntry[] = [];
  if (options.stderr !== false) {
    guardStderr();
    streams.push({ level: options.level as pino.Level, stream: process.stderr });
  }
  if (options.dataDir) {
    mkdirSync(options.dataDir, { recursive: true });
    // Opened here, synchronously: a destination still opening when the process exits (a
    // start that fails at once, e.g. a refused cluster token) makes pino's exit flush throw.
    const path = join(options.dataDir, 'node.log');
    const fd = openSync(path, 'a');
    const file = pino.destination({ fd, sync: false });
    // A full or failing disk (issue 9) must not kill the process: sonic-boom emits 'error'
    // for a failed write (ENOSPC, EIO), which unhandled is an uncaught exception. Say so once
    // on stderr; the lines stay buffered and the file catches up when a write succeeds.
    let failing = false;
    file.on('error', (err: NodeJS.ErrnoException) => {
      if (failing) return;
      failing = true;
      process.stderr.write(`${options.name}: cannot write ${path} (${err.code ?? err.message}); its lines go to stderr until it can\n`);
    });
    file.on('write', () => {
      failing = false;
    });
    streams.push({ level: options.level as pino.Level, stream: file });
  }
  return pino({ name: options.name, level: options.level, base: { node: options.name } }, pino.multistream(streams));
}

/**
 * Listen and advertise addresses of a server process (DESIGN §12, issue 4): a process binds
 * to `--listen HOST` and tells the others to reach it at `--advertise HOST:PORT`, which
 * differ behind NAT and in containers. Without `--advertise` a server announces its listen
 * address, or — when it listens on a wildcard address (0.0.0.0, ::), which nobody can
 * connect to from elsewhere — its host name.
 */
import { hostname } from 'node:os';

/** True for the addresses that mean "every interface". */
export function isWildcardHost(host: string): boolean {
  const h = host.replace(/^\[(.*)\]$/, '$1');
  return h === '0.0.0.0' || h === '::' || h === '0:0:0:0:0:0:0:0';
}

/** `host:port`, with an IPv6 host in brackets. */
export function formatHostPort(host: string, port: number): string {
  const h = host.replace(/^\[(.*)\]$/, '$1');
  return h.includes(':') ? `[${h}]:${port}` : `${h}:${port}`;
}

/** What a server announces: `--advertise` if given, else its listen address (its host name for a wildcard). */
export function advertisedAddress(options: { listen: string; port: number; advertise?: string | undefined }): string {
  if (options.advertise !== undefined) return options.advertise;
  return formatHostPort(isWildcardHost(options.listen) ? hostname() : options.listen, options.port);
}

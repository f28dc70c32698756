/**
 * Network partitions for chaos runs, with Linux network namespaces and iproute2 only.
 *
 * Every host (the nameserver, each storage server, the clients) gets a namespace of its own
 * with one veth interface; the other ends meet in a router namespace that forwards between
 * them. Host i has the point-to-point subnet 10.213.0.(4i)/30: the router is .4i+1, the
 * host .4i+2. The subnet exists only in these namespaces: nothing is added to the caller's.
 *
 * A cut link between hosts a and b is a pair of FIB rules in the router namespace,
 * `from a to b blackhole` and back: forwarded packets are dropped silently, so established
 * connections hang and new ones time out, as in a real partition (no ICMP error, no reset).
 * Healing deletes the rules.
 *
 * Namespaces are named `dschaos-<pid>-<random>-<host>`; `destroy()` kills what still runs
 * in them and deletes them, and `removeStale()` deletes those left by a run whose process
 * is gone (SIGKILLed).
 */
import { randomBytes } from 'node:crypto';
import {
  deleteNamespaces,
  ip,
  netnsUnavailableReason,
  removeStaleNamespaces as removeStaleNs,
  stderrOf,
} from '../process/netns.js';

export const SUBNET = '10.213.0.0/24';
const SUBNET_PREFIX = '10.213.0';
/** /30 subnets in the /24: the router and at most 63 hosts. */
const MAX_HOSTS = 63;
const NAME_PREFIX = 'dschaos';

/** Why this machine cannot run network partitions, or undefined when it can. */
export function networkUnavailableReason(): string | undefined {
  return netnsUnavailableReason('network partitions');
}

/** Deletes namespaces of earlier chaos runs whose process is gone; returns how many. */
export function removeStaleNamespaces(): number {
  return removeStaleNs(NAME_PREFIX);
}

export class ChaosNetwork {
  private readonly prefix = `${NAME_PREFIX}-${process.pid}-${randomBytes(3).toString('hex')}`;
  private readonly routerNs = `${this.prefix}-rt`;
  private readonly created: string[] = [];
  private readonly hosts = new Map<string, { ns: string; address: string }>();
  /** Cut links, as `a|b` with a < b. */
  private readonly cuts = new Set<string>();
  private destroyed = false;

  private constructor() {}

  /** Creates the router and one namespace per host; on failure removes what it created. */
  static create(hostNames: readonly string[]): ChaosNetwork {
    if (hostNames.length > MAX_HOSTS) throw new Error(`at most ${MAX_HOSTS} hosts fit in ${SUBNET}`);
    const net = new ChaosNetwork();
    try {
      net.build(hostNames);
    } catch (err) {
      net.destroy();
      throw err;
    }
    return net;
  }

  private build(hostNames: readonly string[]): void {
    const r = this.routerNs;
    ip(['netns', 'add', r]);
    this.created.push(r);
    ip(['-n', r, 'link', 'set', 'lo', 'up']);
    ip(['netns', 'exec', r, 'sysctl', '-qw', 'net.ipv4.ip_forward=1']);
    hostNames.forEach((host, idx) => {
      const i = idx + 1; // subnet 0 is left unused
      const ns = `${this.prefix}-${host}`;
      const routerSide = `${SUBNET_PREFIX}.${4 * i + 1}`;
      const address = `${SUBNET_PREFIX}.${4 * i + 2}`;
      ip(['netns', 'add', ns]);
      this.created.push(ns);
      ip(['-n', ns, 'link', 'set', 'lo', 'up']);
      ip(['-n', ns, 'link', 'add', 'eth0', 'type', 'veth', 'peer', 'name', `v${i}`, 'netns', r]);
      ip(['-n', r, 'addr', 'add', `${routerSide}/30`, 'dev', `v${i}`]);
      ip(['-n', r, 'link', 'set', `v${i}`, 'up']);
      ip(['-n', ns, 'addr', 'add', `${address}/30`, 'dev', 'eth0']);
      ip(['-n', ns, 'link', 'set', 'eth0', 'up']);
      ip(['-n', ns, 'route', 'add', 'default', 'via', routerSide]);
      this.hosts.set(host, { ns, address });
    });
  }

  address(host: string): string {
    return this.host(host).address;
  }

  /** The command prefix that runs a program in `host`'s namespace. */
  wrapper(host: string): string[] {
    return ['ip', 'netns', 'exec', this.host(host).ns];
  }

  private host(name: string): { ns: string; address: string } {
    const h = this.hosts.get(name);
    if (!h) throw new Error(`no host ${name} in the chaos network`);
    return h;
  }

  /** Drops every packet between `a` and `b`, both ways. Idempotent. */
  cut(a: string, b: string): void {
    const id = linkId(a, b);
    if (this.cuts.has(id)) return;
    const [x, y] = [this.address(a), this.address(b)];
    this.cuts.add(id);
    ip(['-n', this.routerNs, 'rule', 'add', 'from', x, 'to', y, 'blackhole']);
    ip(['-n', this.routerNs, 'rule', 'add', 'from', y, 'to', x, 'blackhole']);
  }

  /** Restores the link between `a` and `b`. Idempotent. */
  heal(a: string, b: string): void {
    const id = linkId(a, b);
    if (!this.cuts.has(id)) return;
    const [x, y] = [this.address(a), this.address(b)];
    for (const [from, to] of [
      [x, y],
      [y, x],
    ] as const) {
      try {
        ip(['-n', this.routerNs, 'rule', 'del', 'from', from, 'to', to, 'blackhole']);
      } catch (err) {
        if (!/No such file|not exist/i.test(stderrOf(err))) throw err;
      }
    }
    this.cuts.delete(id);
  }

  /** Restores every cut link. */
  healAll(): void {
    for (const id of [...this.cuts]) {
      const [a, b] = id.split('|') as [string, string];
      this.heal(a, b);
    }
  }

  get cutLinks(): number {
    return this.cuts.size;
  }

  /** Kills what runs in the namespaces and deletes them. Idempotent; synchronous (usable in an exit handler). */
  destroy(): void {
    if (this.destroyed) return;
    this.destroyed = true;
    deleteNamespaces([...this.created].reverse());
  }
}

function linkId(a: string, b: string): string {
  return a < b ? `${a}|${b}` : `${b}|${a}`;
}

/**
 * A TCP relay on loopback to one etcd member, for the `isolate-leader` fault of `chaos --ha`
 * (issue 12): each node reaches each etcd member through a relay of its own in the runner, and
 * `cut` turns the node's relays into a black hole — bytes in either direction are dropped and
 * new connections are accepted and never answered, what a cut link looks like (no RST, no FIN),
 * for that node and etcd only. Storage servers, clients and the other candidates still reach
 * it. test/integration/ha-isolate.test.ts cuts a candidate off from etcd with it too: no firewall
 * tool, no root.
 */
import { createServer, type Server, Socket } from 'node:net';

export class Relay {
  cut = false;
  private readonly sockets = new Set<Socket>();
  private constructor(private readonly server: Server) {}

  /** Listens on a free loopback port; `url` is what the node is given instead of the member's. */
  static async start(target: { host: string; port: number }): Promise<{ relay: Relay; url: string }> {
    let relay: Relay | undefined;
    const server = createServer((inbound) => {
      const r = relay as Relay;
      r.track(inbound);
      if (r.cut) return; // accepted, never answered
      const outbound = r.track(new Socket());
      outbound.connect(target.port, target.host);
      inbound.on('data', (b: Buffer) => {
        if (!r.cut) outbound.write(b);
      });
      outbound.on('data', (b: Buffer) => {
        if (!r.cut) inbound.write(b);
      });
      // While cut, a closing side is not passed on either (a cut link carries no FIN).
      inbound.on('end', () => r.cut || outbound.end());
      outbound.on('end', () => r.cut || inbound.end());
      inbound.on('close', () => r.cut || outbound.destroy());
      outbound.on('close', () => r.cut || inbound.destroy());
    });
    relay = new Relay(server);
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen(0, '127.0.0.1', resolve);
    });
    const address = server.address();
    if (address === null || typeof address === 'string') throw new Error('relay: no port');
    return { relay, url: `http://127.0.0.1:${address.port}` };
  }

  private track(s: Socket): Socket {
    this.sockets.add(s);
    s.on('error', () => undefined);
    s.on('close', () => this.sockets.delete(s));
    return s;
  }

  /** Heals the link: connections made while cut are dropped (their peers retry), new ones pass. */
  heal(): void {
    this.cut = false;
    for (const s of this.sockets) s.destroy();
  }

  async close(): Promise<void> {
    for (const s of this.sockets) s.destroy();
    await new Promise((r) => this.server.close(r));
  }
}

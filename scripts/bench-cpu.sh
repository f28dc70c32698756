#!/usr/bin/env bash
# usage: scripts/bench-cpu.sh <tree> <concurrency> <duration> [reads:writes] [prof]
#   e.g. scripts/bench-cpu.sh . 64 8 0:1        (writes only, 64 callers, 8 s)
# For before/after pairs (docs/benchmarks.md): a nameserver and 3 storage servers (lmdb,
# --sync batch, 16 partitions) started by hand from <tree>/dist, a 2 s warm-up that also
# writes the 10,000 keys, then `dstore bench --no-preload`; prints the bench's result and the
# CPU (utime + stime from /proc/PID/stat, ms) of each storage server over the measured run.
# With a fifth argument, storage server s1 runs under `node --cpu-prof` and the profile is kept.
set -u
T=$1; C=$2; D=$3; R=${4:-0:1}; PROF=${5:-}
W=$(mktemp -d /tmp/cb.XXXX)
NSP=$(python3 -c 'import socket;s=socket.socket();s.bind(("127.0.0.1",0));print(s.getsockname()[1])')
node $T/dist/src/cli/main.js nameserver --port $NSP --data-dir $W/ns --initial-nodes 3 --partitions 16 --log-level warn >$W/ns.log 2>&1 &
NS=$!
PIDS=""
for i in 1 2 3; do
  EXTRA=""; [ -n "$PROF" ] && [ $i = 1 ] && EXTRA="--cpu-prof --cpu-prof-dir=$W/prof"
  node $EXTRA $T/dist/src/cli/main.js storage --nameserver 127.0.0.1:$NSP --port 0 --node-id s$i --data-dir $W/s$i --log-level warn >$W/s$i.log 2>&1 &
  PIDS="$PIDS $!"
done
cpu() { local t=0; for p in $PIDS; do s=$(awk '{print $14+$15}' /proc/$p/stat); t="$t $s"; done; echo $t; }
# warm-up + preload
node $T/dist/src/cli/main.js bench --nameserver 127.0.0.1:$NSP --concurrency 64 --duration 2 --ratio $R --keep --prefix w- >/dev/null 2>&1
A=$(cpu)
node $T/dist/src/cli/main.js bench --nameserver 127.0.0.1:$NSP --concurrency $C --duration $D --ratio $R --keep --prefix w- --no-preload 2>&1 | grep -E "writes|reads " 
B=$(cpu)
echo "cpu_ticks_before $A after $B"
python3 - "$A" "$B" <<'PY'
import sys
a=[int(x) for x in sys.argv[1].split()[1:]]; b=[int(x) for x in sys.argv[2].split()[1:]]
print("storage CPU ms per server:", [ (y-x)*10 for x,y in zip(a,b)], "sum", sum((y-x)*10 for x,y in zip(a,b)))
PY
kill -INT $PIDS 2>/dev/null; sleep 1.5; kill $NS 2>/dev/null; sleep 0.5; kill -9 $PIDS $NS 2>/dev/null
[ -n "$PROF" ] && ls $W/prof && echo "PROFDIR $W/prof" || rm -rf $W

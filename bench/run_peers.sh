#!/usr/bin/env bash
# Run the standard benchmark matrix against chat servers, one at a time.
#
# usage: run_peers.sh [-f PEERS_FILE]... [-c "CELL ..."] [-o OUTDIR] [PEER ...]
#
#   -f FILE   file of `peer NAME PORT HELLO READY SETTLE COMMAND` lines, read
#             after peers.conf.sh (repeat -f to add more files)
#   -c CELLS  cells to run (default: all): fan100 fan1000 fanmix rate1000 idle10k
#             slow slowbig churn storm
#   -o DIR    result directory (default: bench/results/YYYYmmdd-HHMMSS)
#   PEER      only run these peers (default: all peers in the files)
#
# Every server runs pinned to core $SERVER_CPU (default 0) under
# `ulimit -n <hard limit>`; the loadgen runs pinned to core $LOADGEN_CPU
# (default 1). The server is restarted for every cell, in a new directory of
# OUTDIR (nothing a server keeps on disk carries over), and stopped by PID. Before every cell the driver waits (at most QUIET_WAIT s) until the
# rest of the machine uses less than QUIET_PCT % of a core.
# With TRIES=N, a cell in which other processes used more than FOREIGN_MAX %
# of a core (foreign_cpu_pct) is run again, up to N times in all; the earlier
# results are kept as PEER.CELL.json.tryK.
# fanmix needs a peer with front ends (`front_ends NAME OPTIONS`, see
# peers.conf.sh): other peers skip it.
# Each cell writes OUTDIR/PEER.CELL.json (one JSON line) and .err; at the
# end the tables are printed (table.py OUTDIR).
set -uo pipefail

BENCH=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$BENCH/.." && pwd)
SERVER_CPU=${SERVER_CPU:-0}
LOADGEN_CPU=${LOADGEN_CPU:-1}
LOADGEN=${LOADGEN:-$BENCH/bin/loadgen}
ALL_CELLS="fan100 fan1000 fanmix rate1000 idle10k slow slowbig churn storm"
QUIET_PCT=${QUIET_PCT:-15}     # max CPU % (of one core) used by others before a cell
QUIET_WAIT=${QUIET_WAIT:-120}  # max seconds to wait for that
FOREIGN_MAX=${FOREIGN_MAX:-10} # max CPU % used by others during a cell...
TRIES=${TRIES:-1}              # ...before it is run again, at most TRIES times in all
CELLS=$ALL_CELLS
OUT=""
FILES=("$BENCH/peers.conf.sh")

while getopts "f:c:o:h" opt; do
  case $opt in
    f) FILES+=("$OPTARG") ;;
    c) CELLS=$OPTARG ;;
    o) OUT=$OPTARG ;;
    *) awk 'NR > 1 && /^#/ { print; next } NR > 1 { exit }' "$0"; exit 2 ;;
  esac
done
shift $((OPTIND - 1))
ONLY=("$@")
OUT=${OUT:-$BENCH/results/$(date +%Y%m%d-%H%M%S)}
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)

P_NAME=(); P_PORT=(); P_HELLO=(); P_READY=(); P_SETTLE=(); P_CMD=()
peer() {
  if [ $# -ne 6 ]; then echo "peer: need 6 fields, got $#: $*" >&2; exit 2; fi
  P_NAME+=("$1"); P_PORT+=("$2"); P_HELLO+=("$3"); P_READY+=("$4"); P_SETTLE+=("$5"); P_CMD+=("$6")
}
# front_ends NAME OPTIONS: the peer NAME also speaks chatservice's frame,
# WebSocket and IRC front ends (the fanmix cell) when OPTIONS are added to
# its command; in OPTIONS {frames}, {web} and {irc} are their ports, the
# peer's PORT plus 100, 200 and 300.
declare -A P_FRONTS=()
front_ends() {
  if [ $# -ne 2 ]; then echo "front_ends: need 2 fields, got $#: $*" >&2; exit 2; fi
  P_FRONTS[$1]=$2
}
for f in "${FILES[@]}"; do
  # shellcheck disable=SC1090
  source "$f" || { echo "cannot read $f" >&2; exit 2; }
done

# The matrix. Each cell is bounded: warm-up + duration + drain (<= 5 s).
cell_args() {
  case $1 in
    fan100)   echo "fanout --receivers 100 --senders 10 --window 8 --warmup 2 --duration 10" ;;
    fan1000)  echo "fanout --receivers 1000 --senders 10 --window 8 --warmup 2 --duration 10" ;;
    # fanmix: fan1000 with the receivers spread evenly over four front ends
    fanmix)   echo "fanout --receivers 1000 --senders 10 --window 8 --warmup 2 --duration 10 --mix lines,frames,web,irc" ;;
    rate1000) echo "fanout --receivers 1000 --senders 10 --rate 200 --warmup 2 --duration 10" ;;
    idle10k)  echo "idle --n 10000 --hold 5 --connect-budget 60" ;;
    slow)     echo "slow --receivers 200 --senders 10 --rate 100 --stalled 0.1 --warmup 1 --duration 20" ;;
    # slowbig: enough bytes per stalled client (1 MB/s) to overflow the ~4 MB
    # the kernel buffers per loopback connection within the 20 s
    slowbig)  echo "slow --receivers 200 --senders 10 --rate 250 --payload 4096 --stalled 0.1 --warmup 1 --duration 20" ;;
    churn)    echo "churn --c 20 --duration 10" ;;
    # storm: 10,000 clients connecting and registering at once (a restart);
    # connect_s is the time until the last one is in
    storm)    echo "idle --n 10000 --hold 0 --connect-concurrency 10000 --conn-timeout 60 --connect-budget 60" ;;
    *) return 1 ;;
  esac
}

listening() { # port -> 0 if something listens on 127.0.0.1:port
  [ -n "$(ss -Hltn "sport = :$1" 2>/dev/null)" ]
}

busy_pct() { # CPU % (of one core) used by everything over 1 s
  local a b
  a=$(head -1 /proc/stat); sleep 1; b=$(head -1 /proc/stat)
  echo "$a $b" | awk '{n=NF/2; t=0; for(i=2;i<=n;i++) t+=$(i+n)-$i;
                       idle=($(5+n)-$5)+($(6+n)-$6); printf "%d", 100*(t-idle)/t*(n>=9?'"$(nproc)"':1)}'
}

wait_quiet() { # wait (bounded) until other processes leave the CPUs alone
  local waited=0 b
  while :; do
    b=$(busy_pct)
    [ "$b" -le "$QUIET_PCT" ] && return 0
    if [ "$waited" -ge "$QUIET_WAIT" ]; then
      echo "   machine still busy (${b}% of a core) after ${QUIET_WAIT}s; running anyway" >&2
      ps -eo pid,pcpu,etime,args --sort=-pcpu | head -4 | cut -c1-120 >&2
      return 1
    fi
    [ "$waited" -eq 0 ] && echo "   machine busy (${b}% of a core); waiting up to ${QUIET_WAIT}s" >&2
    sleep 2; waited=$((waited + 3))
  done
}

alive() { # pid -> 0 if running (a dead child stays a zombie until waited for)
  local st
  st=$(ps -o stat= -p "$1" 2>/dev/null) || return 1
  [[ $st != Z* ]]
}

SPID=""
start_peer() { # index log [more options] [more ports]
  local i=$1 log=$2 port=${P_PORT[$1]} more=${3:-} ports=${4:-} p up
  local cmd="${P_CMD[$i]//\{port\}/$port} $more"
  for p in $port $ports; do
    if listening "$p"; then
      echo "port $p is already in use; not starting ${P_NAME[$i]}" >&2
      return 1
    fi
  done
  # taskset and bash exec into the server, so $! is the server's PID.
  # In a new directory of OUTDIR, so that no checkout in the working
  # directory is imported, and that what a server keeps there (chatservice's
  # --store, a SQLite file by default) does not carry one cell's rooms and
  # their scrollback into the next: every cell starts as a fresh server.
  local dir
  dir=$(mktemp -d "$OUT/cell.XXXXXX") || return 1
  taskset -c "$SERVER_CPU" bash -c "cd '$dir' && ulimit -n \$(ulimit -Hn) && exec $cmd" >"$log" 2>&1 &
  SPID=$!
  for _ in $(seq 1 150); do
    if ! alive "$SPID"; then
      echo "${P_NAME[$i]} exited at start; see $log" >&2; wait "$SPID" 2>/dev/null; SPID=""; return 1
    fi
    up=1
    for p in $port $ports; do listening "$p" || { up=""; break; }; done
    [ -n "$up" ] && return 0
    sleep 0.1
  done
  echo "${P_NAME[$i]} did not listen on $port within 15 s" >&2
  stop_peer
  return 1
}

stop_peer() {
  [ -z "$SPID" ] && return 0
  kill -TERM "$SPID" 2>/dev/null
  for _ in $(seq 1 50); do
    alive "$SPID" || break
    sleep 0.1
  done
  alive "$SPID" && kill -KILL "$SPID" 2>/dev/null
  wait "$SPID" 2>/dev/null
  SPID=""
}
trap 'stop_peer; exit 130' INT TERM

{
  echo "date: $(date -u +%FT%TZ)"
  echo "nproc: $(nproc)"
  echo "cpu: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ //')"
  echo "kernel: $(uname -r)"
  echo "go: $(go version 2>/dev/null)"
  echo "python: $("$ROOT/.venv/bin/python" --version 2>&1)"
  echo "twisted: $("$ROOT/.venv/bin/python" -c 'import twisted; print(twisted.__version__)' 2>&1)"
  echo "checkout: $(git -C "$ROOT" describe --always --dirty 2>&1)"
  echo "nofile hard limit: $(ulimit -Hn)"
  echo "server cpu: $SERVER_CPU, loadgen cpu: $LOADGEN_CPU"
} >"$OUT/env.txt"

: >"$OUT/peers.txt"
for i in "${!P_NAME[@]}"; do
  name=${P_NAME[$i]}
  if [ ${#ONLY[@]} -gt 0 ] && [[ " ${ONLY[*]} " != *" $name "* ]]; then continue; fi
  echo "$name" >>"$OUT/peers.txt"
  for cell in $CELLS; do
    args=$(cell_args "$cell") || { echo "unknown cell $cell" >&2; exit 2; }
    more=""; ports=""
    if [[ $args == *--mix* ]]; then
      # the peer's front ends: their options and ports, and where the loadgen finds them
      if [ -z "${P_FRONTS[$name]:-}" ]; then
        echo "== $name $cell: skipped (no front ends; see front_ends in peers.conf.sh)" >&2
        continue
      fi
      port=${P_PORT[$i]}
      more=${P_FRONTS[$name]//\{frames\}/$((port + 100))}
      more=${more//\{web\}/$((port + 200))}
      more=${more//\{irc\}/$((port + 300))}
      ports="$((port + 100)) $((port + 200)) $((port + 300))"
      args="$args --frames-addr 127.0.0.1:$((port + 100)) --web-addr 127.0.0.1:$((port + 200)) --irc-addr 127.0.0.1:$((port + 300))"
    fi
    for try in $(seq 1 "$TRIES"); do
      again=""; [ "$try" -gt 1 ] && again=" (try $try)"
      echo "== $name $cell$again" >&2
      [ "$try" -gt 1 ] && mv "$OUT/$name.$cell.json" "$OUT/$name.$cell.json.try$((try - 1))"
      wait_quiet
      start_peer "$i" "$OUT/$name.$cell.server.log" "$more" "$ports" || continue 2
      # shellcheck disable=SC2086
      cmd=(taskset -c "$LOADGEN_CPU" "$LOADGEN" $args
           --addr "127.0.0.1:${P_PORT[$i]}" --hello "${P_HELLO[$i]}" --ready "${P_READY[$i]}"
           --settle "${P_SETTLE[$i]}" --server-pid "$SPID" --label "$name/$cell")
      printf '%q ' "${cmd[@]}" >"$OUT/$name.$cell.cmd"; echo >>"$OUT/$name.$cell.cmd"
      timeout -k 5 240 "${cmd[@]}" >"$OUT/$name.$cell.json" 2>"$OUT/$name.$cell.err"
      rc=$?
      [ $rc -ne 0 ] && echo "   loadgen exit $rc (see $OUT/$name.$cell.err)" >&2
      alive "$SPID" || echo "   server died during $cell (see $OUT/$name.$cell.server.log)" >&2
      stop_peer
      sleep 1
      # Disturbed by another process? Then run the cell again (at most TRIES).
      foreign=$(grep -o '"foreign_cpu_pct": *-\?[0-9]*' "$OUT/$name.$cell.json" | grep -o -- '-\?[0-9]*$')
      if [ -n "$foreign" ] && [ "$foreign" -gt "$FOREIGN_MAX" ] && [ "$try" -lt "$TRIES" ]; then
        echo "   other processes used ${foreign}% of a core during the cell; again" >&2
        continue
      fi
      break
    done
  done
done

"$ROOT/.venv/bin/python" "$BENCH/table.py" "$OUT"
echo "results in $OUT" >&2

#!/usr/bin/env bash
# Side-by-side fan-out benchmark: actionsync against the Socket.IO peer
# (../shared/peers/socketio), in the same run, on the same pinned cores.
#
#   bash bench/run.sh      # progress on stderr, ONE line of JSON on stdout (~4-5 min)
#
# For actionsync: builds actionsync and actionsync-bench into a temp dir, starts
# `taskset -c SERVER_CPU env GOMAXPROCS=1 actionsync serve --addr 127.0.0.1:PORT --log-level warn`
# and runs the load pinned to CLIENT_CPU: tput N in TPUT_NS, lat N in LAT_NS at RATE/s, then
# idle K=IDLE_K (own connections) on a fresh server and idle SHARED_K over SHARED_CONNS
# connections on another. Then it runs the peer's run.sh with the same knobs. It saves
# everything under bench/results/<timestamp>/ (gitignored), prints the final line (ours,
# the peer's line, ours/peer ratios, the issue's targets) and appends it to
# bench/results.jsonl (committed: the history of runs). Then:
#   go run ./bench/chart -in bench/results.jsonl -out docs/benchmarks.svg -md docs/benchmarks.md
#
# Environment knobs (defaults in brackets); the peer reads the same names:
#   PORT [18112] (below the ephemeral port range: the client's 5,000 connections take
#     local ports from it, and a server started right after could find its port taken)
#   SERVER_CPU [0]  CLIENT_CPU [1]  DURATION [6] (s per measured phase)
#   WARMUP [1] (s)  WINDOW [64] (actions in flight, tput)  RATE [200] (actions/s, lat)
#   PUBLISH [sync] (tput publisher: sync stream or unary dispatch)  BATCH [WINDOW] (most actions per dispatch, tput)
#   TPUT_NS ["10 100 1000"]  LAT_NS ["100 1000"] (ours)  LAT_N [100] (the peer's)
#   IDLE_K ["2000,5000"]  SHARED_K [5000]  SHARED_CONNS [50]
#   PROTOCOL [connect-h2] (connect-h1, connect-h2, grpc-h2)  PAYLOAD_BYTES [200]
#   QUIET_WAIT [20] (s to wait for the pinned CPUs to be idle at start)  QUIET_PCT [15]
#   PHASE_TRIES [3]  PHASE_QUIET_WAIT [8]  FOREIGN_MAX [20] (retry a phase when other
#   processes used more than this % of a pinned core)
#   STRACE [0]: 1 adds a tput phase (N = STRACE_N [largest of TPUT_NS]) under
#     `strace -c -f -e trace=write,writev -p <server pid>` and reports writes_per_delivery
#   WRITES [""]: strace (= STRACE=1) or perf: count with `perf stat` tracepoints instead,
#     which barely slows the server and also counts read(2)
#   BOARDS [1000]  PER_BOARD [4]  BOARDS_RATE [2000]: the many-small-boards phase (boards
#     channels of PER_BOARD subscribers, each on its own connection; BOARDS_RATE actions/s
#     over random boards, one per Dispatch) and the dispatch phase (BOARDS_RATE unary
#     Dispatch calls/s, no subscriber: server CPU per call), on a fresh server; the peer
#     runs the same boards workload (its bench.js --mode boards, INFLIGHT [64] in flight,
#     on PEER_BOARDS_PORT [PORT+10])
#   SKIP_PEER [0]: 1 runs without the peer (else a missing peer is an error)
#   PEER_DIR [../shared/peers/socketio, from the repository root]
# Exit code: 0, or 1 if a phase failed (the line is still written, with failed_phases).
# Only 127.0.0.1 is used. Every wait is bounded; servers are stopped by PID.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"

PORT=${PORT:-18112}
SERVER_CPU=${SERVER_CPU:-0}
CLIENT_CPU=${CLIENT_CPU:-1}
DURATION=${DURATION:-6}
WARMUP=${WARMUP:-1}
WINDOW=${WINDOW:-64}
DEBUG_PORT=${DEBUG_PORT:-$(( PORT + 1 ))}
# How the tput publisher sends: "sync" puts each dispatch on one Sync stream (a socket-like
# publisher, as the peer's emit), with up to BATCH of the window's free actions per
# dispatch (what @actionsync/redux does with pending actions); "dispatch" makes a unary
# Dispatch call each time.
PUBLISH=${PUBLISH:-sync}
BATCH=${BATCH:-$(( WINDOW < 100 ? WINDOW : 100 ))}
RATE=${RATE:-200}
TPUT_NS=${TPUT_NS:-"10 100 1000"}
LAT_NS=${LAT_NS:-"100 1000"}
IDLE_K=${IDLE_K:-2000,5000}
SHARED_K=${SHARED_K:-5000}
SHARED_CONNS=${SHARED_CONNS:-50}
PROTOCOL=${PROTOCOL:-connect-h2}
PAYLOAD_BYTES=${PAYLOAD_BYTES:-200}
QUIET_WAIT=${QUIET_WAIT:-20}
QUIET_PCT=${QUIET_PCT:-15}
PHASE_TRIES=${PHASE_TRIES:-3}
PHASE_QUIET_WAIT=${PHASE_QUIET_WAIT:-8}
FOREIGN_MAX=${FOREIGN_MAX:-20}
STRACE=${STRACE:-0}
BOARDS=${BOARDS:-1000}
PER_BOARD=${PER_BOARD:-4}
BOARDS_RATE=${BOARDS_RATE:-2000}
INFLIGHT=${INFLIGHT:-64}
SKIP_PEER=${SKIP_PEER:-0}
PEER_DIR=${PEER_DIR:-$ROOT/../shared/peers/socketio}

log() { echo "[bench/run.sh] $*" >&2; }
die() { log "error: $*"; exit 1; }

# ---- check the knobs before spending minutes ----
. "$ROOT/bench/lib.sh"
for v in PORT SERVER_CPU CLIENT_CPU WINDOW BOARDS PER_BOARD INFLIGHT SHARED_K SHARED_CONNS PAYLOAD_BYTES QUIET_WAIT QUIET_PCT PHASE_TRIES PHASE_QUIET_WAIT FOREIGN_MAX; do
  [[ ${!v} =~ ^[0-9]+$ ]] || die "$v: got '${!v}', want an integer"
done
for v in DURATION WARMUP RATE BOARDS_RATE; do isnum "${!v}" || die "$v: got '${!v}', want a number"; done
for n in $TPUT_NS $LAT_NS; do [[ $n =~ ^[0-9]+$ ]] || die "TPUT_NS/LAT_NS: got '$n', want integers"; done
[[ $IDLE_K =~ ^[0-9]+(,[0-9]+)*$ ]] || die "IDLE_K: got '$IDLE_K', want K,K,..."
LARGEST_N=$(tr ' ' '\n' <<< "$TPUT_NS" | grep . | sort -n | tail -1)
STRACE_N=${STRACE_N:-${LARGEST_N:-1000}}
PEER_RUN=$PEER_DIR/run.sh
if [ "$SKIP_PEER" != 1 ] && [ ! -f "$PEER_RUN" ]; then
  die "peer benchmark not found at $PEER_RUN; set SKIP_PEER=1 to run without it"
fi
for c in taskset timeout go; do command -v "$c" > /dev/null || die "$c not found"; done
WRITES=${WRITES:-}
[ "$STRACE" = 1 ] && WRITES=${WRITES:-strace}
case "$WRITES" in
  "") ;;
  strace) command -v strace > /dev/null || die "STRACE=1 needs strace (apt-get install -y strace)" ;;
  perf) command -v perf > /dev/null || die "WRITES=perf needs perf (apt-get install -y linux-perf)" ;;
  *) die "WRITES: got '$WRITES', want strace or perf" ;;
esac

# Each side holds one fd per connection (5,000 idle subscribers).
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
if [ "$(ulimit -n)" != unlimited ] && [ "$(ulimit -n)" -lt 12000 ]; then
  log "warning: ulimit -n is $(ulimit -n); the 5000-connection idle phases may fail"
fi

STAMP=$(date -u +%Y%m%dT%H%M%SZ)
OUT=$ROOT/bench/results/$STAMP
mkdir -p "$OUT/ours/tries"
TMP=$(mktemp -d)
SPID=""
STPID=""
stop_server() {
  local rc=0
  if [ -n "$SPID" ] && kill -0 "$SPID" 2>/dev/null; then
    kill -TERM "$SPID" 2>/dev/null || true
    for _ in $(seq 1 100); do kill -0 "$SPID" 2>/dev/null || break; sleep 0.1; done
    if kill -0 "$SPID" 2>/dev/null; then
      log "warning: server $SPID did not stop within 10 s of SIGTERM; killing it"
      kill -KILL "$SPID" 2>/dev/null || true
    fi
    wait "$SPID" 2>/dev/null || rc=$?
    [ "$rc" = 0 ] || log "warning: server $SPID exited with $rc after SIGTERM"
  fi
  SPID=""
}
cleanup() {
  if [ -n "$STPID" ]; then kill -INT "$STPID" 2>/dev/null || true; fi
  stop_server
  rm -rf "$TMP"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

log "results in $OUT"
log "building actionsync and actionsync-bench"
go build -o "$TMP/actionsync" ./cmd/actionsync
go build -o "$TMP/actionsync-bench" ./cmd/actionsync-bench

port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null; }
SERVERS=0
start_server() {
  port_open && die "127.0.0.1:$PORT is already in use; set PORT"
  SERVERS=$((SERVERS + 1))
  local logf="$OUT/server-$SERVERS.log"
  # taskset execs env, env execs actionsync: $! is the server's PID.
  # --debug-addr lets the idle phases force a GC before reading RSS, as the peer's run
  # does for Node.
  taskset -c "$SERVER_CPU" env GOMAXPROCS=1 "$TMP/actionsync" serve --addr "127.0.0.1:$PORT" \
    --debug-addr "127.0.0.1:$DEBUG_PORT" --demo=false --log-level warn > "$logf" 2>&1 &
  SPID=$!
  # --log-level warn hides the start-up line, so wait for the port instead.
  for _ in $(seq 1 100); do
    port_open && return 0
    kill -0 "$SPID" 2>/dev/null || break
    sleep 0.1
  done
  log "server failed to start:"; cat "$logf" >&2
  exit 1
}

# bench NAME ARGS...: one actionsync-bench call (bounded), output in FILE.
PHASE_TIMEOUT=$(( ${DURATION%.*} + ${WARMUP%.*} + 300 ))
bench() { # $1: output file, rest: actionsync-bench args; returns its exit code
  local file=$1; shift
  local rc=0
  timeout -k 5 "$PHASE_TIMEOUT" taskset -c "$CLIENT_CPU" "$TMP/actionsync-bench" \
    --url "http://127.0.0.1:$PORT" --server-pid "$SPID" --server-cpu "$SERVER_CPU" --client-cpu "$CLIENT_CPU" \
    --protocol "$PROTOCOL" --payload-bytes "$PAYLOAD_BYTES" "$@" > "$file" 2> >(tee -a "$OUT/bench.log" >&2) || rc=$?
  log "$(basename "$file" .json): $(cat "$file")"
  return "$rc"
}

# phase NAME ARGS...: a measured phase. Retried (at most PHASE_TRIES) while other
# processes used more than FOREIGN_MAX % of a pinned core; the attempt with the least
# foreign load is kept. A failed check is not retried: it is a result.
phase() {
  local out=$1; shift
  local t f best=1000 bt=0 rc
  for t in $(seq 1 "$PHASE_TRIES"); do
    wait_quiet "$PHASE_QUIET_WAIT"
    rc=0
    bench "$OUT/ours/tries/$out.$t.json" "$@" || rc=$?
    if [ "$rc" != 0 ]; then
      fail_phase "$out" "exit $rc"
      [ -s "$OUT/ours/tries/$out.$t.json" ] && cp "$OUT/ours/tries/$out.$t.json" "$OUT/ours/$out.json"
      echo "$out 0 $t" >> "$OUT/ours/foreign.txt"
      return 0
    fi
    f=$(foreign_of "$OUT/ours/tries/$out.$t.json")
    if [ "$f" -lt "$best" ]; then best=$f; bt=$t; cp "$OUT/ours/tries/$out.$t.json" "$OUT/ours/$out.json"; fi
    [ "$f" -le "$FOREIGN_MAX" ] && break
    log "$out: foreign load ${f}% on pinned CPUs; retrying"
  done
  log "$out: kept attempt $bt of $t (foreign ${best}%)"
  echo "$out $best $t" >> "$OUT/ours/foreign.txt"
}

wait_quiet "$QUIET_WAIT"
PRE0=$PRE_BUSY0; PRE1=$PRE_BUSY1
log "pre-run busy: cpu$SERVER_CPU ${PRE0}%  cpu$CLIENT_CPU ${PRE1}%"
T_START=$SECONDS

# ---- actionsync: throughput and latency on one server ----
start_server
log "actionsync pid $SPID on cpu $SERVER_CPU, port $PORT, protocol $PROTOCOL"
for n in $TPUT_NS; do
  phase "tput_$n" --mode tput --n "$n" --duration "$DURATION" --warmup "$WARMUP" --window "$WINDOW" --publish "$PUBLISH" --batch "$BATCH"
done
for n in $LAT_NS; do
  phase "lat_$n" --mode lat --n "$n" --rate "$RATE" --duration "$DURATION" --warmup "$WARMUP"
done

# ---- write(2) calls per delivery: its own tput phase, with a syscall counter attached ----
# strace stops the server at every traced call, which slows it several times over and
# changes how much it batches; perf counts tracepoints in the kernel at little cost.
count_writes() { # $1: strace or perf
  local tool=$1 n=$STRACE_N dir="$OUT/ours/syscalls" rc=0 writes reads deliv apm
  mkdir -p "$dir"
  log "$tool: counting the server's write/writev calls during tput N=$n"
  if [ "$tool" = strace ]; then
    strace -c -f -e trace=write,writev -p "$SPID" -o "$dir/$tool.txt" 2>> "$dir/$tool.log" &
  else
    perf stat -x, -e syscalls:sys_enter_write,syscalls:sys_enter_writev,syscalls:sys_enter_read \
      -p "$SPID" -o "$dir/$tool.txt" 2>> "$dir/$tool.log" &
  fi
  STPID=$!
  sleep 1
  bench "$dir/tput_$n.json" --mode tput --n "$n" --duration "$DURATION" --warmup "$WARMUP" --window "$WINDOW" --publish "$PUBLISH" --batch "$BATCH" || rc=$?
  kill -INT "$STPID" 2>/dev/null || true
  for _ in $(seq 1 100); do kill -0 "$STPID" 2>/dev/null || break; sleep 0.1; done
  wait "$STPID" 2>/dev/null || true
  STPID=""
  if [ "$tool" = strace ]; then
    # strace -c: "% time  seconds  usecs/call  calls  [errors]  syscall"
    writes=$(awk '$NF=="write" || $NF=="writev" {s += $4} END {print s+0}' "$dir/$tool.txt" 2>/dev/null || echo 0)
    reads=null
  else
    # perf stat -x,: "count,unit,event,..."
    writes=$(awk -F, '$3 ~ /sys_enter_writev?$/ {s += $1} END {print s+0}' "$dir/$tool.txt" 2>/dev/null || echo 0)
    reads=$(awk -F, '$3 ~ /sys_enter_read$/ {s += $1} END {print s+0}' "$dir/$tool.txt" 2>/dev/null || echo 0)
  fi
  deliv=$(sed -n 's/.*"deliveries_total":\([0-9]*\).*/\1/p' "$dir/tput_$n.json")
  apm=$(sed -n 's/.*"actions_per_msg":\([0-9.]*\).*/\1/p' "$dir/tput_$n.json")
  if [ "$rc" != 0 ] || [ "${deliv:-0}" -le 0 ] || [ "$writes" -le 0 ]; then
    fail_phase "writes_$n" "$tool: exit $rc, $writes writes, ${deliv:-0} deliveries"
    return 0
  fi
  local wpd rpd=null
  wpd=$(awk -v c="$writes" -v d="$deliv" 'BEGIN {printf "%.4f", c / d}')
  [ "$reads" = null ] || rpd=$(awk -v c="$reads" -v d="$deliv" 'BEGIN {printf "%.4f", c / d}')
  printf '{"tool":"%s","n":%s,"write_calls":%s,"read_calls":%s,"deliveries":%s,"writes_per_delivery":%s,"reads_per_delivery":%s,"actions_per_msg":%s}\n' \
    "$tool" "$n" "$writes" "$reads" "$deliv" "$wpd" "$rpd" "${apm:-null}" > "$OUT/ours/writes_$n.json"
  log "$tool: $writes write/writev calls for $deliv deliveries: $wpd per delivery ($apm actions per response under $tool)"
}
[ -z "$WRITES" ] || count_writes "$WRITES"
stop_server

# ---- idle memory, each on a fresh server ----
start_server
log "idle-memory server pid $SPID (own connections)"
bench "$OUT/ours/idle.json" --mode idle --k "$IDLE_K" --debug-url "http://127.0.0.1:$DEBUG_PORT" || fail_phase idle "exit $?"
stop_server
start_server
log "idle-memory server pid $SPID ($SHARED_K subscribers over $SHARED_CONNS connections)"
bench "$OUT/ours/idle_shared.json" --mode idle --k "$SHARED_K" --conns "$SHARED_CONNS" --debug-url "http://127.0.0.1:$DEBUG_PORT" || fail_phase idle_shared "exit $?"
stop_server
for f in idle idle_shared; do [ -s "$OUT/ours/$f.json" ] || rm -f "$OUT/ours/$f.json"; done

# ---- many small boards, and what one unary Dispatch costs, on a fresh server ----
if [ "$BOARDS" -gt 0 ]; then
  start_server
  log "boards server pid $SPID: $BOARDS boards x $PER_BOARD subscribers, $BOARDS_RATE actions/s"
  phase dispatch --mode lat --n 0 --rate "$BOARDS_RATE" --duration "$DURATION" --warmup "$WARMUP"
  phase boards --mode lat --n $(( BOARDS * PER_BOARD )) --boards "$BOARDS" --rate "$BOARDS_RATE" --duration "$DURATION" --warmup "$WARMUP"
  stop_server
fi
log "actionsync phases took $((SECONDS - T_START)) s"

# ---- the Socket.IO peer, same knobs, same cores ----
if [ "$SKIP_PEER" = 1 ]; then
  log "SKIP_PEER=1: not running the Socket.IO peer"
else
  # Run a copy, so that its npm install does not write into the shared folder.
  mkdir -p "$TMP/peer"
  cp -R "$PEER_DIR/." "$TMP/peer/"
  chmod -R u+w "$TMP/peer"
  log "running the Socket.IO peer ($PEER_RUN, about 2 min)"
  rc=0
  SERVER_CPU=$SERVER_CPU CLIENT_CPU=$CLIENT_CPU DURATION=$DURATION WARMUP=$WARMUP WINDOW=$WINDOW RATE=$RATE \
    TPUT_NS=$TPUT_NS IDLE_K=$IDLE_K timeout -k 5 900 bash "$TMP/peer/run.sh" > "$OUT/peer.json" 2> >(tee "$OUT/peer.log" >&2) || rc=$?
  if [ "$rc" != 0 ] || ! grep -q '^{' "$OUT/peer.json"; then
    fail_phase peer "exit $rc"
    rm -f "$OUT/peer.json"
  fi
  if [ "$BOARDS" -gt 0 ]; then
    # The same boards workload on the peer (as bench/boards.sh runs it).
    if [ ! -f "$TMP/peer/node_modules/socket.io/package.json" ]; then
      (cd "$TMP/peer" && npm ci --no-audit --no-fund --loglevel=error >&2)
    fi
    PEER_PORT=${PEER_BOARDS_PORT:-$(( PORT + 10 ))}
    for _ in $(seq 1 100); do (exec 3<>"/dev/tcp/127.0.0.1/$PEER_PORT") 2>/dev/null || break; sleep 0.1; done
    (exec 3<>"/dev/tcp/127.0.0.1/$PEER_PORT") 2>/dev/null && die "127.0.0.1:$PEER_PORT (the peer's boards server) is in use; set PEER_BOARDS_PORT"
    wait_quiet "$PHASE_QUIET_WAIT"
    (cd "$TMP/peer" && exec taskset -c "$SERVER_CPU" node server.js "$PEER_PORT") > "$OUT/peer-boards-server.log" 2>&1 &
    SPID=$!
    for _ in $(seq 1 100); do (exec 3<>"/dev/tcp/127.0.0.1/$PEER_PORT") 2>/dev/null && break; sleep 0.1; done
    rc=0
    (cd "$TMP/peer" && timeout -k 5 300 taskset -c "$CLIENT_CPU" node bench.js --port "$PEER_PORT" --server-pid "$SPID" \
      --server-cpu "$SERVER_CPU" --client-cpu "$CLIENT_CPU" --mode boards --channels "$BOARDS" --per-channel "$PER_BOARD" \
      --rate "$BOARDS_RATE" --inflight "$INFLIGHT" --duration "$DURATION" --warmup "$WARMUP") \
      > "$OUT/peer_boards.json" 2>> "$OUT/peer.log" || rc=$?
    stop_server
    if [ "$rc" != 0 ] || ! grep -q '^{' "$OUT/peer_boards.json"; then
      fail_phase peer_boards "exit $rc"
      rm -f "$OUT/peer_boards.json"
    else
      log "peer boards: $(cat "$OUT/peer_boards.json")"
    fi
  fi
fi

# ---- the final line ----
GIT_REV=$(git rev-parse --short HEAD 2>/dev/null || echo unknown)
if [ -n "$(git status --porcelain -- cmd service broker gen go.mod go.sum 2>/dev/null)" ]; then GIT_REV="$GIT_REV+dirty"; fi
HOST=$(sed -n 's/^model name[[:space:]]*:[[:space:]]*//p' /proc/cpuinfo | head -1 | tr -d '"\\')
GOV=$(go env GOVERSION)
printf '{"time":"%s","git":"%s","host":"%s, %s CPUs","kernel":"%s","go":"%s","server":"taskset -c %s env GOMAXPROCS=1 actionsync serve --log-level warn","knobs":{"publish":"%s","batch":%s,"duration":%s,"warmup":%s,"window":%s,"rate":%s,"tput_ns":"%s","lat_ns":"%s","idle_k":"%s","shared_k":%s,"shared_conns":%s,"protocol":"%s","payload_bytes":%s,"boards":%s,"per_board":%s,"boards_rate":%s},"pre_busy_cpu_pct":[%s,%s]}\n' \
  "$STAMP" "$GIT_REV" "$HOST" "$(nproc)" "$(uname -r)" "$GOV" "$SERVER_CPU" "$PUBLISH" "$BATCH" "$DURATION" "$WARMUP" "$WINDOW" "$RATE" "$TPUT_NS" "$LAT_NS" "$IDLE_K" \
  "$SHARED_K" "$SHARED_CONNS" "$PROTOCOL" "$PAYLOAD_BYTES" "$BOARDS" "$PER_BOARD" "$BOARDS_RATE" "$PRE0" "$PRE1" > "$OUT/meta.json"
"$TMP/actionsync-bench" --mode summary --dir "$OUT" > "$OUT/summary.json"
cat "$OUT/summary.json"
cat "$OUT/summary.json" >> "$ROOT/bench/results.jsonl"
log "appended to bench/results.jsonl; chart: go run ./bench/chart -in bench/results.jsonl -out docs/benchmarks.svg -md docs/benchmarks.md"
if [ -s "$OUT/failed.txt" ]; then
  log "failed phases: $(tr '\n' ' ' < "$OUT/failed.txt")"
  exit 1
fi

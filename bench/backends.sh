#!/usr/bin/env bash
# Storage backends side by side: the in-memory broker, one durable node (--data-dir, an
# embedded nats-server with its file store) and 3 stateless nodes on one external
# nats-server (--broker nats), in the same run, on the same pinned cores.
#
#   bash bench/backends.sh   # progress on stderr; one JSON line per phase and a summary on stdout (~3 min)
#
# Builds actionsync, actionsync-bench and nats-server (the module's own dependency,
# github.com/nats-io/nats-server/v2) into a temp dir. Every server process (the nodes, the
# nats-server) runs pinned to SERVER_CPU with GOMAXPROCS=1; the load runs pinned to
# CLIENT_CPU, as in bench/run.sh. For each backend:
#   memory       actionsync serve
#   memory-auth  actionsync serve --auth-hs256-secret-file S --dispatch-rate 0 --max-streams-per-identity 0,
#                every client with a token of its own (actionsync-bench --token-secret-file S):
#                what authentication costs (one token verified per stream and per Dispatch)
#   data-dir     actionsync serve --data-dir DIR (a fresh DIR each round)
#   nats-3nodes  nats-server -js -sd DIR -a 127.0.0.1 -p NATS_PORT (a fresh DIR each round), then
#                3 x actionsync serve --broker nats --nats-url nats://127.0.0.1:NATS_PORT;
#                the publisher uses node 1, the subscribers are spread over the 3 nodes, and
#                the CPU and RSS of all 4 processes are summed
# it runs tput with TPUT_N subscribers (the publisher keeps WINDOW actions in flight on one
# Sync stream, BATCH per dispatch, as bench/run.sh's tput) and lat with LAT_N subscribers at
# RATE actions/s (one action per unary Dispatch). Each backend starts fresh for each round;
# there are RUNS rounds, each running every backend once, in an order that rotates from round
# to round, so that drift over the run reaches every backend alike.
# Then, with PROFILE, one more tput phase per listed backend with a CPU profile of node 1
# (`/debug/pprof/profile?seconds=PROFILE_SECONDS` on its --debug-addr) and `go tool pprof -top`.
#
# Saved under bench/results/<timestamp>/ (gitignored): phases/PHASE.BACKEND.rROUND.json (the
# kept attempt), tries/, profile/, server and bench logs, meta.json, summary.json. The summary
# (`actionsync-bench --mode compare`) gives per backend and phase the median, min and max over
# the rounds, each backend's deliveries per server CPU-second as a share of memory's, and the
# goals (>= 50% of memory's at 1,000 subscribers; p99 <= 10 ms at 200/s x 100 subscribers).
# Nothing is appended to bench/results.jsonl: its lines are bench/run.sh's, which bench/chart reads.
#
# Environment knobs (defaults in brackets):
#   BACKENDS ["memory data-dir nats-3nodes"]  RUNS [3] (rounds)
#   PORT [28130] (node i listens on PORT+i-1)  DEBUG_PORT [PORT+10] (node i: DEBUG_PORT+i-1)
#   NATS_PORT [PORT+20]  SERVER_CPU [0]  CLIENT_CPU [1]  DURATION [6] (s per measured phase)
#   WARMUP [1] (s)  WINDOW [64]  PUBLISH [sync]  BATCH [WINDOW, at most 100]  TPUT_N [1000]
#   LAT_N [100]  RATE [200]  PROTOCOL [connect-h2]  PAYLOAD_BYTES [200]
#   QUIET_WAIT [20]  QUIET_PCT [15]  PHASE_TRIES [3]  PHASE_QUIET_WAIT [8]  FOREIGN_MAX [20]
#     (as in bench/run.sh: retry a phase when other processes used more than FOREIGN_MAX % of
#     a pinned core; keep the attempt with the least)
#   PROFILE ["data-dir"] (backends to profile after the rounds; "" for none)  PROFILE_SECONDS [5]
#   BUILD_REV [""]: build the binaries from this git revision (e.g. HEAD, via `git archive`)
#     instead of the working tree, so that others' uncommitted edits are not measured
# Exit code: 0, or 1 if a phase failed (the summary is still written, with failed_phases).
# Only 127.0.0.1 is used. Every wait is bounded; servers are stopped by PID.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"

BACKENDS=${BACKENDS:-"memory data-dir nats-3nodes"}
RUNS=${RUNS:-3}
PORT=${PORT:-28130}
DEBUG_PORT=${DEBUG_PORT:-$(( PORT + 10 ))}
NATS_PORT=${NATS_PORT:-$(( PORT + 20 ))}
NODES=3
SERVER_CPU=${SERVER_CPU:-0}
CLIENT_CPU=${CLIENT_CPU:-1}
DURATION=${DURATION:-6}
WARMUP=${WARMUP:-1}
WINDOW=${WINDOW:-64}
PUBLISH=${PUBLISH:-sync}
BATCH=${BATCH:-$(( WINDOW < 100 ? WINDOW : 100 ))}
TPUT_N=${TPUT_N:-1000}
LAT_N=${LAT_N:-100}
RATE=${RATE:-200}
PROTOCOL=${PROTOCOL:-connect-h2}
PAYLOAD_BYTES=${PAYLOAD_BYTES:-200}
QUIET_WAIT=${QUIET_WAIT:-20}
QUIET_PCT=${QUIET_PCT:-15}
PHASE_TRIES=${PHASE_TRIES:-3}
PHASE_QUIET_WAIT=${PHASE_QUIET_WAIT:-8}
FOREIGN_MAX=${FOREIGN_MAX:-20}
PROFILE=${PROFILE-data-dir}
PROFILE_SECONDS=${PROFILE_SECONDS:-5}

log() { echo "[bench/backends.sh] $*" >&2; }
die() { log "error: $*"; exit 1; }

# ---- check the knobs before spending minutes ----
. "$ROOT/bench/lib.sh"
for v in RUNS PORT DEBUG_PORT NATS_PORT SERVER_CPU CLIENT_CPU WINDOW BATCH TPUT_N LAT_N PAYLOAD_BYTES QUIET_WAIT QUIET_PCT PHASE_TRIES PHASE_QUIET_WAIT FOREIGN_MAX PROFILE_SECONDS; do
  [[ ${!v} =~ ^[0-9]+$ ]] || die "$v: got '${!v}', want an integer"
done
for v in DURATION WARMUP RATE; do isnum "${!v}" || die "$v: got '${!v}', want a number"; done
[ "$RUNS" -ge 1 ] || die "RUNS: got $RUNS, want >= 1"
for b in $BACKENDS $PROFILE; do
  case "$b" in memory|memory-auth|data-dir|nats-3nodes) ;; *) die "BACKENDS/PROFILE: got '$b', want memory, memory-auth, data-dir or nats-3nodes" ;; esac
done
read -r -a BACKEND_LIST <<< "$BACKENDS"
[ "${#BACKEND_LIST[@]}" -ge 1 ] || die "BACKENDS: got none"
for c in taskset timeout go curl; do command -v "$c" > /dev/null || die "$c not found"; done

# 1,000 subscribers hold 1,000 connections on each side.
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true

STAMP=$(date -u +%Y%m%dT%H%M%SZ)
OUT=$ROOT/bench/results/$STAMP
mkdir -p "$OUT/phases" "$OUT/tries" "$OUT/profile" "$OUT/logs"
TMP=$(mktemp -d)
SPIDS=()     # every server process of the running backend: nodes first, nats-server last
NODE_PIDS=() # the actionsync nodes among them
NATS_PID=""

stop_pid() { # $1: pid; SIGTERM, then SIGKILL after 10 s
  local pid=$1 rc=0
  kill -0 "$pid" 2>/dev/null || { wait "$pid" 2>/dev/null || true; return 0; }
  kill -TERM "$pid" 2>/dev/null || true
  for _ in $(seq 1 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
  if kill -0 "$pid" 2>/dev/null; then
    log "warning: process $pid did not stop within 10 s of SIGTERM; killing it"
    kill -KILL "$pid" 2>/dev/null || true
  fi
  wait "$pid" 2>/dev/null || rc=$?
  [ "$rc" = 0 ] || log "warning: process $pid exited with $rc after SIGTERM"
}
stop_backend() {
  # The nodes first (they drain their streams and close their NATS connection), then NATS.
  local pid
  for pid in "${NODE_PIDS[@]}"; do stop_pid "$pid"; done
  [ -z "$NATS_PID" ] || stop_pid "$NATS_PID"
  SPIDS=(); NODE_PIDS=(); NATS_PID=""
}
cleanup() {
  stop_backend
  rm -rf "$TMP"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

log "results in $OUT"
SRC=$ROOT
if [ -n "${BUILD_REV:-}" ]; then
  SRC=$TMP/src
  mkdir -p "$SRC"
  git archive "$BUILD_REV" | tar -x -C "$SRC" || die "BUILD_REV: cannot export '$BUILD_REV'"
fi
log "building actionsync, actionsync-bench and nats-server${BUILD_REV:+ from $BUILD_REV}"
(cd "$SRC" && go build -o "$TMP/actionsync" ./cmd/actionsync && go build -o "$TMP/actionsync-bench" ./cmd/actionsync-bench &&
  go build -o "$TMP/nats-server" github.com/nats-io/nats-server/v2) || die "build failed"

port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
wait_port() { # $1: port, $2: pid, $3: log file; up to 15 s
  for _ in $(seq 1 150); do
    port_open "$1" && return 0
    kill -0 "$2" 2>/dev/null || break
    sleep 0.1
  done
  log "process $2 did not open port $1:"; tail -20 "$3" >&2
  exit 1
}
STARTS=0
start_node() { # $1: node number (1..), rest: extra serve flags
  local i=$1; shift
  local port=$(( PORT + i - 1 )) dport=$(( DEBUG_PORT + i - 1 ))
  local logf="$OUT/logs/server-$STARTS-node$i.log"
  port_open "$port" && die "127.0.0.1:$port is already in use; set PORT"
  # taskset execs env, env execs actionsync: $! is the server's PID.
  taskset -c "$SERVER_CPU" env GOMAXPROCS=1 "$TMP/actionsync" serve --addr "127.0.0.1:$port" \
    --debug-addr "127.0.0.1:$dport" --demo=false --log-level warn "$@" > "$logf" 2>&1 &
  local pid=$!
  SPIDS+=("$pid"); NODE_PIDS+=("$pid")
  # The broker is ready before the port opens; the debug port opens right after.
  wait_port "$port" "$pid" "$logf"
  wait_port "$dport" "$pid" "$logf"
}
start_backend() { # $1: backend, $2: round
  local backend=$1 round=$2
  STARTS=$((STARTS + 1))
  case "$backend" in
    memory)
      start_node 1 ;;
    memory-auth)
      [ -s "$TMP/secret" ] || head -c 48 /dev/urandom | base64 > "$TMP/secret"
      start_node 1 --auth-hs256-secret-file "$TMP/secret" --dispatch-rate 0 --max-streams-per-identity 0 ;;
    data-dir)
      start_node 1 --data-dir "$TMP/data-$STARTS" ;;
    nats-3nodes)
      local logf="$OUT/logs/server-$STARTS-nats.log"
      port_open "$NATS_PORT" && die "127.0.0.1:$NATS_PORT is already in use; set NATS_PORT"
      taskset -c "$SERVER_CPU" env GOMAXPROCS=1 "$TMP/nats-server" -js -sd "$TMP/nats-$STARTS" \
        -a 127.0.0.1 -p "$NATS_PORT" > "$logf" 2>&1 &
      NATS_PID=$!
      wait_port "$NATS_PORT" "$NATS_PID" "$logf"
      # One node after the other: the first creates the stream, the others find it.
      local i
      for i in $(seq 1 "$NODES"); do
        start_node "$i" --broker nats --nats-url "nats://127.0.0.1:$NATS_PORT"
      done
      SPIDS+=("$NATS_PID") ;;
  esac
  log "round $round: $backend up (server pids ${SPIDS[*]} on cpu $SERVER_CPU)"
}
# The tool's view of the running backend.
pids_arg() { local IFS=,; echo "${SPIDS[*]}"; }
sub_urls_arg() {
  local n=$(( ${#NODE_PIDS[@]} )) i urls=()
  for i in $(seq 1 "$n"); do urls+=("http://127.0.0.1:$(( PORT + i - 1 ))"); done
  local IFS=,; echo "${urls[*]}"
}

# bench FILE LABEL ARGS...: one actionsync-bench call (bounded), its line in FILE.
PHASE_TIMEOUT=$(( ${DURATION%.*} + ${WARMUP%.*} + 300 ))
bench() {
  local file=$1 label=$2; shift 2
  local rc=0 auth=()
  [ "$label" = memory-auth ] && auth=(--token-secret-file "$TMP/secret")
  timeout -k 5 "$PHASE_TIMEOUT" taskset -c "$CLIENT_CPU" "$TMP/actionsync-bench" \
    --label "$label" --url "http://127.0.0.1:$PORT" --sub-urls "$(sub_urls_arg)" \
    --server-pid "$(pids_arg)" --server-cpu "$SERVER_CPU" --client-cpu "$CLIENT_CPU" \
    --protocol "$PROTOCOL" --payload-bytes "$PAYLOAD_BYTES" "${auth[@]}" "$@" > "$file" 2> >(tee -a "$OUT/logs/bench.log" >&2) || rc=$?
  return "$rc"
}

# phase NAME LABEL ARGS...: a measured phase, saved as phases/NAME.json and printed. Retried
# (at most PHASE_TRIES) while other processes used more than FOREIGN_MAX % of a pinned core;
# the attempt with the least foreign load is kept. A failed check is not retried: it is a result.
phase() {
  local name=$1 label=$2; shift 2
  local t f best=1000 bt=0 rc try
  for t in $(seq 1 "$PHASE_TRIES"); do
    wait_quiet "$PHASE_QUIET_WAIT"
    try="$OUT/tries/$name.$t.json"
    rc=0
    bench "$try" "$label" "$@" || rc=$?
    if [ "$rc" != 0 ]; then
      fail_phase "$name" "exit $rc"
      if [ -s "$try" ]; then cp "$try" "$OUT/phases/$name.json"; cat "$try"; fi
      return 0
    fi
    f=$(foreign_of "$try")
    if [ "$f" -lt "$best" ]; then best=$f; bt=$t; cp "$try" "$OUT/phases/$name.json"; fi
    [ "$f" -le "$FOREIGN_MAX" ] && break
    log "$name: foreign load ${f}% on pinned CPUs; retrying"
  done
  log "$name: kept attempt $bt of $t (foreign ${best}%)"
  cat "$OUT/phases/$name.json"
}

tput_args() { echo --mode tput --n "$TPUT_N" --window "$WINDOW" --publish "$PUBLISH" --batch "$BATCH"; }
lat_args() { echo --mode lat --n "$LAT_N" --rate "$RATE"; }

wait_quiet "$QUIET_WAIT"
PRE0=$PRE_BUSY0; PRE1=$PRE_BUSY1
log "pre-run busy: cpu$SERVER_CPU ${PRE0}%  cpu$CLIENT_CPU ${PRE1}%"
T_START=$SECONDS

# ---- RUNS rounds; each runs every backend once, the order rotating ----
NB=${#BACKEND_LIST[@]}
for round in $(seq 1 "$RUNS"); do
  for k in $(seq 0 $(( NB - 1 ))); do
    backend=${BACKEND_LIST[$(( (round - 1 + k) % NB ))]}
    start_backend "$backend" "$round"
    # shellcheck disable=SC2046 # the args are words
    phase "tput_$TPUT_N.$backend.r$round" "$backend" $(tput_args) --duration "$DURATION" --warmup "$WARMUP"
    # shellcheck disable=SC2046
    phase "lat_$LAT_N.$backend.r$round" "$backend" $(lat_args) --duration "$DURATION" --warmup "$WARMUP"
    stop_backend
  done
  log "round $round done after $((SECONDS - T_START)) s"
done

# ---- where the time goes: a CPU profile of node 1 during a tput phase ----
for backend in $PROFILE; do
  start_backend "$backend" profile
  pdur=$(( PROFILE_SECONDS + 2 ))
  wait_quiet "$PHASE_QUIET_WAIT"
  seen=$(grep -c "connected $TPUT_N subscribers" "$OUT/logs/bench.log" 2>/dev/null || true)
  # shellcheck disable=SC2046
  bench "$OUT/profile/tput_$TPUT_N.$backend.json" "$backend" $(tput_args) --duration "$pdur" --warmup "$WARMUP" &
  BPID=$!
  # Start the profile once the subscribers are connected and the warm-up is over (at most 60 s).
  for _ in $(seq 1 600); do
    now=$(grep -c "connected $TPUT_N subscribers" "$OUT/logs/bench.log" 2>/dev/null || true)
    [ "${now:-0}" -gt "${seen:-0}" ] && break
    kill -0 "$BPID" 2>/dev/null || break
    sleep 0.1
  done
  sleep "$WARMUP"
  prof="$OUT/profile/cpu.$backend.pb.gz"
  if curl -sf --max-time $(( PROFILE_SECONDS + 30 )) -o "$prof" \
      "http://127.0.0.1:$DEBUG_PORT/debug/pprof/profile?seconds=$PROFILE_SECONDS"; then
    go tool pprof -top -nodecount=40 "$TMP/actionsync" "$prof" > "$OUT/profile/top.$backend.txt" 2>/dev/null || true
    go tool pprof -top -cum -nodecount=60 "$TMP/actionsync" "$prof" > "$OUT/profile/top-cum.$backend.txt" 2>/dev/null || true
    log "profile of $backend node 1: $OUT/profile/top.$backend.txt"
    sed -n 1,25p "$OUT/profile/top.$backend.txt" >&2
  else
    fail_phase "profile.$backend" "no profile from 127.0.0.1:$DEBUG_PORT"
  fi
  rc=0; wait "$BPID" || rc=$?
  [ "$rc" = 0 ] || fail_phase "profile.$backend" "its tput phase exited $rc"
  stop_backend
done

# ---- the summary ----
if [ -n "${BUILD_REV:-}" ]; then
  GIT_REV=$(git rev-parse --short "$BUILD_REV" 2>/dev/null || echo "$BUILD_REV")
else
  GIT_REV=$(git rev-parse --short HEAD 2>/dev/null || echo unknown)
  if [ -n "$(git status --porcelain -- cmd service broker gen go.mod go.sum 2>/dev/null)" ]; then GIT_REV="$GIT_REV+dirty"; fi
fi
HOST=$(sed -n 's/^model name[[:space:]]*:[[:space:]]*//p' /proc/cpuinfo | head -1 | tr -d '"\\')
GOV=$(go env GOVERSION)
printf '{"time":"%s","git":"%s","host":"%s, %s CPUs","go":"%s","servers":"taskset -c %s env GOMAXPROCS=1 (each node and nats-server)","knobs":{"backends":"%s","runs":%s,"publish":"%s","batch":%s,"window":%s,"tput_n":%s,"lat_n":%s,"rate":%s,"duration":%s,"warmup":%s,"protocol":"%s","payload_bytes":%s},"pre_busy_cpu_pct":[%s,%s],"took_s":%s}\n' \
  "$STAMP" "$GIT_REV" "$HOST" "$(nproc)" "$GOV" "$SERVER_CPU" "$BACKENDS" "$RUNS" "$PUBLISH" "$BATCH" "$WINDOW" \
  "$TPUT_N" "$LAT_N" "$RATE" "$DURATION" "$WARMUP" "$PROTOCOL" "$PAYLOAD_BYTES" "$PRE0" "$PRE1" "$((SECONDS - T_START))" > "$OUT/meta.json"
"$TMP/actionsync-bench" --mode compare --dir "$OUT" > "$OUT/summary.json" 2> "$OUT/summary.txt"
cat "$OUT/summary.txt" >&2
cat "$OUT/summary.json"
if [ -s "$OUT/failed.txt" ]; then
  log "failed phases: $(tr '\n' ' ' < "$OUT/failed.txt")"
  exit 1
fi

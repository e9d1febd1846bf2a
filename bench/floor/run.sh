#!/usr/bin/env bash
# The net/http floor of the "many small boards" workload (see README.md): builds
# bench/floor and runs, in each of RUNS rounds, every configuration once against a fresh
# server, in an order that rotates from round to round:
#
#   fanout-<design>-<protocol>   BOARDS boards x PER_BOARD subscribers, RATE publishes/s
#   unary-<protocol>             RATE publishes/s and no subscriber (server µs per request)
#
# for each protocol in PROTOCOLS and design in DESIGNS. The server runs as
# `taskset -c SERVER_CPU env GOMAXPROCS=1 floor serve`, the load on CLIENT_CPU.
#
#   bash bench/floor/run.sh     # progress on stderr; the machine, one JSON line per run
#                               # and one summary line per configuration on stdout
#
# Knobs (defaults in brackets): BOARDS [1000]  PER_BOARD [4]  RATE [2000]  RUNS [3]
#   DURATION [6] (s)  WARMUP [1] (s)  PROTOCOLS ["h1 h2c"]  DESIGNS ["queue"] (or
#   "queue direct")  PORT [18500] (keep it below the ephemeral range, which the 4,000
#   client connections use)  SERVER_CPU [0]  CLIENT_CPU [1]  QUIET_WAIT [10] (s)  QUIET_PCT [15]
#   OUT [a new temporary directory]
# Before each run it waits up to QUIET_WAIT s for both pinned cores to be under QUIET_PCT%
# busy, then runs anyway; srv_core_busy_pct in each line tells how busy the server's core
# was during the window, whoever used it.
# The summary (jq) gives the median, min and max of each figure over the rounds.
# Exit 1 if a run failed its delivery check or did not run.
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
BOARDS=${BOARDS:-1000}
PER_BOARD=${PER_BOARD:-4}
RATE=${RATE:-2000}
RUNS=${RUNS:-3}
DURATION=${DURATION:-6}
WARMUP=${WARMUP:-1}
PROTOCOLS=${PROTOCOLS:-h1 h2c}
DESIGNS=${DESIGNS:-queue}
PORT=${PORT:-18500}
SERVER_CPU=${SERVER_CPU:-0}
CLIENT_CPU=${CLIENT_CPU:-1}
QUIET_WAIT=${QUIET_WAIT:-10}
QUIET_PCT=${QUIET_PCT:-15}
OUT=${OUT:-$(mktemp -d "${TMPDIR:-/tmp}/floor-XXXXXX")}

log() { printf '[bench/floor/run.sh] %s\n' "$*" >&2; }
die() { log "$*"; exit 2; }
for c in go taskset timeout jq; do command -v "$c" > /dev/null || die "$c not found"; done
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
mkdir -p "$OUT"
SPID=""
stop_server() {
  [ -n "$SPID" ] || return 0
  kill -TERM "$SPID" 2>/dev/null || true
  # Wait for it to exit, so that the next server can take the port.
  for _ in $(seq 1 100); do kill -0 "$SPID" 2>/dev/null || break; sleep 0.1; done
  kill -KILL "$SPID" 2>/dev/null || true
  wait "$SPID" 2>/dev/null || true
  SPID=""
}
trap stop_server EXIT
trap 'exit 130' INT TERM
wait_port() { # $1: log file
  for _ in $(seq 1 100); do
    (exec 3<>"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null && return 0
    kill -0 "$SPID" 2>/dev/null || { cat "$1" >&2; die "server exited during start-up"; }
    sleep 0.1
  done
  die "server not listening on $PORT after 10 s"
}
busy_pct() { # $1, $2: cpu numbers -> the busy % of each over one second
  local a b
  a=$(awk -v c0="cpu$1" -v c1="cpu$2" '$1==c0||$1==c1 {print $2+$3+$4+$7+$8+$9, $2+$3+$4+$5+$6+$7+$8+$9}' /proc/stat)
  sleep 1
  b=$(awk -v c0="cpu$1" -v c1="cpu$2" '$1==c0||$1==c1 {print $2+$3+$4+$7+$8+$9, $2+$3+$4+$5+$6+$7+$8+$9}' /proc/stat)
  paste <(echo "$a") <(echo "$b") | awk '{d = $4 - $2; printf "%d ", (d > 0 ? 100 * ($3 - $1) / d : 0)}'
}
wait_quiet() {
  local i busy
  for i in $(seq 1 "$QUIET_WAIT"); do
    read -r -a busy <<< "$(busy_pct "$SERVER_CPU" "$CLIENT_CPU")"
    [ "${busy[0]}" -lt "$QUIET_PCT" ] && [ "${busy[1]:-0}" -lt "$QUIET_PCT" ] && return 0
    [ "$i" = 1 ] && log "pinned cores busy (${busy[*]}%); waiting up to ${QUIET_WAIT}s for quiet"
  done
  return 0
}

log "building floor; results in $OUT"
(cd "$HERE" && go build -o "$OUT/floor" .)
jq -nc --arg cpu "$(lscpu | sed -n 's/^Model name: *//p' | head -1)" --arg kernel "$(uname -r)" \
  --arg go "$(go version)" --arg nproc "$(nproc)" \
  '{machine: {model_name: $cpu, kernel: $kernel, go: $go, nproc: ($nproc | tonumber)}}' | tee "$OUT/machine.json"

configs=()
for d in $DESIGNS; do for p in $PROTOCOLS; do configs+=("fanout-$d-$p"); done; done
for p in $PROTOCOLS; do configs+=("unary-$p"); done
failed=0
for round in $(seq 1 "$RUNS"); do
  n=${#configs[@]}
  for k in $(seq 0 $((n - 1))); do
    label=${configs[$(( (k + round - 1) % n ))]}
    IFS=- read -r kind design protocol <<< "$label"
    if [ "$kind" = unary ]; then protocol=$design; design=queue; per_board=0; else per_board=$PER_BOARD; fi
    wait_quiet
    log "round $round: $label"
    taskset -c "$SERVER_CPU" env GOMAXPROCS=1 "$OUT/floor" serve --addr "127.0.0.1:$PORT" --design "$design" \
      > "$OUT/$label-$round.log" 2>&1 &
    SPID=$!
    wait_port "$OUT/$label-$round.log"
    rc=0
    timeout -k 5 300 taskset -c "$CLIENT_CPU" "$OUT/floor" load --url "http://127.0.0.1:$PORT" \
      --protocol "$protocol" --boards "$BOARDS" --per-board "$per_board" --rate "$RATE" \
      --duration "$DURATION" --warmup "$WARMUP" --server-pid "$SPID" --server-cpu "$SERVER_CPU" \
      --label "$label" > "$OUT/$label-$round.json" 2>> "$OUT/load.log" || rc=$?
    stop_server
    [ "$rc" = 0 ] || { log "$label round $round: exit $rc"; failed=1; }
    cat "$OUT/$label-$round.json"
  done
done

# One line per configuration: median, min and max over the rounds of each figure.
cat "$OUT"/*-[0-9]*.json | jq -sc '
  def stat(f): [.[] | f | select(. != null)] | sort
    | if length == 0 then null else {median: .[(length - 1) / 2 | floor], min: .[0], max: .[-1]} end;
  group_by(.label)[] | {
    label: .[0].label, runs: length, ok: all(.ok),
    srv_cpu_us_per_delivery: stat(.srv_cpu_us_per_delivery),
    srv_deliv_per_cpu_s: stat(.srv_deliv_per_cpu_s),
    srv_cpu_us_per_request: stat(.srv_cpu_us_per_request),
    server_cpu_pct: stat(.server_cpu_pct),
    srv_core_busy_pct: stat(.srv_core_busy_pct),
    p50_ms: stat(.p50_ms), p99_ms: stat(.p99_ms),
    achieved_rate: stat(.achieved_rate)
  }' | tee "$OUT/summary.jsonl"
exit "$failed"

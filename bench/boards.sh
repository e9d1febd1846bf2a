#!/usr/bin/env bash
# Many small boards, side by side: actionsync and the Socket.IO peer
# (../shared/peers/socketio, its --mode boards) with the same workload, in the same run, on
# the same pinned cores. C boards (channels, rooms) with P subscribers each, every one on
# its own connection; one publisher sending RATE actions/s in total to random boards, one
# action per request (a unary Dispatch; a Socket.IO emit with an ack). Each side checks
# that every subscriber got its board's actions exactly once, in order.
#
#   bash bench/boards.sh     # progress on stderr; one JSON line per phase and a summary on stdout
#
# Each of RUNS rounds starts a fresh actionsync server (`taskset -c SERVER_CPU env
# GOMAXPROCS=1 actionsync serve`) and runs actionsync-bench --mode lat --boards C, then a
# fresh peer server (`taskset -c SERVER_CPU node server.js`) and the peer's bench.js --mode
# boards; the load runs on CLIENT_CPU. The summary gives, for each side, the median, min
# and max over the rounds of deliveries per server CPU-second, server CPU and p99, and
# actionsync's share of the peer's deliveries per server CPU-second.
#
# Knobs (defaults in brackets): CHANNELS [1000]  PER_CHANNEL [4]  RATE [2000]  RUNS [3]
#   DURATION [6] (s)  WARMUP [1] (s)  INFLIGHT [64] (the peer's publishes in flight)
#   PORT [18400] (actionsync; the peer uses PORT+1)  SERVER_CPU [0]  CLIENT_CPU [1]
#   QUIET_WAIT [10]  QUIET_PCT [15]  SKIP_PEER [0]  PEER_DIR [../shared/peers/socketio]
# Saved under bench/results/boards-<timestamp>/ (gitignored). Exit 1 if a phase failed.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
CHANNELS=${CHANNELS:-1000}
PER_CHANNEL=${PER_CHANNEL:-4}
RATE=${RATE:-2000}
RUNS=${RUNS:-3}
DURATION=${DURATION:-6}
WARMUP=${WARMUP:-1}
INFLIGHT=${INFLIGHT:-64}
PORT=${PORT:-18400}
SERVER_CPU=${SERVER_CPU:-0}
CLIENT_CPU=${CLIENT_CPU:-1}
QUIET_WAIT=${QUIET_WAIT:-10}
QUIET_PCT=${QUIET_PCT:-15}
SKIP_PEER=${SKIP_PEER:-0}
PEER_DIR=${PEER_DIR:-$ROOT/../shared/peers/socketio}

log() { printf '[bench/boards.sh] %s\n' "$*" >&2; }
die() { log "$*"; exit 2; }
# shellcheck source=bench/lib.sh
. "$ROOT/bench/lib.sh"
for v in CHANNELS PER_CHANNEL RUNS PORT INFLIGHT; do [[ ${!v} =~ ^[0-9]+$ ]] || die "$v: got '${!v}', want an integer"; done
for v in RATE DURATION WARMUP; do isnum "${!v}" || die "$v: got '${!v}', want a number"; done
for c in taskset timeout go node; do command -v "$c" > /dev/null || die "$c not found"; done
[ "$SKIP_PEER" = 1 ] || [ -f "$PEER_DIR/bench.js" ] || die "peer benchmark not found in $PEER_DIR; set SKIP_PEER=1 to run without it"
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true

OUT=$ROOT/bench/results/boards-$(date -u +%Y%m%dT%H%M%SZ)
mkdir -p "$OUT"
TMP=$(mktemp -d)
SPID=""
stop_server() {
  [ -n "$SPID" ] || return 0
  kill -TERM "$SPID" 2>/dev/null || true
  for _ in $(seq 1 100); do kill -0 "$SPID" 2>/dev/null || break; sleep 0.1; done
  kill -KILL "$SPID" 2>/dev/null || true
  wait "$SPID" 2>/dev/null || true
  SPID=""
}
trap 'stop_server; rm -rf "$TMP"' EXIT
trap 'exit 130' INT TERM
wait_port() { # $1: port, $2: log file
  for _ in $(seq 1 100); do
    (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0
    kill -0 "$SPID" 2>/dev/null || { cat "$2" >&2; die "server exited during start-up"; }
    sleep 0.1
  done
  die "server not listening on $1 after 10 s"
}

log "building actionsync and actionsync-bench; results in $OUT"
go build -o "$TMP/actionsync" ./cmd/actionsync
go build -o "$TMP/actionsync-bench" ./cmd/actionsync-bench
if [ "$SKIP_PEER" != 1 ]; then
  mkdir -p "$TMP/peer"
  cp -R "$PEER_DIR/." "$TMP/peer/"
  chmod -R u+w "$TMP/peer"
  if [ ! -f "$TMP/peer/node_modules/socket.io/package.json" ]; then
    log "installing the peer's dependencies (npm ci)"
    (cd "$TMP/peer" && npm ci --no-audit --no-fund --loglevel=error >&2)
  fi
fi

N=$(( CHANNELS * PER_CHANNEL ))
failed=0
for round in $(seq 1 "$RUNS"); do
  wait_quiet "$QUIET_WAIT"
  taskset -c "$SERVER_CPU" env GOMAXPROCS=1 "$TMP/actionsync" serve --addr "127.0.0.1:$PORT" \
    --log-level warn --demo=false > "$OUT/actionsync-$round.log" 2>&1 &
  SPID=$!
  wait_port "$PORT" "$OUT/actionsync-$round.log"
  rc=0
  timeout -k 5 300 taskset -c "$CLIENT_CPU" "$TMP/actionsync-bench" --url "http://127.0.0.1:$PORT" \
    --server-pid "$SPID" --server-cpu "$SERVER_CPU" --client-cpu "$CLIENT_CPU" --label actionsync \
    --mode lat --n "$N" --boards "$CHANNELS" --rate "$RATE" --duration "$DURATION" --warmup "$WARMUP" \
    > "$OUT/actionsync-$round.json" 2>> "$OUT/bench.log" || rc=$?
  stop_server
  [ "$rc" = 0 ] || { log "actionsync round $round: exit $rc"; failed=1; }
  cat "$OUT/actionsync-$round.json"
  [ "$SKIP_PEER" = 1 ] && continue

  wait_quiet "$QUIET_WAIT"
  (cd "$TMP/peer" && exec taskset -c "$SERVER_CPU" node server.js "$((PORT + 1))") > "$OUT/peer-$round.log" 2>&1 &
  SPID=$!
  wait_port "$((PORT + 1))" "$OUT/peer-$round.log"
  rc=0
  (cd "$TMP/peer" && timeout -k 5 300 taskset -c "$CLIENT_CPU" node bench.js --port "$((PORT + 1))" --server-pid "$SPID" \
    --server-cpu "$SERVER_CPU" --client-cpu "$CLIENT_CPU" --mode boards --channels "$CHANNELS" --per-channel "$PER_CHANNEL" \
    --rate "$RATE" --inflight "$INFLIGHT" --duration "$DURATION" --warmup "$WARMUP") \
    > "$OUT/peer-$round.json" 2>> "$OUT/bench.log" || rc=$?
  stop_server
  [ "$rc" = 0 ] || { log "peer round $round: exit $rc"; failed=1; }
  cat "$OUT/peer-$round.json"
done

# The summary: medians and ranges per side, and actionsync's share of the peer's figure.
node -e '
const fs = require("fs"), dir = process.argv[1], runs = +process.argv[2];
const read = (side) => [...Array(runs).keys()].map((i) => { try { return JSON.parse(fs.readFileSync(`${dir}/${side}-${i + 1}.json`, "utf8")); } catch { return null; } }).filter(Boolean);
const stat = (xs) => { xs = xs.filter((x) => typeof x === "number").sort((a, b) => a - b); return xs.length ? { median: xs[Math.floor((xs.length - 1) / 2)], min: xs[0], max: xs.at(-1), runs: xs } : null; };
const ours = read("actionsync"), peer = read("peer");
const out = {
  workload: { channels: +process.argv[3], per_channel: +process.argv[4], rate: +process.argv[5], runs },
  actionsync: { srv_deliv_per_cpu_s: stat(ours.map((r) => r.srv_deliv_per_cpu_s)), server_cpu_pct: stat(ours.map((r) => r.server_cpu_pct)), p99_ms: stat(ours.map((r) => r.p99_ms)), violations: ours.reduce((s, r) => s + (r.violations ?? 1), 0) },
  peer: { srv_deliv_per_cpu_s: stat(peer.map((r) => r.deliveries_per_server_cpu_s)), server_cpu_pct: stat(peer.map((r) => r.server_core_util * 100)), p99_ms: stat(peer.map((r) => r.p99_ms)), violations: peer.reduce((s, r) => s + r.lost + r.extra + r.dups_or_reorders + r.gaps, 0) },
};
const a = out.actionsync.srv_deliv_per_cpu_s, p = out.peer.srv_deliv_per_cpu_s;
if (a && p) out.share_of_peer = Math.round((a.median / p.median) * 1000) / 1000;
fs.writeFileSync(`${dir}/summary.json`, JSON.stringify(out) + "\n");
console.log(JSON.stringify(out));
' "$OUT" "$RUNS" "$CHANNELS" "$PER_CHANNEL" "$RATE"
exit "$failed"

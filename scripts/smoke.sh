#!/usr/bin/env bash
# smoke.sh: build actionsync, start it on a free port, and drive every RPC with the
# pinned buf CLI (npx --no-install buf, @bufbuild/buf from package.json) and curl:
# reflection, health, Dispatch (+ idempotent retry), Subscribe, History, snapshots
# (PutSnapshot, Subscribe with snapshots, GetSnapshot, DeleteSnapshot and GetStats on
# --admin-addr, /readyz),
# bidi Sync over gRPC/h2c, a refused request, CORS, then SIGTERM with a stream open.
#
# Usage: bash scripts/smoke.sh   (from anywhere; needs go, node_modules, curl, timeout)
# Exits non-zero at the first failed check, printing the server log.
set -euo pipefail

cd "$(dirname "$0")/.."
tmp=$(mktemp -d)
server_pid=""
url=""
origin="http://localhost:5173"

cleanup() {
	if [[ -n $server_pid ]] && kill -0 "$server_pid" 2>/dev/null; then
		kill -KILL "$server_pid" 2>/dev/null || true
	fi
	rm -rf "$tmp"
}
trap cleanup EXIT

step() { printf '==> %s\n' "$*"; }
ok() { printf '    ok: %s\n' "$*"; }
fail() {
	printf 'FAIL: %s\n' "$*" >&2
	if [[ -f $tmp/server.log ]]; then
		printf -- '--- server log ---\n' >&2
		cat "$tmp/server.log" >&2
	fi
	exit 1
}
# expect WHAT REGEX FILE: fail unless FILE has a line matching the extended REGEX.
expect() {
	grep -Eq -- "$2" "$3" || fail "$1: output lacks /$2/; got:"$'\n'"$(cat "$3")"
	ok "$1"
}
bufc() { npx --no-install buf curl "$@"; }

[[ -x node_modules/.bin/buf ]] || fail "node_modules/.bin/buf missing: run 'npm ci' first"
step "buf $(npx --no-install buf --version)"

step "build cmd/actionsync"
go build -ldflags "-X main.version=smoke" -o "$tmp/actionsync" ./cmd/actionsync || fail "go build"
"$tmp/actionsync" version >"$tmp/version.out"
expect "version from -ldflags" '^actionsync smoke \(go1\.' "$tmp/version.out"
rc=0
"$tmp/actionsync" serve --history-size -1 >/dev/null 2>"$tmp/badflag.out" || rc=$?
[[ $rc == 2 ]] || fail "bad flag: got exit code $rc, want 2"
expect "bad flag exits 2 naming flag and variable" 'history-size \(ACTIONSYNC_HISTORY_SIZE\)' "$tmp/badflag.out"

step "start the server on a free port"
# Port 0: the kernel picks a free port; the start-up log line tells which.
"$tmp/actionsync" serve --addr 127.0.0.1:0 --admin-addr 127.0.0.1:0 --cors-origins "$origin" --shutdown-timeout 10s \
	>"$tmp/server.log" 2>&1 &
server_pid=$!
for _ in $(seq 1 100); do
	url=$(sed -n 's/.*msg="actionsync listening".* url=\([^ ]*\).*/\1/p' "$tmp/server.log")
	[[ -n $url ]] && break
	kill -0 "$server_pid" 2>/dev/null || fail "server exited during start-up"
	sleep 0.1
done
[[ -n $url ]] || fail "server not listening after 10s"
ok "listening at $url"
admin_url=$(sed -n 's/.*msg="actionsync admin listener".* url=\([^ ]*\).*/\1/p' "$tmp/server.log")
[[ -n $admin_url ]] || fail "no admin listener logged"
ok "admin listener at $admin_url"

step "buf curl --list-methods (reflection, h2c)"
bufc --http2-prior-knowledge --list-methods "$url" >"$tmp/methods.out" 2>&1 || fail "list-methods:"$'\n'"$(cat "$tmp/methods.out")"
for m in Dispatch Subscribe Sync History PutSnapshot GetSnapshot; do
	expect "lists SyncService/$m" "^actionsync\.v1\.SyncService/$m\$" "$tmp/methods.out"
done
expect "lists grpc.health.v1.Health/Check" '^grpc\.health\.v1\.Health/Check$' "$tmp/methods.out"

step "health check (grpc.health.v1.Health/Check over gRPC)"
bufc --http2-prior-knowledge --protocol grpc "$url/grpc.health.v1.Health/Check" >"$tmp/health.out" 2>&1 ||
	fail "health:"$'\n'"$(cat "$tmp/health.out")"
expect "status SERVING" '"status": *"SERVING"' "$tmp/health.out"

dispatch='{"channel":"board:demo","client_id":"smoke","actions":[{"id":"a1","type":"UPDATE_STAGE_TITLE","payload":{"stageId":"s1","stageTitle":"Todo"}}]}'
step "Dispatch (Connect, HTTP/1.1)"
bufc -d "$dispatch" "$url/actionsync.v1.SyncService/Dispatch" >"$tmp/dispatch.out" 2>&1 ||
	fail "Dispatch:"$'\n'"$(cat "$tmp/dispatch.out")"
expect "ack seq \"1\" (uint64 is a JSON string)" '"seq": *"1"' "$tmp/dispatch.out"
if grep -q '"duplicate"' "$tmp/dispatch.out"; then fail "first dispatch marked duplicate"; fi

step "Dispatch again with the same action id (idempotent)"
bufc -d "$dispatch" "$url/actionsync.v1.SyncService/Dispatch" >"$tmp/dispatch2.out" 2>&1 ||
	fail "Dispatch again:"$'\n'"$(cat "$tmp/dispatch2.out")"
expect "duplicate true" '"duplicate": *true' "$tmp/dispatch2.out"
expect "original seq \"1\"" '"seq": *"1"' "$tmp/dispatch2.out"

step "Subscribe from the start (server stream, 3s)"
rc=0
timeout 3 npx --no-install buf curl -d '{"positions":[{"channel":"board:demo","after_seq":0}]}' \
	"$url/actionsync.v1.SyncService/Subscribe" >"$tmp/subscribe.out" 2>&1 || rc=$?
[[ $rc == 124 ]] || fail "Subscribe ended early (exit $rc):"$'\n'"$(cat "$tmp/subscribe.out")"
expect "replays UPDATE_STAGE_TITLE" '"type": *"UPDATE_STAGE_TITLE"' "$tmp/subscribe.out"
expect "stamps the client id" '"clientId": *"smoke"' "$tmp/subscribe.out"
expect "sends ready" '"ready": *\{' "$tmp/subscribe.out"

step "History"
bufc -d '{"channel":"board:demo"}' "$url/actionsync.v1.SyncService/History" >"$tmp/history.out" 2>&1 ||
	fail "History:"$'\n'"$(cat "$tmp/history.out")"
expect "head seq \"1\"" '"headSeq": *"1"' "$tmp/history.out"
expect "returns the action" '"id": *"a1"' "$tmp/history.out"

step "Snapshots: PutSnapshot, Subscribe with snapshots, GetSnapshot, DeleteSnapshot (admin listener)"
epoch=$(sed -n 's/.*"epoch": *"\([^"]*\)".*/\1/p' "$tmp/subscribe.out" | head -1)
[[ -n $epoch ]] || fail "no epoch in the Subscribe output"
state=$(printf '{"stages":{"s1":"Todo"}}' | base64 | tr -d '\n') # bytes are base64 in JSON
bufc -d "{\"channel\":\"board:demo\",\"seq\":1,\"epoch\":\"$epoch\",\"version\":\"board/v1\",\"state\":\"$state\"}" \
	"$url/actionsync.v1.SyncService/PutSnapshot" >"$tmp/put.out" 2>&1 || fail "PutSnapshot:"$'\n'"$(cat "$tmp/put.out")"
expect "stored at seq \"1\"" '"seq": *"1"' "$tmp/put.out"
rc=0
bufc -d "{\"channel\":\"board:demo\",\"seq\":1,\"epoch\":\"$epoch\",\"state\":\"$state\"}" \
	"$url/actionsync.v1.SyncService/PutSnapshot" >"$tmp/put2.out" 2>&1 || rc=$?
[[ $rc != 0 ]] || fail "a snapshot at the seq held was accepted"
expect "not newer: already_exists" '"code": *"already_exists"' "$tmp/put2.out"
rc=0
timeout 3 npx --no-install buf curl -d '{"positions":[{"channel":"board:demo"}],"snapshots":true}' \
	"$url/actionsync.v1.SyncService/Subscribe" >"$tmp/subsnap.out" 2>&1 || rc=$?
[[ $rc == 124 ]] || fail "Subscribe with snapshots ended early (exit $rc):"$'\n'"$(cat "$tmp/subsnap.out")"
expect "starts from the snapshot" "\"state\": *\"$state\"" "$tmp/subsnap.out"
expect "then ready" '"ready": *\{' "$tmp/subsnap.out"
bufc -d '{"channel":"board:demo"}' "$url/actionsync.v1.SyncService/GetSnapshot" >"$tmp/get.out" 2>&1 ||
	fail "GetSnapshot:"$'\n'"$(cat "$tmp/get.out")"
expect "GetSnapshot returns it" '"version": *"board/v1"' "$tmp/get.out"
rc=0
bufc -d '{"channel":"board:demo"}' "$url/actionsync.v1.AdminService/DeleteSnapshot" >"$tmp/del0.out" 2>&1 || rc=$?
[[ $rc != 0 ]] || fail "DeleteSnapshot was served on the API address"
bufc --http2-prior-knowledge -d '{"channel":"board:demo","seq":1}' "$admin_url/actionsync.v1.AdminService/DeleteSnapshot" >"$tmp/del.out" 2>&1 ||
	fail "DeleteSnapshot:"$'\n'"$(cat "$tmp/del.out")"
expect "deleted the snapshot at seq \"1\"" '"seq": *"1"' "$tmp/del.out"
bufc --http2-prior-knowledge -d '{"channel_prefix":"board:demo"}' "$admin_url/actionsync.v1.AdminService/GetStats" >"$tmp/stats.out" 2>&1 ||
	fail "GetStats:"$'\n'"$(cat "$tmp/stats.out")"
expect "GetStats lists board:demo" '"channel": *"board:demo"' "$tmp/stats.out"
curl -fsS "$url/readyz" >"$tmp/readyz.out" 2>&1 || fail "GET /readyz:"$'\n'"$(cat "$tmp/readyz.out")"
ok "GET /readyz answers 200"

step "Presence: a subscriber with presence is listed by GetPresence"
timeout 8 npx --no-install buf curl -d '{"positions":[{"channel":"board:presence"}],"client_id":"smoke-p","presence":{"info":{"name":"Smoke"}}}' \
	"$url/actionsync.v1.SyncService/Subscribe" >"$tmp/psub.out" 2>&1 &
psub=$!
listed=0
for _ in $(seq 1 20); do
	bufc -d '{"channel":"board:presence"}' "$url/actionsync.v1.SyncService/GetPresence" >"$tmp/pres.out" 2>&1 ||
		fail "GetPresence:"$'\n'"$(cat "$tmp/pres.out")"
	if grep -q '"clientId": *"smoke-p"' "$tmp/pres.out"; then listed=1; break; fi
	sleep 0.3
done
[[ $listed == 1 ]] || fail "GetPresence never listed smoke-p:"$'\n'"$(cat "$tmp/pres.out")"$'\n'"$(cat "$tmp/psub.out")"
ok "GetPresence lists the subscriber"
kill "$psub" 2>/dev/null || true
wait "$psub" 2>/dev/null || true

step "Sync (bidi, gRPC over h2c): subscribe, then dispatch"
rc=0
{
	printf '%s\n' '{"subscribe":{"positions":[{"channel":"board:sync"}],"client_id":"smoke-sync"}}'
	sleep 1
	printf '%s\n' '{"dispatch":{"channel":"board:sync","client_id":"smoke-sync","actions":[{"id":"b1","type":"ADD_TASK","payload":{"title":"Write tests"}}]}}'
	sleep 1
} | timeout 5 npx --no-install buf curl --http2-prior-knowledge --protocol grpc -d @- \
	"$url/actionsync.v1.SyncService/Sync" >"$tmp/sync.out" 2>&1 || rc=$?
# The stream stays open for live actions after the client's half-close: timeout ends it.
[[ $rc == 0 || $rc == 124 ]] || fail "Sync failed (exit $rc):"$'\n'"$(cat "$tmp/sync.out")"
expect "sends ready" '"ready": *\{' "$tmp/sync.out"
expect "answers dispatched" '"dispatched": *\{' "$tmp/sync.out"
expect "echoes ADD_TASK" '"type": *"ADD_TASK"' "$tmp/sync.out"

step "refused requests"
long_type=$(printf 'T%.0s' $(seq 1 200))
rc=0
bufc -d "{\"channel\":\"board:demo\",\"actions\":[{\"id\":\"x1\",\"type\":\"$long_type\"}]}" \
	"$url/actionsync.v1.SyncService/Dispatch" >"$tmp/bad1.out" 2>&1 || rc=$?
[[ $rc != 0 ]] || fail "a 200-byte type was accepted"
expect "type too long: invalid_argument" '"code": *"invalid_argument"' "$tmp/bad1.out"
expect "names the field and the limit" 'actions\[0\]\.type.*128' "$tmp/bad1.out"
rc=0
bufc -d '{"channel":"bad channel!","actions":[{"id":"x2","type":"A"}]}' \
	"$url/actionsync.v1.SyncService/Dispatch" >"$tmp/bad2.out" 2>&1 || rc=$?
[[ $rc != 0 ]] || fail "a bad channel name was accepted"
expect "bad channel: invalid_argument" '"code": *"invalid_argument"' "$tmp/bad2.out"

step "CORS preflight"
cors_preflight() {
	curl -sS -o /dev/null -D - -X OPTIONS "$url/actionsync.v1.SyncService/Dispatch" \
		-H "Origin: $1" -H 'Access-Control-Request-Method: POST' \
		-H 'Access-Control-Request-Headers: connect-protocol-version,content-type'
}
cors_preflight "$origin" | tr -d '\r' >"$tmp/cors.out" || fail "curl preflight"
expect "allowed origin echoed" "^Access-Control-Allow-Origin: $origin\$" "$tmp/cors.out"
expect "POST allowed" '^Access-Control-Allow-Methods: POST$' "$tmp/cors.out"
expect "Connect headers allowed" '^Access-Control-Allow-Headers: connect-protocol-version,content-type$' "$tmp/cors.out"
cors_preflight "https://evil.example.com" | tr -d '\r' >"$tmp/cors2.out" || fail "curl preflight"
if grep -qi '^Access-Control-Allow-Origin' "$tmp/cors2.out"; then
	fail "unknown origin allowed:"$'\n'"$(cat "$tmp/cors2.out")"
fi
ok "unknown origin refused"

step "SIGTERM with a Subscribe stream open"
npx --no-install buf curl -d '{"positions":[{"channel":"board:demo","live":true}]}' \
	"$url/actionsync.v1.SyncService/Subscribe" >"$tmp/live.out" 2>&1 &
sub_pid=$!
for _ in $(seq 1 100); do
	grep -q '"ready"' "$tmp/live.out" && break
	sleep 0.1
done
expect "live stream ready" '"ready": *\{' "$tmp/live.out"
kill -TERM "$server_pid"
for _ in $(seq 1 50); do
	kill -0 "$server_pid" 2>/dev/null || break
	sleep 0.1
done
kill -0 "$server_pid" 2>/dev/null && fail "server still running 5s after SIGTERM"
rc=0
wait "$server_pid" || rc=$?
server_pid=""
[[ $rc == 0 ]] || fail "server exit code after SIGTERM: got $rc, want 0"
ok "server exited 0"
rc=0
wait "$sub_pid" || rc=$?
[[ $rc != 0 ]] || fail "Subscribe ended without an error"
expect "stream ended with unavailable" '"code": *"unavailable"' "$tmp/live.out"
expect "server logged its stop" 'msg="actionsync stopped"' "$tmp/server.log"

printf 'smoke test passed\n'

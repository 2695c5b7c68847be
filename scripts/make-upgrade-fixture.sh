#!/usr/bin/env bash
# make-upgrade-fixture.sh writes cmd/vigil/testdata/upgrade-stop9/: the meter
# raft directory of a data dir written by this release (datadir.tar.gz: a
# snapshot plus log entries after it) and what the node answered before it
# stopped (digest.txt, reads.json). cmd/vigil/upgrade_test.go opens it with the
# code of the day and compares (issue 12).
#
# The node listens on fixed addresses of an unusual loopback IP: the replicated
# state holds this node's HTTP address (the meter's node map) and the raft
# configuration its raft address, so the test must start it on the same ones,
# or the node would publish a new address and change the state it compares.
#
# Usage: scripts/make-upgrade-fixture.sh   (needs go, ffmpeg, curl, jq)
set -euo pipefail

cd "$(dirname "$0")/.."
OUT=cmd/vigil/testdata/upgrade-stop9
HTTP_ADDR=127.0.93.1:18093
RAFT_ADDR=127.0.93.1:18393
NODE_ID=upgrade-fixture
TOKEN=vigiltest-operator-token # vigiltest.Token
API=http://$HTTP_ADDR

for c in go ffmpeg curl jq; do
	command -v "$c" >/dev/null || { echo "$c is required" >&2; exit 1; }
done

tmp=$(mktemp -d)
pid=
cleanup() {
	if [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null; then kill "$pid"; wait "$pid" || true; fi
	rm -rf "$tmp"
}
trap cleanup EXIT

go build -o "$tmp/vigil" ./cmd/vigil
data=$tmp/data

VIGIL_ADMIN_TOKEN=$TOKEN "$tmp/vigil" serve --data "$data" --http-addr "$HTTP_ADDR" \
	--raft-addr "$RAFT_ADDR" --node-id "$NODE_ID" --rtsp-addr "" >"$tmp/vigil.log" 2>&1 &
pid=$!
for i in $(seq 300); do
	curl -fsS -o /dev/null "$API/readyz" 2>/dev/null && break
	kill -0 "$pid" 2>/dev/null || { cat "$tmp/vigil.log" >&2; exit 1; }
	sleep 0.2
	[ "$i" = 300 ] && { echo "vigil not ready" >&2; tail -40 "$tmp/vigil.log" >&2; exit 1; }
done

# api METHOD PATH [BODY]: the operator's call; prints the answer, fails on non-2xx.
api() {
	local args=(-fsS -X "$1" -H "Authorization: Bearer $TOKEN")
	[ $# -ge 3 ] && args+=(-H "Content-Type: application/json" -d "$3")
	curl "${args[@]}" "$API$2" || { echo "$1 $2 failed" >&2; tail -20 "$tmp/vigil.log" >&2; return 1; }
}

# Two small real segments (MPEG-TS and fragmented MP4), 2 s of H.264 each.
ffmpeg -loglevel error -f lavfi -i testsrc=size=320x240:rate=10 -t 2 -c:v libx264 -g 20 \
	-f mpegts "$tmp/seg.ts"
ffmpeg -loglevel error -f lavfi -i testsrc2=size=320x240:rate=10 -t 2 -c:v libx264 -g 20 \
	-movflags frag_keyframe+empty_moov+default_base_moof -f mp4 "$tmp/seg.mp4"

# put TOKEN STREAM START_MS FILE CTYPE: one 2 s segment upload by a bridge.
put() {
	curl -fsS -o /dev/null -X PUT -H "Authorization: Bearer $1" -H "Content-Type: $5" \
		--data-binary "@$4" "$API/v1/streams/$2/segments/$3?duration_ms=2000" ||
		{ echo "PUT $2/$3 failed" >&2; tail -20 "$tmp/vigil.log" >&2; return 1; }
}
now=$(( $(date +%s) * 1000 / 2000 * 2000 ))
# upload TOKEN STREAM N: N consecutive segments ending a minute ago.
upload() {
	local i start
	for i in $(seq "$3"); do
		start=$(( now - 60000 - (${3} - i) * 2000 ))
		if (( i % 2 )); then put "$1" "$2" "$start" "$tmp/seg.ts" video/mp2t
		else put "$1" "$2" "$start" "$tmp/seg.mp4" video/mp4; fi
	done
}

# wait_purge ANSWER: waits until every purge the answer names (a camera's
# or stream's .purge, an account's .purges) is done.
wait_purge() {
	local id
	for id in $(jq -r '.purge // empty, (.purges // {} | .[])' <<<"$1"); do
		wait_purge_id "$id"
	done
}

wait_purge_id() {
	local id=$1 state
	for _ in $(seq 300); do
		state=$(api GET "/v1/purges/$id" | jq -r .state)
		[ "$state" = done ] && return 0
		[ "$state" = failed ] && { echo "purge $id failed" >&2; return 1; }
		sleep 0.2
	done
	echo "purge $id not done" >&2
	return 1
}

# wait_usage: the aggregator sends usage once a second; wait until the
# meter's counters stop moving, so every batch is committed.
wait_usage() {
	local prev= cur
	for _ in $(seq 60); do
		sleep 1.5
		cur=$(api GET /v1/meter/status | jq -c .usage)
		[ "$cur" = "$prev" ] && return 0
		prev=$cur
	done
	echo "usage never settled" >&2
	return 1
}

# The registry: a reseller with defaults, its sub-accounts, an annual one.
api POST /v1/accounts '{"id":"resel","name":"Reseller","defaults":{"width":1920,"height":1080,"retention_days":30}}' >/dev/null
api POST /v1/accounts '{"id":"shop","name":"Shop","parent":"resel","defaults":{"retention_days":7}}' >/dev/null
api POST /v1/accounts '{"id":"bank","name":"Bank","parent":"resel","billing_cycle":"annual"}' >/dev/null
api POST /v1/accounts '{"id":"gone","name":"Gone","parent":"resel"}' >/dev/null
api PATCH /v1/accounts/shop '{"defaults":{"width":1280,"height":720,"retention_days":14}}' >/dev/null
api PATCH /v1/accounts/bank '{"billing_cycle":"monthly"}' >/dev/null
api PATCH /v1/accounts/resel '{"billing_cycle":"annual","lock_billing_settings":true}' >/dev/null

# Bridge tokens stay in memory only.
tshop=$(api POST /v1/accounts/shop/bridges '{"id":"shop-br","name":"Shop bridge"}' | jq -r .token)
tbank=$(api POST /v1/accounts/bank/bridges '{"id":"bank-br","name":"Bank bridge"}' | jq -r .token)
tgone=$(api POST /v1/accounts/gone/bridges '{"id":"gone-br","name":"Gone bridge"}' | jq -r .token)

# Streams with their own settings, inherited ones (the account's defaults)
# and analytics.
api POST /v1/bridges/shop-br/cameras '{"id":"door","name":"Door","streams":[
	{"id":"door-main","width":1920,"height":1080,"retention_days":30,"analytics":["lpr","people"]},
	{"id":"door-sub"},
	{"id":"door-low","width":640,"height":360}]}' >/dev/null
api POST /v1/bridges/shop-br/cameras '{"id":"till","name":"Till","streams":[
	{"id":"till-main","analytics":["people"]},{"id":"till-sub","width":640,"height":480,"retention_days":3}]}' >/dev/null
api POST /v1/bridges/bank-br/cameras '{"id":"vault","name":"Vault","streams":[
	{"id":"vault-main","width":2560,"height":1440,"retention_days":90}]}' >/dev/null
api POST /v1/bridges/gone-br/cameras '{"id":"gone-cam","name":"Gone cam","streams":[{"id":"gone-main"}]}' >/dev/null
api PATCH /v1/streams/door-sub '{"retention_days":60,"analytics":["motion"]}' >/dev/null

# Usage: real segments from the bridges.
upload "$tshop" door-main 4
upload "$tshop" door-sub 2
upload "$tshop" door-low 2
upload "$tshop" till-main 3
upload "$tshop" till-sub 2
upload "$tbank" vault-main 3
upload "$tgone" gone-main 2
wait_usage

# Deletions: a stream, a camera (then its id re-created), a sub-account.
wait_purge "$(api DELETE /v1/streams/door-low)"
wait_purge "$(api DELETE /v1/cameras/till)"
api POST /v1/bridges/shop-br/cameras '{"id":"till","name":"Till again","streams":[
	{"id":"till-new","analytics":["lpr"]}]}' >/dev/null
upload "$tshop" till-new 2
wait_purge "$(api DELETE /v1/accounts/gone)"
wait_usage

# A snapshot part-way: the data dir holds it and log entries after it.
api POST /v1/cluster/snapshot '' >/dev/null

api PATCH /v1/streams/vault-main '{"width":1920,"height":1080,"analytics":["people"]}' >/dev/null
api PATCH /v1/accounts/bank '{"defaults":{"retention_days":60},"privacy_mode_allowed":true}' >/dev/null
api POST /v1/bridges/bank-br/cameras '{"id":"lobby","name":"Lobby","streams":[{"id":"lobby-main"}]}' >/dev/null
upload "$tbank" lobby-main 2
upload "$tshop" door-main 2 # the same starts and bodies again: 200, a retry
put "$tshop" door-main $(( now - 30000 )) "$tmp/seg.ts" video/mp2t
wait_usage

# What the node answers now. The digest first: a final billing run (a month
# that has ended) seals usage through raft, a write.
mkdir -p "$tmp/out"
api GET '/v1/cluster?digest=1' | jq -r .state_digest >"$tmp/out/digest.txt"
month=$(date -u +%Y-%m)
{
	echo '{'
	sep=
	for p in /v1/meter/status \
		/v1/accounts/resel /v1/accounts/shop /v1/accounts/bank \
		/v1/meter/streams/door-main /v1/meter/streams/door-sub /v1/meter/streams/till-new \
		/v1/meter/streams/vault-main /v1/meter/streams/lobby-main \
		"/v1/billing/runs/$month"; do
		printf '%s%s: %s\n' "$sep" "$(jq -Rn --arg p "$p" '$p')" "$(api GET "$p")"
		sep=,
	done
	echo '}'
} | jq -S . >"$tmp/out/reads.json"
echo "$month" >"$tmp/out/month.txt"
git rev-parse HEAD >"$tmp/out/commit.txt"
cat >"$tmp/out/node.json" <<EOF
{"node_id": "$NODE_ID", "http_addr": "$HTTP_ADDR", "raft_addr": "$RAFT_ADDR"}
EOF

# Stop cleanly (SIGTERM), then keep the meter's raft directory only: the
# objects and the usage journal are not replicated state.
kill -TERM "$pid"
wait "$pid"
pid=
grep -q 'level=ERROR' "$tmp/vigil.log" && { grep 'level=ERROR' "$tmp/vigil.log" >&2; exit 1; }
ls "$data"/meter/raft/snapshots/*/state.bin >/dev/null

rm -rf "$OUT"
mkdir -p "$OUT"
tar -C "$data" --sort=name --owner=0 --group=0 --numeric-owner -czf "$OUT/datadir.tar.gz" meter
cp "$tmp"/out/* "$OUT/"
du -sh "$OUT"
echo "digest $(cat "$OUT/digest.txt")"

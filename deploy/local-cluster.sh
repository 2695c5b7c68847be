#!/usr/bin/env bash
# A local 3-node vigil cluster: three meter+ingest voters on loopback, the
# second and third joining through the first. Ctrl-C stops all three.
#
#   deploy/local-cluster.sh [DATA_DIR]          (default ./vigil-cluster)
#   VIGIL_BIN=/path/to/vigil deploy/local-cluster.sh
#
# Ports: HTTP 8081-8083, raft 8301-8303, RTSP 8551-8553. Add an ingest-only
# node (a raft non-voter with a local read replica) with e.g.
#   vigil serve --roles ingest --node-id i1 --data DIR/i1 --http-addr 127.0.0.1:8084 \
#     --raft-addr 127.0.0.1:8304 --rtsp-addr 127.0.0.1:8554 --join 127.0.0.1:8081
set -euo pipefail
cd "$(dirname "$0")/.."
DATA=${1:-./vigil-cluster}
mkdir -p "$DATA"
BIN=${VIGIL_BIN:-}
if [ -z "$BIN" ]; then
  BIN="$DATA/vigil"
  go build -o "$BIN" ./cmd/vigil
fi
# Every node of a cluster shares the operator token: it also authenticates
# forwarded writes and joins between nodes.
if [ -z "${VIGIL_ADMIN_TOKEN:-}" ]; then
  [ -s "$DATA/admin-token" ] || head -c 32 /dev/urandom | base64 | tr '+/' '-_' | tr -d '=\n' > "$DATA/admin-token"
  VIGIL_ADMIN_TOKEN=$(cat "$DATA/admin-token")
fi
export VIGIL_ADMIN_TOKEN

pids=()
stop() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait; }
trap stop EXIT INT TERM

for i in 1 2 3; do
  join=()
  [ "$i" -gt 1 ] && join=(--join 127.0.0.1:8081)
  "$BIN" serve --node-id "n$i" --data "$DATA/n$i" \
    --http-addr "127.0.0.1:808$i" --raft-addr "127.0.0.1:830$i" --rtsp-addr "127.0.0.1:855$i" \
    "${join[@]}" >"$DATA/n$i.log" 2>&1 &
  pids+=($!)
done

for i in 1 2 3; do
  for _ in $(seq 1 300); do
    curl -fsS "http://127.0.0.1:808$i/readyz" >/dev/null 2>&1 && break
    sleep 0.2
  done
done
echo "cluster up (logs in $DATA/n*.log; operator token in \$VIGIL_ADMIN_TOKEN or $DATA/admin-token):"
curl -fsS -H "Authorization: Bearer $VIGIL_ADMIN_TOKEN" http://127.0.0.1:8081/v1/cluster; echo
echo "Ctrl-C stops the cluster."
wait

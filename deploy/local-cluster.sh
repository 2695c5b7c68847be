#!/usr/bin/env bash
# A local 3-node vigil cluster: three meter+ingest voters on loopback, the
# second and third joining through the first. Ctrl-C (or SIGTERM) stops all
# three.
#
# For the whole deployment (erasure-coded MinIO, a Redis Cluster, 3 meter
# voters, 2 ingest nodes, a balancer) run `vigil cluster up` instead.
#
#   deploy/local-cluster.sh [DATA_DIR]          (default ./vigil-cluster)
#   VIGIL_BIN=/path/to/vigil deploy/local-cluster.sh
#
# Ports: HTTP 8081-8083, raft 8301-8303, RTSP 8551-8553 (each node's RTSP UDP
# pair is derived from its RTSP port). Other ports, e.g. for a second cluster
# or a test, three per list:
#   VIGIL_CLUSTER_HTTP_PORTS="9081 9082 9083" VIGIL_CLUSTER_RAFT_PORTS="9301 9302 9303" \
#   VIGIL_CLUSTER_RTSP_PORTS="9551 9552 9553" deploy/local-cluster.sh /tmp/c2
#
# It says "cluster up" only once every node answers /readyz and reports the
# same leader and all three voters; otherwise it stops the nodes, shows their
# logs and exits 1. Add an ingest-only node (a raft non-voter with a local
# read replica) with e.g.
#   vigil serve --roles ingest --node-id i1 --data DIR/i1 --http-addr 127.0.0.1:8084 \
#     --raft-addr 127.0.0.1:8304 --rtsp-addr 127.0.0.1:8554 --join 127.0.0.1:8081
set -euo pipefail
cd "$(dirname "$0")/.."
DATA=${1:-./vigil-cluster}
read -r -a HTTP <<<"${VIGIL_CLUSTER_HTTP_PORTS:-8081 8082 8083}"
read -r -a RAFT <<<"${VIGIL_CLUSTER_RAFT_PORTS:-8301 8302 8303}"
read -r -a RTSP <<<"${VIGIL_CLUSTER_RTSP_PORTS:-8551 8552 8553}"
for l in HTTP RAFT RTSP; do
  n=$(eval echo "\${#$l[@]}")
  [ "$n" = 3 ] || { echo "local-cluster: VIGIL_CLUSTER_${l}_PORTS needs 3 ports" >&2; exit 2; }
done
mkdir -p "$DATA"
BIN=${VIGIL_BIN:-}
if [ -z "$BIN" ]; then
  BIN="$DATA/vigil"
  go build -o "$BIN" ./cmd/vigil
fi
# Every node of a cluster shares the operator token: it also authenticates
# forwarded writes and joins between nodes.
if [ -z "${VIGIL_ADMIN_TOKEN:-}" ]; then
  [ -s "$DATA/admin-token" ] || (umask 077; head -c 32 /dev/urandom | base64 | tr '+/' '-_' | tr -d '=\n' > "$DATA/admin-token")
  VIGIL_ADMIN_TOKEN=$(cat "$DATA/admin-token")
fi
export VIGIL_ADMIN_TOKEN

pids=()
stop() {
  trap - EXIT INT TERM
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait || true
}
trap stop EXIT
trap 'stop; exit 130' INT
trap 'stop; exit 143' TERM

fail() {
  echo "local-cluster: $*" >&2
  for i in 1 2 3; do
    [ -f "$DATA/n$i.log" ] && { echo "--- n$i.log (last lines)" >&2; tail -n 15 "$DATA/n$i.log" >&2; }
  done
  exit 1
}

for i in 1 2 3; do
  join=()
  [ "$i" -gt 1 ] && join=(--join "127.0.0.1:${HTTP[0]}")
  "$BIN" serve --node-id "n$i" --data "$DATA/n$i" \
    --http-addr "127.0.0.1:${HTTP[i-1]}" --raft-addr "127.0.0.1:${RAFT[i-1]}" --rtsp-addr "127.0.0.1:${RTSP[i-1]}" \
    "${join[@]}" >"$DATA/n$i.log" 2>&1 &
  pids+=($!)
done

# Up means: every process alive and ready, and every node sees the same
# leader and all three voters.
status() { curl -fsS -m 2 -H "Authorization: Bearer $VIGIL_ADMIN_TOKEN" "http://127.0.0.1:$1/v1/cluster" 2>/dev/null; }
up=
for _ in $(seq 1 300); do
  for i in 1 2 3; do
    kill -0 "${pids[i-1]}" 2>/dev/null || fail "n$i exited"
  done
  ok=1 leaders=()
  for i in 1 2 3; do
    curl -fsS -m 2 "http://127.0.0.1:${HTTP[i-1]}/readyz" >/dev/null 2>&1 || { ok=; break; }
    s=$(status "${HTTP[i-1]}") || { ok=; break; }
    leaders+=("$(grep -o '"leader":{"id":"[^"]*"' <<<"$s" || true)")
    for m in n1 n2 n3; do
      grep -q "{\"id\":\"$m\",[^}]*\"suffrage\":\"voter\"" <<<"$s" || { ok=; break 2; }
    done
  done
  if [ -n "$ok" ] && [ -n "${leaders[0]}" ] && [ "${leaders[0]}" = "${leaders[1]}" ] && [ "${leaders[0]}" = "${leaders[2]}" ]; then
    up=1
    break
  fi
  sleep 0.2
done
[ -n "$up" ] || fail "the nodes did not form a cluster within 60 s"
echo "cluster up: HTTP ${HTTP[*]} (logs in $DATA/n*.log; operator token in \$VIGIL_ADMIN_TOKEN or $DATA/admin-token):"
status "${HTTP[0]}"; echo
echo "Ctrl-C stops the cluster."
wait

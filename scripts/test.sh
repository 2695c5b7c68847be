#!/usr/bin/env bash
# Runs the whole test suite against real servers, installing what it needs:
# redis-server and ffmpeg from Debian's packages, MinIO, mc and mailpit (the
# SMTP server the mail tests send to) built with `go install` at pinned
# versions into a cache outside the repository.
set -euo pipefail

MINIO_VERSION=v0.0.0-20260212201848-7aac2a2c5b7c
MC_VERSION=v0.0.0-20250313080218-cf909e1063a9
MAILPIT_VERSION=v1.33.1
STATICCHECK_VERSION=v0.8.2
PROMETHEUS_VERSION=v0.316.0 # promtool, for deploy/prometheus (deploy/validate)
CACHE=${VIGIL_TOOLS_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/vigil-tools}

cd "$(dirname "$0")/.."

need_apt=()
command -v redis-server >/dev/null || need_apt+=(redis-server)
command -v redis-cli >/dev/null || need_apt+=(redis-tools) # Redis Cluster tests: redis-cli --cluster create
command -v ffmpeg >/dev/null || need_apt+=(ffmpeg)
command -v ffprobe >/dev/null || need_apt+=(ffmpeg)
# GStreamer is the second real RTSP publisher (rtspclientsink with x264enc) in the media tests.
command -v gst-launch-1.0 >/dev/null || need_apt+=(gstreamer1.0-tools gstreamer1.0-plugins-base
  gstreamer1.0-plugins-good gstreamer1.0-plugins-bad gstreamer1.0-plugins-ugly gstreamer1.0-rtsp)
command -v systemd-analyze >/dev/null || need_apt+=(systemd) # verifies deploy/systemd
command -v chromium >/dev/null || need_apt+=(chromium) # the viewer page's browser tests (ui/)
command -v npm >/dev/null || need_apt+=(npm)           # scripts/hlsjs.sh --check
if [ ${#need_apt[@]} -gt 0 ]; then
  echo "test.sh: installing ${need_apt[*]} with apt-get" >&2
  SUDO=""; [ "$(id -u)" = 0 ] || SUDO=sudo
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${need_apt[@]}" >/dev/null
fi

install_go_tool() { # name module version [build tags]
  local dir="$CACHE/$1-$3"
  if [ ! -x "$dir/$1" ]; then
    echo "test.sh: building $2@$3 into $dir (first run only)" >&2
    mkdir -p "$dir"
    GOFLAGS="-mod=mod${4:+ -tags=$4}" GOBIN="$dir" go install "$2@$3"
  fi
  PATH="$dir:$PATH"
}
install_go_tool minio github.com/minio/minio "$MINIO_VERSION"
install_go_tool mc github.com/minio/mc "$MC_VERSION"
install_go_tool mailpit github.com/axllent/mailpit "$MAILPIT_VERSION"
# staticcheck is installed like MinIO: `go run pkg@version` inside this module
# would resolve it against (and rewrite) go.mod.
install_go_tool staticcheck honnef.co/go/tools/cmd/staticcheck "$STATICCHECK_VERSION"
# remove_all_sd leaves out Prometheus' service discovery (cloud SDKs):
# promtool checks and tests rules without it, and builds in a fraction of the time.
install_go_tool promtool github.com/prometheus/prometheus/cmd/promtool "$PROMETHEUS_VERSION" remove_all_sd
export PATH

export VIGIL_REQUIRE_INTEGRATION=1
unformatted=$(gofmt -l $(git ls-files '*.go' 2>/dev/null || find . -name '*.go'))
if [ -n "$unformatted" ]; then echo "gofmt wants to change: $unformatted" >&2; exit 1; fi
if ! go mod tidy -diff; then echo "go.mod/go.sum are not tidy: run go mod tidy" >&2; exit 1; fi
go vet ./...
scripts/hlsjs.sh --check # the embedded hls.js is the pinned release, byte for byte
staticcheck ./...
go test -race -timeout 40m "$@" ./...

# deploy/validate is a module of its own (compose-go, the Kubernetes API,
# Prometheus): it checks the deployment files in deploy/.
(
  cd deploy/validate
  if ! go mod tidy -diff; then echo "deploy/validate: go.mod/go.sum are not tidy: run go mod tidy there" >&2; exit 1; fi
  go vet ./...
  staticcheck ./...
  go test -timeout 20m "$@" ./...
)

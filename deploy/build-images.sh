#!/usr/bin/env bash
# Builds the laas-bridge, NATS and load-balancer images locally, FROM
# scratch: the binaries are built here with CGO_ENABLED=0 (static), so no
# base image and no registry is needed. Run from anywhere:
#
#   deploy/build-images.sh
#
# Environment (all optional):
#   LAAS_BRIDGE_IMAGE  laas-bridge image name    (default laas-bridge:dev)
#   NATS_IMAGE         NATS server image name    (default laas-bridge-nats:dev)
#   LB_IMAGE           load balancer image name  (default laas-bridge-lb:dev)
#   CA_BUNDLE          CA certificates to copy in (default /etc/ssl/certs/ca-certificates.crt)
#   GOARCH             target architecture        (default: the host's)
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
bridge_image=${LAAS_BRIDGE_IMAGE:-laas-bridge:dev}
nats_image=${NATS_IMAGE:-laas-bridge-nats:dev}
lb_image=${LB_IMAGE:-laas-bridge-lb:dev}
ca_bundle=${CA_BUNDLE:-/etc/ssl/certs/ca-certificates.crt}

if [ ! -r "$ca_bundle" ]; then
  echo "build-images.sh: no CA bundle at $ca_bundle (install ca-certificates or set CA_BUNDLE)" >&2
  exit 1
fi

ctx=$(mktemp -d)
trap 'rm -rf "$ctx"' EXIT
mkdir -p "$ctx/bridge/data" "$ctx/bridge/tmp" "$ctx/nats/data" "$ctx/lb"

version=$(git -C "$root" describe --tags --always --dirty 2>/dev/null || echo dev)
echo "== go build laas-bridge ($version), nats-server and laas-bridge-lb, CGO_ENABLED=0"
(
  cd "$root"
  export CGO_ENABLED=0
  go build -trimpath -ldflags "-s -w -X main.version=$version" -o "$ctx/bridge/laas-bridge" ./cmd/laas-bridge
  go build -trimpath -ldflags "-s -w" -o "$ctx/nats/nats-server" github.com/nats-io/nats-server/v2
  go build -trimpath -ldflags "-s -w" -o "$ctx/lb/laas-bridge-lb" ./deploy/lb
)
cp "$ca_bundle" "$ctx/bridge/ca-certificates.crt"
cp "$root/config.yaml" "$ctx/bridge/config.yaml"
cp "$root/deploy/Dockerfile" "$ctx/bridge/Dockerfile"
cp "$root/deploy/nats/Dockerfile" "$root/deploy/nats/nats.conf" "$ctx/nats/"
cp "$root/deploy/lb/Dockerfile" "$ctx/lb/Dockerfile"

echo "== docker build $bridge_image"
docker build -q -t "$bridge_image" "$ctx/bridge"
echo "== docker build $nats_image"
docker build -q -t "$nats_image" "$ctx/nats"
echo "== docker build $lb_image"
docker build -q -t "$lb_image" "$ctx/lb"
echo "built $bridge_image, $nats_image and $lb_image"

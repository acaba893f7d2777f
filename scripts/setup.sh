#!/usr/bin/env bash
# Installs what calico-rs needs on a Debian 12 machine. Idempotent: installs only what is missing.
set -euo pipefail

PKGS=(
  etcd-server etcd-client   # the cluster datastore, started by tests and the lab
  protobuf-compiler         # protoc, for etcd-client's build
  nftables iproute2         # the dataplane and the lab
  bird2                     # BGP
  iperf3                    # throughput benchmarks
  podman runc containernetworking-plugins busybox-static  # a real container runtime for CNI tests
  frr                       # a foreign BGP router in the lab
  procps psmisc
)

missing=()
for p in "${PKGS[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  echo "setup: installing ${missing[*]}"
  SUDO=""; [ "$(id -u)" = 0 ] || SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${missing[@]}" >/dev/null
fi

if ! command -v cargo >/dev/null 2>&1; then
  echo "setup: cargo not found; install the Rust toolchain (rust-toolchain.toml pins 1.95.0)" >&2
  exit 1
fi
echo "setup: ok"

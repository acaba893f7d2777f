#!/usr/bin/env bash
# The main job: install what is missing, build, and show calico-rs running a 3-node cluster in
# network namespaces on this machine: calico-node (Felix + BIRD) per node, pods made by the real
# `calico` CNI plugin, the embedded datastore, Kubernetes NetworkPolicy enforced in the kernel.
# Nothing outside the lab's own namespaces is touched; everything is removed on exit.
set -euo pipefail
cd "$(dirname "$0")/.."

bold() { printf '\n\033[1m==> %s\033[0m\n' "$*"; }
say() { printf '$ %s\n' "$*"; }

if [ "$(id -u)" != 0 ]; then
  echo "demo: the lab creates network namespaces and needs root (run: sudo $0)" >&2
  exit 1
fi

bold "checking packages (installs only what is missing)"
./scripts/setup.sh

bold "building the binaries (release; the first build takes several minutes)"
cargo build --release -p calico-lab -p calico-cni -p calicoctl -p calico-node -p felix --bins
LAB=./target/release/calico-lab
NAME=demo
work=$(mktemp -d /tmp/calico-demo.XXXXXX)

cleanup() {
  bold "tearing the lab down"
  "$LAB" down --name "$NAME" 2>/dev/null || true
  rm -rf "$work"
}
# A lab of an earlier, interrupted demo goes first.
"$LAB" down --name "$NAME" >/dev/null 2>&1 || true
trap cleanup EXIT
trap 'exit 130' INT TERM

lab() { say "calico-lab $*"; "$LAB" "$@"; }

bold "bringing up a 3-node lab (fabric bridge + 3 node namespaces, calico-node in each, embedded store)"
lab up --name "$NAME" --nodes 3 --routing bgp-mesh --datastore embedded

bold "starting pods through the calico CNI plugin (namespace shop, plus an outsider)"
lab pod add --name "$NAME" shop/frontend --node node-1 --label app=frontend
lab pod add --name "$NAME" shop/api --node node-2 --label app=api
lab pod add --name "$NAME" shop/db --node node-3 --label app=db
lab pod add --name "$NAME" other/intruder --node node-1 --label app=intruder
lab wait --name "$NAME"
lab status --name "$NAME"

bold "inside a pod: its address, and the default route via 169.254.1.1 (proxy ARP on the node)"
lab exec --name "$NAME" shop/frontend -- ip -4 -br addr show eth0
lab exec --name "$NAME" shop/frontend -- ip route

bold "connectivity before any policy (everything open; pods on 3 nodes, routes from BIRD)"
lab matrix --name "$NAME" 80/TCP

bold "applying Kubernetes NetworkPolicies: api only from frontend, db only from api"
cat >"$work/policy.yaml" <<'YAML'
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: api-from-frontend, namespace: shop}
spec:
  podSelector: {matchLabels: {app: api}}
  policyTypes: [Ingress]
  ingress:
  - from: [{podSelector: {matchLabels: {app: frontend}}}]
    ports: [{port: 80, protocol: TCP}]
---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: db-from-api, namespace: shop}
spec:
  podSelector: {matchLabels: {app: db}}
  policyTypes: [Ingress]
  ingress:
  - from: [{podSelector: {matchLabels: {app: api}}}]
YAML
sed 's/^/    /' "$work/policy.yaml"
lab calicoctl --name "$NAME" -- apply -f "$work/policy.yaml"
lab calicoctl --name "$NAME" -- get networkpolicy -A
lab wait --name "$NAME"

bold "connectivity with the policies (row = from, column = to)"
lab matrix --name "$NAME" 80/TCP
lab probe --name "$NAME" other/intruder shop/db 80/TCP || true
lab probe --name "$NAME" shop/api shop/db 80/TCP || true

bold "the same checks as a scenario file: the k8s-netpol conformance corpus, if present"
corpus=../shared/corpus/k8s-netpol
if [ -d "$corpus" ]; then
  say "calico-lab scenario $corpus/01-default-deny-ingress.yaml $corpus/17-ingress-one-named-port.yaml"
  CALICO_LAB_LOG=warn "$LAB" scenario "$corpus/01-default-deny-ingress.yaml" "$corpus/17-ingress-one-named-port.yaml" || true
else
  echo "(no corpus at $corpus; skipped)"
fi

cat <<'TXT'

Try next (as root):
  ./target/release/calico-lab up --name mylab --nodes 3 --routing bgp-mesh   # or vxlan, bgp-route-reflector; --datastore etcd
  ./target/release/calico-lab pod add --name mylab x/a --label app=web
  ./target/release/calico-lab exec --name mylab x/a -- ip addr
  ./target/release/calico-lab probe --name mylab x/a x/b 80/UDP               # TCP | UDP | SCTP | ICMP
  ./target/release/calico-lab calicoctl --name mylab -- apply -f policy.yaml
  ./target/release/calico-lab scenario ../shared/corpus/k8s-netpol --nodes 3 --datastore etcd
  ./target/release/calico-lab bench --corpus ../shared/corpus/k8s-netpol
  ./target/release/calico-lab down --name mylab        # or: calico-lab sweep (leftovers of killed labs)
TXT

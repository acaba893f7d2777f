#!/usr/bin/env bash
# The main job: install what is missing, build, and show calico-rs working on a throw-away
# embedded datastore (a temporary SQLite file; nothing on the machine is changed).
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/setup.sh

step() { printf '\n\033[1m==> %s\033[0m\n' "$*"; }
run() { printf '$ %s\n' "$*"; "$@" || true; }

step "building (release; the first build takes a few minutes)"
cargo build --release -q -p calicoctl -p calico-cni
C=./target/release/calicoctl
CNI=./target/release/calico

work=$(mktemp -d /tmp/calico-demo.XXXXXX)
prefix="crsdemo$$"
cleanup() {
  for ns in $(ip netns list 2>/dev/null | awk -v p="$prefix" '$1 ~ "^"p {print $1}'); do
    ip netns del "$ns" 2>/dev/null || true
  done
  rm -rf "$work"
}
trap cleanup EXIT INT TERM
export DATASTORE_TYPE=embedded CALICO_DATASTORE_PATH="$work/calico.db"

step "validate example manifests (no datastore needed)"
run $C validate -f examples/demo-resources.yaml
step "an invalid manifest is rejected with the field named"
run $C validate -f examples/demo-invalid.yaml

step "apply them to the embedded datastore ($CALICO_DATASTORE_PATH)"
run $C apply -f examples/demo-resources.yaml
step "list resources as operators see them"
run $C get tiers
run $C get globalnetworkpolicies -o wide
run $C get networkpolicies -A
run $C get ippools -o wide
run $C get globalnetworksets
run $C get networkpolicy allow-frontend-to-api -n shop -o yaml

step "selectors: evaluation and canonical form"
run $C selector eval 'app == "web" && tier in {"fe", "be"}' --labels '{"app":"web","tier":"fe"}'
run $C selector eval 'app == "web" && tier in {"fe", "be"}' --labels '{"app":"db"}'
run $C selector parse '!(has(b)||!has(a))'

step "label and patch, then see the change"
run $C label globalnetworkset known-bad env=prod
run $C patch ippool demo-pool -p '{"spec":{"natOutgoing":false}}'
run $C get ippool demo-pool -o yaml

if [ "$(id -u)" = 0 ] && command -v ip >/dev/null; then
  step "the CNI plugin on the real kernel: a node and two workloads, each its own network namespace"
  node="$prefix-node"
  ip netns add "$node"; ip -n "$node" link set lo up
  # A real host has a default route; proxy ARP for 169.254.1.1 needs a route covering it.
  ip -n "$node" route add 169.254.1.1/32 dev lo
  ip netns exec "$node" sysctl -qw net.ipv4.ip_forward=1
  conf='{"cniVersion":"1.0.0","name":"k8s-pod-network","type":"calico","nodename":"demo-node",
         "datastore_type":"embedded","datastore_path":"'"$CALICO_DATASTORE_PATH"'","mtu":1450,
         "ipam":{"type":"calico-ipam"}}'
  cni() { # cni ADD|DEL <pod>
    CNI_COMMAND=$1 CNI_CONTAINERID="ctr-$2" CNI_NETNS="/var/run/netns/$prefix-$2" CNI_IFNAME=eth0 \
      CNI_ARGS="K8S_POD_NAMESPACE=shop;K8S_POD_NAME=$2" ip netns exec "$node" "$CNI" <<<"$conf"
  }
  declare -A ipof
  for pod in frontend api; do
    ip netns add "$prefix-$pod"
    printf '$ CNI_COMMAND=ADD calico   (pod shop/%s)\n' "$pod"
    res=$(cni ADD "$pod") || { echo "$res"; exit 1; }
    echo "$res"
    ipof[$pod]=$(grep -o '"address":"[0-9.]*' <<<"$res" | cut -d'"' -f4)
  done
  run $C get workloadendpoints -n shop -o wide
  printf '$ ip -n <node> route   (one /32 per workload, through its cali veth)\n'
  ip -n "$node" route | grep cali || true
  printf '$ ping from shop/frontend (%s) to shop/api (%s)\n' "${ipof[frontend]}" "${ipof[api]}"
  ip netns exec "$prefix-frontend" busybox ping -c 2 -W 2 "${ipof[api]}" || true
  for pod in frontend api; do printf '$ CNI_COMMAND=DEL calico   (pod shop/%s)\n' "$pod"; cni DEL "$pod"; done
  run $C get workloadendpoints -n shop
else
  step "skipping the CNI part: it needs root (network namespaces)"
fi

cat <<'TXT'

Try next:
  export CALICO_DATASTORE_PATH=/tmp/my-calico.db
  ./target/release/calicoctl apply -f examples/demo-resources.yaml
  ./target/release/calicoctl get gnp -o yaml
  ./scripts/test.sh        # every test, including datastore conformance against a real etcd
TXT

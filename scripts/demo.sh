#!/usr/bin/env bash
# The main job: install what is missing, build, and show calico-rs working on a throw-away
# embedded datastore (a temporary SQLite file; nothing on the machine is changed).
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/setup.sh

step() { printf '\n\033[1m==> %s\033[0m\n' "$*"; }
run() { printf '$ %s\n' "$*"; "$@" || true; }

step "building (release; the first build takes a few minutes)"
cargo build --release -q -p calicoctl
C=./target/release/calicoctl

work=$(mktemp -d /tmp/calico-demo.XXXXXX)
trap 'rm -rf "$work"' EXIT
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

cat <<'TXT'

Try next:
  export CALICO_DATASTORE_PATH=/tmp/my-calico.db
  ./target/release/calicoctl apply -f examples/demo-resources.yaml
  ./target/release/calicoctl get gnp -o yaml
  ./scripts/test.sh        # every test, including datastore conformance against a real etcd
TXT

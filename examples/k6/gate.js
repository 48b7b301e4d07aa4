// gate.js: a short load test of the `ingest` example that fails (exit 99) when the
// service or its process crosses a line.
//
//   k6 run examples/k6/gate.js                       # or: bash scripts/gate.sh
//   k6 run -e RSS_MAX_BYTES=1 examples/k6/gate.js    # must fail with exit code 99
//
// -e variables (defaults in parentheses):
//   BASE_URL (http://127.0.0.1:8080)  the ingest service
//   PERFKIT_URL (http://127.0.0.1:6060), PERFKIT_TOKEN  its perfkit debug server
//   DURATION (20s)        length of every scenario
//   EVENTS_RATE (100)     POST /events per second, each carrying BATCH events
//   PROGRESS_RATE (50)    GET /v1/progress/{user} per second
//   BATCH (10)            events per POST
//   USERS (1000)          distinct user ids
//   HTTP_P95_MS (250)     p(95) latency bound per scenario, in ms
//   RSS_MAX_BYTES (536870912)  resident memory bound, from perfkit's snapshot
//   QUEUE_SATURATION_MAX (0.8) bound on every queue's peak depth/capacity
//   DROPPED_MAX (0)       how many dropped items the run tolerates (all queues, all reasons)
//   REJECTED_MAX (0)      how many refused items the run tolerates (all queues): the
//                         `reject` policy's refusals and sends that timed out waiting for
//                         room (the example's INGEST_ENQUEUE_TIMEOUT_MS)
//   TASK_GROWTH_MAX (50)  bound on the growth of live tracked tasks (per name) over the run
//   POOL_SATURATION_MAX (0.9)  bound on p(95) of every pool's busy/workers per poll interval
//   POOL_PANICS_MAX (0)   how many panicked pool jobs the run tolerates
//   FLUSH_P99_MAX_MS (250)  bound on the `db_flush` hot path's p99, in ms
//   RESOURCE_SATURATION_MAX (1)  bound on p(95) of the database pool's peak in-use/max
//                         per poll interval: 1 fails when every connection was in use in
//                         more than one interval in twenty
//   LOCK_WAIT_P99_MAX_MS (100)  bound on the p99 wait for the `user_progress` lock (and
//                         any other perfkit::sync lock) per poll interval, in ms
//   ROUTE_P99_MAX_MS (250)  bound on the service-side p99 of GET /v1/progress/{user} and
//                         POST /events (perfkit::http::MetricsLayer), in ms
//   PROFILE_SECONDS (5)   length of the CPU profile taken mid-run (0: none)
//   RESULTS_DIR (results) where the JSON summary (gate.json) and the profiles go:
//                         cpu.pb.gz and cpu.svg (the mid-run CPU profile), heap.pb.gz and
//                         heap.svg (the live heap at the end); open a .pb.gz with
//                         `go tool pprof -http=: results/cpu.pb.gz`; and report.json, the
//                         service's run report (findings, bottleneck, configuration)

import { checkThresholds, poll, pollScenario, profile, profileScenario, summary, thresholds } from '../../perfkit/k6/perfkit.js';
import { arrival, durationMs, httpThresholds, num, PERFKIT_URL, str, SUMMARY_TREND_STATS } from './lib.js';

const DURATION = str('DURATION', '20s');
const EVENTS_RATE = num('EVENTS_RATE', 100, { min: 1, integer: true });
const PROGRESS_RATE = num('PROGRESS_RATE', 50, { min: 1, integer: true });
const HTTP_P95_MS = num('HTTP_P95_MS', 250);
const RSS_MAX_BYTES = num('RSS_MAX_BYTES', 536870912);
const QUEUE_SATURATION_MAX = num('QUEUE_SATURATION_MAX', 0.8);
const DROPPED_MAX = num('DROPPED_MAX', 0, { integer: true });
const REJECTED_MAX = num('REJECTED_MAX', 0, { integer: true });
const TASK_GROWTH_MAX = num('TASK_GROWTH_MAX', 50);
const POOL_SATURATION_MAX = num('POOL_SATURATION_MAX', 0.9);
const POOL_PANICS_MAX = num('POOL_PANICS_MAX', 0, { integer: true });
const FLUSH_P99_MAX_MS = num('FLUSH_P99_MAX_MS', 250);
const RESOURCE_SATURATION_MAX = num('RESOURCE_SATURATION_MAX', 1);
const LOCK_WAIT_P99_MAX_MS = num('LOCK_WAIT_P99_MAX_MS', 100);
const PROFILE_SECONDS = num('PROFILE_SECONDS', 5, { integer: true });
const ROUTE_P99_MAX_MS = num('ROUTE_P99_MAX_MS', 250);

// The CPU profile starts a quarter into the run, so it sees the load at full rate.
function quarterOf(duration) {
  const ms = durationMs(duration);
  return ms === null ? '0s' : `${Math.floor(ms / 4)}ms`;
}

export const options = {
  discardResponseBodies: true,
  scenarios: {
    events: arrival(EVENTS_RATE, 'postEvents', DURATION),
    progress: arrival(PROGRESS_RATE, 'getProgress', DURATION),
    perfkit: pollScenario({ duration: DURATION, rate: 1 }),
    ...(PROFILE_SECONDS > 0
      ? { profile: profileScenario({ seconds: PROFILE_SECONDS, startTime: quarterOf(DURATION) }) }
      : {}),
  },
  thresholds: checkThresholds({
    ...httpThresholds(HTTP_P95_MS),
    // The helper's starter set (docs/k6.md), with this script's -e bounds.
    ...thresholds({
      perfkit_process_resident_memory_bytes: [`max<${RSS_MAX_BYTES}`],
      perfkit_queue_saturation: [`max<${QUEUE_SATURATION_MAX}`],
      perfkit_queue_dropped: [`count<=${DROPPED_MAX}`],
      perfkit_queue_rejected: [`count<=${REJECTED_MAX}`],
      perfkit_tasks_alive_growth: [`max<${TASK_GROWTH_MAX}`],
      perfkit_pool_saturation: [`p(95)<${POOL_SATURATION_MAX}`],
      perfkit_pool_panics: [`count<=${POOL_PANICS_MAX}`],
      perfkit_resource_saturation: [`p(95)<${RESOURCE_SATURATION_MAX}`],
      perfkit_lock_wait_p99_seconds: [`max<${LOCK_WAIT_P99_MAX_MS / 1000}`],
      // The service's hot paths and routes are named instead, each with its own bound.
      perfkit_hot_path_p99_seconds: null,
      perfkit_http_p99_seconds: null,
      'perfkit_hot_path_p99_seconds{function:db_flush}': [`max<${FLUSH_P99_MAX_MS / 1000}`],
      'perfkit_http_p99_seconds{route:GET /v1/progress/{user}}': [`max<${ROUTE_P99_MAX_MS / 1000}`],
      'perfkit_http_p99_seconds{route:POST /events}': [`max<${ROUTE_P99_MAX_MS / 1000}`],
    }),
  }),
  summaryTrendStats: SUMMARY_TREND_STATS,
};

export { getProgress, postEvents } from './lib.js';

export function perfkitPoll() {
  poll({ url: PERFKIT_URL });
}

export function perfkitProfile() {
  profile({ url: PERFKIT_URL, seconds: PROFILE_SECONDS });
}

export function handleSummary(data) {
  return summary(data, { name: 'gate', profiles: true, report: true });
}

// soak.js: an endurance run of the `ingest` example at a steady, sustainable rate, gated on
// growth: what a slow leak looks like (live tasks, resident memory, heap) and queues that
// creep towards full.
//
//   k6 run examples/k6/soak.js                         # 2 minutes (the default)
//   k6 run -e DURATION=4h -e WARMUP=5m examples/k6/soak.js
//
// The growth Trends compare every poll with the first one, taken after WARMUP (caches,
// pools and allocator arenas fill up in the first minutes of any service). For runs of
// hours, raise the bounds with the run: a leak of one task per minute crosses 50 only
// after 50 minutes; set TASK_GROWTH_MAX and the byte bounds from a run you trust.
//
// -e variables (defaults in parentheses):
//   BASE_URL, PERFKIT_URL, PERFKIT_TOKEN, BATCH, USERS   as in gate.js
//   DURATION (2m)           length of the load, after WARMUP
//   WARMUP (15s)            load before the first (baseline) poll
//   EVENTS_RATE (100)       POST /events per second
//   PROGRESS_RATE (50)      GET /v1/progress/{user} per second
//   POLL_EVERY (5s)         how often perfkit is polled
//   TASK_GROWTH_MAX (10)    bound on live tracked tasks' growth per name
//   RSS_GROWTH_MAX (67108864)   bound on resident memory growth, bytes
//   HEAP_GROWTH_MAX (33554432)  bound on live heap growth, bytes (jemalloc or the
//                           counting allocator; no samples without either)
//   QUEUE_SATURATION_MAX (0.8)  bound on every queue's peak depth/capacity (high water)
//   HTTP_P95_MS (250)       p(95) latency bound
//   RESULTS_DIR (results)   where soak.json goes

import { checkThresholds, poll, summary } from '../../perfkit/k6/perfkit.js';
import { arrival, durationMs, httpThresholds, num, PERFKIT_URL, str, SUMMARY_TREND_STATS } from './lib.js';

const DURATION = str('DURATION', '2m');
const WARMUP = str('WARMUP', '15s');
const POLL_EVERY = str('POLL_EVERY', '5s');
for (const [name, v] of [['DURATION', DURATION], ['WARMUP', WARMUP], ['POLL_EVERY', POLL_EVERY]]) {
  if (durationMs(v) === null) throw new Error(`-e ${name}=${v}: expected a duration such as 30s`);
}
const EVENTS_RATE = num('EVENTS_RATE', 100, { min: 1, integer: true });
const PROGRESS_RATE = num('PROGRESS_RATE', 50, { min: 1, integer: true });
const TASK_GROWTH_MAX = num('TASK_GROWTH_MAX', 10);
const RSS_GROWTH_MAX = num('RSS_GROWTH_MAX', 64 * 1024 * 1024);
const HEAP_GROWTH_MAX = num('HEAP_GROWTH_MAX', 32 * 1024 * 1024);
const QUEUE_SATURATION_MAX = num('QUEUE_SATURATION_MAX', 0.8);
const HTTP_P95_MS = num('HTTP_P95_MS', 250);

const TOTAL = `${durationMs(WARMUP) + durationMs(DURATION)}ms`;

export const options = {
  discardResponseBodies: true,
  scenarios: {
    events: arrival(EVENTS_RATE, 'postEvents', TOTAL),
    progress: arrival(PROGRESS_RATE, 'getProgress', TOTAL),
    perfkit: {
      executor: 'constant-arrival-rate',
      rate: 1,
      timeUnit: POLL_EVERY,
      duration: DURATION,
      startTime: WARMUP,
      // One VU: growth and counter deltas are kept per VU.
      preAllocatedVUs: 1,
      maxVUs: 1,
      exec: 'perfkitPoll',
      tags: { perfkit: 'poll' },
    },
  },
  thresholds: checkThresholds({
    ...httpThresholds(HTTP_P95_MS),
    perfkit_tasks_alive_growth: [`max<${TASK_GROWTH_MAX}`],
    perfkit_process_rss_growth_bytes: [`max<${RSS_GROWTH_MAX}`],
    perfkit_heap_growth_bytes: [`max<${HEAP_GROWTH_MAX}`],
    perfkit_queue_saturation: [`max<${QUEUE_SATURATION_MAX}`],
    perfkit_queue_dropped: ['count<=0'],
    perfkit_polls: ['count>1'],
    perfkit_poll_errors: ['count==0'],
  }),
  summaryTrendStats: SUMMARY_TREND_STATS,
};

export { getProgress, postEvents } from './lib.js';

export function perfkitPoll() {
  poll({ url: PERFKIT_URL });
}

export function handleSummary(data) {
  return summary(data, { name: 'soak', report: true });
}

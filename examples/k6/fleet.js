// fleet.js: load spread over several instances of the `ingest` example (round robin, as a
// load balancer would), gated on every instance's perfkit signals: polled from each debug
// server (`PERFKIT_URLS`), or read from Prometheus (`PROMETHEUS_URL`) when the runners
// cannot reach the instances, as in a distributed k6-operator run. docs/fleet.md.
//
//   k6 run -e TARGETS=http://10.0.0.1:8080,http://10.0.0.2:8080 \
//          -e PERFKIT_URLS=http://10.0.0.1:6060,http://10.0.0.2:6060 examples/k6/fleet.js
//   k6 run -e TARGETS=... -e PROMETHEUS_URL=http://prometheus:9090 -e SELECTOR='job="ingest"' \
//          examples/k6/fleet.js
//
// -e variables (defaults in parentheses):
//   TARGETS (http://127.0.0.1:8080)  the instances' APIs, comma-separated
//   PERFKIT_URLS (http://127.0.0.1:6060)  their debug servers, comma-separated (any order)
//   PROMETHEUS_URL        read the signals from this Prometheus instead of PERFKIT_URLS
//   SELECTOR              label matchers of the instances' series there (e.g. job="ingest")
//   RATE_WINDOW (5s)      window of Prometheus rates and quantiles (>= 2 scrape intervals)
//   DURATION (20s)        length of every scenario
//   EVENTS_RATE (100)     POST /events per second over the whole fleet
//   PROGRESS_RATE (50)    GET /v1/progress/{user} per second over the whole fleet
//   HTTP_P95_MS (250)     p(95) latency bound per scenario, in ms
//   QUEUE_SATURATION_MAX (0.8), RESOURCE_SATURATION_MAX (1), POOL_SATURATION_MAX (0.9)
//                         bounds every instance must hold (as in gate.js)
//   INSTANCES             the `instance` tags to give a threshold of their own (queue, pool
//                         and connection-pool saturation), so the summary names the one
//                         that crossed; default: host:port of each of PERFKIT_URLS (the
//                         label Prometheus gives a target it scrapes at that address)
//   RESULTS_DIR (results) where fleet.json (the summary) goes

import { checkThresholds, instanceOf, pollEach, pollPrometheus, pollScenario, summary, thresholds } from '../../perfkit/k6/perfkit.js';
import { arrival, getProgressFrom, httpThresholds, num, postEventsTo, str, SUMMARY_TREND_STATS } from './lib.js';

const list = (v) => v.split(',').map((s) => s.trim().replace(/\/+$/, '')).filter((s) => s !== '');
const TARGETS = list(str('TARGETS', 'http://127.0.0.1:8080'));
const PERFKIT_URLS = list(str('PERFKIT_URLS', 'http://127.0.0.1:6060'));
const PROMETHEUS_URL = str('PROMETHEUS_URL', '');
const SELECTOR = str('SELECTOR', '');
const RATE_WINDOW = str('RATE_WINDOW', '5s');
const DURATION = str('DURATION', '20s');
const EVENTS_RATE = num('EVENTS_RATE', 100, { min: 1, integer: true });
const PROGRESS_RATE = num('PROGRESS_RATE', 50, { min: 1, integer: true });
const HTTP_P95_MS = num('HTTP_P95_MS', 250);
const QUEUE_SATURATION_MAX = num('QUEUE_SATURATION_MAX', 0.8);
const RESOURCE_SATURATION_MAX = num('RESOURCE_SATURATION_MAX', 1);
const POOL_SATURATION_MAX = num('POOL_SATURATION_MAX', 0.9);
const INSTANCES = list(str('INSTANCES', PERFKIT_URLS.map(instanceOf).join(',')));
if (TARGETS.length === 0) throw new Error('fleet.js: TARGETS names no instance');

// The same bounds once more per instance: the fleet-wide threshold says that one crossed,
// these say which.
const perInstance = {};
for (const i of INSTANCES) {
  perInstance[`perfkit_queue_saturation{instance:${i}}`] = [`max<${QUEUE_SATURATION_MAX}`];
  perInstance[`perfkit_pool_saturation{instance:${i}}`] = [`p(95)<${POOL_SATURATION_MAX}`];
  perInstance[`perfkit_resource_saturation{instance:${i}}`] = [`p(95)<${RESOURCE_SATURATION_MAX}`];
}

export const options = {
  discardResponseBodies: true,
  scenarios: {
    events: arrival(EVENTS_RATE, 'postEvents', DURATION),
    progress: arrival(PROGRESS_RATE, 'getProgress', DURATION),
    perfkit: pollScenario({ duration: DURATION, rate: 1 }),
  },
  thresholds: checkThresholds({
    ...httpThresholds(HTTP_P95_MS),
    ...thresholds({
      perfkit_queue_saturation: [`max<${QUEUE_SATURATION_MAX}`],
      perfkit_pool_saturation: [`p(95)<${POOL_SATURATION_MAX}`],
      perfkit_resource_saturation: [`p(95)<${RESOURCE_SATURATION_MAX}`],
      // Prometheus has no live-task growth or heap figure per poll; the snapshot poll does.
      ...(PROMETHEUS_URL ? { perfkit_tasks_alive_growth: null } : {}),
    }),
    ...perInstance,
  }),
  summaryTrendStats: SUMMARY_TREND_STATS,
};

let next = 0;
// Each VU walks the instances in turn from its own starting point, so the fleet gets an
// even share whatever the number of VUs.
function target() {
  next += 1;
  return TARGETS[(__VU + next) % TARGETS.length];
}

export function postEvents() {
  postEventsTo(target());
}

export function getProgress() {
  getProgressFrom(target());
}

export function perfkitPoll() {
  if (PROMETHEUS_URL) pollPrometheus({ url: PROMETHEUS_URL, selector: SELECTOR, window: RATE_WINDOW });
  else pollEach({ urls: PERFKIT_URLS });
}

export function handleSummary(data) {
  return summary(data, { name: 'fleet' });
}

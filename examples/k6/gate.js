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
//   TASK_GROWTH_MAX (50)  bound on the growth of live tracked tasks (per name) over the run
//   POOL_SATURATION_MAX (0.9)  bound on p(95) of every pool's busy/workers per poll interval
//   POOL_PANICS_MAX (0)   how many panicked pool jobs the run tolerates
//   FLUSH_P99_MAX_MS (250)  bound on the `db_flush` hot path's p99, in ms
//   PROFILE_SECONDS (5)   length of the CPU profile taken mid-run (0: none)
//   RESULTS_DIR (results) where the JSON summary (gate.json) and the profiles go:
//                         cpu.pb.gz and cpu.svg (the mid-run CPU profile), heap.pb.gz and
//                         heap.svg (the live heap at the end); open a .pb.gz with
//                         `go tool pprof -http=: results/cpu.pb.gz`

import http from 'k6/http';
import { check } from 'k6';
import { poll, pollScenario, profile, profileScenario, summary } from '../../perfkit/k6/perfkit.js';

function str(name, def) {
  const v = __ENV[name];
  return v === undefined || v === '' ? def : v;
}

function num(name, def, { min = 0, integer = false } = {}) {
  const raw = __ENV[name];
  if (raw === undefined || raw === '') return def;
  const v = Number(raw);
  if (!Number.isFinite(v) || v < min || (integer && !Number.isInteger(v))) {
    throw new Error(`-e ${name}=${raw}: expected ${integer ? 'an integer' : 'a number'} >= ${min}`);
  }
  return v;
}

const BASE_URL = str('BASE_URL', 'http://127.0.0.1:8080').replace(/\/+$/, '');
const PERFKIT_URL = str('PERFKIT_URL', 'http://127.0.0.1:6060').replace(/\/+$/, '');
const DURATION = str('DURATION', '20s');
const EVENTS_RATE = num('EVENTS_RATE', 100, { min: 1, integer: true });
const PROGRESS_RATE = num('PROGRESS_RATE', 50, { min: 1, integer: true });
const BATCH = num('BATCH', 10, { min: 1, integer: true });
const USERS = num('USERS', 1000, { min: 1, integer: true });
const HTTP_P95_MS = num('HTTP_P95_MS', 250);
const RSS_MAX_BYTES = num('RSS_MAX_BYTES', 536870912);
const QUEUE_SATURATION_MAX = num('QUEUE_SATURATION_MAX', 0.8);
const DROPPED_MAX = num('DROPPED_MAX', 0, { integer: true });
const TASK_GROWTH_MAX = num('TASK_GROWTH_MAX', 50);
const POOL_SATURATION_MAX = num('POOL_SATURATION_MAX', 0.9);
const POOL_PANICS_MAX = num('POOL_PANICS_MAX', 0, { integer: true });
const FLUSH_P99_MAX_MS = num('FLUSH_P99_MAX_MS', 250);
const PROFILE_SECONDS = num('PROFILE_SECONDS', 5, { integer: true });

// The CPU profile starts a quarter into the run, so it sees the load at full rate.
function quarterOf(duration) {
  const m = /^(\d+(?:\.\d+)?)(ms|s|m|h)$/.exec(duration);
  if (!m) return '0s';
  const ms = Number(m[1]) * { ms: 1, s: 1000, m: 60000, h: 3600000 }[m[2]];
  return `${Math.floor(ms / 4)}ms`;
}

const STATS = ['kills', 'deaths', 'assists', 'wins', 'score'];

// Enough VUs for the arrival rate at a few hundred ms of latency; k6 adds more up to maxVUs.
function arrival(rate, exec) {
  return {
    executor: 'constant-arrival-rate',
    rate,
    timeUnit: '1s',
    duration: DURATION,
    preAllocatedVUs: Math.max(2, Math.ceil(rate / 20)),
    maxVUs: Math.max(10, rate),
    exec,
  };
}

export const options = {
  discardResponseBodies: true,
  scenarios: {
    events: arrival(EVENTS_RATE, 'postEvents'),
    progress: arrival(PROGRESS_RATE, 'getProgress'),
    perfkit: pollScenario({ duration: DURATION, rate: 1 }),
    ...(PROFILE_SECONDS > 0
      ? { profile: profileScenario({ seconds: PROFILE_SECONDS, startTime: quarterOf(DURATION) }) }
      : {}),
  },
  thresholds: {
    'http_req_duration{scenario:events}': [`p(95)<${HTTP_P95_MS}`],
    'http_req_duration{scenario:progress}': [`p(95)<${HTTP_P95_MS}`],
    'http_req_failed{scenario:events}': ['rate<0.01'],
    'http_req_failed{scenario:progress}': ['rate<0.01'],
    perfkit_process_resident_memory_bytes: [`max<${RSS_MAX_BYTES}`],
    perfkit_queue_saturation: [`max<${QUEUE_SATURATION_MAX}`],
    perfkit_queue_dropped: [`count<=${DROPPED_MAX}`],
    perfkit_tasks_alive_growth: [`max<${TASK_GROWTH_MAX}`],
    perfkit_pool_saturation: [`p(95)<${POOL_SATURATION_MAX}`],
    perfkit_pool_panics: [`count<=${POOL_PANICS_MAX}`],
    'perfkit_hot_path_p99_seconds{function:db_flush}': [`max<${FLUSH_P99_MAX_MS / 1000}`],
    perfkit_polls: ['count>0'],
    perfkit_poll_errors: ['count==0'],
  },
  summaryTrendStats: ['avg', 'min', 'med', 'max', 'p(90)', 'p(95)', 'p(99)', 'count'],
};

function randomUser() {
  return `u${Math.floor(Math.random() * USERS)}`;
}

export function postEvents() {
  const events = [];
  for (let i = 0; i < BATCH; i += 1) {
    events.push({
      user_id: randomUser(),
      stat: STATS[Math.floor(Math.random() * STATS.length)],
      value: 1 + Math.floor(Math.random() * 10),
    });
  }
  const res = http.post(`${BASE_URL}/events`, JSON.stringify(events), {
    headers: { 'Content-Type': 'application/json' },
    tags: { name: 'POST /events' },
  });
  check(res, { 'POST /events is 202': (r) => r.status === 202 });
}

export function getProgress() {
  const res = http.get(`${BASE_URL}/v1/progress/${randomUser()}`, {
    tags: { name: 'GET /v1/progress/{user}' },
  });
  check(res, { 'GET /v1/progress is 200': (r) => r.status === 200 });
}

export function perfkitPoll() {
  poll({ url: PERFKIT_URL });
}

export function perfkitProfile() {
  profile({ url: PERFKIT_URL, seconds: PROFILE_SECONDS });
}

export function handleSummary(data) {
  return summary(data, { name: 'gate', profiles: true });
}

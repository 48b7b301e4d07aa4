// Shared by the example's k6 scripts (gate.js, phases.js, soak.js): reading -e variables,
// the two kinds of requests the `ingest` service takes (exported under the names the
// scripts' scenarios run), and the thresholds and summary statistics they have in common.

import http from 'k6/http';
import { check } from 'k6';

/** `-e NAME=value` as a string, or `def`. */
export function str(name, def) {
  const v = __ENV[name];
  return v === undefined || v === '' ? def : v;
}

/**
 * `-e NAME=value` as a number >= `min` (or > `above`, when given; an integer if asked), or
 * `def`; throws otherwise.
 */
export function num(name, def, { min = 0, above = null, integer = false } = {}) {
  const raw = __ENV[name];
  if (raw === undefined || raw === '') return def;
  const v = Number(raw);
  const low = above === null ? v < min : !(v > above);
  if (!Number.isFinite(v) || low || (integer && !Number.isInteger(v))) {
    const bound = above === null ? `>= ${min}` : `above ${above}`;
    throw new Error(`-e ${name}=${raw}: expected ${integer ? 'an integer' : 'a number'} ${bound}`);
  }
  return v;
}

export const BASE_URL = str('BASE_URL', 'http://127.0.0.1:8080').replace(/\/+$/, '');
export const PERFKIT_URL = str('PERFKIT_URL', 'http://127.0.0.1:6060').replace(/\/+$/, '');
const BATCH = num('BATCH', 10, { min: 1, integer: true });
const USERS = num('USERS', 1000, { min: 1, integer: true });
const STATS = ['kills', 'deaths', 'assists', 'wins', 'score'];

/** Milliseconds in a k6 duration such as `500ms`, `20s`, `2m`, `1m30s` or `1h` (null if not one). */
export function durationMs(d) {
  const text = String(d);
  if (!/^(\d+(?:\.\d+)?(ms|s|m|h))+$/.test(text)) return null;
  const part = /(\d+(?:\.\d+)?)(ms|s|m|h)/g;
  let total = 0;
  let m;
  while ((m = part.exec(text)) !== null) total += Number(m[1]) * { ms: 1, s: 1000, m: 60000, h: 3600000 }[m[2]];
  return total;
}

/** A constant-arrival-rate scenario running `exec` `rate` times a second. */
export function arrival(rate, exec, duration, extra = {}) {
  return Object.assign(
    {
      executor: 'constant-arrival-rate',
      rate,
      timeUnit: '1s',
      duration,
      // Enough VUs for the rate at a few hundred ms of latency; k6 adds more up to maxVUs.
      preAllocatedVUs: Math.max(2, Math.ceil(rate / 20)),
      maxVUs: Math.max(10, rate),
      exec,
    },
    extra,
  );
}

function randomUser() {
  return `u${Math.floor(Math.random() * USERS)}`;
}

/** POST /events with BATCH random events. */
export function postEvents() {
  postEventsTo(BASE_URL);
}

/** POST /events with BATCH random events to the service at `base`. */
export function postEventsTo(base) {
  const events = [];
  for (let i = 0; i < BATCH; i += 1) {
    events.push({
      user_id: randomUser(),
      stat: STATS[Math.floor(Math.random() * STATS.length)],
      value: 1 + Math.floor(Math.random() * 10),
    });
  }
  const res = http.post(`${base}/events`, JSON.stringify(events), {
    headers: { 'Content-Type': 'application/json' },
    tags: { name: 'POST /events' },
  });
  check(res, { 'POST /events is 202': (r) => r.status === 202 });
}

/** GET /v1/progress/{user} for a random user. */
export function getProgress() {
  getProgressFrom(BASE_URL);
}

/** GET /v1/progress/{user} for a random user from the service at `base`. */
export function getProgressFrom(base) {
  const res = http.get(`${base}/v1/progress/${randomUser()}`, {
    tags: { name: 'GET /v1/progress/{user}' },
  });
  check(res, { 'GET /v1/progress is 200': (r) => r.status === 200 });
}

/** The summary statistics every script reports; each Trend threshold's statistic is one. */
export const SUMMARY_TREND_STATS = ['avg', 'min', 'med', 'max', 'p(90)', 'p(95)', 'p(99)', 'count'];

/** p(95) latency and error-rate bounds on the `events` and `progress` scenarios. */
export function httpThresholds(p95Ms) {
  const t = {};
  for (const scenario of ['events', 'progress']) {
    t[`http_req_duration{scenario:${scenario}}`] = [`p(95)<${p95Ms}`];
    t[`http_req_failed{scenario:${scenario}}`] = ['rate<0.01'];
  }
  return t;
}

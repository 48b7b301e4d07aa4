// capacity.js: find the limit. Discrete levels of the combined mix (event writes plus API
// reads), from START_RATE events per second, times STEP per level, up to MAX_RATE; the run
// stops in the first level where a bound breaks, and the summary names the last level that
// held and the bound that gave way first (results/capacity.json). docs/capacity-playbook.md.
//
//   GATE_SCRIPT=capacity bash scripts/gate.sh   # exit 0 on a limit found or MAX_RATE held,
//                                               # 99 below MIN_RATE
//   mkdir -p results && k6 run examples/k6/capacity.js
//        # k6 alone exits 99 when it stopped at a limit (the stop is an abortOnFail
//        # threshold), 0 when every level held: the verdict is in results/capacity.json
//
// A level breaks when, in any poll window of it:
//   client side   its requests fail more than 1%, or a scenario's p95 reaches HTTP_P95_MS
//   perfkit side  a queue reaches QUEUE_SATURATION_MAX, items are dropped, a worker pool is
//                 busy POOL_SATURATION_MAX of a second, a runtime's probe p99 reaches
//                 SCHEDULE_DELAY_MAX_MS, or a connection pool has every connection in use
//
// -e variables (defaults in parentheses):
//   BASE_URL, PERFKIT_URL, PERFKIT_TOKEN, BATCH (10), USERS   as in gate.js
//   START_RATE (200)   events per second of the first level
//   STEP (1.5)         each level's rate is the previous one's times STEP
//   MAX_RATE (20000)   the last level's rate at most
//   LEVEL (8s)         how long each level is held
//   READ_RATIO (0.33)  GET /v1/progress/{user} per POST /events (the combined phase's mix)
//   MIN_RATE (0)       below this sustained rate the verdict is below_min (gate.sh: 99)
//   HTTP_P95_MS (250), QUEUE_SATURATION_MAX (0.8), POOL_SATURATION_MAX (0.9),
//   SCHEDULE_DELAY_MAX_MS (250)   the limits above
//   RESULTS_DIR (results) where capacity.json and report.json/.html go (k6 does not create it)

import exec from 'k6/execution';
import { capacityLevels, capacityPoll, capacitySummary, captureReport, pollScenario } from '../../perfkit/k6/perfkit.js';
import { arrival, durationMs, num, PERFKIT_URL, str } from './lib.js';

const START_RATE = num('START_RATE', 200, { min: 1 });
const STEP = num('STEP', 1.5, { above: 1 });
const MAX_RATE = num('MAX_RATE', 20000, { min: 1 });
const LEVEL = str('LEVEL', '8s');
const LEVEL_MS = durationMs(LEVEL);
const READ_RATIO = num('READ_RATIO', 0.33);
const MIN_RATE = num('MIN_RATE', 0);
const BATCH = num('BATCH', 10, { min: 1, integer: true });
const HTTP_P95_MS = num('HTTP_P95_MS', 250);
const QUEUE_SATURATION_MAX = num('QUEUE_SATURATION_MAX', 0.8);
const POOL_SATURATION_MAX = num('POOL_SATURATION_MAX', 0.9);
const SCHEDULE_DELAY_MAX_MS = num('SCHEDULE_DELAY_MAX_MS', 250);
if (LEVEL_MS === null || LEVEL_MS < 1000) throw new Error(`-e LEVEL=${LEVEL}: expected a duration of 1s or more, such as 8s or 1m30s`);
if (MAX_RATE < START_RATE) throw new Error(`-e MAX_RATE=${MAX_RATE}: below START_RATE (${START_RATE})`);
if (MIN_RATE > MAX_RATE) throw new Error(`-e MIN_RATE=${MIN_RATE}: above MAX_RATE (${MAX_RATE}), so no search could pass`);
// Each level posts rate / BATCH times a second, at least once: a batch larger than the
// first level's rate would load that level with more events than it says.
if (BATCH > START_RATE) throw new Error(`-e BATCH=${BATCH}: above START_RATE (${START_RATE}); a level posts START_RATE / BATCH times a second`);

/** The levels' rates in events per second: START_RATE × STEP^i, up to MAX_RATE. */
export const LEVELS = capacityLevels({ start: START_RATE, step: STEP, max: MAX_RATE });

const scenarios = { perfkit: pollScenario({ duration: `${LEVELS.length * LEVEL_MS}ms`, rate: 1 }) };
const thresholds = {
  // Any bound perfkit sees crossing stops the run (the level is then known from its tag).
  perfkit_capacity_crossed: [{ threshold: 'count==0', abortOnFail: true }],
};
LEVELS.forEach((rate, i) => {
  const tags = { level: String(i) };
  const posts = Math.max(1, Math.round(rate / BATCH));
  const reads = Math.max(1, Math.round(posts * READ_RATIO));
  const startTime = `${i * LEVEL_MS}ms`;
  scenarios[`level${i}_events`] = arrival(posts, 'postEvents', LEVEL, { startTime, tags });
  scenarios[`level${i}_progress`] = arrival(reads, 'getProgress', LEVEL, { startTime, tags });
  const abort = (threshold) => ({ threshold, abortOnFail: true, delayAbortEval: '2s' });
  thresholds[`http_req_failed{level:${i}}`] = [abort('rate<0.01')];
  thresholds[`http_req_duration{level:${i},scenario:level${i}_events}`] = [abort(`p(95)<${HTTP_P95_MS}`)];
  thresholds[`http_req_duration{level:${i},scenario:level${i}_progress}`] = [abort(`p(95)<${HTTP_P95_MS}`)];
  // Not bounds: what the summary reads per level.
  thresholds[`http_reqs{level:${i}}`] = ['count>=0'];
  thresholds[`perfkit_capacity_crossed{level:${i}}`] = ['count>=0'];
});

export const options = {
  discardResponseBodies: true,
  scenarios,
  thresholds,
  summaryTrendStats: ['avg', 'med', 'max', 'p(95)', 'p(99)', 'count'],
};

export { getProgress, postEvents } from './lib.js';

/** The level a poll's second belongs to (the middle of the second it reports on). */
function levelNow() {
  const i = Math.floor((exec.instance.currentTestRunDuration - 500) / LEVEL_MS);
  return Math.min(LEVELS.length - 1, Math.max(0, i));
}

// Drop totals between polls, for capacityCrossings.
const crossingState = {};
const LIMITS = {
  queueSaturation: QUEUE_SATURATION_MAX,
  poolSaturation: POOL_SATURATION_MAX,
  scheduleDelaySeconds: SCHEDULE_DELAY_MAX_MS / 1000,
};

export function perfkitPoll() {
  const level = levelNow();
  const found = capacityPoll({ url: PERFKIT_URL, level, limits: LIMITS, state: crossingState });
  if (found.length > 0) console.log(`capacity: level ${level} (${LEVELS[level]} events/s) broke: ${found.join('; ')}`);
}

const clientThresholds = (i) => [
  `http_req_failed{level:${i}}`,
  `http_req_duration{level:${i},scenario:level${i}_events}`,
  `http_req_duration{level:${i},scenario:level${i}_progress}`,
];

export function handleSummary(data) {
  const out = capacitySummary(data, {
    levels: LEVELS,
    levelMs: LEVEL_MS,
    minRate: MIN_RATE,
    clientThresholds,
    url: PERFKIT_URL,
    settings: { unit: 'events_per_second', start_rate: START_RATE, step: STEP, max_rate: MAX_RATE, level_seconds: LEVEL_MS / 1000, read_ratio: READ_RATIO, batch: BATCH },
  });
  const ran = out.levels.length ? out.levels[out.levels.length - 1].rate : null;
  let head;
  if (out.broken_rate === null) head = `every level held, up to ${ran} events/s (MAX_RATE ${MAX_RATE})`;
  else if (out.sustained_rate === null) head = `nothing sustained: the first level, ${out.broken_rate} events/s, broke (lower START_RATE)`;
  else head = `sustained ${out.sustained_rate} events/s, broke at ${out.broken_rate} events/s`;
  if (out.verdict === 'below_min') head += `; MIN_RATE is ${MIN_RATE}`;
  const lines = ['', `capacity: ${out.verdict}: ${head}`];
  const f = out.first_broken;
  if (f) lines.push(`capacity: first broken: ${f.title || f.metric}` + (f.source ? ` (${f.source})` : ''));
  for (const a of out.after.slice(0, 5)) lines.push(`capacity: then: ${a.title || a.metric}`);
  for (const h of out.headroom_at_sustained.slice(0, 5)) lines.push(`capacity: headroom at ${out.sustained_rate} events/s: ${h.text}`);
  const dir = __ENV.RESULTS_DIR || 'results';
  // The run report over the whole search, each level marked on its plots, with the answer
  // in it (report.json's `capacity`, and a section at the top of report.html).
  const phases = out.levels.map((l) => ({ name: `level${l.index}_${l.rate}`, at: (l.index * LEVEL_MS) / 1000 }));
  // The search stops by crossing an abortOnFail threshold, so k6's own verdict is FAIL
  // whenever a limit was found: the report carries the search's verdict instead.
  const verdict = {
    value: out.verdict === 'below_min' ? 'FAIL' : 'PASS',
    note: `capacity search: ${out.verdict}. A level that breaks stops the run through an abortOnFail threshold, so the crossed thresholds below are where the limit is, not a failure.`,
  };
  const section = { key: 'capacity', title: 'Capacity', value: out, lines: lines.slice(1).map((l) => l.replace(/^capacity: /, '')) };
  const captured = captureReport(data, { url: PERFKIT_URL, dir, phases, verdict, section });
  const files = captured.files;
  lines.push(...captured.lines.map((l) => `capacity: ${l.trim()}`));
  return Object.assign(files, {
    stdout: lines.join('\n') + '\n',
    [`${dir}/capacity.json`]: JSON.stringify(out, null, 2),
  });
}

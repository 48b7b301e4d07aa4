// phases.js: the load-test plan's phases in miniature against the `ingest` example, each
// with thresholds of its own, within 3 minutes on the defaults:
//
//   baseline  (0 – 1 PHASE)   light API and event traffic: everything must look idle
//   scale_up  (1 – 2 PHASE)   events ramp from the baseline rate to the combined rate
//   combined  (2 – 3 PHASE)   API reads and event writes together at the working rate
//   stress    (3 – 4 PHASE)   both at the stress rate: queues may fill, nothing may drop
//   recovery  (4 – 5 PHASE)   back to the baseline rate: queues must drain and the pool
//                             have headroom again for most of the phase
//
//   k6 run examples/k6/phases.js          # the service must be running (scripts/gate.sh
//                                         # shows how to start it; k6_gate.rs runs this)
//
// Every request carries the tag `phase`, and the perfkit poll tags what it records with
// the phase the polled second fell in, so thresholds read `metric{phase:stress}`.
//
// -e variables (defaults in parentheses):
//   BASE_URL, PERFKIT_URL, PERFKIT_TOKEN, BATCH, USERS   as in gate.js
//   PHASE (30s)             length of each phase (5 phases)
//   BASE_EVENTS_RATE (50)   POST /events per second in baseline and recovery
//   EVENTS_RATE (150)       ... in combined (scale_up ramps up to it)
//   STRESS_EVENTS_RATE (300) ... in stress
//   PROGRESS_RATE (50)      GET /v1/progress/{user} per second in combined (half of it in
//                           baseline, scale_up and recovery, double in stress)
//   HTTP_P95_MS (100)       p(95) bound for baseline, scale_up, combined and recovery
//   STRESS_HTTP_P95_MS (500) p(95) bound under stress
//   QUEUE_SATURATION_MAX (0.8) peak queue depth/capacity bound outside stress
//   STRESS_QUEUE_SATURATION_MAX (0.95) ... under stress
//   RESULTS_DIR (results)   where phases.json goes

import { checkThresholds, phasesOf, poll, pollScenario, summary } from '../../perfkit/k6/perfkit.js';
import exec from 'k6/execution';
import { arrival, durationMs, num, PERFKIT_URL, str, SUMMARY_TREND_STATS } from './lib.js';

const PHASE = str('PHASE', '30s');
const PHASE_MS = durationMs(PHASE);
if (PHASE_MS === null) throw new Error(`-e PHASE=${PHASE}: expected a duration such as 30s`);
const BASE_EVENTS_RATE = num('BASE_EVENTS_RATE', 50, { min: 1, integer: true });
const EVENTS_RATE = num('EVENTS_RATE', 150, { min: 1, integer: true });
const STRESS_EVENTS_RATE = num('STRESS_EVENTS_RATE', 300, { min: 1, integer: true });
const PROGRESS_RATE = num('PROGRESS_RATE', 50, { min: 2, integer: true });
const HTTP_P95_MS = num('HTTP_P95_MS', 100);
const STRESS_HTTP_P95_MS = num('STRESS_HTTP_P95_MS', 500);
const QUEUE_SATURATION_MAX = num('QUEUE_SATURATION_MAX', 0.8);
const STRESS_QUEUE_SATURATION_MAX = num('STRESS_QUEUE_SATURATION_MAX', 0.95);

const PHASES = ['baseline', 'scale_up', 'combined', 'stress', 'recovery'];

function at(i) {
  return `${i * PHASE_MS}ms`;
}

function steady(phase, i, eventsRate, progressRate) {
  const tags = { phase };
  return {
    [`${phase}_events`]: arrival(eventsRate, 'postEvents', PHASE, { startTime: at(i), tags }),
    [`${phase}_progress`]: arrival(progressRate, 'getProgress', PHASE, { startTime: at(i), tags }),
  };
}

const half = Math.max(1, Math.floor(PROGRESS_RATE / 2));

const scenarios = Object.assign(
  {},
  steady('baseline', 0, BASE_EVENTS_RATE, half),
  {
    scale_up_events: {
      executor: 'ramping-arrival-rate',
      startRate: BASE_EVENTS_RATE,
      timeUnit: '1s',
      stages: [{ target: EVENTS_RATE, duration: PHASE }],
      preAllocatedVUs: Math.max(2, Math.ceil(EVENTS_RATE / 20)),
      maxVUs: Math.max(10, EVENTS_RATE),
      startTime: at(1),
      exec: 'postEvents',
      tags: { phase: 'scale_up' },
    },
    scale_up_progress: arrival(half, 'getProgress', PHASE, { startTime: at(1), tags: { phase: 'scale_up' } }),
  },
  steady('combined', 2, EVENTS_RATE, PROGRESS_RATE),
  steady('stress', 3, STRESS_EVENTS_RATE, PROGRESS_RATE * 2),
  steady('recovery', 4, BASE_EVENTS_RATE, half),
  { perfkit: pollScenario({ duration: `${5 * PHASE_MS}ms`, rate: 1 }) },
);

const thresholds = {
  perfkit_polls: ['count>0'],
  perfkit_poll_errors: ['count==0'],
};
for (const phase of PHASES) {
  const stress = phase === 'stress';
  thresholds[`http_req_duration{phase:${phase}}`] = [`p(95)<${stress ? STRESS_HTTP_P95_MS : HTTP_P95_MS}`];
  thresholds[`http_req_failed{phase:${phase}}`] = ['rate<0.01'];
  // Recovery starts by draining what the stress left queued: its bound is on the median,
  // i.e. the queues must be back under it for most of the phase.
  thresholds[`perfkit_queue_saturation{phase:${phase}}`] = [
    `${phase === 'recovery' ? 'med' : 'max'}<${stress ? STRESS_QUEUE_SATURATION_MAX : QUEUE_SATURATION_MAX}`,
  ];
  thresholds[`perfkit_queue_dropped{phase:${phase}}`] = ['count<=0'];
  thresholds[`perfkit_http_5xx{phase:${phase}}`] = ['count<=0'];
}
// Live tasks must not keep growing, and once the stress is over the pool must have headroom
// again for most of the recovery phase (its first seconds drain what stress left queued).
thresholds['perfkit_tasks_alive_growth{phase:recovery}'] = ['max<50'];
thresholds['perfkit_pool_saturation{phase:recovery}'] = ['med<0.9'];

export const options = {
  discardResponseBodies: true,
  scenarios,
  // Throws at start-up on a filter tag a metric never carries (it would pass silently).
  thresholds: checkThresholds(thresholds),
  summaryTrendStats: SUMMARY_TREND_STATS,
};

/**
 * The phase a poll's figures belong to. A poll reports what happened since the previous
 * one, a second earlier (drops, busy time), so it is tagged with the phase of the middle
 * of that second: the drops seen by the first poll after the stress phase ended belong to
 * the stress phase.
 */
function pollPhase() {
  const i = Math.floor((exec.instance.currentTestRunDuration - 500) / PHASE_MS);
  return PHASES[Math.min(PHASES.length - 1, Math.max(0, i))];
}

export { getProgress, postEvents } from './lib.js';

export function perfkitPoll() {
  poll({ url: PERFKIT_URL, tags: { phase: pollPhase() } });
}

export function handleSummary(data) {
  return summary(data, { name: 'phases', report: true, phases: phasesOf(scenarios) });
}

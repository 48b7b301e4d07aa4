/**
 * perfkit k6 helper: poll a perfkit debug server from a k6 run, turn what it reports into
 * k6 metrics, gate the run on them with thresholds, and print a short verdict.
 *
 * Getting the module
 * ------------------
 * k6 imports modules only from `file` and `https` URLs, so keep a local copy next to your
 * scripts. Every perfkit debug server serves the copy that matches its own snapshot schema:
 *
 *     curl -o perfkit.js http://127.0.0.1:6060/debug/perfkit/k6.js
 *
 * and import it by relative path: `import { poll, pollScenario, summary } from './perfkit.js';`
 * No network imports are used (no jslib.k6.io), so it works offline.
 *
 * Environment (`k6 run -e NAME=value`)
 * ------------------------------------
 *   PERFKIT_URL    debug server base URL, default `http://127.0.0.1:6060`
 *   PERFKIT_TOKEN  bearer token, sent as `Authorization: Bearer ...` when set
 *   RESULTS_DIR    where `summary()` writes its JSON file, default `results`
 *
 * Exports
 * -------
 * `pollScenario({ duration, rate = 1, exec = 'perfkitPoll', ...extra })`
 *     A `constant-arrival-rate` scenario object (timeUnit 1s, 1 pre-allocated VU) for
 *     `options.scenarios`, running `exec` `rate` times a second for `duration`. `exec` must
 *     name a function exported by your main script, e.g.
 *     `export function perfkitPoll() { poll(); }`. `extra` (e.g. `startTime`,
 *     `gracefulStop`) is copied into the scenario.
 *
 * `poll({ url = PERFKIT_URL, token = PERFKIT_TOKEN, tags = {}, window } = {})`
 *     GETs `${url}/debug/perfkit/snapshot?window=N` (request tagged `{ perfkit: 'poll' }` and
 *     named `GET /debug/perfkit/snapshot`), where N is `window` or, by default, the whole
 *     seconds since this VU's previous poll (1 for the first; see `pollWindow`). The server
 *     answers each entry's figures over the last N seconds (gauge maxima, histogram
 *     quantiles, busy ratios) besides its lifetime ones, the same for every reader; so a
 *     Trend below records one value per poll window, and `max<` on it means "in no poll
 *     window of the run did it exceed", however long the run. On failure adds 1 to Counter
 *     `perfkit_poll_errors` (tagged `reason`: `network`, `status_NNN`, `json`,
 *     `schema_version`) and returns null. On success adds 1 to Counter `perfkit_polls`,
 *     records every figure listed in `SNAPSHOT_TRENDS` into its Trend and every total in
 *     `SNAPSHOT_COUNTERS` into its Counter (as the increase since the previous poll), and
 *     returns the parsed snapshot. Trends over the poll's window (a quantile window with no
 *     samples adds none):
 *       perfkit_process_resident_memory_bytes, perfkit_heap_bytes (peak)
 *       perfkit_runtime_schedule_delay_p99_seconds (the probe's p99 lateness, raised to
 *       how late it is now), perfkit_runtime_busy_ratio (busy time / (window x workers)),
 *       perfkit_runtime_alive_tasks (peak)             (runtimes, tagged `runtime`)
 *       perfkit_queue_saturation (peak depth/capacity), perfkit_queue_depth (peak),
 *       perfkit_queue_wait_p99_seconds                 (queues, tagged `queue`)
 *       perfkit_batch_pending (peak), perfkit_batch_size_p50,
 *       perfkit_batch_flush_p99_seconds                (batchers, tagged `batcher`)
 *       perfkit_pool_saturation (busy time / (window x workers)), perfkit_pool_busy (peak),
 *       perfkit_pool_task_p99_seconds                  (pools, tagged `pool`)
 *       perfkit_lock_wait_p99_seconds, perfkit_lock_waiters (peak),
 *       perfkit_lock_contended_ratio                   (locks, tagged `lock`)
 *       perfkit_semaphore_saturation (peak in use / permits), perfkit_semaphore_waiters
 *       (peak), perfkit_semaphore_acquire_p99_seconds  (semaphores, tagged `semaphore`)
 *       perfkit_resource_saturation (peak in use / max), perfkit_resource_in_use (peak),
 *       perfkit_resource_waiters (peak, pools that count them),
 *       perfkit_resource_acquire_p99_seconds           (resources, tagged `resource`)
 *       perfkit_hot_path_p50_seconds, perfkit_hot_path_p99_seconds,
 *       perfkit_hot_path_in_flight (peak)              (hot_paths, tagged `function`)
 *       perfkit_tasks_alive (peak)                     (tasks, tagged `task`)
 *       perfkit_http_p95_seconds, perfkit_http_p99_seconds,
 *       perfkit_http_in_flight (peak)     (http_routes, tagged `route`: "METHOD /template")
 *     Trends of the value at the poll: perfkit_process_threads, perfkit_process_open_fds,
 *       perfkit_runtime_global_queue_depth, perfkit_queue_oldest_age_seconds,
 *       perfkit_pool_queue_depth.
 *     Lifetime quantiles (since the series was created), under their own names:
 *       perfkit_queue_wait_lifetime_p99_seconds, perfkit_lock_wait_lifetime_p99_seconds,
 *       perfkit_batch_size_lifetime_p50,
 *       perfkit_batch_flush_lifetime_p99_seconds, perfkit_pool_task_lifetime_p99_seconds,
 *       perfkit_hot_path_lifetime_p50_seconds, perfkit_hot_path_lifetime_p99_seconds,
 *       perfkit_http_lifetime_p95_seconds, perfkit_http_lifetime_p99_seconds.
 *     perfkit_tasks_alive_growth: alive now minus alive at this VU's first poll, per
 *       task name (names first seen later grow from 0): `max<N` catches a leak
 *     Counters: perfkit_queue_dropped (tagged `queue`, `reason`: full, oldest, closed,
 *       shutdown, flush_failed), perfkit_queue_rejected (`queue`), perfkit_batch_dead_lettered
 *       (`batcher`), perfkit_hot_path_errors and perfkit_hot_path_panics (`function`),
 *       perfkit_http_5xx (`route`), perfkit_pool_panics and perfkit_pool_cancelled (`pool`; a pool's
 *       queue also reports as a queue named after the pool), perfkit_lock_panics (`lock`),
 *       perfkit_semaphore_timeouts (`semaphore`), perfkit_resource_timeouts and
 *       perfkit_resource_errors (`resource`).
 *     Null figures (e.g. process fields on non-Linux) are skipped.
 *
 *     `tags` are added to every sample this poll records (e.g. `{ phase: 'stress' }`, so
 *     thresholds can be set per phase); counter deltas are still taken per series.
 *     Growth since this VU's first poll (`SNAPSHOT_GROWTH`), for soak runs:
 *       perfkit_process_rss_growth_bytes, perfkit_heap_growth_bytes
 *
 * `pollWindow(nowMs, previousMs)`
 *     The window `poll` asks for by default: ceil((now - previous) / 1 s) within 1..=300.
 *
 * `pollEach({ urls, token = PERFKIT_TOKEN, tags = {} })`
 *     `poll` on each of several debug servers (the replicas of a service), every sample also
 *     tagged `instance` (`host:port`, `instanceOf(url)`). Windows, counter deltas and growth
 *     baselines are kept per URL, so the thresholds hold every instance and
 *     `perfkit_queue_saturation{instance:10.0.0.7:6060}` names one. docs/fleet.md.
 *
 * `pollPrometheus({ url = PROMETHEUS_URL, selector = '', window = '15s', tags = {} })`
 *     The same metrics read from a Prometheus server that scrapes the instances
 *     (`PROMETHEUS_SIGNALS`: PromQL per metric, `%S` the `selector`'s matchers, `%W` the
 *     rate window), each sample tagged `instance` and the element's tag: for runners that
 *     cannot reach the instances. Counters take the increase of the totals between polls.
 *     No task or memory growth. Returns the number of series read, or null on failure
 *     (`perfkit_poll_errors`).
 *
 * `bucketDelta(now, before)`, `bucketQuantile(buckets, q)`
 *     For windows of your own from the sparse `buckets` ([value, count], counts only grow)
 *     every snapshot histogram carries: the difference of two polls, and its quantile.
 *
 * `profileScenario({ seconds = 5, startTime = '0s', exec = 'perfkitProfile', ...extra })`
 *     A one-iteration scenario that runs `exec` once at `startTime`, e.g.
 *     `export function perfkitProfile() { profile({ seconds: 5 }); }`, so that a CPU
 *     profile is taken while the load runs.
 *
 * `profile({ url = PERFKIT_URL, token = PERFKIT_TOKEN, seconds = 5, heap = true } = {})`
 *     GETs `/debug/pprof/profile?seconds=N` (tagged `{ perfkit: 'profile' }`) and discards
 *     the answer: the server keeps it for `/debug/pprof/profile/last` and for the run
 *     report's top functions. Returns the status (200 also when it joined a profile already
 *     running, e.g. a continuous profiler's, and got that one; 409 if one started from code
 *     was running; 501
 *     without the `cpu-profiling` feature). With `heap`, first takes a heap profile
 *     (`/debug/pprof/heap?debug=1`), so the report can show the live heap's growth by
 *     allocation site up to the one `captureProfiles` takes at the end.
 *
 * `captureProfiles({ url = PERFKIT_URL, token = PERFKIT_TOKEN, dir = RESULTS_DIR || 'results' } = {})`
 *     For `handleSummary`: fetches the last CPU profile (pprof and SVG flame graph) and the
 *     live heap profile (pprof and SVG), and returns `{ files, lines }`: `files` maps
 *     `${dir}/cpu.pb.gz`, `${dir}/cpu.svg`, `${dir}/heap.pb.gz`, `${dir}/heap.svg` to their
 *     bodies (only those that answered 200), ready to merge into `handleSummary`'s return
 *     value; `lines` says where each went, or why it is missing, with the
 *     `go tool pprof` command to open it. `summary(data, { profiles: true })` does this for
 *     you.
 *
 * `SNAPSHOT_TRENDS`, `SNAPSHOT_COUNTERS`
 *     The mappings from snapshot sections and fields to Trend and Counter names
 *     (read-only; nested fields are written as dotted paths, e.g. `wait_seconds.p99`).
 *
 * `summary(data, { dir = RESULTS_DIR || 'results', name = 'summary', profiles = false, report = false, phases = [] } = {})`
 *     For `export function handleSummary(data)`. Returns
 *     `{ stdout: text, [`${dir}/${name}.json`]: JSON.stringify(data, null, 2) }` (k6 does
 *     not create `dir`: make it before the run), plus the profile files of
 *     `captureProfiles` when `profiles` is true and `report.json` and `report.html` of
 *     `captureReport` when `report` is true, where text
 *     has the HTTP request count, rate, p(95) and failure rate, then one line per threshold:
 *       `✓ <metric>: <expr>  <value>` or `✗ <metric>: <expr>  CROSSED  <value>`.
 *     A Trend with no samples passes any threshold in k6; add 'count' to
 *     `options.summaryTrendStats` and such lines say `no samples` instead of a value.
 *
 * `captureReport(data, { url = PERFKIT_URL, token = PERFKIT_TOKEN, dir = RESULTS_DIR || 'results', phases = [] } = {})`
 *     For `handleSummary`: fetches `/debug/perfkit/report` over the run as JSON and as
 *     HTML, adds k6's verdicts (every threshold, the HTTP figures, the client latency of
 *     every `http_req_duration` sub-metric, e.g. per scenario or phase) to both, and returns
 *     `{ files, lines, report }` (`${dir}/report.json`, `${dir}/report.html`, a three-line
 *     digest). `phases` (`[{ name, at }]`, `at` in seconds from the run's start, or
 *     `phasesOf(options.scenarios)`) are marked on the report's plots.
 *     `summary(data, { report: true, phases })` does this for you.
 *
 * `phasesOf(scenarios)`
 *     The phases of `options.scenarios`: for each distinct `tags.phase`, its earliest
 *     `startTime`, as `[{ name, at }]` sorted by `at` (seconds).
 *
 * `thresholdResults(data)`
 *     Every threshold in summary `data` as `{ metric, expr, ok, stat, value }`, sorted.
 *
 * `thresholdsOk(data)`
 *     True when every threshold in summary `data` held.
 *
 * Example
 * -------
 *     import { poll, pollScenario, summary } from './perfkit.js';
 *     export const options = {
 *       scenarios: { load: { ... }, perfkit: pollScenario({ duration: '30s' }) },
 *       thresholds: {
 *         perfkit_process_resident_memory_bytes: ['max<536870912'],
 *         perfkit_polls: ['count>0'],
 *         perfkit_poll_errors: ['count==0'],
 *       },
 *     };
 *     export function perfkitPoll() { poll(); }
 *     export function handleSummary(data) { return summary(data); }
 *
 * Snapshot schema version 1 (`GET /debug/perfkit/snapshot`):
 *   { schema_version, perfkit_version, timestamp_seconds, uptime_seconds,
 *     process: { resident_memory_bytes, virtual_memory_bytes, threads, open_fds, max_fds,
 *                cpu_seconds_total, start_time_seconds },
 *     runtimes: [{ name, workers, alive_tasks, global_queue_depth, busy_seconds_total,
 *                  busy_ratio, park_total, schedule_delay_seconds, probe_late_seconds,
 *                  probe, window }],
 *     window: { seconds, resident_memory_bytes_max, heap_allocated_bytes_max }  (with ?window)
 *     queues: [], batchers: [], pools: [], tasks: [], hot_paths: [] }
 */

import { sleep } from 'k6';
import http from 'k6/http';
import { Counter, Trend } from 'k6/metrics';

/** Snapshot schema version this module understands. */
export const SCHEMA_VERSION = 1;

/** Path of the snapshot endpoint on the debug server. */
export const SNAPSHOT_PATH = '/debug/perfkit/snapshot';

const DEFAULT_PERFKIT_URL = 'http://127.0.0.1:6060';

/**
 * Which snapshot figures become which Trends.
 *
 * `section`: key in the snapshot. `tag`: for list sections, the tag key that carries each
 * element's `name` (one Trend, one series per element). `fields`: snapshot field -> Trend.
 * To follow a new figure, add a row here: the Trend is created at init time from this table.
 */
export const SNAPSHOT_TRENDS = Object.freeze([
  {
    section: 'process',
    fields: {
      threads: 'perfkit_process_threads',
      open_fds: 'perfkit_process_open_fds',
    },
  },
  {
    // The snapshot's top-level `window` object: process figures over the poll's window.
    section: 'window',
    fields: {
      resident_memory_bytes_max: 'perfkit_process_resident_memory_bytes',
      // Live heap bytes: jemalloc's `stats.allocated` with the `heap-profiling` feature,
      // else the counting allocator's figure (`perfkit::alloc::Counting`); absent with
      // neither.
      heap_allocated_bytes_max: 'perfkit_heap_bytes',
    },
  },
  {
    section: 'runtimes',
    tag: 'runtime',
    fields: {
      'window.alive_tasks_max': 'perfkit_runtime_alive_tasks',
      global_queue_depth: 'perfkit_runtime_global_queue_depth',
      'window.busy_ratio': 'perfkit_runtime_busy_ratio',
      // The probe's p99 lateness over the window, raised to how late it is now: a starved
      // probe records nothing until it runs.
      'window.schedule_delay_p99_seconds': 'perfkit_runtime_schedule_delay_p99_seconds',
    },
  },
  {
    section: 'queues',
    tag: 'queue',
    fields: {
      // The peak depth/capacity in the window, so a spike between two polls still reaches
      // the threshold.
      'window.saturation_max': 'perfkit_queue_saturation',
      'window.depth_max': 'perfkit_queue_depth',
      oldest_age_seconds: 'perfkit_queue_oldest_age_seconds',
      'window.wait_seconds.p99': 'perfkit_queue_wait_p99_seconds',
      'wait_seconds.p99': 'perfkit_queue_wait_lifetime_p99_seconds',
    },
  },
  {
    section: 'tasks',
    tag: 'task',
    fields: {
      'window.alive_max': 'perfkit_tasks_alive',
    },
  },
  {
    section: 'batchers',
    tag: 'batcher',
    fields: {
      'window.pending_max': 'perfkit_batch_pending',
      'window.batch_size.p50': 'perfkit_batch_size_p50',
      'window.flush_seconds.p99': 'perfkit_batch_flush_p99_seconds',
      'batch_size.p50': 'perfkit_batch_size_lifetime_p50',
      'flush_seconds.p99': 'perfkit_batch_flush_lifetime_p99_seconds',
    },
  },
  {
    section: 'hot_paths',
    tag: 'function',
    fields: {
      'window.seconds.p99': 'perfkit_hot_path_p99_seconds',
      'window.seconds.p50': 'perfkit_hot_path_p50_seconds',
      'window.in_flight_max': 'perfkit_hot_path_in_flight',
      'seconds.p99': 'perfkit_hot_path_lifetime_p99_seconds',
      'seconds.p50': 'perfkit_hot_path_lifetime_p50_seconds',
    },
  },
  {
    // perfkit::http::MetricsLayer: one element per method and route template, named
    // "METHOD /route/{template}".
    section: 'http_routes',
    tag: 'route',
    fields: {
      'window.seconds.p95': 'perfkit_http_p95_seconds',
      'window.seconds.p99': 'perfkit_http_p99_seconds',
      'window.in_flight_max': 'perfkit_http_in_flight',
      'seconds.p95': 'perfkit_http_lifetime_p95_seconds',
      'seconds.p99': 'perfkit_http_lifetime_p99_seconds',
    },
  },
  {
    section: 'pools',
    tag: 'pool',
    fields: {
      // Busy time over the window divided by (window x workers).
      'window.busy_ratio': 'perfkit_pool_saturation',
      'window.busy_max': 'perfkit_pool_busy',
      depth: 'perfkit_pool_queue_depth',
      'window.task_seconds.p99': 'perfkit_pool_task_p99_seconds',
      'task_seconds.p99': 'perfkit_pool_task_lifetime_p99_seconds',
    },
  },
  {
    // perfkit::sync locks: waits are recorded only for acquisitions that had to wait.
    section: 'locks',
    tag: 'lock',
    fields: {
      'window.wait_seconds.p99': 'perfkit_lock_wait_p99_seconds',
      'window.waiters_max': 'perfkit_lock_waiters',
      'window.contended_ratio': 'perfkit_lock_contended_ratio',
      'wait_seconds.p99': 'perfkit_lock_wait_lifetime_p99_seconds',
    },
  },
  {
    section: 'semaphores',
    tag: 'semaphore',
    fields: {
      // The peak permits in use over the window divided by the permits.
      'window.saturation_max': 'perfkit_semaphore_saturation',
      'window.waiters_max': 'perfkit_semaphore_waiters',
      'window.acquire_seconds.p99': 'perfkit_semaphore_acquire_p99_seconds',
    },
  },
  {
    // perfkit::resource connection pools: the peak checked out over the window divided by
    // the pool's max; waiters only for pools that count them (deadpool).
    section: 'resources',
    tag: 'resource',
    fields: {
      'window.saturation_max': 'perfkit_resource_saturation',
      'window.in_use_max': 'perfkit_resource_in_use',
      'window.waiters_max': 'perfkit_resource_waiters',
      'window.acquire_seconds.p99': 'perfkit_resource_acquire_p99_seconds',
    },
  },
]);

/**
 * Which cumulative snapshot totals become k6 Counters. Each poll adds the increase since
 * the previous poll (the first poll adds the whole total, i.e. counts since the service
 * started: gate a freshly started service). `fields`: snapshot field -> [Counter, extra tags].
 */
export const SNAPSHOT_COUNTERS = Object.freeze([
  {
    section: 'queues',
    tag: 'queue',
    fields: {
      'dropped.full': ['perfkit_queue_dropped', { reason: 'full' }],
      'dropped.oldest': ['perfkit_queue_dropped', { reason: 'oldest' }],
      'dropped.closed': ['perfkit_queue_dropped', { reason: 'closed' }],
      'dropped.shutdown': ['perfkit_queue_dropped', { reason: 'shutdown' }],
      rejected: ['perfkit_queue_rejected', {}],
    },
  },
  {
    // Batches dropped after failed flushes count as drops of the batcher's intake queue,
    // so they carry the `queue` tag like every other drop.
    section: 'batchers',
    tag: 'queue',
    fields: {
      dropped: ['perfkit_queue_dropped', { reason: 'flush_failed' }],
    },
  },
  {
    section: 'batchers',
    tag: 'batcher',
    fields: {
      dead_lettered: ['perfkit_batch_dead_lettered', {}],
    },
  },
  {
    section: 'hot_paths',
    tag: 'function',
    fields: {
      errors: ['perfkit_hot_path_errors', {}],
      panics: ['perfkit_hot_path_panics', {}],
    },
  },
  {
    section: 'pools',
    tag: 'pool',
    fields: {
      'tasks.panic': ['perfkit_pool_panics', {}],
      'tasks.cancelled': ['perfkit_pool_cancelled', {}],
    },
  },
  {
    section: 'http_routes',
    tag: 'route',
    fields: {
      errors: ['perfkit_http_5xx', {}],
    },
  },
  {
    section: 'locks',
    tag: 'lock',
    fields: {
      panics: ['perfkit_lock_panics', {}],
    },
  },
  {
    section: 'semaphores',
    tag: 'semaphore',
    fields: {
      timeouts: ['perfkit_semaphore_timeouts', {}],
    },
  },
  {
    section: 'resources',
    tag: 'resource',
    fields: {
      timeouts: ['perfkit_resource_timeouts', {}],
      errors: ['perfkit_resource_errors', {}],
    },
  },
]);

// k6 custom metrics must be created in the init context, i.e. at module load.
const polls = new Counter('perfkit_polls');
const pollErrors = new Counter('perfkit_poll_errors');
const trends = {};
for (const { fields } of SNAPSHOT_TRENDS) {
  for (const metric of Object.values(fields)) {
    if (!trends[metric]) trends[metric] = new Trend(metric);
  }
}
const counters = {};
for (const { fields } of SNAPSHOT_COUNTERS) {
  for (const [metric] of Object.values(fields)) {
    if (!counters[metric]) counters[metric] = new Counter(metric);
  }
}
// Last total seen per counter series (and per instance polled), for deltas. Per VU: the
// poll scenario runs one VU.
const lastTotals = {};
// Growth of live tracked tasks since the first poll, per task name: the leak signal.
const taskGrowth = new Trend('perfkit_tasks_alive_growth');
// Alive tasks per name at the first poll, per instance polled.
const taskBaselines = {};

/** A `constant-arrival-rate` scenario that runs `exec` (default `perfkitPoll`) `rate`/s. */
export function pollScenario({ duration, rate = 1, exec = 'perfkitPoll', ...extra } = {}) {
  if (!duration) throw new Error('perfkit.pollScenario: `duration` is required, e.g. "30s"');
  return Object.assign(
    {
      executor: 'constant-arrival-rate',
      rate,
      timeUnit: '1s',
      duration,
      // One VU: counters are deltas between this VU's polls, so a second VU would count
      // every increase twice. A slow poll skips a beat instead.
      preAllocatedVUs: 1,
      maxVUs: 1,
      exec,
      tags: { perfkit: 'poll' },
    },
    extra,
  );
}

/** A one-iteration scenario that takes a CPU profile at `startTime` (see `profile`). */
export function profileScenario({ seconds = 5, startTime = '0s', exec = 'perfkitProfile', ...extra } = {}) {
  return Object.assign(
    {
      executor: 'shared-iterations',
      vus: 1,
      iterations: 1,
      startTime,
      // The profile request lasts `seconds`; leave room for symbolizing.
      maxDuration: `${Math.ceil(seconds) + 60}s`,
      exec,
      tags: { perfkit: 'profile' },
    },
    extra,
  );
}

function authParams(token, extra) {
  const params = Object.assign({}, extra);
  if (token) params.headers = { Authorization: `Bearer ${token}` };
  return params;
}

/** Asks for a CPU profile of `seconds`; the server keeps it as `/debug/pprof/profile/last`. */
export function profile({ url = __ENV.PERFKIT_URL || DEFAULT_PERFKIT_URL, token = __ENV.PERFKIT_TOKEN, seconds = 5, heap = true } = {}) {
  const base = url.replace(/\/+$/, '');
  if (heap) {
    // A 501 (no heap profiling in this build) is fine: the report then shows no growth.
    http.get(
      `${base}/debug/pprof/heap?debug=1`,
      authParams(token, { tags: { perfkit: 'profile', name: 'GET /debug/pprof/heap' }, responseType: 'none', timeout: '60s' }),
    );
  }
  const res = http.get(
    `${base}/debug/pprof/profile?seconds=${seconds}`,
    authParams(token, {
      tags: { perfkit: 'profile', name: 'GET /debug/pprof/profile' },
      responseType: 'none',
      timeout: `${Math.ceil(seconds) + 60}s`,
    }),
  );
  return res.status;
}

/** Profiles to save from `handleSummary`: `{ files: { path: body }, lines: [text] }`. */
export function captureProfiles({
  url = __ENV.PERFKIT_URL || DEFAULT_PERFKIT_URL,
  token = __ENV.PERFKIT_TOKEN,
  dir = __ENV.RESULTS_DIR || 'results',
} = {}) {
  const base = url.replace(/\/+$/, '');
  const wanted = [
    ['cpu.pb.gz', '/debug/pprof/profile/last', 'CPU profile taken during the run', true],
    ['cpu.svg', '/debug/pprof/profile/last?format=flamegraph', 'CPU flame graph', false],
    ['heap.pb.gz', '/debug/pprof/heap', 'live heap at the end of the run', true],
    ['heap.svg', '/debug/pprof/heap?format=flamegraph', 'live heap flame graph', false],
  ];
  const files = {};
  const lines = [];
  for (const [file, path, what, pprof] of wanted) {
    const res = http.get(`${base}${path}`, authParams(token, { responseType: 'binary', timeout: '60s' }));
    const target = `${dir}/${file}`;
    if (res.status === 200) {
      files[target] = res.body;
      lines.push(`  ${what}: ${target}` + (pprof ? `  (go tool pprof -top ${target})` : ''));
    } else {
      let reason = res.status === 0 ? 'no answer' : `status ${res.status}`;
      if (res.status !== 0 && res.body) {
        const text = String.fromCharCode.apply(null, new Uint8Array(res.body).slice(0, 200));
        reason += `: ${text.split('\n')[0]}`;
      }
      lines.push(`  ${what}: not saved (${reason})`);
    }
  }
  return { files, lines };
}

/** The longest window the server keeps, in seconds. */
export const MAX_WINDOW_SECONDS = 300;
// When this VU's previous poll of each URL was sent (ms since the epoch), for the next
// poll's window.
const lastPollAt = {};

/**
 * The window a poll asks for: the whole seconds since this VU's previous poll, rounded up
 * (1 for the first), within 1..=300.
 */
export function pollWindow(nowMs, previousMs) {
  if (typeof previousMs !== 'number' || !(nowMs > previousMs)) return 1;
  return Math.min(MAX_WINDOW_SECONDS, Math.max(1, Math.ceil((nowMs - previousMs) / 1000)));
}

/** GETs the snapshot, records it into k6 metrics, and returns it (null on failure). */
export function poll({
  url = __ENV.PERFKIT_URL || DEFAULT_PERFKIT_URL,
  token = __ENV.PERFKIT_TOKEN,
  tags = {},
  window = undefined,
} = {}) {
  const now = Date.now();
  const base = url.replace(/\/+$/, '');
  const seconds = window === undefined ? pollWindow(now, lastPollAt[base]) : window;
  if (!Number.isInteger(seconds) || seconds < 1 || seconds > MAX_WINDOW_SECONDS) {
    throw new Error(`perfkit.poll: window must be a whole number of seconds from 1 to ${MAX_WINDOW_SECONDS}, got ${window}`);
  }
  lastPollAt[base] = now;
  const params = {
    tags: { perfkit: 'poll', name: `GET ${SNAPSHOT_PATH}` },
    responseType: 'text',
    timeout: '5s',
  };
  if (token) params.headers = { Authorization: `Bearer ${token}` };
  const res = http.get(`${base}${SNAPSHOT_PATH}?window=${seconds}`, params);
  if (res.status !== 200) {
    return failed(res.status === 0 ? 'network' : `status_${res.status}`);
  }
  let snapshot;
  try {
    snapshot = JSON.parse(res.body);
  } catch (_) {
    return failed('json');
  }
  if (!snapshot || snapshot.schema_version !== SCHEMA_VERSION) return failed('schema_version');
  polls.add(1);
  // Keep `perfkit_poll_errors` present (at 0) in the summary so `count==0` is evaluated.
  pollErrors.add(0);
  record(snapshot, tags || {}, base);
  return snapshot;
}

/** `host:port` of a URL, the `instance` tag `pollEach` gives its samples. */
export function instanceOf(url) {
  const m = /^[a-z]+:\/\/([^/]+)/i.exec(String(url));
  return m ? m[1] : String(url);
}

/**
 * Polls several instances' debug servers in turn (e.g. every replica behind a load
 * balancer), each sample tagged `instance` (`host:port`, see `instanceOf`) besides `tags`.
 * Deltas, windows and growth are kept per instance, so the thresholds hold every instance:
 * `perfkit_queue_saturation: max<0.8` fails when any one crosses it, and
 * `perfkit_queue_saturation{instance:10.0.0.7:6060}` names one. Returns the snapshots
 * (null for an instance that failed to answer).
 */
export function pollEach({ urls, token = __ENV.PERFKIT_TOKEN, tags = {} } = {}) {
  if (!Array.isArray(urls) || urls.length === 0) {
    throw new Error('perfkit.pollEach: urls must be a non-empty array of debug server URLs');
  }
  return urls.map((url) => poll({ url, token, tags: Object.assign({}, tags, { instance: instanceOf(url) }) }));
}

/**
 * What `pollPrometheus` reads: each row is a PromQL expression (`%S`: the selector's
 * matchers, `%W`: the rate window) grouped by `instance` and the labels in `tags`, and the
 * metric of this module it feeds, so the thresholds written for `poll()` hold unchanged.
 * Trends take the value; counters (`counter: true`) take the increase of a total since the
 * previous poll (the first poll, the whole total), like `poll()`.
 */
export const PROMETHEUS_SIGNALS = Object.freeze([
  { metric: 'perfkit_queue_saturation', tags: ['queue'], expr: 'max by (instance, queue) (perfkit_queue_depth_max_10s{%S}) / max by (instance, queue) (perfkit_queue_capacity{%S})' },
  { metric: 'perfkit_pool_saturation', tags: ['pool'], expr: 'sum by (instance, pool) (rate(perfkit_pool_busy_seconds_total{%S}[%W])) / max by (instance, pool) (perfkit_pool_workers{%S})' },
  { metric: 'perfkit_resource_saturation', tags: ['resource'], expr: 'max by (instance, resource) (perfkit_resource_in_use_max_10s{%S}) / max by (instance, resource) (perfkit_resource_max{%S})' },
  { metric: 'perfkit_semaphore_saturation', tags: ['semaphore'], expr: 'max by (instance, semaphore) (perfkit_semaphore_in_use_max_10s{%S}) / max by (instance, semaphore) (perfkit_semaphore_permits{%S})' },
  { metric: 'perfkit_lock_wait_p99_seconds', tags: ['lock'], expr: 'histogram_quantile(0.99, sum by (instance, lock, le) (rate(perfkit_lock_wait_seconds_bucket{%S}[%W])))' },
  { metric: 'perfkit_runtime_schedule_delay_p99_seconds', tags: ['runtime'], expr: 'histogram_quantile(0.99, sum by (instance, runtime, le) (rate(perfkit_runtime_schedule_delay_seconds_bucket{%S}[%W])))' },
  { metric: 'perfkit_hot_path_p99_seconds', tags: ['function'], expr: 'histogram_quantile(0.99, sum by (instance, function, le) (rate(perfkit_hot_path_seconds_bucket{%S}[%W])))' },
  { metric: 'perfkit_http_p99_seconds', tags: ['route'], expr: 'histogram_quantile(0.99, sum by (instance, method, route, le) (rate(http_server_request_duration_seconds_bucket{%S}[%W])))' },
  { metric: 'perfkit_process_resident_memory_bytes', tags: [], expr: 'max by (instance) (process_resident_memory_bytes{%S})' },
  { metric: 'perfkit_queue_dropped', tags: ['queue', 'reason'], counter: true, expr: 'sum by (instance, queue, reason) (perfkit_queue_dropped_total{%S,reason!="flush_failed"})' },
  { metric: 'perfkit_queue_rejected', tags: ['queue'], counter: true, expr: 'sum by (instance, queue) (perfkit_queue_rejected_total{%S})' },
  { metric: 'perfkit_pool_panics', tags: ['pool'], counter: true, expr: 'sum by (instance, pool) (perfkit_pool_tasks_total{%S,outcome="panic"})' },
  { metric: 'perfkit_resource_timeouts', tags: ['resource'], counter: true, expr: 'sum by (instance, resource) (perfkit_resource_timeouts_total{%S})' },
  { metric: 'perfkit_semaphore_timeouts', tags: ['semaphore'], counter: true, expr: 'sum by (instance, semaphore) (perfkit_semaphore_timeouts_total{%S})' },
  { metric: 'perfkit_lock_panics', tags: ['lock'], counter: true, expr: 'sum by (instance, lock) (perfkit_lock_panics_total{%S})' },
  { metric: 'perfkit_http_5xx', tags: ['route'], counter: true, expr: 'sum by (instance, method, route) (http_server_request_duration_seconds_count{%S,status=~"5.."})' },
]);

/** `expr` with the selector's matchers and the rate window put in. */
export function promql(expr, selector = '', window = '15s') {
  const q = expr.split('%W').join(window);
  return selector ? q.split('%S').join(selector) : q.split('{%S,').join('{').split('{%S}').join('{}');
}

/**
 * Reads perfkit's signals for every instance a Prometheus server scrapes, instead of each
 * instance's debug server: for a distributed k6 run (k6-operator) whose runners cannot
 * reach the instances, or a fleet too large to poll one by one. Feeds the same metrics as
 * `poll()` (`PROMETHEUS_SIGNALS`), each sample tagged `instance` and the element's tag, so
 * the same thresholds gate the fleet. `selector`: label matchers without braces (e.g.
 * `job="ingest"`); `window`: the window of rates and quantiles, at least twice the scrape
 * interval. Prometheus' figures lag the service by up to a scrape interval. Returns how many
 * series were read, or null when Prometheus failed to answer (counted in
 * `perfkit_poll_errors`).
 */
export function pollPrometheus({ url = __ENV.PROMETHEUS_URL || 'http://127.0.0.1:9090', selector = '', window = '15s', tags = {} } = {}) {
  const base = url.replace(/\/+$/, '');
  let n = 0;
  for (const row of PROMETHEUS_SIGNALS) {
    const q = encodeURIComponent(promql(row.expr, selector, window));
    const res = http.get(`${base}/api/v1/query?query=${q}`, {
      tags: { perfkit: 'poll', name: 'GET /api/v1/query' },
      responseType: 'text',
      timeout: '5s',
    });
    if (res.status !== 200) return failed(res.status === 0 ? 'network' : `status_${res.status}`);
    let body;
    try {
      body = JSON.parse(res.body);
    } catch (_) {
      return failed('json');
    }
    if (!body || body.status !== 'success') return failed('prometheus');
    for (const r of body.data.result || []) {
      const m = r.metric || {};
      const v = Number(r.value && r.value[1]);
      if (!Number.isFinite(v)) continue;
      const t = Object.assign({}, tags, { instance: String(m.instance) });
      for (const k of row.tags) t[k] = k === 'route' ? `${m.method} ${m.route}` : String(m[k]);
      if (row.counter) {
        const key = `prometheus|${row.metric}|${JSON.stringify(t)}`;
        const delta = v - (lastTotals[key] || 0);
        lastTotals[key] = v;
        counters[row.metric].add(delta >= 0 ? delta : v, t);
      } else {
        trends[row.metric].add(v, t);
      }
      n += 1;
    }
  }
  polls.add(1);
  pollErrors.add(0);
  for (const c of Object.values(counters)) c.add(0, tags);
  return n;
}

function failed(reason) {
  pollErrors.add(1, { reason });
  return null;
}

function record(snapshot, extra, source) {
  for (const { section, tag, fields } of SNAPSHOT_TRENDS) {
    for (const [item, tags] of elements(snapshot, section, tag)) addFields(item, fields, Object.assign({}, tags, extra));
  }
  for (const { section, tag, fields } of SNAPSHOT_COUNTERS) {
    for (const [item, tags] of elements(snapshot, section, tag)) addDeltas(item, fields, tags, extra, source);
  }
  // Keep every counter present (at 0) so `count==0` thresholds are evaluated.
  for (const c of Object.values(counters)) c.add(0, extra);
  recordTaskGrowth(snapshot.tasks, extra, source);
  recordGrowth(snapshot, extra, source);
}

/** The `q`-quantile of sparse `[value, count]` buckets (sorted by value), or null if empty. */
export function bucketQuantile(buckets, q) {
  const total = buckets.reduce((n, b) => n + b[1], 0);
  if (total <= 0) return null;
  const rank = Math.max(1, Math.ceil(q * total));
  let seen = 0;
  for (const [value, count] of buckets) {
    seen += count;
    if (seen >= rank) return value;
  }
  return buckets[buckets.length - 1][0];
}

/** `now` minus `before` bucket by bucket: the buckets of what was recorded in between. */
export function bucketDelta(now, before) {
  const prev = new Map(before || []);
  const out = [];
  for (const [value, count] of now) {
    const d = count - (prev.get(value) || 0);
    if (d > 0) out.push([value, d]);
  }
  return out;
}

/**
 * Process-wide figures whose growth since this VU's first poll becomes a Trend: the soak
 * signals. `path` in the snapshot -> Trend name.
 */
export const SNAPSHOT_GROWTH = Object.freeze({
  'process.resident_memory_bytes': 'perfkit_process_rss_growth_bytes',
  'heap.allocated_bytes': 'perfkit_heap_growth_bytes',
});
const growthTrends = {};
for (const name of Object.values(SNAPSHOT_GROWTH)) growthTrends[name] = new Trend(name);
const growthBaseline = {};

/**
 * The tag keys each metric this module records can carry, besides the poll scenario's own
 * (`scenario`, `perfkit`) and the `tags` given to `poll()` (e.g. `phase`). A threshold
 * filter on any other key matches no sample, and k6 passes a threshold with no samples.
 */
export const METRIC_TAGS = Object.freeze(
  (() => {
    const tags = {
      perfkit_capacity_crossed: ['level'],
      perfkit_polls: [],
      perfkit_poll_errors: ['reason'],
      perfkit_tasks_alive_growth: ['task'],
    };
    for (const metric of Object.values(SNAPSHOT_GROWTH)) tags[metric] = [];
    const add = (metric, keys) => {
      const known = tags[metric] || (tags[metric] = []);
      for (const k of keys) if (k && !known.includes(k)) known.push(k);
    };
    for (const { tag, fields } of SNAPSHOT_TRENDS) {
      for (const metric of Object.values(fields)) add(metric, [tag]);
    }
    for (const { tag, fields } of SNAPSHOT_COUNTERS) {
      for (const [metric, extra] of Object.values(fields)) add(metric, [tag, ...Object.keys(extra)]);
    }
    for (const keys of Object.values(tags)) Object.freeze(keys);
    return tags;
  })(),
);

/**
 * The recommended thresholds: the starter set a gate on perfkit's signals begins with.
 * Each key is one of this module's metrics; `overrides` replaces a key's expressions
 * (`{ perfkit_queue_saturation: ['max<0.9'] }`), removes it (`{ perfkit_pool_saturation:
 * null }`) or adds keys of your own (`{ 'perfkit_hot_path_p99_seconds{function:db_flush}':
 * ['max<0.1'] }`). Unfiltered, a Trend's `max` is the worst of every series it has, so the
 * hot-path and route bounds hold every function and route without naming them. See
 * `docs/k6.md` for why each default is what it is.
 */
export function thresholds(overrides = {}) {
  const set = {
    // A bound at 80% leaves room to react before a queue refuses, drops or blocks.
    perfkit_queue_saturation: ['max<0.8'],
    // Nothing accepted is lost, nothing is refused.
    perfkit_queue_dropped: ['count==0'],
    perfkit_queue_rejected: ['count==0'],
    // Workers busy 90% of a poll interval in more than one interval in twenty: saturated.
    perfkit_pool_saturation: ['p(95)<0.9'],
    perfkit_pool_panics: ['count==0'],
    // A connection pool with every connection checked out in more than one poll window in
    // twenty is too small for the load (or its queries too slow); a timed-out wait for a
    // connection or a permit is a failed request.
    perfkit_resource_saturation: ['p(95)<1'],
    perfkit_resource_timeouts: ['count==0'],
    perfkit_semaphore_timeouts: ['count==0'],
    // In no poll window did the slowest 1% of waits for an instrumented lock reach 100 ms.
    perfkit_lock_wait_p99_seconds: ['max<0.1'],
    perfkit_lock_panics: ['count==0'],
    // A task name whose live count grows by 50 over the run is leaking.
    perfkit_tasks_alive_growth: ['max<50'],
    perfkit_process_resident_memory_bytes: [`max<${512 * 1024 * 1024}`],
    // The runtime kept up: in no poll interval did the probe's p99 lateness reach 250 ms,
    // i.e. ready tasks did not wait a quarter of a second for a worker thread.
    // Service-side latency cannot show this. (A healthy service on a busy 2-core machine
    // reads a few ms, tens in a bad second; a starved one, seconds.)
    perfkit_runtime_schedule_delay_p99_seconds: ['max<0.25'],
    // Every #[hot_path] function's and every route's service-side p99, under 250 ms.
    perfkit_hot_path_p99_seconds: ['max<0.25'],
    perfkit_http_p99_seconds: ['max<0.25'],
    perfkit_http_5xx: ['count==0'],
    // The gate saw the service, and never failed to.
    perfkit_polls: ['count>0'],
    perfkit_poll_errors: ['count==0'],
  };
  for (const [key, value] of Object.entries(overrides)) {
    if (value === null || value === undefined) delete set[key];
    else set[key] = Array.isArray(value) ? value : [value];
  }
  return set;
}

/**
 * Checks the filters of `thresholds` (k6's `options.thresholds`) on this module's metrics:
 * throws, naming the threshold, when a filter uses a tag key the metric never carries
 * (`'perfkit_batch_dead_lettered{queue:db}'` instead of `{batcher:db}`), which k6 would
 * otherwise pass silently. `extraTags` adds keys of your own (those you pass to `poll()`).
 * Returns `thresholds`, so it can wrap the options in place.
 */
export function checkThresholds(thresholds, extraTags = []) {
  const always = ['scenario', 'perfkit', 'phase', 'instance', ...extraTags];
  for (const key of Object.keys(thresholds)) {
    const m = /^(perfkit_[a-z0-9_]+)(?:\{(.*)\})?$/.exec(key);
    if (!m || !(m[1] in METRIC_TAGS)) continue;
    for (const pair of (m[2] || '').split(',').filter((p) => p.trim() !== '')) {
      const tag = pair.split(':')[0].trim();
      if (!METRIC_TAGS[m[1]].includes(tag) && !always.includes(tag)) {
        const carried = METRIC_TAGS[m[1]].length ? METRIC_TAGS[m[1]].join(', ') : 'none of its own';
        throw new Error(
          `perfkit: threshold '${key}' filters on tag '${tag}', which ${m[1]} never carries (its tags: ${carried})`,
        );
      }
    }
  }
  return thresholds;
}

function recordGrowth(snapshot, extra, source) {
  for (const [path, metric] of Object.entries(SNAPSHOT_GROWTH)) {
    const v = field(snapshot, path);
    if (typeof v !== 'number' || !Number.isFinite(v)) continue;
    const key = `${source}|${path}`;
    if (!(key in growthBaseline)) growthBaseline[key] = v;
    growthTrends[metric].add(v - growthBaseline[key], extra);
  }
}

/** Alive now minus alive at the first poll, per task name (0 for names first seen later). */
function recordTaskGrowth(tasks, extra, source) {
  if (!Array.isArray(tasks)) return;
  const first = !(source in taskBaselines);
  if (first) taskBaselines[source] = {};
  const taskBaseline = taskBaselines[source];
  let any = false;
  for (const t of tasks) {
    if (!t || typeof t.alive !== 'number') continue;
    const name = String(t.name);
    if (first) taskBaseline[name] = t.alive;
    taskGrowth.add(t.alive - (taskBaseline[name] || 0), Object.assign({ task: name }, extra));
    any = true;
  }
  if (!any) taskGrowth.add(0, extra);
}

/** The objects of a snapshot section with their tags: one for `process`, one per element
 * (tagged by its name) for list sections. */
function elements(snapshot, section, tag) {
  const value = snapshot[section];
  if (value == null) return [];
  if (!tag) return [[value, undefined]];
  if (!Array.isArray(value)) return [];
  return value.map((item) => [item, { [tag]: String(item && item.name) }]);
}

/** `obj[a][b]` for the path `a.b`. */
function field(obj, path) {
  let v = obj;
  for (const key of path.split('.')) {
    if (v == null || typeof v !== 'object') return undefined;
    v = v[key];
  }
  return v;
}

function addDeltas(obj, fields, tags, pollTags, source) {
  if (obj == null || typeof obj !== 'object') return;
  for (const [path, [metric, extra]] of Object.entries(fields)) {
    const v = field(obj, path);
    if (typeof v !== 'number' || !Number.isFinite(v)) continue;
    const allTags = Object.assign({}, tags, extra);
    // Deltas are per series, whatever tags the poll adds (e.g. the phase it falls in).
    const key = `${source}|${metric}|${JSON.stringify(allTags)}`;
    const delta = v - (lastTotals[key] || 0);
    lastTotals[key] = v;
    // A total that went down means the primitive was rebuilt: count it from zero again.
    counters[metric].add(delta >= 0 ? delta : v, Object.assign(allTags, pollTags));
  }
}

function addFields(obj, fields, tags) {
  if (obj == null || typeof obj !== 'object') return;
  for (const [path, metric] of Object.entries(fields)) {
    const v = field(obj, path);
    if (typeof v === 'number' && Number.isFinite(v)) trends[metric].add(v, tags);
  }
}

// ---------------------------------------------------------------------------------------
// Summary

const STAT_RE = /^\s*([a-z]+(?:\(\s*[\d.]+\s*\))?)\s*(?:<=|>=|===|!==|==|!=|<|>)/;

/** Every threshold in `data` as `{ metric, expr, ok, stat, value }`, sorted by metric. */
export function thresholdResults(data) {
  const out = [];
  const metrics = (data && data.metrics) || {};
  for (const metric of Object.keys(metrics).sort()) {
    const { thresholds, values } = metrics[metric];
    if (!thresholds) continue;
    for (const expr of Object.keys(thresholds)) {
      const m = STAT_RE.exec(expr);
      const stat = m ? m[1].replace(/\s+/g, '') : null;
      const value = stat && values && stat in values ? values[stat] : null;
      out.push({ metric, expr, ok: thresholds[expr].ok !== false, stat, value });
    }
  }
  return out;
}

/** True when every threshold in summary `data` held. */
export function thresholdsOk(data) {
  return thresholdResults(data).every((t) => t.ok);
}

/** `handleSummary` output: a compact text verdict on stdout and the full data as JSON. */
/**
 * The run report for `handleSummary`: GETs `/debug/perfkit/report` over the run (from the
 * run's start, by `data.state.testRunDurationMs`, to now) as JSON and as HTML, adds k6's
 * own verdicts to both (under `k6` in the JSON; a section of the page), and returns
 * `{ files, lines, report }`: `files` maps `${dir}/report.json` and `${dir}/report.html`
 * to the merged report, `lines` are a three-line digest (where it went, the top finding,
 * the bottleneck) or why it is missing. `phases` (`[{ name, at }]`, seconds from the start)
 * are sent along and marked on the plots. `verdict` (`{ value: 'PASS' | 'FAIL', note }`)
 * replaces k6's threshold verdict, for scripts whose thresholds stop the run on purpose
 * (a capacity search): the note says why, under the verdict. `section`
 * (`{ key, title, value, lines }`) adds a script's own answer to both: `value` under `key`
 * in the JSON, and `title` with `lines` on the page above k6's section.
 */
export function captureReport(data, {
  url = __ENV.PERFKIT_URL || DEFAULT_PERFKIT_URL,
  token = __ENV.PERFKIT_TOKEN,
  dir = __ENV.RESULTS_DIR || 'results',
  phases = [],
  verdict = null,
  section = null,
} = {}) {
  const base = url.replace(/\/+$/, '');
  const now = Date.now() / 1000;
  const runMs = data && data.state && data.state.testRunDurationMs ? data.state.testRunDurationMs : 0;
  const start = now - runMs / 1000;
  // One second of slack before the start: the first poll's window reaches back that far.
  const from = Math.max(0, Math.floor(start) - 1);
  const to = Math.ceil(now);
  let query = `from=${from}&to=${to}`;
  const marks = (phases || [])
    .filter((p) => p && /^[A-Za-z0-9_.-]{1,64}$/.test(String(p.name)) && Number.isFinite(p.at))
    .map((p) => `${p.name}@${Math.floor(start + p.at)}`);
  if (marks.length) query += `&phases=${marks.join(',')}`;
  const get = (format) =>
    http.get(
      `${base}/debug/perfkit/report?${query}&format=${format}`,
      authParams(token, { responseType: 'text', timeout: '30s', tags: { perfkit: 'report', name: 'GET /debug/perfkit/report' } }),
    );
  const res = get('json');
  if (res.status !== 200) {
    const reason = res.status === 0 ? 'no answer' : `status ${res.status}: ${String(res.body || '').split('\n')[0]}`;
    return { files: {}, lines: [`  report: not saved (${reason})`], report: null };
  }
  let report;
  try {
    report = JSON.parse(res.body);
  } catch (_) {
    return { files: {}, lines: ['  report: not saved (the answer was not JSON)'], report: null };
  }
  report.k6 = k6Verdicts(data);
  if (verdict && (verdict.value === 'PASS' || verdict.value === 'FAIL')) {
    report.k6.threshold_verdict = report.k6.verdict;
    report.k6.verdict = verdict.value;
    report.k6.verdict_note = String(verdict.note || '');
  }
  if (section && section.key) report[section.key] = section.value;
  const target = `${dir}/report.json`;
  const files = { [target]: JSON.stringify(report, null, 2) };
  const findings = report.findings || [];
  const top = findings[0];
  const bottleneck = findings.find((f) => f.bottleneck);
  const lines = [`  report: ${target}`];
  const page = get('html');
  if (page.status === 200 && String(page.body).includes(K6_MARKER)) {
    const own = section && section.title
      ? `<h2>${escHtml(section.title)}</h2>\n<p>${(section.lines || []).map(escHtml).join('<br>\n')}</p>\n`
      : '';
    files[`${dir}/report.html`] = String(page.body).replace(K6_MARKER, own + k6Html(report.k6, (data && data.metrics) || {}));
    lines[0] += `, ${dir}/report.html`;
  } else {
    const why = page.status === 0 ? 'no answer' : `status ${page.status}: ${String(page.body || '').split('\n')[0]}`;
    lines.push(`  report.html: not saved (${why})`);
  }
  lines.push(
    top ? `  top finding: ${top.id} ${top.severity} ${top.title}` : '  top finding: none',
    bottleneck ? `  bottleneck: ${bottleneck.id} ${bottleneck.title}` : '  bottleneck: none (no bound saturated)',
  );
  return { files, lines, report };
}

/** Where the server's HTML report takes k6's section. */
const K6_MARKER = '<!--perfkit:k6-->';

/** k6's verdicts for the report: thresholds, HTTP figures, checks, client latency. */
function k6Verdicts(data) {
  const metrics = (data && data.metrics) || {};
  const reqs = metrics.http_reqs && metrics.http_reqs.values;
  const dur = metrics.http_req_duration && metrics.http_req_duration.values;
  const fail = metrics.http_req_failed && metrics.http_req_failed.values;
  const checks = metrics.checks && metrics.checks.values;
  // Client latency of every http_req_duration sub-metric (per scenario, phase, ...) that
  // saw a request: one declared for a scenario that never ran is left out.
  const latency = Object.keys(metrics)
    .filter((k) => /^http_req_duration(\{.*\})?$/.test(k))
    .filter((k) => !(metrics[k].values && metrics[k].values.count === 0))
    .sort()
    .map((k) => {
      const v = metrics[k].values || {};
      const or = (x) => (typeof x === 'number' ? x : null);
      return { metric: k, p95_ms: or(v['p(95)']), p99_ms: or(v['p(99)']), max_ms: or(v.max), count: or(v.count) };
    });
  return {
    verdict: thresholdsOk(data) ? 'PASS' : 'FAIL',
    thresholds: thresholdResults(data),
    http: reqs
      ? {
          requests: reqs.count,
          rate: reqs.rate,
          p95_ms: dur ? dur['p(95)'] : null,
          failed_rate: fail ? fail.rate : null,
        }
      : null,
    latency,
    checks: checks ? { passes: checks.passes, fails: checks.fails } : null,
  };
}

function escHtml(s) {
  return String(s).replace(/[&<>"']/g, (c) => ({ '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&#39;' })[c]);
}

/** The report page's k6 section (`metrics`: the summary's, to format threshold values). */
function k6Html(k6, metrics) {
  const ms = (v) => (typeof v === 'number' ? escHtml(fmtMs(v)) : '—');
  const out = [
    `<h2>k6 verdict: <span class="sev ${k6.verdict}">${k6.verdict}</span></h2>`,
  ];
  if (k6.verdict_note) out.push(`<p>${escHtml(k6.verdict_note)}</p>`);
  if (k6.http) {
    out.push(
      `<p>${k6.http.requests} requests, ${escHtml(num(k6.http.rate))}/s, p(95) ${ms(k6.http.p95_ms)}` +
        (k6.http.failed_rate != null ? `, ${(k6.http.failed_rate * 100).toFixed(2)}% failed` : '') +
        (k6.checks ? `; checks ${k6.checks.passes} passed, ${k6.checks.fails} failed` : '') +
        '.</p>',
    );
  }
  if (k6.latency.length) {
    out.push('<table><tr><th>client latency</th><th>p(95)</th><th>p(99)</th><th>max</th><th>requests</th></tr>');
    for (const l of k6.latency) {
      out.push(
        `<tr><td><code>${escHtml(l.metric)}</code></td><td class="n">${ms(l.p95_ms)}</td><td class="n">${ms(l.p99_ms)}</td>` +
          `<td class="n">${ms(l.max_ms)}</td><td class="n">${l.count === null ? '—' : l.count}</td></tr>`,
      );
    }
    out.push('</table>');
  }
  out.push('<table><tr><th>threshold</th><th>expression</th><th>value</th><th>held</th></tr>');
  for (const t of k6.thresholds) {
    out.push(
      `<tr><td><code>${escHtml(t.metric)}</code></td><td><code>${escHtml(t.expr)}</code></td>` +
        `<td class="n">${t.value === null ? '—' : escHtml(fmtValue(metrics[t.metric], t.metric, t.value))}</td>` +
        `<td>${t.ok ? '✓' : '<span class="sev FAIL">CROSSED</span>'}</td></tr>`,
    );
  }
  out.push('</table>');
  return out.join('\n');
}

/** k6 duration strings (`90s`, `1m30s`, `250ms`) or numbers of ms, in seconds. */
function durationSeconds(d) {
  if (typeof d === 'number') return d / 1000;
  if (typeof d !== 'string' || d === '') return 0;
  const re = /(\d+(?:\.\d+)?)(ms|s|m|h)/g;
  let total = 0;
  let m;
  while ((m = re.exec(d)) !== null) {
    total += Number(m[1]) * { ms: 0.001, s: 1, m: 60, h: 3600 }[m[2]];
  }
  return total;
}

/** The phases of `options.scenarios`: each distinct `tags.phase` at its earliest `startTime`. */
export function phasesOf(scenarios) {
  const at = {};
  for (const sc of Object.values(scenarios || {})) {
    const name = sc && sc.tags && sc.tags.phase;
    if (!name) continue;
    const t = durationSeconds(sc.startTime || '0s');
    if (!(name in at) || t < at[name]) at[name] = t;
  }
  return Object.entries(at)
    .map(([name, t]) => ({ name, at: t }))
    .sort((a, b) => a.at - b.at);
}

export function summary(data, { dir = __ENV.RESULTS_DIR || 'results', name = 'summary', profiles = false, report = false, phases = [] } = {}) {
  const lines = [];
  const metrics = data.metrics || {};
  const results = thresholdResults(data);
  const crossed = results.filter((t) => !t.ok).length;
  const secs = data.state && data.state.testRunDurationMs ? data.state.testRunDurationMs / 1000 : null;
  lines.push('');
  lines.push(
    `thresholds: ${crossed === 0 ? 'PASS' : 'FAIL'} ` +
      `(${results.length - crossed}/${results.length} held` +
      (secs !== null ? `, ${secs.toFixed(1)}s run)` : ')'),
  );
  const reqs = metrics.http_reqs && metrics.http_reqs.values;
  if (reqs) {
    const dur = metrics.http_req_duration && metrics.http_req_duration.values;
    const fail = metrics.http_req_failed && metrics.http_req_failed.values;
    lines.push(
      `  http: ${reqs.count} requests, ${num(reqs.rate)}/s` +
        (dur && dur['p(95)'] != null ? `, p(95)=${fmtMs(dur['p(95)'])}` : '') +
        (fail && fail.rate != null ? `, failed ${(fail.rate * 100).toFixed(2)}%` : ''),
    );
  }
  const checks = metrics.checks && metrics.checks.values;
  if (checks) lines.push(`  checks: ${checks.passes} passed, ${checks.fails} failed`);
  for (const t of results) {
    const m = metrics[t.metric];
    let value = t.value === null ? '' : `${t.stat}=${fmtValue(m, t.metric, t.value)}`;
    // With 'count' in summaryTrendStats an empty Trend can be told apart from a zero.
    if (m && m.type === 'trend' && m.values && m.values.count === 0) value = 'no samples';
    lines.push(
      t.ok
        ? `  ✓ ${t.metric}: ${t.expr}  ${value}`.trimEnd()
        : `  ✗ ${t.metric}: ${t.expr}  CROSSED  ${value}`.trimEnd(),
    );
  }
  let files = {};
  if (profiles) {
    const captured = captureProfiles({ dir });
    files = captured.files;
    lines.push('profiles:');
    lines.push(...captured.lines);
  }
  if (report) {
    const captured = captureReport(data, { dir, phases });
    Object.assign(files, captured.files);
    lines.push('report:');
    lines.push(...captured.lines);
  }
  lines.push('');
  return Object.assign(files, {
    stdout: lines.join('\n') + '\n',
    [`${dir}/${name}.json`]: JSON.stringify(data, null, 2),
  });
}

function fmtValue(metric, name, v) {
  if (typeof v !== 'number') return String(v);
  const type = metric && metric.type;
  const contains = metric && metric.contains;
  if (type === 'rate') return `${(v * 100).toFixed(2)}%`;
  if (contains === 'time') return fmtMs(v);
  // perfkit's durations are in seconds (Prometheus units): shown in ms, µs or ns.
  if (/_seconds(\{|$)/.test(name)) return fmtMs(v * 1000);
  if (contains === 'data' || /_bytes(\{|$)/.test(name)) return fmtBytes(v);
  return num(v);
}

function fmtMs(ms) {
  if (ms === 0) return '0';
  if (Math.abs(ms) >= 1000) return `${(ms / 1000).toFixed(2)}s`;
  if (Math.abs(ms) >= 1) return `${ms.toFixed(2)}ms`;
  if (Math.abs(ms) >= 0.001) return `${(ms * 1000).toFixed(1)}µs`;
  return `${(ms * 1e6).toFixed(0)}ns`;
}

function fmtBytes(b) {
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
  let i = 0;
  let x = b;
  while (Math.abs(x) >= 1024 && i < units.length - 1) {
    x /= 1024;
    i += 1;
  }
  return i === 0 ? `${b} B` : `${b} (${x.toFixed(1)} ${units[i]})`;
}

function num(v) {
  return Number.isInteger(v) ? String(v) : v.toFixed(2);
}

// ---------------------------------------------------------------------------------------
// Capacity search: stepped levels, stopping at the first broken bound

/**
 * The rates of a stepped capacity search: `start`, then each times `step`, up to `max`
 * (at most `limit` levels), rounded to whole numbers.
 */
export function capacityLevels({ start, step = 1.5, max, limit = 40 }) {
  if (!(start > 0) || !(step > 1) || !(max >= start)) {
    throw new Error(`perfkit.capacityLevels: need start > 0, step > 1 and max >= start, got ${start}, ${step}, ${max}`);
  }
  const out = [];
  for (let r = start; r <= max * (1 + 1e-9) && out.length < limit; r *= step) out.push(Math.round(r));
  return out;
}

/**
 * The bounds a snapshot's window (`poll()`'s answer) shows crossed, perfkit's side of a
 * broken level: a queue at `queueSaturation` or more, items dropped since the previous call
 * with the same `state` object, a pool busy `poolSaturation` of a second, a runtime's probe
 * p99 at `scheduleDelaySeconds`, a connection pool with every connection in use. Returns
 * one line per bound crossed (empty: the window held).
 */
export function capacityCrossings(snap, {
  queueSaturation = 0.8,
  poolSaturation = 0.9,
  scheduleDelaySeconds = 0.25,
  resourceSaturation = 1,
} = {}, state = {}) {
  const out = [];
  if (!snap) return out;
  const w = (e) => (e && e.window) || {};
  for (const q of snap.queues || []) {
    if (w(q).saturation_max >= queueSaturation) out.push(`queue ${q.name} at ${Math.round(w(q).saturation_max * 100)}%`);
    const total = Object.values(q.dropped || {}).reduce((a, b) => a + b, 0);
    const key = `dropped|${q.name}`;
    if (key in state && total > state[key]) out.push(`queue ${q.name} dropped ${total - state[key]}`);
    state[key] = total;
  }
  for (const p of snap.pools || []) {
    if (w(p).busy_ratio >= poolSaturation) out.push(`pool ${p.name} busy ${Math.round(w(p).busy_ratio * 100)}%`);
  }
  for (const r of snap.runtimes || []) {
    const d = w(r).schedule_delay_p99_seconds;
    if (d >= scheduleDelaySeconds) out.push(`runtime ${r.name} probe p99 ${Math.round(d * 1000)} ms`);
  }
  for (const r of snap.resources || []) {
    if (w(r).saturation_max >= resourceSaturation) out.push(`connection pool ${r.name} full`);
  }
  return out;
}

// Counted once per poll window in which a bound crossed, tagged with the level.
const capacityCrossed = new Counter('perfkit_capacity_crossed');

/**
 * One poll of a capacity search: `poll()` tagged with the `level` (a string, e.g. the
 * level's index), then `capacityCrossings` on the answer; a crossing adds 1 to Counter
 * `perfkit_capacity_crossed{level}` (a threshold `count==0` with `abortOnFail` on it stops
 * the run there). Returns the crossings (empty: the window held).
 */
export function capacityPoll({ url = __ENV.PERFKIT_URL || DEFAULT_PERFKIT_URL, token = __ENV.PERFKIT_TOKEN, level, limits = {}, state = {} } = {}) {
  const snap = poll({ url, token, tags: { level: String(level) } });
  const found = capacityCrossings(snap, limits, state);
  if (found.length > 0) capacityCrossed.add(1, { level: String(level) });
  return found;
}

/** What a run report section's bound is called in a headroom line. */
const CAPACITY_KINDS = {
  queues: 'queue',
  batchers: 'batcher',
  pools: 'pool',
  runtimes: 'runtime',
  locks: 'lock',
  semaphores: 'semaphore',
  resources: 'connection pool',
  hot_paths: 'hot path',
  http_routes: 'route',
};

function capacityMetric(data, name) {
  const m = data.metrics[name];
  return m ? m.values : null;
}

function capacityThresholdFailed(data, name) {
  const m = data.metrics[name];
  return !!(m && m.thresholds && Object.values(m.thresholds).some((t) => !t.ok));
}

function capacityReport(url, token, from, to) {
  const params = authParams(token, { responseType: 'text', timeout: '30s', tags: { perfkit: 'report' } });
  const res = http.get(`${url.replace(/\/+$/, '')}/debug/perfkit/report?from=${from}&to=${to}`, params);
  if (res.status !== 200) return null;
  try {
    return JSON.parse(res.body);
  } catch (_) {
    return null;
  }
}

/**
 * The answer of a capacity search, for `handleSummary`: which levels held, the last one
 * that did (`sustained_rate`), the one that broke, the bound that broke first (from the
 * service's run report over the broken level: its bottleneck, with the primitive's
 * `file:line`; or the client-side threshold that crossed), what crossed after it, and the
 * headroom of every bound over the last good level. Levels are read from per-level
 * submetrics the script declares: `http_reqs{level:i}`, `perfkit_capacity_crossed{level:i}`
 * and the client thresholds named in `clientThresholds(i)`. Schema in
 * docs/capacity-playbook.md.
 */
export function capacitySummary(data, {
  levels,
  levelMs,
  minRate = 0,
  clientThresholds = () => [],
  url = __ENV.PERFKIT_URL || DEFAULT_PERFKIT_URL,
  token = __ENV.PERFKIT_TOKEN,
  settings = {},
} = {}) {
  const end = Date.now() / 1000;
  const began = end - data.state.testRunDurationMs / 1000;
  const rows = levels
    .map((rate, i) => {
      const reqs = capacityMetric(data, `http_reqs{level:${i}}`);
      const client = clientThresholds(i).filter((n) => capacityThresholdFailed(data, n));
      const perfkit = (capacityMetric(data, `perfkit_capacity_crossed{level:${i}}`) || {}).count > 0;
      return {
        index: i,
        rate,
        start: Math.floor(began + (i * levelMs) / 1000),
        end: Math.floor(began + ((i + 1) * levelMs) / 1000),
        requests: reqs ? reqs.count : 0,
        held: !perfkit && client.length === 0,
        client_crossed: client,
        perfkit_crossed: perfkit,
      };
    })
    .filter((l) => l.requests > 0);
  const broken = rows.find((l) => !l.held) || null;
  // Levels that began after the broken one ran only until the abort: not part of the answer.
  if (broken) rows.length = rows.indexOf(broken) + 1;
  // The broken level ran until the abort, not to its planned end.
  if (broken) broken.end = Math.max(broken.start, Math.min(broken.end, Math.ceil(end)));
  const last = broken ? rows[broken.index - 1] || null : rows[rows.length - 1] || null;
  let firstBroken = null;
  let after = [];
  if (broken) {
    // The service's timeline records a second once it has ended: a report asked for at
    // once can miss the second in which the poll saw the bound cross. Ask again, a second
    // apart, until it names the bottleneck (or 5 s have passed).
    let r = null;
    let b = null;
    for (let attempt = 0; attempt < 6; attempt += 1) {
      if (attempt > 0) sleep(1);
      r = capacityReport(url, token, broken.start, Math.ceil(Date.now() / 1000));
      b = ((r && r.findings) || []).find((f) => f.id === (r && r.bottleneck)) || null;
      if (b || !broken.perfkit_crossed) break;
    }
    const findings = (r && r.findings) || [];
    const perfkitFirst = b && (broken.perfkit_crossed || broken.client_crossed.length === 0);
    if (perfkitFirst) {
      firstBroken = { side: 'perfkit', section: b.section, name: b.name, title: b.title, evidence: b.evidence, source: b.source };
    } else if (broken.client_crossed.length > 0) {
      firstBroken = { side: 'client', metric: broken.client_crossed[0] };
    }
    after = findings
      .filter((f) => f !== b && ['CRITICAL', 'HIGH', 'MEDIUM'].includes(f.severity))
      .map((f) => ({ side: 'perfkit', section: f.section, name: f.name, title: f.title, severity: f.severity }))
      .concat(broken.client_crossed.slice(perfkitFirst ? 0 : 1).map((m) => ({ side: 'client', metric: m })));
  }
  let headroom = [];
  if (last) {
    const r = capacityReport(url, token, last.start, last.end);
    headroom = ((r && r.headroom) || []).map((h) => ({
      section: h.section,
      name: h.name,
      bound: h.bound,
      peak_use: h.peak_use,
      text: `\`${h.name}\` ${CAPACITY_KINDS[h.section] || h.section} at ${Math.round(h.peak_use * 100)}% of its ${h.bound}`,
    }));
  }
  const sustained = last ? last.rate : null;
  // Below the floor whatever ended the search: a level that broke, or MAX_RATE.
  const below = minRate > 0 && (sustained === null || sustained < minRate);
  const verdict = below ? 'below_min' : broken ? 'found' : 'max_reached';
  return {
    schema_version: 1,
    verdict,
    sustained_rate: sustained,
    broken_rate: broken ? broken.rate : null,
    min_rate: minRate,
    first_broken: firstBroken,
    after,
    headroom_at_sustained: headroom,
    levels: rows,
    settings,
  };
}

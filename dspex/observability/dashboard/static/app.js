// dspex live dashboard. Polls the JSON API and redraws in place. Every string from the API is
// user data (job names, reasons, program text): it is only ever set with textContent or as an
// attribute value, never parsed as HTML.
"use strict";

const POLL_MS = 1000;
const SVG_NS = "http://www.w3.org/2000/svg";
let selected = decodeURIComponent((location.hash.match(/^#job=(.+)$/) || [])[1] || "");
let userChose = Boolean(selected);
const expanded = new Set(); // optimizations whose sub-jobs are unfolded
const filters = { state: "", kind: "", name: "", offset: 0, limit: 50 };
const EXAMPLES_PAGE = 50;
const EXAMPLES_RELOAD_MS = 10000; // each read scans the job's partition: not on every poll
const examples = { jobId: null, offset: 0, total: 0, loadedAt: 0, loading: false };

function el(tag, text, className) {
  const node = document.createElement(tag);
  if (text !== undefined && text !== null) node.textContent = String(text);
  if (className) node.className = className;
  return node;
}

function svg(tag, attrs) {
  const node = document.createElementNS(SVG_NS, tag);
  for (const [key, value] of Object.entries(attrs || {})) node.setAttribute(key, String(value));
  return node;
}

function fmt(value, digits) {
  if (value === null || value === undefined) return "–";
  return typeof value === "number" ? value.toFixed(digits === undefined ? 1 : digits) : String(value);
}

async function getJSON(path) {
  const response = await fetch(path, { cache: "no-store" });
  if (!response.ok && response.status !== 404) throw new Error(path + ": HTTP " + response.status);
  return { status: response.status, body: await response.json() };
}

function progressCell(job) {
  const cell = el("td", null, "progress");
  if (job.progress === null || job.progress === undefined) {
    cell.appendChild(el("span", job.done + " steps", "progress-text"));
    return cell;
  }
  const bar = el("span", null, "bar");
  const fill = el("span");
  fill.style.width = Math.round(100 * Math.min(1, job.progress)) + "%";
  bar.appendChild(fill);
  cell.appendChild(bar);
  cell.appendChild(el("span", job.done + " / " + job.total, "progress-text"));
  return cell;
}

function kindText(job) {
  if (job.kind === "optimize") return "optimize (" + job.optimizer + ")";
  // an evaluation an optimization ran names it, so its many sub-jobs read as part of one run
  return job.parent_job_id ? "eval (part of " + job.parent_job_id.slice(0, 8) + ")" : "eval";
}

function bestCell(job) {
  const cell = el("td", fmt(job.best_score), "best");
  if (job.best_partial) {
    // a score over part of the examples is not the job's score yet
    cell.classList.add("partial");
    cell.appendChild(el("span", " partial " + job.best_done + "/" + job.best_total, "partial-note"));
  }
  return cell;
}

function stallCell(job) {
  const cell = el("td", null, "attention");
  if (job.stalled) {
    cell.appendChild(el("span", "stalled " + Math.round(job.stalled.idle_s) + " s", "stall-badge"));
    cell.appendChild(el("span", " " + job.stalled.reason, "stall-reason"));
    cell.title = "no task done since " + new Date(job.stalled.since).toLocaleTimeString();
  }
  return cell;
}

function foldButton(job) {
  const open = expanded.has(job.job_id);
  const button = el("button", (open ? "▾ " : "▸ ") + job.children.length + " sub-jobs", "fold");
  button.type = "button";
  button.setAttribute("aria-expanded", String(open));
  button.addEventListener("click", (event) => {
    event.stopPropagation();
    if (open) expanded.delete(job.job_id);
    else expanded.add(job.job_id);
    refresh();
  });
  return button;
}

function jobRow(job, child) {
  const classes = "job" + (job.job_id === selected ? " selected" : "") + (child ? " child" : "");
  const row = el("tr", null, classes + (job.stalled ? " stalled" : ""));
  row.dataset.jobId = job.job_id;
  const name = el("td", null, "name-cell");
  name.appendChild(el("span", job.name || job.job_id, "name"));
  if (job.children && job.children.length) name.appendChild(foldButton(job));
  row.appendChild(name);
  row.appendChild(el("td", kindText(job), "kind"));
  row.appendChild(el("td", job.state, "state state-" + job.state));
  row.appendChild(progressCell(job));
  row.appendChild(bestCell(job));
  row.appendChild(stallCell(job));
  row.appendChild(el("td", job.prompt_tokens + job.completion_tokens));
  row.appendChild(el("td", fmt(job.cost_usd, 4)));
  row.appendChild(el("td", job.updated_at ? new Date(job.updated_at).toLocaleTimeString() : "–"));
  row.addEventListener("click", () => {
    selected = job.job_id;
    userChose = true;
    history.replaceState(null, "", "#job=" + encodeURIComponent(selected));
    refresh();
  });
  return row;
}

function renderJobs(page) {
  const jobs = page.jobs;
  const rows = [];
  for (const job of jobs) {
    rows.push(jobRow(job, false));
    for (const sub of job.children || []) {
      const row = jobRow(sub, true);
      row.hidden = !expanded.has(job.job_id);
      rows.push(row);
    }
  }
  document.querySelector("#jobs tbody").replaceChildren(...rows);
  document.getElementById("no-jobs").hidden = jobs.length > 0;
  const evals = jobs.flatMap((j) => [j, ...(j.children || [])]).filter((j) => j.kind === "eval");
  document.getElementById("eval-ids").replaceChildren(
    ...evals.map((j) => {
      const option = el("option");
      option.value = j.job_id;
      option.label = j.name || j.job_id;
      return option;
    })
  );
  const first = page.total ? page.offset + 1 : 0;
  document.getElementById("page-info").textContent =
    first + "–" + (page.offset + jobs.length) + " of " + page.total;
  document.getElementById("page-prev").disabled = page.offset === 0;
  document.getElementById("page-next").disabled = page.offset + jobs.length >= page.total;
  if (!userChose && jobs.length) {
    const running = jobs.find((j) => j.kind === "optimize" && j.state === "running");
    selected = (running || jobs[0]).job_id;
  }
}

function renderCandidates(detail) {
  const box = document.getElementById("detail-candidates-box");
  box.hidden = detail.candidates.length === 0;
  const rows = detail.candidates.map((c) => {
    const row = el("tr");
    row.appendChild(el("td", c.candidate_id));
    row.appendChild(el("td", fmt(c.score)));
    row.appendChild(el("td", c.done + " / " + c.total));
    row.appendChild(el("td", c.errors));
    return row;
  });
  document.querySelector("#detail-candidates tbody").replaceChildren(...rows);
}

function polyline(points, className) {
  return svg("polyline", { class: className, points: points.map((p) => p.join(",")).join(" ") });
}

function renderTrajectory(steps, live) {
  const chart = document.getElementById("trajectory");
  document.getElementById("trajectory-box").hidden = !steps;
  if (!steps) return;
  live = live || [];
  const W = 640, H = 240, L = 40, R = 12, T = 12, B = 28;
  // One x position per trial, in trial order: several trials can share a step number (a random
  // search evaluates all its candidates in one step), so the step number cannot be the x. The
  // candidates being evaluated now come after, as hollow points at their score so far.
  const scored = steps.map((s, i) => ({ ...s, at: i })).filter((s) => s.score !== null);
  const n = Math.max(steps.length + live.length - 1, 1);
  const x = (i) => L + ((W - L - R) * i) / n;
  const y = (score) => T + (H - T - B) * (1 - score / 100);
  const nodes = [
    svg("line", { class: "axis", x1: L, y1: T, x2: L, y2: H - B }),
    svg("line", { class: "axis", x1: L, y1: H - B, x2: W - R, y2: H - B }),
  ];
  for (const tick of [0, 50, 100]) {
    const label = svg("text", { x: 4, y: y(tick) + 4 });
    label.textContent = String(tick);
    nodes.push(label);
  }
  const stepLabel = svg("text", { x: W - R, y: H - 8, "text-anchor": "end" });
  stepLabel.textContent = steps.length + " steps" + (live.length ? " + " + live.length + " running" : "");
  nodes.push(stepLabel);
  if (scored.length) {
    nodes.push(polyline(scored.map((s) => [x(s.at), y(s.score)]), "score"));
    nodes.push(polyline(scored.map((s) => [x(s.at), y(s.best_so_far)]), "best"));
    for (const s of scored) nodes.push(svg("circle", { cx: x(s.at), cy: y(s.score), r: 3 }));
  }
  live.forEach((c, i) => {
    const point = svg("circle", { class: "live", cx: x(steps.length + i), cy: y(c.score), r: 4 });
    const title = svg("title");
    title.textContent = c.candidate_id + ": " + fmt(c.score) + " so far (" + c.done + "/" + c.total + ")";
    point.appendChild(title);
    nodes.push(point);
  });
  chart.dataset.points = String(scored.length);
  chart.dataset.live = String(live.length);
  chart.replaceChildren(...nodes);
}

function renderDetail(detail) {
  const section = document.getElementById("detail");
  section.hidden = !detail;
  if (!detail) return;
  document.getElementById("detail-name").textContent = detail.name || detail.job_id;
  document.getElementById("detail-id").textContent = detail.job_id;
  document.getElementById("detail-state").textContent = detail.state;
  document.getElementById("detail-reason").textContent = detail.reason ? "— " + detail.reason : "";
  const stall = document.getElementById("detail-stall");
  stall.hidden = !detail.stalled;
  stall.textContent = detail.stalled
    ? "Stalled: no task done for " + Math.round(detail.stalled.idle_s) + " s (threshold " +
      Math.round(detail.stalled.threshold_s) + " s) — " + detail.stalled.reason
    : "";
  renderCandidates(detail);
  renderTrajectory(detail.steps, detail.live);
  if (typeof renderPareto === "function") renderPareto(detail); // pareto.js: GEPA runs
  renderExamplesBox(detail);
}

// ------------------------------------------------------------------ examples and comparison

function renderExamplesBox(detail) {
  const box = document.getElementById("examples-box");
  box.hidden = detail.kind !== "eval";
  if (box.hidden) return;
  if (examples.jobId !== detail.job_id) {
    examples.jobId = detail.job_id;
    examples.offset = 0;
    document.getElementById("example").hidden = true;
    document.getElementById("compare").hidden = true;
    document.getElementById("compare-error").hidden = true;
    loadExamples();
  } else if (detail.state === "running" && Date.now() - examples.loadedAt > EXAMPLES_RELOAD_MS) {
    loadExamples();
  }
}

function exampleRow(jobId, e) {
  const row = el("tr", null, e.failed ? "failed" : "");
  row.dataset.index = String(e.example_index);
  row.dataset.candidate = e.candidate_id;
  row.appendChild(el("td", e.example_index));
  row.appendChild(el("td", e.candidate_id));
  row.appendChild(el("td", fmt(e.score, 2)));
  row.appendChild(el("td", e.error_type || ""));
  row.appendChild(el("td", e.prompt_tokens + e.completion_tokens));
  row.appendChild(el("td", fmt(e.cost_usd, 5)));
  row.appendChild(el("td", fmt(e.latency_s, 2)));
  row.appendChild(el("td", e.worker_id || "–"));
  row.addEventListener("click", () => loadExample(jobId, e.candidate_id, e.example_index));
  return row;
}

async function loadExamples() {
  if (examples.loading) return;
  examples.loading = true;
  const jobId = examples.jobId;
  const note = document.getElementById("examples-note");
  try {
    const path = "/api/jobs/" + encodeURIComponent(jobId) + "/examples?offset=" + examples.offset +
      "&limit=" + EXAMPLES_PAGE;
    const answer = await getJSON(path);
    if (jobId !== examples.jobId) return;
    examples.loadedAt = Date.now();
    if (answer.status !== 200) {
      note.textContent = answer.body.error;
      return;
    }
    const page = answer.body;
    examples.total = page.total;
    document.querySelector("#examples tbody").replaceChildren(...page.examples.map((e) => exampleRow(jobId, e)));
    const first = page.total ? page.offset + 1 : 0;
    document.getElementById("examples-info").textContent =
      first + "–" + (page.offset + page.examples.length) + " of " + page.total;
    note.textContent = page.total ? "" : "No example has a result yet.";
  } catch (error) {
    note.textContent = "cannot read the examples: " + error.message;
  } finally {
    examples.loading = false;
  }
}

function showJSON(id, value) {
  document.getElementById(id).textContent =
    value === null || value === undefined ? "–" : JSON.stringify(value, null, 2);
}

async function loadExample(jobId, candidate, index) {
  const path = "/api/jobs/" + encodeURIComponent(jobId) + "/examples/" + index + "?candidate=" +
    encodeURIComponent(candidate);
  const answer = await getJSON(path);
  const box = document.getElementById("example");
  box.hidden = false;
  if (answer.status !== 200) {
    document.getElementById("example-index").textContent = index + ": " + answer.body.error;
    return;
  }
  const e = answer.body;
  box.dataset.jobId = jobId;
  box.dataset.index = String(index);
  document.getElementById("example-index").textContent = "#" + index + " of " + jobId.slice(0, 8) + " (" + candidate + ")";
  const facts = [
    ["score", fmt(e.score, 2)], ["feedback", e.feedback || "–"],
    ["tokens", e.prompt_tokens + " in / " + e.completion_tokens + " out"], ["LM calls", e.lm_calls],
    ["cost USD", fmt(e.cost_usd, 5)], ["latency s", fmt(e.latency_s, 2)],
    ["worker", e.worker_id || "–"], ["task", e.task_id],
  ];
  document.getElementById("example-facts").replaceChildren(
    ...facts.flatMap(([key, value]) => [el("dt", key), el("dd", value)])
  );
  showJSON("example-inputs", e.inputs);
  showJSON("example-gold", e.gold);
  showJSON("example-outputs", e.outputs);
  showJSON("example-error", e.error);
  showJSON("example-trace", e.trace);
  renderLMCalls(e.lm_call_log || [], e.lm_calls_unlogged || 0);
  showJSON("example-tools", e.tool_calls && e.tool_calls.length ? e.tool_calls : null);
  showJSON("example-events", e.callback_events.length ? e.callback_events : null);
}

// One block per LM call: its numbers in the summary, then each message sent and the answer.
function renderLMCalls(calls, unlogged) {
  const box = document.getElementById("example-lm-calls");
  const blocks = calls.map((call, i) => lmCallBlock(call, i, i === 0));
  if (!calls.length) blocks.push(el("p", "– (none recorded: the predictor ran with --no-record-lm-calls, or made no LM call)", "muted"));
  if (unlogged) blocks.push(el("p", unlogged + " more LM calls not recorded (over the per-example limit)", "muted"));
  box.replaceChildren(...blocks);
}

function lmCallBlock(call, i, open) {
  const block = el("details", null, "lm-call" + (call.error ? " failed" : ""));
  block.open = open;
  const facts = [
    "#" + (i + 1), call.model, call.prompt_tokens + " in / " + call.completion_tokens + " out",
    "$" + fmt(call.cost_usd, 6), fmt(call.latency_s, 3) + " s", "at " + fmt(call.start_s, 3) + " s",
  ];
  if (call.cache_hit) facts.push("cache hit");
  if (call.error) facts.push("failed");
  if (call.truncated_chars) facts.push(call.truncated_chars + " chars truncated");
  block.appendChild(el("summary", facts.join(" · ")));
  for (const message of call.messages) block.appendChild(lmText(message.role, message.content));
  if (call.completion !== null && call.completion !== undefined) block.appendChild(lmText("completion", call.completion));
  if (call.tool_calls && call.tool_calls.length) block.appendChild(lmText("tool calls", JSON.stringify(call.tool_calls, null, 2)));
  if (call.error) block.appendChild(lmText("error", call.error));
  return block;
}

function lmText(role, text) {
  const part = el("div", null, "lm-msg role-" + role.replace(/[^a-z]/g, ""));
  part.appendChild(el("span", role, "lm-role"));
  part.appendChild(el("pre", text));
  return part;
}

async function compareWith() {
  const other = document.getElementById("compare-with").value.trim();
  const errorBox = document.getElementById("compare-error");
  errorBox.hidden = true;
  if (!other || !examples.jobId) return;
  const path = "/api/compare?a=" + encodeURIComponent(examples.jobId) + "&b=" + encodeURIComponent(other);
  const answer = await getJSON(path);
  if (answer.status !== 200) {
    errorBox.textContent = answer.body.error;
    errorBox.hidden = false;
    document.getElementById("compare").hidden = true;
    return;
  }
  const c = answer.body;
  const m = c.mcnemar;
  const sign = c.delta === null ? "" : c.delta >= 0 ? "+" : "";
  document.getElementById("compare-summary").textContent =
    "A " + (c.a.name || c.a.job_id) + ": " + fmt(c.score_a) + " → B " + (c.b.name || c.b.job_id) + ": " +
    fmt(c.score_b) + " (" + sign + fmt(c.delta) + ") over " + c.paired + " paired examples; " +
    c.only_a_passed + " lost, " + c.only_b_passed + " gained; McNemar (" + m.method + "): p = " +
    m.p_value.toPrecision(3);
  const rows = c.flipped.map((f) => {
    const row = el("tr", null, f.direction);
    row.appendChild(el("td", f.example_index));
    row.appendChild(el("td", fmt(f.score_a, 2)));
    row.appendChild(el("td", fmt(f.score_b, 2)));
    row.appendChild(el("td", f.direction));
    row.addEventListener("click", () => loadExample(c.b.job_id, c.b.candidate_id, f.example_index));
    return row;
  });
  document.querySelector("#compare-flips tbody").replaceChildren(...rows);
  document.getElementById("compare").hidden = false;
}

function bindExamples() {
  document.getElementById("examples-reload").addEventListener("click", () => loadExamples());
  document.getElementById("examples-prev").addEventListener("click", () => {
    examples.offset = Math.max(0, examples.offset - EXAMPLES_PAGE);
    loadExamples();
  });
  document.getElementById("examples-next").addEventListener("click", () => {
    if (examples.offset + EXAMPLES_PAGE < examples.total) examples.offset += EXAMPLES_PAGE;
    loadExamples();
  });
  document.getElementById("compare-go").addEventListener("click", () => compareWith());
}

function workerRow(w) {
  const row = el("tr", null, w.alive ? "" : "muted");
  row.dataset.workerId = w.worker_id;
  row.appendChild(el("td", w.worker_id));
  row.appendChild(el("td", w.kind));
  row.appendChild(el("td", w.host));
  row.appendChild(el("td", w.alive ? "yes" : "no (" + w.age_s + " s)"));
  row.appendChild(el("td", w.in_flight));
  row.appendChild(el("td", fmt(w.limit, 0)));
  row.appendChild(el("td", w.breaker_state));
  row.appendChild(el("td", w.assigned_partitions + " (" + w.paused_partitions + ")"));
  return row;
}

function renderWorkers(page) {
  document.querySelector("#workers tbody").replaceChildren(...page.workers.map(workerRow));
  const gone = page.gone || [];
  document.getElementById("gone-box").hidden = gone.length === 0;
  document.getElementById("gone-count").textContent = String(gone.length);
  document.querySelector("#gone-workers tbody").replaceChildren(
    ...gone.map((w) => {
      const row = workerRow(w);
      row.children[3].textContent = "last seen " + new Date(w.last_seen).toLocaleString();
      return row;
    })
  );
}

function jobsPath() {
  const params = new URLSearchParams();
  for (const [key, value] of Object.entries(filters)) if (value !== "") params.set(key, String(value));
  return "/api/jobs?" + params.toString();
}

function bindFilters() {
  const changed = (key, value) => {
    filters[key] = value;
    filters.offset = 0;
    refresh();
  };
  document.getElementById("filter-state").addEventListener("change", (e) => changed("state", e.target.value));
  document.getElementById("filter-kind").addEventListener("change", (e) => changed("kind", e.target.value));
  document.getElementById("filter-name").addEventListener("input", (e) => changed("name", e.target.value.trim()));
  document.getElementById("page-prev").addEventListener("click", () => {
    filters.offset = Math.max(0, filters.offset - filters.limit);
    refresh();
  });
  document.getElementById("page-next").addEventListener("click", () => {
    filters.offset += filters.limit;
    refresh();
  });
}

async function refresh() {
  const status = document.getElementById("connection");
  try {
    const [jobs, workers] = await Promise.all([getJSON(jobsPath()), getJSON("/api/workers")]);
    if (jobs.status !== 200) throw new Error(jobs.body.error || "HTTP " + jobs.status);
    renderJobs(jobs.body);
    renderWorkers(workers.body);
    const detail = selected ? await getJSON("/api/jobs/" + encodeURIComponent(selected)) : null;
    renderDetail(detail && detail.status === 200 ? detail.body : null);
    status.textContent = "updated " + new Date().toLocaleTimeString();
  } catch (error) {
    status.textContent = "cannot reach the dashboard API: " + error.message;
  }
}

bindFilters();
bindExamples();
refresh();
setInterval(refresh, POLL_MS);

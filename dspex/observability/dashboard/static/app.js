// dspex live dashboard. Polls the JSON API and redraws in place. Every string from the API is
// user data (job names, reasons, program text): it is only ever set with textContent or as an
// attribute value, never parsed as HTML.
"use strict";

const POLL_MS = 1000;
const SVG_NS = "http://www.w3.org/2000/svg";
let selected = decodeURIComponent((location.hash.match(/^#job=(.+)$/) || [])[1] || "");
let userChose = Boolean(selected);

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

function jobRow(job) {
  const row = el("tr", null, "job" + (job.job_id === selected ? " selected" : ""));
  row.dataset.jobId = job.job_id;
  row.appendChild(el("td", job.name || job.job_id, "name"));
  row.appendChild(el("td", kindText(job), "kind"));
  row.appendChild(el("td", job.state, "state state-" + job.state));
  row.appendChild(progressCell(job));
  row.appendChild(el("td", fmt(job.best_score), "best"));
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

function renderJobs(jobs) {
  const body = document.querySelector("#jobs tbody");
  body.replaceChildren(...jobs.map(jobRow));
  document.getElementById("no-jobs").hidden = jobs.length > 0;
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

function renderTrajectory(steps) {
  const chart = document.getElementById("trajectory");
  document.getElementById("trajectory-box").hidden = !steps;
  if (!steps) return;
  const W = 640, H = 240, L = 40, R = 12, T = 12, B = 28;
  // One x position per trial, in trial order: several trials can share a step number (a random
  // search evaluates all its candidates in one step), so the step number cannot be the x.
  const scored = steps.map((s, i) => ({ ...s, at: i })).filter((s) => s.score !== null);
  const n = Math.max(steps.length - 1, 1);
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
  const stepLabel = svg("text", { x: W - R - 60, y: H - 8 });
  stepLabel.textContent = steps.length + " steps";
  nodes.push(stepLabel);
  if (scored.length) {
    nodes.push(polyline(scored.map((s) => [x(s.at), y(s.score)]), "score"));
    nodes.push(polyline(scored.map((s) => [x(s.at), y(s.best_so_far)]), "best"));
    for (const s of scored) nodes.push(svg("circle", { cx: x(s.at), cy: y(s.score), r: 3 }));
  }
  chart.dataset.points = String(scored.length);
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
  renderCandidates(detail);
  renderTrajectory(detail.steps);
}

function renderWorkers(workers) {
  const rows = workers.map((w) => {
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
  });
  document.querySelector("#workers tbody").replaceChildren(...rows);
}

async function refresh() {
  const status = document.getElementById("connection");
  try {
    const [jobs, workers] = await Promise.all([getJSON("/api/jobs"), getJSON("/api/workers")]);
    renderJobs(jobs.body.jobs);
    renderWorkers(workers.body.workers);
    const detail = selected ? await getJSON("/api/jobs/" + encodeURIComponent(selected)) : null;
    renderDetail(detail && detail.status === 200 ? detail.body : null);
    status.textContent = "updated " + new Date().toLocaleTimeString();
  } catch (error) {
    status.textContent = "cannot reach the dashboard API: " + error.message;
  }
}

refresh();
setInterval(refresh, POLL_MS);

// A GEPA optimization's Pareto front, lineage and cost so far, in the job's detail (app.js calls
// renderPareto on every poll). Uses app.js's el, fmt and getJSON. Every string from the API
// (instructions are program text) is set with textContent only, never parsed as HTML.
"use strict";

const pareto = { jobId: null, mark: null, loading: false, open: new Set() };

function paretoBox() {
  let box = document.getElementById("pareto-box");
  if (box) return box;
  box = el("div");
  box.id = "pareto-box";
  box.hidden = true;
  const title = el("h3", "Pareto front ");
  const summary = el("span", "", "muted");
  summary.id = "pareto-summary";
  title.appendChild(summary);
  const cost = el("p");
  cost.id = "pareto-cost";
  const lineage = el("ul", null, "lineage");
  lineage.id = "pareto-lineage";
  const grid = el("table", null, "pareto-grid");
  grid.id = "pareto-grid";
  grid.appendChild(el("thead"));
  grid.appendChild(el("tbody"));
  box.append(title, cost, el("h4", "Candidates and their lineage (child under parent)"), lineage,
    el("h4", "Validation examples × candidates on the front (■ best on that example)"), grid);
  const detail = document.getElementById("detail");
  const trajectory = document.getElementById("trajectory-box");
  detail.insertBefore(box, trajectory ? trajectory.nextSibling : null);
  return box;
}

function renderPareto(detail) {
  const box = paretoBox();
  const gepa = detail.kind === "optimize" && detail.optimizer === "gepa";
  box.hidden = !gepa;
  if (!gepa) {
    pareto.jobId = null;
    return;
  }
  // a new status (a round done, more spent) is when a new checkpoint may be there
  const mark = detail.job_id + "|" + detail.updated_at + "|" + detail.state;
  if (mark === pareto.mark || pareto.loading) return;
  if (pareto.jobId !== detail.job_id) pareto.open.clear();
  loadPareto(detail.job_id, mark);
}

async function loadPareto(jobId, mark) {
  pareto.loading = true;
  try {
    const answer = await getJSON("/api/jobs/" + encodeURIComponent(jobId) + "/pareto");
    if (answer.status !== 200) {
      document.getElementById("pareto-summary").textContent = answer.body.error;
      return;
    }
    pareto.jobId = jobId;
    pareto.mark = mark;
    drawPareto(answer.body);
  } catch (error) {
    document.getElementById("pareto-summary").textContent = "cannot read the front: " + error.message;
  } finally {
    pareto.loading = false;
  }
}

function drawPareto(view) {
  const box = document.getElementById("pareto-box");
  const candidates = view.candidates || [];
  box.dataset.candidates = String(candidates.length);
  box.dataset.front = String((view.front || []).length);
  box.dataset.step = view.checkpoint ? String(view.step) : "";
  const c = view.cost;
  document.getElementById("pareto-cost").textContent = "Cost so far: $" + fmt(c.cost_usd, 4) + " (" +
    c.lm_calls + " LM calls, " + (c.prompt_tokens + c.completion_tokens) + " tokens)";
  document.getElementById("pareto-cost").dataset.costUsd = String(c.cost_usd);
  if (!view.checkpoint) {
    document.getElementById("pareto-summary").textContent = "no checkpoint yet (the seed is being evaluated)";
    document.getElementById("pareto-lineage").replaceChildren();
    document.querySelector("#pareto-grid thead").replaceChildren();
    document.querySelector("#pareto-grid tbody").replaceChildren();
    return;
  }
  document.getElementById("pareto-summary").textContent = "after round " + view.step + ": " +
    candidates.length + " candidates, " + view.front.length + " on the front; " + view.metric_calls +
    " of " + view.max_metric_calls + " metric calls";
  drawLineage(view);
  drawGrid(view);
}

function candidateLine(view, c) {
  const item = el("li", null, "candidate" + (c.on_front ? " on-front" : "") + (c.dominated ? " dominated" : ""));
  item.dataset.index = String(c.index);
  const head = el("div", null, "candidate-head");
  head.appendChild(el("span", "#" + c.index, "candidate-index"));
  head.appendChild(el("span", " " + fmt(c.score, 3), "candidate-score"));
  if (c.index === view.best_index) head.appendChild(el("span", "best", "tag best-tag"));
  if (c.on_front) head.appendChild(el("span", "front: " + c.front_examples, "tag front-tag"));
  if (c.dominated) head.appendChild(el("span", "dominated", "tag"));
  const origin = c.parents.length === 0 ? "seed" : c.merged
    ? "merge of " + c.parents.map((p) => "#" + p).join(" + ")
    : "from #" + c.parents[0];
  const changed = c.parents.length && c.changed.length ? " · changed " + c.changed.join(", ") : "";
  const same = c.same_as === null || c.same_as === undefined ? "" : " · same instructions as #" + c.same_as;
  head.appendChild(el("span", " " + origin + changed + same, "candidate-origin muted"));
  if (c.candidate_id) head.appendChild(el("span", " " + c.candidate_id.slice(0, 12), "candidate-id muted"));
  item.appendChild(head);
  const more = el("details", null, "instructions");
  more.open = pareto.open.has(c.index);
  more.addEventListener("toggle", () => {
    if (more.open) pareto.open.add(c.index);
    else pareto.open.delete(c.index);
  });
  more.appendChild(el("summary", "instructions"));
  for (const [name, text] of Object.entries(c.instructions)) {
    more.appendChild(el("h4", name));
    more.appendChild(el("pre", text));
  }
  item.appendChild(more);
  return item;
}

function drawLineage(view) {
  // each candidate under its (first) parent; a merge names both parents in its line
  const items = new Map(view.candidates.map((c) => [c.index, candidateLine(view, c)]));
  const roots = [];
  for (const c of view.candidates) {
    const parent = c.parents.length ? items.get(c.parents[0]) : null;
    if (!parent) {
      roots.push(items.get(c.index));
      continue;
    }
    let children = parent.querySelector(":scope > ul");
    if (!children) {
      children = el("ul");
      parent.appendChild(children);
    }
    children.appendChild(items.get(c.index));
  }
  document.getElementById("pareto-lineage").replaceChildren(...roots);
}

function drawGrid(view) {
  const head = el("tr");
  head.append(el("th", "example"), el("th", "best"));
  for (const index of view.front) head.appendChild(el("th", "#" + index));
  document.querySelector("#pareto-grid thead").replaceChildren(head);
  const rows = view.examples.map((e) => {
    const row = el("tr");
    row.dataset.example = String(e.id);
    row.append(el("td", e.id), el("td", fmt(e.best_score, 2)));
    for (const index of view.front) {
      const wins = e.front.includes(index);
      const cell = el("td", (wins ? "■ " : "") + fmt(e.scores[index], 2), wins ? "win" : "");
      cell.dataset.candidate = String(index);
      row.appendChild(cell);
    }
    return row;
  });
  document.querySelector("#pareto-grid tbody").replaceChildren(...rows);
}

// The drover dashboard: polls the coordinator's JSON API and redraws. Every value from the API is
// written with textContent, never as HTML: job names, errors and outputs are user data.
"use strict";

const POLL_MS = 1000;
const BATCHES_SHOWN = 50;
const TOKEN_KEY = "drover-token";
let lastUpdate = 0;

const $ = (id) => document.getElementById(id);

function el(tag, attributes, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attributes || {})) {
    if (key === "class") node.className = value;
    else node.setAttribute(key, value);
  }
  for (const child of children) {
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

function duration(ms) {
  if (ms === null || ms === undefined) return "–";
  if (ms < 1000) return `${ms}ms`;
  if (ms < 60000) return `${(ms / 1000).toFixed(1)}s`;
  if (ms < 3600000) return `${Math.floor(ms / 60000)}m${String(Math.floor(ms / 1000) % 60).padStart(2, "0")}s`;
  return `${Math.floor(ms / 3600000)}h${String(Math.floor(ms / 60000) % 60).padStart(2, "0")}m`;
}

// As the CLI shows it: none ("–") for a batch too small or too quick to have one, and under one a
// second per minute or per hour, so it reads with a few digits.
function rate(perSecond) {
  if (!(perSecond > 0)) return "–";
  let [value, unit] = [perSecond, "s"];
  if (perSecond < 1 / 60) [value, unit] = [perSecond * 3600, "h"];
  else if (perSecond < 1) [value, unit] = [perSecond * 60, "min"];
  return value >= 100 ? `${value.toFixed(0)}/${unit}` : `${value.toFixed(1)}/${unit}`;
}

function percentiles(p) {
  if (!p || p.count === 0) return "–";
  return `${duration(p.p50_ms)} / ${duration(p.p90_ms)} / ${duration(p.p99_ms)}`;
}

function token() {
  return sessionStorage.getItem(TOKEN_KEY) || "";
}

// What the coordinator says this page may do with its token (or without one, on loopback):
// "read" or "change".
let access = "read";

class NeedsToken extends Error {}

// Reads send the token kept for this browser session, if there is one: beyond loopback the
// coordinator answers reads only with the client or read token.
async function getJson(path) {
  const headers = token() ? { Authorization: `Bearer ${token()}` } : {};
  const response = await fetch(path, { cache: "no-store", headers });
  if (response.status === 401) {
    const body = await response.json().catch(() => ({}));
    throw new NeedsToken(body.error || "this coordinator needs a token");
  }
  if (!response.ok) throw new Error(`${path}: HTTP ${response.status}`);
  access = response.headers.get("X-Drover-Access") || access;
  return response.json();
}

function renderSummary(status) {
  const jobs = status.stats.jobs;
  $("jobs-pending").textContent = jobs.pending;
  $("jobs-running").textContent = jobs.running;
  $("jobs-succeeded").textContent = jobs.succeeded;
  $("jobs-failed").textContent = jobs.failed;
  const w = status.workers;
  $("workers-summary").textContent = `${w.busy} / ${w.idle} / ${w.lost}`;
  $("throughput").textContent = rate(status.stats.jobs_per_s);
  $("run-time").textContent = percentiles(status.stats.run);
  $("wait-time").textContent = percentiles(status.stats.wait);
  // The timings start over when the coordinator does: say since when they count.
  const started = new Date(status.stats.started_at_ms);
  const since = started.toDateString() === new Date().toDateString()
    ? started.toLocaleTimeString() : started.toLocaleString();
  for (const id of ["run-since", "wait-since"]) $(id).textContent = `since ${since}`;
  $("uptime").textContent = `up ${duration(status.uptime_ms)}`;
}

// Pending jobs by why they wait; those no connected worker can take stand out.
function renderWaiting(groups) {
  const items = (groups || []).map((group) =>
    el("li", { class: group.blocked ? "blocked" : "" },
      `${group.jobs} ${group.jobs === 1 ? "job" : "jobs"}: ${group.reason}`));
  $("waiting").replaceChildren(...items);
  $("waiting-section").classList.toggle("hidden", items.length === 0);
}

// The elastic fleet's pools, as `drover pools` shows them; the section is hidden without pools.
function renderPools(pools) {
  const rows = (pools || []).map((pool) =>
    el("tr", { "data-pool": pool.name },
      el("td", { class: "pool-name" }, pool.name),
      el("td", { class: "provider" }, pool.provider),
      el("td", { class: "min-max" }, `${pool.min} / ${pool.max}`),
      el("td", { class: "desired" }, pool.desired),
      el("td", { class: "booting" }, pool.booting),
      el("td", { class: "idle" }, pool.idle),
      el("td", { class: "busy" }, pool.busy),
      el("td", { class: "launched" }, pool.launched),
      el("td", { class: pool.failed_launches > 0 ? "failed-launches stale" : "failed-launches" }, pool.failed_launches),
      el("td", { class: "terminated" }, pool.terminated),
      el("td", { class: pool.last_error ? "last-error stale" : "last-error" }, pool.last_error || "–")));
  $("pools").tBodies[0].replaceChildren(...rows);
  $("pools-section").classList.toggle("hidden", rows.length === 0);
}

function renderChart(perSecond) {
  const svg = $("chart");
  const max = Math.max(1, ...perSecond);
  const width = 600 / Math.max(1, perSecond.length);
  const bars = perSecond.map((count, index) => {
    const height = (count / max) * 96;
    const bar = document.createElementNS("http://www.w3.org/2000/svg", "rect");
    bar.setAttribute("x", (index * width).toFixed(2));
    bar.setAttribute("y", (100 - height).toFixed(2));
    bar.setAttribute("width", Math.max(0.5, width - 0.5).toFixed(2));
    bar.setAttribute("height", height.toFixed(2));
    const title = document.createElementNS("http://www.w3.org/2000/svg", "title");
    title.textContent = `${count} jobs, ${perSecond.length - 1 - index}s ago`;
    bar.append(title);
    return bar;
  });
  svg.replaceChildren(...bars);
  svg.dataset.max = max;
}

function progressBar(batch) {
  const bar = el("div", { class: "progress", title: `${batch.succeeded} succeeded, ${batch.failed} failed, ${batch.cancelled} cancelled of ${batch.total}` });
  for (const part of ["succeeded", "failed", "cancelled"]) {
    const share = batch.total ? (batch[part] / batch.total) * 100 : 0;
    const piece = el("div", { class: part });
    piece.style.width = `${share}%`;
    bar.append(piece);
  }
  return bar;
}

async function act(path) {
  const headers = { "Content-Type": "application/json" };
  if (token()) headers.Authorization = `Bearer ${token()}`;
  const response = await fetch(path, { method: "POST", headers });
  const body = await response.json().catch(() => ({}));
  if (!response.ok) alert(body.error || `HTTP ${response.status}`);
  poll();
}

function renderBatches(batches) {
  const showActions = access === "change";
  document.querySelectorAll(".actions").forEach((cell) => cell.classList.toggle("hidden", !showActions));
  const rows = batches.slice().reverse().map((batch) => {
    const finished = batch.succeeded + batch.failed + batch.cancelled;
    const actions = el("td", { class: showActions ? "actions" : "actions hidden" });
    if (showActions && !batch.done) {
      const cancel = el("button", { type: "button" }, "cancel");
      cancel.addEventListener("click", () => act(`/api/batches/${batch.id}/cancel`));
      actions.append(cancel);
    }
    if (showActions && batch.failed > 0) {
      const retry = el("button", { type: "button" }, "retry failed");
      retry.addEventListener("click", () => act(`/api/batches/${batch.id}/retry`));
      actions.append(retry);
    }
    const eta = batch.done ? "done" : batch.eta_s !== null ? duration(batch.eta_s * 1000) : "–";
    return el("tr", { "data-batch": batch.id },
      el("td", {}, batch.id),
      el("td", {}, batch.name),
      el("td", {}, progressBar(batch)),
      el("td", { class: "done" }, `${finished}/${batch.total}`),
      el("td", { class: "running" }, batch.running),
      el("td", { class: "failed" }, batch.failed),
      el("td", {}, rate(batch.jobs_per_s)),
      el("td", { class: "eta" }, eta),
      actions);
  });
  $("batches").tBodies[0].replaceChildren(...rows);
  $("batches-empty").classList.toggle("hidden", batches.length > 0);
}

function renderWorkers(workers, now) {
  const rows = workers.map((worker) => {
    const current = worker.current.slice(0, 6)
      .map((job) => `${job.job} (${duration(Math.max(0, now - job.since_ms))})`)
      .join(", ") + (worker.current.length > 6 ? ` … ${worker.current.length} in all` : "");
    const finished = worker.done + worker.failed;
    // A worker that drained and left said goodbye: shown calmly. Only a lost one is an alarm.
    const goneFor = duration(Math.max(0, now - worker.gone_at_ms));
    const heartbeat = worker.gone_at_ms === null
      ? el("td", { class: worker.last_seen_ms > 3000 ? "heartbeat stale" : "heartbeat" }, `${duration(worker.last_seen_ms)} ago`)
      : worker.state === "left"
        ? el("td", { class: "heartbeat left" }, `left ${goneFor} ago`)
        : el("td", { class: "heartbeat stale" }, `lost ${goneFor} ago`);
    return el("tr", { "data-worker": worker.name },
      el("td", {}, worker.name),
      el("td", { class: `state state-${worker.state}` }, worker.state),
      el("td", {}, `${worker.running}/${worker.slots}`),
      el("td", { class: "current" }, current || "–"),
      el("td", { class: "worker-done" }, worker.done),
      el("td", {}, worker.failed),
      el("td", {}, worker.lost),
      el("td", {}, finished ? duration(Math.floor(worker.busy_ms / finished)) : "–"),
      heartbeat);
  });
  $("workers").tBodies[0].replaceChildren(...rows);
  $("workers-empty").classList.toggle("hidden", workers.length > 0);
}

function renderFailures(failures) {
  const rows = failures.map((failure) => {
    const detail = el("td", {}, failure.error || "");
    if (failure.output_tail) detail.append(el("pre", {}, failure.output_tail));
    return el("tr", {},
      el("td", {}, failure.job),
      el("td", {}, failure.batch),
      el("td", {}, failure.worker),
      el("td", {}, failure.outcome),
      el("td", {}, new Date(failure.at_ms).toLocaleTimeString()),
      detail);
  });
  $("failures").tBodies[0].replaceChildren(...rows);
  $("failures-empty").classList.toggle("hidden", failures.length > 0);
}

async function poll() {
  try {
    const [status, workers, batches] = await Promise.all([
      getJson("/api/status"), getJson("/api/workers"), getJson(`/api/batches?limit=${BATCHES_SHOWN}`),
    ]);
    renderSummary(status);
    renderWaiting(status.waiting);
    renderPools(status.pools);
    renderChart(status.stats.per_second);
    renderBatches(batches);
    renderWorkers(workers, status.at_ms);
    renderFailures(status.stats.recent_failures);
    lastUpdate = Date.now();
    $("connection").className = "connection live";
    $("connection").textContent = "live";
    $("token-needed").classList.add("hidden");
  } catch (error) {
    $("connection").className = "connection down";
    if (error instanceof NeedsToken) {
      // Asked once: the token entered is kept for this browser session.
      $("connection").textContent = token() ? "wrong token" : "token needed";
      $("token-needed-reason").textContent = error.message;
      $("token-needed").classList.remove("hidden");
      if (document.activeElement !== $("token")) $("token").focus();
    } else {
      $("connection").textContent = `coordinator unreachable (last update ${lastUpdate ? new Date(lastUpdate).toLocaleTimeString() : "never"})`;
    }
  }
}

document.addEventListener("DOMContentLoaded", () => {
  $("token").value = token();
  $("token-form").addEventListener("submit", (event) => {
    event.preventDefault();
    sessionStorage.setItem(TOKEN_KEY, $("token").value.trim());
    poll();
  });
  poll();
  setInterval(poll, POLL_MS);
});

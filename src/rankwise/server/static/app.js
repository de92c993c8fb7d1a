// rankwise relevance workbench. Vanilla JavaScript (no framework, no build step) so that
// the page ships inside the Python package and works offline; it only calls this
// server's public API. nDCG here uses the same definition as rankwise.evaluate.metrics
// (linear gain = grade, grades below 1 gain nothing, ideal from every judged grade).
"use strict";

const KEY_STORE = "rankwise.apiKey";
const $ = (sel) => document.querySelector(sel);

const app = {
  info: null,
  key: localStorage.getItem(KEY_STORE) || sessionStorage.getItem(KEY_STORE) || "",
  query: "",
  queryId: null,
  judged: {},          // {product id: grade} for the current query
  recall: [],          // first-stage results
  reranked: [],        // results after the cross-encoder
  compare: null,       // last /v1/compare response
  sort: { key: "delta", desc: false },
};

// ---------------------------------------------------------------- DOM and HTTP helpers
function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (v === null || v === undefined || v === false) continue;
    if (k === "class") node.className = v;
    else if (k === "text") node.textContent = v;
    else if (k.startsWith("on")) node.addEventListener(k.slice(2), v);
    else node.setAttribute(k, v === true ? "" : v);
  }
  for (const c of children.flat()) {
    if (c !== null && c !== undefined) node.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return node;
}

class ApiError extends Error {
  constructor(status, message, type) { super(message); this.status = status; this.type = type; }
}

async function api(path, { method = "GET", body } = {}) {
  const headers = { Accept: "application/json" };
  if (body !== undefined) headers["Content-Type"] = "application/json";
  if (app.key) headers.Authorization = `Bearer ${app.key}`;
  let resp;
  try {
    resp = await fetch(path, { method, headers, body: body === undefined ? undefined : JSON.stringify(body) });
  } catch (e) {
    throw new ApiError(0, `cannot reach the server (${e.message})`, "network");
  }
  let data = null;
  try { data = await resp.json(); } catch (_) { /* not JSON */ }
  if (!resp.ok) {
    const msg = (data && data.error) || `HTTP ${resp.status}`;
    if (resp.status === 401) showKeyBar();
    throw new ApiError(resp.status, msg, data && data.error_type);
  }
  return data;
}

function say(text, kind = "error") {
  const m = $("#message");
  m.textContent = text;
  m.className = `message ${kind === "error" ? "" : "info"}`;
  clearTimeout(say.timer);
  if (kind !== "error") say.timer = setTimeout(() => m.classList.add("hidden"), 2500);
}
function clearMessage() { $("#message").classList.add("hidden"); }

// A local folder is shown by its last part (full path on hover); hub ids stay as they are.
const short = (name) => (!name ? "none" : /^[./~]/.test(name) ? name.replace(/\/+$/, "").split("/").pop() : name);
const fmt = (x, d = 3) => (x === null || x === undefined || Number.isNaN(x) ? "–" : Number(x).toFixed(d));
const ms = (s) => (s < 0.01 ? `${(s * 1000).toFixed(1)} ms` : `${(s * 1000).toFixed(0)} ms`);

// ---------------------------------------------------------------- API key
function showKeyBar() {
  $("#key-form").classList.remove("hidden");
  $("#key-input").focus();
}

$("#key-button").addEventListener("click", () => {
  const bar = $("#key-form");
  bar.classList.toggle("hidden");
  if (!bar.classList.contains("hidden")) $("#key-input").focus();
});

$("#key-form").addEventListener("submit", async (ev) => {
  ev.preventDefault();
  app.key = $("#key-input").value.trim();
  localStorage.removeItem(KEY_STORE);
  sessionStorage.removeItem(KEY_STORE);
  (($("#key-remember").checked) ? localStorage : sessionStorage).setItem(KEY_STORE, app.key);
  $("#key-input").value = "";
  $("#key-form").classList.add("hidden");
  clearMessage();
  await init();
});

// ---------------------------------------------------------------- start-up
async function init() {
  try {
    app.info = await api("/v1/workbench");
  } catch (e) {
    say(e.status === 401 ? `API key needed: ${e.message}` : e.message);
    if (e.status === 503) setTimeout(init, 2000);  // models still loading: try again
    return;
  }
  clearMessage();
  const info = app.info;
  const d = info.defaults;
  const mode = $("#mode");
  // "" = the pipeline calibrated for the index (`rankwise tune fusion`), else hybrid
  mode.replaceChildren(
    el("option", { value: "", selected: !d.mode }, "calibrated"),
    ...info.modes.map((m) => el("option", { value: m, selected: m === d.mode }, m)),
  );
  $("#top-k").value = d.top_k;
  $("#top-n").value = d.top_n;
  $("#rerank").checked = !!info.reranker;
  $("#rerank").disabled = !info.reranker;
  $("#server-info").replaceChildren(
    el("div", {}, el("b", {}, info.count.toLocaleString()), " products · ", el("span", { class: "mono", title: info.index }, short(info.index))),
    el("div", {}, "embedder ", el("b", { title: info.embedder || "" }, short(info.embedder)),
      " · reranker ", el("b", { title: info.reranker || "" }, short(info.reranker))),
  );
  buildFilters(info.fields);
  buildPipeline($("#pipe-a"), "a", { rerank: !!info.compare_reranker, reranker: "compare" });
  buildPipeline($("#pipe-b"), "b", { rerank: !!info.reranker, reranker: "main" });
  if (!info.judgments) say("This server keeps no judgments: start it with --judgments FILE to grade results.", "info");
  const q = new URLSearchParams(location.search).get("q");
  if (q) { $("#q").value = q; runSearch(); } else { $("#q").focus(); }
}

function buildFilters(fields) {
  const box = $("#filters");
  box.replaceChildren();
  for (const [name, type] of Object.entries(fields || {})) {
    let control;
    if (type === "int" || type === "float") {
      control = [
        el("input", { type: "number", step: "any", placeholder: "min", "data-field": name, "data-op": "gte", "data-type": type }),
        "–",
        el("input", { type: "number", step: "any", placeholder: "max", "data-field": name, "data-op": "lte", "data-type": type }),
      ];
    } else if (type === "bool") {
      control = el("select", { "data-field": name, "data-op": "eq", "data-type": type },
        el("option", { value: "" }, "any"), el("option", { value: "true" }, "yes"), el("option", { value: "false" }, "no"));
    } else {
      control = el("input", { type: "text", placeholder: "any", "data-field": name, "data-op": "eq", "data-type": "str" });
    }
    box.append(el("label", { class: "filter" }, el("span", { class: "fname" }, name), control));
  }
}

function filterValues() {
  const out = {};
  for (const input of document.querySelectorAll("#filters [data-field]")) {
    const raw = input.value.trim();
    if (raw === "") continue;
    const { field, op, type } = input.dataset;
    let v = raw;
    if (type === "int" || type === "float") v = Number(raw);
    if (type === "bool") v = raw === "true";
    out[field] = Object.assign(out[field] || {}, { [op]: v });
  }
  return Object.keys(out).length ? out : null;
}

// ---------------------------------------------------------------- search
$("#search-form").addEventListener("submit", (ev) => { ev.preventDefault(); runSearch(); });

async function runSearch() {
  const query = $("#q").value;
  if (!query.trim()) { say("Type a query first: an empty query has nothing to rank."); $("#q").focus(); return; }
  const top_k = Number($("#top-k").value) || undefined;
  const top_n = Number($("#top-n").value) || undefined;
  const thr = $("#threshold").value.trim();
  const base = { query, mode: $("#mode").value || null, top_k, top_n, filters: filterValues() };
  const button = $("#search-button");
  button.disabled = true;
  clearMessage();
  try {
    const first = await api("/v1/search", { method: "POST", body: { ...base, rerank: false } });
    let second = null;
    if ($("#rerank").checked) {
      second = await api("/v1/search", {
        method: "POST",
        body: { ...base, rerank: true, threshold: thr === "" ? undefined : Number(thr) },
      });
    }
    app.query = query;
    app.recall = first.results;
    app.reranked = second ? second.results : [];
    app.lastResponse = second || first;
    await loadJudgments();
    render();
  } catch (e) {
    say(e.message);
  } finally {
    button.disabled = false;
  }
}

async function loadJudgments() {
  app.judged = {};
  app.queryId = null;
  if (!app.info || !app.info.judgments) return;
  const data = await api(`/v1/judgments?query=${encodeURIComponent(app.query)}`);
  app.judged = data.judgments;
  app.queryId = data.query_id;
}

// ---------------------------------------------------------------- metrics
function ndcgAt(ids, judged, k = 10) {
  const grades = Object.values(judged).filter((g) => g >= 1).sort((a, b) => b - a);
  if (!grades.length) return null;
  const disc = (i) => 1 / Math.log2(i + 2);
  let dcg = 0;
  ids.slice(0, k).forEach((id, i) => { const g = judged[id] || 0; if (g >= 1) dcg += g * disc(i); });
  let idcg = 0;
  grades.slice(0, k).forEach((g, i) => { idcg += g * disc(i); });
  return dcg / idcg;
}

// ---------------------------------------------------------------- rendering
function render() {
  const resp = app.lastResponse;
  $("#summary").classList.remove("hidden");
  const status = $("#rerank-status");
  if (resp.reranked) { status.textContent = "ran"; status.className = "badge ok"; }
  else if (resp.skipped_reason) { status.textContent = `skipped: ${resp.skipped_reason}`; status.className = "badge skip"; }
  else { status.textContent = "off"; status.className = "badge"; }
  const order = ["embed", "dense", "lexical", "recall", "rerank", "total"];
  const t = resp.timings || {};
  $("#timings").replaceChildren(...order.filter((k) => k in t).map((k) => el("span", { class: "chip" }, `${k} `, el("b", {}, ms(t[k])))));
  if (resp.cached) $("#timings").append(el("span", { class: "chip" }, "cached"));
  $("#query-id").textContent = app.queryId || "–";
  $("#recall-sub").textContent = `${resp.mode} recall order`;
  $("#rerank-sub").textContent = app.info.reranker ? "cross-encoder order" : "no reranker on this server";
  renderColumn($("#col-recall"), app.recall, "recall");
  renderColumn($("#col-rerank"), app.reranked, "rerank");
  renderJudgedState();
}

function keyFields(record) {
  const skip = new Set(["id", "title", "text"]);
  return Object.entries(record).filter(([k, v]) => !skip.has(k) && v !== null && v !== "").slice(0, 4);
}

function movement(item, column) {
  if (column === "rerank") {
    const d = item.recall_rank - item.rank;
    if (d > 0) return el("span", { class: "move up", title: `was #${item.recall_rank} in the first stage` }, `▲${d}`);
    if (d < 0) return el("span", { class: "move down", title: `was #${item.recall_rank} in the first stage` }, `▼${-d}`);
    return el("span", { class: "move same", title: "same position as the first stage" }, "=");
  }
  if (!app.reranked.length) return el("span", { class: "move" });
  const after = app.reranked.find((r) => r.id === item.id);
  if (!after) return el("span", { class: "move gone", title: "not in the reranked Top-N" }, "out");
  const d = item.rank - after.rank;
  if (d > 0) return el("span", { class: "move up", title: `#${after.rank} after rerank` }, `→#${after.rank}`);
  if (d < 0) return el("span", { class: "move down", title: `#${after.rank} after rerank` }, `→#${after.rank}`);
  return el("span", { class: "move same", title: "same position after rerank" }, "=");
}

function renderColumn(list, items, column) {
  if (!items.length) {
    const text = column === "rerank" && !$("#rerank").checked ? "Rerank is switched off." : "No results.";
    list.replaceChildren(el("li", { class: "empty" }, text));
    return;
  }
  list.replaceChildren(...items.map((item) => {
    const rec = item.record || {};
    const scores = [el("span", {}, el("span", { class: "k" }, "recall "), fmt(item.recall_score, 4), el("span", { class: "k" }, ` · #${item.recall_rank}`))];
    if (item.rerank_score !== null && item.rerank_score !== undefined) {
      scores.push(el("span", {}, el("span", { class: "k" }, "logit "), fmt(item.rerank_score, 3)));
      scores.push(el("span", {}, el("span", { class: "k" }, "relevance "), fmt(item.relevance, 3),
        el("span", { class: "relbar" }, el("i", { style: `width:${Math.round(100 * item.relevance)}%` }))));
    }
    const grades = [0, 1, 2, 3].map((g) => el("button", {
      type: "button", class: "grade", "data-grade": g, title: `grade ${g}`, tabindex: "-1",
      onclick: (ev) => { ev.stopPropagation(); judge(item.id, g, ev.target.closest(".row")); },
    }, g));
    return el("li", { class: "row", tabindex: "0", "data-id": item.id, "data-column": column },
      el("div", { class: "rank" }, item.rank),
      el("div", { class: "body" },
        el("div", { class: "title" }, rec.title || item.id),
        el("div", { class: "meta" }, el("span", { class: "pid mono" }, item.id),
          ...keyFields(rec).map(([k, v]) => ` · ${k} ${v}`)),
        el("div", { class: "scores" }, scores)),
      el("div", { class: "side" }, movement(item, column), el("div", { class: "grades" }, grades)));
  }));
}

function renderJudgedState() {
  for (const row of document.querySelectorAll(".row")) {
    const g = app.judged[row.dataset.id];
    row.classList.remove("judged-0", "judged-1", "judged-2", "judged-3");
    if (g !== undefined) row.classList.add(`judged-${g}`);
    row.dataset.grade = g === undefined ? "" : g;
    for (const b of row.querySelectorAll(".grade")) b.classList.toggle("on", String(g) === b.dataset.grade);
  }
  const shown = new Set([...app.recall, ...app.reranked].map((r) => r.id));
  const judgedShown = [...shown].filter((id) => id in app.judged).length;
  $("#judged-count").textContent = `${judgedShown} of ${shown.size} shown · ${Object.keys(app.judged).length} for this query`;
  setNdcg($("#ndcg-recall"), ndcgAt(app.recall.map((r) => r.id), app.judged));
  setNdcg($("#ndcg-rerank"), app.reranked.length ? ndcgAt(app.reranked.map((r) => r.id), app.judged) : null);
}

function setNdcg(node, value) {
  node.replaceChildren("nDCG@10 ", el("b", { class: "value" }, value === null ? "–" : value.toFixed(3)));
  node.dataset.value = value === null ? "" : value.toFixed(6);
}

// ---------------------------------------------------------------- judging
async function judge(id, grade, row) {
  if (!app.info || !app.info.judgments) { say("This server keeps no judgments: start it with --judgments FILE."); return; }
  try {
    const data = await api("/v1/judgments", { method: "POST", body: { query: app.query, id, grade } });
    app.judged = data.judgments;
    app.queryId = data.query_id;
    $("#query-id").textContent = app.queryId;
    renderJudgedState();
    if (row) moveFocus(row, 1);
  } catch (e) {
    say(`Judgment not saved: ${e.message}`);
  }
}

function rowsOf(column) { return [...document.querySelectorAll(`.row[data-column="${column}"]`)]; }

function moveFocus(row, step) {
  const rows = rowsOf(row.dataset.column);
  const i = rows.indexOf(row);
  const next = rows[Math.min(rows.length - 1, Math.max(0, i + step))];
  if (next) next.focus();
}

function switchColumn(row) {
  const other = row.dataset.column === "rerank" ? "recall" : "rerank";
  const rows = rowsOf(other);
  const i = rowsOf(row.dataset.column).indexOf(row);
  if (rows.length) rows[Math.min(i, rows.length - 1)].focus();
}

document.addEventListener("keydown", (ev) => {
  const t = ev.target;
  const typing = t instanceof HTMLInputElement || t instanceof HTMLSelectElement || t instanceof HTMLTextAreaElement;
  if (typing) {
    if (ev.key === "Escape") t.blur();
    return;
  }
  if (ev.ctrlKey || ev.metaKey || ev.altKey) return;
  if ($("#view-search").classList.contains("hidden")) return;
  const row = t.closest ? t.closest(".row") : null;
  if (ev.key === "/") { ev.preventDefault(); $("#q").focus(); $("#q").select(); return; }
  if (["j", "k", "ArrowDown", "ArrowUp"].includes(ev.key)) {
    ev.preventDefault();
    const step = ev.key === "j" || ev.key === "ArrowDown" ? 1 : -1;
    if (row) moveFocus(row, step);
    else (rowsOf("rerank")[0] || rowsOf("recall")[0])?.focus();
    return;
  }
  if (row && ["h", "l", "ArrowLeft", "ArrowRight"].includes(ev.key)) { ev.preventDefault(); switchColumn(row); return; }
  if (row && ["0", "1", "2", "3"].includes(ev.key)) { ev.preventDefault(); judge(row.dataset.id, Number(ev.key), row); }
});

// ---------------------------------------------------------------- tabs
function showView(name) {
  for (const tab of document.querySelectorAll(".tab")) tab.classList.toggle("active", tab.dataset.view === name);
  $("#view-search").classList.toggle("hidden", name !== "search");
  $("#view-compare").classList.toggle("hidden", name !== "compare");
}
for (const tab of document.querySelectorAll(".tab")) tab.addEventListener("click", () => showView(tab.dataset.view));

window.addEventListener("DOMContentLoaded", init);  // after compare.js has loaded too

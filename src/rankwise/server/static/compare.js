// rankwise relevance workbench: the compare view (the judged queries through two
// pipelines, per-query nDCG from POST /v1/compare, sortable). Loaded after app.js and
// uses its helpers ($, el, api, say, fmt, short, showView, runSearch, app).
"use strict";

function buildPipeline(box, name, { rerank, reranker }) {
  const info = app.info;
  const d = info.defaults;
  const legend = box.querySelector("legend");
  const rerankers = [el("option", { value: "main", selected: reranker === "main" }, `served: ${short(info.reranker)}`)];
  if (info.compare_reranker) rerankers.push(el("option", { value: "compare", selected: reranker === "compare" }, `compare: ${short(info.compare_reranker)}`));
  box.replaceChildren(legend,
    el("label", {}, "Mode", el("select", { id: `${name}-mode` }, [el("option", { value: "", selected: !d.mode }, "calibrated"), ...info.modes.map((m) => el("option", { value: m, selected: m === d.mode }, m))])),
    el("label", {}, "Fusion", el("select", { id: `${name}-fusion` },
      el("option", { value: "rrf", selected: d.fusion === "rrf" }, "RRF"), el("option", { value: "weighted", selected: d.fusion === "weighted" }, "weighted"))),
    el("label", {}, "RRF k", el("input", { id: `${name}-rrf-k`, type: "number", min: 1, value: d.rrf_k })),
    el("label", {}, "Dense weight", el("input", { id: `${name}-wd`, type: "number", step: "0.1", min: 0, value: d.weights[0] })),
    el("label", {}, "Lexical weight", el("input", { id: `${name}-wl`, type: "number", step: "0.1", min: 0, value: d.weights[1] })),
    el("label", {}, "Top-K", el("input", { id: `${name}-top-k`, type: "number", min: 1, value: d.top_k })),
    el("label", { class: "check" }, el("input", { id: `${name}-rerank`, type: "checkbox", checked: rerank && !!info.reranker, disabled: !info.reranker }), "Rerank"),
    el("label", {}, "with", el("select", { id: `${name}-reranker` }, rerankers)));
}

function pipeline(name) {
  const v = (id) => $(`#${name}-${id}`);
  return {
    mode: v("mode").value || null,
    fusion: v("fusion").value,
    rrf_k: Number(v("rrf-k").value) || undefined,
    weights: [Number(v("wd").value), Number(v("wl").value)],
    top_k: Number(v("top-k").value) || undefined,
    rerank: v("rerank").checked,
    reranker: v("reranker").value,
  };
}

$("#cmp-run").addEventListener("click", async () => {
  const button = $("#cmp-run");
  button.disabled = true;
  clearMessage();
  try {
    app.compare = await api("/v1/compare", {
      method: "POST",
      body: { a: pipeline("a"), b: pipeline("b"), k: Number($("#cmp-k").value) || 10, split: $("#cmp-split").value },
    });
    app.sort = { key: "delta", desc: false };
    renderCompare();
  } catch (e) {
    say(e.message);
  } finally {
    button.disabled = false;
  }
});

function renderCompare() {
  const c = app.compare;
  const delta = c.mean.a === null ? null : c.mean.b - c.mean.a;
  const cls = delta === null || Math.abs(delta) < 1e-9 ? "" : delta > 0 ? "delta-pos" : "delta-neg";
  $("#cmp-summary").classList.remove("hidden");
  $("#cmp-summary").replaceChildren(
    el("div", { class: "stat" }, el("span", { class: "stat-label" }, `${c.metric} A`), el("span", { class: "big", id: "cmp-mean-a" }, fmt(c.mean.a))),
    el("div", { class: "stat" }, el("span", { class: "stat-label" }, `${c.metric} B`), el("span", { class: "big", id: "cmp-mean-b" }, fmt(c.mean.b))),
    el("div", { class: "stat" }, el("span", { class: "stat-label" }, "Δ"), el("span", { class: `big ${cls}`, id: "cmp-delta" }, delta === null ? "–" : (delta >= 0 ? "+" : "") + delta.toFixed(3))),
    el("div", { class: "stat" }, el("span", { class: "stat-label" }, "Queries"),
      el("span", { id: "cmp-counts" }, `${c.n_scored} scored: `, el("b", { class: "delta-pos" }, `${c.better} better`), " · ",
        el("b", { class: "delta-neg" }, `${c.worse} worse`), ` · ${c.same} same`)),
    el("div", { class: "stat" }, el("span", { class: "stat-label" }, "Took"), `${c.seconds.toFixed(2)} s`),
    el("div", { class: "recipes" },
      el("div", {}, el("span", { class: "tag a" }, "A"), el("span", { class: "mono", id: "cmp-desc-a" }, c.pipelines.a)),
      el("div", {}, el("span", { class: "tag b" }, "B"), el("span", { class: "mono", id: "cmp-desc-b" }, c.pipelines.b))));
  renderCompareRows();
}

function renderCompareRows() {
  const { key, desc } = app.sort;
  const rows = [...app.compare.queries];
  const val = (r) => r[key];
  rows.sort((x, y) => {
    const a = val(x), b = val(y);
    if (a === null || a === undefined) return 1;   // undefined nDCG (nothing relevant) last
    if (b === null || b === undefined) return -1;
    const c = typeof a === "string" ? a.localeCompare(b) : a - b;
    return desc ? -c : c;
  });
  for (const th of document.querySelectorAll("#cmp-table th")) {
    th.classList.toggle("sorted", th.dataset.sort === key);
    th.classList.toggle("desc", th.dataset.sort === key && desc);
  }
  $("#cmp-table").classList.remove("hidden");
  $("#cmp-table tbody").replaceChildren(...rows.map((r) => {
    const d = r.delta;
    const dcls = d === null || Math.abs(d) < 1e-9 ? "" : d > 0 ? "delta-pos" : "delta-neg";
    const w = d === null ? 0 : Math.min(50, Math.abs(d) * 50);
    const bar = el("span", { class: "deltabar" }, el("i", {
      style: `left:${d < 0 ? 50 - w : 50}%;width:${w}%;background:${d < 0 ? "var(--bad)" : "var(--good)"}`,
    }));
    return el("tr", { "data-query-id": r.query_id, onclick: () => openQuery(r.query) },
      el("td", {}, r.query),
      el("td", {}, el("span", { class: `split ${r.split}` }, r.split)),
      el("td", { class: "num" }, `${r.relevant}/${r.judged}`),
      el("td", { class: "num" }, fmt(r.a)),
      el("td", { class: "num" }, fmt(r.b)),
      el("td", { class: `num ${dcls}` }, bar, d === null ? "–" : (d >= 0 ? "+" : "") + d.toFixed(3)));
  }));
}

for (const th of document.querySelectorAll("#cmp-table th")) {
  th.addEventListener("click", () => {
    const key = th.dataset.sort;
    app.sort = { key, desc: app.sort.key === key ? !app.sort.desc : false };
    if (app.compare) renderCompareRows();
  });
}

function openQuery(query) {
  const b = pipeline("b");
  $("#q").value = query;
  $("#mode").value = b.mode || "";
  $("#top-k").value = b.top_k || app.info.defaults.top_k;
  showView("search");
  runSearch();
}


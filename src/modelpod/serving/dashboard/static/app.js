// modelpod dashboard: reads /ui/api/*, draws tables and SVG charts, runs try-it requests.
// No libraries: everything here ships inside the Python package.
"use strict";

const TOKEN_KEY = "modelpod-token";
const COLORS = ["#2563eb", "#dc2626", "#16a34a", "#d97706", "#7c3aed", "#0891b2"];
let selected = null;      // the model whose detail is shown
let detailSpec = null;    // its last detail answer
let timer = null;

const $ = (sel) => document.querySelector(sel);
const el = (tag, attrs = {}, ...children) => {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (k === "class") node.className = v; else if (k === "text") node.textContent = v; else node.setAttribute(k, v);
  }
  for (const child of children) node.append(child);
  return node;
};

function headers(extra = {}) {
  const token = sessionStorage.getItem(TOKEN_KEY);
  return token ? { ...extra, authorization: "Bearer " + token } : extra;
}

async function api(path) {
  const answer = await fetch(path, { headers: headers() });
  if (answer.status === 401) throw Object.assign(new Error("unauthorized"), { status: 401 });
  if (!answer.ok) throw new Error(path + ": HTTP " + answer.status + " " + (await answer.text()));
  return answer.json();
}

function time(t) { return new Date(t * 1000).toLocaleTimeString(); }
function fmt(v, digits = 2) { return v === null || v === undefined ? "–" : Number(v).toFixed(digits); }

// ---- login -----------------------------------------------------------------------------------
function showLogin(message) {
  $("#main").hidden = true;
  $("#login").hidden = false;
  $("#logout").hidden = true;
  $("#login-error").textContent = message || "";
  $("#token").focus();
}

$("#login-form").addEventListener("submit", (event) => {
  event.preventDefault();
  sessionStorage.setItem(TOKEN_KEY, $("#token").value);
  refresh(true);
});

$("#logout").addEventListener("click", () => {
  sessionStorage.removeItem(TOKEN_KEY);
  showLogin("");
});

// ---- overview ---------------------------------------------------------------------------------
async function refresh(fromLogin = false) {
  let overview;
  try {
    overview = await api("/ui/api/overview");
  } catch (err) {
    if (err.status === 401) {
      const tried = fromLogin || sessionStorage.getItem(TOKEN_KEY);
      if (tried) sessionStorage.removeItem(TOKEN_KEY);
      showLogin(tried ? "That token was refused." : "");
      return;
    }
    $("#server-info").textContent = "cannot reach the server: " + err.message;
    return;
  }
  $("#login").hidden = true;
  $("#main").hidden = false;
  $("#logout").hidden = !overview.server.token;
  const s = overview.server;
  $("#server-info").textContent = `v${s.version} · ${s.ready ? "ready" : "not ready"} · up ${Math.round(s.uptime_s || 0)} s`;
  drawModels(overview.models);
  drawEvents(overview.events);
  if (selected === null && overview.models.length) select(overview.models[0].name);
  if (selected !== null) await refreshDetail();
}

function drawModels(models) {
  const body = $("#models tbody");
  body.replaceChildren();
  for (const model of models) {
    for (const v of model.versions) {
      const row = el("tr", { "data-model": model.name, "data-version": v.version });
      if (model.name === selected) row.classList.add("selected");
      const state = el("td", {}, el("span", { class: "state " + v.state, text: v.state }));
      if (v.reason) state.append(el("div", { class: "muted reason", text: v.reason }));
      row.append(el("td", { class: "name", text: model.name }), el("td", { text: v.version }), state,
        el("td", { text: model.platform }), el("td", { text: v.mode || String(v.instances) }),
        el("td", { class: "workers", text: v.workers.join(", ") || "–" }), el("td", { text: String(v.restarts) }),
        el("td", { text: v.environment || "server's" }),
        el("td", { text: v.warm_up_ms === null ? "–" : fmt(v.warm_up_ms, 3) + " ms" }));
      row.addEventListener("click", () => select(model.name));
      body.append(row);
    }
  }
}

function drawEvents(events) {
  const body = $("#events tbody");
  body.replaceChildren();
  for (const e of events.slice().reverse()) {
    body.append(el("tr", { "data-kind": e.kind }, el("td", { text: time(e.t) }), el("td", { text: e.model }),
      el("td", { text: e.version }), el("td", { class: "kind", text: e.kind }), el("td", { text: e.message })));
  }
}

// ---- one model ---------------------------------------------------------------------------------
async function select(name) {
  if (selected !== name) {
    selected = name;
    detailSpec = null;
    $("#try-result").textContent = "";
  }
  for (const row of document.querySelectorAll("#models tbody tr")) {
    row.classList.toggle("selected", row.dataset.model === name);
  }
  await refreshDetail();
}

async function refreshDetail() {
  let detail;
  try {
    detail = await api("/ui/api/models/" + encodeURIComponent(selected));
  } catch (err) {
    $("#detail").hidden = true;
    return;
  }
  $("#detail").hidden = false;
  $("#detail-name").textContent = detail.name;
  const first = detailSpec === null || detailSpec.name !== detail.name;
  detailSpec = detail;
  if (first) drawSpecAndForm(detail);
  drawCharts(detail.series);
  drawErrors(detail.errors);
}

function drawErrors(errors) {
  // the newest ten distinct errors, each with how often it came and when last
  const groups = new Map();
  for (const e of errors) {
    const key = e.status + " " + e.message;
    const seen = groups.get(key);
    groups.delete(key);  // re-inserted: the map stays ordered by each error's last time
    groups.set(key, { ...e, count: (seen ? seen.count : 0) + 1 });
  }
  const body = $("#errors tbody");
  body.replaceChildren();
  for (const e of [...groups.values()].reverse().slice(0, 10)) {
    body.append(el("tr", {}, el("td", { text: time(e.t) }), el("td", { text: String(e.status) }),
      el("td", { text: e.message + (e.count > 1 ? ` (×${e.count})` : "") })));
  }
}

function exampleFor(spec) {
  const dims = spec.shape.map((d) => (typeof d === "number" && d >= 0 ? d : 2));
  const fill = spec.datatype === "BYTES" ? "" : spec.datatype === "BOOL" ? false : 0;
  const build = (level) => (level === dims.length ? fill : Array.from({ length: dims[level] }, () => build(level + 1)));
  return JSON.stringify(build(0));
}

function drawSpecAndForm(detail) {
  const body = $("#spec tbody");
  body.replaceChildren();
  for (const [kind, list] of [["in", detail.inputs], ["out", detail.outputs]]) {
    for (const t of list) {
      body.append(el("tr", {}, el("td", { class: "muted", text: kind }), el("td", { text: t.name }),
        el("td", { text: t.datatype }), el("td", { text: "[" + t.shape.map((d) => (d === null ? "?" : d)).join(", ") + "]" })));
    }
  }
  const inputs = $("#try-inputs");
  inputs.replaceChildren();
  for (const t of detail.inputs) {
    const area = el("textarea", { name: t.name, rows: "2", "data-datatype": t.datatype });
    area.value = exampleFor(t);
    inputs.append(el("label", {}, `${t.name} (${t.datatype}, JSON)`, area));
  }
  $("#upload-form").hidden = !detail.hooks;
  for (const span of document.querySelectorAll(".model-name")) span.textContent = detail.name;
}

function shapeOf(value) {
  const shape = [];
  while (Array.isArray(value)) { shape.push(value.length); value = value[0]; }
  return shape;
}

$("#try-form").addEventListener("submit", async (event) => {
  event.preventDefault();
  const out = $("#try-result");
  const inputs = [];
  for (const area of document.querySelectorAll("#try-inputs textarea")) {
    let value;
    try { value = JSON.parse(area.value); } catch (err) {
      out.textContent = `input '${area.name}': not valid JSON (${err.message})`;
      return;
    }
    const shape = shapeOf(value);
    const data = Array.isArray(value) ? value.flat(Infinity) : [value];
    inputs.push({ name: area.name, datatype: area.dataset.datatype, shape, data });
  }
  const answer = await fetch("/v2/models/" + encodeURIComponent(selected) + "/infer", {
    method: "POST", headers: headers({ "content-type": "application/json" }), body: JSON.stringify({ inputs }),
  });
  const text = await answer.text();
  let shown = text;
  try {
    const doc = JSON.parse(text);
    shown = answer.ok
      ? doc.outputs.map((o) => `${o.name} ${o.datatype} [${o.shape.join(", ")}]: ${JSON.stringify(o.data)}`).join("\n")
      : `HTTP ${answer.status}: ${doc.error}`;
  } catch (err) { /* not JSON: show it as it came */ }
  out.textContent = shown;
  out.dataset.status = String(answer.status);
});

$("#upload-form").addEventListener("submit", async (event) => {
  event.preventDefault();
  const file = $("#upload-file").files[0];
  const out = $("#try-result");
  if (!file) { out.textContent = "choose a file first"; return; }
  const form = new FormData();
  form.append($("#upload-field").value || "images", file, file.name);
  const answer = await fetch("/api/predict/" + encodeURIComponent(selected), { method: "POST", headers: headers(), body: form });
  out.textContent = `HTTP ${answer.status}\n` + (await answer.text());
  out.dataset.status = String(answer.status);
});

// ---- charts --------------------------------------------------------------------------------------
function chart(id, title, unit, lines) {
  // lines: [{label, points: [[t, value|null]...]}]
  let box = document.getElementById(id);
  if (!box) {
    box = el("div", { class: "chart", id },
      el("div", {}, el("span", { class: "title", text: title }), el("span", { class: "now" })),
      document.createElementNS("http://www.w3.org/2000/svg", "svg"), el("div", { class: "legend" }));
    $("#charts").append(box);
  }
  const svg = box.querySelector("svg");
  const W = 320, H = 120, P = 4;
  svg.setAttribute("viewBox", `0 0 ${W} ${H}`);
  svg.setAttribute("preserveAspectRatio", "none");
  const all = lines.flatMap((l) => l.points.map((p) => p[1]).filter((v) => v !== null));
  const top = Math.max(1e-9, ...all) * 1.1;
  const times = lines.flatMap((l) => l.points.map((p) => p[0]));
  const t1 = Math.max(...times, 0), t0 = Math.min(t1 - 60, ...times);
  const x = (t) => P + ((t - t0) / Math.max(1, t1 - t0)) * (W - 2 * P);
  const y = (v) => H - P - (v / top) * (H - 2 * P);
  const parts = [`<line x1="0" y1="${H - P}" x2="${W}" y2="${H - P}" stroke="#e5e7eb"/>`,
    `<text x="${P}" y="12" font-size="10" fill="#6b7280">${fmt(top / 1.1)} ${unit}</text>`];
  lines.forEach((line, i) => {
    const pts = line.points.filter((p) => p[1] !== null).map((p) => `${x(p[0]).toFixed(1)},${y(p[1]).toFixed(1)}`);
    if (pts.length) {
      parts.push(`<polyline fill="none" stroke-width="1.6" stroke="${COLORS[i % COLORS.length]}" points="${pts.join(" ")}"/>`);
    }
  });
  svg.innerHTML = parts.join("");
  const legend = box.querySelector(".legend");
  legend.replaceChildren(...lines.map((line, i) => el("span", { style: "color:" + COLORS[i % COLORS.length], text: "● " + line.label })));
  const last = lines.map((l) => {
    const v = l.points.length ? l.points[l.points.length - 1][1] : null;
    return `${l.label} ${fmt(v)}`;
  });
  const now = box.querySelector(".now");
  now.textContent = last.join(" · ");
  const latest = lines[0].points.length ? lines[0].points[lines[0].points.length - 1][1] : null;
  box.dataset.latest = latest === null ? "" : String(latest);
  box.dataset.max = String(all.length ? Math.max(...all) : 0);
}

function drawCharts(series) {
  const pts = (key) => series.map((s) => [s.t, s[key]]);
  chart("chart-rps", "Requests per second", "rps", [{ label: "rps", points: pts("rps") }]);
  chart("chart-latency", "Latency", "ms", [{ label: "p50", points: pts("p50_ms") }, { label: "p99", points: pts("p99_ms") }]);
  chart("chart-queue", "Queue depth and in flight", "", [{ label: "queued", points: pts("queue") }, { label: "in flight", points: pts("in_flight") }]);
  chart("chart-batch", "Batch size (rows per model call)", "rows", [{ label: "mean", points: pts("batch") }]);
  const statuses = [...new Set(series.flatMap((s) => Object.keys(s.errors)))].sort();
  const errorLines = statuses.length
    ? statuses.map((code) => ({ label: code, points: series.map((s) => [s.t, s.errors[code] || 0]) }))
    : [{ label: "errors", points: series.map((s) => [s.t, 0]) }];
  chart("chart-errors", "Errors by status (per second)", "/s", errorLines);
}

refresh();
timer = setInterval(refresh, 1000);

// The insights page: a query built from form controls (filled from /v1/warehouse/schema), sent to
// POST /v1/query, drawn as a Chart.js line per series with the numbers underneath. The query lives
// in the URL (?q=<json>), so a link reproduces it.
"use strict";

const params = new URLSearchParams(location.search);
const token = params.get("token") || localStorage.getItem("cardflow-token") || "";
const $ = (id) => document.getElementById(id);
let chart = null;
let lastAnswer = null;

function headers() {
  const h = {"Content-Type": "application/json"};
  if (token) h.Authorization = `Bearer ${token}`;
  return h;
}

function option(select, value, text) {
  const o = document.createElement("option");
  o.value = value;
  o.textContent = text ?? value;
  select.append(o);
}

function showError(text) {
  $("error").hidden = !text;
  $("error").textContent = text || "";
}

async function loadSchema() {
  const response = await fetch("/v1/warehouse/schema", {headers: headers()});
  const body = await response.json();
  if (!response.ok) throw new Error(body.message || response.statusText);
  for (const name of body.events) option($("event"), name);
  for (const name of body.event_properties) {
    option($("property"), name);
    option($("breakdown"), `event:${name}`, `event · ${name}`);
    option($("event-properties"), name);
  }
  for (const name of body.user_properties) {
    option($("breakdown"), `user:${name}`, `user · ${name}`);
    option($("user-properties"), name);
  }
}

function addFilter(f = {}) {
  const row = document.createElement("div");
  row.className = "filter";
  row.innerHTML = `<select class="on"><option>event</option><option>user</option></select>
    <input class="property" placeholder="property" list="event-properties">
    <select class="op">${["eq", "neq", "gt", "gte", "lt", "lte", "contains", "in", "is_set", "is_not_set"]
      .map((o) => `<option>${o}</option>`).join("")}</select>
    <input class="value" placeholder='value (JSON for numbers, true, ["a","b"])'>
    <button type="button" class="remove">×</button>`;
  row.querySelector(".on").value = f.on || "event";
  row.querySelector(".property").value = f.property || "";
  row.querySelector(".op").value = f.op || "eq";
  if (f.value !== undefined) row.querySelector(".value").value = typeof f.value === "string" ? f.value : JSON.stringify(f.value);
  row.querySelector(".on").addEventListener("change", (e) => {
    row.querySelector(".property").setAttribute("list", `${e.target.value}-properties`);
  });
  row.querySelector(".remove").addEventListener("click", () => row.remove());
  $("filters").append(row);
}

function parseValue(text) {
  try { return JSON.parse(text); } catch { return text; }  // a bare word is a string
}

function fromControls() {
  const q = {kind: "trend", aggregation: $("aggregation").value, period: $("period").value};
  if ($("event").value) q.event = $("event").value;
  if (!["count", "unique_users"].includes(q.aggregation)) q.property = $("property").value;
  if ($("from").value) q.from = $("from").value;
  if ($("to").value) q.to = $("to").value;
  const b = $("breakdown").value;
  if (b) { const [on, ...rest] = b.split(":"); q.breakdown = {property: rest.join(":"), on}; }
  q.filters = [...document.querySelectorAll("#filters .filter")].map((row) => {
    const f = {property: row.querySelector(".property").value, op: row.querySelector(".op").value,
               on: row.querySelector(".on").value};
    if (!["is_set", "is_not_set"].includes(f.op)) f.value = parseValue(row.querySelector(".value").value);
    return f;
  });
  return q;
}

function toControls(q) {
  const set = (id, v) => { if (v !== undefined && v !== null) $(id).value = v; };
  set("event", q.event); set("aggregation", q.aggregation); set("period", q.period);
  set("from", q.from); set("to", q.to);
  if (q.property) { if (![...$("property").options].some((o) => o.value === q.property)) option($("property"), q.property); set("property", q.property); }
  if (q.breakdown) {
    const b = typeof q.breakdown === "string" ? {property: q.breakdown, on: "event"} : q.breakdown;
    const value = `${b.on || "event"}:${b.property}`;
    if (![...$("breakdown").options].some((o) => o.value === value)) option($("breakdown"), value);
    $("breakdown").value = value;
  }
  for (const f of q.filters || []) addFilter(f);
  propertyVisible();
}

function propertyVisible() {
  $("property-label").hidden = ["count", "unique_users"].includes($("aggregation").value);
}

const label = (s) => (s.breakdown === null || s.breakdown === undefined ? "(not set)" : String(s.breakdown));

function draw(answer) {
  lastAnswer = answer;
  $("result").hidden = false;
  const labels = answer.buckets.map((b) => (answer.period === "hour" ? b.slice(0, 16).replace("T", " ") : b.slice(0, 10)));
  const series = answer.series.length && answer.series.some((s) => s.breakdown !== null) ? answer.series : answer.series.slice(0, 1);
  const data = {labels, datasets: series.map((s) => ({label: series.length > 1 ? label(s) : answer.aggregation,
                                                       data: s.values, tension: 0.2, spanGaps: true}))};
  if (chart) chart.destroy();
  const canvas = $("chart");
  delete canvas.dataset.drawn;
  chart = new Chart(canvas, {type: "line", data, options: {animation: false, maintainAspectRatio: false,
    plugins: {legend: {display: series.length > 1}}}});
  canvas.dataset.drawn = "1";
  canvas.dataset.series = String(series.length);
  const table = $("table");
  table.innerHTML = "";
  const head = table.createTHead().insertRow();
  for (const h of ["bucket", ...series.map((s) => (series.length > 1 ? label(s) : answer.aggregation))]) {
    const th = document.createElement("th"); th.textContent = h; head.append(th);
  }
  const body = table.createTBody();
  labels.forEach((l, i) => {
    const row = body.insertRow();
    row.insertCell().textContent = l;
    for (const s of series) { const c = row.insertCell(); c.className = "num"; c.textContent = s.values[i] ?? ""; }
  });
}

function csv(answer) {
  const quote = (v) => (/[",\n]/.test(String(v)) ? `"${String(v).replaceAll('"', '""')}"` : String(v));
  const lines = [["bucket", ...answer.series.map(label)].map(quote).join(",")];
  answer.buckets.forEach((b, i) => lines.push([b, ...answer.series.map((s) => s.values[i] ?? "")].map(quote).join(",")));
  return lines.join("\n") + "\n";
}

async function run(q) {
  showError("");
  const shared = new URL(location.href);
  shared.searchParams.set("q", JSON.stringify(q));
  shared.searchParams.delete("token");  // a shared link never carries the token
  history.replaceState(null, "", `${shared.pathname}${shared.search}${token && params.get("token") ? `&token=${encodeURIComponent(token)}` : ""}`);
  $("share").href = shared.toString();
  $("run").disabled = true;
  try {
    const response = await fetch("/v1/query", {method: "POST", headers: headers(), body: JSON.stringify(q)});
    const body = await response.json();
    if (!response.ok) {
      $("result").hidden = true;
      showError(`${body.field ? body.field + ": " : ""}${body.message || response.statusText}`.replace(/^(\S+): \1: /, "$1: "));
      return;
    }
    draw(body);
  } catch (err) {
    showError(String(err));
  } finally {
    $("run").disabled = false;
  }
}

$("aggregation").addEventListener("change", propertyVisible);
$("add-filter").addEventListener("click", () => addFilter());
$("csv").addEventListener("click", () => {
  if (!lastAnswer) return;
  const a = document.createElement("a");
  a.href = URL.createObjectURL(new Blob([csv(lastAnswer)], {type: "text/csv"}));
  a.download = "insights.csv";
  a.click();
});
$("query").addEventListener("submit", (e) => { e.preventDefault(); run(fromControls()); });

(async () => {
  try {
    await loadSchema();
    $("status").className = "status live";
    $("status").textContent = "warehouse ready";
  } catch (err) {
    $("status").className = "status down";
    $("status").textContent = "no warehouse";
    showError(`the warehouse's names could not be loaded: ${err.message}`);
  }
  const shared = params.get("q");
  if (shared) {
    try { const q = JSON.parse(shared); toControls(q); run(q); } catch { showError("the link's query (?q=) is not valid JSON"); }
  }
})();

// The cardflow dashboard: every card on a grid, drawn from /v1/cards and kept live by
// server-sent events from /v1/cards/stream. No build step; Chart.js is bundled (static/).
"use strict";

const params = new URLSearchParams(location.search);
let token = params.get("token") || localStorage.getItem("cardflow-token") || "";
const cards = new Map();   // id -> {el, result}
const charts = new Map();  // canvas id -> Chart
const grid = document.getElementById("cards");
const statusEl = document.getElementById("status");

function q(path) {
  return token ? `${path}${path.includes("?") ? "&" : "?"}token=${encodeURIComponent(token)}` : path;
}

function userLink(uid) {
  return q(`/users/${encodeURIComponent(uid)}`);
}

function lookup() {  // the header's "look a user up" box, on every page
  const form = document.getElementById("lookup");
  if (!form) return;
  form.onsubmit = (event) => {
    event.preventDefault();
    const uid = document.getElementById("lookup-uid").value.trim();
    if (uid) location.href = userLink(uid);
  };
}

function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (k === "class") node.className = v;
    else if (k === "text") node.textContent = v;
    else if (k.startsWith("on")) node.addEventListener(k.slice(2), v);
    else node.setAttribute(k, v);
  }
  for (const child of children) if (child != null) node.append(child);
  return node;
}

const fmt = new Intl.NumberFormat(undefined, {maximumFractionDigits: 2});
const num = (v) => (typeof v === "number" ? fmt.format(v) : String(v));

function setStatus(kind, text) {
  statusEl.className = `status ${kind}`;
  statusEl.textContent = text;
}

function ago(ms) {
  const s = Math.max(0, Math.round((Date.now() - ms) / 1000));
  if (s < 60) return `${s}s ago`;
  if (s < 3600) return `${Math.round(s / 60)} min ago`;
  return `${Math.round(s / 3600)} h ago`;
}

// --- widgets ---------------------------------------------------------------------------------------

let chartSeq = 0;
const PALETTE = ["#3566d6", "#e8710a", "#1e8e3e", "#9334e6", "#d01884", "#12b5cb", "#7f8c8d"];

function chart(type, labels, datasets, horizontal = false) {
  const id = `chart-${++chartSeq}`;
  const canvas = el("canvas", {id});
  const box = el("div", {class: "chart"}, canvas);
  requestAnimationFrame(() => {
    const made = new Chart(canvas, {
      type, data: {labels, datasets},
      options: {animation: false, responsive: true, maintainAspectRatio: false,
                indexAxis: horizontal ? "y" : "x",
                plugins: {legend: {display: datasets.length > 1}},
                elements: {point: {radius: 0}}},
    });
    charts.set(id, made);
    canvas.dataset.drawn = String(labels.length);
  });
  return box;
}

let geo = null;  // the countries' shapes and codes, fetched once (inlined in a `card run --html` preview)
function geography() {
  if (!geo) {
    geo = window.CARDFLOW_GEO
      ? Promise.resolve(window.CARDFLOW_GEO)
      : Promise.all(["/static/countries-110m.json", "/static/iso-numeric.json"].map(
          (path) => fetch(path).then((r) => { if (!r.ok) throw new Error(`${path}: HTTP ${r.status}`); return r.json(); })))
        .then(([atlas, numeric]) => ({atlas, numeric}));
    geo = geo.then(({atlas, numeric}) => ({
      countries: ChartGeo.topojson.feature(atlas, atlas.objects.countries).features, numeric}));
  }
  return geo;
}

function download(name, type, text) {
  const url = URL.createObjectURL(new Blob([text], {type}));
  el("a", {href: url, download: name}).click();
  setTimeout(() => URL.revokeObjectURL(url), 1000);
}

function csv(columns, rows) {
  const cell = (v) => {
    const s = v == null ? "" : String(v);
    return /[",\n]/.test(s) ? `"${s.replaceAll('"', '""')}"` : s;
  };
  return [columns, ...rows].map((r) => r.map(cell).join(",")).join("\n") + "\n";
}

function table(columns, rows) {
  const numeric = columns.map((_, i) => rows.length > 0 && rows.every((r) => typeof r[i] === "number"));
  return el("div", {class: "scroll"}, el("table", {},
    el("thead", {}, el("tr", {}, ...columns.map((c, i) => el("th", {class: numeric[i] ? "num" : "", text: c})))),
    el("tbody", {}, ...rows.map((r) => el("tr", {},
      ...r.map((v, i) => el("td", {class: numeric[i] ? "num" : "", text: num(v ?? "")})))))));
}

const WIDGETS = {
  text: (w) => el("p", {text: w.text}),
  number(w) {
    const delta = w.delta == null ? null : el("span", {
      class: `delta ${w.delta >= 0 ? "up" : "down"}`,
      text: ` ${w.delta >= 0 ? "▲" : "▼"} ${Math.abs(w.delta * 100).toFixed(1)}%`});
    return el("div", {class: "number"},
      el("div", {class: "value", "data-value": String(w.value), text: num(w.value) + (w.unit || "")}, delta),
      el("div", {class: "label", text: w.label || ""}));
  },
  bar: (w) => chart("bar", w.data.map((d) => d[0]),
                    [{label: w.label || "", data: w.data.map((d) => d[1]), backgroundColor: PALETTE[0]}]),
  line(w) {
    const names = Object.keys(w.series);
    const labels = [...new Set(names.flatMap((n) => w.series[n].map((p) => p[0])))];
    return chart("line", labels, names.map((n, i) => {
      const values = new Map(w.series[n].map((p) => [p[0], p[1]]));
      return {label: n, data: labels.map((x) => values.get(x) ?? null), borderColor: PALETTE[i % PALETTE.length],
              backgroundColor: PALETTE[i % PALETTE.length], tension: 0.2};
    }));
  },
  table(w) {
    const stamp = () => new Date().toISOString().slice(0, 19).replaceAll(":", "");
    return el("div", {}, table(w.columns, w.rows), el("div", {class: "exports"},
      el("button", {text: "CSV", onclick: () => download(`table-${stamp()}.csv`, "text/csv", csv(w.columns, w.rows))}),
      " ",
      el("button", {text: "JSON", onclick: () => download(`table-${stamp()}.json`, "application/json",
        JSON.stringify(w.rows.map((r) => Object.fromEntries(w.columns.map((c, i) => [c, r[i]])))))})));
  },
  map(w) {
    // A choropleth of the world (chartjs-chart-geo, world-atlas 110m), then the countries ranked.
    const entries = Object.entries(w.values).sort((a, b) => b[1] - a[1]);
    const max = Math.max(1, ...entries.map((e) => e[1]));
    const canvas = el("canvas", {id: `chart-${++chartSeq}`});
    const box = el("div", {class: "chart geo"}, canvas);
    geography().then(({countries, numeric}) => {
      const byNumeric = new Map(Object.entries(w.values).map(([code, v]) => [numeric[code], v]));
      const made = new Chart(canvas, {
        type: "choropleth",
        data: {labels: countries.map((c) => c.properties.name),
               datasets: [{label: w.label || "", outline: countries, showOutline: true,
                           data: countries.map((c) => ({feature: c, value: byNumeric.get(c.id) ?? 0}))}]},
        options: {animation: false, responsive: true, maintainAspectRatio: false,
                  plugins: {legend: {display: false}},
                  scales: {projection: {axis: "x", projection: "equalEarth"},
                           color: {axis: "x", quantize: 5, legend: {position: "bottom-right", align: "right"}}}},
      });
      charts.set(canvas.id, made);
      canvas.dataset.drawn = String(countries.filter((c) => byNumeric.has(c.id)).length);
    }).catch((err) => box.replaceChildren(el("p", {class: "muted", text: `map not drawn: ${err.message || err}`})));
    return el("div", {class: "map"}, el("div", {class: "muted", text: w.label || ""}), box,
      ...entries.map(([code, v]) => el("div", {class: "row", "data-country": code},
        el("span", {text: code}),
        el("div", {class: "bar", style: `width:${(100 * v) / max}%`}),
        el("span", {class: "num", text: num(v)}))));
  },
  timeline: (w) => el("ul", {class: "timeline"}, ...w.events.map(([t, text]) =>
    el("li", {}, el("span", {class: "muted", text: new Date(t).toISOString().replace("T", " ").slice(0, 19) + " "}),
       text))),
  users(w) {
    const keys = [...new Set(w.users.flatMap((u) => Object.keys(u)))];
    const show = (k, v) => (/(_seen|_at|^ts)$/.test(k) && typeof v === "number" ? ago(v) : v);
    const drawn = table(keys, w.users.map((u) => keys.map((k) => show(k, u[k]))));
    const column = keys.indexOf("uid");
    if (column >= 0) {  // each uid opens its user page
      drawn.querySelectorAll("tbody tr").forEach((tr, i) => {
        const cell = tr.children[column];
        cell.replaceChildren(el("a", {href: userLink(w.users[i].uid), text: String(w.users[i].uid)}));
      });
    }
    return drawn;
  },
  cohort(w) {
    const width = Math.max(0, ...w.rows.map((r) => r.cells.length));
    const head = ["cohort", "users", ...Array.from({length: width}, (_, k) => `${w.period} ${k}`)];
    return el("div", {class: "scroll"}, el("table", {class: "cohort"},
      el("thead", {}, el("tr", {}, ...head.map((h) => el("th", {text: h})))),
      el("tbody", {}, ...w.rows.map((r) => el("tr", {},
        el("td", {text: r.label}), el("td", {text: num(r.size)}),
        ...r.cells.map((c) => el("td", {
          text: c == null ? "" : `${(c * 100).toFixed(1)}%`,
          style: c == null ? "" : `background: rgba(53,102,214,${(0.1 + 0.9 * c).toFixed(3)}); color: ${c > 0.5 ? "#fff" : "inherit"}`,
        })))))));
  },
  funnel(w) {
    const first = w.steps.length ? w.steps[0][1] : 0;
    return el("div", {class: "funnel"}, ...w.steps.map(([name, n]) => el("div", {class: "step"},
      el("div", {text: `${name}: ${num(n)}${first ? ` (${((100 * n) / first).toFixed(1)}%)` : ""}`}),
      el("div", {class: "bar", style: `width:${first ? (100 * n) / first : 0}%`}))));
  },
  group: (w) => el("div", {class: `group ${w.direction}`}, ...w.children.map(widget)),
};

function widget(w) {
  const draw = WIDGETS[w.type];
  const node = draw ? draw(w) : el("p", {class: "error", text: `unknown widget type ${w.type}`});
  node.dataset.widget = w.type;
  return node;
}

// --- cards -----------------------------------------------------------------------------------------

function renderCard(result) {
  let entry = cards.get(result.id);
  if (!entry) {
    entry = {el: el("section", {class: "card", "data-card": result.id})};
    cards.set(result.id, entry);
    const after = [...cards.keys()].sort().find((id) => id > result.id);
    grid.insertBefore(entry.el, after ? cards.get(after).el : null);
  }
  for (const canvas of entry.el.querySelectorAll("canvas")) {
    charts.get(canvas.id)?.destroy();
    charts.delete(canvas.id);
  }
  entry.result = result;
  const body = result.error
    ? [el("div", {class: "error", text: result.error})]
    : result.widgets.map(widget);
  entry.el.replaceChildren(...[  // nulls left out: replaceChildren would write them as text
    el("h2", {text: result.title}),
    result.summary ? el("p", {class: "summary", text: result.summary}) : null,
    el("div", {class: "fresh", "data-generated": String(result.generated_at),
               "data-max-ts": String(result.max_ts || 0)}),
    result.complete === false
      ? el("p", {class: "incomplete", text: `incomplete: ${result.partitions} partition(s) so far with this ` +
                                             "configuration; the numbers cover only those"})
      : null,
    ...body].filter((node) => node != null));
  entry.el.dataset.generated = String(result.generated_at);
  entry.el.classList.toggle("wide", Boolean(entry.el.querySelector('[data-widget="cohort"]')));
  freshness();
  document.getElementById("empty").hidden = true;
}

function freshness() {
  for (const node of document.querySelectorAll(".fresh")) {
    const generated = Number(node.dataset.generated);
    const upTo = Number(node.dataset.maxTs);
    node.textContent = `updated ${ago(generated)}` +
      (upTo ? ` · includes events up to ${new Date(upTo).toISOString().slice(0, 19).replace("T", " ")} UTC` : "");
    node.classList.toggle("stale", Date.now() - generated > 60_000);
  }
}

async function load() {
  const response = await fetch(q("/v1/cards"));
  if (response.status === 401 || response.status === 403) {
    askToken(response.status === 403 ? "this token lacks the read scope" : (token ? "invalid token" : ""));
    return false;
  }
  if (!response.ok) throw new Error(`GET /v1/cards: HTTP ${response.status}`);
  const body = await response.json();
  body.cards.forEach(renderCard);
  document.getElementById("empty").hidden = body.cards.length > 0;
  return true;
}

function follow() {
  const source = new EventSource(q("/v1/cards/stream"));
  source.onopen = () => setStatus("live", "live");
  source.onerror = () => setStatus("down", "reconnecting…");  // EventSource retries by itself
  source.addEventListener("result", (event) => renderCard(JSON.parse(event.data)));
}

function askToken(message) {
  const form = document.getElementById("login");
  form.hidden = false;
  setStatus("down", "needs a token");
  document.getElementById("login-error").textContent = message;
  form.onsubmit = (event) => {
    event.preventDefault();
    token = document.getElementById("token").value.trim();
    localStorage.setItem("cardflow-token", token);
    form.hidden = true;
    if (window.CARDFLOW_PAGE) location.reload(); else start();
  };
}

async function start() {
  if (window.CARDFLOW_PREVIEW) {  // `cardflow card run --html`: results in the page, no server
    window.CARDFLOW_PREVIEW.forEach(renderCard);
    document.getElementById("empty").hidden = window.CARDFLOW_PREVIEW.length > 0;
    setStatus("live", "preview");
    return;
  }
  try {
    if (await load()) follow();
  } catch (err) {
    setStatus("down", String(err.message || err));
    setTimeout(start, 3000);
  }
}

setInterval(freshness, 1000);
lookup();
if (!window.CARDFLOW_PAGE) start();  // the user page (user.js) uses the widgets only

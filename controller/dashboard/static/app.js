// The dashboard page: login, topology graph (SVG), flow tables, trace drawing, live updates.
// Every text from the server goes in with textContent / SVG text nodes, never as HTML.
"use strict";

const SVGNS = "http://www.w3.org/2000/svg";
const TOKEN_KEY = "sdn-dashboard-token";
const state = {
  token: sessionStorage.getItem(TOKEN_KEY) || "", me: null, view: "topology", topo: null, selected: null,
  chassis: null, flows: null, revision: 0, stream: null, streamGen: 0, refreshTimer: null, flowsTimer: null,
  flashed: new Set(), ports: [],
};

const $ = (sel) => document.querySelector(sel);

function el(tag, attrs = {}, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (k === "class") e.className = v;
    else if (k.startsWith("on")) e.addEventListener(k.slice(2), v);
    else if (v !== undefined && v !== null && v !== false) e.setAttribute(k, v === true ? "" : v);
  }
  for (const c of children.flat()) {
    if (c === null || c === undefined) continue;
    e.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return e;
}

function svg(tag, attrs = {}, ...children) {
  const e = document.createElementNS(SVGNS, tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (k.startsWith("on")) e.addEventListener(k.slice(2), v);
    else if (v !== undefined && v !== null) e.setAttribute(k, v);
  }
  for (const c of children.flat()) {
    if (c === null || c === undefined) continue;
    e.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return e;
}

class AuthError extends Error {
  constructor(message, token) { super(message); this.token = token; }
}

async function api(path) {
  const token = state.token;
  if (!token) throw new AuthError("signed out", token);
  const resp = await fetch(path, { headers: { Authorization: "Bearer " + token }, cache: "no-store" });
  let body = null;
  try { body = await resp.json(); } catch (_) { body = { error: resp.statusText }; }
  if (resp.status === 401) throw new AuthError(body.error || "unauthorized", token);
  if (!resp.ok) throw new Error(body.error || resp.statusText);
  return body;
}

// ------------------------------------------------------------------------------------------ login

async function login(token) {
  state.token = token;
  try {
    state.me = await api("/api/whoami");
  } catch (err) {
    state.token = "";
    sessionStorage.removeItem(TOKEN_KEY);
    showLogin(err instanceof AuthError ? "That token is not known to this controller." : String(err.message));
    return;
  }
  sessionStorage.setItem(TOKEN_KEY, token);
  showApp();
}

function showLogin(message = "") {
  stopStream();
  $("#app").hidden = true;
  $("#login").hidden = false;
  $("#login-error").textContent = message;
  $("#token").focus();
}

function logout() {
  clearTimeout(state.refreshTimer);
  clearTimeout(state.flowsTimer);
  sessionStorage.removeItem(TOKEN_KEY);
  $("#token").value = "";
  // nothing of this session may show in the next one (another principal sees other things)
  Object.assign(state, { topo: null, selected: null, path: null, chassis: null, chassisList: null, flows: null,
    ports: [], revision: 0, view3: null });
  $("#owner-filter").value = "";
  $("#trace-dst").value = "";
  for (const id of ["#trace-result", "#flows", "#flows-summary", "#chassis-picker", "#graph", "#details"]) {
    $(id).replaceChildren();
  }
  state.token = "";
  state.me = null;
  showLogin();
}

function onAuthLost(err) {
  if (!(err instanceof AuthError)) return false;
  if (!state.token || err.token !== state.token) return true;  // an answer to a token already signed out
  logout();
  $("#login-error").textContent = "Signed out: " + err.message;
  return true;
}

function showApp() {
  $("#login").hidden = true;
  $("#app").hidden = false;
  const who = $("#whoami");
  who.textContent = state.me.admin ? "admin" : "tenant " + state.me.tenant;
  who.className = "badge" + (state.me.admin ? " admin" : "");
  document.querySelectorAll(".admin-only").forEach((e) => { e.hidden = !state.me.admin; });
  const fromHash = location.hash.replace("#", "");
  show(["topology", "flows", "trace"].includes(fromHash) && (state.me.admin || fromHash === "topology")
    ? fromHash : "topology");
  loadTopology().then(startStream);
}

function show(view) {
  state.view = view;
  history.replaceState(null, "", "#" + view);
  document.querySelectorAll(".tab").forEach((t) => t.classList.toggle("active", t.dataset.view === view));
  for (const v of ["topology", "flows", "trace"]) $("#view-" + v).hidden = v !== view;
  if (view === "topology" && state.topo) drawTopology();  // labels are fitted while they can be measured
  if (view === "flows") loadChassis();
  if (view === "trace") loadTracePorts();
}

// ------------------------------------------------------------------------------------------ topology

async function loadTopology() {
  try {
    state.topo = await api("/api/topology");
    state.revision = state.topo.revision;
    drawTopology();
  } catch (err) {
    if (!onAuthLost(err)) $("#counts").textContent = "error: " + err.message;
  }
}

function drawTopology() {
  const t = state.topo;
  const counts = $("#counts");
  counts.replaceChildren();
  for (const [k, v] of Object.entries(t.counts)) {
    if ((k === "chassis" && !state.me.admin) || (k === "routers" && !v)) continue;
    counts.append(el("span", {}, el("b", {}, v), k));
  }
  counts.append(el("span", { class: "muted" }, "revision " + t.revision));
  if (state.path) {
    counts.append(el("span", { class: "pathnote" }, "trace path highlighted ",
      el("a", { href: "#topology", onclick: (ev) => { ev.preventDefault(); state.path = null; drawTopology(); } }, "clear")));
  }

  const left = 110;
  const right = 150;  // room for the labels beside the rightmost network / router / tenant
  const W = Math.max(900, left + right + 130 * (t.slots || 1));
  const layers = t.layers || ["tenant", "network", "port", "chassis"];
  const rows = t.port_rows || 1, ROW = 64, GAP = 150;
  const H = 110 + GAP * (layers.length - 1) + ROW * (rows - 1);
  const portLayer = layers.indexOf("port");
  const yOf = (kind, row) => {
    const i = layers.indexOf(kind);
    return 50 + GAP * i + (portLayer >= 0 && i > portLayer ? ROW * (rows - 1) : 0) + (kind === "port" ? ROW * (row || 0) : 0);
  };
  const pos = {};
  for (const n of t.nodes) pos[n.id] = { x: left + n.x * (W - left - right), y: yOf(n.kind, n.row), kind: n.kind };
  const g = $("#graph");
  const keep = state.view3 && state.view3.W === W && state.view3.H === H ? state.view3.box : null;
  state.view3 = { W, H, box: keep || [0, 0, W, H] };
  g.setAttribute("viewBox", state.view3.box.join(" "));
  g.replaceChildren();
  const names = { tenant: "tenants", router: "routers", network: "networks", port: "ports", chassis: "chassis" };
  layers.forEach((k) => {
    if (k === "chassis" && !state.me.admin) return;
    g.append(svg("text", { class: "layer-label", x: 12, y: yOf(k, 0) + 4 }, names[k]));
  });
  const edges = svg("g", { class: "edges" });
  for (const e of t.edges) {
    const a = pos[e.source], b = pos[e.target];
    if (!a || !b) continue;
    const ay = a.y + EDGE_OUT[a.kind], by = b.y - EDGE_IN[b.kind], my = (ay + by) / 2;
    const onPath = state.path && state.path.has(e.source) && state.path.has(e.target);
    edges.append(svg("path", {
      class: "edge " + e.kind + (onPath ? " onpath" : ""), "data-source": e.source, "data-target": e.target,
      d: `M${a.x},${ay} C${a.x},${my} ${b.x},${my} ${b.x},${by}`,
    }));
  }
  g.append(edges);
  for (const n of t.nodes) g.append(drawNode(n, pos[n.id]));
  fitLabels(g, t.nodes, pos, W);
  if (!t.nodes.length) {
    g.append(svg("text", { x: W / 2, y: H / 2, "text-anchor": "middle", class: "layer-label" },
      "nothing here yet: create a network"));
  }
  if (state.selected && t.nodes.some((n) => n.id === state.selected)) select(state.selected);
  else { state.selected = null; showDetails(null); }
}

// where edges leave a node (below it, and below its label for ports) and enter one (its top)
const EDGE_OUT = { tenant: 17, router: 15, network: 13, port: 44, chassis: 15 };
const EDGE_IN = { tenant: 17, router: 15, network: 13, port: 10, chassis: 15 };

function drawNode(n, p) {
  const cls = ["node", n.kind];
  const routerPort = n.kind === "port" && (n.details.device_owner || "").startsWith("network:router");
  if (routerPort) cls.push("router-port");  // a router's leg: logical, never plugged, so never ACTIVE
  else if (n.kind === "port" && n.status !== "ACTIVE") cls.push("down");
  if (n.kind === "chassis" && !n.connected) cls.push("disconnected");
  if (state.flashed.has(n.id)) cls.push("flash");
  if (state.path && state.path.has(n.id)) cls.push("onpath");
  let shape;
  if (n.kind === "tenant") shape = svg("circle", { class: "shape", r: 17 });
  else if (n.kind === "network") shape = svg("rect", { class: "shape", x: -16, y: -13, width: 32, height: 26, rx: 6 });
  else if (n.kind === "router") shape = svg("path", { class: "shape", d: "M0,-16 L16,0 L0,16 L-16,0 Z" });
  else if (n.kind === "port") shape = svg("circle", { class: "shape", r: 10 });
  else shape = svg("rect", { class: "shape", x: -22, y: -15, width: 44, height: 30, rx: 4 });
  // the label is the display name (the server adds the id where two share a name); the tooltip has the id
  let title = n.label, sub = "";
  const tip = [`${n.kind} ${n.label}`];
  if (n.label !== n.name) tip.push("id " + n.name);
  if (n.tenant) tip.push("tenant " + n.tenant);
  if (n.kind === "port") {
    const owner = n.details.device_owner || "";
    if (owner.startsWith("network:router") && n.details.device_id && !n.details.display_name) {
      title = (owner.endsWith("gateway") ? "gw of " : "if of ") + nodeLabel("router", n.details.device_id);
    }
    const ips = (n.details.fixed_ips || []).map((f) => f.ip_address);
    sub = [ips[0], routerPort ? "router" : n.status].filter(Boolean).join(" · ");
    tip.push("network " + nodeLabel("network", n.details.network_id));
    if (ips.length) tip.push(ips.join(", "));
  } else if (n.kind === "network") {
    sub = [n.details.segment_type, n.details.segment_id].filter((v) => v !== null && v !== "").join(" ")
      + ((n.details.subnets || []).length ? " · " + n.details.subnets.map((s) => s.cidr).join(", ") : "");
  } else if (n.kind === "chassis") {
    sub = [n.details.tunnel_ip, n.connected ? "connected" : "disconnected"].filter(Boolean).join(" · ");
  }
  // tenants and networks are labelled beside the node (their edges leave downwards), the rest below it
  if (n.kind === "router") sub = (n.details.interfaces || []).length + " interfaces" + (n.details.gateway_network_id ? " · gw " + n.details.gateway_network_id : "");
  const beside = n.kind === "tenant" || n.kind === "network" || n.kind === "router";
  const lx = beside ? (n.kind === "tenant" ? 25 : 24) : 0, anchor = beside ? "start" : "middle";
  const dy = beside ? (sub ? -1 : 4) : n.kind === "chassis" ? 31 : 27;
  const node = svg("g", {
    class: cls.join(" "), transform: `translate(${p.x},${p.y})`, "data-id": n.id, tabindex: 0,
    onclick: () => select(n.id), onkeydown: (ev) => { if (ev.key === "Enter") select(n.id); },
  }, shape,
  svg("text", { x: lx, y: dy, "text-anchor": anchor, class: "label" + (beside ? " big" : "") }, title),
  sub ? svg("text", { x: lx, y: dy + 14, "text-anchor": anchor, class: "sub" }, sub) : null,
  svg("title", {}, tip.join("\n")));
  return node;
}

// the label of a node of the topology by kind and id (its id when the topology has no such node)
function nodeLabel(kind, id) {
  const n = state.topo && state.topo.nodes.find((x) => x.id === kind + ":" + id);
  return n ? n.label : id;
}

// Labels never overlap: each is cut (with "…"; the tooltip has it whole) to the room it has: labels
// below a node (ports, chassis) to the distance to the nearest node of its row, labels beside a node
// (tenants, routers, networks) to the distance to the next node of its layer.
function fitLabels(g, nodes, pos, W) {
  const rowKey = (n) => n.kind + ":" + (n.row || 0);
  const xs = {};
  for (const n of nodes) (xs[rowKey(n)] = xs[rowKey(n)] || []).push(pos[n.id].x);
  for (const n of nodes) {
    const x = pos[n.id].x;
    const others = xs[rowKey(n)].filter((v) => v !== x);
    const beside = n.kind === "tenant" || n.kind === "network" || n.kind === "router";
    let room;
    if (beside) {
      const next = Math.min(W + 10, ...others.filter((v) => v > x));
      room = next - x - 24 - 14;
    } else {
      room = others.length ? Math.min(...others.map((v) => Math.abs(v - x))) - 12 : 240;
    }
    const node = g.querySelector(`.node[data-id="${CSS.escape(n.id)}"]`);
    for (const t of node.querySelectorAll("text")) fitText(t, Math.max(room, 24));
  }
}

function fitText(t, max) {
  const full = t.textContent;
  if (t.getComputedTextLength() <= max) return;
  let lo = 0, hi = full.length;
  while (lo < hi) {  // the longest prefix that fits with its "…"
    const mid = Math.ceil((lo + hi) / 2);
    t.textContent = full.slice(0, mid) + "…";
    if (t.getComputedTextLength() <= max) lo = mid; else hi = mid - 1;
  }
  t.textContent = full.slice(0, lo) + "…";
  t.classList.add("cut");
}

// zoom with the wheel (around the pointer), pan by dragging, double-click to fit everything again
function setupZoom(g) {
  const apply = () => g.setAttribute("viewBox", state.view3.box.join(" "));
  const toSvg = (ev) => {
    const r = g.getBoundingClientRect(), [x, y, w, h] = state.view3.box;
    return [x + (ev.clientX - r.left) / r.width * w, y + (ev.clientY - r.top) / r.height * h];
  };
  g.addEventListener("wheel", (ev) => {
    if (!state.view3) return;
    ev.preventDefault();
    const [px, py] = toSvg(ev), [x, y, w, h] = state.view3.box;
    const f = Math.min(Math.max(ev.deltaY > 0 ? 1.15 : 1 / 1.15, 0.1), 10);
    const nw = Math.min(Math.max(w * f, state.view3.W / 20), state.view3.W * 2);
    const k = nw / w;
    state.view3.box = [px - (px - x) * k, py - (py - y) * k, nw, h * k];
    apply();
  }, { passive: false });
  let drag = null;
  g.addEventListener("pointerdown", (ev) => {
    if (ev.target.closest(".node")) return;
    drag = { x: ev.clientX, y: ev.clientY, box: [...state.view3.box] };
    g.setPointerCapture(ev.pointerId);
    g.classList.add("panning");
  });
  g.addEventListener("pointermove", (ev) => {
    if (!drag) return;
    const r = g.getBoundingClientRect(), [x, y, w, h] = drag.box;
    state.view3.box = [x - (ev.clientX - drag.x) / r.width * w, y - (ev.clientY - drag.y) / r.height * h, w, h];
    apply();
  });
  const end = () => { drag = null; g.classList.remove("panning"); };
  g.addEventListener("pointerup", end);
  g.addEventListener("pointercancel", end);
  g.addEventListener("dblclick", () => { state.view3.box = [0, 0, state.view3.W, state.view3.H]; apply(); });
}

function select(id) {
  state.selected = id;
  document.querySelectorAll("#graph .node").forEach((e) => e.classList.toggle("selected", e.dataset.id === id));
  document.querySelectorAll("#graph .edge").forEach((e) => {
    e.classList.toggle("hl", e.dataset.source === id || e.dataset.target === id);
  });
  showDetails(state.topo.nodes.find((n) => n.id === id) || null);
}

function fmt(v) {
  if (v === null || v === undefined || v === "") return "—";
  if (Array.isArray(v)) {
    if (!v.length) return "—";
    return v.map((x) => (typeof x === "object" ? Object.values(x).join(" ") : String(x))).join(", ");
  }
  if (typeof v === "object") {
    const entries = Object.entries(v);
    return entries.length ? entries.map(([a, b]) => `${a}=${b}`).join(", ") : "—";
  }
  return String(v);
}

const TIME_FIELDS = new Set(["create_time", "update_time"]);

function showDetails(n) {
  const box = $("#details");
  box.replaceChildren();
  if (!n) {
    box.append(el("h3", {}, "Details"), el("p", { class: "muted" }, "Click a node to see its fields."));
    return;
  }
  box.append(el("div", { class: "kind" }, n.kind), el("h3", {}, n.label),
    n.label !== n.name ? el("div", { class: "muted mono small" }, n.name) : null);
  const rows = [];
  for (const [k, v] of Object.entries(n.details)) {
    if (k === "subnets") {
      for (const s of v) rows.push(["subnet " + s.id, `${s.cidr} gw ${s.gateway_ip || "—"}`]);
      continue;
    }
    const value = TIME_FIELDS.has(k) && v ? new Date(v * 1000).toLocaleString() : fmt(v);
    rows.push([k.replaceAll("_", " "), value]);
  }
  box.append(el("table", { class: "kv" }, rows.map(([a, b]) => el("tr", {}, el("td", {}, a), el("td", {}, b)))));
  if (n.kind === "chassis" && state.me.admin) {
    box.append(el("p", {}, el("button", { class: "ghost", onclick: () => { state.chassis = n.name; show("flows"); } },
      "Flow tables of " + n.name + " →")));
  }
  const actions = el("div", { class: "actions" });
  if (n.kind === "port" && state.me.admin && n.details.binding_chassis) {
    actions.append(el("button", { class: "ghost", onclick: () => { show("trace"); setTraceSource(n.name); } },
      "Trace from " + n.label + " →"));
    actions.append(el("button", { class: "ghost", onclick: () => showFlows(n.details.binding_chassis, n.name) },
      `Its flows on ${n.details.binding_chassis} →`));
  }
  if (n.kind === "network" && state.me.admin) {
    const hosts = [...new Set(state.topo.edges.filter((e) => e.source === n.id && e.kind === "attached")
      .flatMap((e) => state.topo.edges.filter((b) => b.source === e.target && b.kind === "bound"))
      .map((b) => b.target.replace(/^chassis:/, "")))].sort();
    for (const h of hosts) {
      actions.append(el("button", { class: "ghost", onclick: () => showFlows(h, n.name) }, `Its flows on ${h} →`));
    }
  }
  if (actions.childNodes.length) box.append(actions);
}

function showFlows(chassis, filter) {
  state.chassis = chassis;
  $("#owner-filter").value = filter || "";
  show("flows");
}

// ------------------------------------------------------------------------------------------ flows

async function loadChassis() {
  let list;
  try { list = state.chassisList = (await api("/api/chassis")).chassis; } catch (err) { if (!onAuthLost(err)) $("#flows-summary").textContent = err.message; return; }
  const picker = $("#chassis-picker");
  picker.replaceChildren();
  if (!list.length) { $("#flows-summary").textContent = "No chassis registered."; return; }
  if (!state.chassis || !list.some((c) => c.id === state.chassis)) state.chassis = list[0].id;
  for (const c of list) {
    picker.append(el("button", {
      class: "chip" + (c.id === state.chassis ? " active" : ""), "data-chassis": c.id,
      onclick: () => { state.chassis = c.id; loadChassis(); },
      title: c.connected ? "switch connected" : "switch not connected",
    }, el("span", { class: "dot" + (c.connected ? " ok" : "") }), c.id));
  }
  const sel = $("#stage-filter");
  await loadFlows();
  if (sel.options.length === 1 && state.flows) {
    for (const s of state.flows.stages) sel.append(el("option", { value: s.name }, `${s.table} ${s.name}`));
  }
}

async function loadFlows() {
  try {
    state.flows = await api("/api/flows?chassis=" + encodeURIComponent(state.chassis));
  } catch (err) {
    if (!onAuthLost(err)) $("#flows-summary").textContent = "error: " + err.message;
    return;
  }
  drawFlows();
}

// the owner cell's tooltip: the owner by name and id, the cookie, what a click does
function ownerTip(x, owners) {
  if (!x.owner) return "cookie " + x.cookie;
  const name = owners[x.owner];
  return `${x.app}/${name || x.owner}` + (name && name !== x.owner ? ` — id ${x.owner}` : "") +
    `\ncookie ${x.cookie}` + (x.state !== "installed" ? ` (${x.state})` : "") + "\nclick to show only its flows";
}

function num(v) { return v === null || v === undefined ? "—" : Number(v).toLocaleString("en-US"); }

function drawFlows() {
  const f = state.flows;
  if (!f) return;
  const stageFilter = $("#stage-filter").value;
  const q = $("#owner-filter").value.trim().toLowerCase();
  const hideEmpty = $("#hide-empty").checked;
  const ch = (state.chassisList || []).find((c) => c.id === f.chassis) || {};
  $("#flows-summary").replaceChildren(
    el("b", {}, f.chassis), ` — ${f.installed} flows installed, ${f.desired} desired; switch `,
    f.connected ? "connected" : "not connected",
    ch.realized_revision !== undefined ? `, realized revision ${ch.realized_revision}` : "",
    ch.drift_repairs ? `, ${num(ch.drift_repairs)} drift repairs` : "",
    ch.compile_divergences ? el("b", { class: "error" }, `, compile self-check diverged ${num(ch.compile_divergences)} times (repaired; see the controller log)`) : "",
    "; ", f.counter_note, ".");
  const out = $("#flows");
  out.replaceChildren();
  const owners = f.owners || {};
  for (const s of f.stages) {
    if (stageFilter && s.name !== stageFilter) continue;
    const rows = s.flows.filter((x) => !q || [x.owner, owners[x.owner], x.app, x.match, x.actions].join(" ").toLowerCase().includes(q));
    if (hideEmpty && !rows.length && !stageFilter) continue;
    const table = el("table", { class: "flows" },
      el("colgroup", {}, ["prio", "match", "actions", "owner", "num", "num"].map((c) => el("col", { class: "c-" + c }))),
      el("thead", {}, el("tr", {}, ["priority", "match", "actions", "owner", "packets", "bytes"].map((h) =>
        el("th", { class: h === "packets" || h === "bytes" ? "num" : "" }, h)))),
      el("tbody", {}, rows.map((x) => el("tr", { class: x.state },
        el("td", { class: "num" }, x.priority),
        el("td", { class: "mono" }, x.match),
        el("td", { class: "mono" }, x.actions),
        el("td", { class: "owner", title: ownerTip(x, owners) },
          x.state !== "installed" ? [el("span", { class: "state " + x.state }, x.state), " "] : null,
          x.owner ? el("a", { href: "#flows", onclick: (ev) => { ev.preventDefault(); $("#owner-filter").value = x.owner; drawFlows(); } },
            el("span", { class: "app" }, x.app + "/"), owners[x.owner] || x.owner) : el("span", { class: "muted" }, x.cookie)),
        el("td", { class: "num" + (x.packets ? " hit" : " zero") }, num(x.packets)),
        el("td", { class: "num" + (x.bytes ? "" : " zero") }, num(x.bytes))))));
    out.append(el("section", { class: "card stage", "data-stage": s.name },
      el("div", { class: "stage-head" }, el("span", { class: "tno" }, "table " + s.table), el("h4", {}, s.name),
        el("span", { class: "doc" }, s.doc), el("span", { class: "n" }, rows.length + " flows")),
      rows.length ? table : el("p", { class: "muted groups" }, "no flows")));
  }
  if (!stageFilter && f.groups.length) {
    out.append(el("section", { class: "card stage" },
      el("div", { class: "stage-head" }, el("span", { class: "tno" }, "groups"), el("h4", {}, "group table"),
        el("span", { class: "doc" }, "flood replication per network"), el("span", { class: "n" }, f.groups.length + " groups")),
      el("div", { class: "groups" }, el("pre", {}, f.groups.join("\n")))));
  }
}

// ------------------------------------------------------------------------------------------ trace

async function loadTracePorts() {
  try { state.ports = (await api("/api/trace/ports")).ports; } catch (err) { onAuthLost(err); return; }
  const src = $("#trace-src");
  const keep = src.value;
  // by name, grouped by tenant and network (two tenants' "vm1" are told apart by their group and the id
  // the server adds to a repeated name); the value sent is the port's id
  const groups = new Map();
  for (const p of state.ports) {
    const key = `${p.tenant} / ${p.network_label}`;
    if (!groups.has(key)) groups.set(key, []);
    groups.get(key).push(el("option", { value: p.id, title: `port ${p.id} on network ${p.network}` },
      `${p.choice} · ${p.ip || p.mac}${p.chassis ? " @" + p.chassis : ""}`));
  }
  src.replaceChildren(...[...groups].map(([label, options]) => el("optgroup", { label }, options)));
  if (keep && state.ports.some((p) => p.id === keep)) src.value = keep;
  const dl = $("#trace-dsts");
  dl.replaceChildren(...state.ports.flatMap((p) => [
    el("option", { value: p.id }, "port " + p.choice),
    p.ip ? el("option", { value: p.ip }, p.choice) : null,
    el("option", { value: p.mac }, p.choice),
  ]).filter(Boolean));
  if (!$("#trace-dst").value && state.ports.length > 1) {
    const first = state.ports.find((p) => p.id === src.value) || state.ports[0];
    const peer = state.ports.find((p) => p.id !== first.id && p.network === first.network);
    if (peer) $("#trace-dst").value = peer.id;
  }
}

function setTraceSource(id) {
  loadTracePorts().then(() => { $("#trace-src").value = id; });
}

async function runTrace(ev) {
  ev.preventDefault();
  const form = new FormData($("#trace-form"));
  const params = new URLSearchParams();
  for (const [k, v] of form.entries()) params.set(k, v);
  const out = $("#trace-result");
  out.replaceChildren(el("p", { class: "muted" }, "tracing…"));
  let r;
  try { r = await api("/api/trace?" + params.toString()); } catch (err) {
    if (!onAuthLost(err)) out.replaceChildren(el("div", { class: "verdict drop" }, err.message));
    return;
  }
  drawTrace(r);
}

// what the trace calls an object (a port, a flow's owner): its name from the trace's names, else its id
function traceName(names, id) { return (names || {})[id] || id; }

function describeOutput(o, names) {
  const where = o.port ? traceName(names, short(o.port)) : o.ofport !== undefined && o.ofport !== null ? "ofport " + o.ofport : "";
  switch (o.kind) {
    case "vif": return `→ VIF ${where}`;
    case "tunnel": {
      const tid = (o.headers || {}).tunnel_id;
      return `→ tunnel to ${short(o.port) || "?"}${tid !== undefined ? " · tun_id 0x" + Number(tid).toString(16) : ""}`;
    }
    case "physical": return `→ physical ${where}`;
    case "in_port": return `→ back out its in_port ${where}`;
    case "controller": return "→ controller (packet-in)";
    default: return `→ ${o.kind} ${where}`;
  }
}

function drawTrace(r) {
  const out = $("#trace-result");
  out.replaceChildren();
  const req = r.request || {};
  const names = r.names || {};
  const owned = (owner) => {  // "app/id" -> "app/name"
    const [app, ...rest] = String(owner || "").split("/");
    return rest.length ? app + "/" + traceName(names, rest.join("/")) : owner;
  };
  const reqText = `${traceName(names, req.src)} → ${traceName(names, req.dst)}${req.resolved ? " (" + req.resolved + ")" : ""}` +
    (req.flows === "installed" ? " · switches' flows" : " · compiled flows");
  if (!r.available) {
    out.append(el("div", { class: "verdict info", id: "trace-verdict" }, el("span", {}, r.message),
      el("span", { class: "req" }, reqText)));
    return;
  }
  const hops = r.hops || [];
  const delivered = hops.some((h) => (h.outputs || []).some((o) => o.kind !== "tunnel"));
  const dropped = !delivered || /drop/i.test(r.verdict || "");
  out.append(el("div", { class: "verdict " + (dropped && !delivered ? "drop" : "ok"), id: "trace-verdict" },
    el("span", {}, (delivered ? "✓ " : "✗ ") + (r.verdict || (delivered ? "delivered" : "dropped"))),
    el("span", { class: "req" }, reqText)));

  // columns: one per hop; steps top to bottom; outputs under them; tunnel copies link the columns
  const colW = 300, gap = 110, stepH = 40, top = 70;
  const rows = Math.max(1, ...hops.map((h) => (h.steps || []).length + (h.outputs || []).length + 1));
  const W = Math.max(700, 40 + hops.length * (colW + gap));
  const H = top + 60 + rows * stepH;
  const s = svg("svg", { class: "trace-svg", width: W, height: H, viewBox: `0 0 ${W} ${H}`, id: "trace-drawing" });
  const defs = svg("defs", {}, svg("marker", { id: "arrow", viewBox: "0 0 10 10", refX: 9, refY: 5, markerWidth: 7,
    markerHeight: 7, orient: "auto-start-reverse" }, svg("path", { d: "M0,0 L10,5 L0,10 z", fill: "#64748b" })),
  svg("marker", { id: "arrow-t", viewBox: "0 0 10 10", refX: 9, refY: 5, markerWidth: 7, markerHeight: 7,
    orient: "auto-start-reverse" }, svg("path", { d: "M0,0 L10,5 L0,10 z", fill: "#0ea5e9" })));
  s.append(defs);
  const src = r.source || {};
  const h = src.headers || req.headers || {};
  const proto = { 1: "ICMP", 6: "TCP", 17: "UDP" }[h.ip_proto] || (Number(h.eth_type) === 0x806 ? "ARP" : "");
  const l4 = h.tcp_dst || h.udp_dst ? ":" + (h.tcp_dst || h.udp_dst) : "";
  const what = h.ipv4_dst || h.arp_tpa ? `${proto} ${h.ipv4_src || h.arp_spa || "?"} → ${h.ipv4_dst || h.arp_tpa}${l4}` : `${h.eth_src} → ${h.eth_dst}`;
  const srcLabel = "packet from " + traceName(names, short(src.port) || req.src || "?") + (src.chassis ? " on " + src.chassis : "") + "  ·  " + what;
  s.append(svg("g", { class: "src-pill" }, svg("rect", { x: 20, y: 12, rx: 14, width: Math.max(220, srcLabel.length * 6.9 + 30), height: 28 }),
    svg("text", { x: 35, y: 31 }, srcLabel)));
  const heads = [], links = [];
  hops.forEach((h, i) => {
    const x = 20 + i * (colW + gap);
    const steps = h.steps || [];
    const outs = h.outputs || [];
    const boxH = 40 + (steps.length + outs.length) * stepH + 10;
    const g = svg("g", { class: "hop", "data-chassis": h.chassis });
    g.append(svg("rect", { class: "hop-box", x, y: top, width: colW, height: boxH, rx: 10 }),
      svg("text", { class: "hop-title", x: x + 14, y: top + 25 }, "chassis " + h.chassis));
    heads.push({ x, y: top, chassis: h.chassis });
    let y = top + 40;
    let prev = null;
    steps.forEach((st) => {
      const ind = Math.min(st.depth || 0, 6) * 12;
      const sx = x + 12 + ind, sw = colW - 24 - ind;
      if (prev) g.append(svg("path", { class: "link", d: `M${prev.x + 10},${prev.y + 30} L${sx + 10},${y}`, "marker-end": "url(#arrow)" }));
      const label = `${st.table} ${st.stage}`;
      const prio = /priority=(\d+)/.exec(st.flow || "");
      // a flow, conntrack (ct: maybe recirculating; neutral), a note (group bucket...) or a real drop (red)
      const kind = st.kind || (st.flow ? "flow" : "drop");
      const meta = [owned(st.owner), st.note].filter(Boolean).join(" · ");
      const tip = [st.flow || st.note || "table miss: drop", st.owner ? "owner " + st.owner : ""].filter(Boolean);
      g.append(svg("g", { class: "step " + kind, "data-stage": st.stage, "data-kind": kind },
        svg("rect", { x: sx, y, width: sw, height: 30, rx: 6 }),
        svg("text", { x: sx + 10, y: y + 13 }, kind === "ct" ? label + " · conntrack" : label),
        prio ? svg("text", { x: sx + sw - 8, y: y + 13, "text-anchor": "end", class: "meta" }, "prio " + prio[1]) : null,
        svg("text", { x: sx + 10, y: y + 25, class: "meta" }, clip(meta || (kind === "drop" ? "no flow matched: drop" : ""), 44)),
        svg("title", {}, tip.join("\n"))));
      prev = { x: sx, y };
      y += stepH;
    });
    outs.forEach((o, k) => {
      const label = describeOutput(o, names);
      const og = svg("g", { class: "out " + o.kind, "data-kind": o.kind },
        svg("rect", { x: x + 12, y, width: colW - 24, height: 30, rx: 15 }),
        svg("text", { x: x + 26, y: y + 19 }, clip(label, 40)),
        svg("title", {}, JSON.stringify(o.headers || {})));
      if (prev && k === 0) g.append(svg("path", { class: "link", d: `M${prev.x + 10},${prev.y + 30} L${x + 22},${y}`, "marker-end": "url(#arrow)" }));
      g.append(og);
      if (o.kind === "tunnel") links.push({ from: { x: x + colW - 12, y: y + 15 }, to: short(o.port), hop: i });
      y += stepH;
    });
    if (!outs.length) {
      g.append(svg("text", { x: x + 14, y: y + 16, class: "hop-title", fill: "#b91c1c" }, "✗ dropped here"));
    }
    s.append(g);
  });
  for (const link of links) {
    const target = heads.find((h, j) => j > link.hop && h.chassis === link.to) ||
      heads.find((h, j) => j !== link.hop && h.chassis === link.to);
    if (!target) continue;
    const a = link.from, bx = target.x, by = target.y + 20;
    s.append(svg("path", { class: "tunnel-link", d: `M${a.x},${a.y} C${a.x + 60},${a.y} ${bx - 60},${by} ${bx},${by}`, "marker-end": "url(#arrow-t)" }));
  }
  out.append(el("div", { class: "card trace-card" }, s));

  // the path on the topology: source port, its network, chassis visited, ports delivered to
  const path = new Set(["port:" + req.src]);
  const srcNode = state.topo && state.topo.nodes.find((x) => x.id === "port:" + req.src);
  if (srcNode) path.add("network:" + srcNode.details.network_id);
  for (const h of hops) {
    path.add("chassis:" + h.chassis);
    for (const o of h.outputs || []) if (o.kind === "vif" || o.kind === "in_port") path.add("port:" + short(o.port));
  }
  out.append(el("p", {}, el("button", { class: "ghost", id: "trace-on-topology",
    onclick: () => { state.path = path; show("topology"); drawTopology(); } }, "Show the path on the topology →")));

  // the same steps as text, for copying
  const lines = [];
  hops.forEach((h) => {
    lines.push(`chassis ${h.chassis}`);
    for (const st of h.steps || []) lines.push(`${"  ".repeat((st.depth || 0) + 1)}${st.table}(${st.stage}) ${st.flow || "miss"}${st.owner ? "  # " + st.owner : ""}${st.note ? "  (" + st.note + ")" : ""}`);
    for (const o of h.outputs || []) lines.push("  " + describeOutput(o));
  });
  lines.push("verdict: " + (r.verdict || ""));
  out.append(el("details", { class: "card trace-card" }, el("summary", {}, "steps as text"), el("pre", { class: "mono" }, lines.join("\n"))));
}

function short(name) { return String(name || "").replace(/^(ports|chassis|networks)\//, ""); }

function clip(s, n) { s = String(s || ""); return s.length > n ? s.slice(0, n - 1) + "…" : s; }

// ------------------------------------------------------------------------------------------ live updates

function setLive(on, text) {
  const l = $("#live");
  l.className = "live " + (on ? "on" : "off");
  l.querySelector("b").textContent = text;
}

function stopStream() {
  state.streamGen += 1;
  if (state.stream) { try { state.stream.abort(); } catch (_) { /* already closed */ } }
  state.stream = null;
  setLive(false, "offline");
}

// EventSource cannot send an Authorization header: read the text/event-stream with fetch instead.
async function startStream() {
  stopStream();
  const gen = state.streamGen;
  let delay = 1000;
  const token = state.token;
  while (gen === state.streamGen && token && token === state.token) {
    const ctl = new AbortController();
    state.stream = ctl;
    try {
      const resp = await fetch("/api/events?from=" + state.revision, {
        headers: { Authorization: "Bearer " + token }, signal: ctl.signal, cache: "no-store",
      });
      if (resp.status === 401) { onAuthLost(new AuthError("token no longer valid", token)); return; }
      if (!resp.ok) throw new Error(resp.statusText);
      setLive(true, "live · rev " + state.revision);
      delay = 1000;
      const reader = resp.body.getReader();
      const dec = new TextDecoder();
      let buf = "";
      for (;;) {
        const { value, done } = await reader.read();
        if (done || gen !== state.streamGen) break;
        buf += dec.decode(value, { stream: true });
        let i;
        while ((i = buf.indexOf("\n\n")) >= 0) {
          handleEvent(buf.slice(0, i));
          buf = buf.slice(i + 2);
        }
      }
    } catch (_) { /* reconnect below */ }
    if (gen !== state.streamGen) return;
    setLive(false, "reconnecting");
    await new Promise((res) => setTimeout(res, delay));
    delay = Math.min(delay * 2, 15000);
  }
}

function handleEvent(block) {
  let type = "message", data = "";
  for (const line of block.split("\n")) {
    if (line.startsWith("event:")) type = line.slice(6).trim();
    else if (line.startsWith("data:")) data += line.slice(5).trim();
  }
  if (!data) return;
  const d = JSON.parse(data);
  if (type === "reset") { state.revision = d.revision; scheduleRefresh(); return; }
  if (type === "revoked") { stopStream(); onAuthLost(new AuthError("token revoked", state.token)); return; }
  if (type === "change") {
    state.revision = Math.max(state.revision, d.revision);
    const id = d.kind + ":" + d.name.split("/").slice(1).join("/");
    state.flashed.add(id);
    setTimeout(() => state.flashed.delete(id), 1500);
    scheduleRefresh();
  }
  if (type === "synced" || type === "change") setLive(true, "live · rev " + state.revision);
}

function scheduleRefresh() {
  clearTimeout(state.refreshTimer);
  state.refreshTimer = setTimeout(loadTopology, 250);
  if (state.view === "flows" && state.chassis) {
    clearTimeout(state.flowsTimer);
    state.flowsTimer = setTimeout(loadFlows, 1000);
  }
}

// ------------------------------------------------------------------------------------------ wiring

document.addEventListener("DOMContentLoaded", () => {
  $("#login-form").addEventListener("submit", (ev) => { ev.preventDefault(); login($("#token").value.trim()); });
  $("#logout").addEventListener("click", logout);
  document.querySelectorAll(".tab").forEach((t) => t.addEventListener("click", () => show(t.dataset.view)));
  $("#flows-refresh").addEventListener("click", loadChassis);
  $("#stage-filter").addEventListener("change", drawFlows);
  $("#owner-filter").addEventListener("input", drawFlows);
  $("#hide-empty").addEventListener("change", drawFlows);
  $("#trace-form").addEventListener("submit", runTrace);
  setupZoom($("#graph"));
  $("#trace-proto").addEventListener("change", () => {
    $("#trace-dport").disabled = !["tcp", "udp"].includes($("#trace-proto").value);
  });
  $("#trace-dport").disabled = true;
  if (state.token) login(state.token); else showLogin();
});

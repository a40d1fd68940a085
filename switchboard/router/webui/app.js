// The topology page: polls this router's admin listener every second and draws the
// network it sees (its link-state view holds every router and link) beside its address
// and queue tables.  Other routers' client counts and link counters come from
// /api/network?router=ID, answered by that router over the network; where that fails the
// page shows "–" for them and carries on.
"use strict";

(function () {
  const POLL_MS = 1000;
  const LOCAL_TIMEOUT_MS = 3000;
  const REMOTE_TIMEOUT_MS = 5000;
  const RATE_FRESH_MS = 5000;
  const SVG_NS = "http://www.w3.org/2000/svg";
  const DASH = "–";

  const state = {
    local: null,          // this router's /api/network
    addresses: [],
    queues: [],
    remote: new Map(),    // router id -> {view, error}
    inFlight: new Set(),  // router ids asked and not answered yet
    counters: new Map(),  // "FROM>TO@SOURCE" -> {count, at}: delivered counts as SOURCE tells them
    rates: new Map(),     // same keys -> {rate, at}: messages per second between two samples
    lastUpdate: 0,
    error: null,
  };

  // location.origin, not the page's URL: a URL with user:password@ in it cannot be fetched.
  function apiUrl(path) {
    return new URL(path, window.location.origin).href;
  }

  async function getJson(path, timeoutMs) {
    const abort = new AbortController();
    const timer = setTimeout(() => abort.abort(), timeoutMs);
    try {
      const response = await fetch(apiUrl(path), {
        cache: "no-store", credentials: "same-origin", signal: abort.signal,
      });
      if (!response.ok) {
        let reason = response.statusText;
        try {
          const body = await response.json();
          reason = body.description || body.error || reason;
        } catch (ignored) { /* not JSON: the status says it */ }
        const error = new Error(`HTTP ${response.status}: ${reason}`);
        error.status = response.status;
        throw error;
      }
      return await response.json();
    } catch (error) {
      if (error.name === "AbortError") {
        throw new Error(`no answer within ${timeoutMs / 1000} s`);
      }
      if (error instanceof TypeError) {
        throw new Error("the connection failed");  // fetch says no more than that
      }
      throw error;
    } finally {
      clearTimeout(timer);
    }
  }

  function describe(error) {
    if (error.status === 401) {
      return "the admin listener needs its token: reload the page and give it as the password";
    }
    return error.message || String(error);
  }

  // -- polling ------------------------------------------------------------------------
  async function pollLocal() {
    try {
      const [network, addresses, queues] = await Promise.all([
        getJson("/api/network", LOCAL_TIMEOUT_MS),
        getJson("/api/addresses", LOCAL_TIMEOUT_MS),
        getJson("/api/queues", LOCAL_TIMEOUT_MS),
      ]);
      state.local = network;
      state.addresses = addresses;
      state.queues = queues;
      state.lastUpdate = Date.now();
      state.error = null;
      sample(network, network.id);
      pollRemotes(network);
    } catch (error) {
      state.error = describe(error);
    }
    render();
    setTimeout(pollLocal, POLL_MS);
  }

  function pollRemotes(network) {
    const others = new Set(network.routers.filter((r) => r.reachable && r.id !== network.id).map((r) => r.id));
    for (const id of state.remote.keys()) {
      if (!others.has(id)) state.remote.delete(id);
    }
    for (const id of others) {
      if (state.inFlight.has(id)) continue;  // a slow router is not asked twice at once
      state.inFlight.add(id);
      getJson(`/api/network?router=${encodeURIComponent(id)}`, REMOTE_TIMEOUT_MS)
        .then((view) => {
          // A router that does not forward ?router= answers with its own view.
          if (view.id !== id) throw new Error("this router cannot ask other routers");
          state.remote.set(id, { view: view, error: null });
          sample(view, id);
        })
        .catch((error) => state.remote.set(id, { view: null, error: describe(error) }))
        .finally(() => {
          state.inFlight.delete(id);
          render();
        });
    }
  }

  // Each router counts what went to and came from each neighbour since their connection
  // opened; the difference between two polls over the time between them is the rate.
  function sample(view, source) {
    const now = performance.now();
    for (const n of view.neighbours || []) {
      if (typeof n.delivered_out === "number") record(`${source}>${n.router}@${source}`, n.delivered_out, now);
      if (typeof n.delivered_in === "number") record(`${n.router}>${source}@${source}`, n.delivered_in, now);
    }
  }

  function record(key, count, now) {
    const previous = state.counters.get(key);
    state.counters.set(key, { count: count, at: now });
    if (previous === undefined || now <= previous.at) return;
    if (count < previous.count) {
      state.rates.delete(key);  // the links were opened again: counting starts over
      return;
    }
    state.rates.set(key, { rate: (count - previous.count) * 1000 / (now - previous.at), at: now });
  }

  // Messages per second from one router to another, as the sender tells it, else the receiver.
  function rate(from, to) {
    const now = performance.now();
    for (const source of [from, to]) {
      const entry = state.rates.get(`${from}>${to}@${source}`);
      if (entry !== undefined && now - entry.at < RATE_FRESH_MS) return entry.rate;
    }
    return null;
  }

  function clientsOf(id) {
    if (state.local === null) return null;
    if (id === state.local.id) return state.local.clients;
    const remote = state.remote.get(id);
    return remote && remote.view ? remote.view.clients : null;
  }

  // -- the network as a graph ---------------------------------------------------------
  // Routers this router can reach, and the links both ends announce.
  function topology(network) {
    const routers = network.routers.filter((r) => r.reachable);
    const byId = new Map(routers.map((r) => [r.id, r]));
    const links = [];
    for (const r of routers) {
      for (const [peer, cost] of Object.entries(r.neighbours)) {
        const other = byId.get(peer);
        if (r.id < peer && other !== undefined && r.id in other.neighbours) {
          links.push({ a: r.id, b: peer, cost: cost });
        }
      }
    }
    return { routers: routers, links: links };
  }

  // Routers on a circle, sorted by id, this router at the top.
  function layout(routers, self, width, height, margin) {
    const ids = routers.map((r) => r.id).sort();
    const start = Math.max(0, ids.indexOf(self));
    const ordered = ids.slice(start).concat(ids.slice(0, start));
    const cx = width / 2;
    const cy = height / 2;
    const radius = Math.min(width, height) / 2 - margin;
    const positions = new Map();
    ordered.forEach((id, i) => {
      if (ordered.length === 1) {
        positions.set(id, { x: cx, y: cy });
        return;
      }
      const angle = -Math.PI / 2 + (2 * Math.PI * i) / ordered.length;
      positions.set(id, { x: cx + radius * Math.cos(angle), y: cy + radius * Math.sin(angle) });
    });
    return positions;
  }

  function svg(name, attributes, text) {
    const element = document.createElementNS(SVG_NS, name);
    for (const [key, value] of Object.entries(attributes || {})) element.setAttribute(key, String(value));
    if (text !== undefined) element.textContent = text;
    return element;
  }

  function formatRate(value) {
    if (value === null) return DASH;
    if (value >= 100) return value.toFixed(0);
    return value.toFixed(1);
  }

  function clientsLabel(clients) {
    if (clients === null || clients === undefined) return `${DASH} clients`;
    return clients === 1 ? "1 client" : `${clients} clients`;
  }

  function drawGraph() {
    const graph = document.getElementById("graph");
    const network = state.local;
    const { routers, links } = topology(network);
    // Drawing units are the graph's CSS pixels, so that labels keep their size on a phone.
    const width = Math.round(Math.max(280, Math.min(640, graph.clientWidth || 600)));
    const height = Math.round(width < 480 ? width : width * 0.7);
    graph.setAttribute("viewBox", `0 0 ${width} ${height}`);
    const nodeRadius = Math.max(14, Math.min(30, 220 / Math.max(routers.length, 1)));
    const positions = layout(routers, network.id, width, height, nodeRadius + 26);
    const content = document.createDocumentFragment();

    for (const link of links) {
      const a = positions.get(link.a);
      const b = positions.get(link.b);
      const forward = rate(link.a, link.b);
      const backward = rate(link.b, link.a);
      const total = (forward || 0) + (backward || 0);
      const group = svg("g", { class: "link", "data-link": `${link.a}|${link.b}` });
      group.appendChild(svg("title", {},
        `${link.a} → ${link.b}: ${formatRate(forward)} msg/s\n${link.b} → ${link.a}: ${formatRate(backward)} msg/s\ncost ${link.cost}`));
      group.appendChild(svg("line", {
        x1: a.x, y1: a.y, x2: b.x, y2: b.y,
        "stroke-width": (2 + Math.min(6, 2 * Math.log10(1 + total))).toFixed(1),
      }));
      // Near each end, what that router sends on the link.
      for (const [from, to, sender, value] of [[a, b, link.a, forward], [b, a, link.b, backward]]) {
        const x = from.x + (to.x - from.x) * 0.3;
        const y = from.y + (to.y - from.y) * 0.3;
        group.appendChild(svg("text", { x: x, y: y + 4, class: "rate", "data-from": sender }, formatRate(value)));
      }
      content.appendChild(group);
    }

    for (const router of routers) {
      const p = positions.get(router.id);
      const self = router.id === network.id;
      const clients = clientsOf(router.id);
      const group = svg("g", { class: self ? "node self" : "node", "data-router": router.id });
      const remote = state.remote.get(router.id);
      const note = remote && remote.error ? `\nclients unknown: ${remote.error}` : "";
      group.appendChild(svg("title", {},
        `${router.id}${self ? " (this router)" : ""}\ncost ${router.cost}, next hop ${router.next_hop || DASH}${note}`));
      group.appendChild(svg("circle", { cx: p.x, cy: p.y, r: nodeRadius }));
      const label = router.id.length > 12 ? router.id.slice(0, 11) + "…" : router.id;
      group.appendChild(svg("text", { x: p.x, y: p.y + 4, class: "name" }, label));
      // Outside the circle, away from the centre where the links run.
      const labelY = p.y < height / 2 - 1 ? p.y - nodeRadius - 8 : p.y + nodeRadius + 16;
      group.appendChild(svg("text", { x: p.x, y: labelY, class: "clients" },
        clientsLabel(clients)));
      content.appendChild(group);
    }
    graph.replaceChildren(content);

    const gone = network.routers.filter((r) => !r.reachable).map((r) => r.id);
    const unreachable = document.getElementById("unreachable");
    unreachable.hidden = gone.length === 0;
    unreachable.textContent = gone.length ? `Known but unreachable: ${gone.join(", ")}` : "";
  }

  // -- tables -------------------------------------------------------------------------
  function fillTable(id, rows) {
    const body = document.querySelector(`#${id} tbody`);
    const content = document.createDocumentFragment();
    for (const values of rows) {
      const tr = document.createElement("tr");
      for (const value of values) {
        const td = document.createElement("td");
        td.textContent = value === null || value === undefined ? DASH : String(value);
        tr.appendChild(td);
      }
      content.appendChild(tr);
    }
    if (rows.length === 0) {
      const tr = document.createElement("tr");
      const td = document.createElement("td");
      td.colSpan = document.querySelectorAll(`#${id} thead th`).length;
      td.className = "empty";
      td.textContent = "none";
      tr.appendChild(td);
      content.appendChild(tr);
    }
    body.replaceChildren(content);
  }

  function drawTables() {
    const network = state.local;
    const routers = network.routers.slice().sort((a, b) => a.id.localeCompare(b.id));
    fillTable("routers", routers.map((r) => [
      r.id === network.id ? `${r.id} (this router)` : r.id,
      r.reachable ? r.cost : "unreachable",
      r.next_hop,
      r.reachable ? clientsOf(r.id) : null,
      r.addresses,
    ]));
    fillTable("links", topology(network).links.map((l) => [
      `${l.a} ↔ ${l.b}`, l.cost, formatRate(rate(l.a, l.b)), formatRate(rate(l.b, l.a)),
    ]));
    fillTable("addresses", state.addresses.map((a) => [
      a.address, a.distribution, a.consumers, a.senders,
      a.remote_routers.length ? a.remote_routers.join(", ") : null,
      formatRate(a.rate_in), formatRate(a.rate_out), a.held_messages,
    ]));
    fillTable("queues", state.queues.map((q) => [
      q.name, q.state, q.depth, q.unacked, q.consumers,
      q.oldest_age_seconds === null ? null : q.oldest_age_seconds.toFixed(1), q.delivered, q.dead_lettered,
    ]));
  }

  // -- status -------------------------------------------------------------------------
  function drawStatus() {
    const status = document.getElementById("status");
    const banner = document.getElementById("banner");
    const age = state.lastUpdate ? (Date.now() - state.lastUpdate) / 1000 : null;
    if (state.error !== null) {
      banner.hidden = false;
      banner.textContent = `Router unreachable: ${state.error}. ` +
        (age === null ? "Nothing shown yet; " : `Showing what it said ${age.toFixed(0)} s ago; `) +
        "retrying every second.";
      document.body.classList.add("stale");
    } else {
      banner.hidden = true;
      document.body.classList.remove("stale");
    }
    status.textContent = age === null ? "connecting…" :
      `${state.error === null ? "live" : "stale"} · updated ${age.toFixed(1)} s ago`;
  }

  function render() {
    if (state.local !== null) {
      document.getElementById("router-id").textContent = state.local.id;
      document.title = `Switchboard ${state.local.id}`;
      drawGraph();
      drawTables();
    }
    drawStatus();
  }

  setInterval(drawStatus, 500);
  pollLocal();
})();

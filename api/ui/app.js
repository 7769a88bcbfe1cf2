// gitmesh console. Everything shown comes from the daemon's JSON API and is
// put in the page as text (textContent, createElement), never as HTML: a
// commit's subject, author, file names and findings come from anyone who
// can push. Tokens live in this script's memory only.
"use strict";

(function () {
  const state = {
    readToken: "",   // sent on reads when the daemon asks for one
    adminToken: "",  // asked for on the first rollback or resume
    status: null, history: null, proxies: null,
    verdictFilter: "", proxyFilter: "", proxySort: { key: "nodeId", dir: 1 },
    selectedCell: null,
  };

  // ---- DOM helpers -------------------------------------------------------

  // h makes an element: attrs are set as properties (className, href,
  // title, onclick, ...) or, for data-*, as dataset entries; children are
  // nodes or strings (made text nodes).
  function h(tag, attrs, ...children) {
    const el = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (v === undefined || v === null || v === false) continue;
      if (k.startsWith("data-")) el.dataset[k.slice(5)] = String(v);
      else if (k.startsWith("on")) el.addEventListener(k.slice(2), v);
      else el[k] = v;
    }
    append(el, children);
    return el;
  }
  function append(el, children) {
    for (const c of children.flat(Infinity)) {
      if (c === undefined || c === null || c === false) continue;
      el.appendChild(c instanceof Node ? c : document.createTextNode(String(c)));
    }
    return el;
  }
  function clear(el) { while (el.firstChild) el.removeChild(el.firstChild); return el; }
  const $ = (id) => document.getElementById(id);
  const short = (hash) => (hash || "").slice(0, 12);
  function chip(text, cls) { return h("span", { className: "chip " + (cls || text) }, text); }
  function ago(t) {
    if (!t) return "never";
    const d = new Date(t);
    if (isNaN(d)) return String(t);
    const s = Math.round((Date.now() - d.getTime()) / 1000);
    const rel = s < 60 ? s + "s ago" : s < 3600 ? Math.round(s / 60) + "m ago" : s < 86400 ? Math.round(s / 3600) + "h ago" : Math.round(s / 86400) + "d ago";
    return d.toLocaleString() + " (" + rel + ")";
  }
  function commitLink(c) {
    if (!c || !c.hash) return h("span", { className: "muted" }, "none");
    return h("span", {}, h("a", { href: "#/commit/" + encodeURIComponent(c.hash), className: "mono" }, short(c.hash)),
      c.subject ? " " : "", c.subject ? h("span", { className: "subject" }, c.subject) : "",
      c.author ? h("span", { className: "muted" }, " — " + c.author) : "");
  }
  function where(f) {
    let s = f.file || "";
    if (f.line) s += ":" + f.line;
    if (f.column) s += ":" + f.column;
    return s;
  }
  // forgeURL is the address of a file at a line of a commit in the forge's
  // web UI, from the operator's --repo-web-url template (GET /status
  // repoWebUrl); null without a template or when the address would not be
  // a plain http(s) one on the template's host. The path comes from a
  // commit, so from anyone who can push: each segment is percent-encoded
  // (slashes kept), and a path with an empty, "." or ".." segment, which
  // a browser resolves away (encoded or not), gets no address.
  function forgeURL(template, commit, path, line) {
    if (typeof template !== "string" || !template || typeof path !== "string" || !path) return null;
    if (typeof commit !== "string" || !/^(?:[0-9a-f]{40}|[0-9a-f]{64})$/.test(commit)) return null;
    const segments = path.split("/");
    if (segments.some((seg) => seg === "" || seg === "." || seg === "..")) return null;
    const n = Number(line);
    const fill = (c, p, l) => template.split("{commit}").join(c).split("{path}").join(p).split("{line}").join(l);
    let u, sample;
    try {
      u = new URL(fill(commit, segments.map(encodeURIComponent).join("/"), Number.isInteger(n) && n > 0 ? String(n) : ""));
      sample = new URL(fill("0".repeat(40), "file.yaml", "1"));
    } catch (e) {
      return null;
    }
    if ((u.protocol !== "http:" && u.protocol !== "https:") || u.origin !== sample.origin || u.username || u.password) return null;
    return u.href;
  }
  // fileLink is a finding's file:line, a link into the forge when
  // --repo-web-url is set and the finding has a file, else text.
  function fileLink(f, commit) {
    const text = h("code", {}, where(f));
    const url = forgeURL(state.status && state.status.repoWebUrl, commit, f.file, f.line);
    if (!url) return text;
    const a = h("a", { className: "forge", rel: "noopener noreferrer", target: "_blank", title: "open in the forge" }, text);
    a.href = url; // checked by forgeURL: http(s), on the template's host
    return a;
  }
  // findingsList shows findings of commit, each file:line a link into the
  // forge when one is configured.
  function findingsList(findings, commit) {
    return h("ul", { className: "findings" }, (findings || []).map((f) =>
      h("li", { className: "sev-" + f.severity },
        fileLink(f, commit), " ", f.severity, ": ", f.message,
        f.pointer ? h("span", { className: "muted" }, " (at " + f.pointer + ")") : "",
        f.code ? h("span", { className: "muted" }, " [" + f.code + "]") : "",
        f.hint ? h("div", { className: "muted" }, "hint: " + f.hint) : "")));
  }
  const HOUR = 3600 * 1000, DAY = 24 * HOUR;
  // expiry says how a certificate valid from notBefore to notAfter stands
  // at now (ms): "expired"; "soon" with less than a day and less than a
  // third of its life left (gitmesh renews it once a third is left, so a
  // certificate still held then was not renewed); else "ok". left is the
  // time left in ms.
  function expiry(notBefore, notAfter, now) {
    const end = Date.parse(notAfter), start = Date.parse(notBefore);
    if (isNaN(end)) return { state: "unknown", left: NaN };
    const left = end - now, life = isNaN(start) ? Infinity : end - start;
    return { state: left <= 0 ? "expired" : left < DAY && left < life / 3 ? "soon" : "ok", left };
  }
  function within(ms) {
    const m = Math.round(Math.abs(ms) / 60000);
    const s = m < 60 ? m + "m" : m < 48 * 60 ? Math.round(m / 60) + "h" : Math.round(m / 1440) + "d";
    return ms < 0 ? s + " ago" : "in " + s;
  }
  // breakable is text that may wrap after each slash.
  function breakable(text) {
    return String(text).split(/(?<=\/)(?!\/)/).flatMap((part, i) => i ? [h("wbr"), part] : [part]);
  }
  function certExpiry(c) {
    const e = expiry(c.notBefore, c.notAfter, Date.now());
    const d = new Date(c.notAfter);
    return h("span", { className: "expiry", "data-expiry": e.state, title: "valid from " + new Date(c.notBefore).toLocaleString() + " to " + d.toLocaleString() },
      h("div", {}, isNaN(d) ? String(c.notAfter) : d.toLocaleString()),
      h("div", { className: "muted" }, isNaN(e.left) ? "" : within(e.left),
        e.state === "expired" ? [" ", chip("expired", "invalid")] : e.state === "soon" ? [" ", chip("expires soon", "held")] : ""));
  }

  function facts(pairs) {
    return h("dl", { className: "facts" }, pairs.filter(Boolean).map(([k, v]) => [h("dt", {}, k), h("dd", {}, v)]));
  }

  // ---- API ---------------------------------------------------------------

  class APIError extends Error {
    constructor(status, body) {
      super((body && body.error) || ("HTTP " + status));
      this.status = status; this.body = body;
    }
  }

  async function api(path, opts) {
    opts = opts || {};
    const headers = { "Accept": "application/json" };
    const token = opts.admin ? state.adminToken : state.readToken;
    if (token) headers["Authorization"] = "Bearer " + token;
    if (opts.body !== undefined) headers["Content-Type"] = "application/json";
    const res = await fetch(path, { method: opts.method || "GET", headers, credentials: "omit", cache: "no-store",
      body: opts.body === undefined ? undefined : JSON.stringify(opts.body) });
    let body = null;
    try { body = await res.json(); } catch (e) { body = null; }
    if (!res.ok) throw new APIError(res.status, body);
    return body;
  }

  // read fetches path, asking for a read token while the daemon answers
  // 401.
  async function read(path) {
    for (;;) {
      try {
        return await api(path);
      } catch (e) {
        if (!(e instanceof APIError) || e.status !== 401) throw e;
        const wrong = state.readToken !== "";
        const t = await ask({ title: "Read token", text: wrong ? "The daemon refused this token (" + e.message + "). Enter a read or admin token." :
          "This daemon needs a token to read (serve --auth-reads). Enter a read or admin token.", token: true });
        if (t === null) throw e;
        state.readToken = t.token;
        startEvents();
      }
    }
  }

  // ---- modal -------------------------------------------------------------

  let modalBusy = null;
  // ask shows the modal and resolves to {token, reason}, or null when
  // cancelled. opts.run, when set, is called with the answer; its error is
  // shown in the modal, which then stays open.
  function ask(opts) {
    if (modalBusy) return modalBusy;
    modalBusy = new Promise((resolve) => {
      $("modal-title").textContent = opts.title;
      $("modal-text").textContent = opts.text || "";
      $("modal-token-label").hidden = !opts.token;
      $("modal-reason-label").hidden = !opts.reason;
      $("modal-token").value = opts.tokenValue || "";
      $("modal-reason").value = "";
      $("modal-error").hidden = true;
      $("modal-ok").textContent = opts.ok || "OK";
      $("modal").hidden = false;
      (opts.token ? $("modal-token") : opts.reason ? $("modal-reason") : $("modal-ok")).focus();
      const done = (v) => {
        $("modal").hidden = true; $("modal-token").value = "";
        $("modal-ok").onclick = $("modal-cancel").onclick = null;
        $("modal").onkeydown = null;
        modalBusy = null; resolve(v);
      };
      $("modal-cancel").onclick = () => done(null);
      $("modal-ok").onclick = async () => {
        const v = { token: $("modal-token").value.trim(), reason: $("modal-reason").value.trim() };
        if (opts.token && !v.token) { showModalError("Enter a token."); return; }
        if (!opts.run) { done(v); return; }
        $("modal-ok").disabled = true;
        try { await opts.run(v); done(v); } catch (e) { showModalError(e.message); } finally { $("modal-ok").disabled = false; }
      };
      $("modal").onkeydown = (ev) => {
        if (ev.key === "Escape") done(null);
        if (ev.key === "Enter") $("modal-ok").click();
      };
    });
    return modalBusy;
  }
  function showModalError(msg) { const e = $("modal-error"); e.textContent = msg; e.hidden = false; }

  // admin runs a POST with the admin token, asking for it (and for a
  // reason) in the modal; a refused token is forgotten and asked again.
  function admin(title, text, path, body) {
    return ask({ title, text, token: true, reason: true, ok: title, tokenValue: state.adminToken, run: async (v) => {
      state.adminToken = v.token;
      try {
        return await api(path, { method: "POST", admin: true, body: Object.assign({ by: "console", reason: v.reason }, body) });
      } catch (e) {
        if (e instanceof APIError && (e.status === 401 || e.status === 403)) {
          state.adminToken = "";
          throw new Error("Refused: " + e.message);
        }
        const fs = e.body && e.body.findings;
        throw new Error(e.message + (fs && fs.length ? "\n" + fs.map((f) => where(f) + ": " + f.message).join("\n") : ""));
      }
    } }).then((v) => { if (v) refresh(); return v; });
  }

  // ---- live updates ------------------------------------------------------

  let events = null;
  // startEvents reads GET /events with fetch (an EventSource cannot send
  // the token) and refreshes the view on each change.
  function startEvents() {
    if (events) events.abort();
    const ctl = new AbortController();
    events = ctl;
    const live = $("live");
    (async () => {
      while (!ctl.signal.aborted) {
        try {
          const headers = {};
          if (state.readToken) headers["Authorization"] = "Bearer " + state.readToken;
          const res = await fetch("/events", { headers, signal: ctl.signal, cache: "no-store", credentials: "omit" });
          if (!res.ok || !res.body) throw new Error("HTTP " + res.status);
          live.textContent = "live"; live.className = "live on";
          const reader = res.body.getReader();
          const dec = new TextDecoder();
          let buf = "";
          for (;;) {
            const { value, done } = await reader.read();
            if (done) break;
            buf += dec.decode(value, { stream: true });
            let i;
            while ((i = buf.indexOf("\n\n")) >= 0) {
              const msg = buf.slice(0, i); buf = buf.slice(i + 2);
              if (/^event: change$/m.test(msg)) refresh();
            }
          }
        } catch (e) {
          if (ctl.signal.aborted) return;
        }
        live.textContent = "offline"; live.className = "live off";
        await new Promise((r) => setTimeout(r, 2000));
      }
    })();
  }

  // ---- views -------------------------------------------------------------

  const views = { overview, history, proxies, mesh, commit, dataplane };
  let rendering = 0;

  function route() {
    const parts = location.hash.replace(/^#\/?/, "").split("/").map(decodeURIComponent);
    const name = views[parts[0]] ? parts[0] : "overview";
    return { name, args: parts.slice(1) };
  }

  // refresh renders the current view again with fresh data.
  async function refresh() {
    const r = route();
    for (const a of document.querySelectorAll("#nav a")) a.classList.toggle("active", a.dataset.view === r.name);
    const n = ++rendering;
    try {
      // Every view shows the pin banner, from a fresh status.
      const [node, st] = await Promise.all([views[r.name](...r.args), read("/status")]);
      state.status = st;
      if (n !== rendering) return; // a newer render started
      const main = $("view");
      const keep = main.querySelector("input[type=search]");
      const focused = keep && document.activeElement === keep;
      clear(main).appendChild(node);
      if (focused) { const s = main.querySelector("input[type=search]"); if (s) { s.focus(); s.setSelectionRange(s.value.length, s.value.length); } }
    } catch (e) {
      if (n !== rendering) return;
      clear($("view")).appendChild(h("div", { className: "card" }, h("p", { className: "error" }, "Cannot load: " + e.message)));
    }
    renderBanner();
  }

  function renderBanner() {
    const b = $("banner"), st = state.status;
    if (!st || !st.pinned || !st.pin) { b.hidden = true; return; }
    clear(b);
    append(b, ["Pinned on ", h("a", { href: "#/commit/" + encodeURIComponent(st.pin.commit.hash), className: "mono" }, short(st.pin.commit.hash)),
      " by ", h("b", {}, st.pin.by || "?"), " ", ago(st.pin.at), st.pin.reason ? [" — ", st.pin.reason] : "",
      ": new commits are checked but not published until resume. ",
      h("button", { type: "button", id: "resume", onclick: () => admin("Resume", "Lift the pin and publish the branch's newest valid commit.", "/resume", {}) }, "Resume")]);
    b.hidden = false;
  }

  async function overview() {
    const st = state.status = await read("/status");
    const c = st.convergence || {};
    const out = h("div", {}, h("h1", {}, "Overview"));
    out.appendChild(h("div", { className: "card", id: "overview" }, facts([
      ["Following", h("span", {}, "branch ", h("b", { id: "branch" }, st.branch), " of ", h("span", { className: "mono" }, st.repo), st.path ? [", path ", h("code", {}, st.path)] : "")],
      ["Head", h("span", { id: "head" }, commitLink(st.head), " ", st.headVerdict ? chip(st.headVerdict) : "")],
      ["Published", h("span", { id: "published" }, commitLink(st.published), st.publishedAt ? h("span", { className: "muted" }, ", published " + ago(st.publishedAt)) : "")],
      st.pinned && st.pin ? ["Pinned", h("span", { id: "pin" }, "on ", short(st.pin.commit.hash), " by ", st.pin.by || "?", " ", ago(st.pin.at), st.pin.reason ? " (" + st.pin.reason + ")" : "")] : null,
      ["Last error", st.lastError ? h("span", { className: "error", id: "last-error" }, st.lastError) : h("span", { className: "muted" }, "none")],
      ["Last sync", ago(st.lastSync)],
      ["Last good sync", ago(st.lastGoodSync)],
      ["Ready", st.ready ? chip("yes") : chip("no")],
    ])));
    out.appendChild(h("h2", {}, "Convergence"));
    out.appendChild(h("div", { className: "counts", id: "convergence" },
      [["proxies", c.proxies], ["connected", c.connected], ["ACKed", c.acked], ["NACKed", c.nacked]].concat(c.reverted ? [["reverted", c.reverted]] : [])
        .map(([k, v]) => h("div", { className: "count" }, h("b", {}, String(v || 0)), k))));
    if (st.rejections && st.rejections.length) {
      out.appendChild(h("h2", {}, "Rejections of the published commit"));
      out.appendChild(rejectionsTable(st.rejections));
    }
    const replicas = st.replicas || [];
    if (replicas.length) {
      out.appendChild(h("h2", {}, "Replicas"));
      out.appendChild(h("p", { id: "replicas-summary" }, String(replicas.length), " on the store; ",
        st.decider ? [h("b", {}, st.decider), " decides"] : h("span", { className: "error" }, "none decides"), "; ",
        st.replicasAgree === false ? h("span", { className: "error" }, "they serve different commits") : "they serve the same commit",
        "; this page is served by ", h("b", {}, st.replica || "?"), "."));
      out.appendChild(h("table", { id: "replicas" },
        h("tr", {}, ["replica", "role", "serves", "proxies", "address", "heard"].map((k) => h("th", {}, k))),
        replicas.map((r) => h("tr", {},
          h("td", { className: "mono" }, r.id, r.self ? h("span", { className: "muted" }, " (this one)") : ""),
          h("td", {}, chip(r.decides ? "decides" : "follows")),
          h("td", {}, commitLink(r.published), r.pinned ? h("span", { className: "muted" }, " pinned") : ""),
          h("td", {}, String(r.connected || 0) + " connected of " + String(r.proxies || 0)),
          h("td", { className: "mono" }, r.address || ""),
          h("td", {}, ago(r.heartbeatAt))))));
    }
    return out;
  }

  function rejectionsTable(rs) {
    return h("table", {}, h("tr", {}, ["node", "type", "version", "error", "at"].map((k) => h("th", {}, k))),
      rs.map((r) => h("tr", {}, h("td", {}, dataplaneLink(r.node)), h("td", {}, typeName(r.type)), h("td", { className: "mono" }, r.version),
        h("td", { className: "error" }, r.error), h("td", {}, ago(r.at)))));
  }
  function typeName(url) { return (url || "").slice((url || "").lastIndexOf(".") + 1); }
  function dataplaneLink(node) {
    const i = (node || "").indexOf(".");
    if (i <= 0) return h("span", { className: "mono" }, node);
    return h("a", { href: "#/dataplane/" + encodeURIComponent(node.slice(0, i)) + "/" + encodeURIComponent(node.slice(i + 1)), className: "mono" }, node);
  }

  const rollbackable = { published: true, rejected: true, held: true };

  async function history() {
    const [st, hist] = await Promise.all([read("/status"), read("/history")]);
    state.status = st; state.history = hist;
    const out = h("div", {}, h("h1", {}, "History"));
    const filter = h("select", { id: "verdict-filter", onchange: (e) => { state.verdictFilter = e.target.value; refresh(); } },
      h("option", { value: "" }, "every verdict"),
      ["published", "rejected", "invalid", "held", "unverified", "failed"].map((v) => h("option", { value: v, selected: state.verdictFilter === v }, v)));
    out.appendChild(h("div", { className: "toolbar" }, "Show ", filter,
      st.pinned ? h("button", { type: "button", className: "primary", id: "resume-history", onclick: () => admin("Resume", "Lift the pin and publish the branch's newest valid commit.", "/resume", {}) }, "Resume") : "",
      h("span", { className: "muted" }, hist.total + " decisions")));
    const items = hist.items.filter((r) => !state.verdictFilter || r.verdict === state.verdictFilter);
    const published = st.published && st.published.hash;
    out.appendChild(h("table", { id: "history" },
      h("tr", {}, ["commit", "decided", "verdict", "author", "subject", "trigger", "what", "durations", ""].map((k) => h("th", {}, k))),
      items.map((r) => h("tr", { "data-commit": r.commit.hash, "data-verdict": r.verdict },
        h("td", {}, h("a", { href: "#/commit/" + encodeURIComponent(r.commit.hash), className: "mono" }, short(r.commit.hash))),
        h("td", {}, new Date(r.at).toLocaleString()),
        h("td", {}, chip(r.verdict), r.pinned ? [" ", chip("pinned", "held")] : "", r.forced ? [" ", chip("forced", "held")] : ""),
        h("td", {}, r.commit.author || ""),
        h("td", {}, h("span", { className: "subject" }, r.commit.subject || ""), r.by ? h("div", { className: "muted" }, r.trigger + " by " + r.by + (r.reason ? " (" + r.reason + ")" : "")) : "",
          r.verdict === "invalid" || r.verdict === "unverified" || r.verdict === "failed" ?
            h("div", {}, h("span", { className: "error" }, r.errors + " error(s)" + (r.error ? ": " + r.error : "")), findingsList(r.findings, r.commit.hash)) : "",
          r.rejections && r.rejections.length ? h("div", { className: "error" }, (r.rejectedProxies || r.rejections.length) + " proxy(ies) rejected it; first: " + r.rejections[0].node + ": " + r.rejections[0].error) : ""),
        h("td", {}, r.trigger || ""),
        h("td", {}, r.diff ? (r.diff.added || []).length + "+ " + (r.diff.changed || []).length + "~ " + (r.diff.removed || []).length + "- resources" : "",
          r.verdict === "published" || r.verdict === "rejected" ? h("div", { className: "muted" }, r.changed + " pushed, " + r.unchanged + " kept, " + r.removed + " removed") : "",
          r.convergence ? h("div", { className: "muted" }, "ACKed by " + r.convergence.proxies + " in " + r.convergence.seconds.toFixed(2) + "s") : ""),
        h("td", { className: "muted" }, Object.entries(r.durationsMs || {}).map(([k, v]) => k + " " + v.toFixed(1) + "ms").join(", ")),
        h("td", {}, rollbackable[r.verdict] && !(r.commit.hash === published && !st.pinned) ?
          h("button", { type: "button", className: "danger rollback", "data-commit": r.commit.hash,
            onclick: () => admin("Roll back", "Publish " + short(r.commit.hash) + " “" + (r.commit.subject || "") + "” and pin the mesh on it.", "/rollback", { commit: r.commit.hash }) }, "Roll back") : "")))));
    return out;
  }

  async function proxies() {
    const list = await read("/proxies");
    state.proxies = list;
    const out = h("div", {}, h("h1", {}, "Proxies"));
    out.appendChild(h("div", { className: "toolbar" },
      h("input", { type: "search", id: "proxy-filter", placeholder: "filter: node, flavour, SAN, type, error", value: state.proxyFilter,
        oninput: (e) => { state.proxyFilter = e.target.value; refresh(); } }),
      h("span", { className: "muted" }, list.total + " proxies")));
    const f = state.proxyFilter.toLowerCase();
    let items = list.items.filter((p) => !f || JSON.stringify(p).toLowerCase().includes(f));
    const key = state.proxySort.key, dir = state.proxySort.dir;
    const val = (p) => key === "nacks" ? p.types.filter((t) => t.lastNack).length :
      key === "sans" ? (p.certificate ? p.certificate.sans.join(" ") : "") :
      key === "notAfter" ? (p.certificate ? p.certificate.notAfter : "") : // RFC 3339 in UTC, whole seconds: sorts as time
      (p[key] === undefined ? "" : p[key]);
    items = items.slice().sort((a, b) => (val(a) < val(b) ? -1 : val(a) > val(b) ? 1 : 0) * dir);
    const th = (label, k) => h("th", { className: "sortable" + (key === k ? (dir > 0 ? " sorted-asc" : " sorted-desc") : ""),
      onclick: () => { state.proxySort = { key: k, dir: key === k ? -dir : 1 }; refresh(); } }, label);
    out.appendChild(h("div", { className: "scroll" }, h("table", { id: "proxies" },
      h("tr", {}, th("node", "nodeId"), th("flavour", "flavor"), th("connected since", "connectedSince"), th("in sync", "inSync"),
        th("certificate SANs", "sans"), th("expires", "notAfter"),
        h("th", {}, "versions per type (published / sent / ACKed)"), th("last NACK", "nacks")),
      items.map((p) => h("tr", { "data-node": p.nodeId },
        h("td", {}, dataplaneLink(p.nodeId), p.unknown ? [" ", chip("unknown", "invalid")] : "", p.streams ? h("div", { className: "muted" }, p.streams + " stream(s)") : h("div", { className: "muted" }, "not connected")),
        h("td", {}, p.flavor || "", p.publishedFlavor && p.publishedFlavor !== p.flavor ? h("div", { className: "muted" }, "served " + p.publishedFlavor) : ""),
        h("td", {}, p.connectedSince ? ago(p.connectedSince) : ""),
        h("td", {}, p.inSync ? chip("yes") : chip("no")),
        p.certificate ? h("td", { className: "sans", title: "serial " + p.certificate.serial }, p.certificate.sans.map((n) => h("div", { className: "mono" }, breakable(n)))) :
          h("td", { className: "sans muted", title: "no certificate: its mesh has no mTLS, or it is not served yet" }, "–"),
        h("td", {}, p.certificate ? certExpiry(p.certificate) : ""),
        h("td", {}, h("table", { className: "types" }, p.types.map((t) => h("tr", {},
          h("td", {}, t.type), h("td", { className: "mono" }, t.published || "–"), h("td", { className: "mono" }, t.sent || "–"),
          h("td", { className: "mono" + (t.acked && t.acked === t.published ? "" : " muted") }, t.acked || "–"))))),
        h("td", {}, p.types.filter((t) => t.lastNack).map((t) => h("div", { className: "error" }, t.type + " " + t.lastNack.version + ": " + t.lastNack.error))))))));
    return out;
  }

  async function mesh(name) {
    const meshes = await read("/meshes");
    const names = meshes.items.map((m) => m.name);
    name = name || names[0];
    const out = h("div", {}, h("h1", {}, "Mesh"));
    out.appendChild(h("div", { className: "toolbar" }, "Mesh ",
      h("select", { id: "mesh-select", onchange: (e) => { location.hash = "#/mesh/" + encodeURIComponent(e.target.value); } },
        names.map((n) => h("option", { value: n, selected: n === name }, n)))));
    if (!name) { out.appendChild(h("p", { className: "muted" }, "No mesh is served.")); return out; }
    const m = await read("/meshes/" + encodeURIComponent(name) + "/matrix");
    out.appendChild(h("p", {}, m.mtls ? "mTLS is on: the permissions below are enforced. Rows call columns." :
      "mTLS is off: permissions are not enforced, every client gets in (as in Kuma). Rows call columns."));
    const cells = {};
    for (const c of m.cells) cells[c.from + "\u0000" + c.to] = c;
    const detail = h("div", { className: "card", id: "cell-detail" }, h("span", { className: "muted" }, "Click a cell to see what decides it."));
    const label = { allowed: "allow", denied: "deny", "shadow-denied": "shadow", mixed: "mixed", unenforced: "open" };
    const showCell = (c, td) => {
      for (const s of out.querySelectorAll("td.cell.selected")) s.classList.remove("selected");
      td.classList.add("selected");
      state.selectedCell = c.from + "\u0000" + c.to;
      clear(detail);
      append(detail, [h("b", {}, c.from), " → ", h("b", {}, c.to), " ", chip(c.verdict),
        h("h2", {}, "Why"), h("ul", {}, (c.reasons || []).map((r) => h("li", {}, r))),
        h("h2", {}, "Policies"), (c.policies || []).length ? h("ul", { className: "policies" }, c.policies.map((p) =>
          h("li", {}, p.type + " ", h("b", {}, p.name), " ", h("code", {}, where(p))))) : h("p", { className: "muted" }, "none selects it")]);
    };
    let selected = null;
    out.appendChild(h("table", { className: "matrix", id: "matrix" },
      h("tr", {}, h("th", {}, "from \\ to"), m.services.map((s) => h("th", {}, s))),
      m.services.map((from) => h("tr", {}, h("th", { className: "row" }, from), m.services.map((to) => {
        const c = cells[from + "\u0000" + to];
        const td = h("td", { className: "cell " + c.verdict, title: c.verdict + ((c.reasons || []).length ? ": " + c.reasons.join("; ") : ""),
          "data-from": from, "data-to": to, "data-verdict": c.verdict }, label[c.verdict] || c.verdict);
        td.addEventListener("click", () => showCell(c, td));
        if (state.selectedCell === from + "\u0000" + to) selected = [c, td];
        return td;
      })))));
    out.appendChild(detail);
    if (selected) showCell(selected[0], selected[1]);
    out.appendChild(h("h2", {}, "Route splits"));
    if (!m.routes.length) out.appendChild(h("p", { className: "muted" }, "No MeshHTTPRoute or MeshTCPRoute splits traffic in this mesh."));
    for (const sp of m.routes) {
      const routes = (sp.routes || []).concat(sp.tcp ? [sp.tcp] : []);
      out.appendChild(h("div", { className: "card split" }, h("b", {}, sp.from || "?"), " → ", h("b", {}, sp.to),
        routes.map((r) => h("div", {}, h("div", {}, h("code", {}, r.match || r.name), r.by ? h("span", { className: "muted" }, " by " + r.by + " " + where(r)) : ""),
          weights(r.backends || [])))));
    }
    return out;
  }

  // weights draws backends ("name weight") as a bar of their shares.
  function weights(backends) {
    const parsed = backends.map((b) => { const i = b.lastIndexOf(" "); const w = Number(b.slice(i + 1)); return isNaN(w) ? { name: b, w: 1 } : { name: b.slice(0, i), w }; });
    const total = parsed.reduce((s, b) => s + b.w, 0) || 1;
    return h("div", {}, h("div", { className: "weights" }, parsed.map((b) => {
      const span = h("span", { title: b.name + ": " + b.w }, b.name + " " + Math.round(100 * b.w / total) + "%");
      span.style.flexGrow = String(b.w); // CSSOM, allowed by the CSP (no style attribute)
      span.style.flexBasis = "0";
      return span;
    })), h("div", { className: "muted" }, parsed.map((b) => b.name + " weight " + b.w).join(", ")));
  }

  async function commit(hash) {
    const [st, hist] = await Promise.all([read("/status"), read("/history")]);
    state.status = st;
    const out = h("div", {}, h("h1", {}, "Commit"));
    if (!hash) hash = st.head && st.head.hash;
    if (!hash) { out.appendChild(h("p", { className: "muted" }, "No commit yet.")); return out; }
    const recs = hist.items.filter((r) => r.commit.hash === hash || r.commit.hash.startsWith(hash));
    const rec = recs[0];
    const info = rec ? rec.commit : { hash };
    out.appendChild(h("div", { className: "card", id: "commit" }, facts([
      ["Commit", h("span", { className: "mono" }, info.hash)],
      ["Subject", h("span", { className: "subject" }, info.subject || "")],
      ["Author", info.author || ""],
      info.signer ? ["Signed by", info.signer] : null,
      ["Decisions", recs.length ? h("span", {}, recs.map((r) => [chip(r.verdict), " ", r.trigger || "", " ", new Date(r.at).toLocaleString(), "; "])) : h("span", { className: "muted" }, "none recorded")],
    ])));
    if (rec && (rec.findings || []).length) {
      out.appendChild(h("h2", {}, "Findings"));
      out.appendChild(h("div", { className: "card" }, rec.errors + " error(s), " + rec.warnings + " warning(s); the first:", findingsList(rec.findings, rec.commit.hash)));
    }
    const base = (st.published && st.published.hash) || "";
    const baseInput = h("input", { type: "text", id: "diff-base", value: state.diffBase || base, size: 44, className: "mono" });
    const planBox = h("div", { id: "plan" }, h("p", { className: "muted" }, "Loading the plan…"));
    out.appendChild(h("h2", {}, "Plan against ", baseInput, " ", h("button", { type: "button", onclick: () => { state.diffBase = baseInput.value.trim(); refresh(); } }, "Compare")));
    out.appendChild(planBox);
    const b = state.diffBase || base;
    try {
      const pl = await read("/diff?base=" + encodeURIComponent(b) + "&head=" + encodeURIComponent(info.hash));
      clear(planBox).appendChild(planView(pl));
    } catch (e) {
      clear(planBox);
      append(planBox, [h("p", { className: "error" }, "No plan: " + e.message), e.body && e.body.findings ? findingsList(e.body.findings, e.body.commit) : ""]);
    }
    return out;
  }

  function keyName(k) { return k.type + " " + (k.mesh ? k.mesh + "/" : "") + k.name; }
  function value(v) { return v === undefined ? "∅" : typeof v === "string" ? v : JSON.stringify(v); }

  function planView(pl) {
    const r = pl.resources, s = pl.summary;
    const out = h("div", {});
    out.appendChild(h("p", {}, "From ", h("code", {}, short(pl.base.commit)), " to ", h("code", {}, short(pl.head.commit)), ": ",
      s.resources + " resource(s) (" + s.added + " added, " + s.changed + " changed, " + s.removed + " removed), " +
      s.proxies + " proxy(ies) change, " + s.proxiesUnchanged + " unchanged."));
    out.appendChild(h("h2", {}, "Resources"));
    out.appendChild(h("ul", { id: "plan-resources" },
      r.added.map((k) => h("li", { className: "diff-new" }, "+ " + keyName(k))),
      r.removed.map((k) => h("li", { className: "diff-old" }, "− " + keyName(k))),
      r.changed.map((c) => h("li", {}, "~ " + keyName(c), h("ul", {}, c.fields.map((f) =>
        h("li", {}, h("code", {}, f.path), ": ", h("span", { className: "diff-old" }, value(f.old)), " → ", h("span", { className: "diff-new" }, value(f.new)))))))));
    out.appendChild(h("h2", {}, "Proxies"));
    if (!pl.proxies.length) out.appendChild(h("p", { className: "muted" }, "No proxy's configuration changes."));
    out.appendChild(h("table", { id: "plan-proxies" }, h("tr", {}, ["node", "status", "listeners", "clusters", "routes", "endpoints", "secrets"].map((k) => h("th", {}, k))),
      pl.proxies.map((p) => h("tr", {}, h("td", {}, dataplaneLink(p.node)), h("td", {}, p.status),
        ["listeners", "clusters", "routes", "endpoints", "secrets"].map((k) => h("td", {}, nameDiff(p[k])))))));
    return out;
  }
  function nameDiff(d) {
    if (!d) return "";
    return [(d.added || []).map((n) => h("div", { className: "diff-new mono" }, "+ " + n)), (d.changed || []).map((n) => h("div", { className: "mono" }, "~ " + n)),
      (d.removed || []).map((n) => h("div", { className: "diff-old mono" }, "− " + n))];
  }

  async function dataplane(meshName, name) {
    const out = h("div", {}, h("h1", {}, "Dataplane"));
    if (!meshName || !name) {
      const meshes = await read("/meshes");
      for (const m of meshes.items) {
        const dps = await read("/meshes/" + encodeURIComponent(m.name) + "/dataplanes");
        out.appendChild(h("h2", {}, "Mesh " + m.name));
        out.appendChild(h("ul", {}, dps.items.map((d) => h("li", {}, dataplaneLink(m.name + "." + d.name)))));
      }
      return out;
    }
    const base = "/meshes/" + encodeURIComponent(meshName) + "/dataplanes/" + encodeURIComponent(name);
    const [pol, ps] = await Promise.all([read(base + "/policies"), read("/proxies")]);
    out.appendChild(h("p", {}, h("b", { className: "mono" }, pol.dataplane)));
    out.appendChild(h("h2", {}, "Inbounds"));
    out.appendChild(h("table", { id: "inbounds" }, h("tr", {}, ["inbound", "service", "permissions", "clients", "policies", "confs"].map((k) => h("th", {}, k))),
      pol.inbounds.map((ip) => h("tr", {}, h("td", { className: "mono" }, ip.inbound), h("td", {}, ip.service), h("td", {}, ip.permissions),
        h("td", {}, (ip.clients || []).map((c) => h("div", {}, c.client + ": ", chip(c.action, /^Allow$/.test(c.action) ? "allowed" : /Shadow/.test(c.action) ? "shadow-denied" : "denied"), c.by ? h("span", { className: "muted" }, " by " + c.by) : ""))),
        h("td", {}, policyRefs(ip.policies)), h("td", {}, confs(ip.confs))))));
    out.appendChild(h("h2", {}, "Outbounds"));
    out.appendChild(h("table", { id: "outbounds" }, h("tr", {}, ["outbound", "service", "routes", "policies", "confs"].map((k) => h("th", {}, k))),
      (pol.outbounds || []).map((op) => h("tr", {}, h("td", { className: "mono" }, op.outbound), h("td", {}, op.service),
        h("td", {}, (op.routes || []).concat(op.tcp ? [op.tcp] : []).map((r) => h("div", {}, h("code", {}, r.match || r.name), " → ", (r.backends || []).join(", ")))),
        h("td", {}, policyRefs(op.policies)), h("td", {}, confs(op.confs))))));
    if ((pol.proxy || []).length) { out.appendChild(h("h2", {}, "Proxy-wide")); out.appendChild(confs(pol.proxy)); }
    out.appendChild(h("h2", {}, "Rendered resources"));
    const node = meshName + "." + name;
    const p = ps.items.find((x) => x.nodeId === node);
    if (!p) out.appendChild(h("p", { className: "muted" }, "Not published: no snapshot of the served commit for this node."));
    else out.appendChild(h("table", { id: "rendered" }, h("tr", {}, ["type", "version (commit-hash)", "sent", "ACKed"].map((k) => h("th", {}, k))),
      p.types.map((t) => h("tr", {}, h("td", {}, t.type), h("td", { className: "mono" }, t.published || "–"), h("td", { className: "mono" }, t.sent || "–"), h("td", { className: "mono" }, t.acked || "–")))));
    out.appendChild(h("p", { className: "muted" }, "Each version is the commit where the type last changed and the hash of its resources."));
    const shown = h("pre", { id: "resources", className: "mono" });
    const show = (flavor) => async () => {
      shown.textContent = "…";
      try {
        const doc = await read(base + "/resources?flavor=" + flavor);
        shown.textContent = JSON.stringify(doc, null, 2);
      } catch (e) {
        shown.textContent = String(e.message || e);
      }
    };
    out.appendChild(h("p", {}, h("button", { id: "show-envoy", onclick: show("envoy") }, "Envoy resources"), " ",
      h("button", { id: "show-grpc", onclick: show("grpc") }, "proxyless gRPC resources")));
    out.appendChild(shown);
    return out;
  }
  function policyRefs(ps) { return (ps || []).map((p) => h("div", {}, p.type + " ", h("b", {}, p.name), " ", h("code", {}, where(p)))); }
  function confs(cs) {
    return (cs || []).map((c) => h("div", {}, h("b", {}, c.type), " ", h("code", {}, JSON.stringify(c.conf)),
      h("div", { className: "muted" }, (c.from || []).map((f) => f.name + " " + where(f)).join("; "))));
  }

  // For the console's tests: the functions that make addresses and marks
  // from data, callable on their own.
  window.gitmeshConsole = Object.freeze({ forgeURL, expiry });

  window.addEventListener("hashchange", () => { state.selectedCell = null; refresh(); });
  document.addEventListener("DOMContentLoaded", () => { refresh().then(startEvents); });
})();

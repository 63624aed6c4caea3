/* Moderation Copilot console: plain JS, no dependencies. Talks to the /v1 API with the key from localStorage. */
"use strict";

(() => {
  const KEY_STORE = "copilot.apiKey";
  const LABEL_STORE = "copilot.labels";
  // copilot/schema.py Action, strictest-first order of ACTION_SEVERITY.
  const ACTIONS = ["remove_and_report", "escalate", "remove_and_strike", "remove", "age_restrict", "limit_reach", "warning_label", "no_action"];
  const FIELD_NAMES = { title: "Title", caption: "Caption", transcript: "Transcript", on_screen_text: "On-screen text", comments: "Comments" };

  const $ = (id) => document.getElementById(id);

  /** Build an element: h("div", {class: "x", dataset: {testid: "y"}, onclick: fn}, child, "text", ...). Text is never parsed as HTML. */
  function h(tag, attrs, ...children) {
    const el = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (v === null || v === undefined || v === false) continue;
      if (k === "class") el.className = v;
      else if (k === "dataset") Object.assign(el.dataset, v);
      else if (k === "testid") el.dataset.testid = v;
      else if (k.startsWith("on")) el.addEventListener(k.slice(2), v);
      else if (k === "style") el.setAttribute("style", v);
      else if (k in el && typeof v !== "string") el[k] = v;
      else el.setAttribute(k, v === true ? "" : v);
    }
    for (const c of children.flat()) {
      if (c === null || c === undefined || c === false) continue;
      el.append(c instanceof Node ? c : document.createTextNode(String(c)));
    }
    return el;
  }

  const fmtScore = (x) => (x === null || x === undefined ? "—" : Number(x).toFixed(2));
  const fmtTime = (s) => (s ? String(s).replace("T", " ").replace(/\.\d+/, "").replace(/\+00:00$|Z$/, "") : "");
  const human = (s) => String(s || "").replace(/_/g, " ");
  /** Seconds as m:ss (h:mm:ss past an hour), for media times. */
  function fmtClock(sec) {
    const t = Math.max(0, Math.floor(Number(sec) || 0));
    const h = Math.floor(t / 3600), m = Math.floor((t % 3600) / 60), s = String(t % 60).padStart(2, "0");
    return h ? `${h}:${String(m).padStart(2, "0")}:${s}` : `${m}:${s}`;
  }
  const fmtBytes = (n) => (n >= 1048576 ? `${(n / 1048576).toFixed(1)} MB` : `${Math.max(1, Math.round(n / 1024))} kB`);
  const MEDIA_TYPES = new Set(["video", "audio"]);

  // ------------------------------------------------------------------ API
  class ApiError extends Error {
    constructor(status, body) {
      const detail = (body && (body.detail || body.title)) || `HTTP ${status}`;
      super(typeof detail === "string" ? detail : JSON.stringify(detail));
      this.status = status;
      this.title = body && body.title;
      this.code = body && body.code;
      this.requestId = body && body.request_id;
    }
  }

  const getKey = () => localStorage.getItem(KEY_STORE) || "";

  const parseBody = (text) => {
    if (!text) return null;
    try { return JSON.parse(text); } catch { return { detail: text }; }
  };

  /** fetch() with the key in the header. A network failure or a non-2xx answer is thrown as an ApiError carrying the
   * problem details; an abort (a stream the user left) is rethrown as it is. */
  async function request(path, init = {}) {
    const headers = { ...(init.headers || {}) };
    const key = getKey();
    if (key) headers.Authorization = `Bearer ${key}`;
    let resp;
    try {
      resp = await fetch(path, { ...init, headers });
    } catch (e) {
      if (e.name === "AbortError") throw e;
      throw new ApiError(0, { title: "Network error", detail: `the service did not answer (${e.message})` });
    }
    if (!resp.ok) throw new ApiError(resp.status, parseBody(await resp.text()));
    return resp;
  }

  async function api(method, path, body) {
    const headers = { Accept: "application/json" };
    const multipart = body instanceof FormData;  // the browser sets the multipart boundary itself
    if (body !== undefined && !multipart) headers["Content-Type"] = "application/json";
    const resp = await request(path, { method, headers, body: body === undefined || multipart ? body : JSON.stringify(body) });
    const data = parseBody(await resp.text());
    setAuth(true);
    return data;
  }

  /** GET a file (the case's media) with the key in the header, as a Blob: a <video src> could not send the header. */
  async function apiBlob(path) {
    return (await request(path)).blob();
  }

  /** POST to an endpoint that answers with server-sent events and call onEvent(name, data) per event (data is JSON).
   * fetch() rather than EventSource: it can POST and send the key in a header, never in the URL. Errors before the
   * stream starts are problem details, thrown as ApiError; an `error` event is passed on like any other. */
  async function apiStream(path, onEvent, signal) {
    const resp = await request(path, { method: "POST", headers: { Accept: "text/event-stream" }, signal });
    setAuth(true);
    const reader = resp.body.pipeThrough(new TextDecoderStream()).getReader();
    let buf = "";
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      buf += value.replace(/\r\n?/g, "\n");
      let end;
      while ((end = buf.indexOf("\n\n")) >= 0) {
        const frame = buf.slice(0, end);
        buf = buf.slice(end + 2);
        let name = "message";
        const data = [];
        for (const line of frame.split("\n")) {
          if (!line || line.startsWith(":")) continue;  // keep-alive comment
          const colon = line.indexOf(":");
          const field = colon < 0 ? line : line.slice(0, colon);
          const v = colon < 0 ? "" : line.slice(colon + 1).replace(/^ /, "");
          if (field === "event") name = v;
          else if (field === "data") data.push(v);
        }
        if (data.length) onEvent(name, JSON.parse(data.join("\n")));
      }
    }
  }

  // ------------------------------------------------------------------ messages
  function showError(err) {
    let msg;
    if (err instanceof ApiError) {
      if (err.status === 401) {
        msg = `Not authenticated (401): ${err.message}. Enter a valid API key above.`;
        setAuth(false, "key rejected");
      } else if (err.status === 403) {
        msg = `Not allowed for this key's role (403): ${err.message}`;
      } else if (err.status === 0) {
        msg = `${err.title}: ${err.message}`;
      } else {
        msg = `${err.title || "Error"} (${err.status}): ${err.message}`;
      }
      if (err.requestId) msg += ` [request ${err.requestId}]`;
    } else {
      msg = String(err && err.message ? err.message : err);
      console.error(err);
    }
    $("error-text").textContent = msg;
    $("error-banner").dataset.status = err && err.status !== undefined ? String(err.status) : "";
    $("error-banner").hidden = false;
  }

  function clearError() {
    $("error-banner").hidden = true;
    $("error-text").textContent = "";
  }

  function setAuth(ok, text) {
    const el = $("auth-state");
    if (ok === true) {
      el.textContent = "key accepted";
      el.className = "auth-state ok";
    } else if (ok === false) {
      el.textContent = text || "key rejected";
      el.className = "auth-state bad";
    } else {
      el.textContent = text || "";
      el.className = "auth-state";
    }
  }

  /** Run an async UI action: disable the button while it runs, report errors in the banner. */
  async function run(button, fn) {
    if (button) button.disabled = true;
    try {
      clearError();
      return await fn();
    } catch (e) {
      showError(e);
      return undefined;
    } finally {
      if (button) button.disabled = false;
    }
  }

  // ------------------------------------------------------------------ labels known to the console
  function knownLabels() {
    try { return JSON.parse(localStorage.getItem(LABEL_STORE) || "[]"); } catch { return []; }
  }

  function rememberLabels(scores) {
    const labels = (scores || []).map((s) => s.label);
    if (!labels.length) return;
    localStorage.setItem(LABEL_STORE, JSON.stringify(labels));
    fillLabelOptions();
  }

  function fillLabelOptions() {
    $("label-options").replaceChildren(...knownLabels().map((l) => h("option", { value: l })));
  }

  // ------------------------------------------------------------------ tabs and keyboard
  const state = {
    tab: "queue", queue: [], cursor: null, filters: {}, selected: -1, caseId: null, detail: null, stream: null,
    watch: new Map(), pollTimer: null, polling: false, uploadId: null,  // media cases being extracted (see "media cases" below)
    player: { id: null, url: null, el: null, pending: null },  // the open case's media, as a blob URL
  };

  function showTab(name) {
    state.tab = name;
    for (const t of ["queue", "case", "policy"]) {
      $(`panel-${t}`).hidden = t !== name;
      $(`tab-${t}`).setAttribute("aria-selected", String(t === name));
    }
    if (name !== "case" && state.player.el) state.player.el.pause();  // no sound from a panel nobody sees
    schedulePoll();  // polling follows what is on screen: it pauses on other tabs and resumes here
  }

  document.querySelectorAll("[role=tab]").forEach((b) => b.addEventListener("click", () => showTab(b.dataset.tab)));

  document.addEventListener("keydown", (ev) => {
    const t = ev.target;
    if (ev.ctrlKey || ev.metaKey || ev.altKey) return;
    if (ev.key === "Escape") {
      clearError();
      if (t && t.blur) t.blur();
      return;
    }
    if (t && (t.tagName === "INPUT" || t.tagName === "TEXTAREA" || t.tagName === "SELECT" || t.isContentEditable)) return;
    if (ev.key === "1") showTab("queue");
    else if (ev.key === "2") showTab("case");
    else if (ev.key === "3") showTab("policy");
    else if (ev.key === "/") { ev.preventDefault(); showTab("policy"); $("p-q").focus(); }
    else if (state.tab === "queue" && (ev.key === "j" || ev.key === "ArrowDown")) { ev.preventDefault(); selectRow(state.selected + 1); }
    else if (state.tab === "queue" && (ev.key === "k" || ev.key === "ArrowUp")) { ev.preventDefault(); selectRow(state.selected - 1); }
    else if (state.tab === "queue" && (ev.key === "Enter" || ev.key === "o") && state.selected >= 0) { ev.preventDefault(); openCase(state.queue[state.selected].id); }
    else if (ev.key === "n" && state.tab === "case") { ev.preventDefault(); nextCase(); }
  });

  // ------------------------------------------------------------------ status line
  async function refreshStatus() {
    let body = null;
    try {
      const resp = await fetch("/readyz", { headers: { Accept: "application/json" } });
      body = await resp.json();
    } catch (e) {
      $("ready-overall").textContent = "unreachable";
      $("ready-overall").className = "chip st-missing";
      $("status-chips").replaceChildren();
      setTimeout(refreshStatus, 10000);
      return;
    }
    $("ready-overall").textContent = body.ready ? "ready" : "not ready";
    $("ready-overall").className = `chip ${body.ready ? "st-ready" : "st-missing"}`;
    $("status-chips").replaceChildren(...(body.components || []).map((c) =>
      h("span", {
        class: `chip st-${c.status}${c.required ? "" : " optional"}`,
        testid: `status-chip-${c.name}`,
        dataset: { status: c.status },
        title: [c.version && `version ${c.version}`, c.detail, c.required ? "required" : "optional"].filter(Boolean).join(" · "),
      }, `${c.name}: ${human(c.status)}`)));
    setTimeout(refreshStatus, body.ready ? 60000 : 5000);
  }

  // ------------------------------------------------------------------ API key
  $("api-key").value = getKey();
  $("key-form").addEventListener("submit", (ev) => {
    ev.preventDefault();
    const key = $("api-key").value.trim();
    if (key) localStorage.setItem(KEY_STORE, key); else localStorage.removeItem(KEY_STORE);
    setAuth(null, key ? "checking…" : "no key");
    clearError();
    loadQueue(true);
  });
  $("key-clear").addEventListener("click", () => {
    localStorage.removeItem(KEY_STORE);
    $("api-key").value = "";
    setAuth(null, "no key");
  });
  $("error-close").addEventListener("click", clearError);

  // ------------------------------------------------------------------ queue
  function readFilters() {
    const f = {};
    if ($("f-status").value) f.status = $("f-status").value;
    if ($("f-label").value.trim()) f.label = $("f-label").value.trim();
    if ($("f-min").value !== "") f.min_score = $("f-min").value;
    return f;
  }

  async function loadQueue(reset) {
    if (!getKey()) {
      setAuth(null, "no key");
      $("queue-body").replaceChildren();
      $("queue-empty").hidden = true;
      $("queue-count").textContent = "Enter an API key to load the queue.";
      return;
    }
    await run(reset ? $("queue-apply") : $("load-more"), async () => {
      if (reset) state.filters = readFilters();
      const params = new URLSearchParams({ ...state.filters, limit: "50" });
      if (!reset && state.cursor) params.set("cursor", state.cursor);
      const page = await api("GET", `/v1/cases?${params}`);
      if (reset) { state.queue = []; state.selected = -1; }
      state.queue.push(...page.items);
      state.cursor = page.next_cursor;
      renderQueue();
    });
  }

  function renderQueue() {
    const rows = state.queue.map((c, i) => h("tr", {
      testid: "queue-row", dataset: { caseId: String(c.id), index: String(i) }, tabindex: "0",
      class: `${i === state.selected ? "selected" : ""}${c.id === state.caseId ? " current" : ""}`,
      onclick: () => openCase(c.id),
      onkeydown: (ev) => { if (ev.key === "Enter") { ev.stopPropagation(); openCase(c.id); } },
      onfocus: () => { state.selected = i; markSelected(); },
    },
    h("td", { class: "num" }, `#${c.id}`),
    h("td", { class: "status" }, h("span", { class: `chip cs-${c.status}`, testid: "queue-status" }, c.status),
      c.status_detail ? h("div", { class: `small status-detail${c.status === "failed" ? " bad" : " muted"}`, testid: "queue-status-detail" }, c.status_detail) : null),
    h("td", { testid: "queue-top-label" }, c.top_label || h("span", { class: "muted" }, "—")),
    h("td", { class: "num", testid: "queue-top-score" }, fmtScore(c.top_score)),
    h("td", {}, c.content_type),
    h("td", { class: "muted nowrap" }, fmtTime(c.created_at)),
    h("td", { class: "preview", testid: "queue-preview", title: c.preview }, c.preview || h("span", { class: "muted" }, "—"))));
    $("queue-body").replaceChildren(...rows);
    $("queue-empty").hidden = state.queue.length > 0;
    $("load-more").hidden = !state.cursor;
    $("queue-count").textContent = state.queue.length ? `${state.queue.length} case(s) loaded${state.cursor ? "; more available" : ""}` : "";
  }

  function markSelected() {
    $("queue-body").querySelectorAll("tr").forEach((tr, i) => tr.classList.toggle("selected", i === state.selected));
  }

  function selectRow(i) {
    if (!state.queue.length) return;
    state.selected = Math.max(0, Math.min(state.queue.length - 1, i));
    const tr = $("queue-body").children[state.selected];
    if (tr) tr.focus();
    markSelected();
  }

  $("queue-filters").addEventListener("submit", (ev) => { ev.preventDefault(); loadQueue(true); });
  $("queue-reset").addEventListener("click", () => {
    $("f-status").value = ""; $("f-label").value = ""; $("f-min").value = "";
    loadQueue(true);
  });
  $("load-more").addEventListener("click", () => loadQueue(false));

  // ------------------------------------------------------------------ new case
  $("new-case").addEventListener("submit", (ev) => {
    ev.preventDefault();
    run($("n-submit"), async () => {
      $("n-submit").textContent = "Creating…";
      try {
        const body = { caption: $("n-caption").value, content_type: $("n-type").value };
        const reason = $("n-reason").value.trim();
        if (reason) body.report_reason = reason;
        const out = await api("POST", "/v1/cases", body);
        const c = out.cases[0];
        if (c.suggestion) rememberLabels(c.suggestion.scores);
        const top = c.suggestion ? (c.suggestion.abstained ? "escalated" : (c.suggestion.labels.join(", ") || "no labels")) : "no suggestion yet";
        $("new-result").replaceChildren(
          h("span", { testid: "new-case-id", dataset: { caseId: String(c.id) } }, `${c.created ? "Created" : "Already ingested:"} case #${c.id}`),
          ` (${c.status}; ${top}) `,
          h("button", { type: "button", testid: "new-case-open", onclick: () => openCase(c.id) }, "Open case"));
        $("n-caption").value = "";
        $("n-reason").value = "";
        loadQueue(true);
      } finally {
        $("n-submit").textContent = "Create case";
      }
    });
  });

  // ------------------------------------------------------------------ media upload
  const FILE_PROBLEMS = new Set([400, 413, 415, 422]);  // the file or a field is the problem: say so under the form

  $("upload-form").addEventListener("submit", (ev) => {
    ev.preventDefault();
    const file = $("u-file").files[0];
    if (!file) return;
    run($("u-submit"), async () => {
      $("u-submit").textContent = "Uploading…";
      $("upload-result").dataset.shown = "";
      $("upload-result").replaceChildren(h("span", { class: "muted" }, `Uploading ${file.name} (${fmtBytes(file.size)})…`));
      try {
        const form = new FormData();
        form.append("file", file, file.name);
        for (const [field, id] of [["title", "u-title"], ["caption", "u-caption"]]) {
          const v = $(id).value.trim();
          if (v) form.append(field, v);
        }
        let out;
        try {
          out = await api("POST", "/v1/cases", form);
        } catch (e) {
          if (!(e instanceof ApiError) || !FILE_PROBLEMS.has(e.status)) { $("upload-result").replaceChildren(); throw e; }
          $("upload-result").replaceChildren(h("div", { class: "problem", testid: "upload-error", dataset: { status: String(e.status), code: e.code || "" } },
            h("strong", {}, `${e.title || "Not accepted"} (${e.status})`), ": ", h("span", { testid: "upload-error-detail" }, e.message)));
          return;
        }
        state.uploadId = out.id;
        renderUploadStatus(out.id, out.status, out.status_detail, out.created ? `${out.kind}, ${fmtClock(out.duration_s)}` : "already ingested");
        $("upload-form").reset();
        if (out.status === "processing") watch(out.id);
        loadQueue(true);
      } finally {
        $("u-submit").textContent = "Upload";
      }
    });
  });

  function renderUploadStatus(id, status, detail, note) {
    const key = JSON.stringify([id, status, detail, note]);
    if ($("upload-result").dataset.shown === key) return;  // a live region: announce changes, not every poll
    $("upload-result").dataset.shown = key;
    $("upload-result").replaceChildren(
      h("span", { testid: "upload-case-id", dataset: { caseId: String(id) } }, `Case #${id}`),
      note ? h("span", { class: "muted" }, `(${note})`) : null,
      h("span", { class: `chip cs-${status}`, testid: "upload-status" }, status),
      detail ? h("span", { class: status === "failed" ? "bad" : "muted", testid: "upload-status-detail" }, detail) : null,
      h("button", { type: "button", testid: "upload-open", onclick: () => openCase(id) }, "Open case"));
  }

  // ------------------------------------------------------------------ media cases: poll until extracted
  // A case is watched while it is `processing` (and briefly after `queued`, until the worker has stored its suggestion).
  // Polling runs only while a watched case is on screen (under the upload form, or open in the case view) and the page
  // is visible; leaving stops it, coming back resumes it.
  const POLL_MS = 1000;
  const SUGGESTION_GRACE = 15;  // polls to wait, once queued, for the suggestion the worker stores right after

  function watch(id) {
    state.watch.set(id, { grace: SUGGESTION_GRACE });
    schedulePoll();
  }

  function watchedOnScreen() {
    if (document.hidden) return [];
    if (state.tab === "queue" && state.watch.has(state.uploadId)) return [state.uploadId];
    if (state.tab === "case" && state.watch.has(state.caseId)) return [state.caseId];
    return [];
  }

  function schedulePoll() {
    if (state.polling) return;  // pollOnce schedules the next one when it ends
    if (!watchedOnScreen().length) {
      clearTimeout(state.pollTimer);
      state.pollTimer = null;
      return;
    }
    if (!state.pollTimer) state.pollTimer = setTimeout(pollOnce, POLL_MS);
  }

  async function pollOnce() {
    state.pollTimer = null;
    state.polling = true;
    try {
      for (const id of watchedOnScreen()) {
        let d;
        try {
          d = await api("GET", `/v1/cases/${id}`);
        } catch (e) {
          state.watch.delete(id);  // reopening the case starts again
          showError(e);
          continue;
        }
        applyPolled(d);
      }
    } finally {
      state.polling = false;
      schedulePoll();
    }
  }

  const changeKey = (d) => `${d.status}|${d.status_detail || ""}|${d.suggestions.length}|${d.media ? 1 : 0}`;

  function applyPolled(d) {
    const w = state.watch.get(d.id);
    const waitingForSuggestion = d.status === "queued" && !d.suggestions.length && w && w.grace-- > 0;
    if (d.status !== "processing" && !waitingForSuggestion) state.watch.delete(d.id);
    if (state.uploadId === d.id) {
      renderUploadStatus(d.id, d.status, d.status_detail || (waitingForSuggestion ? "waiting for the suggestion" : ""),
        d.media ? `${d.media.kind}, ${fmtClock(d.media.duration_s)}` : "");
    }
    const q = state.queue.find((c) => c.id === d.id);
    if (q && (q.status !== d.status || q.status_detail !== d.status_detail)) {
      q.status = d.status;
      q.status_detail = d.status_detail;
      renderQueue();
    }
    if (state.caseId === d.id) {
      const changed = !state.detail || state.detail.id !== d.id || changeKey(state.detail) !== changeKey(d);
      state.detail = d;
      if (changed) renderCase(d);
    }
  }

  document.addEventListener("visibilitychange", schedulePoll);

  // ------------------------------------------------------------------ media player
  const isMediaCase = (d) => !!d.media || MEDIA_TYPES.has(d.case.content_type) || d.status === "processing";

  function dropPlayer() {
    const p = state.player;
    if (p.el) p.el.pause();
    if (p.url) URL.revokeObjectURL(p.url);
    state.player = { id: null, url: null, el: null, pending: null };
    $("m-player").replaceChildren();
  }

  async function loadPlayer(id, kind) {
    dropPlayer();
    state.player.id = id;
    $("m-player").replaceChildren(h("p", { class: "muted", testid: "media-loading" }, "Loading media…"));
    let blob;
    try {
      blob = await apiBlob(`/v1/cases/${id}/media`);
    } catch (e) {
      if (state.player.id !== id) return;
      $("m-player").replaceChildren(h("p", { class: "muted", testid: "media-unavailable", dataset: { status: String(e.status) } },
        e.status === 404 ? `No media file to play: ${e.message}.` : `The media could not be loaded: ${e.message}`));
      document.querySelectorAll("button.seek").forEach((b) => { b.disabled = true; });
      return;
    }
    if (state.player.id !== id) return;  // another case was opened meanwhile
    const url = URL.createObjectURL(blob);
    const audio = kind === "audio" || blob.type.startsWith("audio/");
    const el = h(audio ? "audio" : "video", { controls: true, preload: "metadata", src: url, testid: "media-player",
      "aria-label": `${audio ? "Audio" : "Video"} of case #${id}` });
    el.addEventListener("error", () => {
      $("m-player").append(h("p", { class: "bad small", testid: "media-error" },
        `This browser cannot play the file (${blob.type || "unknown type"}); the times below still point into it.`));
    });
    state.player.url = url;
    state.player.el = el;
    $("m-player").replaceChildren(el);
    const pending = state.player.pending;
    state.player.pending = null;
    if (pending) seek(pending.t, pending.play);
  }

  /** Move the open case's player to `t` seconds (and play): from a transcript line or an evidence button. */
  function seek(t, play) {
    const el = state.player.el;
    if (!el) {  // still loading: seek once it is there
      if (state.player.id === state.caseId) state.player.pending = { t, play };
      return;
    }
    const go = () => {
      el.currentTime = t;
      if (play) el.play().catch(() => {});  // refused playback leaves the player at t, paused
    };
    if (el.readyState >= 1) go(); else el.addEventListener("loadedmetadata", go, { once: true });
    el.scrollIntoView({ block: "nearest" });
  }

  function seekButton(t, label, testid, text) {
    return h("button", { type: "button", class: "seek small", testid, dataset: { startS: String(t) }, title: `Play from ${fmtClock(t)}`,
      "aria-label": `Play ${label} from ${fmtClock(t)}`, onclick: () => seek(t, true) }, text);
  }

  function renderMedia(d) {
    const show = isMediaCase(d);
    $("media-card").hidden = !show;
    if (!show) {
      if (state.player.id !== null) dropPlayer();
      return;
    }
    const m = d.media;
    const kind = m ? m.kind : (d.case.content_type === "audio" ? "audio" : "video");
    $("m-meta").textContent = m ? [m.kind, fmtClock(m.duration_s), [m.video_codec, m.audio_codec].filter(Boolean).join(" + "),
      m.language ? `language ${m.language}${m.language_probability ? ` (${Math.round(m.language_probability * 100)}%)` : ""}` : "no speech language"]
      .filter(Boolean).join(" · ") : (d.status === "processing" ? "being read…" : "");
    const info = [];
    if (m) {
      if (m.notes.length) info.push(h("ul", { class: "notes", testid: "media-notes" }, m.notes.map((n) => h("li", {}, n))));
      const secs = Object.entries(m.seconds || {}).map(([k, v]) => `${k} ${Number(v).toFixed(1)} s`).join(" · ");
      if (secs) info.push(h("div", { testid: "media-seconds" }, `Extraction: ${secs}${m.frames ? ` · ${m.frames_read}/${m.frames} frames read` : ""}`));
    }
    $("m-info").replaceChildren(...info);
    if (state.player.id !== d.id) loadPlayer(d.id, kind);
  }

  /** Transcript / on-screen lines with their times; each time is a button that plays the media from there. */
  function timedLines(lines, label, testid) {
    return h("ul", { class: "plain timed" }, lines.map((line) => h("li", { testid, dataset: { startS: String(line.start_s), endS: String(line.end_s) } },
      seekButton(line.start_s, label, `${testid}-seek`, `${fmtClock(line.start_s)}–${fmtClock(line.end_s)}`),
      " ", h("span", { class: "text" }, line.text))));
  }

  // ------------------------------------------------------------------ case view
  async function openCase(id) {
    showTab("case");
    if (state.stream) { state.stream.abort(); state.stream = null; }  // the server stops the LLM when we leave
    state.caseId = Number(id);
    $("d-result").replaceChildren();
    $("case-clause").hidden = true;
    await run(null, async () => {
      const detail = await api("GET", `/v1/cases/${id}`);
      if (state.caseId !== detail.id) return;  // another case was opened while this one loaded
      state.detail = detail;
      renderCase(detail);
      if (detail.status === "processing" || (detail.status === "queued" && detail.media && !detail.suggestions.length)) watch(detail.id);
      else schedulePoll();
      $("btn-claim").focus();
    });
  }

  function nextCase() {
    if (!state.queue.length) return;
    const i = state.queue.findIndex((c) => c.id === state.caseId);
    const next = state.queue.slice(i + 1).find((c) => c.status !== "decided") || state.queue[i + 1];
    if (next) openCase(next.id);
  }

  function renderCase(d) {
    $("case-none").hidden = true;
    $("case-view").hidden = false;
    $("c-id").textContent = `#${d.id}`;
    $("c-status").textContent = d.status;
    $("c-status").className = `chip cs-${d.status}`;
    const c = d.case;
    $("c-meta").textContent = [c.content_type, c.external_id && `ext ${c.external_id}`, c.language,
      c.report_reason && `reported: ${c.report_reason}`, c.reporter_type && `by ${human(c.reporter_type)}`].filter(Boolean).join(" · ");
    $("c-claims").textContent = d.claims.length ? "Claimed by " + d.claims.map((x) => `${x.moderator} at ${fmtTime(x.claimed_at)}`).join("; ") : "Not claimed";
    const pending = d.status === "processing" || d.status === "failed";  // no text to review yet, or never
    $("btn-claim").disabled = d.status === "decided" || pending;
    $("btn-resuggest").disabled = pending;
    $("btn-full").disabled = pending;
    $("d-submit").disabled = pending;  // the service refuses decisions until there is text to review
    $("c-processing").hidden = d.status !== "processing";
    $("c-processing").replaceChildren(h("strong", {}, "Processing"), " — ",
      h("span", { testid: "case-status-detail" }, d.status_detail || "reading speech and on-screen text"),
      h("span", { class: "muted small" }, " · this view updates by itself"));
    $("c-failed").hidden = d.status !== "failed";
    $("c-failed").replaceChildren(h("strong", {}, "Media processing failed"), " — ",
      h("span", { testid: "case-status-detail" }, d.status_detail || "no reason was recorded"));
    renderMedia(d);

    const m = d.media;
    const timed = {
      transcript: c.transcript_timing && c.transcript_timing.length ? c.transcript_timing : (m ? m.transcript : []),
      on_screen_text: c.on_screen_timing && c.on_screen_timing.length ? c.on_screen_timing : (m ? m.on_screen : []),
    };
    const fields = [];
    for (const [name, title] of Object.entries(FIELD_NAMES)) {
      const v = c[name];
      const empty = v === null || v === undefined || v === "" || (Array.isArray(v) && !v.length);
      const value = name === "comments"
        ? h("ul", { class: "plain comments" }, (v || []).map((x) => h("li", {}, x)))
        : timed[name] && timed[name].length
          ? timedLines(timed[name], name === "transcript" ? "speech" : "on-screen text", name === "transcript" ? "transcript-line" : "onscreen-line")
          : h("div", { class: "text" }, v || "");
      fields.push(h("dt", { class: empty ? "muted" : "" }, title),
        h("dd", { testid: `case-field-${name}`, class: empty ? "muted" : "" }, empty ? "—" : value));
    }
    $("c-fields").replaceChildren(...fields);

    const latest = d.suggestions.length ? d.suggestions[d.suggestions.length - 1] : null;
    $("s-none").textContent = d.status === "processing" ? "The suggestion follows once speech and on-screen text are read."
      : d.status === "failed" ? "No suggestion: the media gave no text to judge." : "No suggestion stored for this case. Use Re-suggest.";
    renderSuggestion(latest, d.suggestions.length);
    renderDecisionForm(latest);
    renderDecisions(d.decisions);
  }

  function renderSuggestion(stored, count) {
    $("s-rationale").classList.remove("streaming");
    $("sug-card").dataset.streaming = "false";
    $("s-none").hidden = !!stored;
    $("s-body").hidden = !stored;
    if (!stored) { $("s-which").textContent = ""; return; }
    const s = stored.suggestion;
    rememberLabels(s.scores);
    $("s-which").textContent = `#${stored.id} · ${fmtTime(stored.created_at)}${count > 1 ? ` · latest of ${count}` : ""}`;
    $("s-escalated").hidden = !s.abstained;
    $("s-abstain").textContent = s.abstain_reason || "no reason given";
    $("s-labels").replaceChildren(...(s.labels.length ? s.labels.map((l) => h("span", { class: "tag flagged", testid: "suggested-label" }, l)) : [h("span", { class: "muted" }, "none")]));
    $("s-action").replaceChildren(h("span", { class: `tag act-${s.action}` }, human(s.action)));
    $("s-rationale").textContent = s.rationale;

    $("s-citations").replaceChildren(...(s.citations.length ? s.citations.map((ci) => citationItem(ci, "case-clause")) : [h("li", { class: "muted" }, "No citations.")]));

    const sorted = [...s.scores].sort((a, b) => (b.supported - a.supported) || (b.score - a.score));
    $("s-scores").replaceChildren(...sorted.map(scoreRow));

    const playable = state.detail && isMediaCase(state.detail);
    $("s-evidence").replaceChildren(...(s.evidence && s.evidence.length ? [h("h4", {}, "Evidence"),
      h("ul", { class: "plain" }, s.evidence.map((e) => {
        const timed = e.start_s !== null && e.start_s !== undefined;
        const range = timed ? ` ${fmtClock(e.start_s)}${e.end_s !== null && e.end_s !== undefined ? `–${fmtClock(e.end_s)}` : ""}` : "";
        return h("li", { testid: "evidence-item", dataset: { field: e.field, startS: timed ? String(e.start_s) : "" } },
          timed && playable ? [seekButton(e.start_s, `the ${human(e.field)} evidence`, "evidence-seek", `▶ ${fmtClock(e.start_s)}`), " "] : null,
          h("span", { class: "muted" }, `${human(e.field)}${range}: `), h("q", { testid: "evidence-quote" }, e.quote),
          e.label ? [" ", h("span", { class: "tag" }, e.label)] : null);
      }))] : []));

    $("s-corpus").textContent = s.corpus_version;
    $("s-models").replaceChildren(...Object.entries(s.model_ids || {}).map(([k, v]) => h("span", { class: "model" }, h("span", { class: "muted" }, `${k} `), h("code", {}, v))));
    $("s-path").textContent = s.path + (s.fallback_reason ? ` (fell back: ${s.fallback_reason})` : "") + (s.latency_ms ? ` · ${Math.round(s.latency_ms)} ms` : "");
  }

  function scoreRow(sc) {
    const pct = Math.round(sc.score * 1000) / 10;
    const bar = h("div", { class: "bar" }, h("div", { class: "fill", style: `width:${sc.supported ? pct : 0}%` }));
    if (sc.supported && sc.threshold !== null && sc.threshold !== undefined) {
      bar.append(h("div", { class: "tick", style: `left:${sc.threshold * 100}%`, title: `threshold ${fmtScore(sc.threshold)}` }));
    }
    return h("div", {
      class: `score${sc.supported ? "" : " unsupported"}${sc.flagged ? " flagged" : ""}`,
      testid: "score-row", dataset: { label: sc.label, supported: String(sc.supported), flagged: String(sc.flagged) },
      title: sc.supported ? `score ${fmtScore(sc.score)}, threshold ${fmtScore(sc.threshold)}` : "not supported by the classifier (too little training data); left to retrieval",
    },
    h("span", { class: "lbl" }, sc.label),
    bar,
    h("span", { class: "val num" }, sc.supported ? `${fmtScore(sc.score)} / ${fmtScore(sc.threshold)}` : "n/a"));
  }

  function citationItem(ci, target) {
    return h("li", { testid: "citation", dataset: { clauseId: ci.clause_id } },
      h("button", { type: "button", class: "link clause-id", testid: "citation-link", onclick: () => showClause(ci.clause_id, target) }, ci.clause_id),
      " ", h("strong", {}, ci.title || ""),
      ci.summary ? h("div", { class: "muted small" }, ci.summary) : null,
      ci.quote ? h("blockquote", {}, ci.quote) : null);
  }

  async function showClause(id, target) {
    const box = $(target);
    await run(null, async () => {
      const out = await api("GET", `/v1/policy/clauses/${encodeURIComponent(id)}`);
      const c = out.clause;
      box.replaceChildren(
        h("div", { class: "clausehead" },
          h("h3", {}, h("code", { testid: "clause-id" }, c.id), " ", c.title),
          target === "case-clause" ? h("button", { type: "button", class: "ghost small", onclick: () => { box.hidden = true; } }, "Close") : null),
        h("p", { class: "muted small" }, `${human(c.area)} · ${c.kind} · severity ${c.severity} · action ${human(c.action)} · labels ${c.labels.join(", ")}`),
        h("p", {}, c.summary),
        h("h4", {}, "Rule"), h("p", { testid: "clause-rule" }, c.rule),
        h("h4", {}, "Exceptions"),
        c.exceptions.length ? h("ul", { testid: "clause-exceptions" }, c.exceptions.map((x) => h("li", {}, x))) : h("p", { class: "muted", testid: "clause-exceptions" }, "None."),
        c.rationale ? h("details", {}, h("summary", {}, "Rationale"), h("p", {}, c.rationale)) : null,
        c.violating.length || c.non_violating.length ? h("details", {}, h("summary", {}, "Examples"),
          h("ul", {}, c.violating.map((x) => h("li", {}, h("span", { class: "tag act-remove" }, "violating"), " ", x)),
            c.non_violating.map((x) => h("li", {}, h("span", { class: "tag act-no_action" }, "allowed"), " ", x)))) : null,
        h("p", { class: "muted small" }, `corpus ${out.corpus_version}${c.file ? ` · ${c.file}:${c.line}` : ""}`));
      box.hidden = false;
      box.scrollIntoView({ block: "nearest" });
    });
  }

  function renderDecisionForm(stored) {
    const s = stored ? stored.suggestion : null;
    const labels = s ? s.scores.map((x) => x.label) : knownLabels();
    const chosen = new Set(s ? s.labels : []);
    $("d-labels").replaceChildren(...(labels.length ? labels.map((l) => h("label", { class: "check" },
      h("input", { type: "checkbox", value: l, checked: chosen.has(l), testid: `decision-label-${l}` }), " ", l))
      : [h("span", { class: "muted" }, "Labels appear once a suggestion exists (Re-suggest).")]));
    $("d-action").replaceChildren(...ACTIONS.map((a) => h("option", { value: a, selected: s ? s.action === a : a === "no_action" }, human(a))));
    $("d-note").value = "";
    $("decision-form").dataset.suggestionId = stored ? String(stored.id) : "";
  }

  function renderDecisions(list) {
    $("d-list").replaceChildren(...(list.length ? list.map((d) => h("li", { testid: "decision-item", dataset: { decisionId: String(d.id) } },
      h("span", { class: `tag verdict-${d.verdict}`, testid: "decision-verdict" }, d.verdict), " ",
      h("strong", {}, human(d.action)), " · ", d.labels.length ? d.labels.join(", ") : "no labels",
      h("div", { class: "muted small" }, `${d.moderator} · ${fmtTime(d.created_at)}${d.note ? ` · “${d.note}”` : ""}`)))
      : [h("li", { class: "muted" }, "None yet.")]));
  }

  $("decision-form").addEventListener("submit", (ev) => {
    ev.preventDefault();
    const id = state.caseId;
    run($("d-submit"), async () => {
      const labels = [...$("d-labels").querySelectorAll("input[type=checkbox]:checked")].map((x) => x.value);
      const body = { labels, action: $("d-action").value };
      const note = $("d-note").value.trim();
      if (note) body.note = note;
      const sid = $("decision-form").dataset.suggestionId;
      if (sid) body.suggestion_id = Number(sid);  // judge the verdict against the suggestion shown, not a newer one
      const d = await api("POST", `/v1/cases/${id}/decisions`, body);
      $("d-result").replaceChildren(h("span", { class: "ok" },
        `Decision #${d.id} recorded: `, h("span", { class: `tag verdict-${d.verdict}`, testid: "decision-result-verdict" }, d.verdict),
        ` · ${human(d.action)} · ${d.labels.join(", ") || "no labels"}`));
      const detail = await api("GET", `/v1/cases/${id}`);
      state.detail = detail;
      renderDecisions(detail.decisions);
      $("c-status").textContent = detail.status;
      $("c-status").className = `chip cs-${detail.status}`;
      $("btn-claim").disabled = detail.status === "decided";
      const q = state.queue.find((c) => c.id === id);
      if (q) { q.status = detail.status; renderQueue(); }
    });
  });

  $("btn-claim").addEventListener("click", () => run($("btn-claim"), async () => {
    await api("POST", `/v1/cases/${state.caseId}/claim`);
    const detail = await api("GET", `/v1/cases/${state.caseId}`);
    state.detail = detail;
    $("c-status").textContent = detail.status;
    $("c-status").className = `chip cs-${detail.status}`;
    $("c-claims").textContent = "Claimed by " + detail.claims.map((x) => `${x.moderator} at ${fmtTime(x.claimed_at)}`).join("; ");
    const q = state.queue.find((c) => c.id === state.caseId);
    if (q) { q.status = detail.status; renderQueue(); }
  }));

  $("btn-resuggest").addEventListener("click", () => run($("btn-resuggest"), async () => {
    $("btn-resuggest").textContent = "Suggesting…";
    try {
      await api("POST", `/v1/cases/${state.caseId}/suggest?mode=fast`);
      const detail = await api("GET", `/v1/cases/${state.caseId}`);
      state.detail = detail;
      renderCase(detail);
    } finally {
      $("btn-resuggest").textContent = "Re-suggest";
    }
  }));

  /** Show the suggestion panel as "being written": the rationale fills in as the LLM streams it. */
  function startStreaming() {
    $("s-none").hidden = true;
    $("s-body").hidden = false;
    $("s-which").textContent = "full path (LLM) · writing…";
    $("s-escalated").hidden = true;
    $("s-labels").replaceChildren(h("span", { class: "muted" }, "pending"));
    $("s-action").replaceChildren(h("span", { class: "muted" }, "pending"));
    $("s-rationale").textContent = "";
    $("s-rationale").classList.add("streaming");
    $("s-rationale").dataset.chunks = "0";
    $("s-citations").replaceChildren(h("li", { class: "muted" }, "Citations follow the rationale."));
    $("s-evidence").replaceChildren();
    $("sug-card").dataset.streaming = "true";
  }

  function appendRationale(text) {
    const el = $("s-rationale");
    el.append(document.createTextNode(text));
    el.dataset.chunks = String(Number(el.dataset.chunks || 0) + 1);
  }

  $("btn-full").addEventListener("click", () => run($("btn-full"), async () => {
    const id = state.caseId;
    if (state.stream) state.stream.abort();
    const ctrl = new AbortController();
    state.stream = ctrl;
    $("btn-full").textContent = "Streaming…";
    let final = null;
    let problem = null;
    try {
      startStreaming();
      await apiStream(`/v1/cases/${id}/suggest/stream`, (name, data) => {
        if (name === "rationale") appendRationale(data.text);
        else if (name === "suggestion") final = data;
        else if (name === "error") problem = data;
      }, ctrl.signal);
      if (problem) throw new ApiError(problem.status, problem);
      if (!final) throw new ApiError(0, { title: "Stream cut", detail: "the stream ended without a suggestion" });
      const detail = await api("GET", `/v1/cases/${id}`);  // the stored suggestion, rendered like any other
      if (state.caseId === id) { state.detail = detail; renderCase(detail); }
    } catch (e) {
      if (e.name === "AbortError") return;  // another case was opened
      if (state.caseId === id && state.detail) renderCase(state.detail);  // back to the stored suggestion
      throw e;
    } finally {
      if (state.stream === ctrl) state.stream = null;
      $("btn-full").textContent = "Full suggestion (LLM)";
    }
  }));

  $("btn-next").addEventListener("click", nextCase);
  $("goto-form").addEventListener("submit", (ev) => {
    ev.preventDefault();
    const id = Number($("goto-id").value);
    if (id > 0) openCase(id);
  });

  // ------------------------------------------------------------------ policy
  $("search-form").addEventListener("submit", (ev) => {
    ev.preventDefault();
    const q = $("p-q").value.trim();
    if (!q) return;
    run(ev.submitter || null, async () => {
      const out = await api("GET", `/v1/policy/search?${new URLSearchParams({ q, k: "5" })}`);
      $("p-hits").replaceChildren(...out.hits.map((hit) => h("tr", {
        testid: "search-hit", dataset: { clauseId: hit.clause_id }, tabindex: "0",
        onclick: () => showClause(hit.clause_id, "policy-clause"),
        onkeydown: (e) => { if (e.key === "Enter") showClause(hit.clause_id, "policy-clause"); },
      },
      h("td", {}, h("code", {}, hit.clause_id)),
      h("td", {}, hit.title, h("span", { class: `muted small kind-${hit.kind}` }, ` ${hit.kind}`)),
      h("td", {}, hit.labels.map((l) => h("span", { class: "tag" }, l))),
      h("td", { class: "num" }, hit.score.toFixed(3)))));
      $("p-table").hidden = !out.hits.length;
      $("p-empty").hidden = out.hits.length > 0;
    });
  });

  $("ask-form").addEventListener("submit", (ev) => {
    ev.preventDefault();
    const question = $("a-q").value.trim();
    if (!question) return;
    run(ev.submitter || null, async () => {
      const out = await api("POST", "/v1/policy/ask", { question });
      $("a-out").hidden = false;
      $("a-abstained").hidden = !out.abstained;
      $("a-out").dataset.abstained = String(out.abstained);
      $("a-answer").textContent = out.answer;
      // a configured LLM that failed: the quoted clauses stand in, and the reviewer should know why
      $("a-fallback").hidden = !out.fallback_reason;
      $("a-fallback").textContent = out.fallback_reason ? `The LLM did not answer (${out.fallback_reason}); these are the best clauses, quoted.` : "";
      $("a-citations").replaceChildren(...(out.citations.length ? out.citations.map((ci) => citationItem(ci, "policy-clause")) : [h("li", { class: "muted" }, "No citations.")]));
    });
  });
  $("a-q").addEventListener("keydown", (ev) => {
    if (ev.key === "Enter" && (ev.ctrlKey || ev.metaKey)) $("ask-form").requestSubmit();
  });

  // ------------------------------------------------------------------ start
  fillLabelOptions();
  refreshStatus();
  loadQueue(true);
})();

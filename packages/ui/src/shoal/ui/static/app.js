// Shoal dashboard: the browser's key, RFC 9421 signing, and the glue to htmx.
//
// The key is a non-extractable Ed25519 CryptoKeyPair made with WebCrypto and
// kept in IndexedDB: scripts can ask it to sign, nobody can read its private
// half. Every request to /ui/f/ is signed exactly as shoal.client.SignedAuth
// signs: Content-Digest (sha-256) and ("@method" "@target-uri"
// "content-digest") with created, keyid, alg and a fresh nonce. htmx decides
// what to fetch and where it goes; the fetch itself happens here, signed
// (htmx:confirm hands it over). Live updates come through a signed fetch
// stream, since EventSource cannot sign: each `changed` event is fired on
// <body> as `shoal:changed`, which the live parts of a page listen to
// (hx-trigger="shoal:changed from:body").
"use strict";
(function () {
  const DB_NAME = "shoal-ui";
  const STORE = "keys";
  const DEVICE = "device";
  const encoder = new TextEncoder();
  let device = null; // {keyId, publicKey (base64), pair}

  // --- the key ---------------------------------------------------------

  function idb(mode, work) {
    return new Promise((resolve, reject) => {
      const open = indexedDB.open(DB_NAME, 1);
      open.onupgradeneeded = () => open.result.createObjectStore(STORE);
      open.onerror = () => reject(open.error);
      open.onsuccess = () => {
        const tx = open.result.transaction(STORE, mode);
        const request = work(tx.objectStore(STORE));
        tx.oncomplete = () => { open.result.close(); resolve(request.result); };
        tx.onerror = () => reject(tx.error);
      };
    });
  }

  function b64(bytes) {
    let text = "";
    for (const byte of new Uint8Array(bytes)) text += String.fromCharCode(byte);
    return btoa(text);
  }

  function hex(bytes) {
    return Array.from(new Uint8Array(bytes), (b) => b.toString(16).padStart(2, "0")).join("");
  }

  async function loadDevice() {
    let pair = await idb("readonly", (store) => store.get(DEVICE));
    if (!pair) {
      // extractable=false: the private key can sign but never be exported.
      pair = await crypto.subtle.generateKey({ name: "Ed25519" }, false, ["sign", "verify"]);
      await idb("readwrite", (store) => store.put(pair, DEVICE));
    }
    const raw = await crypto.subtle.exportKey("raw", pair.publicKey);
    const fingerprint = hex(await crypto.subtle.digest("SHA-256", raw)).slice(0, 16);
    return { keyId: "browser-" + fingerprint, publicKey: b64(raw), pair };
  }

  // --- RFC 9421 --------------------------------------------------------

  function targetUri(url) {
    const target = new URL(url, location.href);
    target.hash = "";
    if (target.search === "?") target.search = "";
    return target;
  }

  async function signHeaders(method, url, body) {
    const bytes = body == null ? new Uint8Array() : encoder.encode(body);
    const digest = "sha-256=:" + b64(await crypto.subtle.digest("SHA-256", bytes)) + ":";
    const created = Math.floor(Date.now() / 1000);
    const nonce = b64(crypto.getRandomValues(new Uint8Array(16))).replace(/[+/=]/g, (c) => ({ "+": "-", "/": "_", "=": "" })[c]);
    const params = '("@method" "@target-uri" "content-digest");created=' + created +
      ';keyid="' + device.keyId + '";alg="ed25519";nonce="' + nonce + '"';
    const base = '"@method": ' + method.toUpperCase() + "\n" +
      '"@target-uri": ' + url + "\n" +
      '"content-digest": ' + digest + "\n" +
      '"@signature-params": ' + params;
    const signature = await crypto.subtle.sign({ name: "Ed25519" }, device.pair.privateKey, encoder.encode(base));
    return {
      "Content-Digest": digest,
      "Signature-Input": "sig1=" + params,
      "Signature": "sig1=:" + b64(signature) + ":",
    };
  }

  async function signedFetch(method, url, body, options) {
    const target = targetUri(url);
    const headers = await signHeaders(method, target.href, body);
    if (body != null) headers["Content-Type"] = "application/json";
    const response = await fetch(target.href, Object.assign({ method, headers, body: body == null ? undefined : body, credentials: "omit", cache: "no-store" }, options || {}));
    if (response.status === 401) {
      const reason = await errorMessage(response.clone());
      showEnrolment(reason);
    }
    return response;
  }

  async function errorMessage(response) {
    try {
      const body = await response.json();
      return body.error.message;
    } catch (e) {
      return response.status + " " + response.statusText;
    }
  }

  // --- notices and enrolment --------------------------------------------

  function notify(text, isError) {
    const notice = document.getElementById("notice");
    notice.textContent = "";
    const line = document.createElement("p");
    line.className = isError ? "error" : "done";
    line.textContent = text;
    notice.appendChild(line);
  }

  function showEnrolment(reason) {
    document.getElementById("page").hidden = true;
    const panel = document.getElementById("enrol");
    panel.hidden = false;
    document.getElementById("enrol-reason").textContent = reason || "";
    document.getElementById("enrol-key-id").textContent = device.keyId;
    document.getElementById("enrol-public-key").textContent = device.publicKey;
    document.getElementById("enrol-command").textContent =
      "shoal keys authorize " + device.keyId + " " + device.publicKey + " --role viewer --data-dir <data-dir>";
    document.getElementById("enrol-line").textContent = "viewer " + device.keyId + " " + device.publicKey;
    document.getElementById("who").textContent = "not enrolled";
  }

  function isHtml(response) {
    return (response.headers.get("content-type") || "").startsWith("text/html");
  }

  async function start() {
    const page = document.getElementById("page");
    const fragment = page.dataset.fragment;
    // Who am I and the page's first fragment, at once: one round trip less.
    const [response, first] = await Promise.all([
      signedFetch("GET", "/ui/f/whoami"),
      fragment ? signedFetch("GET", fragment) : Promise.resolve(null),
    ]);
    if (!response.ok) return; // 401: enrolment is showing
    const who = await response.json();
    document.body.dataset.role = who.role;
    document.getElementById("who").textContent = who.key_id + " · " + who.role;
    document.getElementById("enrol").hidden = true;
    page.hidden = false;
    if (!first) { page.textContent = "No such page."; return; }
    if (!first.ok) { notify(await errorMessage(first), true); page.textContent = ""; return; }
    if (!isHtml(first)) { page.textContent = "No such page."; return; } // never text as markup
    const html = await first.text();
    followChanges();
    const content = document.createElement("div");
    content.id = "content";
    page.replaceChildren(content);
    htmx.swap(content, html, { swapStyle: "innerHTML", swapDelay: 0, settleDelay: 0 });
  }

  async function enrolWithCode(code) {
    // Signed with the key it enrols: the server checks that this browser holds it.
    const body = JSON.stringify({ code: code.trim(), key_id: device.keyId, public_key: device.publicKey });
    const response = await signedFetch("POST", "/ui/enrol", body);
    if (response.ok) {
      document.getElementById("enrol-code").value = "";
      await start();
    } else if (response.status !== 401) {
      document.getElementById("enrol-reason").textContent = await errorMessage(response);
    }
  }

  // --- htmx: every request goes through signedFetch ---------------------

  function valuesOf(elt, verb) {
    const values = {};
    const form = elt.tagName === "FORM" ? elt : (verb !== "get" ? elt.closest("form") : null);
    const include = elt.getAttribute("hx-include");
    for (const source of [form, include ? document.querySelector(include) : null]) {
      if (!source) continue;
      for (const [name, value] of new FormData(source)) values[name] = String(value);
    }
    const extra = elt.getAttribute("hx-vals");
    if (extra) Object.assign(values, JSON.parse(extra));
    return values;
  }

  // A path as the browser resolves it: "/ui/f/../../v1/x" is /v1/x, which is no fragment.
  function fragmentPath(path) {
    const resolved = new URL(path, location.origin);
    if (resolved.origin !== location.origin || !resolved.pathname.startsWith("/ui/f/")) return null;
    return resolved.pathname + resolved.search;
  }

  document.addEventListener("htmx:confirm", (evt) => {
    const detail = evt.detail;
    if (!detail.path) return;
    evt.preventDefault(); // every request is signed here, or not made at all
    const path = fragmentPath(detail.path);
    if (path === null) { notify("refused a request outside the dashboard: " + detail.path, true); return; }
    const elt = detail.elt;
    const verb = detail.verb.toLowerCase();
    const values = valuesOf(elt, verb);
    let url = path;
    let body = null;
    if (verb === "get") {
      const query = new URLSearchParams(values).toString();
      if (query) url += (url.includes("?") ? "&" : "?") + query;
    } else {
      body = JSON.stringify(values);
    }
    const target = detail.target;
    signedFetch(verb.toUpperCase(), url, body).then(async (response) => {
      const text = await response.text();
      if (!isHtml(response)) { // an error, or data: shown as text, never swapped in as markup
        if (!response.ok && response.status !== 401) notify(JSON.parse(text).error.message, true);
        return;
      }
      const swapStyle = elt.getAttribute("hx-swap") || "innerHTML";
      const select = elt.getAttribute("hx-select") || undefined;
      if (target && target.isConnected) htmx.swap(target, text, { swapStyle, swapDelay: 0, settleDelay: 0 }, { select });
    }).catch((error) => notify("request failed: " + error, true));
  });

  // --- streams: lines of a signed fetch, and the live stream -------------

  // Yield the text of a streamed response cut at `separator` ("\n", or
  // "\n\n" between server-sent events), as it arrives.
  async function* chunks(response, separator) {
    const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
    let buffer = "";
    for (;;) {
      const { value, done } = await reader.read();
      if (done) return;
      buffer += value;
      let end;
      while ((end = buffer.indexOf(separator)) >= 0) {
        yield buffer.slice(0, end);
        buffer = buffer.slice(end + separator.length);
      }
    }
  }

  // One stream per page, for the life of the page; reopened with backoff
  // (1 s doubling to 30 s) when it breaks, and the page's live parts are
  // refreshed then, since changes may have been missed meanwhile.
  let following = false;
  async function followChanges() {
    if (following) return;
    following = true;
    for (let opened = 0, delay = 1000; ; delay = Math.min(delay * 2, 30000)) {
      try {
        const response = await signedFetch("GET", "/ui/f/stream");
        if (response.status === 401) { following = false; return; } // enrolment is showing
        if (response.ok) {
          if (opened++) htmx.trigger(document.body, "shoal:changed", { objects: [] });
          delay = 500;
          for await (const block of chunks(response, "\n\n")) {
            const lines = block.split("\n");
            if (!lines.includes("event: changed")) continue; // comments: connected, heartbeat
            const data = lines.filter((line) => line.startsWith("data:")).map((line) => line.slice(5)).join("\n");
            htmx.trigger(document.body, "shoal:changed", { objects: JSON.parse(data) });
          }
        }
      } catch (error) {
        // the network or the node went away: try again after the delay
      }
      await new Promise((resolve) => setTimeout(resolve, delay));
    }
  }

  // --- logs: follow, filter, download ------------------------------------

  function startLogs(section) {
    if (section.dataset.started) return;
    section.dataset.started = "1";
    const out = section.querySelector("[data-log-lines]");
    const filter = section.querySelector("[data-log-filter]");
    const follow = section.querySelector("[data-log-follow]");
    const previous = section.querySelector("[data-log-previous]");
    const count = section.querySelector("[data-log-count]");
    const lines = [];
    let controller = null;

    function shown(text) {
      const needle = filter.value.trim().toLowerCase();
      return !needle || text.toLowerCase().includes(needle);
    }
    let visible = 0;
    function refreshCount() {
      count.textContent = visible + " of " + lines.length + " lines";
    }
    function add(entry) {
      const text = entry.time + " " + entry.stream + " " + entry.line;
      lines.push(text);
      const row = document.createElement("div");
      row.className = "line " + entry.stream;
      row.textContent = text;
      row.hidden = !shown(text);
      if (!row.hidden) visible++;
      out.appendChild(row);
      if (!row.hidden) row.scrollIntoView({ block: "nearest" });
    }
    async function read() {
      if (controller) controller.abort();
      controller = new AbortController();
      out.replaceChildren();
      lines.length = 0;
      visible = 0;
      // A previous run has ended: nothing to follow.
      follow.disabled = previous.checked;
      const url = section.dataset.logs + "?tail=1000" + (previous.checked
        ? "&previous=true"
        : "&follow=" + (follow.checked ? "true" : "false"));
      try {
        const response = await signedFetch("GET", url, null, { signal: controller.signal });
        if (!response.ok) { notify(await errorMessage(response), true); return; }
        for await (const line of chunks(response, "\n")) {
          if (line) add(JSON.parse(line));
          refreshCount();
        }
      } catch (error) {
        if (error.name !== "AbortError") notify("log stream ended: " + error, true);
      }
      refreshCount();
    }
    filter.addEventListener("input", () => {
      visible = 0;
      for (const row of out.children) {
        row.hidden = !shown(row.textContent);
        if (!row.hidden) visible++;
      }
      refreshCount();
    });
    follow.addEventListener("change", read);
    previous.addEventListener("change", read);
    section.querySelector("[data-log-download]").addEventListener("click", () => {
      const blob = new Blob([lines.filter(shown).join("\n") + "\n"], { type: "text/plain" });
      const link = document.createElement("a");
      link.href = URL.createObjectURL(blob);
      link.download = (section.dataset.name || "instance") + (previous.checked ? ".previous.log" : ".log");
      document.body.appendChild(link);
      link.click();
      link.remove();
      setTimeout(() => URL.revokeObjectURL(link.href), 1000);
    });
    section.addEventListener("htmx:beforeCleanupElement", () => controller && controller.abort());
    read();
  }

  document.addEventListener("htmx:load", (evt) => {
    const elt = evt.detail.elt;
    if (!(elt instanceof Element)) return;
    if (elt.matches("[data-logs]")) startLogs(elt);
    for (const section of elt.querySelectorAll("[data-logs]")) startLogs(section);
  });

  // --- start ------------------------------------------------------------

  window.shoalUi = { signedFetch, signHeaders, keyId: () => device && device.keyId };

  document.addEventListener("DOMContentLoaded", async () => {
    document.getElementById("enrol-retry").addEventListener("click", () => start());
    document.getElementById("enrol-code-form").addEventListener("submit", (evt) => {
      evt.preventDefault();
      enrolWithCode(document.getElementById("enrol-code").value);
    });
    try {
      device = await loadDevice();
    } catch (error) {
      document.getElementById("page").textContent =
        "This browser cannot keep an Ed25519 key (WebCrypto Ed25519 and IndexedDB are needed): " + error;
      return;
    }
    await start();
  });
})();

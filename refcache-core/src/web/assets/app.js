// refcache's task page: plain JS, no dependencies. The server renders each page; this file keeps it live over
// server-sent events (EventSource), with no polling loop.
"use strict";
(function () {
  const $ = (id) => document.getElementById(id);
  const TERMINAL = ["complete", "failed", "cancelled"];
  const el = (tag, cls, text) => {
    const e = document.createElement(tag);
    if (cls) e.className = cls;
    if (text !== undefined) e.textContent = text;
    return e;
  };
  const age = (iso) => {
    if (!iso) return "";
    const s = Math.max(0, Math.round((Date.now() - Date.parse(iso)) / 1000));
    if (s < 60) return s + " s";
    if (s < 3600) return Math.floor(s / 60) + " min";
    return Math.floor(s / 3600) + " h";
  };
  const eta = (t) => (t == null ? "" : t < 60 ? Math.ceil(t) + " s left" : Math.ceil(t / 60) + " min left");
  const pct = (t) => (t.percentage == null ? "" : Math.floor(t.percentage) + "%");
  const post = async (url, body) => {
    const r = await fetch(url, {
      method: "POST",
      headers: body ? { "Content-Type": "application/json" } : {},
      body: body ? JSON.stringify(body) : undefined,
      credentials: "same-origin",
    });
    const json = await r.json().catch(() => ({}));
    if (!r.ok) throw new Error(json.error || r.status + "");
    return json;
  };
  const live = (es, section) => {
    es.onopen = () => { $("live").textContent = "live"; section.dataset.live = "open"; };
    es.onerror = () => { if (section.dataset.live !== "ended") { $("live").textContent = "reconnecting"; section.dataset.live = "closed"; } };
  };

  // ---- the task list -------------------------------------------------------------------------------------------
  function listPage(section) {
    const body = document.querySelector("#tasks tbody");
    const filter = $("filter");
    const fill = (row, t) => {
      row.dataset.task = JSON.stringify(t);
      row.dataset.status = t.status;
      row.querySelector(".status").textContent = t.status;
      const bar = el("div", "meter");
      const f = el("div", "fill");
      f.style.width = (t.percentage == null ? (t.status === "complete" ? 100 : 0) : t.percentage) + "%";
      bar.appendChild(f);
      row.querySelector(".progress").replaceChildren(bar);
      row.querySelector(".pct").textContent = pct(t);
      row.querySelector(".eta").textContent = eta(t.eta_seconds);
      row.querySelector(".age").textContent = age(t.created_at);
      row.querySelector(".message").textContent = t.message || "";
      const actions = row.querySelector(".actions");
      actions.replaceChildren();
      if (!TERMINAL.includes(t.status)) {
        const b = el("button", "cancel", "Cancel");
        b.onclick = () => post("/api/tasks/" + t.ref_id + "/cancel").catch((e) => alert(e.message));
        actions.appendChild(b);
      }
      if (t.can_retry) {
        const b = el("button", "retry", "Retry");
        b.onclick = () => post("/api/tasks/" + t.ref_id + "/retry").catch((e) => alert(e.message));
        actions.appendChild(b);
      }
      row.hidden = !!filter.value && filter.value !== t.status;
    };
    const newRow = (t) => {
      const row = el("tr", "task");
      row.dataset.ref = t.ref_id;
      const link = el("a", null, t.name);
      link.href = "/tasks/" + t.ref_id;
      const first = el("td");
      first.appendChild(link);
      row.appendChild(first);
      for (const c of ["status", "progress", "pct", "eta", "age", "message", "actions"]) row.appendChild(el("td", c));
      body.prepend(row);
      return row;
    };
    const empty = () => { $("empty").hidden = body.querySelector("tr.task:not([hidden])") !== null; };
    for (const row of body.querySelectorAll("tr.task")) fill(row, JSON.parse(row.dataset.task));
    empty();
    filter.onchange = () => {
      for (const row of body.querySelectorAll("tr.task")) row.hidden = !!filter.value && filter.value !== row.dataset.status;
      const url = new URL(location.href);
      if (filter.value) url.searchParams.set("status", filter.value); else url.searchParams.delete("status");
      history.replaceState(null, "", url);
      empty();
    };
    filter.onchange();
    const es = new EventSource("/api/events");
    live(es, section);
    es.addEventListener("task", (e) => {
      const t = JSON.parse(e.data);
      const row = body.querySelector('tr[data-ref="' + CSS.escape(t.ref_id) + '"]') || newRow(t);
      fill(row, t);
      empty();
    });
    setInterval(() => {
      for (const row of body.querySelectorAll("tr.task")) row.querySelector(".age").textContent = age(JSON.parse(row.dataset.task).created_at);
    }, 1000);
    const run = $("run");
    if (run) {
      run.onsubmit = async (e) => {
        e.preventDefault();
        $("run-error").textContent = "";
        const args = $("args").value.split("\n").map((s) => s.trim()).filter((s) => s);
        try {
          const started = await post("/api/commands", { command: $("command").value, args });
          location.href = started.url;
        } catch (err) {
          $("run-error").textContent = err.message;
        }
      };
    }
  }

  // ---- one task ------------------------------------------------------------------------------------------------
  function taskPage(section) {
    const id = section.dataset.ref;
    const out = $("output");
    let page = 1;
    // The answer form of an input_required task: a field per property of the question's schema (a checkbox, a
    // choice, a number, a text), and a raw JSON box that, once opened, is sent as it is.
    const question = (q) => {
      if (section.dataset.question === q.key) return;
      section.dataset.question = q.key;
      $("question").textContent = q.message;
      $("answer-error").textContent = "";
      const box = $("answer-fields");
      box.replaceChildren();
      const schema = q.schema || {};
      const props = schema.properties || {};
      const required = schema.required || [];
      let covered = true;
      const sample = {};
      for (const [name, p] of Object.entries(props)) {
        let input;
        if (p.type === "boolean") {
          input = el("input");
          input.type = "checkbox";
          input.checked = p.default === true;
          sample[name] = input.checked;
        } else if (p.type === "string" && Array.isArray(p.enum)) {
          input = el("select");
          if (!required.includes(name)) input.appendChild(el("option", null, ""));
          for (const v of p.enum) { const o = el("option", null, v); o.value = v; input.appendChild(o); }
          if (p.default !== undefined) input.value = p.default;
          sample[name] = input.value;
        } else if (p.type === "number" || p.type === "integer") {
          input = el("input");
          input.type = "number";
          input.step = p.type === "integer" ? "1" : "any";
          if (p.minimum != null) input.min = p.minimum;
          if (p.maximum != null) input.max = p.maximum;
          if (p.default !== undefined) input.value = p.default;
          sample[name] = p.default !== undefined ? p.default : 0;
        } else if (p.type === "string") {
          input = el("input");
          input.type = p.format === "email" ? "email" : p.format === "date" ? "date" : "text";
          if (p.default !== undefined) input.value = p.default;
          sample[name] = input.value;
        } else {
          covered = false;
          continue;
        }
        input.name = name;
        input.id = "answer-" + name;
        input.dataset.kind = p.type;
        const label = el("label", "field");
        label.appendChild(el("span", "name", (p.title || name) + (required.includes(name) ? " *" : "")));
        if (p.description) label.appendChild(el("span", "hint", p.description));
        label.appendChild(input);
        box.appendChild(label);
      }
      $("answer-json").value = JSON.stringify(sample, null, 2);
      $("raw").open = !covered || Object.keys(props).length === 0;
    };
    const collect = () => {
      if ($("raw").open) {
        try { return JSON.parse($("answer-json").value); } catch (e) { throw new Error("the JSON answer does not parse: " + e.message); }
      }
      const answer = {};
      for (const input of $("answer-fields").querySelectorAll("[name]")) {
        const kind = input.dataset.kind;
        if (kind === "boolean") answer[input.name] = input.checked;
        else if (input.value === "") continue;
        else if (kind === "number" || kind === "integer") answer[input.name] = Number(input.value);
        else answer[input.name] = input.value;
      }
      return answer;
    };
    $("answer-form").onsubmit = async (e) => {
      e.preventDefault();
      $("answer-error").textContent = "";
      try {
        await post("/api/tasks/" + id + "/respond", { response: collect() });
        // The event stream tells the task's next status; this answer's snapshot may already be older than it.
        $("answer").hidden = true;
      } catch (err) {
        $("answer-error").textContent = err.message;
      }
    };
    const show = (t) => {
      section.dataset.status = t.status;
      const waiting = t.status === "input_required" && t.input;
      $("answer").hidden = !waiting;
      if (waiting) question(t.input);
      $("status").textContent = t.status;
      $("status").className = "status " + t.status;
      $("message").textContent = t.message || "";
      $("bar").style.width = (t.percentage == null ? (t.status === "complete" ? 100 : 0) : t.percentage) + "%";
      $("pct").textContent = pct(t);
      $("eta").textContent = eta(t.eta_seconds);
      $("cancel").hidden = TERMINAL.includes(t.status);
      $("retry").hidden = !t.can_retry;
      if (t.error) {
        $("failure").hidden = false;
        $("error").textContent = t.error + (t.error_code ? " (" + t.error_code + ")" : "");
        $("hint").textContent = t.remediation || "";
      }
    };
    const result = async () => {
      const r = await fetch("/api/tasks/" + id + (page > 1 || section.dataset.paged ? "?page=" + page : ""), { credentials: "same-origin" });
      const json = await r.json();
      if (!r.ok) { $("result-note").textContent = json.error; $("result").hidden = false; return; }
      if (json.task) { show(json.task); return; }
      $("result").hidden = false;
      const nav = $("pages");
      nav.replaceChildren();
      if (json.value !== undefined) {
        $("value").textContent = JSON.stringify(json.value, null, 2);
        $("result-note").textContent = json.size != null ? json.size + " bytes" : "";
      } else if (json.preview !== undefined) {
        $("value").textContent = JSON.stringify(json.preview, null, 2);
        $("result-note").textContent = json.message || "";
        const pages = json.total_pages;
        if (pages) {
          section.dataset.paged = "1";
          page = json.page;
          const go = (n, label) => {
            const b = el("button", n === page ? "page current" : "page", label);
            b.dataset.page = n;
            b.disabled = n < 1 || n > pages || n === page;
            b.onclick = () => { page = n; result(); };
            nav.appendChild(b);
          };
          go(page - 1, "‹ prev");
          const from = Math.max(1, page - 3), to = Math.min(pages, page + 3);
          for (let n = from; n <= to; n++) go(n, String(n));
          go(page + 1, "next ›");
          nav.appendChild(el("span", "of", "page " + page + " of " + pages));
        } else if (json.total_items) {
          // A sampled preview: get_cached_result pages through its items from page 1.
          const b = el("button", "page", "Page through the " + json.total_items + " items");
          b.dataset.page = 1;
          b.onclick = () => { page = 1; section.dataset.paged = "1"; result(); };
          nav.appendChild(b);
        }
      } else {
        $("result-note").textContent = json.message || "";
      }
    };
    show(JSON.parse(section.dataset.task));
    $("cancel").onclick = () => post("/api/tasks/" + id + "/cancel").then((j) => { $("message").textContent = j.message; }).catch((e) => alert(e.message));
    $("retry").onclick = () => post("/api/tasks/" + id + "/retry").then(() => location.reload()).catch((e) => alert(e.message));
    const es = new EventSource("/api/tasks/" + id + "/events");
    live(es, section);
    es.addEventListener("status", (e) => show(JSON.parse(e.data)));
    es.addEventListener("output", (e) => {
      const chunk = JSON.parse(e.data);
      const atEnd = out.scrollTop + out.clientHeight >= out.scrollHeight - 4;
      if (chunk.dropped > 0) $("dropped").textContent = "(" + chunk.dropped + " earlier bytes were dropped: the log keeps the newest)";
      out.appendChild(document.createTextNode(chunk.text));
      section.dataset.offset = chunk.next_offset;
      if (atEnd) out.scrollTop = out.scrollHeight;
    });
    es.addEventListener("end", () => {
      es.close();
      section.dataset.live = "ended";
      $("live").textContent = "finished";
      result();
    });
  }

  const list = $("list");
  if (list) listPage(list);
  const task = $("task");
  if (task) taskPage(task);
})();

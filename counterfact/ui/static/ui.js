// counterfact ui: a little script over server-rendered pages. Everything from a trace arrives
// as escaped HTML from the server or is set with textContent here: never as markup.
"use strict";

const token = document.querySelector('meta[name="counterfact-token"]')?.content || "";

async function post(url, body) {
  const response = await fetch(url, {
    method: "POST",
    headers: { "Content-Type": "application/json", "X-Counterfact-Token": token },
    body: JSON.stringify(body),
  });
  const data = await response.json().catch(() => ({}));
  if (!response.ok) {
    const detail = data.error || (Array.isArray(data.detail) ? data.detail.map((d) => `${d.loc.join(".")}: ${d.msg}`).join("; ") : data.detail);
    throw new Error(detail || `HTTP ${response.status}`);
  }
  return data;
}

function el(tag, attrs = {}, text = "") {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) node.setAttribute(key, value);
  if (text) node.textContent = text;
  return node;
}

// Follow a job's server-sent events: a progress bar, its messages, then its end.
function follow(job, box, onDone) {
  box.replaceChildren();
  const status = el("p", { class: "status" }, `${job.kind} ${job.id.slice(0, 8)}: queued`);
  const bar = el("div", { class: "progress" });
  const fill = el("span");
  bar.append(fill);
  const log = el("div", { class: "log" });
  box.append(status, bar, log);
  const source = new EventSource(`/api/jobs/${job.id}/events`);
  source.addEventListener("progress", (e) => {
    const event = JSON.parse(e.data);
    status.textContent = `${job.kind} ${job.id.slice(0, 8)}: ${event.done}/${event.total ?? "?"} replays`;
    if (event.total) fill.style.width = `${(100 * event.done) / event.total}%`;
  });
  source.addEventListener("message", (e) => log.append(el("div", {}, JSON.parse(e.data).text)));
  const end = async (e) => {
    source.close();
    const final = await (await fetch(`/api/jobs/${job.id}`)).json();
    fill.style.width = "100%";
    onDone(final, status);
  };
  source.addEventListener("done", end);
  source.addEventListener("failed", end);
}

async function loadTree(highlight) {
  const panel = document.getElementById("tree-panel");
  if (!panel) return;
  const body = document.getElementById("tree-body");
  const response = await fetch(`/runs/${panel.dataset.run}/tree?fragment=1`);
  body.innerHTML = await response.text(); // server-rendered and escaped
  body.classList.remove("muted");
  for (const id of highlight || []) body.querySelector(`li[data-run="${CSS.escape(id)}"]`)?.classList.add("new");
  wirePicks(body);
}

function wirePicks(root) {
  const button = root.querySelector("#compare-picked");
  if (!button) return;
  const picks = () => [...root.querySelectorAll("input.pick:checked")].map((i) => i.value);
  root.addEventListener("change", () => { button.disabled = picks().length !== 2; });
  button.addEventListener("click", () => {
    const [a, b] = picks();
    window.location.href = `/compare?a=${encodeURIComponent(a)}&b=${encodeURIComponent(b)}`;
  });
}

function wireStep(root) {
  const form = root.querySelector("#replay-form");
  if (!form) return;
  const templates = JSON.parse(root.querySelector("#edit-templates").textContent);
  const kind = form.querySelector("#edit-kind");
  const text = form.querySelector("#edit-text");
  const activation = form.querySelector("#activation-form");
  const fill = () => {
    text.value = templates[kind.value] || "";
    if (activation) activation.hidden = kind.value !== "activation";
  };
  kind.addEventListener("change", fill);
  fill();
  // The activation form writes the edit as JSON (which is YAML too) into the text box.
  activation?.addEventListener("input", () => {
    const field = (name) => activation.querySelector(`[name="${name}"]`).value;
    const edit = {
      kind: "activation",
      layers: field("layers").split(",").map((x) => x.trim()).filter(Boolean).map(Number),
      component: field("component"), positions: field("positions"),
      operation: field("operation"), strength: Number(field("strength")),
    };
    if (field("vector") === "captured") edit.vector = { captured: { run: field("vector_run"), step: Number(field("vector_step")) } };
    if (field("vector") === "contrastive") edit.vector = { contrastive: { positive: [field("positive")], negative: [field("negative")] } };
    text.value = JSON.stringify(edit, null, 1);
  });
  form.addEventListener("submit", async (e) => {
    e.preventDefault();
    const box = root.querySelector("#replay-job");
    const data = new FormData(form);
    try {
      const job = await post(`/api/runs/${form.dataset.run}/replays`, {
        at: form.dataset.step, edit: data.get("edit"), pairs: Number(data.get("pairs")),
        seed: Number(data.get("seed")), expect: data.get("expect") || null, model: data.get("model") || null,
      });
      follow(job, box, (final, status) => {
        if (final.status === "failed") { status.textContent = `replay failed: ${final.error}`; status.className = "error"; return; }
        const r = final.result;
        status.replaceChildren(el("span", { class: `verdict ${r.verdict}`, id: "verdict" }, r.verdict), document.createTextNode(`: ${r.reason}`));
        const runs = [...r.treatment, ...r.control].map((x) => x.run_id);
        loadTree(runs);
      });
    } catch (err) {
      box.replaceChildren(el("p", { class: "error" }, err.message));
    }
  });
}

async function openStep(runId, index, push) {
  const panel = document.getElementById("step-panel");
  const response = await fetch(`/runs/${runId}/steps/${index}?fragment=1`);
  if (!response.ok) { panel.replaceChildren(el("p", { class: "error" }, (await response.json()).error)); return; }
  panel.innerHTML = await response.text(); // server-rendered and escaped
  document.querySelectorAll("#timeline tr.selected").forEach((tr) => tr.classList.remove("selected"));
  document.querySelector(`#timeline a[data-step="${index}"]`)?.closest("tr")?.classList.add("selected");
  if (push) history.replaceState(null, "", `#step-${index}`);
  wireStep(panel);
}

function wireRun() {
  const run = document.getElementById("run");
  if (!run) return;
  const runId = run.dataset.run;
  document.getElementById("timeline")?.addEventListener("click", (e) => {
    const link = e.target.closest("a.step-link") || e.target.closest("tr")?.querySelector("a.step-link");
    if (!link) return;
    e.preventDefault();
    openStep(runId, link.dataset.step, true);
  });
  reattach(runId);
  const match = location.hash.match(/^#step-(\d+)$/);
  if (match) openStep(runId, match[1], false);
  const debug = document.getElementById("debug-form");
  debug?.addEventListener("submit", async (e) => {
    e.preventDefault();
    const data = new FormData(debug);
    const box = document.getElementById("debug-job");
    try {
      const job = await post(`/api/runs/${runId}/debug`, {
        strategies: String(data.get("strategies")).split(",").map((s) => s.trim()).filter(Boolean),
        budget: Number(data.get("budget")), expect: data.get("expect") || null,
      });
      follow(job, box, (final, status) => {
        if (final.status === "failed") { status.textContent = `debug session failed: ${final.error}`; status.className = "error"; return; }
        const link = el("a", { href: `/debug/${final.result.session_id}` }, `debug session ${final.result.session_id.slice(0, 12)}`);
        status.replaceChildren(link, document.createTextNode(`: ${final.result.validated} of ${final.result.hypotheses} hypotheses validated`));
        loadTree();
      });
    } catch (err) {
      box.replaceChildren(el("p", { class: "error" }, err.message));
    }
  });
}

// A job started before the page was (re)loaded: follow it again.
async function reattach(runId) {
  const response = await fetch(`/api/jobs?run=${encodeURIComponent(runId)}`);
  if (!response.ok) return;
  for (const job of await response.json()) {
    if (job.status !== "queued" && job.status !== "running") continue;
    const box = document.getElementById(job.kind === "debug" ? "debug-job" : "step-panel");
    if (!box) continue;
    follow(job, box, (final, status) => {
      status.textContent = final.status === "failed" ? `${job.kind} failed: ${final.error}` : `${job.kind} ${job.id.slice(0, 8)} done`;
      loadTree();
    });
  }
}

// The first page of the runs list follows new runs as they are recorded.
function wireRunsList() {
  const table = document.getElementById("runs");
  if (!table || table.dataset.live !== "yes") return;
  const body = document.getElementById("runs-body");
  const query = new URLSearchParams(location.search);
  query.set("fragment", "1");
  setInterval(async () => {
    if (document.hidden) return;
    const response = await fetch(`/?${query}`);
    if (!response.ok) return;
    const html = await response.text();
    if (html !== body.dataset.last) { body.innerHTML = html; body.dataset.last = html; } // server-escaped
  }, 3000);
}

document.addEventListener("DOMContentLoaded", () => {
  wireRunsList();
  wireRun();
  if (document.getElementById("step") && !document.getElementById("run")) wireStep(document);
  const tree = document.getElementById("tree");
  if (tree && !document.getElementById("tree-panel")) wirePicks(tree);
  loadTree();
});

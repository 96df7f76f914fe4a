// The page is a client of the same REST API as everyone else: GET /api/models, POST .../predict.
"use strict";
const $ = (id) => document.getElementById(id);
let models = [];
let current = null;
let lastImage = null;      // the Blob last sent, so "run" re-runs it with new options
let token = sessionStorage.getItem("lensforge-token") || "";

function headers() { return token ? { Authorization: "Bearer " + token } : {}; }

function showError(message) {
  const e = $("error");
  e.textContent = message;
  e.hidden = !message;
}

async function api(path, init = {}) {
  let resp;
  try {
    resp = await fetch(path, { ...init, headers: { ...headers(), ...(init.headers || {}) } });
  } catch (err) {
    throw new Error("cannot reach the server (" + err.message + ")");
  }
  let body = null;
  try { body = await resp.json(); } catch (_) { /* not JSON */ }
  if (resp.status === 401) $("token-box").hidden = false;
  if (!resp.ok) {
    throw new Error((body && body.error) || ("request failed with HTTP " + resp.status));
  }
  return body;
}

async function loadModels() {
  try {
    models = await api("/api/models");
  } catch (err) {
    showError(err.message);
    return;
  }
  showError("");
  const sel = $("model");
  sel.innerHTML = "";
  for (const m of models) {
    const o = document.createElement("option");
    o.value = m.name;
    o.textContent = m.name + " (" + m.task + ")";
    sel.appendChild(o);
  }
  if (models.length) selectModel(models[0].name);
}

function selectModel(name) {
  current = models.find((m) => m.name === name);
  lastImage = null;
  clearOutput();
  const info = [current.task, current.model];
  if (current.classes) info.push(current.classes.length + " classes");
  if (current.input_size) info.push(current.input_size.join("x") + " px");
  $("model-info").textContent = info.filter(Boolean).join(" · ");
  $("image-input").hidden = current.accepts !== "image";
  $("draw-box").hidden = !current.draw;
  $("run").textContent = current.accepts === "image" ? "run again" : "generate";
  buildOptions(current.options);
  clearCanvas();
}

function buildOptions(options) {
  const form = $("options");
  form.innerHTML = "";
  for (const o of options) {
    const label = document.createElement("label");
    label.textContent = o.name.replace(/_/g, " ");
    label.htmlFor = "opt-" + o.name;
    let input;
    if (o.choices) {
      input = document.createElement("select");
      if (o.nullable) input.appendChild(new Option("(default)", ""));
      for (const c of o.choices) input.appendChild(new Option(String(c), String(c)));
      if (o.default !== null) input.value = String(o.default);
    } else if (o.type === "boolean") {
      input = document.createElement("select");
      if (o.nullable) input.appendChild(new Option("(as trained)", ""));
      input.appendChild(new Option("yes", "true"));
      input.appendChild(new Option("no", "false"));
      if (o.default !== null) input.value = String(o.default);
    } else {
      input = document.createElement("input");
      input.type = o.type === "string" ? "text" : "number";
      if (o.type === "integer") input.step = "1";
      if (o.type === "number") input.step = "any";
      if (o.minimum !== null) input.min = o.minimum;
      if (o.maximum !== null) input.max = o.maximum;
      if (o.default !== null) input.value = o.default;
      else input.placeholder = "default";
    }
    input.id = "opt-" + o.name;
    input.dataset.name = o.name;
    input.dataset.type = o.type;
    form.appendChild(label);
    form.appendChild(input);
    const help = document.createElement("div");
    help.className = "help";
    help.textContent = o.help;
    form.appendChild(help);
  }
}

function readOptions() {
  const out = {};
  for (const el of $("options").querySelectorAll("[data-name]")) {
    if (el.value === "") continue;
    const t = el.dataset.type;
    if (t === "boolean") out[el.dataset.name] = el.value === "true";
    else if (t === "integer" || t === "number") out[el.dataset.name] = Number(el.value);
    else out[el.dataset.name] = el.value;
  }
  return out;
}

function clearOutput() {
  $("result").innerHTML = "";
  $("images").innerHTML = "";
  showError("");
}

async function predict(blob, filename) {
  if (!current) return;
  const form = new FormData();
  if (blob) form.append("image", blob, filename || "image.png");
  form.append("options", JSON.stringify(readOptions()));
  $("status").textContent = "working…";
  try {
    const body = await api("/api/models/" + encodeURIComponent(current.name) + "/predict",
                           { method: "POST", body: form });
    clearOutput();
    render(body);
    $("status").textContent = "done in " + body.seconds.toFixed(3) + " s";
  } catch (err) {
    clearOutput();
    showError(err.message);
    $("status").textContent = "";
  }
}

function bars(top) {
  const box = document.createElement("div");
  top.forEach((t, i) => {
    const row = document.createElement("div");
    row.className = "bar-row" + (i === 0 ? " top" : "");
    const name = document.createElement("span");
    name.textContent = t.label;
    name.className = "bar-label";
    const bar = document.createElement("div");
    bar.className = "bar";
    const fill = document.createElement("div");
    fill.style.width = (100 * t.confidence).toFixed(1) + "%";
    bar.appendChild(fill);
    const pct = document.createElement("span");
    pct.textContent = (100 * t.confidence).toFixed(1) + "%";
    row.append(name, bar, pct);
    box.appendChild(row);
  });
  return box;
}

function table(rows, columns) {
  const t = document.createElement("table");
  const head = t.insertRow();
  for (const c of columns) { const th = document.createElement("th"); th.textContent = c; head.appendChild(th); }
  for (const r of rows) {
    const tr = t.insertRow();
    for (const c of columns) tr.insertCell().textContent = r[c];
  }
  return t;
}

function render(body) {
  const res = body.result;
  const out = $("result");
  if (res.top) {
    const label = document.createElement("div");
    label.id = "top-label";
    label.textContent = res.label;
    out.appendChild(label);
    out.appendChild(bars(res.top));
  } else if (res.detections) {
    const p = document.createElement("p");
    p.id = "summary";
    p.textContent = res.detections.length + " object(s) found";
    out.appendChild(p);
    out.appendChild(table(res.detections.map((d) => ({ label: d.label, confidence: d.confidence.toFixed(3),
      box: d.box.join(", ") })), ["label", "confidence", "box"]));
  } else if (res.share) {
    out.appendChild(table(Object.entries(res.share).map(([k, v]) => ({ class: k, share: (100 * v).toFixed(1) + "%" })),
      ["class", "share"]));
  } else {
    out.appendChild(table(Object.entries(res).map(([k, v]) => ({ name: k, value: typeof v === "number" ?
      +v.toFixed(5) : (v !== null && typeof v === "object" ? JSON.stringify(v) : String(v)) })), ["name", "value"]));
  }
  for (const [name, b64] of Object.entries(body.images)) {
    const fig = document.createElement("figure");
    const img = document.createElement("img");
    img.src = "data:image/png;base64," + b64;
    img.alt = name;
    const cap = document.createElement("figcaption");
    cap.textContent = name;
    fig.append(img, cap);
    $("images").appendChild(fig);
  }
}

// ---------------------------------------------------------------- drawing canvas
const canvas = $("canvas");
const ctx = canvas.getContext("2d");
let drawing = false;
let inked = false;

function clearCanvas() {
  ctx.fillStyle = "#fff";
  ctx.fillRect(0, 0, canvas.width, canvas.height);
  inked = false;
}

function point(ev) {
  const r = canvas.getBoundingClientRect();
  return [(ev.clientX - r.left) * canvas.width / r.width, (ev.clientY - r.top) * canvas.height / r.height];
}

canvas.addEventListener("pointerdown", (ev) => {
  drawing = true;
  canvas.setPointerCapture(ev.pointerId);
  const [x, y] = point(ev);
  ctx.beginPath();
  ctx.moveTo(x, y);
  ctx.lineTo(x + 0.1, y + 0.1);
  ctx.strokeStyle = "#000";
  ctx.lineWidth = 22;
  ctx.lineCap = "round";
  ctx.lineJoin = "round";
  ctx.stroke();
  inked = true;
});
canvas.addEventListener("pointermove", (ev) => {
  if (!drawing) return;
  const [x, y] = point(ev);
  ctx.lineTo(x, y);
  ctx.stroke();
});
canvas.addEventListener("pointerup", () => { drawing = false; });

function predictDrawing() {
  if (!inked) { showError("draw something first"); return; }
  canvas.toBlob((blob) => { lastImage = [blob, "drawing.png"]; predict(blob, "drawing.png"); }, "image/png");
}

$("clear").addEventListener("click", () => { clearCanvas(); clearOutput(); });
$("predict-drawing").addEventListener("click", predictDrawing);
$("file").addEventListener("change", () => {
  const f = $("file").files[0];
  if (!f) return;
  lastImage = [f, f.name];
  predict(f, f.name);
});
$("run").addEventListener("click", () => {
  if (!current) return;
  if (current.accepts === "image") {
    if (!lastImage) { showError("upload an image first"); return; }
    predict(lastImage[0], lastImage[1]);
  } else {
    predict(null);
  }
});
$("model").addEventListener("change", (ev) => selectModel(ev.target.value));
$("token-save").addEventListener("click", () => {
  token = $("token").value;
  sessionStorage.setItem("lensforge-token", token);
  $("token-box").hidden = true;
  loadModels();
});

clearCanvas();
loadModels();

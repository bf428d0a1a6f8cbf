// attnseg web page: one request per change (POST /api/segment, format=json with the label PNG inside),
// the label PNG drawn as an overlay; its colours map back to class indices for the legend and the hover.
"use strict";
const $ = (id) => document.getElementById(id);
const state = { models: [], file: null, labels: [], result: null, indexOf: new Map(), pngUrl: null, busy: 0 };

function showError(message) {
  const box = $("error");
  box.textContent = message;
  box.hidden = !message;
}

async function api(path, options) {
  let response;
  try {
    response = await fetch(path, options);
  } catch (e) {
    throw new Error("the server cannot be reached (" + e.message + ")");
  }
  if (!response.ok) {
    let text = response.status + " " + response.statusText;
    try { text = (await response.json()).error || text; } catch (e) { /* not JSON */ }
    throw new Error(text);
  }
  return response.json();
}

function current() { return state.models.find((m) => m.name === $("model").value); }

function renderChips() {
  const box = $("chips");
  box.replaceChildren();
  state.labels.forEach((label, i) => {
    const chip = document.createElement("span");
    chip.className = "chip";
    chip.dataset.label = label;
    const text = document.createElement("span");
    text.textContent = label;
    const left = button("\u2190", "move " + label + " left", () => move(i, -1));
    const right = button("\u2192", "move " + label + " right", () => move(i, 1));
    const remove = button("\u00d7", "remove " + label, () => { state.labels.splice(i, 1); changed(); });
    remove.className = "remove";
    chip.append(left, text, right, remove);
    box.append(chip);
  });
}

function button(text, title, onclick) {
  const b = document.createElement("button");
  b.type = "button"; b.textContent = text; b.title = title; b.setAttribute("aria-label", title);
  b.addEventListener("click", onclick);
  return b;
}

function move(i, d) {
  const j = i + d;
  if (j < 0 || j >= state.labels.length) return;
  [state.labels[i], state.labels[j]] = [state.labels[j], state.labels[i]];
  changed();
}

function addLabel() {
  const input = $("label-input");
  const value = input.value.trim();
  if (!value) return;
  if (state.labels.includes(value)) { showError("labels: " + value + " is already in the list"); return; }
  state.labels.push(value);
  input.value = "";
  changed();
}

function modelChanged() {
  const m = current();
  if (!m) return;
  $("model-info").textContent = (m.architecture || "") + (m.language_driven ? " \u00b7 type any labels"
    : " \u00b7 " + (m.class_names || []).length + " classes");
  $("labels-box").hidden = !m.language_driven;
  if (m.language_driven && state.labels.length === 0) state.labels = (m.default_labels || []).slice();
  $("isr-box").hidden = !m.isr;
  const isr = $("isr");
  isr.replaceChildren();
  (m.isr_settings || []).forEach((s, i) => {
    const o = document.createElement("option");
    o.value = s; o.textContent = i === 0 ? s + " (off)" : s;
    isr.append(o);
  });
  changed();
}

function changed() {
  renderChips();
  segment();
}

async function segment() {
  const m = current();
  if (!state.file || !m) return;
  const form = new FormData();
  form.append("image", state.file);
  form.append("model", m.name);
  form.append("format", "json");
  form.append("include_mask", "true");
  if (m.language_driven) form.append("labels", state.labels.join(","));
  if (m.isr) form.append("isr", $("isr").value);
  const ticket = ++state.busy;
  $("status").textContent = "segmenting\u2026";
  showError("");
  try {
    const result = await api("/api/segment", { method: "POST", body: form });
    if (ticket !== state.busy) return;  // a newer request is on its way
    await draw(result);
    $("status").textContent = result.width + "\u00d7" + result.height + " \u00b7 model " + result.latency_ms +
      " ms \u00b7 queue " + result.queue_ms + " ms" + (result.isr ? " \u00b7 ISR " + result.isr : "");
    $("status").dataset.latency = result.latency_ms;
  } catch (e) {
    if (ticket !== state.busy) return;
    $("status").textContent = "";
    showError(e.message);
  }
}

function draw(result) {
  return new Promise((resolve, reject) => {
    const img = new Image();
    img.onload = () => {
      const canvas = $("mask");
      canvas.width = img.width; canvas.height = img.height;
      const ctx = canvas.getContext("2d", { willReadFrequently: true });
      ctx.drawImage(img, 0, 0);
      state.result = result;
      state.pixels = ctx.getImageData(0, 0, img.width, img.height).data;
      state.indexOf = new Map(result.classes.map((c) => [c.color.join(","), c]));
      if (state.pngUrl) URL.revokeObjectURL(state.pngUrl);
      const bytes = Uint8Array.from(atob(result.label_png), (ch) => ch.charCodeAt(0));
      state.pngUrl = URL.createObjectURL(new Blob([bytes], { type: "image/png" }));
      $("download").disabled = false;
      legend(result);
      resolve();
    };
    img.onerror = () => reject(new Error("the label map could not be decoded"));
    img.src = "data:image/png;base64," + result.label_png;
  });
}

function legend(result) {
  const body = $("legend").querySelector("tbody");
  body.replaceChildren();
  for (const c of result.classes) {
    const tr = document.createElement("tr");
    tr.dataset.name = c.name;
    const sw = document.createElement("td");
    const box = document.createElement("div");
    box.className = "swatch";
    box.style.background = "rgb(" + c.color.join(",") + ")";
    sw.append(box);
    const name = document.createElement("td");
    name.textContent = c.name;
    const share = document.createElement("td");
    share.textContent = (100 * c.share).toFixed(1) + "%";
    tr.append(sw, name, share);
    body.append(tr);
  }
}

function hover(event) {
  const canvas = $("mask"), tip = $("hover");
  if (!state.result || !state.pixels) return;
  const rect = canvas.getBoundingClientRect();
  const x = Math.floor((event.clientX - rect.left) / rect.width * canvas.width);
  const y = Math.floor((event.clientY - rect.top) / rect.height * canvas.height);
  if (x < 0 || y < 0 || x >= canvas.width || y >= canvas.height) { tip.hidden = true; return; }
  const k = 4 * (y * canvas.width + x);
  const c = state.indexOf.get([state.pixels[k], state.pixels[k + 1], state.pixels[k + 2]].join(","));
  tip.textContent = c ? c.name : "";
  tip.style.left = (event.clientX - rect.left + 12) + "px";
  tip.style.top = (event.clientY - rect.top + 12) + "px";
  tip.hidden = !c;
}

function setFile(file) {
  if (!file) return;
  state.file = file;
  const photo = $("photo");
  if (photo.src) URL.revokeObjectURL(photo.src);
  photo.src = URL.createObjectURL(file);
  segment();
}

async function init() {
  $("model").addEventListener("change", () => { state.labels = []; modelChanged(); });
  $("isr").addEventListener("change", segment);
  $("label-add").addEventListener("click", addLabel);
  $("label-input").addEventListener("keydown", (e) => { if (e.key === "Enter") { e.preventDefault(); addLabel(); } });
  $("opacity").addEventListener("input", () => { $("mask").style.opacity = $("opacity").value / 100; });
  $("mask").style.opacity = $("opacity").value / 100;
  $("file").addEventListener("change", (e) => setFile(e.target.files[0]));
  const drop = $("drop");
  drop.addEventListener("dragover", (e) => { e.preventDefault(); drop.classList.add("over"); });
  drop.addEventListener("dragleave", () => drop.classList.remove("over"));
  drop.addEventListener("drop", (e) => { e.preventDefault(); drop.classList.remove("over"); setFile(e.dataTransfer.files[0]); });
  $("mask").addEventListener("mousemove", hover);
  $("mask").addEventListener("mouseleave", () => { $("hover").hidden = true; });
  $("download").addEventListener("click", () => {
    if (!state.pngUrl) return;
    const a = document.createElement("a");
    a.href = state.pngUrl;
    a.download = (state.file && state.file.name ? state.file.name.replace(/\.[^.]+$/, "") : "label") + ".png";
    document.body.append(a); a.click(); a.remove();
  });
  try {
    state.models = await api("/api/models");
  } catch (e) { showError("cannot list the models: " + e.message); return; }
  for (const m of state.models) {
    const o = document.createElement("option");
    o.value = m.name; o.textContent = m.name;
    $("model").append(o);
  }
  modelChanged();
}

init();

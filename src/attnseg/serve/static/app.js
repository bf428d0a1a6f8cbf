// attnseg web page. One request per change (POST /api/segment as JSON, format=json with the label PNG inside);
// label edits are debounced and a newer request aborts the one in flight (the server drops it from its queue).
// The label PNG is drawn as an overlay; its colours map back to classes for the legend and the hover or tap.
"use strict";
const $ = (id) => document.getElementById(id);
const DEBOUNCE_MS = 350;
const state = {
  models: [], limits: null, file: null, upload: null, uploadNote: "", labels: [], result: null,
  indexOf: new Map(), pngUrl: null, colours: new Map(), controller: null, timer: null,
};

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
    if (e.name === "AbortError") throw e;
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
    const chip = document.createElement("li");
    chip.className = "chip";
    chip.dataset.label = label;
    const colour = state.colours.get(label.toLowerCase());
    if (colour) chip.style.setProperty("--chip", "rgb(" + colour.join(",") + ")");
    const text = document.createElement("span");
    text.textContent = label;
    const left = button("\u2190", "move " + label + " left", () => move(i, -1));
    const right = button("\u2192", "move " + label + " right", () => move(i, 1));
    const remove = button("\u00d7", "remove " + label, () => { state.labels.splice(i, 1); changed(true); });
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
  changed(true);
}

function addLabel() {
  const input = $("label-input");
  const value = input.value.trim();
  if (!value) return;
  if (state.labels.some((l) => l.toLowerCase() === value.toLowerCase())) {
    showError("labels: " + value + " is already in the list");
    return;
  }
  state.labels.push(value);
  input.value = "";
  changed(true);
}

function modelChanged() {
  const m = current();
  if (!m) return;
  const info = $("model-info");
  info.replaceChildren();
  const line = document.createElement("div");
  line.textContent = (m.architecture || "") + (m.language_driven ? " \u00b7 type any labels"
    : " \u00b7 " + (m.class_names || []).length + " classes: " + (m.class_names || []).join(", "));
  info.append(line);
  if (m.card) {  // what the model is for: a portrait still gets street-scene classes
    const use = document.createElement("div");
    use.textContent = "For: " + m.card.intended_use + ". " + m.card.limits;
    info.append(use);
  }
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
  clearResult();
  changed(false);
}

// label edits wait for a pause; a new photo, model or ISR setting runs at once
function changed(debounce) {
  renderChips();
  clearTimeout(state.timer);
  if (debounce) state.timer = setTimeout(segment, DEBOUNCE_MS);
  else segment();
}

function clearResult() {
  state.result = null; state.pixels = null;
  const canvas = $("mask");
  canvas.getContext("2d").clearRect(0, 0, canvas.width, canvas.height);
  $("legend").querySelector("tbody").replaceChildren();
  $("download").disabled = true;
  if (state.pngUrl) { URL.revokeObjectURL(state.pngUrl); state.pngUrl = null; }
  $("hover").hidden = true;
}

async function segment() {
  const m = current();
  if (!state.upload || !m) return;
  if (m.language_driven && state.labels.length === 0) {
    if (state.controller) state.controller.abort();
    clearResult();
    $("status").textContent = "";
    showError("labels: add at least one label");
    return;
  }
  const body = { image: state.upload, model: m.name, format: "json", include_mask: true };
  if (m.language_driven) body.labels = state.labels;
  if (m.isr) body.isr = $("isr").value;
  if (state.controller) state.controller.abort();  // the superseded request: the server drops it
  const controller = state.controller = new AbortController();
  $("status").textContent = "segmenting\u2026";
  $("stage").classList.add("busy");
  showError("");
  const t0 = performance.now();
  try {
    const result = await api("/api/segment", {
      method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(body),
      signal: controller.signal,
    });
    if (controller !== state.controller) return;
    await draw(result);
    if (state.focusResult) { state.focusResult = false; $("view").focus(); }  // after choosing a photo
    const roundTrip = Math.round(performance.now() - t0);
    $("status").textContent = result.width + "\u00d7" + result.height + state.uploadNote + " \u00b7 model " +
      Math.round(result.latency_ms) + " ms \u00b7 server " + Math.round(result.total_ms) + " ms \u00b7 round trip " +
      roundTrip + " ms" + (result.isr ? " \u00b7 ISR " + result.isr : "");
    $("status").dataset.latency = result.latency_ms;
    $("status").dataset.roundTrip = roundTrip;
  } catch (e) {
    if (e.name === "AbortError" || controller !== state.controller) return;
    clearResult();  // never show the previous photo's result beside this error
    $("status").textContent = "";
    showError(e.message);
  } finally {
    if (controller === state.controller) $("stage").classList.remove("busy");
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
      state.indexOf = new Map(result.classes.filter((c) => c.share > 0).map((c) => [c.color.join(","), c]));
      for (const c of result.classes) state.colours.set(c.name.toLowerCase(), c.color);
      if (state.pngUrl) URL.revokeObjectURL(state.pngUrl);
      const bytes = Uint8Array.from(atob(result.label_png), (ch) => ch.charCodeAt(0));
      state.pngUrl = URL.createObjectURL(new Blob([bytes], { type: "image/png" }));
      state.pngName = (state.file && state.file.name ? state.file.name.replace(/\.[^.]+$/, "") : "label") + ".png";
      $("download").disabled = false;
      legend(result);
      renderChips();
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
    if (c.share === 0) tr.className = "absent";  // listed, greyed: a label no pixel took
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

function pointAt(event) {
  const canvas = $("mask"), tip = $("hover");
  if (!state.result || !state.pixels) return;
  const rect = canvas.getBoundingClientRect();
  const x = Math.floor((event.clientX - rect.left) / rect.width * canvas.width);
  const y = Math.floor((event.clientY - rect.top) / rect.height * canvas.height);
  if (x < 0 || y < 0 || x >= canvas.width || y >= canvas.height) { tip.hidden = true; return; }
  const k = 4 * (y * canvas.width + x);
  const c = state.indexOf.get([state.pixels[k], state.pixels[k + 1], state.pixels[k + 2]].join(","));
  tip.textContent = c ? c.name : "";
  tip.style.left = Math.min(event.clientX - rect.left + 12, rect.width - 80) + "px";
  tip.style.top = (event.clientY - rect.top + 12) + "px";
  tip.hidden = !c;
}

// A photo over the server's pixel limit (a 48 MP phone shot) is scaled down here before upload; the status
// says the size it was sent at. The label map comes back at the size sent.
async function prepare(file) {
  const max = state.limits ? state.limits.max_pixels : Infinity;
  const maxBytes = state.limits ? state.limits.max_upload_mb * 1e6 : Infinity;
  let bitmap = null;
  try { bitmap = await createImageBitmap(file); } catch (e) { /* let the server name what it is */ }
  const pixels = bitmap ? bitmap.width * bitmap.height : 0;
  if (!bitmap || (pixels <= max && file.size <= maxBytes * 0.74)) {  // base64 grows the body by a third
    if (bitmap) bitmap.close();
    return { data: await toBase64(file), note: "" };
  }
  const f = Math.min(1, Math.sqrt(max / pixels) * 0.999, Math.sqrt(12e6 / pixels));
  const w = Math.max(1, Math.floor(bitmap.width * f)), h = Math.max(1, Math.floor(bitmap.height * f));
  const canvas = document.createElement("canvas");
  canvas.width = w; canvas.height = h;
  canvas.getContext("2d").drawImage(bitmap, 0, 0, w, h);
  const note = " (sent scaled from " + bitmap.width + "\u00d7" + bitmap.height + ")";
  bitmap.close();
  const blob = await new Promise((resolve) => canvas.toBlob(resolve, "image/jpeg", 0.92));
  return { data: await toBase64(blob), note };
}

function toBase64(blob) {
  return new Promise((resolve, reject) => {
    const reader = new FileReader();
    reader.onload = () => resolve(String(reader.result).split(",", 2)[1]);
    reader.onerror = () => reject(new Error("the file could not be read"));
    reader.readAsDataURL(blob);
  });
}

async function setFile(file) {
  if (!file) return;
  state.file = file;
  state.focusResult = true;  // keyboard and screen-reader users land on the result when it arrives
  clearResult();  // the old mask never lies over the new photo
  const photo = $("photo");
  if (photo.src && photo.src.startsWith("blob:")) URL.revokeObjectURL(photo.src);
  photo.src = URL.createObjectURL(file);
  photo.alt = "the photo being segmented: " + file.name;
  delete photo.dataset.empty;
  $("status").textContent = "reading the photo\u2026";
  try {
    const prepared = await prepare(file);
    if (state.file !== file) return;
    state.upload = prepared.data; state.uploadNote = prepared.note;
  } catch (e) { showError(e.message); return; }
  segment();
}

async function init() {
  $("photo").dataset.empty = "";
  if (matchMedia("(pointer: coarse)").matches || navigator.maxTouchPoints > 0) {
    document.body.classList.add("touch");  // phones: no "drop one here", a tap names a class
  }
  $("model").addEventListener("change", () => { state.labels = []; modelChanged(); });
  $("isr").addEventListener("change", () => changed(false));
  $("label-add").addEventListener("click", addLabel);
  $("label-input").addEventListener("keydown", (e) => { if (e.key === "Enter") { e.preventDefault(); addLabel(); } });
  $("opacity").addEventListener("input", () => { $("mask").style.opacity = $("opacity").value / 100; });
  $("mask").style.opacity = $("opacity").value / 100;
  $("file").addEventListener("change", (e) => setFile(e.target.files[0]));
  $("file").addEventListener("keydown", (e) => {  // Space opens it natively; Enter too, as on a button
    if (e.key === "Enter") { e.preventDefault(); $("file").click(); }
  });
  const drop = $("drop");
  drop.addEventListener("dragover", (e) => { e.preventDefault(); drop.classList.add("over"); });
  drop.addEventListener("dragleave", () => drop.classList.remove("over"));
  drop.addEventListener("drop", (e) => { e.preventDefault(); drop.classList.remove("over"); setFile(e.dataTransfer.files[0]); });
  $("mask").addEventListener("pointermove", pointAt);
  $("mask").addEventListener("pointerdown", pointAt);  // a tap on a phone shows the class too
  $("mask").addEventListener("pointerleave", (e) => { if (e.pointerType === "mouse") $("hover").hidden = true; });
  $("download").addEventListener("click", () => {
    if (!state.pngUrl) return;
    const a = document.createElement("a");
    a.href = state.pngUrl;
    a.download = state.pngName;
    document.body.append(a); a.click(); a.remove();
  });
  try {
    [state.models, state.limits] = await Promise.all([api("/api/models"), api("/api/limits")]);
  } catch (e) { showError("cannot list the models: " + e.message); return; }
  for (const m of state.models) {
    const o = document.createElement("option");
    o.value = m.name; o.textContent = m.name;
    $("model").append(o);
  }
  modelChanged();
}

init();

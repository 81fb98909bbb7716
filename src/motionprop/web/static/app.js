// The page: modes, pointer and keyboard input, live queries, files. The state that matters is the
// document in guidance.js (arrows, still points, annotation objects in original-image pixels);
// everything else is drawn from it and from the server's answers.

import * as api from "./api.js";
import { View, drawClicks, drawGuidance, drawMasks, hitTest, loadPicture, pixels } from "./canvas.js";
import { History, emptyDoc, fromGuidanceFile, newObject, toGuidanceFile } from "./guidance.js";

const $ = (id) => document.getElementById(id);
const STORE_DOC = "motionprop.doc", STORE_IMAGE = "motionprop.image", STORE_SETTINGS = "motionprop.settings";
// Controls whose values a reload keeps (display, animation and annotation settings).
const SETTINGS = ["opacity", "confidence", "dominant-motion", "scale-auto", "scale-px", "frames", "anim-mode", "fps",
                  "max-side", "anim-format", "threshold", "refine", "mask-opacity"];
const CLICK_RADIUS = 4;  // display px: a press that moves less is a click
const HIT_RADIUS = 10;   // display px: how close to an end a press grabs it

const view = new View($("stage"), { image: $("image-layer"), flow: $("flow-layer"), mask: $("mask-layer"),
                                    draw: $("draw-layer") });
const history = new History(emptyDoc());
const state = {
  session: null, file: null, picture: null, mode: "propagate", selected: null, drag: null,
  flow: null, flowPicture: null, confidencePicture: null, grid: null, inputTime: 0,
  scores: new Map(), annotators: new Map(), job: null,
};
// For tests and benchmarks: what was drawn, and how long after the input that caused it.
const stats = { flowVersion: 0, annotateVersion: 0, latencies: [], lastFlowGuidance: null };
window.motionprop = { stats, history, state };

// --------------------------------------------------------------------------- status

function say(text) { const s = $("status"); s.textContent = text; s.classList.remove("error"); }
function fail(error) {
  const s = $("status");
  s.textContent = error && error.message ? error.message : String(error);
  s.classList.add("error");
}

// --------------------------------------------------------------------------- image and session

async function openImage(blob, name, restored) {
  say(`Encoding ${name}…`);
  const session = await api.createSession(blob, name);
  state.session = session; state.file = blob;
  state.picture = await loadPicture(`/api/sessions/${session.id}/image`);
  state.flow = state.flowPicture = state.confidencePicture = state.grid = null;
  state.scores.clear(); state.annotators.clear();
  layout();
  history.reset(restored || emptyDoc());
  const range = session.range ? ` Network range ±${session.range.x.toFixed(0)} px.` : "";
  say(`${session.name}: ${session.width}×${session.height}, network at ${session.working_size.width}×` +
      `${session.working_size.height}.${range} Drag to draw an arrow; ? for shortcuts.`);
  if (!restored) storeImage(blob, name);
}

/** Run fn(sessionId); if the server forgot the session (expired, evicted), upload the image again once. */
async function withSession(fn) {
  if (!state.session) throw new Error("open an image first");
  try {
    return await fn(state.session.id);
  } catch (error) {
    if (!(error instanceof api.ApiError) || error.status !== 404 || !state.file) throw error;
    const doc = history.snapshot();
    const session = await api.createSession(state.file, state.session.name);
    state.session = session;
    history.replace(doc);
    return fn(session.id);
  }
}

function layout() {
  if (!state.session) return;
  const wrap = $("stage-wrap");
  const maxWidth = wrap.clientWidth || window.innerWidth - 340;
  const maxHeight = Math.max(200, window.innerHeight - 120);
  view.fit(state.session.width, state.session.height, maxWidth, maxHeight);
  view.paint("image", state.picture);
  paintFlow();
  paintMasks();
  redraw();
}

// --------------------------------------------------------------------------- persistence

function storeImage(blob, name) {
  const reader = new FileReader();
  reader.onload = () => {
    try {
      localStorage.setItem(STORE_IMAGE, JSON.stringify({ name, type: blob.type, data: reader.result }));
    } catch (_) {
      localStorage.removeItem(STORE_IMAGE);  // too large to keep: guidance survives, the image does not
    }
  };
  reader.readAsDataURL(blob);
}

function storeDoc() {
  if (!state.session) return;
  const { width, height, name } = state.session;
  try {
    localStorage.setItem(STORE_DOC, JSON.stringify({ width, height, name, mode: state.mode, doc: history.doc }));
  } catch (_) { /* storage full or disabled: nothing to do */ }
}

/** Remember the controls of SETTINGS (localStorage), so a reload keeps them. */
function storeSettings() {
  const values = Object.fromEntries(SETTINGS.map((id) => [id, $(id).type === "checkbox" ? $(id).checked : $(id).value]));
  try { localStorage.setItem(STORE_SETTINGS, JSON.stringify(values)); } catch (_) { /* storage full or disabled */ }
}

/** Put back the controls' values of the last visit (before any image is open, so no query is sent). */
function restoreSettings() {
  let values;
  try { values = JSON.parse(localStorage.getItem(STORE_SETTINGS) || "{}"); } catch (_) { return; }
  for (const id of SETTINGS) {
    if (!(id in values)) continue;
    if ($(id).type === "checkbox") $(id).checked = Boolean(values[id]); else $(id).value = String(values[id]);
  }
  showThreshold();
}

/** The threshold slider's value beside it. */
function showThreshold() { $("threshold-value").textContent = Number($("threshold").value).toFixed(2); }

async function restore() {
  const image = JSON.parse(localStorage.getItem(STORE_IMAGE) || "null");
  const saved = JSON.parse(localStorage.getItem(STORE_DOC) || "null");
  if (!image) return;
  const bytes = Uint8Array.from(atob(image.data.slice(image.data.indexOf(",") + 1)), (c) => c.charCodeAt(0));
  const doc = saved && saved.name === image.name ? saved.doc : null;
  await openImage(new Blob([bytes], { type: image.type }), image.name, doc);
  if (saved && saved.mode) setMode(saved.mode);
}

// --------------------------------------------------------------------------- propagate: live flow

const flowQuery = new api.LiveQuery(
  (guidance) => withSession((sid) => api.flow(sid, guidance, flowOptions())),
  async (result, guidance, since) => {
    const [flowPicture, confidencePicture] = await Promise.all([
      loadPicture(result.picture), result.confidence ? loadPicture(result.confidence) : null]);
    if (!hasGuidance()) return;  // cleared while the answer was on its way
    state.flowPicture = flowPicture; state.confidencePicture = confidencePicture;
    state.grid = decodeGrid(result.grid);
    $("scale-value").textContent = result.max_flow.toFixed(1);
    paintFlow();
    if (state.pointer) showReadout(state.pointer);
    stats.flowVersion += 1;
    stats.lastFlowGuidance = guidance;
    stats.latencies.push(performance.now() - since);
    if (result.warnings.length) say(result.warnings[0]); else if ($("status").classList.contains("error")) say("");
  },
  fail);

window.motionprop.flowQuery = flowQuery;

function flowOptions() {
  const fixed = !$("scale-auto").checked && Number($("scale-px").value) > 0;
  return { max_flow: fixed ? Number($("scale-px").value) : null, confidence: $("confidence").checked,
           dominant_motion: $("dominant-motion").checked };
}

function decodeGrid(grid) {
  const bytes = Uint8Array.from(atob(grid.data), (c) => c.charCodeAt(0));
  return { width: grid.width, height: grid.height, values: new Float32Array(bytes.buffer) };
}

function hasGuidance() { return history.doc.arrows.length + history.doc.still_points.length > 0; }

function currentGuidance() {
  const { width, height, name } = state.session;
  return toGuidanceFile(history.doc, width, height, name);
}

function requestFlow() {
  if (!state.session || state.mode === "annotate") return;
  if (!hasGuidance()) {
    flowQuery.drop();
    state.flowPicture = state.confidencePicture = state.grid = null;
    paintFlow();
    return;
  }
  flowQuery.request(currentGuidance(), state.inputTime || performance.now());
  state.inputTime = 0;
}

function paintFlow() {
  const layer = $("flow-layer");
  const showFlow = state.mode !== "annotate";
  layer.style.opacity = showFlow ? $("opacity").value : 0;
  view.paint("flow", $("confidence").checked ? state.confidencePicture || state.flowPicture : state.flowPicture);
  $("mask-layer").style.opacity = state.mode === "annotate" ? 1 : 0;
}

// --------------------------------------------------------------------------- annotate: per-object scores

function clickKey(obj) { return JSON.stringify([obj.positive, obj.negative]); }

/** What the server is asked beyond the clicks: with "Snap to edges", GrabCut at the slider's threshold. */
function refineOptions() {
  return $("refine").checked ? { refine: "grabcut", threshold: Number($("threshold").value) } : {};
}

function annotator(id) {
  if (!state.annotators.has(id)) {
    state.annotators.set(id, new api.LiveQuery(
      ({ obj, options }) => {
        if (options.refine) say(`Snapping object #${obj.id} to edges (GrabCut)…`);
        return withSession((sid) => api.annotate(sid, obj.positive, obj.negative, options));
      },
      async (result, { obj, options }) => {
        if (result.mask) say(`Object #${obj.id} snapped to edges in ${result.seconds.toFixed(1)} s.`);
        const picture = await loadPicture(result.mask || result.score);
        state.scores.set(obj.id, { clicks: clickKey(obj), options: JSON.stringify(options),
                                   refined: Boolean(result.mask), scoreData: pixels(picture) });
        stats.annotateVersion += 1;
        paintMasks();
      }, fail));
  }
  return state.annotators.get(id);
}

function requestScores() {
  if (!state.session) return;
  const options = refineOptions();
  for (const obj of history.doc.objects) {
    const known = state.scores.get(obj.id);
    if (obj.positive.length === 0) { state.scores.delete(obj.id); continue; }
    if (!known || known.clicks !== clickKey(obj) || known.options !== JSON.stringify(options)) {
      annotator(obj.id).request({ obj: JSON.parse(JSON.stringify(obj)), options });
    }
  }
  paintMasks();
}

/** Masks for the current clicks; a refined mask (0/255) is shown as it is until its replacement arrives. */
function paintMasks() {
  const objects = history.doc.objects.map((obj) => {
    const known = state.scores.get(obj.id);
    const current = known && known.clicks === clickKey(obj);
    return { colour: obj.colour, scoreData: current ? known.scoreData : null,
             threshold: current && known.refined ? 0.5 : undefined };
  });
  drawMasks(view, objects, Number($("threshold").value), Number($("mask-opacity").value));
}

function renderObjects() {
  const list = $("objects");
  list.replaceChildren();
  history.doc.objects.forEach((obj, k) => {
    const li = document.createElement("li");
    li.className = k === history.doc.current ? "current" : "";
    const swatch = document.createElement("span");
    swatch.className = "swatch"; swatch.style.background = obj.colour;
    li.append(swatch, `#${obj.id} ${obj.category} (${obj.positive.length}+, ${obj.negative.length}−)`);
    li.addEventListener("click", () => history.change((doc) => { doc.current = k; }));
    list.append(li);
  });
}

function currentObject(doc) {
  if (doc.current < 0 || doc.current >= doc.objects.length) {
    doc.objects.push(newObject(doc, $("category").value));
    doc.current = doc.objects.length - 1;
  }
  return doc.objects[doc.current];
}

// --------------------------------------------------------------------------- drawing and changes

function redraw() {
  if (!state.session) return;
  if (state.mode === "annotate") drawClicks(view, history.doc);
  else drawGuidance(view, history.doc, state.selected);
  renderObjects();
}

history.onChange(() => {
  if (state.selected && !itemExists(state.selected)) state.selected = null;
  redraw();
  storeDoc();
  if (state.mode === "annotate") requestScores(); else requestFlow();
  $("undo").disabled = history.past.length === 0;
  $("redo").disabled = history.future.length === 0;
});

function itemExists(item) {
  const list = item.kind === "arrow" ? history.doc.arrows : history.doc.still_points;
  return item.index < list.length;
}

function setMode(mode) {
  state.mode = mode;
  for (const b of document.querySelectorAll("#modes button")) b.setAttribute("aria-selected", b.dataset.mode === mode);
  for (const g of document.querySelectorAll("#panel .group")) g.hidden = !g.dataset.for.split(" ").includes(mode);
  state.selected = null;
  paintFlow();
  redraw();
  if (mode === "annotate") requestScores(); else requestFlow();
  storeDoc();
}

// --------------------------------------------------------------------------- pointer input

const draw = $("draw-layer");

draw.addEventListener("contextmenu", (event) => event.preventDefault());

draw.addEventListener("pointerdown", (event) => {
  if (!state.session) return;
  draw.setPointerCapture(event.pointerId);
  draw.focus();
  const p = view.toImage(event);
  state.inputTime = event.timeStamp;
  if (state.mode === "annotate") {
    const negative = event.button === 2 || event.shiftKey;
    history.change((doc) => { currentObject(doc)[negative ? "negative" : "positive"].push([round1(p.x), round1(p.y)]); });
    return;
  }
  if (event.button !== 0) return;
  const hit = hitTest(history.doc, p.x, p.y, HIT_RADIUS * view.imagePerDisplay);
  state.drag = { start: p, clientX: event.clientX, clientY: event.clientY, hit, begun: false };
  state.selected = hit ? { kind: hit.kind, index: hit.index } : null;
  redraw();
});

draw.addEventListener("pointermove", (event) => {
  if (!state.session) return;
  const p = view.toImage(event);
  state.pointer = p;
  showReadout(p);
  const drag = state.drag;
  if (!drag) return;
  const moved = Math.hypot(event.clientX - drag.clientX, event.clientY - drag.clientY) >= CLICK_RADIUS;
  if (!drag.begun && !moved) return;
  state.inputTime = event.timeStamp;
  if (!drag.begun) {
    drag.begun = true;
    history.change((doc) => {
      if (!drag.hit) {
        doc.arrows.push({ x: round1(drag.start.x), y: round1(drag.start.y), dx: 0, dy: 0 });
        drag.hit = { kind: "arrow", index: doc.arrows.length - 1, end: "tip" };
        state.selected = { kind: "arrow", index: drag.hit.index };
      }
      editItem(doc, drag.hit, p);
    });
  } else {
    history.amend((doc) => editItem(doc, drag.hit, p));
  }
});

function editItem(doc, hit, p) {
  if (hit.kind === "still") {
    Object.assign(doc.still_points[hit.index], { x: round1(p.x), y: round1(p.y) });
    return;
  }
  const a = doc.arrows[hit.index];
  if (hit.end === "tip") Object.assign(a, { dx: round1(p.x - a.x), dy: round1(p.y - a.y) });
  else Object.assign(a, { x: round1(p.x), y: round1(p.y), dx: round1(a.x + a.dx - p.x), dy: round1(a.y + a.dy - p.y) });
}

function endDrag(event) {
  const drag = state.drag;
  state.drag = null;
  if (!drag || drag.begun || !state.session) return;
  if (!drag.hit) {  // a click on nothing: a still point
    state.inputTime = event.timeStamp;
    history.change((doc) => {
      doc.still_points.push({ x: round1(drag.start.x), y: round1(drag.start.y) });
      state.selected = { kind: "still", index: doc.still_points.length - 1 };
    });
  }
}

draw.addEventListener("pointerup", endDrag);
draw.addEventListener("pointercancel", () => { state.drag = null; });
draw.addEventListener("pointerleave", () => { state.pointer = null; $("readout").textContent = ""; });

function round1(v) { return Math.round(v * 10) / 10; }

function showReadout(p) {
  const grid = state.grid;
  let text = `x ${p.x.toFixed(1)}  y ${p.y.toFixed(1)}`;
  if (grid && state.mode !== "annotate") {
    const gx = Math.min(grid.width - 1, Math.max(0, Math.round(((p.x + 0.5) / view.width) * grid.width - 0.5)));
    const gy = Math.min(grid.height - 1, Math.max(0, Math.round(((p.y + 0.5) / view.height) * grid.height - 0.5)));
    const k = 2 * (gy * grid.width + gx);
    text += `   flow u ${grid.values[k].toFixed(2)}  v ${grid.values[k + 1].toFixed(2)} px`;
  }
  $("readout").textContent = text;
}

// --------------------------------------------------------------------------- keyboard

document.addEventListener("keydown", (event) => {
  const typing = event.target instanceof HTMLInputElement && ["text", "number"].includes(event.target.type);
  if (typing) return;
  const key = event.key;
  if (key === "Escape") { $("help").hidden = true; return; }
  if (key === "?") { $("help").hidden = !$("help").hidden; return; }
  if ((event.ctrlKey || event.metaKey) && key.toLowerCase() === "z") {
    event.preventDefault();
    if (event.shiftKey) history.redo(); else history.undo();
    return;
  }
  if ((event.ctrlKey || event.metaKey) && key.toLowerCase() === "y") { event.preventDefault(); history.redo(); return; }
  if (event.ctrlKey || event.metaKey || event.altKey) return;
  if (key === "Delete" || key === "Backspace") { event.preventDefault(); deleteSelected(); }
  else if (key === "c" || key === "C") clearAll();
  else if (key === "o" || key === "O") addObject();
  else if (key === "1") setMode("propagate");
  else if (key === "2") setMode("animate");
  else if (key === "3") setMode("annotate");
});

function deleteSelected() {
  if (state.mode === "annotate") {
    const k = history.doc.current;
    if (k >= 0 && k < history.doc.objects.length) {
      history.change((doc) => { doc.objects.splice(k, 1); doc.current = doc.objects.length - 1; });
    }
    return;
  }
  const item = state.selected;
  if (!item) return;
  state.selected = null;
  history.change((doc) => { (item.kind === "arrow" ? doc.arrows : doc.still_points).splice(item.index, 1); });
}

function clearAll() {
  if (state.mode === "annotate") history.change((doc) => { doc.objects = []; doc.current = -1; });
  else history.change((doc) => { doc.arrows = []; doc.still_points = []; });
}

function addObject() {
  if (!state.session) return;
  history.change((doc) => { doc.objects.push(newObject(doc, $("category").value)); doc.current = doc.objects.length - 1; });
}

// --------------------------------------------------------------------------- files

async function download(path, body) {
  const { blob, name } = await withSession((sid) => api.postFile(`/api/sessions/${sid}/${path}`, body));
  api.saveBlob(blob, name);
  say(`Saved ${name}.`);
}

function annotationObjects() {
  return history.doc.objects.filter((o) => o.positive.length)
    .map((o) => ({ positive: o.positive, negative: o.negative, category: o.category }));
}

async function exportAnnotations(format) {
  const objects = annotationObjects();
  if (!objects.length) throw new Error("no object with a positive click to export");
  const threshold = Number($("threshold").value);
  const refine = $("refine").checked ? "grabcut" : "none";
  if (format === "mask") {
    for (let k = 0; k < objects.length; k++) {
      await download("annotations/export", { objects, threshold, refine, format, index: k });
    }
  } else {
    await download("annotations/export", { objects, threshold, refine, format });
  }
}

function needGuidance() { if (!hasGuidance()) throw new Error("draw an arrow or a still point first"); }

const actions = {
  "save-guidance": () => {
    if (!state.session) throw new Error("open an image first");
    const text = JSON.stringify(currentGuidance(), null, 1) + "\n";
    api.saveBlob(new Blob([text], { type: "application/json" }), `${stem(state.session.name)}_guidance.json`);
  },
  "export-flo": () => { needGuidance(); return download("flow/export", { guidance: currentGuidance(), format: "flo" }); },
  "export-png": () => { needGuidance(); return download("flow/export", { guidance: currentGuidance(), format: "png", ...flowOptions() }); },
  "export-vis": () => { needGuidance(); return download("flow/export", { guidance: currentGuidance(), format: "vis", ...flowOptions() }); },
  "export-masks": () => exportAnnotations("mask"),
  "export-label": () => exportAnnotations("label"),
  "export-coco": () => exportAnnotations("coco"),
  "new-object": addObject,
  "undo": () => history.undo(),
  "redo": () => history.redo(),
  "clear": clearAll,
  "help-button": () => { $("help").hidden = !$("help").hidden; },
  "render": renderClip,
  "cancel": async () => {
    if (state.job) await withSession((sid) => api.cancelAnimation(sid, state.job));
  },
};
for (const [id, action] of Object.entries(actions)) {
  $(id).addEventListener("click", async () => { try { await action(); } catch (error) { fail(error); } });
}

function stem(name) { return name.includes(".") ? name.slice(0, name.lastIndexOf(".")) : name; }

$("file").addEventListener("change", async (event) => {
  const file = event.target.files[0];
  event.target.value = "";
  if (!file) return;
  try { await openImage(file, file.name, null); } catch (error) { fail(error); }
});

$("load-guidance").addEventListener("change", async (event) => {
  const file = event.target.files[0];
  event.target.value = "";
  if (!file) return;
  try {
    if (!state.session) throw new Error("open the image first, then its guidance");
    let raw;
    try { raw = JSON.parse(await file.text()); } catch (_) { throw new Error(`${file.name}: not valid JSON`); }
    const loaded = fromGuidanceFile(raw, state.session.width, state.session.height);
    history.change((doc) => { doc.arrows = loaded.arrows; doc.still_points = loaded.still_points; });
    say(`Loaded ${file.name}: ${loaded.arrows.length} arrows, ${loaded.still_points.length} still points.`);
  } catch (error) { fail(error); }
});

// --------------------------------------------------------------------------- animation

async function renderClip() {
  needGuidance();
  const body = { guidance: currentGuidance(), frames: Number($("frames").value), mode: $("anim-mode").value,
                 fps: Number($("fps").value), format: $("anim-format").value, max_side: Number($("max-side").value),
                 dominant_motion: $("dominant-motion").checked };
  let job = await withSession((sid) => api.startAnimation(sid, body));
  state.job = job.id;
  $("render").disabled = true; $("cancel").disabled = false; $("clip").replaceChildren();
  const sid = state.session.id;
  try {
    while (job.state === "running") {
      $("progress").value = job.done / job.total;
      say(`Rendering frame ${job.done} of ${job.total}…`);
      await new Promise((resolve) => setTimeout(resolve, 250));
      job = await api.animationStatus(sid, job.id);
    }
    $("progress").value = job.state === "done" ? 1 : 0;
    if (job.state === "cancelled") { say("Animation cancelled."); return; }
    if (job.state !== "done") throw new Error(`animation failed: ${job.error}`);
    const blob = await api.animationResult(sid, job.id);
    const url = URL.createObjectURL(blob);
    const preview = document.createElement(job.format === "gif" ? "img" : "video");
    preview.src = url;
    if (job.format === "mp4") { preview.controls = true; preview.loop = true; preview.autoplay = true; preview.muted = true; }
    const link = document.createElement("a");
    link.href = url; link.download = `${stem(state.session.name)}_clip.${job.format}`;
    link.textContent = `Download ${job.format.toUpperCase()} (${(blob.size / 1024).toFixed(0)} KB)`;
    link.className = "button";
    $("clip").replaceChildren(preview, link);
    say(`Animation ready: ${job.total} frames.`);
  } finally {
    state.job = null; $("render").disabled = false; $("cancel").disabled = true;
  }
}

// --------------------------------------------------------------------------- controls

for (const b of document.querySelectorAll("#modes button")) b.addEventListener("click", () => setMode(b.dataset.mode));
$("opacity").addEventListener("input", paintFlow);
$("confidence").addEventListener("change", () => { paintFlow(); requestFlow(); });
$("dominant-motion").addEventListener("change", () => { requestFlow(); });
$("scale-auto").addEventListener("change", requestFlow);
$("scale-px").addEventListener("change", requestFlow);
$("threshold").addEventListener("input", () => {
  showThreshold();
  if ($("refine").checked) requestScores(); else paintMasks();
});
$("refine").addEventListener("change", requestScores);
$("mask-opacity").addEventListener("input", paintMasks);
$("category").addEventListener("change", () => {
  const k = history.doc.current;
  if (k >= 0 && k < history.doc.objects.length) {
    history.change((doc) => { doc.objects[k].category = $("category").value.trim() || "object"; });
  }
});
$("help").addEventListener("click", (event) => { if (event.target === $("help")) $("help").hidden = true; });
window.addEventListener("resize", layout);

api.info().then((info) => {
  if (!info.discrete) {  // (a setting kept from a discrete network's session is dropped)
    $("confidence").checked = false; $("confidence").disabled = true;
    $("confidence").parentElement.title = "needs a discrete network";
  }
  if (!info.dominant_motion) {  // only networks trained with the dominant-motion prior (docs/apps.md)
    $("dominant-motion").checked = false; $("dominant-motion").parentElement.hidden = true;
  }
}).catch(fail);
for (const id of SETTINGS) $(id).addEventListener("change", storeSettings);
restoreSettings();
setMode("propagate");
$("undo").disabled = true; $("redo").disabled = true;
restore().catch((error) => { localStorage.removeItem(STORE_IMAGE); fail(error); });

// The document the user edits: arrows, still points and annotation objects, in pixels of the
// original image (x right, y down, pixel centres at integers), with undo/redo by snapshots.
// `toGuidanceFile` gives exactly the guidance JSON that `motionprop propagate --guidance` reads.

export const FORMAT = "motionprop.guidance";
export const VERSION = 1;
export const COLOURS = ["#1e6eff", "#ff9600", "#c828dc", "#00c8c8", "#f0dc00", "#78ff50",
                        "#ff4060", "#a0a0ff"];

const round3 = (v) => Math.round(v * 1000) / 1000;

/** A fresh, empty document. */
export function emptyDoc() {
  return { arrows: [], still_points: [], objects: [], current: -1 };
}

/** The guidance file object (docs/apps.md) for arrows and still points on a width x height image. */
export function toGuidanceFile(doc, width, height, imageName) {
  const out = { format: FORMAT, version: VERSION };
  if (imageName) out.image = imageName;
  out.image_size = { width, height };
  out.arrows = doc.arrows.map((a) => ({ x: round3(a.x), y: round3(a.y), dx: round3(a.dx), dy: round3(a.dy) }));
  out.still_points = doc.still_points.map((p) => ({ x: round3(p.x), y: round3(p.y) }));
  return out;
}

function finite(...values) { return values.every((v) => typeof v === "number" && Number.isFinite(v)); }

/** Arrows and still points from a guidance file object, scaled to width x height; throws a clear Error. */
export function fromGuidanceFile(raw, width, height) {
  if (!raw || typeof raw !== "object" || raw.format !== FORMAT) throw new Error("not a motionprop guidance file");
  if (!Number.isInteger(raw.version) || raw.version < 1 || raw.version > VERSION) {
    throw new Error(`unsupported guidance file version ${raw.version}`);
  }
  const size = raw.image_size || {};
  if (!(Number.isInteger(size.width) && size.width > 0 && Number.isInteger(size.height) && size.height > 0)) {
    throw new Error("guidance file: image_size must be {width, height} with positive integers");
  }
  const sx = width / size.width, sy = height / size.height;
  const px = (x) => (x + 0.5) * sx - 0.5, py = (y) => (y + 0.5) * sy - 0.5;
  const arrows = (raw.arrows || []).map((a, k) => {
    if (!finite(a.x, a.y, a.dx, a.dy)) throw new Error(`guidance file: arrows[${k}] needs numbers x, y, dx, dy`);
    return { x: px(a.x), y: py(a.y), dx: a.dx * sx, dy: a.dy * sy };
  });
  const still = (raw.still_points || []).map((p, k) => {
    if (!finite(p.x, p.y)) throw new Error(`guidance file: still_points[${k}] needs numbers x, y`);
    return { x: px(p.x), y: py(p.y) };
  });
  for (const p of [...arrows, ...still]) {
    if (p.x < -0.5 || p.y < -0.5 || p.x > width - 0.5 || p.y > height - 0.5) {
      throw new Error("guidance file: a point lies outside the image");
    }
  }
  return { arrows, still_points: still };
}

/** Undo/redo over deep copies of the document; `change(fn)` snapshots, then applies fn. */
export class History {
  constructor(doc) { this.doc = doc; this.past = []; this.future = []; this.listeners = []; }

  snapshot() { return JSON.parse(JSON.stringify(this.doc)); }

  /** Record the current state, then let `fn` edit the document in place. */
  change(fn) {
    this.past.push(this.snapshot());
    if (this.past.length > 200) this.past.shift();
    this.future = [];
    fn(this.doc);
    this.notify();
  }

  /** Edit without a new undo step (the live part of a drag, after `change` began it). */
  amend(fn) { fn(this.doc); this.notify(); }

  undo() { if (this.past.length) { this.future.push(this.snapshot()); this.replace(this.past.pop()); } }

  redo() { if (this.future.length) { this.past.push(this.snapshot()); this.replace(this.future.pop()); } }

  replace(state) { Object.assign(this.doc, state); this.notify(); }

  reset(state) { this.past = []; this.future = []; this.replace(state); }

  onChange(fn) { this.listeners.push(fn); }

  notify() { for (const fn of this.listeners) fn(this.doc); }
}

/** A new annotation object with the next id and colour. */
export function newObject(doc, category) {
  const id = doc.objects.reduce((m, o) => Math.max(m, o.id), 0) + 1;
  return { id, category: category || "object", colour: COLOURS[(id - 1) % COLOURS.length], positive: [], negative: [] };
}

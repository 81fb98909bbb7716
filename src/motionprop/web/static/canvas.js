// Canvas drawing and geometry: the stage shows the image scaled to fit; positions are converted
// between display pixels and original-image pixels (pixel centres at integers), so guidance is
// always in the original image's pixels whatever the display size.

export class View {
  constructor(stage, layers) {
    this.stage = stage;
    this.layers = layers;  // {image, flow, mask, draw}: canvases stacked in the stage
    this.width = 0; this.height = 0;  // original image size
    this.displayWidth = 0; this.displayHeight = 0;
    this.ratio = window.devicePixelRatio || 1;
  }

  /** Fit the stage to `maxWidth` x `maxHeight` for an image of width x height. */
  fit(width, height, maxWidth, maxHeight) {
    this.width = width; this.height = height;
    const scale = Math.min(maxWidth / width, maxHeight / height, 4);
    this.displayWidth = Math.max(1, Math.floor(width * scale));
    this.displayHeight = Math.max(1, Math.floor(height * scale));
    this.stage.style.width = `${this.displayWidth}px`;
    this.stage.style.height = `${this.displayHeight}px`;
    for (const canvas of Object.values(this.layers)) {
      canvas.width = Math.round(this.displayWidth * this.ratio);
      canvas.height = Math.round(this.displayHeight * this.ratio);
    }
  }

  /** Original-image pixel position of a pointer event. */
  toImage(event) {
    const rect = this.layers.draw.getBoundingClientRect();
    const x = ((event.clientX - rect.left) / rect.width) * this.width - 0.5;
    const y = ((event.clientY - rect.top) / rect.height) * this.height - 0.5;
    return { x: clamp(x, -0.5, this.width - 0.5), y: clamp(y, -0.5, this.height - 0.5) };
  }

  /** Canvas (device) pixel position of an image position. */
  toCanvas(x, y) {
    const canvas = this.layers.draw;
    return [((x + 0.5) / this.width) * canvas.width, ((y + 0.5) / this.height) * canvas.height];
  }

  /** Image pixels per display pixel (for hit radii given in display pixels). */
  get imagePerDisplay() { return this.width / this.displayWidth; }

  /** Draw a picture (image, ImageBitmap, canvas) over the whole of a layer. */
  paint(layer, picture) {
    const canvas = this.layers[layer];
    const ctx = canvas.getContext("2d");
    ctx.clearRect(0, 0, canvas.width, canvas.height);
    if (picture) ctx.drawImage(picture, 0, 0, canvas.width, canvas.height);
  }
}

export function clamp(v, lo, hi) { return Math.min(hi, Math.max(lo, v)); }

/** Draw arrows (yellow, red start dot) and still points (red crosses); the selected one highlighted. */
export function drawGuidance(view, doc, selected) {
  const canvas = view.layers.draw;
  const ctx = canvas.getContext("2d");
  ctx.clearRect(0, 0, canvas.width, canvas.height);
  const r = view.ratio;
  doc.arrows.forEach((a, k) => {
    const isSelected = selected && selected.kind === "arrow" && selected.index === k;
    const [x0, y0] = view.toCanvas(a.x, a.y);
    const [x1, y1] = view.toCanvas(a.x + a.dx, a.y + a.dy);
    arrow(ctx, x0, y0, x1, y1, isSelected ? "#ffffff" : "#ffe600", 2.5 * r);
    dot(ctx, x0, y0, 4 * r, "#ff2828");
    dot(ctx, x1, y1, 3 * r, isSelected ? "#ffffff" : "#ffe600");
  });
  doc.still_points.forEach((p, k) => {
    const isSelected = selected && selected.kind === "still" && selected.index === k;
    const [x, y] = view.toCanvas(p.x, p.y);
    cross(ctx, x, y, 6 * r, isSelected ? "#ffffff" : "#ff2828", 2.5 * r);
  });
}

/** Draw annotation clicks: positive green plus, negative red cross, ringed in the object's colour. */
export function drawClicks(view, doc) {
  const canvas = view.layers.draw;
  const ctx = canvas.getContext("2d");
  ctx.clearRect(0, 0, canvas.width, canvas.height);
  const r = view.ratio;
  doc.objects.forEach((obj, k) => {
    const current = k === doc.current;
    for (const [list, tint] of [[obj.positive, "#28e628"], [obj.negative, "#ff2828"]]) {
      for (const [px, py] of list) {
        const [x, y] = view.toCanvas(px, py);
        ctx.beginPath(); ctx.arc(x, y, 7 * r, 0, 2 * Math.PI);
        ctx.strokeStyle = obj.colour; ctx.lineWidth = (current ? 3 : 1.5) * r; ctx.stroke();
        if (tint === "#28e628") plus(ctx, x, y, 5 * r, tint, 2 * r); else cross(ctx, x, y, 5 * r, tint, 2 * r);
      }
    }
  });
}

function arrow(ctx, x0, y0, x1, y1, colour, width) {
  const length = Math.hypot(x1 - x0, y1 - y0);
  ctx.strokeStyle = colour; ctx.fillStyle = colour; ctx.lineWidth = width; ctx.lineCap = "round";
  ctx.beginPath(); ctx.moveTo(x0, y0); ctx.lineTo(x1, y1); ctx.stroke();
  if (length < 1) return;
  const head = Math.min(14 * (width / 2.5), length * 0.5), angle = Math.atan2(y1 - y0, x1 - x0);
  ctx.beginPath(); ctx.moveTo(x1, y1);
  ctx.lineTo(x1 - head * Math.cos(angle - 0.45), y1 - head * Math.sin(angle - 0.45));
  ctx.lineTo(x1 - head * Math.cos(angle + 0.45), y1 - head * Math.sin(angle + 0.45));
  ctx.closePath(); ctx.fill();
}

function dot(ctx, x, y, radius, colour) {
  ctx.fillStyle = colour; ctx.beginPath(); ctx.arc(x, y, radius, 0, 2 * Math.PI); ctx.fill();
}

function cross(ctx, x, y, size, colour, width) {
  ctx.strokeStyle = colour; ctx.lineWidth = width; ctx.beginPath();
  ctx.moveTo(x - size, y - size); ctx.lineTo(x + size, y + size);
  ctx.moveTo(x + size, y - size); ctx.lineTo(x - size, y + size); ctx.stroke();
}

function plus(ctx, x, y, size, colour, width) {
  ctx.strokeStyle = colour; ctx.lineWidth = width; ctx.beginPath();
  ctx.moveTo(x - size, y); ctx.lineTo(x + size, y); ctx.moveTo(x, y - size); ctx.lineTo(x, y + size); ctx.stroke();
}

/**
 * What is under an image position, within `radius` image pixels: the end of an arrow (tip or
 * start) or a still point; null if nothing. Tips win over starts (they are what one edits most).
 */
export function hitTest(doc, x, y, radius) {
  let best = null, bestDistance = radius;
  const consider = (kind, index, end, px, py) => {
    const d = Math.hypot(px - x, py - y);
    if (d <= bestDistance) { best = { kind, index, end }; bestDistance = d; }
  };
  doc.still_points.forEach((p, k) => consider("still", k, "start", p.x, p.y));
  doc.arrows.forEach((a, k) => consider("arrow", k, "start", a.x, a.y));
  doc.arrows.forEach((a, k) => consider("arrow", k, "tip", a.x + a.dx, a.y + a.dy));
  return best;
}

/** Load a data URL or blob URL into a decoded HTMLImageElement. */
export async function loadPicture(url) {
  const img = new Image();
  img.src = url;
  await img.decode();
  return img;
}

/** Paint every object's mask (score > threshold) tinted in its colour into the mask layer. */
export function drawMasks(view, objects, threshold, opacity) {
  const canvas = view.layers.mask;
  const ctx = canvas.getContext("2d");
  ctx.clearRect(0, 0, canvas.width, canvas.height);
  for (const obj of objects) {
    if (!obj.scoreData) continue;
    const cut = Math.round((obj.threshold ?? threshold) * 255);
    const { width, height, data } = obj.scoreData;
    const tint = hexToRgb(obj.colour);
    const out = new ImageData(width, height);
    for (let i = 0; i < width * height; i++) {
      if (data[4 * i] > cut) {
        out.data[4 * i] = tint[0]; out.data[4 * i + 1] = tint[1]; out.data[4 * i + 2] = tint[2];
        out.data[4 * i + 3] = Math.round(255 * opacity);
      }
    }
    const tile = new OffscreenCanvas(width, height);
    tile.getContext("2d").putImageData(out, 0, 0);
    ctx.drawImage(tile, 0, 0, canvas.width, canvas.height);
  }
}

/** Pixel data (RGBA) of a decoded picture at its own size. */
export function pixels(picture) {
  const tile = new OffscreenCanvas(picture.naturalWidth || picture.width, picture.naturalHeight || picture.height);
  const ctx = tile.getContext("2d", { willReadFrequently: true });
  ctx.drawImage(picture, 0, 0);
  return ctx.getImageData(0, 0, tile.width, tile.height);
}

function hexToRgb(hex) {
  const v = parseInt(hex.slice(1), 16);
  return [(v >> 16) & 255, (v >> 8) & 255, v & 255];
}

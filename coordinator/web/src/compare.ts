// The comparison view (/console/comparisons/{id}): the legacy and graph images at full
// size under one zoom and pan, a swipe or flip overlay between them, the difference as a
// heat map, and for a turntable a frame scrubber with each frame's verdict. What it shows
// comes from the page (the server writes `#compare-view[data-view]`); without script the
// page keeps its plain images and tables.
import "./compare.css";

/// One frame of a turntable (or the only "frame" of a still): the two images, and the
/// verdict the compare module gave it when it was compared.
type Frame = { index: number; control?: string; candidate?: string; match?: boolean | null; fail_share?: number | null };
type View = {
  /// "images" (a still, or a turntable's frames as PNGs), or "video" (two MP4s).
  source: "images" | "video";
  frames: Frame[];
  control_video?: string;
  candidate_video?: string;
  /// The gate's per-channel failing difference, 0..1 (idiff's `fail`).
  fail: number;
};
type Mode = "side" | "swipe" | "flip" | "heat";

const root = document.getElementById("compare-view") as HTMLElement;
const view = JSON.parse(root.dataset.view || "{}") as View;

const $ = <T extends HTMLElement>(html: string): T => {
  const t = document.createElement("template");
  t.innerHTML = html.trim();
  return t.content.firstElementChild as T;
};

const bar = $<HTMLDivElement>(`<div class="cv-bar" role="toolbar" aria-label="comparison view">
  <span class="cv-group">
    <button id="mode-side" data-mode="side" title="side by side, one zoom and pan (1)">Side by side</button>
    <button id="mode-swipe" data-mode="swipe" title="swipe between legacy and graph (2)">Swipe</button>
    <button id="mode-flip" data-mode="flip" title="flip between legacy and graph (3; F flips)">Flip</button>
    <button id="mode-heat" data-mode="heat" title="the difference as a heat map (4)">Heat map</button>
  </span>
  <span class="cv-group">
    <button id="zoom-fit" title="fit the image (0)">Fit</button>
    <button id="zoom-1" title="one image pixel per screen pixel (=)">1:1</button>
    <span id="zoom-level" class="muted"></span>
  </span>
  <span class="cv-group cv-swipe-only"><label for="swipe">swipe</label><input id="swipe" type="range" min="0" max="100" value="50"></span>
  <span class="cv-group cv-flip-only"><button id="flip-now" title="show the other image (F)">Flip</button><label><input id="flip-auto" type="checkbox"> every 0.7 s</label> showing <b id="showing">legacy</b></span>
  <span class="cv-group cv-heat-only"><span id="heat-legend" class="cv-legend"></span> <span id="heat-failing"></span></span>
</div>`);
const stage = $<HTMLDivElement>(`<div class="cv-stage"></div>`);
const paneA = $<HTMLDivElement>(`<figure class="cv-pane"><canvas id="canvas-control"></canvas><figcaption>legacy (control)</figcaption></figure>`);
const paneB = $<HTMLDivElement>(`<figure class="cv-pane"><canvas id="canvas-candidate"></canvas><figcaption>graph (candidate)</figcaption></figure>`);
const paneOne = $<HTMLDivElement>(`<figure class="cv-pane cv-one"><canvas id="canvas-single"></canvas><figcaption id="single-caption"></figcaption></figure>`);
stage.append(paneA, paneB, paneOne);
const scrub = $<HTMLDivElement>(`<div class="cv-scrub">
  <button id="frame-prev" title="previous frame (←)">◀</button>
  <input id="frame" type="range" min="0" value="0" aria-label="frame">
  <button id="frame-next" title="next frame (→)">▶</button>
  <span id="frame-label"></span>
  <div id="frame-ticks" class="cv-ticks"></div>
</div>`);
root.replaceChildren(bar, stage, ...(view.frames.length > 1 ? [scrub] : []));

const canvases = {
  control: paneA.querySelector("canvas") as HTMLCanvasElement,
  candidate: paneB.querySelector("canvas") as HTMLCanvasElement,
  single: paneOne.querySelector("canvas") as HTMLCanvasElement,
};

let mode: Mode = "side";
let frame = 0;
let flipped = false; // flip mode: false shows legacy, true the graph
let swipeAt = 0.5;
let flipTimer = 0;
/// Image pixels → canvas pixels: canvas = image * scale + (x, y). One for every canvas,
/// which is what keeps them in step.
const t = { scale: 1, x: 0, y: 0, fitted: true };
let pair: { a: HTMLCanvasElement | HTMLImageElement | HTMLVideoElement; b: HTMLCanvasElement | HTMLImageElement | HTMLVideoElement; w: number; h: number } | null = null;
let heat: { canvas: HTMLCanvasElement; failing: number; pixels: number } | null = null;

// ---- loading a frame's two images ------------------------------------------------------

const images = new Map<string, Promise<HTMLImageElement>>();
const image = (src: string) => {
  let p = images.get(src);
  if (!p) {
    p = new Promise((ok, fail) => {
      const i = new Image();
      i.onload = () => ok(i);
      i.onerror = () => fail(new Error(`cannot load ${src}`));
      i.src = src;
    });
    images.set(src, p);
  }
  return p;
};

const videos = view.source === "video" ? [view.control_video!, view.candidate_video!].map(openVideo) : [];

function openVideo(src: string): Promise<HTMLVideoElement> {
  return new Promise((ok, fail) => {
    const v = document.createElement("video");
    v.muted = true;
    v.preload = "auto";
    v.onloadeddata = () => ok(v);
    v.onerror = () => fail(new Error(`cannot play ${src}`));
    v.src = src;
  });
}

/// A video at frame `i` (of `n`), drawn into a canvas of its own so that the heat map reads
/// the pixels of exactly that frame.
async function videoFrame(v: HTMLVideoElement, i: number, n: number): Promise<HTMLCanvasElement> {
  const fps = n / (v.duration || 1);
  await new Promise<void>((ok) => {
    v.onseeked = () => ok();
    v.currentTime = Math.min((i + 0.5) / fps, Math.max(0, v.duration - 0.001));
  });
  const c = document.createElement("canvas");
  c.width = v.videoWidth;
  c.height = v.videoHeight;
  c.getContext("2d")!.drawImage(v, 0, 0);
  return c;
}

let loadSeq = 0;
async function load(i: number) {
  const seq = ++loadSeq;
  root.dataset.state = "loading";
  const f = view.frames[i];
  try {
    let a, b;
    if (view.source === "video") {
      const [va, vb] = await Promise.all(videos);
      [a, b] = [await videoFrame(va, f.index, view.frames.length), await videoFrame(vb, f.index, view.frames.length)];
    } else {
      [a, b] = await Promise.all([image(f.control!), image(f.candidate!)]);
    }
    if (seq !== loadSeq) return;
    const w = "naturalWidth" in a ? a.naturalWidth : a.width;
    const h = "naturalHeight" in a ? a.naturalHeight : a.height;
    const first = !pair;
    pair = { a, b, w, h };
    root.dataset.size = `${w}x${h}`;
    heat = null;
    if (first) fit();
    draw();
    root.dataset.state = "ready";
  } catch (e) {
    root.dataset.state = "error";
    stage.replaceChildren($(`<p class="error" id="compare-error"></p>`));
    stage.firstElementChild!.textContent = `${e instanceof Error ? e.message : e}: the artifact may have been removed from the store`;
  }
}

// ---- the heat map -----------------------------------------------------------------------

/// The largest channel difference of each pixel, coloured from dark (equal) through blue
/// and yellow to red (255 apart); pixels over the gate's `fail` are what the compare module
/// counts as failing, and the count is shown beside the legend.
function heatOf(a: CanvasImageSource, b: CanvasImageSource, w: number, h: number) {
  const read = (src: CanvasImageSource) => {
    const c = document.createElement("canvas");
    c.width = w;
    c.height = h;
    const g = c.getContext("2d", { willReadFrequently: true })!;
    g.drawImage(src, 0, 0);
    return g.getImageData(0, 0, w, h).data;
  };
  const [pa, pb] = [read(a), read(b)];
  const out = document.createElement("canvas");
  out.width = w;
  out.height = h;
  const g = out.getContext("2d")!;
  const img = g.createImageData(w, h);
  const limit = Math.round(view.fail * 255);
  let failing = 0;
  for (let p = 0; p < pa.length; p += 4) {
    let d = 0;
    for (let c = 0; c < 4; c++) d = Math.max(d, Math.abs(pa[p + c] - pb[p + c]));
    if (d > limit) failing++;
    const [r, gr, bl] = ramp(d / 255);
    img.data[p] = r;
    img.data[p + 1] = gr;
    img.data[p + 2] = bl;
    img.data[p + 3] = 255;
  }
  g.putImageData(img, 0, 0);
  return { canvas: out, failing, pixels: w * h };
}

/// 0 → near black, then blue, cyan, yellow, red at 1; small differences are lifted (a
/// square root) so that one level of difference is visible at all.
function ramp(v: number): [number, number, number] {
  if (v <= 0) return [18, 18, 24];
  const s = Math.sqrt(v);
  const stops: [number, number, number, number][] = [
    [0, 30, 40, 120],
    [0.35, 0, 170, 230],
    [0.65, 250, 220, 40],
    [1, 230, 30, 30],
  ];
  for (let k = 1; k < stops.length; k++) {
    const [x1, ...c1] = stops[k];
    const [x0, ...c0] = stops[k - 1];
    if (s <= x1) {
      const f = (s - x0) / (x1 - x0);
      return [0, 1, 2].map((j) => Math.round(c0[j] + f * (c1[j] - c0[j]))) as [number, number, number];
    }
  }
  return [230, 30, 30];
}

// ---- drawing ----------------------------------------------------------------------------

function size() {
  const side = mode === "side";
  paneA.hidden = paneB.hidden = !side;
  paneOne.hidden = side;
  for (const c of side ? [canvases.control, canvases.candidate] : [canvases.single]) {
    const r = c.parentElement!.getBoundingClientRect();
    const width = Math.max(200, Math.floor(r.width - 2));
    // As tall as the image needs, up to most of the window.
    const height = Math.floor(Math.min(window.innerHeight * 0.62, Math.max(240, (pair?.h ?? 1e9) + 40)));
    if (c.width !== width || c.height !== height) [c.width, c.height] = [width, height];
  }
}

function paint(c: HTMLCanvasElement, src: CanvasImageSource, clip?: [number, number]) {
  const g = c.getContext("2d")!;
  g.setTransform(1, 0, 0, 1, 0, 0);
  if (!clip) {
    g.fillStyle = "#e9ebf0";
    g.fillRect(0, 0, c.width, c.height);
  }
  g.save();
  if (clip) {
    g.beginPath();
    g.rect(clip[0], 0, clip[1] - clip[0], c.height);
    g.clip();
  }
  g.imageSmoothingEnabled = t.scale < 1;
  g.setTransform(t.scale, 0, 0, t.scale, t.x, t.y);
  g.drawImage(src, 0, 0);
  g.restore();
  c.dataset.transform = `${t.scale.toFixed(4)} ${t.x.toFixed(1)} ${t.y.toFixed(1)}`;
}

function draw() {
  size();
  if (!pair) return;
  const one = canvases.single;
  const caption = document.getElementById("single-caption")!;
  if (mode === "side") {
    paint(canvases.control, pair.a);
    paint(canvases.candidate, pair.b);
  } else if (mode === "swipe") {
    const at = t.x + swipeAt * pair.w * t.scale;
    paint(one, pair.b);
    paint(one, pair.a, [0, at]);
    const g = one.getContext("2d")!;
    g.setTransform(1, 0, 0, 1, 0, 0);
    g.fillStyle = "#2457c5";
    g.fillRect(Math.round(at) - 1, 0, 2, one.height);
    caption.textContent = "legacy (control) left of the line · graph (candidate) right";
  } else if (mode === "flip") {
    paint(one, flipped ? pair.b : pair.a);
    document.getElementById("showing")!.textContent = flipped ? "graph" : "legacy";
    caption.textContent = flipped ? "graph (candidate)" : "legacy (control)";
    root.dataset.showing = flipped ? "candidate" : "control";
  } else {
    heat ??= heatOf(pair.a, pair.b, pair.w, pair.h);
    paint(one, heat.canvas);
    const share = heat.failing / heat.pixels;
    document.getElementById("heat-failing")!.textContent =
      `${heat.failing} of ${heat.pixels} pixels (${(share * 100).toFixed(3)} %) differ by more than ${Math.round(view.fail * 255)}/255 in a channel`;
    root.dataset.heatFailing = String(heat.failing);
    root.dataset.heatPixels = String(heat.pixels);
    caption.textContent = "difference heat map: the largest channel difference per pixel";
  }
  document.getElementById("zoom-level")!.textContent = `${Math.round(t.scale * 100)} %`;
  root.dataset.zoom = t.scale.toFixed(4);
}

function viewport() {
  return mode === "side" ? canvases.control : canvases.single;
}

/// The whole image in view: enlarged to fill it when `grow` (the Fit button), at most full
/// size otherwise (how a comparison opens).
function fit(grow = false) {
  size();
  if (!pair) return;
  const c = viewport();
  const s = Math.min(c.width / pair.w, c.height / pair.h, grow ? 32 : 1);
  Object.assign(t, { scale: s, x: (c.width - pair.w * s) / 2, y: (c.height - pair.h * s) / 2, fitted: true });
}

/// Zoom by `k` about the canvas point (cx, cy): the image pixel under it stays under it.
function zoomAt(k: number, cx: number, cy: number) {
  const s = Math.min(32, Math.max(0.05, t.scale * k));
  t.x = cx - ((cx - t.x) * s) / t.scale;
  t.y = cy - ((cy - t.y) * s) / t.scale;
  t.scale = s;
  t.fitted = false;
  draw();
}

function setMode(m: Mode) {
  mode = m;
  root.dataset.mode = m;
  for (const b of bar.querySelectorAll<HTMLButtonElement>("[data-mode]")) b.classList.toggle("on", b.dataset.mode === m);
  bar.classList.remove("swipe", "flip", "heat");
  if (m !== "side") bar.classList.add(m);
  if (m !== "flip") setAutoFlip(false);
  // A fitted view stays fitted (at full size at most) as the canvases change size.
  const wasFitted = t.fitted;
  size();
  if (wasFitted) fit();
  draw();
}

function setAutoFlip(on: boolean) {
  (document.getElementById("flip-auto") as HTMLInputElement).checked = on;
  window.clearInterval(flipTimer);
  if (on)
    flipTimer = window.setInterval(() => {
      flipped = !flipped;
      draw();
    }, 700);
}

function setFrame(i: number) {
  frame = Math.max(0, Math.min(view.frames.length - 1, i));
  root.dataset.frame = String(frame);
  const f = view.frames[frame];
  const input = document.getElementById("frame") as HTMLInputElement | null;
  if (input) input.value = String(frame);
  const label = document.getElementById("frame-label");
  if (label) {
    const verdict = f.match === true ? "match" : f.match === false ? "mismatch" : "not compared";
    const share = typeof f.fail_share === "number" ? ` · ${(f.fail_share * 100).toFixed(3)} % failing` : "";
    label.textContent = `frame ${f.index + 1} of ${view.frames.length} · ${verdict}${share}`;
    label.className = f.match === false ? "error" : "";
  }
  for (const tick of document.querySelectorAll<HTMLElement>("#frame-ticks span")) tick.classList.toggle("on", Number(tick.dataset.frame) === frame);
  load(frame);
}

// ---- input ------------------------------------------------------------------------------

for (const b of bar.querySelectorAll<HTMLButtonElement>("[data-mode]")) b.onclick = () => setMode(b.dataset.mode as Mode);
(document.getElementById("zoom-fit") as HTMLButtonElement).onclick = () => (fit(true), draw());
(document.getElementById("zoom-1") as HTMLButtonElement).onclick = () => {
  const c = viewport();
  zoomAt(1 / t.scale, c.width / 2, c.height / 2);
};
(document.getElementById("swipe") as HTMLInputElement).oninput = (e) => {
  swipeAt = Number((e.target as HTMLInputElement).value) / 100;
  draw();
};
(document.getElementById("flip-now") as HTMLButtonElement).onclick = () => {
  flipped = !flipped;
  draw();
};
(document.getElementById("flip-auto") as HTMLInputElement).onchange = (e) => setAutoFlip((e.target as HTMLInputElement).checked);

for (const c of Object.values(canvases)) {
  c.addEventListener(
    "wheel",
    (e) => {
      e.preventDefault();
      const r = c.getBoundingClientRect();
      zoomAt(Math.exp(-e.deltaY * 0.0015), e.clientX - r.left, e.clientY - r.top);
    },
    { passive: false },
  );
  // Drag pans (every canvas shares the transform); in swipe mode a drag near the line moves it.
  c.addEventListener("pointerdown", (e) => {
    const r = c.getBoundingClientRect();
    const line = pair ? t.x + swipeAt * pair.w * t.scale : -1e9;
    const moveLine = mode === "swipe" && Math.abs(e.clientX - r.left - line) < 12;
    const start = { x: e.clientX, y: e.clientY, tx: t.x, ty: t.y };
    c.setPointerCapture(e.pointerId);
    const move = (m: PointerEvent) => {
      if (moveLine && pair) {
        swipeAt = Math.max(0, Math.min(1, (m.clientX - r.left - t.x) / (pair.w * t.scale)));
        (document.getElementById("swipe") as HTMLInputElement).value = String(Math.round(swipeAt * 100));
      } else {
        t.x = start.tx + m.clientX - start.x;
        t.y = start.ty + m.clientY - start.y;
        t.fitted = false;
      }
      draw();
    };
    const up = () => {
      c.removeEventListener("pointermove", move);
      c.removeEventListener("pointerup", up);
    };
    c.addEventListener("pointermove", move);
    c.addEventListener("pointerup", up);
  });
  c.addEventListener("dblclick", (e) => {
    const r = c.getBoundingClientRect();
    zoomAt(2, e.clientX - r.left, e.clientY - r.top);
  });
}

document.addEventListener("keydown", (e) => {
  if ((e.target as HTMLElement).closest("input, textarea, select") && (e.target as HTMLInputElement).type !== "range") return;
  const modes: Record<string, Mode> = { "1": "side", "2": "swipe", "3": "flip", "4": "heat" };
  if (modes[e.key]) setMode(modes[e.key]);
  else if (e.key === "f" || e.key === "F") {
    if (mode !== "flip") setMode("flip");
    flipped = !flipped;
    draw();
  } else if (e.key === "0") (fit(true), draw());
  else if (e.key === "=") (document.getElementById("zoom-1") as HTMLButtonElement).click();
  else if (e.key === "ArrowLeft" && view.frames.length > 1) setFrame(frame - 1);
  else if (e.key === "ArrowRight" && view.frames.length > 1) setFrame(frame + 1);
  else return;
  e.preventDefault();
});
window.addEventListener("resize", () => {
  if (t.fitted) fit();
  draw();
});

// ---- the scrubber and the legend --------------------------------------------------------

if (view.frames.length > 1) {
  const input = document.getElementById("frame") as HTMLInputElement;
  input.max = String(view.frames.length - 1);
  input.oninput = () => setFrame(Number(input.value));
  (document.getElementById("frame-prev") as HTMLButtonElement).onclick = () => setFrame(frame - 1);
  (document.getElementById("frame-next") as HTMLButtonElement).onclick = () => setFrame(frame + 1);
  const ticks = document.getElementById("frame-ticks")!;
  view.frames.forEach((f, i) => {
    const s = document.createElement("span");
    s.dataset.frame = String(i);
    s.dataset.verdict = f.match === true ? "match" : f.match === false ? "mismatch" : "none";
    s.title = `frame ${f.index + 1}: ${s.dataset.verdict}`;
    s.onclick = () => setFrame(i);
    ticks.append(s);
  });
}
{
  const legend = document.getElementById("heat-legend")!;
  const stops = [0, 1, 4, 16, 64, 255].map((d) => {
    const [r, g, b] = ramp(d / 255);
    return `<span style="background: rgb(${r},${g},${b})" title="${d}/255"></span>`;
  });
  legend.innerHTML = `equal ${stops.join("")} 255 apart`;
}

setMode("side");
setFrame(view.frames.findIndex((f) => f.match === false) >= 0 ? view.frames.findIndex((f) => f.match === false) : 0);

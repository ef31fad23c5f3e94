// The 3D product preview (/console/products/{product}): the product's GLB in a WebGL viewer
// (three.js; orbit, zoom, fit), every mesh coloured by the material its part key resolves to
// on the server (the same rule `material.assign` applies for a render), click a part ↔ its
// row in the part list, parts without a material highlighted, and the map edited from here
// (assign a material to a key or a part name, or run the repair) through the API.
import "./preview.css";
import * as THREE from "three";
import { GLTFLoader } from "three/examples/jsm/loaders/GLTFLoader.js";
import { OrbitControls } from "three/examples/jsm/controls/OrbitControls.js";
import { ApiError, get, post, put } from "./api";
import type { components } from "./api.gen";

type MapView = components["schemas"]["MapView"];
type Definition = { base_color?: string; metallic?: number; roughness?: number };
type Part = { key: string; part: string; material: string; definition: Definition | null; missing: boolean };
type View = { product: string; glb: string; parts: Part[]; library: string[]; may_edit: boolean };

const root = document.getElementById("preview") as HTMLElement;
const view = JSON.parse(root.dataset.view || "{}") as View;
const byKey = new Map(view.parts.map((p) => [p.key, p]));
const rows = new Map([...document.querySelectorAll<HTMLTableRowElement>("#parts tr[data-key]")].map((r) => [r.dataset.key!, r]));

const $ = <T extends HTMLElement>(html: string): T => {
  const t = document.createElement("template");
  t.innerHTML = html.trim();
  return t.content.firstElementChild as T;
};

const bar = $<HTMLDivElement>(`<div class="pv-bar">
  <button id="preview-fit" title="the whole product in view (F)">Fit</button>
  <label><input id="preview-missing" type="checkbox"> highlight parts without a material</label>
  <span id="preview-picked" class="muted">click a part to find it in the list</span>
</div>`);
const canvasBox = $<HTMLDivElement>(`<div class="pv-canvas"></div>`);
// Not a <form>: its buttons call the API and reload the page themselves.
const editor = $<HTMLDivElement>(`<div class="pv-edit" id="map-edit" role="group" aria-label="material map">
  <b>Material map</b>
  <label>target <select id="map-target"></select></label>
  <label>material <select id="map-material"></select></label>
  <button id="map-assign" type="button" title="assign the material to the target, in the product's map">Assign</button>
  <button id="map-repair" type="button" title="give every part the last render listed as missing the chosen material">Repair missing</button>
  <span id="map-result" role="status"></span>
</div>`);
root.replaceChildren(bar, canvasBox, editor);

// ---- the scene ------------------------------------------------------------------------

const renderer = new THREE.WebGLRenderer({ antialias: true, preserveDrawingBuffer: true });
renderer.setPixelRatio(1);
renderer.outputColorSpace = THREE.SRGBColorSpace;
canvasBox.append(renderer.domElement);
renderer.domElement.id = "preview-canvas";
const scene = new THREE.Scene();
scene.background = new THREE.Color("#ffffff");
scene.add(new THREE.HemisphereLight(0xffffff, 0x8a8f99, 2.2));
const sun = new THREE.DirectionalLight(0xffffff, 1.6);
scene.add(sun);
const camera = new THREE.PerspectiveCamera(35, 1, 0.001, 1e6);
const controls = new OrbitControls(camera, renderer.domElement);
controls.enableDamping = false;
controls.addEventListener("change", () => draw());

const meshes: { mesh: THREE.Mesh; key: string; material: THREE.MeshStandardMaterial }[] = [];
let product: THREE.Object3D | null = null;
let picked: string | null = null;

function size() {
  const w = Math.max(320, canvasBox.clientWidth);
  const h = Math.max(320, Math.floor(window.innerHeight * 0.55));
  renderer.setSize(w, h);
  camera.aspect = w / h;
  camera.updateProjectionMatrix();
}

function draw() {
  sun.position.copy(camera.position);
  renderer.render(scene, camera);
}

/// Frames the product from the renders' default camera direction (35° around, 25° up).
function fit() {
  if (!product) return;
  const box = new THREE.Box3().setFromObject(product);
  const centre = box.getCenter(new THREE.Vector3());
  const radius = box.getSize(new THREE.Vector3()).length() / 2 || 1;
  const distance = radius / Math.sin(THREE.MathUtils.degToRad(camera.fov / 2)) * 1.05;
  const az = THREE.MathUtils.degToRad(35);
  const el = THREE.MathUtils.degToRad(25);
  camera.position.set(centre.x + distance * Math.cos(el) * Math.sin(az), centre.y + distance * Math.sin(el), centre.z + distance * Math.cos(el) * Math.cos(az));
  camera.near = distance / 100;
  camera.far = distance * 100;
  camera.updateProjectionMatrix();
  controls.target.copy(centre);
  controls.update();
  draw();
}

/// The part key of a mesh: the nearest node up the tree whose glTF extras carry one
/// (`glb_export` writes `part_key` into each occurrence's node).
function keyOf(o: THREE.Object3D | null): string | null {
  for (let n = o; n; n = n.parent) if (typeof n.userData?.part_key === "string") return n.userData.part_key;
  return null;
}

function colour(p: Part | undefined): { color: THREE.Color; metalness: number; roughness: number } {
  const d = p?.definition ?? {};
  return { color: new THREE.Color(d.base_color ?? "#9A9A9A"), metalness: d.metallic ?? 0, roughness: d.roughness ?? 0.5 };
}

function highlight() {
  const missingOn = (document.getElementById("preview-missing") as HTMLInputElement).checked;
  for (const m of meshes) {
    const p = byKey.get(m.key);
    const on = m.key === picked || (missingOn && !!p?.missing);
    m.material.emissive.set(on ? (m.key === picked ? "#2457c5" : "#d92d20") : "#000000");
    m.material.emissiveIntensity = on ? 0.55 : 0;
  }
  for (const [key, row] of rows) row.classList.toggle("picked", key === picked);
  draw();
}

function pick(key: string | null, from: "viewer" | "list") {
  picked = key;
  const label = document.getElementById("preview-picked")!;
  const p = key ? byKey.get(key) : undefined;
  label.textContent = p ? `${p.key} · part ${p.part} · ${p.material || "no material"}${p.missing ? " (unmapped: the default)" : ""}` : "no part there";
  root.dataset.picked = key ?? "";
  if (key && from === "viewer") rows.get(key)?.scrollIntoView({ block: "nearest" });
  const target = document.getElementById("map-target") as HTMLSelectElement;
  if (p) target.value = `key:${p.key}`;
  highlight();
}

const ray = new THREE.Raycaster();
/// The part key under the canvas point (x, y), in CSS pixels from the canvas's corner.
function keyAt(x: number, y: number): string | null {
  const c = renderer.domElement;
  ray.setFromCamera(new THREE.Vector2((x / c.clientWidth) * 2 - 1, -(y / c.clientHeight) * 2 + 1), camera);
  const hit = ray.intersectObjects(meshes.map((m) => m.mesh), false)[0];
  return hit ? keyOf(hit.object) : null;
}

// A click (not a drag) on the canvas picks the part under it.
let down: { x: number; y: number } | null = null;
renderer.domElement.addEventListener("pointerdown", (e) => (down = { x: e.clientX, y: e.clientY }));
renderer.domElement.addEventListener("pointerup", (e) => {
  if (!down || Math.hypot(e.clientX - down.x, e.clientY - down.y) > 4) return;
  const r = renderer.domElement.getBoundingClientRect();
  pick(keyAt(e.clientX - r.left, e.clientY - r.top), "viewer");
});
for (const [key, row] of rows) row.addEventListener("click", () => pick(key, "list"));
(document.getElementById("preview-fit") as HTMLButtonElement).onclick = fit;
(document.getElementById("preview-missing") as HTMLInputElement).onchange = highlight;
document.addEventListener("keydown", (e) => {
  if ((e.key === "f" || e.key === "F") && !(e.target as HTMLElement).closest("input, select, textarea")) fit();
});
window.addEventListener("resize", () => (size(), draw()));

/// For the browser test and for people who script the console: where on the canvas a part
/// can be seen (a point of its surface that is not hidden), and the colour its mesh has.
(window as unknown as { renderfleetPreview: unknown }).renderfleetPreview = {
  visiblePoint(key: string): [number, number] | null {
    const c = renderer.domElement;
    for (const m of meshes.filter((x) => x.key === key)) {
      const pos = m.mesh.geometry.getAttribute("position");
      const step = Math.max(1, Math.floor(pos.count / 400));
      for (let i = 0; i < pos.count; i += step) {
        const v = new THREE.Vector3().fromBufferAttribute(pos, i).applyMatrix4(m.mesh.matrixWorld).project(camera);
        if (Math.abs(v.x) > 0.98 || Math.abs(v.y) > 0.98) continue;
        const x = ((v.x + 1) / 2) * c.clientWidth;
        const y = ((1 - v.y) / 2) * c.clientHeight;
        // A little inside the silhouette: the surface, not its edge.
        for (const [dx, dy] of [[0, 0], [1, 1], [-1, -1], [1, -1], [-1, 1]])
          if (keyAt(x + dx, y + dy) === key && keyAt(x + dx + 1, y + dy) === key && keyAt(x + dx, y + dy + 1) === key) return [x + dx, y + dy];
      }
    }
    return null;
  },
  colourOf(key: string): string | null {
    const m = meshes.find((x) => x.key === key);
    return m ? `#${m.material.color.getHexString()}` : null;
  },
};

// ---- loading ----------------------------------------------------------------------------

size();
root.dataset.state = "loading";
new GLTFLoader().load(
  view.glb,
  (gltf) => {
    product = gltf.scene;
    product.traverse((o) => {
      const mesh = o as THREE.Mesh;
      if (!mesh.isMesh) return;
      const key = keyOf(mesh) ?? "";
      const { color, metalness, roughness } = colour(byKey.get(key));
      const material = new THREE.MeshStandardMaterial({ color, metalness, roughness });
      mesh.material = material;
      meshes.push({ mesh, key, material });
    });
    scene.add(product);
    product.updateMatrixWorld(true);
    fit();
    for (const [key, row] of rows) {
      const m = meshes.find((x) => x.key === key);
      row.dataset.viewerColour = m ? `#${m.material.color.getHexString()}` : "";
    }
    root.dataset.meshes = String(meshes.length);
    root.dataset.state = "ready";
  },
  undefined,
  (e) => {
    root.dataset.state = "error";
    canvasBox.replaceChildren($(`<p class="error" id="preview-error"></p>`));
    canvasBox.firstElementChild!.textContent = `the GLB could not be shown (${e instanceof Error ? e.message : String(e)}); this browser may lack WebGL`;
  },
);

// ---- editing the map --------------------------------------------------------------------

{
  const target = document.getElementById("map-target") as HTMLSelectElement;
  const parts = [...new Set(view.parts.map((p) => p.part))];
  target.innerHTML = "";
  for (const p of parts) target.append(new Option(`every instance of part ${p}`, `part:${p}`));
  for (const p of view.parts) target.append(new Option(`occurrence ${p.key}`, `key:${p.key}`));
  const material = document.getElementById("map-material") as HTMLSelectElement;
  for (const m of view.library) material.append(new Option(m, m));
  const result = document.getElementById("map-result")!;
  const say = (text: string, bad = false) => {
    result.textContent = text;
    result.className = bad ? "error" : "ok";
  };
  const path = `/v1/products/${encodeURIComponent(view.product)}/material-map`;
  const failed = (e: unknown) => say(e instanceof ApiError || e instanceof Error ? e.message : String(e), true);
  const refusal = !view.may_edit
    ? "editing the map needs the admin scope"
    : view.library.length === 0
      ? "the material library is empty: add materials first (renderctl materials apply)"
      : "";
  if (refusal) {
    for (const b of editor.querySelectorAll("button")) {
      b.disabled = true;
      b.title = refusal;
    }
  }
  (document.getElementById("map-assign") as HTMLButtonElement).onclick = async () => {
    const t = target.value.replace(/^(key|part):/, "");
    try {
      const current = await get<MapView>(path);
      await put<MapView>(path, { assignments: { ...current.assignments, [t]: material.value } });
      say(`${t} → ${material.value}; reloading`);
      window.location.reload();
    } catch (err) {
      failed(err);
    }
  };
  (document.getElementById("map-repair") as HTMLButtonElement).onclick = async () => {
    try {
      const r = await post<{ added: string[] }>(`${path}/repair`, { material: material.value });
      say(r.added.length ? `${r.added.length} part(s) given ${material.value}; reloading` : "the last render listed no part without a material");
      if (r.added.length) window.location.reload();
    } catch (err) {
      failed(err);
    }
  };
}

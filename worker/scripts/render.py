"""Render-fleet Blender script: GLB (+ material map) -> still, turntable frames or .blend.

Run (parameters come only from the JSON file, never from generated Python), with Blender
4.5 LTS as a Python module (PyPI's `bpy`, what the worker uses) or a Blender executable:

    python render.py -- PARAMS.json
    blender -b --factory-startup -noaudio --python-exit-code 3 \
        --python render.py -- PARAMS.json

or warm, one process serving many jobs (`-- --serve`): each stdin line is the path of a
PARAMS.json; every job starts from the factory startup scene, exactly as a fresh process
does, and ends with a line "renderfleet-done <code>" on stdout (0: done, 3: failed, the
reason on stderr as below). End of stdin ends the process.

PARAMS.json keys (the worker fills defaults; a missing required key is an error):
  mode            "still" | "turntable" | "blend"
  glb             absolute path of the input .glb
  material_map    absolute path of a material map JSON, or null / absent
  output          still: .png path; turntable: existing directory that receives
                  frame_%04d.png (absolute frame index); blend: .blend path
  report          path of the report JSON this script writes on success
  width, height, samples, seed (integers)
  background      "white" | "transparent" | "#RRGGBB" (exact in Standard at exposure 0)
  view_transform  "Standard" | "Filmic";  exposure (stops);  color_depth 8 | 16
  camera          {azimuth_deg, elevation_deg, auto_frame, margin, focal_length_mm}
  turntable only: frame_count, degrees, frame_range {start, end} inclusive, or null
  blend only:     compress, pack_resources
  threads         optional: Cycles threads, 0 or absent = one per core (a worker setting)

Material map: {"assignments": {part_key: material}, "materials": {material:
{"base_color": "#RRGGBB" (sRGB), "metallic": f, "roughness": f}}}. Parts are found
by the object custom property "part_key": Blender's glTF importer copies each glTF
node's `extras` onto the object it creates.

Report: {mode, mesh_objects, parts_with_key, materials_assigned (mesh objects whose
materials were replaced), materials_created, unmatched_assignments (sorted keys
with no object), bbox {min, max} (world, Z up, metres), frames (turntable only),
outputs, timings {script_start_unix, import_s, setup_s, render_s, save_s}}.

Errors: one stderr line "renderfleet-error: <problem and fix>", exit code 3. PNGs
are written without text chunks, so identical renders are byte-identical files.
"""
import json
import math
import os
import sys
import time
import traceback

import bpy
from mathutils import Vector

numpy = None  # imported in main(), so a broken Python environment gets a clear error

EXIT_CODE = 3
MODES = ("still", "turntable", "blend")
REQUIRED = ("mode", "glb", "output", "report", "width", "height", "samples", "seed",
            "background", "view_transform", "exposure", "color_depth", "camera")
REQUIRED_BY_MODE = {"turntable": ("frame_count", "degrees"), "blend": ("compress", "pack_resources")}
CAMERA_KEYS = ("azimuth_deg", "elevation_deg", "auto_frame", "margin", "focal_length_mm")
# Lighting is fixed (never derived from the background), so a coloured or transparent
# background does not tint the product: a dim neutral dome plus one key sun.
WORLD_LIGHT = (0.45, 0.45, 0.45)
KEY_SUN_STRENGTH = 3.0
KEY_SUN_OFFSET_DEG = (-40.0, 35.0)  # azimuth (negative = camera's left), extra elevation


class FleetError(Exception):
    """An expected failure; its message names the problem and the fix."""


def check(ok, message):
    if not ok:
        raise FleetError(message)


def load_params(path):
    """Read and validate everything up front, so bad params fail before a long render."""
    try:
        with open(path, encoding="utf-8") as f:
            p = json.load(f)
    except (OSError, ValueError) as e:
        raise FleetError(f"cannot read params {path!r}: {e}; write a valid JSON object there")
    check(isinstance(p, dict), "params JSON must be an object")
    cam = p.get("camera")
    missing = [k for k in REQUIRED + REQUIRED_BY_MODE.get(p.get("mode"), ()) if k not in p]
    missing += [f"camera.{k}" for k in CAMERA_KEYS if isinstance(cam, dict) and k not in cam]
    check(not missing, f"params missing required keys {missing}; the worker must fill defaults")
    check(p["mode"] in MODES, f"mode {p['mode']!r} is not one of {list(MODES)}")
    check(os.path.isfile(p["glb"]), f"glb {p['glb']!r} does not exist; pass the absolute path of the input .glb")
    for k, lo in (("width", 1), ("height", 1), ("samples", 1), ("seed", 0)):
        check(type(p[k]) is int and p[k] >= lo, f"{k} must be an integer >= {lo}, got {p[k]!r}")
    if p["background"] not in ("white", "transparent"):
        hex_to_linear(p["background"], "background")
    check(p["view_transform"] in ("Standard", "Filmic"), f"view_transform {p['view_transform']!r} must be 'Standard' or 'Filmic'")
    check(p["color_depth"] in (8, 16), f"color_depth {p['color_depth']!r} must be 8 or 16")
    check(0 <= float(cam["margin"]) < 0.5, f"camera.margin {cam['margin']!r} must be in [0, 0.5)")
    check(float(cam["focal_length_mm"]) > 0, "camera.focal_length_mm must be > 0")
    check(abs(float(cam["elevation_deg"])) < 90, "camera.elevation_deg must be within (-90, 90)")
    if p["mode"] == "turntable":
        n = p["frame_count"]
        check(type(n) is int and n >= 1, f"frame_count must be an integer >= 1, got {n!r}")
        check(float(p["degrees"]) > 0, "degrees must be > 0")
        fr = p.get("frame_range") or {"start": 0, "end": n - 1}
        check(type(fr["start"]) is int and type(fr["end"]) is int and 0 <= fr["start"] <= fr["end"] < n,
              f"frame_range {fr} must satisfy 0 <= start <= end < frame_count ({n})")
        p["frame_range"] = fr
        check(os.path.isdir(p["output"]), f"turntable output {p['output']!r} must be an existing directory")
    else:
        check(os.path.isdir(os.path.dirname(p["output"]) or "."), f"the directory of output {p['output']!r} does not exist")
    check(os.path.isdir(os.path.dirname(p["report"]) or "."), f"the directory of report {p['report']!r} does not exist")
    return p


def hex_to_linear(value, what):
    """sRGB '#RRGGBB' -> linear RGB: Principled BSDF and the world work in scene-linear."""
    try:
        check(isinstance(value, str) and len(value) == 7 and value[0] == "#", "")
        srgb = [int(value[i:i + 2], 16) / 255.0 for i in (1, 3, 5)]
    except (FleetError, ValueError):
        raise FleetError(f"{what} {value!r} is not a '#RRGGBB' colour")
    return tuple(c / 12.92 if c <= 0.04045 else ((c + 0.055) / 1.055) ** 2.4 for c in srgb)


def import_numpy():
    global numpy
    try:
        import numpy
    except ImportError:
        # Seen when PATH starts with a pyenv/venv python: Blender's embedded Python then
        # takes that prefix as its home and loses /usr/lib/python3/dist-packages.
        raise FleetError(f"Blender's Python cannot import numpy (sys.prefix={sys.prefix}); run Blender "
                         "with PYTHONHOME=/usr or a PATH without pyenv/venv pythons, and install python3-numpy")
    # Debian's numpy dropped numpy.bool, which the 3.4 glTF importer still uses.
    if "bool" not in numpy.__dict__:
        numpy.bool = bool


def import_glb(path):
    bpy.ops.wm.read_factory_settings(use_empty=True)
    try:
        result = bpy.ops.import_scene.gltf(filepath=path)
    except RuntimeError as e:
        raise FleetError(f"glTF import of {path!r} failed: {str(e).strip()}; re-export the GLB")
    check("FINISHED" in result, f"glTF import of {path!r} was cancelled; check the file is a valid GLB")
    meshes = sorted((o for o in bpy.data.objects if o.type == "MESH"), key=lambda o: o.name)
    check(meshes, f"{path!r} contains no meshes; check the STEP->GLB conversion")
    bpy.context.view_layer.update()  # matrix_world is needed for the bounding box
    return meshes


def apply_material_map(path, meshes):
    if not path:
        return {"materials_assigned": 0, "materials_created": 0, "unmatched_assignments": []}
    try:
        with open(path, encoding="utf-8") as f:
            mm = json.load(f)
        assignments, defs = dict(mm.get("assignments", {})), dict(mm.get("materials", {}))
    except (OSError, ValueError, TypeError, AttributeError) as e:
        raise FleetError(f"cannot read material map {path!r}: {e}; pass a valid material map JSON")
    unknown = sorted({str(m) for m in assignments.values() if m not in defs})
    check(not unknown, f"material map assigns undefined materials {unknown}; add them to `materials`")
    created = {}
    for name in sorted(set(assignments.values())):
        d = defs[name]
        try:
            colour = hex_to_linear(d.get("base_color"), f"material {name!r} base_color")
            metallic, roughness = float(d.get("metallic", 0.0)), float(d.get("roughness", 0.5))
        except (AttributeError, TypeError, ValueError):
            raise FleetError(f"material {name!r} is {d!r}; give base_color '#RRGGBB' and numeric metallic/roughness")
        mat = bpy.data.materials.new(name)
        mat.use_nodes = True
        bsdf = mat.node_tree.nodes["Principled BSDF"].inputs
        bsdf["Base Color"].default_value = (*colour, 1.0)
        bsdf["Metallic"].default_value, bsdf["Roughness"].default_value = metallic, roughness
        created[name] = mat
    matched, assigned = set(), 0
    for obj in meshes:
        mat = created.get(assignments.get(obj.get("part_key")))
        if mat is None:
            continue
        matched.add(obj["part_key"])
        if not obj.material_slots:
            obj.data.materials.append(None)
        for slot in obj.material_slots:
            # Object-linked slots: glTF instances may share one mesh datablock while
            # their part keys (and so their materials) differ.
            slot.link = "OBJECT"
            slot.material = mat
        assigned += 1
    return {"materials_assigned": assigned, "materials_created": len(created),
            "unmatched_assignments": sorted(set(assignments) - matched)}


def world_points(meshes):
    """Corners of every object's local box in world space: a tighter hull than the global box."""
    return numpy.array([tuple(o.matrix_world @ Vector(c)) for o in meshes for c in o.bound_box], dtype=numpy.float64)


def view_dir(az_deg, el_deg):
    """Unit vector from the target to the camera; azimuth 0 = front (-Y), CCW seen from +Z."""
    az, el = math.radians(az_deg), math.radians(el_deg)
    return numpy.array([math.sin(az) * math.cos(el), -math.cos(az) * math.cos(el), math.sin(el)])


def fit_view(pts, centre, back, tan_x, tan_y, centred):
    """Camera distance along `back` from `centre` at which every point projects inside
    +-tan_x/tan_y, plus the projected centre (tan units) when `centred` (for lens shift)."""
    fwd = -back
    right = numpy.cross(fwd, [0.0, 0.0, 1.0])
    right /= numpy.linalg.norm(right)
    up = numpy.cross(right, fwd)
    rel = pts - centre
    x, y, depth = rel @ right, rel @ up, rel @ fwd
    # Aimed at the box centre the fit is closed-form: the tightest point decides.
    d_hi = float((numpy.maximum(numpy.abs(x) / tan_x, numpy.abs(y) / tan_y) - depth).max())
    if not centred:
        return d_hi, 0.0, 0.0

    def spans(d):
        u, v = x / (depth + d), y / (depth + d)
        return u.min(), u.max(), v.min(), v.max()

    # With lens shift only the projected spread must fit; it shrinks as the camera
    # backs away, so bisect between "just in front of the nearest point" and d_hi.
    d_lo = max(float(-depth.min()), 0.0) + 1e-9
    for _ in range(60):
        mid = (d_lo + d_hi) / 2
        u0, u1, v0, v1 = spans(mid)
        if u1 - u0 <= 2 * tan_x and v1 - v0 <= 2 * tan_y:
            d_hi = mid
        else:
            d_lo = mid
    u0, u1, v0, v1 = spans(d_hi)
    return d_hi, float(u0 + u1) / 2, float(v0 + v1) / 2


def look_along(direction):
    return Vector(direction).to_track_quat("-Z", "Y").to_euler()


def build_scene(p, meshes):
    scene = bpy.context.scene
    pts = world_points(meshes)
    lo, hi = pts.min(axis=0), pts.max(axis=0)
    centre = (lo + hi) / 2
    radius = max(float(numpy.linalg.norm(hi - lo)) / 2, 1e-6)
    cam_p, w, h = p["camera"], p["width"], p["height"]
    focal = float(cam_p["focal_length_mm"])
    half = 18.0 / focal  # a 36 mm sensor across the longer side of the frame
    tan_x, tan_y = (half, half * h / w) if w >= h else (half * w / h, half)
    keep = 1.0 - 2.0 * float(cam_p["margin"])
    az, el = float(cam_p["azimuth_deg"]), float(cam_p["elevation_deg"])
    turntable = p["mode"] == "turntable"
    shift_u = shift_v = 0.0
    if cam_p["auto_frame"] and turntable:
        # One distance for the whole turn (so every chunk of it agrees) and no lens
        # shift: the turning axis stays in the middle of the frame.
        n = p["frame_count"]
        dist = max(fit_view(pts, centre, view_dir(az + float(p["degrees"]) * i / n, el),
                            tan_x * keep, tan_y * keep, False)[0] for i in range(n))
    elif cam_p["auto_frame"]:
        dist, shift_u, shift_v = fit_view(pts, centre, view_dir(az, el), tan_x * keep, tan_y * keep, True)
    else:
        # Bounding-sphere fit: independent of the view angle, so azimuth never zooms.
        dist = radius / math.sin(math.atan(min(tan_x, tan_y) * keep))
    dist = max(dist, radius * 0.01)

    rig = bpy.data.objects.new("rf_rig", None)
    rig.location = Vector(centre)
    scene.collection.objects.link(rig)
    cam_data = bpy.data.cameras.new("rf_camera")  # sensor fixed so the fit above holds
    cam_data.lens, cam_data.sensor_width, cam_data.sensor_height = focal, 36.0, 36.0
    cam_data.sensor_fit = "HORIZONTAL" if w >= h else "VERTICAL"
    cam_data.shift_x, cam_data.shift_y = shift_u / (2 * half), shift_v / (2 * half)  # in frame widths
    cam_data.clip_start = max(dist - radius, 0.0) * 0.5 + radius * 1e-3
    cam_data.clip_end = (dist + radius) * 2.0
    cam = bpy.data.objects.new("rf_camera", cam_data)
    scene.collection.objects.link(cam)
    cam.parent = rig
    back = view_dir(az, el)
    cam.location, cam.rotation_euler = Vector(back * dist), look_along(-back)
    scene.camera = cam

    # The key light rides on the rig, so a turntable looks like the product turning
    # under fixed studio lights; a sun ignores distance, so model size does not matter.
    sun = bpy.data.objects.new("rf_key", bpy.data.lights.new("rf_key", "SUN"))
    sun.data.energy, sun.data.angle = KEY_SUN_STRENGTH, math.radians(10.0)
    sun.rotation_euler = look_along(-view_dir(az + KEY_SUN_OFFSET_DEG[0], min(el + KEY_SUN_OFFSET_DEG[1], 85.0)))
    scene.collection.objects.link(sun)
    sun.parent = rig

    if turntable:
        n = p["frame_count"]
        # Keys at 0 and n (one past the last frame): frame i sits at degrees*i/n, so a
        # full turn never renders its first view twice.
        for frame, angle in ((0, 0.0), (n, float(p["degrees"]))):
            rig.rotation_euler = (0.0, 0.0, math.radians(angle))
            rig.keyframe_insert("rotation_euler", index=2, frame=frame)
        for k in rig.animation_data.action.fcurves[0].keyframe_points:
            k.interpolation = "LINEAR"  # the preference for new keys is ignored by keyframe_insert
        scene.frame_start, scene.frame_end = 0, n - 1
    setup_world(scene, p["background"])
    return {"min": [float(v) for v in lo], "max": [float(v) for v in hi]}


def setup_world(scene, background):
    # Camera rays see the background colour at strength 1, every other ray sees the
    # fixed light colour: white is then exactly 1.0 linear -> 255 in Standard.
    world = bpy.data.worlds.new("rf_world")
    world.use_nodes = True
    nt = world.node_tree
    nt.nodes.clear()
    light_bg, cam_bg = nt.nodes.new("ShaderNodeBackground"), nt.nodes.new("ShaderNodeBackground")
    light_bg.inputs["Color"].default_value = (*WORLD_LIGHT, 1.0)
    colour = (1.0, 1.0, 1.0) if background in ("white", "transparent") else hex_to_linear(background, "background")
    cam_bg.inputs["Color"].default_value = (*colour, 1.0)
    mix, path, out = (nt.nodes.new(t) for t in ("ShaderNodeMixShader", "ShaderNodeLightPath", "ShaderNodeOutputWorld"))
    nt.links.new(path.outputs["Is Camera Ray"], mix.inputs["Fac"])
    nt.links.new(light_bg.outputs["Background"], mix.inputs[1])
    nt.links.new(cam_bg.outputs["Background"], mix.inputs[2])
    nt.links.new(mix.outputs["Shader"], out.inputs["Surface"])
    scene.world = world


def render_settings(scene, p):
    r, c = scene.render, scene.cycles
    r.engine = "CYCLES"
    c.device, c.feature_set, c.shading_system = "CPU", "SUPPORTED", False
    c.samples, c.seed, c.use_animated_seed = p["samples"], p["seed"], False
    # Adaptive sampling, path guiding and time limits tie noise to timing or threads.
    c.use_adaptive_sampling, c.time_limit, c.use_guiding = False, 0.0, False
    # Blender 4.2 replaced progressive multi-jitter with (tabulated) Sobol; both are fixed.
    c.sampling_pattern = "PROGRESSIVE_MULTI_JITTER" if bpy.app.version < (4, 2, 0) else "TABULATED_SOBOL"
    c.sample_offset = 0
    c.scrambling_distance, c.auto_scrambling_distance = 1.0, False
    # Debian builds Cycles without OpenImageDenoise: denoising would fail the render.
    c.use_denoising = c.use_preview_denoising = False
    for vl in scene.view_layers:
        vl.cycles.use_denoising = vl.cycles.denoising_store_passes = False
    c.max_bounces, c.diffuse_bounces, c.glossy_bounces = 12, 4, 4
    c.transmission_bounces, c.volume_bounces, c.transparent_max_bounces = 12, 0, 8
    c.caustics_reflective = c.caustics_refractive = False
    c.sample_clamp_direct, c.sample_clamp_indirect = 0.0, 10.0
    c.film_exposure, c.pixel_filter_type, c.filter_width = 1.0, "BLACKMAN_HARRIS", 1.5
    c.use_auto_tile, c.tile_size = True, 2048
    r.resolution_x, r.resolution_y, r.resolution_percentage = p["width"], p["height"], 100
    r.pixel_aspect_x = r.pixel_aspect_y = 1.0
    r.film_transparent = p["background"] == "transparent"
    r.use_border = r.use_compositing = r.use_sequencer = False
    r.use_persistent_data = p["mode"] == "turntable"  # keep the BVH between frames
    # A worker setting, not the node's (it never changes the pixels): one thread per render
    # lets a host run several turntable chunks side by side.
    threads = int(p.get("threads") or 0)
    r.threads_mode, r.threads = ("FIXED", threads) if threads > 0 else ("AUTO", r.threads)
    for attr in [a for a in dir(r) if a.startswith("use_stamp")]:
        setattr(r, attr, False)
    scene.display_settings.display_device = "sRGB"
    vs = scene.view_settings
    vs.view_transform, vs.look, vs.exposure, vs.gamma = p["view_transform"], "None", float(p["exposure"]), 1.0
    vs.use_curve_mapping = False
    scene.sequencer_colorspace_settings.name = "sRGB"
    im = r.image_settings
    im.file_format = "PNG"
    im.color_mode = "RGBA" if r.film_transparent else "RGB"
    im.color_depth, im.compression = str(p["color_depth"]), 15
    r.use_file_extension = False  # write exactly the requested path
    r.dither_intensity = 0.0  # dither noise would make flat backgrounds miss their exact colour


def strip_png_text(path):
    """Drop text chunks: Cycles stores render times there, so identical renders would
    otherwise differ byte-wise (and in content hash)."""
    with open(path, "rb") as f:
        data = f.read()
    out, i = [data[:8]], 8
    while i + 8 <= len(data):  # chunk: length, type, data, CRC
        end = i + 12 + int.from_bytes(data[i:i + 4], "big")
        out += [] if data[i + 4:i + 8] in (b"tEXt", b"zTXt", b"iTXt") else [data[i:end]]
        i = end
    with open(path, "wb") as f:
        f.write(b"".join(out))


def render_to(scene, path):
    scene.render.filepath = path
    try:
        bpy.ops.render.render(write_still=True)
    except RuntimeError as e:
        raise FleetError(f"render to {path!r} failed: {str(e).strip()}; check the path is writable and has space")
    check(os.path.isfile(path), f"Cycles wrote no image at {path!r}; check the path is writable and has space")
    strip_png_text(path)
    return path


def render(scene, p):
    if p["mode"] == "still":
        return [render_to(scene, p["output"])], None
    frames = list(range(p["frame_range"]["start"], p["frame_range"]["end"] + 1))
    outputs = []
    for i in frames:
        scene.frame_set(i)
        outputs.append(render_to(scene, os.path.join(p["output"], f"frame_{i:04d}.png")))
    return outputs, frames


def save_blend(p):
    if p["pack_resources"]:
        bpy.ops.file.pack_all()
    try:
        bpy.ops.wm.save_as_mainfile(filepath=p["output"], compress=bool(p["compress"]), relative_remap=False)
    except RuntimeError as e:
        raise FleetError(f"cannot save {p['output']!r}: {str(e).strip()}; check the directory is writable")
    return [p["output"]]


def run(params_path):
    t0 = time.time()
    # Every job starts from the factory startup file: what a fresh `blender -b
    # --factory-startup` has, what `bpy` as a Python module may not (it reads the user's
    # startup file), and what a warm process must get back after a job.
    bpy.ops.wm.read_homefile(use_factory_startup=True)
    try:
        p = load_params(params_path)
    except (TypeError, ValueError, KeyError, AttributeError) as e:
        raise FleetError(f"params have a value of the wrong type ({type(e).__name__}: {e}); fix the params JSON")
    import_numpy()
    meshes = import_glb(p["glb"])
    t1 = time.time()
    report = {"mode": p["mode"], "mesh_objects": len(meshes),
              "parts_with_key": sum(1 for o in meshes if o.get("part_key") is not None),
              **apply_material_map(p.get("material_map"), meshes), "bbox": build_scene(p, meshes)}
    scene = bpy.context.scene
    render_settings(scene, p)
    t2 = time.time()
    blend = p["mode"] == "blend"
    outputs, frames = (save_blend(p), None) if blend else render(scene, p)
    t3 = time.time()
    report.update({"frames": frames} if frames is not None else {}, outputs=outputs)
    report["timings"] = {"script_start_unix": t0, "import_s": t1 - t0, "setup_s": t2 - t1,
                         "render_s": 0.0 if blend else t3 - t2, "save_s": t3 - t2 if blend else 0.0}
    try:
        with open(p["report"], "w", encoding="utf-8") as f:
            json.dump(report, f, indent=2)
    except OSError as e:
        raise FleetError(f"cannot write report {p['report']!r}: {e}; check the directory is writable")


def attempt(job):
    """Runs `job`, turning every failure into the one-line contract; returns the exit code
    and the error's message (empty on success)."""
    try:
        job()
        return 0, ""
    except FleetError as e:
        message = str(e)
    except Exception as e:  # anything unexpected still yields the one-line contract
        traceback.print_exc()
        message = f"unexpected {type(e).__name__}: {e}; this is a bug in render.py, report it with the params file"
    print(f"renderfleet-error: {message}", file=sys.stderr, flush=True)
    return EXIT_CODE, message


def serve():
    """Warm mode: one job per stdin line. Nothing of a job outlives it: the next starts from
    the factory startup file (what `--factory-startup` gives a new process), and this script
    keeps no state between jobs but the numpy module."""
    for line in sys.stdin:
        path = line.strip()
        if not path:
            continue
        code, message = attempt(lambda: run(path))
        # On a line of its own even if Blender's C output left one unfinished; the reason is
        # on it too, so the worker need not wait for stderr.
        message = message.replace("\n", " ")
        sys.stdout.write(f"\nrenderfleet-done {code} {message}\n")
        sys.stdout.flush()


def main():
    args = sys.argv[sys.argv.index("--") + 1:] if "--" in sys.argv else []
    if args == ["--serve"]:
        return attempt(serve)[0]
    if len(args) != 1:
        return attempt(lambda: check(False, "expected exactly one argument after `--`: the PARAMS.json path (or --serve)"))[0]
    return attempt(lambda: run(args[0]))[0]


if __name__ == "__main__":
    # Success leaves Blender to quit by itself, as it always has after a -b script.
    if main():
        sys.exit(EXIT_CODE)

"""STEP -> GLB with OpenCASCADE through the `cascadio` package (run by the worker's
`glb_export` module and the legacy pipeline).

Usage: python3 step_to_glb.py PARAMS.json
PARAMS.json: {"input": STEP path, "output": GLB path, "tol_linear": float,
              "tol_angular": float, "tol_relative": bool, "merge_primitives": bool,
              "use_parallel": bool}

Parameters come only from the JSON file. On failure the last line on stderr starts with
`renderfleet-error: ` and says what went wrong and what to do; the exit status is non-zero.
"""
import json
import os
import sys


def fail(message, status=2):
    print(f"renderfleet-error: {message}", file=sys.stderr, flush=True)
    sys.exit(status)


def main():
    if len(sys.argv) != 2:
        fail("usage: step_to_glb.py PARAMS.json")
    with open(sys.argv[1], encoding="utf-8") as f:
        p = json.load(f)
    try:
        import cascadio
    except ImportError as e:
        fail(f"cannot import cascadio ({e}); install it with `pip install cascadio` for the worker's [tools] python", 4)
    src, dst = p["input"], p["output"]
    status = cascadio.step_to_glb(
        src,
        dst,
        tol_linear=float(p["tol_linear"]),
        tol_angular=float(p["tol_angular"]),
        tol_relative=bool(p["tol_relative"]),
        merge_primitives=bool(p["merge_primitives"]),
        use_parallel=bool(p["use_parallel"]),
    )
    # cascadio returns non-zero (and writes nothing) when OpenCASCADE cannot read the file;
    # its reader's own message is on stdout/stderr above this line.
    if status != 0 or not os.path.exists(dst) or os.path.getsize(dst) == 0:
        fail("OpenCASCADE could not read the STEP file (see the converter's message above); "
             "the file is damaged or not STEP: re-export it from the CAD system")


if __name__ == "__main__":
    main()

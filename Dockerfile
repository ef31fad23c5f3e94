# syntax=docker/dockerfile:1
#
# Two images: `runtime` (the default target) runs `coordinator` (default), `worker` for the
# tool-free modules, and `renderctl`; `render-worker` adds what render hosts need (Blender 4.5
# LTS as a Python module, ffmpeg, numpy, cascadio) and runs `worker`.
#   docker build -t renderfleet .
#   docker build -t renderfleet-render-worker --target render-worker .
#   docker run renderfleet                # coordinator
#   docker run renderfleet-render-worker  # a render host's worker
#   docker run renderfleet renderctl --help
# Configuration comes from the environment (DATABASE_URL, AMQP_URL, RENDERFLEET_*) or a file
# given with RENDERFLEET_CONFIG; see ops/coordinator.example.toml and ops/worker.example.toml.

# ---- build ----------------------------------------------------------------------------------
FROM rust:1-bookworm AS build
WORKDIR /src

# Only what the workspace needs (BuildKit then sends just these paths, never target/).
COPY Cargo.toml Cargo.lock ./
COPY shared shared
COPY platform platform
COPY coordinator coordinator
COPY worker worker
COPY tests tests
# Embedded into the coordinator at compile time (refinery::embed_migrations!).
COPY migrations migrations

# The registry and target caches survive between builds; the binaries are copied out of the
# cache mount within the same step.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/usr/local/cargo/git \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked --bins \
 && mkdir -p /out \
 && cp target/release/coordinator target/release/worker target/release/renderctl /out/

# ---- runtime --------------------------------------------------------------------------------
FROM debian:bookworm-slim AS runtime

RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates \
 && rm -rf /var/lib/apt/lists/* \
 && groupadd --system --gid 10001 renderfleet \
 && useradd --system --uid 10001 --gid renderfleet --no-create-home --home-dir /nonexistent \
      --shell /usr/sbin/nologin renderfleet

COPY --from=build /out/coordinator /out/worker /out/renderctl /usr/local/bin/

# Numeric, so that runtimes enforcing "run as non-root" can verify it.
USER 10001:10001
WORKDIR /tmp

# coordinator: HTTP API, /healthz, /readyz, /metrics (set RENDERFLEET_HTTP_ADDR=0.0.0.0:8080).
# worker: /metrics, /healthz (set RENDERFLEET_METRICS_ADDR=0.0.0.0:9464).
EXPOSE 8080 9464

# Both binaries drain on SIGTERM (the default stop signal); exec form keeps them PID 1 so
# they receive it directly.
CMD ["coordinator"]

# ---- render worker ----------------------------------------------------------------------------
# Blender 4.5 LTS as a Python module (PyPI's bpy, for Debian 12's Python 3.11; it links a few
# X11 client libraries but never opens a display) in /opt/bpy-venv; ffmpeg and numpy from
# Debian; cascadio (OpenCASCADE STEP -> GLB) from PyPI in a venv over Debian's Python, so it
# sees the same numpy.
FROM runtime AS render-worker
USER root
RUN apt-get update \
 && apt-get install -y --no-install-recommends python3-numpy python3-venv ffmpeg \
      libx11-6 libxrender1 libxfixes3 libxi6 libxkbcommon0 libsm6 libgl1 libxext6 libxxf86vm1 \
 && rm -rf /var/lib/apt/lists/* \
 && python3 -m venv /opt/bpy-venv \
 && /opt/bpy-venv/bin/pip install --no-cache-dir bpy==4.5.15 \
 && python3 -m venv --system-site-packages /opt/cad-venv \
 && /opt/cad-venv/bin/pip install --no-cache-dir cascadio==0.1.1 \
 && mkdir -p /var/lib/renderfleet/artifacts /var/lib/renderfleet/cad \
 && chown -R 10001:10001 /var/lib/renderfleet
ENV RENDERFLEET_TOOLS__PYTHON=/opt/cad-venv/bin/python \
    RENDERFLEET_TOOLS__BLENDER=/opt/bpy-venv/bin/python
USER 10001:10001
CMD ["worker"]

//! The worker: a stateless process on a render host that runs the modules it is configured
//! for. [`run`] connects, serves `/metrics`, and runs the supervised consumer until shutdown.

pub mod artifacts;
mod blender;
mod consumer;
pub mod geometry;
pub mod module;
pub mod modules;
mod scripts;
mod tools;

use axum::routing::get;
use metrics_exporter_prometheus::PrometheusHandle;
use renderfleet_platform::broker::{self, Topology};
use renderfleet_shared::config::WorkerConfig;
use renderfleet_shared::metrics as m;
use std::sync::Arc;
use tokio_util::sync::CancellationToken;

/// What every task of this worker shares.
pub(crate) struct Worker {
    pub(crate) config: WorkerConfig,
    pub(crate) id: String,
    pub(crate) host: String,
    pub(crate) topology: Topology,
    pub(crate) modules: consumer::Modules,
    /// Tool versions and per-module build fingerprints, sent in every heartbeat.
    pub(crate) tools: std::collections::BTreeMap<String, String>,
    pub(crate) fingerprints: std::collections::BTreeMap<String, String>,
    pub(crate) withdrawn: consumer::Withdrawn,
    pub(crate) health: consumer::Health,
}

#[derive(Debug, thiserror::Error)]
pub enum StartupError {
    #[error(transparent)]
    Modules(#[from] modules::SelectError),
    #[error(transparent)]
    Store(#[from] artifacts::StoreError),
    #[error("cannot write the tool scripts under {dir}: {source}; check `scratch_dir` (RENDERFLEET_SCRATCH_DIR)")]
    Scripts { dir: String, source: std::io::Error },
    #[error("the worker has no modules to run; set `modules` (RENDERFLEET_MODULES=noop,sleep,fail)")]
    NoModules,
    #[error("`concurrency` must be at least 1 (RENDERFLEET_CONCURRENCY)")]
    NoSlots,
    #[error(transparent)]
    Broker(#[from] broker::Unreachable),
    #[error("cannot listen for metrics on {addr}: {source}; free the port, or set RENDERFLEET_METRICS_ADDR (empty disables it)")]
    Listen { addr: String, source: std::io::Error },
}

/// How a worker's broker connection is named (management UI, `rabbitmqctl`).
pub(crate) fn connection_name(prefix: &str, worker_id: &str) -> String {
    format!("worker {prefix} {worker_id}")
}

/// Runs the worker until `shutdown` is cancelled and the tasks in hand are drained.
pub async fn run(config: WorkerConfig, metrics: PrometheusHandle, shutdown: CancellationToken) -> Result<(), StartupError> {
    if config.concurrency == 0 {
        return Err(StartupError::NoSlots);
    }
    let scratch = if config.scratch_dir.is_empty() { std::env::temp_dir() } else { config.scratch_dir.clone().into() };
    let scripts =
        scripts::Scripts::install(&scratch).await.map_err(|source| StartupError::Scripts { dir: scratch.display().to_string(), source })?;
    let env = Arc::new(module::Env {
        store: artifacts::Store::open(&config.artifacts_dir).await?,
        cad_dir: config.cad_dir.clone().into(),
        scratch: scratch.clone(),
        tools: config.tools.clone(),
        warm_blender: config.blender.warm.then(|| {
            let b = &config.blender;
            blender::warm::Pool::new(&config.tools.blender, &scripts.render, &scratch, b.max_jobs, b.max_rss_mib)
        }),
        blender: config.blender.clone(),
        scripts,
    });
    let selected = modules::select(&config.modules, &env).await?;
    if selected.modules.is_empty() {
        return Err(StartupError::NoModules);
    }
    let host = gethostname::gethostname().to_string_lossy().into_owned();
    let id = if config.worker_id.is_empty() { format!("{host}-{}", std::process::id()) } else { config.worker_id.clone() };
    let metrics_server = if config.metrics_addr.is_empty() {
        None
    } else {
        let listener = tokio::net::TcpListener::bind(&config.metrics_addr)
            .await
            .map_err(|source| StartupError::Listen { addr: config.metrics_addr.clone(), source })?;
        let app = axum::Router::new()
            .route("/metrics", get(move || std::future::ready(metrics.render())))
            .route("/healthz", get(|| async { "ok\n" }));
        let stop = shutdown.clone();
        Some(tokio::spawn(async move { axum::serve(listener, app).with_graceful_shutdown(stop.cancelled_owned()).await }))
    };
    let conn = broker::connect(&config.amqp_url, &connection_name(&config.broker_prefix, &id), "worker", config.startup_timeout).await?;
    metrics::gauge!(m::WORKER_SLOTS).set(f64::from(config.concurrency));
    let health = consumer::Health::new(config.quarantine.clone());
    let worker = Arc::new(Worker {
        topology: Topology::new(config.broker_prefix.clone()),
        config,
        id,
        host,
        modules: selected.modules,
        tools: selected.tools,
        fingerprints: selected.fingerprints,
        withdrawn: Default::default(),
        health,
    });
    tracing::info!(worker_id = %worker.id, "worker started");
    consumer::supervise(worker.clone(), conn, shutdown).await;
    if let Some(server) = metrics_server {
        let _ = server.await;
    }
    tracing::info!(worker_id = %worker.id, "worker stopped");
    Ok(())
}

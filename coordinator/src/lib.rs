//! The coordinator: HTTP API, dispatch, outbox publisher, result consumer and lost-task
//! recovery, all sharing one PostgreSQL pool. [`run`] wires them together; the binary only
//! loads configuration and waits for a signal.

pub mod api;
pub mod broker;
pub mod console;
pub mod db;
pub mod dispatch;
pub mod events;
pub mod outbox;
pub mod recovery;
pub mod results;
pub mod rollout;

use deadpool_postgres::Pool;
use metrics_exporter_prometheus::PrometheusHandle;
use renderfleet_shared::config::CoordinatorConfig;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// What the roles share.
#[derive(Clone)]
pub struct AppState {
    pub config: Arc<CoordinatorConfig>,
    pub pool: Pool,
    /// Hands tasks queued by a committed transaction to this coordinator's publisher.
    pub hot: outbox::Hot,
    /// True while a broker session is up (for `/readyz`).
    pub broker_up: Arc<AtomicBool>,
    pub metrics: PrometheusHandle,
    /// Distinguishes coordinators sharing a broker (consumer tags, logs).
    pub instance: String,
    /// Up to when the result consumer had read every heartbeat: the recovery sweeper
    /// judges no attempt lost on silence it could not have heard.
    pub evidence: Arc<recovery::Evidence>,
    /// Wakes the rollout reconciler: a run of a render request ended.
    pub rollout_kick: Arc<tokio::sync::Notify>,
    /// Wake the events publisher and the webhook deliverer: a request's run ended, so an
    /// event may have been written.
    pub events_kick: Arc<tokio::sync::Notify>,
    pub webhooks_kick: Arc<tokio::sync::Notify>,
    /// The broker channel for control messages (cancellations) while a session is up.
    pub control: Arc<tokio::sync::Mutex<Option<lapin::Channel>>>,
}

impl AppState {
    /// A run of a render request ended here: gates, events and webhooks may have news.
    pub fn request_run_ended(&self) {
        self.rollout_kick.notify_one();
        self.events_kick.notify_one();
        self.webhooks_kick.notify_one();
    }

    /// Node defaults for planning graphs (attempts, timeouts).
    pub fn node_defaults(&self) -> renderfleet_shared::graph::NodeDefaults {
        let n = &self.config.nodes;
        renderfleet_shared::graph::NodeDefaults { max_attempts: n.max_attempts, timeout: n.timeout, max_timeout: n.max_timeout }
    }

    /// How results and losses are applied.
    pub fn policy(&self) -> results::apply::Policy<'_> {
        results::apply::Policy {
            retry: &self.config.retry,
            heartbeat_timeout: self.config.recovery.heartbeat_timeout,
            defaults: self.node_defaults(),
            verified_senders: self.config.results.verify_sender,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum StartupError {
    #[error(transparent)]
    Db(#[from] db::DbError),
    #[error(transparent)]
    Broker(#[from] renderfleet_platform::broker::Unreachable),
    #[error("cannot listen on {addr}: {source}; free the port or set RENDERFLEET_HTTP_ADDR (RENDERFLEET_METRICS_ADDR for metrics)")]
    Listen { addr: String, source: std::io::Error },
    #[error(transparent)]
    Auth(#[from] api::auth::AuthConfigError),
}

/// Runs the coordinator until `shutdown` is cancelled.
pub async fn run(config: CoordinatorConfig, metrics: PrometheusHandle, shutdown: CancellationToken) -> Result<(), StartupError> {
    let tokens = api::auth::Tokens::from_config(&config.auth.tokens, config.auth.open)?;
    if tokens.is_open() {
        tracing::warn!("the API is open to anyone (auth.open = true and no tokens): for a development machine only");
    }
    let pool = db::connect(&config.database_url, config.db_pool_size, config.startup_timeout).await?;
    let applied = db::migrate(&pool).await?;
    tracing::info!(applied, "database ready");
    let instance = format!("{}-{}", gethostname::gethostname().to_string_lossy(), std::process::id());
    let conn_name = connection_name(&config.broker_prefix, &instance);
    let conn = renderfleet_platform::broker::connect(&config.amqp_url, &conn_name, "coordinator", config.startup_timeout).await?;
    let listener = tokio::net::TcpListener::bind(&config.http_addr)
        .await
        .map_err(|source| StartupError::Listen { addr: config.http_addr.clone(), source })?;
    let addr = listener.local_addr().map(|a| a.to_string()).unwrap_or_default();
    let metrics_listener = match config.metrics_addr.as_str() {
        "" => None,
        a => Some(tokio::net::TcpListener::bind(a).await.map_err(|source| StartupError::Listen { addr: a.to_string(), source })?),
    };

    let state = AppState {
        config: Arc::new(config),
        pool,
        hot: outbox::Hot::default(),
        broker_up: Arc::new(AtomicBool::new(false)),
        metrics,
        instance,
        evidence: Arc::default(),
        rollout_kick: Arc::new(tokio::sync::Notify::new()),
        events_kick: Arc::new(tokio::sync::Notify::new()),
        webhooks_kick: Arc::new(tokio::sync::Notify::new()),
        control: Arc::new(tokio::sync::Mutex::new(None)),
    };
    let tasks = TaskTracker::new();
    let background = shutdown.child_token();
    tasks.spawn(broker::supervise(state.clone(), conn, background.clone()));
    tasks.spawn(recovery::run(state.clone(), background.clone()));
    tasks.spawn(rollout::run(state.clone(), background.clone()));
    let webhooks =
        events::webhooks::deliver_loop(state.pool.clone(), state.config.webhooks.clone(), state.webhooks_kick.clone(), background.clone());
    tasks.spawn(webhooks);
    tasks.close();

    if let Some(l) = metrics_listener {
        let app = api::metrics_router(state.clone());
        let stop = shutdown.clone();
        tracing::info!(addr = %l.local_addr().map(|a| a.to_string()).unwrap_or_default(), "metrics listening");
        tasks.spawn(async move {
            if let Err(e) = axum::serve(l, app).with_graceful_shutdown(stop.cancelled_owned()).await {
                tracing::error!(error = %e, "metrics server failed");
            }
        });
    }
    tracing::info!(%addr, "coordinator listening");
    let api = api::router(state.clone(), tokens.clone());
    let app = api.clone().merge(console::router(state, tokens, api));
    let served = axum::serve(listener, app).with_graceful_shutdown(shutdown.clone().cancelled_owned()).await;
    if let Err(e) = served {
        tracing::error!(error = %e, "HTTP server failed");
    }
    background.cancel();
    tasks.wait().await;
    tracing::info!("coordinator stopped");
    Ok(())
}

/// How this coordinator's broker connection is named (management UI, `rabbitmqctl`).
pub fn connection_name(prefix: &str, instance: &str) -> String {
    format!("coordinator {prefix} {instance}")
}

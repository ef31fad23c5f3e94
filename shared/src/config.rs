//! Configuration of both binaries: one struct each, serde defaults, an optional TOML file and
//! environment overrides on top.
//!
//! Environment: `DATABASE_URL`, `AMQP_URL`, and `RENDERFLEET_<KEY>` where `<KEY>` is the
//! setting's name in upper case and `__` separates sections
//! (`RENDERFLEET_OUTBOX__BATCH_SIZE=200`). Variables that name no setting of this binary are
//! returned as ignored rather than refused, since one environment often serves several
//! binaries. Pure: the caller reads the file and the environment.

use serde::{de::DeserializeOwned, Deserialize, Serialize};
use std::time::Duration;
use toml::{Table, Value};

/// The coordinator: API, outbox publisher, result consumer, recovery.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CoordinatorConfig {
    /// PostgreSQL holding all state.
    pub database_url: String,
    /// RabbitMQ; the vhost is the URL's path (`%2f` for `/`).
    pub amqp_url: String,
    /// Prefix of every exchange and queue name.
    pub broker_prefix: String,
    /// Where the HTTP API, `/healthz`, `/readyz` and `/metrics` listen.
    pub http_addr: String,
    /// PostgreSQL connections in the pool.
    pub db_pool_size: usize,
    /// How long start-up waits for PostgreSQL and RabbitMQ before giving up.
    #[serde(with = "humantime_serde")]
    pub startup_timeout: Duration,
    /// Largest accepted request body.
    pub max_request_bytes: usize,
    pub outbox: OutboxConfig,
    pub results: ResultsConfig,
    pub recovery: RecoveryConfig,
    pub rollout: RolloutConfig,
    pub retry: RetryConfig,
    pub nodes: NodeDefaultsConfig,
    pub auth: AuthConfig,
    pub console: ConsoleConfig,
    /// Serve `/metrics` on this address only (e.g. a private interface), instead of on
    /// `http_addr`. Empty: on `http_addr`.
    pub metrics_addr: String,
    /// The workers' artifact store, read by the console for previews and downloads (the
    /// same shared directory as the workers' `artifacts_dir`). Empty: no previews.
    pub artifacts_dir: String,
    pub cache: CacheConfig,
    pub scheduling: SchedulingConfig,
    pub webhooks: WebhooksConfig,
    pub log: LogConfig,
}

/// What waits where (`shared::scheduling`): the coordinator keeps each module's broker queue
/// shallow and holds the rest in the outbox, where priority and fair share pick what goes next.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SchedulingConfig {
    /// Off: every ready task goes to the broker at once, in first-in-first-out order (no
    /// priorities, no fair share).
    pub enabled: bool,
    /// Tasks that may wait in a module's broker queue per live worker slot of the module.
    pub queue_per_slot: f64,
    /// ... and at least this many (also the window of a module no live worker reports).
    pub queue_min: u32,
    /// While tasks are held back, the broker queues are looked at this often (and whenever
    /// a result arrives here).
    #[serde(with = "humantime_serde")]
    pub poll: Duration,
    /// Tasks a submitter may have running or sent at once, per module; 0: no limit.
    pub max_running_per_submitter: u32,
    /// Limits for named submitters, over `max_running_per_submitter` (file only:
    /// `[scheduling.submitter_limits]` then `catalogue = 4`).
    pub submitter_limits: std::collections::BTreeMap<String, u32>,
}

impl Default for SchedulingConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            queue_per_slot: 0.5,
            queue_min: 1,
            poll: Duration::from_millis(25),
            max_running_per_submitter: 0,
            submitter_limits: Default::default(),
        }
    }
}

impl SchedulingConfig {
    /// Whether any submitter has a limit (the claim then counts what each has in flight).
    pub fn limited(&self) -> bool {
        self.max_running_per_submitter > 0 || self.submitter_limits.values().any(|&n| n > 0)
    }

    /// The limit of `submitter`; 0: none.
    pub fn limit_of(&self, submitter: &str) -> u32 {
        self.submitter_limits.get(submitter).copied().unwrap_or(self.max_running_per_submitter)
    }
}

/// Webhook deliveries of completion events (`shared::events`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct WebhooksConfig {
    /// The first retry of a failed delivery waits this long, each next one twice as long...
    #[serde(with = "humantime_serde")]
    pub retry_base: Duration,
    /// ... up to this.
    #[serde(with = "humantime_serde")]
    pub retry_max: Duration,
    /// A delivery not accepted this long after its event is given up (`failed`).
    #[serde(with = "humantime_serde")]
    pub give_up_after: Duration,
    /// One attempt's limit (connect, send, answer).
    #[serde(with = "humantime_serde")]
    pub timeout: Duration,
    /// Deliveries in flight at once, per coordinator.
    pub concurrency: usize,
    /// Look for due deliveries at least this often (a finished request here wakes it sooner).
    #[serde(with = "humantime_serde")]
    pub poll: Duration,
    /// Events older than this are deleted with their deliveries, once they are on the events
    /// exchange and no delivery is pending; 0: kept for ever.
    #[serde(with = "humantime_serde")]
    pub keep_events: Duration,
}

impl Default for WebhooksConfig {
    fn default() -> Self {
        Self {
            retry_base: Duration::from_secs(5),
            retry_max: Duration::from_secs(600),
            give_up_after: Duration::from_secs(24 * 3600),
            timeout: Duration::from_secs(10),
            concurrency: 16,
            poll: Duration::from_secs(1),
            keep_events: Duration::from_secs(30 * 24 * 3600),
        }
    }
}

/// The node result cache (`shared::cache`). It needs `artifacts_dir`: a hit is only served
/// when its artifacts are still in the store, which the coordinator checks there.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CacheConfig {
    /// Serve cacheable nodes from earlier results with the same key.
    pub enabled: bool,
}

impl Default for CacheConfig {
    fn default() -> Self {
        Self { enabled: true }
    }
}

impl Default for CoordinatorConfig {
    fn default() -> Self {
        Self {
            database_url: "postgres://postgres@127.0.0.1:5432/renderfleet".into(),
            amqp_url: "amqp://guest:guest@127.0.0.1:5672/%2f".into(),
            broker_prefix: "renderfleet".into(),
            http_addr: "127.0.0.1:8080".into(),
            db_pool_size: 16,
            startup_timeout: Duration::from_secs(30),
            max_request_bytes: 16 * 1024 * 1024,
            outbox: OutboxConfig::default(),
            results: ResultsConfig::default(),
            recovery: RecoveryConfig::default(),
            rollout: RolloutConfig::default(),
            retry: RetryConfig::default(),
            nodes: NodeDefaultsConfig::default(),
            auth: AuthConfig::default(),
            console: ConsoleConfig::default(),
            metrics_addr: String::new(),
            artifacts_dir: "/var/lib/renderfleet/artifacts".into(),
            cache: CacheConfig::default(),
            scheduling: SchedulingConfig::default(),
            webhooks: WebhooksConfig::default(),
            log: LogConfig::default(),
        }
    }
}

/// Who may call the API. Each token is an entry `NAME:SCOPES:SHA256` where SCOPES joins
/// `submit`, `read`, `operate` and `admin` with `+` (`admin` grants every scope) and SHA256
/// is the hex SHA-256 of the secret: the secret itself is never stored.
/// `renderctl token new NAME SCOPES` makes one. `/healthz`, `/readyz`, `/metrics` and the
/// OpenAPI document need no token.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AuthConfig {
    /// Env: `RENDERFLEET_AUTH__TOKENS=order-system:submit:9f86…,ops:read+operate:2c26…`
    pub tokens: Vec<String>,
    /// With no tokens, serve the API without authentication. Development machines only;
    /// without it (and without tokens) the coordinator refuses to start.
    pub open: bool,
}

/// The web console at `/console`.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ConsoleConfig {
    /// Browsers reach the console over HTTPS, through a TLS-terminating proxy that passes
    /// their Host header on (the coordinator serves plain HTTP): the sign-in cookie is then
    /// `Secure`, and the console's forms are accepted from the `https://` origin only.
    pub https: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct OutboxConfig {
    /// Rows claimed and published per pass.
    pub batch_size: i64,
    /// Safety net: look for due rows at least this often even without a wake-up.
    #[serde(with = "humantime_serde")]
    pub idle_poll: Duration,
    /// Sent rows are kept this long (for inspection), then deleted.
    #[serde(with = "humantime_serde")]
    pub retention: Duration,
}

impl Default for OutboxConfig {
    fn default() -> Self {
        Self { batch_size: 500, idle_poll: Duration::from_secs(1), retention: Duration::from_secs(3600) }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ResultsConfig {
    /// Unacked result messages the broker may push to this coordinator.
    pub prefetch: u16,
    /// Most results applied in one transaction. A batch is flushed as soon as no further
    /// message is waiting, so a quiet fleet pays no batching delay.
    pub batch_max: usize,
    /// Accept a result or heartbeat only from the worker it names: the message's `user_id`
    /// (checked by RabbitMQ against the connection's user) must be its `worker_id`. Give
    /// each worker a broker user named after its worker id (README, "Security").
    pub verify_sender: bool,
}

impl Default for ResultsConfig {
    fn default() -> Self {
        Self { prefetch: 1000, batch_max: 500, verify_sender: false }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RecoveryConfig {
    /// A running node whose worker has not heartbeated for this long is re-queued as a new
    /// attempt. Keep it several times the workers' `heartbeat_interval`.
    #[serde(with = "humantime_serde")]
    pub heartbeat_timeout: Duration,
    /// How often to look for lost nodes.
    #[serde(with = "humantime_serde")]
    pub sweep_interval: Duration,
}

impl Default for RecoveryConfig {
    fn default() -> Self {
        Self { heartbeat_timeout: Duration::from_secs(30), sweep_interval: Duration::from_secs(5) }
    }
}

/// The rollout reconciler: shadow comparisons, fallbacks, gates and automatic rollback.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RolloutConfig {
    /// How often gates are re-evaluated (and their gauges refreshed) and missed work is
    /// looked for, besides the wake-up when a request's run ends.
    #[serde(with = "humantime_serde")]
    pub interval: Duration,
    /// How far back the safety-net pass looks for finished runs of requests.
    #[serde(with = "humantime_serde")]
    pub lookback: Duration,
}

impl Default for RolloutConfig {
    fn default() -> Self {
        Self { interval: Duration::from_secs(10), lookback: Duration::from_secs(3600) }
    }
}

/// Backoff between attempts of a failed node: `base · 2^(attempt−1)`, at most `max`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RetryConfig {
    #[serde(with = "humantime_serde")]
    pub base: Duration,
    #[serde(with = "humantime_serde")]
    pub max: Duration,
}

impl Default for RetryConfig {
    fn default() -> Self {
        Self { base: Duration::from_secs(1), max: Duration::from_secs(300) }
    }
}

impl RetryConfig {
    /// Delay before the attempt after `failed_attempt` (1-based).
    pub fn delay(&self, failed_attempt: u32) -> Duration {
        let factor = 1u32.checked_shl(failed_attempt.saturating_sub(1)).unwrap_or(u32::MAX);
        self.base.saturating_mul(factor).min(self.max)
    }
}

/// Defaults for graph nodes that do not set their own, and the ceiling on timeouts.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct NodeDefaultsConfig {
    pub max_attempts: u32,
    #[serde(with = "humantime_serde")]
    pub timeout: Duration,
    /// Largest `timeout` a node may ask for. Keep RabbitMQ's `consumer_timeout` above it
    /// (ops/rabbitmq/rabbitmq.conf: 3h), or the broker reclaims long tasks mid-run.
    #[serde(with = "humantime_serde")]
    pub max_timeout: Duration,
}

impl Default for NodeDefaultsConfig {
    fn default() -> Self {
        Self { max_attempts: 3, timeout: Duration::from_secs(3600), max_timeout: Duration::from_secs(7200) }
    }
}

/// Logging; `RUST_LOG`, when set, wins over `filter`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LogConfig {
    /// `pretty` for people, `json` for log shippers.
    pub format: LogFormat,
    /// tracing-subscriber filter, e.g. `info,renderfleet_worker=debug`.
    pub filter: String,
}

impl Default for LogConfig {
    fn default() -> Self {
        Self { format: LogFormat::Pretty, filter: "info".into() }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LogFormat {
    Pretty,
    Json,
}

/// A worker on a render host.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct WorkerConfig {
    pub amqp_url: String,
    pub broker_prefix: String,
    /// Unique per worker process; empty means `<host name>-<pid>`.
    pub worker_id: String,
    /// Module queues to consume (`RENDERFLEET_MODULES=noop,sleep`). [`AUTO_MODULES`] means
    /// every module of this build whose tools this host has (probed at start-up).
    pub modules: Vec<String>,
    /// Tasks run at once; also the broker prefetch, so a worker never holds more tasks than
    /// it has free slots.
    pub concurrency: u16,
    #[serde(with = "humantime_serde")]
    pub heartbeat_interval: Duration,
    /// A task still running after this long is reported as started (status `running`,
    /// covered by heartbeats); shorter tasks only report their end, which carries the start.
    #[serde(with = "humantime_serde")]
    pub report_start_after: Duration,
    /// On SIGTERM, how long tasks in hand may run before they are stopped and requeued.
    #[serde(with = "humantime_serde")]
    pub shutdown_grace: Duration,
    /// A task delivered this many times without a result (each worker that took it died,
    /// or lost its broker link, while running it) is poison: its node fails instead of
    /// killing the next worker.
    pub max_deliveries: u32,
    /// `/metrics` and `/healthz`; empty disables the listener.
    pub metrics_addr: String,
    /// How long start-up waits for RabbitMQ before giving up.
    #[serde(with = "humantime_serde")]
    pub startup_timeout: Duration,
    /// Longest pause between reconnect attempts after the broker link drops.
    #[serde(with = "humantime_serde")]
    pub reconnect_max: Duration,
    /// The artifact store: a directory, shared by every host of the fleet when workers run
    /// on several (NFS, a mounted bucket). Files are named by their SHA-256.
    pub artifacts_dir: String,
    /// Where subjects' CAD files are read from: a subject's `cad_file` is a path inside it.
    pub cad_dir: String,
    /// Scratch space: each attempt works in a directory of its own here, removed after.
    /// Empty: the system's temporary directory.
    pub scratch_dir: String,
    pub tools: ToolsConfig,
    pub blender: BlenderConfig,
    pub quarantine: QuarantineConfig,
    pub log: LogConfig,
}

/// When a worker stops taking a module that keeps failing on this host (a black hole).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct QuarantineConfig {
    /// Tasks of a module failed in a row, for reasons not about their input (a tool that
    /// cannot start or is killed, a full disk), before the worker stops taking it; 0: never.
    pub after: u32,
    /// How long it stays away before trying again (an operator can release it sooner).
    #[serde(with = "humantime_serde")]
    pub cool_down: Duration,
}

impl Default for QuarantineConfig {
    fn default() -> Self {
        Self { after: 3, cool_down: Duration::from_secs(600) }
    }
}

/// How the worker runs Blender.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct BlenderConfig {
    /// Keep Blender processes alive between renders (at most one per slot), each serving
    /// many jobs from a fresh factory scene; off: a new `blender -b` per render.
    pub warm: bool,
    /// A warm process is replaced after this many jobs.
    pub max_jobs: u32,
    /// A warm process is replaced when its resident memory is above this after a job (MiB).
    pub max_rss_mib: u64,
    /// Cycles threads per render; 0: one per core. 1 lets a host run as many single-threaded
    /// renders (turntable chunks) as it has slots. Never changes the pixels.
    pub threads: u16,
}

impl Default for BlenderConfig {
    fn default() -> Self {
        Self { warm: true, max_jobs: 100, max_rss_mib: 4096, threads: 0 }
    }
}

/// The module value that asks the worker to probe for what it can run.
pub const AUTO_MODULES: &str = "auto";

/// External programs the modules run. Plain names are looked up on `PATH`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ToolsConfig {
    /// Blender: the Python of a venv with PyPI's `bpy` (Blender 4.5 LTS as a module, what
    /// `ops/dev.sh` installs; a program named `python…` is taken to be one), or a Blender
    /// executable (3.4 or newer, with numpy for its glTF importer).
    pub blender: String,
    /// A Python 3 that can `import cascadio` (STEP → GLB).
    pub python: String,
    pub ffmpeg: String,
}

impl Default for ToolsConfig {
    fn default() -> Self {
        Self { blender: "blender".into(), python: "python3".into(), ffmpeg: "ffmpeg".into() }
    }
}

impl Default for WorkerConfig {
    fn default() -> Self {
        Self {
            amqp_url: "amqp://guest:guest@127.0.0.1:5672/%2f".into(),
            broker_prefix: "renderfleet".into(),
            worker_id: String::new(),
            modules: vec![AUTO_MODULES.into()],
            concurrency: 2,
            heartbeat_interval: Duration::from_secs(5),
            report_start_after: Duration::from_millis(50),
            shutdown_grace: Duration::from_secs(30),
            max_deliveries: 5,
            metrics_addr: "127.0.0.1:9464".into(),
            startup_timeout: Duration::from_secs(60),
            reconnect_max: Duration::from_secs(30),
            artifacts_dir: "/var/lib/renderfleet/artifacts".into(),
            cad_dir: "/var/lib/renderfleet/cad".into(),
            scratch_dir: String::new(),
            tools: ToolsConfig::default(),
            blender: BlenderConfig::default(),
            quarantine: QuarantineConfig::default(),
            log: LogConfig::default(),
        }
    }
}

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum ConfigError {
    #[error("config file {path}: {message}")]
    File { path: String, message: String },
    #[error("environment variable {var}={value:?}: {message}")]
    Env { var: String, value: String, message: String },
    #[error("invalid configuration: {0}")]
    Invalid(String),
}

/// A loaded configuration and the `RENDERFLEET_*` variables that named no setting.
#[derive(Debug)]
pub struct Loaded<T> {
    pub config: T,
    pub ignored_env: Vec<String>,
}

/// Layers defaults, then the file (`(path, text)`), then the environment.
pub fn load<T>(file: Option<(&str, &str)>, env: impl IntoIterator<Item = (String, String)>) -> Result<Loaded<T>, ConfigError>
where
    T: Serialize + DeserializeOwned + Default,
{
    let defaults = Table::try_from(T::default()).map_err(|e| ConfigError::Invalid(e.to_string()))?;
    let mut merged = defaults.clone();
    if let Some((path, text)) = file {
        let table: Table = text.parse().map_err(|e: toml::de::Error| ConfigError::File { path: path.into(), message: e.to_string() })?;
        merge(&mut merged, table);
        // Check the file alone first so its errors name the file.
        T::deserialize(Value::Table(merged.clone())).map_err(|e| ConfigError::File { path: path.into(), message: e.to_string() })?;
    }
    let mut ignored_env = Vec::new();
    let mut env: Vec<(String, String)> = env.into_iter().collect();
    env.sort();
    for (var, value) in env {
        let path: Vec<String> = match var.as_str() {
            "DATABASE_URL" => vec!["database_url".into()],
            "AMQP_URL" => vec!["amqp_url".into()],
            _ => match var.strip_prefix("RENDERFLEET_") {
                Some(rest) => rest.to_ascii_lowercase().split("__").map(String::from).collect(),
                None => continue,
            },
        };
        let Some(default) = lookup(&defaults, &path) else {
            if var.starts_with("RENDERFLEET_") {
                ignored_env.push(var);
            }
            continue;
        };
        let parsed = parse_like(default, &value).map_err(|message| ConfigError::Env { var: var.clone(), value: value.clone(), message })?;
        set(&mut merged, &path, parsed);
    }
    let config = T::deserialize(Value::Table(merged)).map_err(|e| ConfigError::Invalid(e.to_string()))?;
    Ok(Loaded { config, ignored_env })
}

fn merge(into: &mut Table, from: Table) {
    for (k, v) in from {
        match (into.get_mut(&k), v) {
            (Some(Value::Table(a)), Value::Table(b)) => merge(a, b),
            (_, v) => {
                into.insert(k, v);
            }
        }
    }
}

fn lookup<'a>(table: &'a Table, path: &[String]) -> Option<&'a Value> {
    let (last, parents) = path.split_last()?;
    let mut t = table;
    for p in parents {
        t = t.get(p)?.as_table()?;
    }
    t.get(last).filter(|v| !v.is_table())
}

fn set(table: &mut Table, path: &[String], value: Value) {
    let (last, parents) = path.split_last().expect("non-empty path");
    let mut t = table;
    for p in parents {
        t = t.entry(p.clone()).or_insert_with(|| Value::Table(Table::new())).as_table_mut().expect("checked by lookup");
    }
    t.insert(last.clone(), value);
}

/// Parses an environment value as the same TOML type as the setting's default.
fn parse_like(default: &Value, raw: &str) -> Result<Value, String> {
    let raw = raw.trim();
    match default {
        Value::Integer(_) => raw.parse().map(Value::Integer).map_err(|_| "expected a whole number".into()),
        Value::Float(_) => raw.parse().map(Value::Float).map_err(|_| "expected a number".into()),
        Value::Boolean(_) => raw.parse().map(Value::Boolean).map_err(|_| "expected true or false".into()),
        Value::Array(_) => {
            Ok(Value::Array(raw.split(',').map(str::trim).filter(|s| !s.is_empty()).map(|s| Value::String(s.into())).collect()))
        }
        _ => Ok(Value::String(raw.into())),
    }
}

/// `scheme://user:password@host/…` with the password replaced, for error messages and logs.
pub fn redact_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else { return url.to_string() };
    let (authority, tail) = match rest.find(['/', '?']) {
        Some(i) => rest.split_at(i),
        None => (rest, ""),
    };
    match authority.rsplit_once('@') {
        Some((userinfo, host)) => match userinfo.split_once(':') {
            Some((user, _)) => format!("{scheme}://{user}:***@{host}{tail}"),
            None => url.to_string(),
        },
        None => url.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    #[test]
    fn defaults_then_file_then_env() {
        let file = "http_addr = \"0.0.0.0:9000\"\n[outbox]\nbatch_size = 10\nidle_poll = \"250ms\"\n";
        let loaded: Loaded<CoordinatorConfig> = load(
            Some(("c.toml", file)),
            env(&[("RENDERFLEET_OUTBOX__BATCH_SIZE", "20"), ("DATABASE_URL", "postgres://x/y"), ("HOME", "/root")]),
        )
        .unwrap();
        let c = loaded.config;
        assert_eq!(c.http_addr, "0.0.0.0:9000");
        assert_eq!(c.outbox.batch_size, 20);
        assert_eq!(c.outbox.idle_poll, Duration::from_millis(250));
        assert_eq!(c.database_url, "postgres://x/y");
        assert_eq!(c.results, ResultsConfig::default());
    }

    #[test]
    fn worker_modules_from_a_comma_list_and_unknown_vars_are_reported() {
        let loaded: Loaded<WorkerConfig> =
            load(None, env(&[("RENDERFLEET_MODULES", "noop, sleep"), ("RENDERFLEET_HTTP_ADDR", "x"), ("DATABASE_URL", "p")])).unwrap();
        assert_eq!(loaded.config.modules, vec!["noop", "sleep"]);
        assert_eq!(loaded.ignored_env, vec!["RENDERFLEET_HTTP_ADDR"]);
    }

    #[test]
    fn bad_values_name_their_source() {
        let e = load::<WorkerConfig>(None, env(&[("RENDERFLEET_CONCURRENCY", "many")])).unwrap_err();
        assert!(e.to_string().contains("RENDERFLEET_CONCURRENCY"), "{e}");
        let e = load::<WorkerConfig>(Some(("w.toml", "concurency = 3")), env(&[])).unwrap_err();
        assert!(matches!(&e, ConfigError::File { path, message } if path == "w.toml" && message.contains("concurency")), "{e}");
        let e = load::<WorkerConfig>(None, env(&[("RENDERFLEET_HEARTBEAT_INTERVAL", "soon")])).unwrap_err();
        assert!(e.to_string().contains("heartbeat_interval"), "{e}");
    }

    #[test]
    fn retry_delay_doubles_up_to_the_cap() {
        let r = RetryConfig { base: Duration::from_millis(100), max: Duration::from_secs(1) };
        assert_eq!(r.delay(1), Duration::from_millis(100));
        assert_eq!(r.delay(2), Duration::from_millis(200));
        assert_eq!(r.delay(5), Duration::from_secs(1));
        assert_eq!(r.delay(60), Duration::from_secs(1));
    }

    #[test]
    fn the_example_files_document_exactly_the_defaults() {
        let c: Loaded<CoordinatorConfig> =
            load(Some(("coordinator.example.toml", include_str!("../../ops/coordinator.example.toml"))), env(&[])).unwrap();
        assert_eq!(c.config, CoordinatorConfig::default());
        let w: Loaded<WorkerConfig> = load(Some(("worker.example.toml", include_str!("../../ops/worker.example.toml"))), env(&[])).unwrap();
        assert_eq!(w.config, WorkerConfig::default());
        // Every setting appears in the examples (not merely defaulted).
        for (text, table) in [
            (include_str!("../../ops/coordinator.example.toml"), Table::try_from(CoordinatorConfig::default()).unwrap()),
            (include_str!("../../ops/worker.example.toml"), Table::try_from(WorkerConfig::default()).unwrap()),
        ] {
            let file: Table = text.parse().unwrap();
            for (k, v) in &table {
                let f = file.get(k).unwrap_or_else(|| panic!("`{k}` is not documented"));
                if let (Value::Table(t), Value::Table(ft)) = (v, f) {
                    for sub in t.keys() {
                        assert!(ft.contains_key(sub), "`{k}.{sub}` is not documented");
                    }
                }
            }
        }
    }

    #[test]
    fn passwords_are_redacted() {
        assert_eq!(redact_url("amqp://guest:guest@127.0.0.1:5672/%2f"), "amqp://guest:***@127.0.0.1:5672/%2f");
        assert_eq!(redact_url("postgres://postgres@127.0.0.1/test"), "postgres://postgres@127.0.0.1/test");
        assert_eq!(redact_url("postgres://u:p@h"), "postgres://u:***@h");
    }
}

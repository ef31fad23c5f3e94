//! The test world: one fresh PostgreSQL database and one broker prefix per test, the real
//! `coordinator` and `worker` binaries started as child processes (so tests can SIGKILL,
//! SIGSTOP and SIGTERM them), and helpers that wait on state rather than sleeping.
//!
//! Everything a world creates is removed when it is dropped, even when the test fails; on
//! failure the tail of every process log is printed. Logs are kept under
//! `target/test-logs/<test>-<id>/`.
//!
//! The binaries are looked up next to the test executable (`target/debug/`), so run
//! `cargo build --bins` before `cargo test` (`ops/dev.sh test` does).

pub mod browser;
pub mod graphs;

use lapin::options::{BasicPublishOptions, ExchangeDeleteOptions, QueueDeclareOptions, QueueDeleteOptions};
use lapin::types::FieldTable;
use lapin::{BasicProperties, Connection, ConnectionProperties};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use renderfleet_coordinator::api::auth::hash_secret;
use renderfleet_shared::registry::registry;
use renderfleet_shared::topology::{Declaration, Topology};
use serde_json::Value;
use std::future::Future;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use uuid::Uuid;

/// Where test databases are created: `RENDERFLEET_TEST_ADMIN_URL`, set by `ops/dev.sh`.
pub fn admin_url() -> String {
    std::env::var("RENDERFLEET_TEST_ADMIN_URL").unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into())
}
pub const AMQP: &str = "amqp://guest:guest@127.0.0.1:5672/%2f";

pub struct World {
    pub name: String,
    /// The artifact store and scratch space of this world's render workers; removed on drop.
    pub data_dir: PathBuf,
    pub database_url: String,
    db_name: String,
    pub topology: Topology,
    log_dir: PathBuf,
    procs: Vec<Proc>,
    pub http: reqwest::Client,
    /// `RUST_LOG` of the processes this world starts (the bench turns debug logs off).
    pub rust_log: String,
}

struct Proc {
    name: String,
    child: Child,
    log: PathBuf,
}

/// A started coordinator.
#[derive(Debug, Clone)]
pub struct Coord {
    pub name: String,
    pub url: String,
}

/// `target/<profile>/`: tests run from its `deps/`, the bench binary from it directly.
fn bin_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("executable path");
    let dir = exe.parent().expect("executable directory");
    if dir.ends_with("deps") {
        dir.parent().expect("target/<profile>").to_path_buf()
    } else {
        dir.to_path_buf()
    }
}

fn bin(name: &str) -> PathBuf {
    let p = bin_dir().join(name);
    assert!(p.exists(), "{} not found: run `cargo build --bins` before the tests (ops/dev.sh test does)", p.display());
    p
}

/// A free loopback port (bound, then released).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// Polls `f` until it returns `Some`, or panics after `timeout` naming `what`.
pub async fn wait_until<T, F, Fut>(what: &str, timeout: Duration, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out after {timeout:?} waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Bearer secrets every test coordinator accepts, one per scope; `World::http` sends the
/// admin one. Their hashes are configured through RENDERFLEET_AUTH__TOKENS.
pub const TOKENS: [(&str, &str); 4] =
    [("submit", "rf-test-submit"), ("read", "rf-test-read"), ("operate", "rf-test-operate"), ("admin", "rf-test-admin")];

/// The test secret of `scope`.
pub fn token(scope: &str) -> &'static str {
    TOKENS.iter().find(|(s, _)| *s == scope).map(|(_, t)| *t).expect("a known scope")
}

fn token_entries() -> String {
    TOKENS.iter().map(|(scope, secret)| format!("test-{scope}:{scope}:{}", hash_secret(secret))).collect::<Vec<_>>().join(",")
}

impl World {
    /// A fresh database and broker prefix for the test `name`.
    pub async fn new(name: &str) -> World {
        let id = Uuid::now_v7().simple().to_string();
        let short = &id[id.len() - 10..];
        let db_name = format!("rf_{}_{short}", name.chars().take(30).collect::<String>());
        let (admin, conn) =
            tokio_postgres::connect(&admin_url(), tokio_postgres::NoTls).await.expect("PostgreSQL at 127.0.0.1:5432 (ops/dev.sh services)");
        tokio::spawn(conn);
        admin.batch_execute(&format!("CREATE DATABASE {db_name}")).await.expect("create test database");
        let log_dir = bin_dir().join("..").join("test-logs").join(format!("{name}-{short}"));
        std::fs::create_dir_all(&log_dir).unwrap();
        World {
            name: name.into(),
            data_dir: std::env::temp_dir().join(format!("rf-{name}-{short}")),
            database_url: format!("{}/{db_name}", admin_url().rsplit_once('/').expect("URL with a database").0),
            db_name,
            topology: Topology::new(format!("rf-{name}-{short}")),
            log_dir,
            procs: Vec::new(),
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(20))
                .default_headers(
                    [(reqwest::header::AUTHORIZATION, format!("Bearer {}", token("admin")).parse().unwrap())].into_iter().collect(),
                )
                .build()
                .unwrap(),
            rust_log: "info,renderfleet_coordinator=debug,renderfleet_worker=debug".into(),
        }
    }

    fn spawn(&mut self, name: &str, binary: &str, env: &[(String, String)]) -> usize {
        let log = self.log_dir.join(format!("{name}.log"));
        let out = std::fs::OpenOptions::new().create(true).append(true).open(&log).unwrap();
        let mut cmd = Command::new(bin(binary));
        cmd.env_clear().env("PATH", std::env::var("PATH").unwrap_or_default()).env("RUST_LOG", &self.rust_log);
        for (k, v) in env {
            cmd.env(k, v);
        }
        let child = cmd.stdin(Stdio::null()).stdout(out.try_clone().unwrap()).stderr(out).spawn().expect("spawn binary");
        self.procs.push(Proc { name: name.into(), child, log });
        self.procs.len() - 1
    }

    /// Settings for fast tests; `extra` overrides them.
    fn coordinator_env(&self, port: u16, extra: &[(&str, &str)]) -> Vec<(String, String)> {
        let mut env: Vec<(String, String)> = [
            ("DATABASE_URL", self.database_url.as_str()),
            ("AMQP_URL", AMQP),
            ("RENDERFLEET_BROKER_PREFIX", self.topology.prefix()),
            ("RENDERFLEET_STARTUP_TIMEOUT", "15s"),
            ("RENDERFLEET_RETRY__BASE", "50ms"),
            ("RENDERFLEET_RETRY__MAX", "500ms"),
            ("RENDERFLEET_RECOVERY__HEARTBEAT_TIMEOUT", "30s"),
            ("RENDERFLEET_RECOVERY__SWEEP_INTERVAL", "300ms"),
            ("RENDERFLEET_OUTBOX__IDLE_POLL", "200ms"),
        ]
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        env.push(("RENDERFLEET_AUTH__TOKENS".into(), token_entries()));
        env.push(("RENDERFLEET_HTTP_ADDR".into(), format!("127.0.0.1:{port}")));
        overridden(env, extra)
    }

    /// Starts a coordinator and waits until `/readyz` answers 200.
    pub async fn start_coordinator(&mut self, name: &str, extra: &[(&str, &str)]) -> Coord {
        let port = free_port();
        let env = self.coordinator_env(port, extra);
        self.spawn(name, "coordinator", &env);
        let coord = Coord { name: name.into(), url: format!("http://127.0.0.1:{port}") };
        self.wait_ready(&coord).await;
        coord
    }

    /// Starts a coordinator without waiting (to race two start-ups).
    pub fn spawn_coordinator(&mut self, name: &str, extra: &[(&str, &str)]) -> Coord {
        let port = free_port();
        let env = self.coordinator_env(port, extra);
        self.spawn(name, "coordinator", &env);
        Coord { name: name.into(), url: format!("http://127.0.0.1:{port}") }
    }

    pub async fn wait_ready(&self, coord: &Coord) {
        let url = format!("{}/readyz", coord.url);
        let http = self.http.clone();
        wait_until(&format!("{} to be ready", coord.name), Duration::from_secs(30), || {
            let (http, url) = (http.clone(), url.clone());
            async move { http.get(&url).send().await.ok().filter(|r| r.status().is_success()).map(|_| ()) }
        })
        .await;
    }

    /// Starts a worker with id `name`; returns its metrics URL.
    pub fn start_worker(&mut self, name: &str, extra: &[(&str, &str)]) -> String {
        let port = free_port();
        let mut env: Vec<(String, String)> = [
            ("AMQP_URL", AMQP),
            ("RENDERFLEET_BROKER_PREFIX", self.topology.prefix()),
            ("RENDERFLEET_WORKER_ID", name),
            // The spine's test modules unless a test asks for others (no tool probing).
            ("RENDERFLEET_MODULES", "noop,sleep,fail"),
            ("RENDERFLEET_HEARTBEAT_INTERVAL", "300ms"),
            ("RENDERFLEET_SHUTDOWN_GRACE", "10s"),
        ]
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        env.push(("RENDERFLEET_METRICS_ADDR".into(), format!("127.0.0.1:{port}")));
        let env = overridden(env, extra);
        self.spawn(name, "worker", &env);
        format!("http://127.0.0.1:{port}/metrics")
    }

    /// Starts a worker that runs real modules (`modules`, a comma list or `auto`): its
    /// artifact store and scratch space are in this world's `data_dir`, CAD files come from
    /// the fixtures, and the tools are found as `ops/dev.sh` set them up
    /// (`RENDERFLEET_TOOLS__*` passed through). Returns its metrics URL.
    pub fn start_render_worker(&mut self, name: &str, modules: &str, extra: &[(&str, &str)]) -> String {
        let artifacts = self.artifacts_dir().display().to_string();
        let scratch = self.data_dir.join("scratch").display().to_string();
        let cad = fixtures().display().to_string();
        let mut env: Vec<(String, String)> = vec![
            ("RENDERFLEET_MODULES".into(), modules.into()),
            ("RENDERFLEET_ARTIFACTS_DIR".into(), artifacts),
            ("RENDERFLEET_SCRATCH_DIR".into(), scratch),
            ("RENDERFLEET_CAD_DIR".into(), cad),
        ];
        for tool in ["RENDERFLEET_TOOLS__PYTHON", "RENDERFLEET_TOOLS__BLENDER", "RENDERFLEET_TOOLS__FFMPEG"] {
            if let Ok(v) = std::env::var(tool) {
                env.push((tool.into(), v));
            }
        }
        let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).chain(extra.iter().copied()).collect();
        self.start_worker(name, &env)
    }

    pub fn artifacts_dir(&self) -> PathBuf {
        self.data_dir.join("artifacts")
    }

    /// Where the store keeps the artifact `r` (an `ArtifactRef` as JSON).
    pub fn artifact_path(&self, r: &Value) -> PathBuf {
        let sha = r["sha256"].as_str().unwrap_or_else(|| panic!("not an artifact reference: {r}"));
        assert!(renderfleet_shared::artifact::is_sha256(sha), "bad sha256 {sha}");
        self.artifacts_dir().join("sha256").join(&sha[..2]).join(sha)
    }

    /// Submits `graph` for `subject`; panics unless the coordinator answers 201.
    pub async fn submit_for(&self, coord: &Coord, subject: Value, graph: Value) -> Uuid {
        let body = serde_json::json!({"subject": subject, "graph": graph});
        let resp = self.http.post(format!("{}/v1/runs", coord.url)).json(&body).send().await.expect("POST /v1/runs");
        let status = resp.status();
        let body: Value = resp.json().await.unwrap_or(Value::Null);
        assert_eq!(status, 201, "POST /v1/runs: {body}");
        body["run_id"].as_str().unwrap().parse().unwrap()
    }

    fn proc(&mut self, name: &str) -> &mut Proc {
        self.procs.iter_mut().rev().find(|p| p.name == name).unwrap_or_else(|| panic!("no process {name}"))
    }

    /// Sends `signal` to the process `name`.
    pub fn signal(&mut self, name: &str, signal: Signal) {
        let pid = self.proc(name).child.id() as i32;
        kill(Pid::from_raw(pid), signal).expect("send signal");
    }

    /// The process id of `name`.
    pub fn pid(&mut self, name: &str) -> u32 {
        self.proc(name).child.id()
    }

    /// SIGKILLs `name` and reaps it.
    pub fn kill(&mut self, name: &str) {
        let p = self.proc(name);
        p.child.kill().expect("SIGKILL");
        p.child.wait().expect("reap");
    }

    /// Waits for `name` to exit; returns its exit status.
    pub async fn wait_exit(&mut self, name: &str, timeout: Duration) -> std::process::ExitStatus {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.proc(name).child.try_wait().expect("try_wait") {
                return status;
            }
            assert!(Instant::now() < deadline, "{name} did not exit within {timeout:?}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// True while `name` is running.
    pub fn alive(&mut self, name: &str) -> bool {
        self.proc(name).child.try_wait().expect("try_wait").is_none()
    }

    /// The process's log so far.
    pub fn log(&mut self, name: &str) -> String {
        std::fs::read_to_string(&self.proc(name).log).unwrap_or_default()
    }

    /// Submits `graph`; panics unless the coordinator answers 201.
    pub async fn submit(&self, coord: &Coord, graph: Value) -> Uuid {
        let body = serde_json::json!({"subject": {"kind": "test", "test": self.name}, "graph": graph});
        let resp = self.http.post(format!("{}/v1/runs", coord.url)).json(&body).send().await.expect("POST /v1/runs");
        let status = resp.status();
        let body: Value = resp.json().await.unwrap_or(Value::Null);
        assert_eq!(status, 201, "POST /v1/runs: {body}");
        body["run_id"].as_str().unwrap().parse().unwrap()
    }

    pub async fn get_run(&self, coord: &Coord, id: Uuid) -> Value {
        let resp = self.http.get(format!("{}/v1/runs/{id}", coord.url)).send().await.expect("GET run");
        assert_eq!(resp.status(), 200);
        resp.json().await.unwrap()
    }

    /// Waits until the run is no longer `running` and returns it (polling the cheap
    /// `?nodes=false` view, then reading the whole run once).
    pub async fn wait_run(&self, coord: &Coord, id: Uuid, timeout: Duration) -> Value {
        wait_until(&format!("run {id} to finish"), timeout, || async move {
            let resp = self.http.get(format!("{}/v1/runs/{id}?nodes=false", coord.url)).send().await.ok()?;
            let run: Value = resp.json().await.ok()?;
            (run["status"] != "running").then_some(())
        })
        .await;
        self.get_run(coord, id).await
    }

    /// Waits until node `node_id` of the run has `status`, and returns the node.
    pub async fn wait_node(&self, coord: &Coord, id: Uuid, node_id: &str, status: &str, timeout: Duration) -> Value {
        wait_until(&format!("node {node_id} to be {status}"), timeout, || async move {
            let run = self.get_run(coord, id).await;
            node(&run, node_id).filter(|n| n["status"] == status).cloned()
        })
        .await
    }

    /// A client on the test database.
    pub async fn db(&self) -> tokio_postgres::Client {
        let (client, conn) = tokio_postgres::connect(&self.database_url, tokio_postgres::NoTls).await.expect("test database");
        tokio::spawn(conn);
        client
    }

    pub async fn amqp(&self) -> Connection {
        Connection::connect(AMQP, ConnectionProperties::default()).await.expect("RabbitMQ at 127.0.0.1:5672")
    }

    /// Publishes raw bytes to an exchange of this world, persistent, and waits for the confirm.
    pub async fn publish_raw(&self, exchange: &str, routing_key: &str, payload: &[u8]) {
        let conn = self.amqp().await;
        let ch = conn.create_channel().await.unwrap();
        ch.confirm_select(Default::default()).await.unwrap();
        ch.basic_publish(
            exchange.into(),
            routing_key.into(),
            BasicPublishOptions::default(),
            payload,
            BasicProperties::default().with_delivery_mode(2),
        )
        .await
        .unwrap()
        .await
        .unwrap();
        let _ = conn.close(200, "done".into()).await;
    }

    /// Takes every message now in this world's dead-letter queue, in order.
    pub async fn take_dead_letters(&self) -> Vec<DeadLetter> {
        let conn = self.amqp().await;
        let ch = conn.create_channel().await.unwrap();
        let queue = self.topology.dead_queue();
        let mut letters = Vec::new();
        while let Some(got) = ch.basic_get(queue.as_str().into(), lapin::options::BasicGetOptions { no_ack: true }).await.unwrap() {
            let headers = got.delivery.properties.headers().clone().unwrap_or_default();
            let reason = match headers.inner().get(renderfleet_shared::topology::REASON_HEADER) {
                Some(lapin::types::AMQPValue::LongString(s)) => Some(String::from_utf8_lossy(s.as_bytes()).into_owned()),
                _ => None,
            };
            letters.push(DeadLetter { data: got.delivery.data, reason });
        }
        let _ = conn.close(200, "done".into()).await;
        letters
    }

    /// Messages ready in a queue of this world.
    pub async fn queue_depth(&self, queue: &str) -> u32 {
        let conn = self.amqp().await;
        let ch = conn.create_channel().await.unwrap();
        let q = ch
            .queue_declare(queue.into(), QueueDeclareOptions { passive: true, ..Default::default() }, FieldTable::default())
            .await
            .unwrap();
        let _ = conn.close(200, "done".into()).await;
        q.message_count()
    }

    /// Takes this world's database away: refuses new connections and ends the existing ones
    /// (other tests' databases are untouched). Undo with [`World::database_back`].
    pub async fn database_outage(&self) {
        let (admin, conn) = tokio_postgres::connect(&admin_url(), tokio_postgres::NoTls).await.unwrap();
        tokio::spawn(conn);
        admin.batch_execute(&format!("ALTER DATABASE {} ALLOW_CONNECTIONS false", self.db_name)).await.unwrap();
        admin.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1", &[&self.db_name]).await.unwrap();
    }

    /// Ends every connection to this world's database (a database restart, as clients see
    /// it); new ones are accepted at once.
    pub async fn terminate_database_backends(&self) {
        let (admin, conn) = tokio_postgres::connect(&admin_url(), tokio_postgres::NoTls).await.unwrap();
        tokio::spawn(conn);
        admin.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1", &[&self.db_name]).await.unwrap();
    }

    pub async fn database_back(&self) {
        let (admin, conn) = tokio_postgres::connect(&admin_url(), tokio_postgres::NoTls).await.unwrap();
        tokio::spawn(conn);
        admin.batch_execute(&format!("ALTER DATABASE {} ALLOW_CONNECTIONS true", self.db_name)).await.unwrap();
    }

    /// Counts rows: `sql` must be a `SELECT count(*) ...`.
    pub async fn count(&self, sql: &str) -> i64 {
        self.db().await.query_one(sql, &[]).await.unwrap_or_else(|e| panic!("{sql}: {e}")).get(0)
    }
}

/// A message taken from the dead-letter queue.
#[derive(Debug)]
pub struct DeadLetter {
    pub data: Vec<u8>,
    /// Its `x-renderfleet-reason` header, if it has one.
    pub reason: Option<String>,
}

impl DeadLetter {
    /// The reason; panics when the header is missing.
    pub fn reason(&self) -> &str {
        self.reason.as_deref().unwrap_or_else(|| panic!("reason header missing on a dead letter: {self:?}"))
    }
}

/// The only message in the dead-letter queue; panics unless there is exactly one.
pub fn only(letters: Vec<DeadLetter>) -> DeadLetter {
    assert_eq!(letters.len(), 1, "dead letters: {letters:?}");
    letters.into_iter().next().expect("one")
}

/// The CAD fixtures: `RENDERFLEET_FIXTURES`, else `../shared/fixtures/cad` beside the
/// project. Panics, saying where it looked, when they are not there.
pub fn fixtures() -> PathBuf {
    let dir = std::env::var_os("RENDERFLEET_FIXTURES")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../shared/fixtures/cad"));
    assert!(
        dir.join("as1-oc-214.stp").is_file(),
        "CAD fixtures not found in {}: the folder `shared/fixtures/cad` must sit beside the project (or set RENDERFLEET_FIXTURES)",
        dir.display()
    );
    dir.canonicalize().unwrap_or(dir)
}

/// Runs `renderctl` with `args` and returns its output.
pub fn renderctl(args: &[&str]) -> std::process::Output {
    Command::new(bin("renderctl"))
        .args(args)
        .env_remove("RENDERFLEET_COORDINATOR_URL")
        .env("RENDERFLEET_TOKEN", token("admin"))
        .output()
        .expect("run renderctl")
}

/// Has the broker close every connection whose client-given name contains `needle`
/// (`rabbitmqctl close_connection`); returns how many were closed.
pub fn close_broker_connections(needle: &str) -> usize {
    // Right after an earlier fault every process of the world may be between sessions, so
    // look again for a few seconds before saying there is nothing to close.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let out = Command::new("rabbitmqctl").args(["-q", "list_connections", "pid", "client_properties"]).output().expect("rabbitmqctl");
        let text = String::from_utf8_lossy(&out.stdout);
        let mut closed = 0;
        for line in text.lines() {
            let Some((pid, props)) = line.split_once('\t') else { continue };
            // client_properties look like [..., {"connection_name","worker rf-x w1"}, ...]
            let named = props.split("{\"connection_name\",\"").nth(1).and_then(|r| r.split("\"}").next()).unwrap_or("");
            if named.contains(needle) {
                let ok = Command::new("rabbitmqctl")
                    .args(["-q", "close_connection", pid, "test: simulated broker restart"])
                    .status()
                    .expect("rabbitmqctl");
                closed += usize::from(ok.success());
            }
        }
        if closed > 0 || Instant::now() > deadline {
            if closed == 0 && !out.status.success() {
                eprintln!("rabbitmqctl list_connections: {}", String::from_utf8_lossy(&out.stderr));
            }
            return closed;
        }
        std::thread::sleep(Duration::from_millis(250));
    }
}

/// `env` with every `extra` variable replacing a variable of the same name, or added.
fn overridden(mut env: Vec<(String, String)>, extra: &[(&str, &str)]) -> Vec<(String, String)> {
    for (k, v) in extra {
        env.retain(|(ek, _)| ek != k);
        env.push((k.to_string(), v.to_string()));
    }
    env
}

/// `method url` with an optional JSON body as the world's admin: the status and the JSON
/// answer (null when it is not JSON).
pub async fn call(w: &World, method: reqwest::Method, url: String, body: Option<Value>) -> (u16, Value) {
    let mut req = w.http.request(method, url);
    if let Some(b) = body {
        req = req.json(&b);
    }
    let resp = req.send().await.unwrap();
    (resp.status().as_u16(), resp.json().await.unwrap_or(Value::Null))
}

/// The node `node_id` of a run answer.
pub fn node<'a>(run: &'a Value, node_id: &str) -> Option<&'a Value> {
    run["nodes"].as_array()?.iter().find(|n| n["node_id"] == node_id)
}

/// Sum of a Prometheus metric's samples whose labels contain every `labels` pair.
pub async fn metric(http: &reqwest::Client, url: &str, name: &str, labels: &[(&str, &str)]) -> f64 {
    let text = http.get(url).send().await.expect("GET /metrics").text().await.unwrap();
    sum_metric(&text, name, labels)
}

pub fn sum_metric(text: &str, name: &str, labels: &[(&str, &str)]) -> f64 {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter(|l| l.starts_with(name) && matches!(l.as_bytes().get(name.len()), Some(b'{' | b' ')))
        .filter(|l| labels.iter().all(|(k, v)| l.contains(&format!("{k}=\"{v}\""))))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

impl Drop for World {
    fn drop(&mut self) {
        for p in &mut self.procs {
            let _ = p.child.kill();
            let _ = p.child.wait();
        }
        if std::thread::panicking() {
            for p in &self.procs {
                let log = std::fs::read_to_string(&p.log).unwrap_or_default();
                let tail: Vec<&str> = log.lines().rev().take(40).collect();
                eprintln!("---- {} ({}) last lines ----", p.name, p.log.display());
                for l in tail.iter().rev() {
                    eprintln!("{l}");
                }
            }
        }
        let _ = std::fs::remove_dir_all(&self.data_dir);
        let db_name = self.db_name.clone();
        let topology = self.topology.clone();
        // Clean-up runs on its own runtime: Drop cannot await, and the test's runtime may be
        // shutting down.
        let cleaner = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
            rt.block_on(async move {
                if let Ok((admin, conn)) = tokio_postgres::connect(&admin_url(), tokio_postgres::NoTls).await {
                    tokio::spawn(conn);
                    let _ = admin.batch_execute(&format!("DROP DATABASE IF EXISTS {db_name} WITH (FORCE)")).await;
                }
                if let Ok(conn) = Connection::connect(AMQP, ConnectionProperties::default()).await {
                    if let Ok(ch) = conn.create_channel().await {
                        // A coordinator started with RENDERFLEET_REGISTRY_TEST_TYPES=1 also declares
                        // the debug-only test module's queue (which a release build, the
                        // benchmark's, does not have).
                        #[allow(unused_mut)]
                        let mut modules = registry().module_keys();
                        #[cfg(debug_assertions)]
                        modules.push(renderfleet_shared::registry::PALETTE_PROBE);
                        for d in topology.declarations(&modules) {
                            match d {
                                Declaration::Queue { name, .. } => {
                                    let _ = ch.queue_delete(name.as_str().into(), QueueDeleteOptions::default()).await;
                                }
                                Declaration::Exchange { name, .. } => {
                                    let _ = ch.exchange_delete(name.as_str().into(), ExchangeDeleteOptions::default()).await;
                                }
                                Declaration::Bind { .. } => {}
                            }
                        }
                    }
                    let _ = conn.close(200, "cleanup".into()).await;
                }
            });
        });
        let _ = cleaner.join();
    }
}

//! Chaos: two coordinators and three workers while mixed runs go through, under random
//! SIGKILLs and SIGSTOPs of both binaries, broker connections closed, database backends
//! terminated and the database refusing connections for a while, with garbage published to
//! the broker; then the fleet's promises are checked in SQL. Bounded to a few minutes.
//! The schedule comes from a seed that is printed; `RENDERFLEET_CHAOS_SEED=N` replays it.

use nix::sys::signal::Signal;
use renderfleet_tests::{close_broker_connections, wait_until, Coord, World};
use serde_json::{json, Value};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use uuid::Uuid;

const COORDINATORS: [&str; 2] = ["c0", "c1"];
const WORKERS: [&str; 3] = ["w0", "w1", "w2"];
const RUNS: usize = 240;
/// The heartbeat timeout is shorter than a SIGSTOP, so frozen workers' attempts are lost.
const HEARTBEAT_TIMEOUT: &str = "3s";
const FREEZE: Duration = Duration::from_secs(4);
const REFUSED: Duration = Duration::from_secs(4);

/// xorshift64*: enough randomness for a schedule, and replayable from its seed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Intent {
    Succeeds,
    Fails,
}

/// One of four shapes: a chain, a diamond, a node that fails once and then succeeds, and a
/// node that always fails (its run must fail, its successor be skipped). Attempts are
/// generous for the good shapes: a frozen worker's attempt is lost and counts.
fn graph(rng: &mut Rng) -> (Value, Intent) {
    let sleep = |rng: &mut Rng, id: &str| {
        // Some long enough to report their start, so that a frozen worker's are lost.
        let ms = if rng.below(3) == 0 { 300 + rng.below(1200) } else { 20 + rng.below(180) };
        json!({"id": id, "type": "util.sleep", "params": {"ms": ms}, "max_attempts": 10})
    };
    let noop = |id: &str| json!({"id": id, "type": "util.noop", "max_attempts": 10});
    let edges = |pairs: &[(&str, &str)]| pairs.iter().map(|(a, b)| json!({"from": a, "to": b})).collect::<Vec<_>>();
    match rng.below(4) {
        0 => (json!({"nodes": [noop("a"), sleep(rng, "b"), noop("c")], "edges": edges(&[("a", "b"), ("b", "c")])}), Intent::Succeeds),
        1 => (
            json!({"nodes": [noop("a"), sleep(rng, "b"), sleep(rng, "c"), noop("d")],
                   "edges": edges(&[("a", "b"), ("a", "c"), ("b", "d"), ("c", "d")])}),
            Intent::Succeeds,
        ),
        2 => (
            json!({"nodes": [{"id": "f", "type": "util.fail", "params": {"times": 1}, "max_attempts": 10}, noop("g")],
                   "edges": edges(&[("f", "g")])}),
            Intent::Succeeds,
        ),
        _ => (
            json!({"nodes": [{"id": "f", "type": "util.fail", "params": {"times": 100}, "max_attempts": 2}, noop("g")],
                   "edges": edges(&[("f", "g")])}),
            Intent::Fails,
        ),
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
enum Fault {
    KillWorker,
    FreezeWorker,
    KillCoordinator,
    FreezeCoordinator,
    CloseBrokerConnections,
    TerminateDatabaseBackends,
    RefuseDatabase,
}

const FAULTS: [Fault; 7] = [
    Fault::KillWorker,
    Fault::FreezeWorker,
    Fault::KillCoordinator,
    Fault::FreezeCoordinator,
    Fault::CloseBrokerConnections,
    Fault::TerminateDatabaseBackends,
    Fault::RefuseDatabase,
];

/// Submits every run with its own Idempotency-Key, to whichever coordinator answers: a
/// submission whose answer was lost in a fault is sent again and returns the first run.
async fn submit_all(http: reqwest::Client, urls: Arc<Mutex<Vec<String>>>, graphs: Vec<(Value, Intent)>) -> Vec<(Uuid, Intent)> {
    let mut runs = Vec::with_capacity(graphs.len());
    for (i, (graph, intent)) in graphs.into_iter().enumerate() {
        let body = json!({"subject": {"kind": "test", "test": "chaos"}, "graph": graph});
        let deadline = Instant::now() + Duration::from_secs(120);
        let id = loop {
            let url = {
                let urls = urls.lock().unwrap();
                urls[i % urls.len()].clone()
            };
            let sent = http.post(format!("{url}/v1/runs")).header("Idempotency-Key", format!("chaos-{i}")).json(&body).send().await;
            if let Ok(resp) = sent {
                if resp.status().is_success() {
                    let v: Value = resp.json().await.unwrap();
                    break v["run_id"].as_str().unwrap().parse::<Uuid>().unwrap();
                }
                assert!(resp.status().is_server_error(), "run {i} refused: {}", resp.status());
            }
            assert!(Instant::now() < deadline, "run {i} could not be submitted for 120 s");
            tokio::time::sleep(Duration::from_millis(100)).await;
        };
        runs.push((id, intent));
        // Spread over the faults: they should meet runs in every state.
        tokio::time::sleep(Duration::from_millis(180)).await;
    }
    runs
}

fn coordinator_env() -> Vec<(&'static str, &'static str)> {
    vec![
        ("RENDERFLEET_RECOVERY__HEARTBEAT_TIMEOUT", HEARTBEAT_TIMEOUT),
        ("RENDERFLEET_STARTUP_TIMEOUT", "60s"),
        ("RENDERFLEET_OUTBOX__IDLE_POLL", "200ms"),
    ]
}

fn start_worker(w: &mut World, name: &str) {
    w.start_worker(name, &[("RENDERFLEET_CONCURRENCY", "4"), ("RENDERFLEET_HEARTBEAT_INTERVAL", "300ms")]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_fleet_keeps_its_promises_under_chaos() {
    let seed = std::env::var("RENDERFLEET_CHAOS_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos() as u64 | 1);
    println!("chaos seed {seed} (RENDERFLEET_CHAOS_SEED={seed} replays this schedule)");
    let mut rng = Rng(seed);
    let started = Instant::now();
    let mut w = World::new("chaos").await;
    w.rust_log = "info".into();
    let mut coords: Vec<Coord> = Vec::new();
    for name in COORDINATORS {
        coords.push(w.start_coordinator(name, &coordinator_env()).await);
    }
    for name in WORKERS {
        start_worker(&mut w, name);
    }
    let urls = Arc::new(Mutex::new(coords.iter().map(|c| c.url.clone()).collect::<Vec<_>>()));
    let graphs: Vec<(Value, Intent)> = (0..RUNS).map(|_| graph(&mut rng)).collect();
    let submitter = tokio::spawn(submit_all(w.http.clone(), urls.clone(), graphs));

    // Every kind of fault at least once, in a random order, then more at random.
    let mut schedule: Vec<Fault> = FAULTS.to_vec();
    for i in (1..schedule.len()).rev() {
        schedule.swap(i, rng.below(i as u64 + 1) as usize);
    }
    schedule.extend((0..8).map(|_| FAULTS[rng.below(FAULTS.len() as u64) as usize]));
    let mut injected: std::collections::BTreeMap<Fault, u32> = Default::default();
    let garbage: [&[u8]; 3] = [b"\xc1 not msgpack", b"", b"{\"json\": \"is not the wire format\"}"];
    for (i, fault) in schedule.iter().enumerate() {
        tokio::time::sleep(Duration::from_millis(500 + rng.below(1500))).await;
        if i % 3 == 0 {
            let payload = garbage[i / 3 % garbage.len()];
            w.publish_raw(&w.topology.tasks_exchange(), "noop", payload).await;
            w.publish_raw(&w.topology.results_exchange(), "", payload).await;
        }
        *injected.entry(*fault).or_default() += 1;
        match fault {
            Fault::KillWorker => {
                let name = WORKERS[rng.below(3) as usize];
                w.kill(name);
                tokio::time::sleep(Duration::from_millis(300)).await;
                start_worker(&mut w, name);
            }
            Fault::FreezeWorker | Fault::FreezeCoordinator => {
                // A frozen coordinator's prefetched results and heartbeats wait unread meanwhile.
                let name = match fault {
                    Fault::FreezeWorker => WORKERS[rng.below(3) as usize],
                    _ => COORDINATORS[rng.below(2) as usize],
                };
                w.signal(name, Signal::SIGSTOP);
                tokio::time::sleep(FREEZE).await;
                w.signal(name, Signal::SIGCONT);
            }
            Fault::KillCoordinator => {
                let slot = rng.below(2) as usize;
                w.kill(COORDINATORS[slot]);
                let c = w.spawn_coordinator(COORDINATORS[slot], &coordinator_env());
                urls.lock().unwrap()[slot] = c.url.clone();
                coords[slot] = c;
            }
            Fault::CloseBrokerConnections => {
                let closed = close_broker_connections(w.topology.prefix());
                assert!(closed > 0, "no broker connection of this world to close");
            }
            Fault::TerminateDatabaseBackends => w.terminate_database_backends().await,
            Fault::RefuseDatabase => {
                w.database_outage().await;
                tokio::time::sleep(REFUSED).await;
                w.database_back().await;
            }
        }
    }
    let faults_done = started.elapsed();
    let runs = submitter.await.expect("submitter");
    for c in &coords {
        w.wait_ready(c).await;
    }

    // Everything settles: every run ends, and the outbox drains (a row whose lazy "sent"
    // mark was lost goes out again when its lease ends).
    let db = w.db().await;
    wait_until("every run to end and the outbox to drain", Duration::from_secs(240), || async {
        let row = db
            .query_one(
                "SELECT (SELECT count(*) FROM runs WHERE status = 'running') AS running,
                        (SELECT count(*) FROM outbox WHERE sent_at IS NULL) AS unsent",
                &[],
            )
            .await
            .ok()?;
        (row.get::<_, i64>("running") == 0 && row.get::<_, i64>("unsent") == 0).then_some(())
    })
    .await;

    // 1. Every run ended as its graph intends.
    for (id, intent) in &runs {
        let status: String = db.query_one("SELECT status FROM runs WHERE id = $1", &[id]).await.unwrap().get("status");
        let want = match intent {
            Intent::Succeeds => "succeeded",
            Intent::Fails => "failed",
        };
        assert_eq!(status, want, "run {id}");
    }
    let count = |sql: &'static str| {
        let db = &db;
        async move { db.query_one(sql, &[]).await.unwrap_or_else(|e| panic!("{sql}: {e}")).get::<_, i64>(0) }
    };
    assert_eq!(count("SELECT count(*) FROM runs").await, RUNS as i64, "one run per submission, however often it was sent");
    // 2. No node is left unfinished, and a run's progress is its succeeded nodes.
    assert_eq!(count("SELECT count(*) FROM node_runs WHERE status IN ('pending', 'queued', 'running')").await, 0);
    assert_eq!(
        count(
            "SELECT count(*) FROM runs r
             WHERE nodes_done <> (SELECT count(*) FROM node_runs n WHERE n.run_id = r.id AND n.status = 'succeeded')"
        )
        .await,
        0
    );
    // 3. One succeeded attempt per succeeded node, and it is the node's current attempt.
    assert_eq!(
        count(
            "SELECT count(*) FROM node_runs n
             WHERE n.status = 'succeeded'
               AND (SELECT count(*) FROM node_attempts a WHERE a.node_run_id = n.id AND a.status = 'succeeded') <> 1"
        )
        .await,
        0,
        "a succeeded node without exactly one succeeded attempt"
    );
    assert_eq!(
        count(
            "SELECT count(*) FROM node_attempts a JOIN node_runs n ON n.id = a.node_run_id
             WHERE a.status = 'succeeded' AND (n.status <> 'succeeded' OR a.attempt <> n.attempt)"
        )
        .await,
        0,
        "a succeeded attempt that is not its node's current one"
    );
    // 4. No successor was queued or started before its predecessor succeeded.
    assert_eq!(
        count(
            "SELECT count(*) FROM node_runs p CROSS JOIN LATERAL unnest(p.successors) AS s(id) JOIN node_runs c ON c.id = s.id
             WHERE (c.started_at IS NOT NULL OR c.status = 'succeeded')
               AND (p.status <> 'succeeded' OR c.queued_at < p.finished_at OR c.started_at < p.finished_at)"
        )
        .await,
        0,
        "a successor started before its predecessor succeeded"
    );
    // 5. Every garbage message is dead-lettered, each with its reason.
    let published = schedule.len().div_ceil(3) * 2;
    let mut reasons = Vec::new();
    for letter in w.take_dead_letters().await {
        match letter.reason {
            Some(reason) if !reason.is_empty() => reasons.push(reason),
            other => panic!("a dead letter without a reason: {other:?}"),
        }
    }
    let undecodable = reasons.iter().filter(|r| r.contains("undecodable")).count();
    let others: Vec<&String> = reasons.iter().filter(|r| !r.contains("undecodable")).collect();
    assert!(undecodable >= published, "{undecodable} undecodable dead letters of {published} garbage messages: {reasons:?}");

    let nodes = count("SELECT count(*) FROM node_runs").await;
    let attempts = count("SELECT count(*) FROM node_attempts").await;
    let lost = count("SELECT count(*) FROM node_attempts WHERE status = 'lost'").await;
    println!(
        "chaos: {RUNS} runs ({nodes} nodes, {attempts} attempts of which {lost} lost), faults {injected:?}, \
         {} garbage messages dead-lettered ({} dead letters in all, the others: {others:?}); faults over after {:.0} s, \
         all settled and checked after {:.0} s",
        published,
        reasons.len(),
        faults_done.as_secs_f64(),
        started.elapsed().as_secs_f64()
    );
    for name in WORKERS.iter().chain(COORDINATORS.iter()) {
        assert!(w.alive(name), "{name} died");
    }
}

//! The broker as a trust boundary: with `results.verify_sender`, a result or heartbeat is
//! accepted only from the worker it names, as RabbitMQ vouches for it (a message's
//! `user_id` must be the sending connection's user).

use lapin::options::{BasicPublishOptions, ConfirmSelectOptions};
use lapin::{BasicProperties, Connection, ConnectionProperties};
use renderfleet_shared::wire::{self, Finished, Outcome, ResultBody, ResultMessage, WorkerHeartbeat, WorkerStatus, WIRE_VERSION};
use renderfleet_tests::{node, wait_until, World};
use serde_json::json;
use std::process::Command;
use std::time::Duration;
use uuid::Uuid;

const LONG: Duration = Duration::from_secs(60);

/// Broker users made for one test, deleted when it ends.
struct BrokerUsers(Vec<String>);

impl BrokerUsers {
    /// A user allowed the names of the fleet with `prefix` only, as README's Security says.
    fn add(&mut self, name: &str, password: &str, prefix: &str) {
        let ok = |args: &[&str]| {
            let out = Command::new("rabbitmqctl").arg("-q").args(args).output().expect("rabbitmqctl");
            assert!(out.status.success(), "rabbitmqctl {args:?}: {}", String::from_utf8_lossy(&out.stderr));
        };
        ok(&["add_user", name, password]);
        self.0.push(name.to_string());
        let names = format!("^({}\\..*|amq\\.gen-.*)$", prefix.replace('.', "\\."));
        ok(&["set_permissions", "-p", "/", name, &names, &names, &names]);
    }
}

impl Drop for BrokerUsers {
    fn drop(&mut self) {
        for name in &self.0 {
            let _ = Command::new("rabbitmqctl").args(["-q", "delete_user", name]).status();
        }
    }
}

fn url(user: &str, password: &str) -> String {
    format!("amqp://{user}:{password}@127.0.0.1:5672/%2f")
}

/// Publishes `body` to the results exchange as `user`, with `user_id` set to `claimed`
/// (or none); returns whether the broker took it.
async fn publish_as(w: &World, user: &str, password: &str, claimed: Option<&str>, body: ResultBody) -> bool {
    let conn = Connection::connect(&url(user, password), ConnectionProperties::default()).await.expect("connect as the test user");
    let ch = conn.create_channel().await.unwrap();
    ch.confirm_select(ConfirmSelectOptions::default()).await.unwrap();
    let mut props = BasicProperties::default().with_delivery_mode(2);
    if let Some(id) = claimed {
        props = props.with_user_id(id.into());
    }
    let payload = wire::encode(&ResultMessage { v: WIRE_VERSION, body });
    let sent = async {
        ch.basic_publish(w.topology.results_exchange().as_str().into(), "".into(), BasicPublishOptions::default(), &payload, props)
            .await?
            .await
    };
    let took = matches!(sent.await, Ok(c) if c.is_ack());
    let _ = conn.close(200, "done".into()).await;
    took
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn results_and_heartbeats_are_accepted_only_from_the_worker_they_name() {
    let mut w = World::new("verify_sender").await;
    let tag = &w.topology.prefix().rsplit('-').next().unwrap().to_string();
    let (worker, mallory) = (format!("rf-w-{tag}"), format!("rf-mallory-{tag}"));
    let mut users = BrokerUsers(Vec::new());
    let prefix = w.topology.prefix().to_string();
    users.add(&worker, "worker-secret", &prefix);
    users.add(&mallory, "mallory-secret", &prefix);
    let c = w.start_coordinator("coordinator", &[("RENDERFLEET_RESULTS__VERIFY_SENDER", "true")]).await;
    let worker_url = url(&worker, "worker-secret");
    w.start_worker(&worker, &[("AMQP_URL", worker_url.as_str()), ("RENDERFLEET_WORKER_ID", worker.as_str())]);

    // A worker running as its own broker user is heard as usual.
    let id = w.submit(&c, json!({"nodes": [{"id": "s", "type": "util.sleep", "params": {"ms": 4000}}]})).await;
    let running = w.wait_node(&c, id, "s", "running", LONG).await;
    let node_run_id: Uuid = running["node_run_id"].as_str().expect("node run id").parse().unwrap();

    // Another broker user forging the running worker's success: refused, the node runs on.
    let forged = ResultBody::Finished(Finished {
        cache: None,
        node_run_id,
        attempt: 1,
        worker_id: worker.clone(),
        started_at_us: 1,
        finished_at_us: 2,
        outcome: Outcome::Succeeded { outputs: json!({"forged": true}) },
    });
    assert!(publish_as(&w, &mallory, "mallory-secret", Some(&mallory), forged.clone()).await, "the broker takes mallory's own user_id");
    assert!(
        !publish_as(&w, &mallory, "mallory-secret", Some(&worker), forged.clone()).await,
        "the broker refuses a user_id that is not the sender's"
    );
    assert!(publish_as(&w, &mallory, "mallory-secret", None, forged).await);
    // ... and a heartbeat inventing a worker that serves a module nobody runs.
    let fake = ResultBody::Heartbeat(WorkerHeartbeat {
        worker_id: "rf-fake".into(),
        host: "nowhere".into(),
        version: "0".into(),
        modules: vec!["blender_still".into()],
        concurrency: 64,
        running: vec![],
        status: WorkerStatus::Running,
        at_us: 0,
        tools: Default::default(),
        fingerprints: Default::default(),
        quarantined: Vec::new(),
    });
    assert!(publish_as(&w, &mallory, "mallory-secret", Some(&mallory), fake).await);

    let dead = w.topology.dead_queue();
    wait_until("the three forgeries dead-lettered", LONG, || async { (w.queue_depth(&dead).await >= 3).then_some(()) }).await;
    let run = w.wait_run(&c, id, LONG).await;
    assert_eq!(run["status"], "succeeded", "{run:#}");
    let s = node(&run, "s").unwrap();
    assert_eq!(s["worker_id"], worker.as_str(), "{s:#}");
    assert!(s["outputs"].get("forged").is_none(), "the forged outputs were applied: {s:#}");
    let db = w.db().await;
    assert!(db.query_opt("SELECT 1 FROM workers WHERE id = 'rf-fake'", &[]).await.unwrap().is_none(), "a forged worker was recorded");

    let reasons: Vec<String> = w.take_dead_letters().await.into_iter().filter_map(|l| l.reason).collect();
    assert_eq!(
        reasons.iter().filter(|r| r.contains(&format!("broker user `{mallory}` speaks for worker `{worker}`"))).count(),
        1,
        "{reasons:?}"
    );
    assert_eq!(reasons.iter().filter(|r| r.contains("without user_id")).count(), 1, "{reasons:?}");
    assert_eq!(reasons.iter().filter(|r| r.contains("speaks for worker `rf-fake`")).count(), 1, "{reasons:?}");
}

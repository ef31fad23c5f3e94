//! The limits, measured with the same broker and database in the same run: what one
//! broker leg and one hop's database transaction cost when nothing else is in the way.

use futures_util::StreamExt;
use lapin::options::{
    BasicAckOptions, BasicConsumeOptions, BasicPublishOptions, ConfirmSelectOptions, QueueDeclareOptions, QueueDeleteOptions,
};
use lapin::types::FieldTable;
use lapin::BasicProperties;
use renderfleet_coordinator::{db, dispatch, results::apply};
use renderfleet_shared::config::RetryConfig;
use renderfleet_shared::graph::{self, GraphSpec, NodeDefaults};
use renderfleet_shared::registry::registry;
use renderfleet_shared::wire::{Finished, Outcome, ResultBody};
use renderfleet_tests::World;
use serde_json::json;
use std::time::{Duration, Instant};
use uuid::Uuid;

use crate::{median, quantile, Sizes};

#[derive(Debug, Clone, serde::Serialize)]
pub(crate) struct Limits {
    pub broker_p50_ms: f64,
    pub broker_p99_ms: f64,
    pub broker_pipelined_per_s: f64,
    pub db_p50_ms: f64,
    pub db_p99_ms: f64,
    pub db_per_s: f64,
    /// The same transaction sent as the result consumer sent it before pipelining it into one
    /// round trip, interleaved with it hop by hop: what the pipelining saves.
    pub db_three_trips_p50_ms: f64,
    /// A renderfleet hop needs two broker legs (task, result) and one transaction.
    pub hop_floor_p50_ms: f64,
    pub hop_floor_p99_ms: f64,
}

pub(crate) async fn measure(sizes: Sizes) -> anyhow::Result<Limits> {
    let mut seq = Vec::new();
    let mut pipe = Vec::new();
    let mut tx = Vec::new();
    for _ in 0..sizes.repeats {
        let (p50, p99) = broker_sequential(sizes.limit_iterations).await?;
        seq.push((p50, p99));
        pipe.push(broker_pipelined(sizes.limit_iterations * 3).await?);
        tx.push(database(sizes.limit_iterations).await?);
    }
    let broker_p50_ms = median(seq.iter().map(|s| s.0).collect());
    let broker_p99_ms = median(seq.iter().map(|s| s.1).collect());
    let db_p50_ms = median(tx.iter().map(|s| s.0).collect());
    let db_p99_ms = median(tx.iter().map(|s| s.1).collect());
    Ok(Limits {
        broker_p50_ms,
        broker_p99_ms,
        broker_pipelined_per_s: median(pipe),
        db_p50_ms,
        db_p99_ms,
        db_per_s: median(tx.iter().map(|s| s.2).collect()),
        db_three_trips_p50_ms: median(tx.iter().map(|s| s.3).collect()),
        hop_floor_p50_ms: 2.0 * broker_p50_ms + db_p50_ms,
        hop_floor_p99_ms: 2.0 * broker_p99_ms + db_p99_ms,
    })
}

async fn queue(name: &str) -> anyhow::Result<(lapin::Connection, lapin::Channel, lapin::Channel)> {
    let conn = lapin::Connection::connect(renderfleet_tests::AMQP, Default::default()).await?;
    let publish = conn.create_channel().await?;
    publish.confirm_select(ConfirmSelectOptions::default()).await?;
    let consume = conn.create_channel().await?;
    consume.basic_qos(1000, Default::default()).await?;
    publish.queue_declare(name.into(), QueueDeclareOptions { durable: true, ..Default::default() }, FieldTable::default()).await?;
    Ok((conn, publish, consume))
}

fn persistent() -> BasicProperties {
    BasicProperties::default().with_delivery_mode(2)
}

/// One message at a time: publish (persistent, confirmed) → consume → ack.
async fn broker_sequential(n: usize) -> anyhow::Result<(f64, f64)> {
    let name = format!("rf-bench-limit-{}", Uuid::now_v7().simple());
    let (conn, publish, consume) = queue(&name).await?;
    let mut consumer =
        consume.basic_consume(name.as_str().into(), "bench".into(), BasicConsumeOptions::default(), FieldTable::default()).await?;
    let payload = vec![0u8; 200];
    let mut lat = Vec::with_capacity(n);
    for _ in 0..n {
        let t = Instant::now();
        publish.basic_publish("".into(), name.as_str().into(), BasicPublishOptions::default(), &payload, persistent()).await?.await?;
        let d = consumer.next().await.expect("delivery")?;
        d.acker.ack(BasicAckOptions::default()).await?;
        lat.push(t.elapsed().as_secs_f64() * 1e3);
    }
    publish.queue_delete(name.as_str().into(), QueueDeleteOptions::default()).await?;
    let _ = conn.close(200, "bench".into()).await;
    Ok((quantile(lat.clone(), 0.5), quantile(lat, 0.99)))
}

/// Throughput with confirms in flight and a concurrent consumer.
async fn broker_pipelined(n: usize) -> anyhow::Result<f64> {
    let name = format!("rf-bench-limit-{}", Uuid::now_v7().simple());
    let (conn, publish, consume) = queue(&name).await?;
    let mut consumer =
        consume.basic_consume(name.as_str().into(), "bench".into(), BasicConsumeOptions::default(), FieldTable::default()).await?;
    let t = Instant::now();
    let reader = tokio::spawn(async move {
        for _ in 0..n {
            let d = consumer.next().await.expect("delivery").expect("delivery ok");
            d.acker.ack(BasicAckOptions::default()).await.expect("ack");
        }
    });
    let payload = vec![0u8; 200];
    let mut window = Vec::with_capacity(256);
    for _ in 0..n {
        window.push(publish.basic_publish("".into(), name.as_str().into(), BasicPublishOptions::default(), &payload, persistent()).await?);
        if window.len() == 256 {
            for c in window.drain(..) {
                c.await?;
            }
        }
    }
    for c in window {
        c.await?;
    }
    reader.await?;
    let rate = n as f64 / t.elapsed().as_secs_f64();
    publish.queue_delete(name.as_str().into(), QueueDeleteOptions::default()).await?;
    let _ = conn.close(200, "bench".into()).await;
    Ok(rate)
}

/// The coordinator's own hop transaction (node succeeded → successor released and
/// enqueued → run progress), applied to a real chain, one transaction per hop. Every other
/// hop runs the same work as a classic BEGIN / statements / COMMIT transaction instead, for
/// comparison. Returns (p50, p99, transactions/s) of the real one and the classic p50.
async fn database(n: usize) -> anyhow::Result<(f64, f64, f64, f64)> {
    let world = World::new("bench_db_limit").await;
    let pool = db::connect(&world.database_url, 2, Duration::from_secs(10)).await?;
    db::migrate(&pool).await?;
    let nodes: Vec<_> = (0..n).map(|i| json!({"id": format!("n{i}"), "type": "util.noop"})).collect();
    let edges: Vec<_> = (1..n).map(|i| json!({"from": format!("n{}", i - 1), "to": format!("n{i}")})).collect();
    let spec: GraphSpec = serde_json::from_value(json!({"nodes": nodes, "edges": edges}))?;
    let plan = graph::plan(
        &spec,
        registry(),
        NodeDefaults { max_attempts: 1, timeout: Duration::from_secs(60), max_timeout: Duration::from_secs(60) },
    )
    .map_err(|p| anyhow::anyhow!("{p:?}"))?;
    // No publisher here: the hand-off waits in the channel, and the benchmark takes the tasks itself.
    let hot = renderfleet_coordinator::outbox::Hot::default();
    let dispatch::Created::New(run) =
        dispatch::create_run(&pool, &hot, &plan, &serde_json::to_value(&spec)?, &json!({}), None, Default::default()).await?
    else {
        anyhow::bail!("a run without an idempotency key is always new");
    };
    let client = pool.get().await?;
    let ids: Vec<Uuid> =
        client.query("SELECT id FROM node_runs WHERE run_id = $1 ORDER BY id", &[&run]).await?.iter().map(|r| r.get(0)).collect();
    drop(client);
    let mut lat = Vec::with_capacity(n);
    let mut classic = Vec::with_capacity(n / 2);
    let retry = RetryConfig::default();
    let defaults = renderfleet_shared::graph::NodeDefaults {
        max_attempts: 3,
        timeout: Duration::from_secs(60),
        max_timeout: Duration::from_secs(3600),
    };
    let policy = apply::Policy { retry: &retry, heartbeat_timeout: Duration::from_secs(30), defaults, verified_senders: false };
    let mut busy = Duration::ZERO;
    let mut client = pool.get().await?;
    for (hop, id) in ids.into_iter().enumerate() {
        let s = Instant::now();
        let now = chrono::Utc::now().timestamp_micros();
        let msg = ResultBody::Finished(Finished {
            cache: None,
            node_run_id: id,
            attempt: 1,
            worker_id: "bench".into(),
            started_at_us: now,
            finished_at_us: now,
            outcome: Outcome::Succeeded { outputs: json!({}) },
        });
        let fx = if hop % 2 == 0 {
            // What the result consumer runs for a batch of successes: one round trip.
            apply::apply_successes(&client, std::slice::from_ref(&msg)).await.expect("a success")?
        } else {
            let tx = client.transaction().await?;
            let fx = apply::apply(&tx, &[msg], policy).await?;
            tx.commit().await?;
            fx
        };
        anyhow::ensure!(fx.succeeded.len() == 1, "the hop transaction did not apply");
        let took = s.elapsed();
        if hop % 2 == 0 {
            lat.push(took.as_secs_f64() * 1e3);
            busy += took;
        } else {
            classic.push(took.as_secs_f64() * 1e3);
        }
    }
    let rate = lat.len() as f64 / busy.as_secs_f64();
    Ok((quantile(lat.clone(), 0.5), quantile(lat, 0.99), rate, quantile(classic, 0.5)))
}

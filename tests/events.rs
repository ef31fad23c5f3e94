//! Completion events (README, "Completion events"): webhook deliveries to a real HTTP
//! receiver, signed, retried and surviving a killed coordinator; the same events on the
//! broker's events exchange.

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use futures_util::StreamExt;
use lapin::options::{BasicAckOptions, BasicConsumeOptions, QueueBindOptions, QueueDeclareOptions};
use lapin::types::FieldTable;
use renderfleet_shared::events::{verify, EVENT_ID_HEADER, SIGNATURE_HEADER};
use renderfleet_tests::*;
use serde_json::{json, Value};
use std::sync::{Arc, Mutex};
use std::time::Duration;

const LONG: Duration = Duration::from_secs(60);
const SECRET: &str = "whsec-test-0123456789";

/// What a receiver got: (event id header, body, whether the signature verified).
type Got = Arc<Mutex<Vec<(String, Value, bool)>>>;

/// An HTTP receiver on `port` that answers 500 to its first `fail_first` deliveries, then 200.
async fn receiver(port: u16, fail_first: usize) -> Got {
    let got: Got = Arc::default();
    let app = axum::Router::new().route("/hook", axum::routing::post(take)).with_state((got.clone(), fail_first));
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port)).await.expect("receiver port");
    tokio::spawn(async move { axum::serve(listener, app).await });
    got
}

async fn take(State((got, fail_first)): State<(Got, usize)>, headers: HeaderMap, body: Bytes) -> StatusCode {
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok()).unwrap_or_default().to_string();
    let verified = verify(SECRET, &header(SIGNATURE_HEADER), &body, chrono::Utc::now().timestamp()).is_ok();
    let mut got = got.lock().unwrap();
    got.push((header(EVENT_ID_HEADER), serde_json::from_slice(&body).unwrap_or(Value::Null), verified));
    if got.len() <= fail_first {
        StatusCode::INTERNAL_SERVER_ERROR
    } else {
        StatusCode::OK
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webhooks_are_signed_retried_until_accepted_and_survive_a_killed_coordinator() {
    let mut w = World::new("events_webhooks").await;
    let fast =
        [("RENDERFLEET_WEBHOOKS__RETRY_BASE", "1s"), ("RENDERFLEET_WEBHOOKS__RETRY_MAX", "2s"), ("RENDERFLEET_WEBHOOKS__POLL", "200ms")];
    let c = w.start_coordinator("c1", &fast).await;

    // The broker side: a queue of the test's own on the events exchange.
    let conn = w.amqp().await;
    let ch = conn.create_channel().await.unwrap();
    let q =
        ch.queue_declare("".into(), QueueDeclareOptions { exclusive: true, ..Default::default() }, FieldTable::default()).await.unwrap();
    let events_exchange = w.topology.events_exchange();
    ch.queue_bind(
        q.name().as_str().into(),
        events_exchange.as_str().into(),
        "request.#".into(),
        QueueBindOptions::default(),
        FieldTable::default(),
    )
    .await
    .unwrap();

    // A refused subscription names the problem.
    let (status, e) = call(
        &w,
        reqwest::Method::POST,
        format!("{}/v1/webhooks", c.url),
        Some(json!({"url": "ftp://x", "secret": SECRET, "events": ["request.failed"]})),
    )
    .await;
    assert_eq!((status, e["error"].as_str()), (422, Some("invalid_url")), "{e:#}");
    let (status, e) = call(
        &w,
        reqwest::Method::POST,
        format!("{}/v1/webhooks", c.url),
        Some(json!({"url": "http://127.0.0.1:1/hook", "secret": "short", "events": ["request.failed"]})),
    )
    .await;
    assert_eq!((status, e["error"].as_str()), (422, Some("weak_secret")), "{e:#}");

    // A fails twice then accepts; B is not listening yet.
    let (port_a, port_b) = (free_port(), free_port());
    let got_a = receiver(port_a, 2).await;
    let mut hooks = Vec::new();
    for port in [port_a, port_b] {
        let body =
            json!({"url": format!("http://127.0.0.1:{port}/hook"), "secret": SECRET, "events": ["request.cancelled", "request.succeeded"]});
        let (status, hook) = call(&w, reqwest::Method::POST, format!("{}/v1/webhooks", c.url), Some(body)).await;
        assert_eq!(status, 201, "{hook:#}");
        assert!(hook.get("secret").is_none(), "the secret is never shown: {hook:#}");
        hooks.push(hook["id"].as_str().unwrap().to_string());
    }

    // A legacy output type and a request for it, cancelled: no worker needed.
    let ot = json!({"key": "still-evt", "family": "order_line", "artifact_kind": "image_png", "legacy_preset": {"resolution": 64}});
    let (status, e) = call(&w, reqwest::Method::POST, format!("{}/v1/output-types", c.url), Some(ot)).await;
    assert_eq!(status, 201, "{e:#}");
    let body =
        json!({"order_line_id": "ol-evt-1", "subject": {"cad_file": "as1-oc-214.stp"}, "output_type": "still-evt", "tenant": "shop-7"});
    let resp = w.http.post(format!("{}/v1/render-requests", c.url)).header("Idempotency-Key", "ol-evt-1").json(&body).send().await.unwrap();
    assert_eq!(resp.status(), 201);
    let request: Value = resp.json().await.unwrap();
    let run = request["run"]["run_id"].as_str().unwrap().to_string();
    let (status, e) = call(&w, reqwest::Method::POST, format!("{}/v1/runs/{run}/cancel", c.url), None).await;
    assert_eq!(status, 200, "{e:#}");

    // Two refusals are visible with the receiver's answer, then the third attempt lands.
    let hook_a = format!("{}/v1/webhooks/{}", c.url, hooks[0]);
    wait_until("two failed attempts shown", LONG, || async {
        let (_, h) = call(&w, reqwest::Method::GET, hook_a.clone(), None).await;
        let d = &h["recent"][0];
        (d["attempts"] == 2 && d["status"] == "pending").then(|| {
            assert_eq!(d["last_status"], 500, "{d:#}");
            assert!(d["last_error"].as_str().unwrap_or_default().contains("500"), "{d:#}");
        })
    })
    .await;
    let delivered = wait_until("the delivery accepted", LONG, || async {
        let (_, h) = call(&w, reqwest::Method::GET, hook_a.clone(), None).await;
        (h["recent"][0]["status"] == "delivered").then(|| h["recent"][0].clone())
    })
    .await;
    assert_eq!((delivered["attempts"].as_i64(), delivered["last_status"].as_i64()), (Some(3), Some(200)), "{delivered:#}");
    let got = got_a.lock().unwrap().clone();
    assert_eq!(got.len(), 3, "three deliveries of one event: {got:#?}");
    let event_id = got[0].0.clone();
    for (id, body, verified) in &got {
        assert!(verified, "the signature verifies with the secret");
        assert_eq!((id, body["id"].as_str()), (&event_id, Some(event_id.as_str())), "one event id in the header and the body");
        assert_eq!(body, &got[0].1, "every delivery sends the same body");
    }
    let event = &got[0].1;
    assert_eq!(event["type"], "request.cancelled");
    assert_eq!(
        (event["request"]["order_line_id"].as_str(), event["request"]["output_type"].as_str(), event["request"]["submitter"].as_str()),
        (Some("ol-evt-1"), Some("still-evt"), Some("shop-7"))
    );
    assert_eq!((event["run"]["id"].as_str(), event["run"]["status"].as_str()), (Some(run.as_str()), Some("cancelled")));
    assert_eq!(event["error"]["kind"], "cancelled", "{event:#}");

    // The same event on the exchange, routed by type and output type.
    let mut consumer =
        ch.basic_consume(q.name().as_str().into(), "test".into(), BasicConsumeOptions::default(), FieldTable::default()).await.unwrap();
    let msg = tokio::time::timeout(LONG, consumer.next()).await.expect("an event on the exchange").unwrap().unwrap();
    assert_eq!(msg.routing_key.as_str(), "request.cancelled.still-evt");
    let on_broker: Value = serde_json::from_slice(&msg.data).unwrap();
    assert_eq!(&on_broker, event, "the exchange carries the webhook's body");
    msg.ack(BasicAckOptions::default()).await.unwrap();

    // B's deliveries are pending (connection refused) when the coordinator dies; after a
    // restart, with B listening, it gets the same event.
    let hook_b = format!("{}/v1/webhooks/{}", c.url, hooks[1]);
    wait_until("B's first attempt refused", LONG, || async {
        let (_, h) = call(&w, reqwest::Method::GET, hook_b.clone(), None).await;
        let d = &h["recent"][0];
        (d["attempts"].as_i64() >= Some(1) && d["last_error"].as_str().is_some_and(|e| e.contains("no answer"))).then_some(())
    })
    .await;
    w.kill("c1");
    let got_b = receiver(port_b, 0).await;
    let c2 = w.start_coordinator("c2", &fast).await;
    wait_until("B's delivery after the restart", LONG, || async { (!got_b.lock().unwrap().is_empty()).then_some(()) }).await;
    let (id, body, verified) = got_b.lock().unwrap()[0].clone();
    assert!(verified);
    assert_eq!((id.as_str(), &body), (event_id.as_str(), event), "B gets the same event");
    let (_, h) = call(&w, reqwest::Method::GET, format!("{}/v1/webhooks/{}", c2.url, hooks[1]), None).await;
    assert_eq!((h["deliveries"]["delivered"].as_i64(), h["deliveries"]["pending"].as_i64()), (Some(1), Some(0)), "{h:#}");
    let (status, _) = call(&w, reqwest::Method::DELETE, format!("{}/v1/webhooks/{}", c2.url, hooks[1]), None).await;
    assert_eq!(status, 204);
    let (_, list) = call(&w, reqwest::Method::GET, format!("{}/v1/webhooks", c2.url), None).await;
    assert_eq!(list.as_array().map(Vec::len), Some(1));
    let _ = conn.close(200, "done".into()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_older_than_keep_events_are_pruned_once_published_and_delivered() {
    let mut w = World::new("events_prune").await;
    let c = w.start_coordinator("c1", &[("RENDERFLEET_WEBHOOKS__KEEP_EVENTS", "2s")]).await;
    let port = free_port();
    let got = receiver(port, 0).await;
    let body = json!({"url": format!("http://127.0.0.1:{port}/hook"), "secret": SECRET, "events": ["request.cancelled"]});
    assert_eq!(call(&w, reqwest::Method::POST, format!("{}/v1/webhooks", c.url), Some(body)).await.0, 201);
    let ot = json!({"key": "still-old", "family": "order_line", "artifact_kind": "image_png", "legacy_preset": {"resolution": 64}});
    assert_eq!(call(&w, reqwest::Method::POST, format!("{}/v1/output-types", c.url), Some(ot)).await.0, 201);
    let body = json!({"order_line_id": "ol-old", "subject": {"cad_file": "as1-oc-214.stp"}, "output_type": "still-old"});
    let resp = w.http.post(format!("{}/v1/render-requests", c.url)).header("Idempotency-Key", "ol-old").json(&body).send().await.unwrap();
    let request: Value = resp.json().await.unwrap();
    let (status, _) =
        call(&w, reqwest::Method::POST, format!("{}/v1/render-requests/{}/cancel", c.url, request["id"].as_str().unwrap()), None).await;
    assert_eq!(status, 200);
    wait_until("the event delivered", LONG, || async { (got.lock().unwrap().len() == 1).then_some(()) }).await;
    assert_eq!(w.count("SELECT count(*) FROM events").await, 1, "kept while younger than keep_events");
    wait_until("the old event pruned with its delivery", LONG, || async {
        (w.count("SELECT count(*) FROM events").await == 0 && w.count("SELECT count(*) FROM webhook_deliveries").await == 0).then_some(())
    })
    .await;
    assert_eq!(w.count("SELECT count(*) FROM render_requests").await, 1, "the request itself stays");
}

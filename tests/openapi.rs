//! The OpenAPI document against the server it describes: the document's own shape
//! (parameters where they are sent, ids as UUIDs, every refusal documented, bodies with the
//! handlers' limits), then schemathesis fuzzing a real coordinator from it with valid and
//! invalid data, checking that nothing answers 5xx and that every answer's status, content
//! type and body are the documented ones.

use renderfleet_tests::World;
use serde_json::Value;
use std::path::PathBuf;
use std::time::Duration;

/// The schemathesis `ops/dev.sh` installs (`ensure_schemathesis`, pinned there).
fn schemathesis() -> PathBuf {
    let p = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/schemathesis-venv/bin/schemathesis");
    assert!(
        p.is_file(),
        "{} not found: run `ops/dev.sh test` (its `ensure_schemathesis` installs schemathesis from PyPI into target/schemathesis-venv)",
        p.display()
    );
    p
}

async fn document(w: &World, url: &str) -> Value {
    w.http.get(format!("{url}/v1/openapi.json")).send().await.unwrap().json().await.unwrap()
}

/// `#/components/schemas/NAME`.
fn schema<'a>(doc: &'a Value, name: &str) -> &'a Value {
    &doc["components"]["schemas"][name]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_document_says_where_parameters_go_and_every_refusal() {
    let mut w = World::new("openapi_doc").await;
    let c = w.start_coordinator("coordinator", &[]).await;
    let doc = document(&w, &c.url).await;
    let mut operations = 0;
    for (path, item) in doc["paths"].as_object().unwrap() {
        let templated: Vec<&str> = path.split('/').filter_map(|s| s.strip_prefix('{')?.strip_suffix('}')).collect();
        for (method, op) in item.as_object().unwrap() {
            let what = format!("{method} {path}");
            for p in op["parameters"].as_array().into_iter().flatten() {
                let name = p["name"].as_str().unwrap();
                match p["in"].as_str().unwrap() {
                    "path" => {
                        assert!(templated.contains(&name), "{what}: `{name}` is documented in the path but is not in it");
                        if name == "id" {
                            assert_eq!(p["schema"]["format"], "uuid", "{what}: `id` is a UUID");
                        }
                    }
                    "query" | "header" => assert!(!templated.contains(&name), "{what}: `{name}`"),
                    other => panic!("{what}: parameter `{name}` in {other}"),
                }
            }
            for name in &templated {
                let documented = op["parameters"].as_array().into_iter().flatten().any(|p| p["name"] == *name && p["in"] == "path");
                assert!(documented, "{what}: path parameter `{name}` is not documented");
            }
            if op["security"].is_null() {
                continue;
            }
            operations += 1;
            let mut statuses = vec!["400", "401", "403", "503"];
            if !op["requestBody"].is_null() {
                statuses.extend(["413", "415"]);
            }
            for status in statuses {
                let r = &op["responses"][status];
                assert_eq!(
                    r["content"]["application/json"]["schema"]["$ref"], "#/components/schemas/ErrorBody",
                    "{what}: {status} is not documented with the error shape"
                );
            }
        }
    }
    assert!(operations >= 30, "only {operations} guarded operations");
    // Query parameters are documented in the query.
    for (path, method, name) in [
        ("/v1/output-types/{key}/rollout-events", "get", "limit"),
        ("/v1/comparisons", "get", "output_type"),
        ("/v1/comparisons", "get", "verdict"),
        ("/v1/comparisons", "get", "limit"),
        ("/v1/products/{product}/material-map/repair", "post", "dry_run"),
        ("/v1/workflows/{id}/repair", "post", "dry_run"),
        ("/v1/workflows/{id}", "get", "version"),
        ("/v1/runs/{id}", "get", "nodes"),
        ("/v1/nodes", "get", "all"),
    ] {
        let params = doc["paths"][path][method]["parameters"].as_array().unwrap_or_else(|| panic!("{method} {path}"));
        let p = params.iter().find(|p| p["name"] == name).unwrap_or_else(|| panic!("{method} {path}: no `{name}`"));
        assert_eq!(p["in"], "query", "{method} {path}: `{name}`");
    }
    let verdict = doc["paths"]["/v1/comparisons"]["get"]["parameters"].as_array().unwrap().iter().find(|p| p["name"] == "verdict").unwrap();
    assert!(verdict.to_string().contains("candidate_error"), "the verdicts are listed: {verdict}");
    // Bodies carry the handlers' limits.
    let workflow = schema(&doc, "WorkflowInput");
    assert_eq!(
        (workflow["properties"]["name"]["minLength"].as_u64(), workflow["properties"]["name"]["maxLength"].as_u64()),
        (Some(1), Some(200))
    );
    assert_eq!(workflow["additionalProperties"], false, "unknown fields are refused");
    let node = schema(&doc, "NodeSpec");
    assert_eq!(
        (node["properties"]["max_attempts"]["minimum"].as_u64(), node["properties"]["max_attempts"]["maximum"].as_u64()),
        (Some(1), Some(100))
    );
    assert_eq!(node["properties"]["id"]["minLength"], 1);
    let material = schema(&doc, "MaterialInput");
    assert_eq!(material["properties"]["base_color"]["pattern"], "^#[0-9A-Fa-f]{6}$");
    assert_eq!(material["required"], serde_json::json!(["base_color"]));
    for field in ["metallic", "roughness"] {
        assert_eq!(
            (material["properties"][field]["minimum"].as_f64(), material["properties"][field]["maximum"].as_f64()),
            (Some(0.0), Some(1.0))
        );
    }
    let output_type = schema(&doc, "OutputTypeInput");
    assert_eq!(output_type["properties"]["key"]["pattern"], "^[a-z0-9][a-z0-9_.-]{0,63}$");
    assert_eq!(output_type["properties"]["shadow_sample_pct"]["maximum"].as_f64(), Some(100.0));
    let map = schema(&doc, "MapInput");
    assert_eq!(map["properties"]["assignments"]["propertyNames"]["maxLength"], 1000);
    let request = &doc["paths"]["/v1/render-requests"]["post"];
    let key = request["parameters"].as_array().unwrap().iter().find(|p| p["name"] == "Idempotency-Key").unwrap();
    assert_eq!((key["required"].as_bool(), key["schema"]["maxLength"].as_u64()), (Some(true), Some(255)));
}

/// What every run's schemathesis.toml says: the checks (no 5xx; status codes, content types,
/// bodies and headers as documented; invalid data refused), except that
/// `POST /v1/workflows/validate` answers 200 with the problems of any graph, so a graph
/// breaking the schema's limits (no nodes, `max_attempts` 0) is reported there rather than
/// refused, and the negative-data check does not apply to it. No cache: every run starts
/// from the seed alone. (`positive_data_acceptance`
/// is left out: valid JSON can still be refused with 422, an unknown output type say.)
const CONFIG: &str = r#"[cache]
enabled = false

[checks]
enabled = false
not_a_server_error.enabled = true
status_code_conformance.enabled = true
content_type_conformance.enabled = true
response_schema_conformance.enabled = true
response_headers_conformance.enabled = true
negative_data_rejection.enabled = true

[[operations]]
include-path = '/v1/workflows/validate'
checks.negative_data_rejection.enabled = false

"#;

/// Runs schemathesis against `url` with `config` (a schemathesis.toml written to
/// `config_path`); fails the test, printing what schemathesis printed, unless it exits 0.
async fn fuzz(url: &str, config_path: &std::path::Path, config: &str, max_examples: u32) {
    let schemathesis = schemathesis();
    std::fs::create_dir_all(config_path.parent().unwrap()).unwrap();
    std::fs::write(config_path, config).unwrap();
    let args: Vec<String> = vec![
        "--config-file".into(),
        config_path.display().to_string(),
        "run".to_string(),
        format!("{url}/v1/openapi.json"),
        "--header".into(),
        format!("Authorization: Bearer {}", renderfleet_tests::token("admin")),
        // Valid and invalid data, in every phase but the stateful one (the document has no links).
        "--mode".into(),
        "all".into(),
        "--phases".into(),
        "examples,coverage,fuzzing".into(),
        "--max-examples".into(),
        max_examples.to_string(),
        "--seed".into(),
        "20261202".into(),
        // One worker: hypothesis describing its strategies from several threads at once trips
        // a CPython 3.11 `ast` bug ("AST constructor recursion depth mismatch").
        "--workers".into(),
        "1".into(),
        "--request-timeout".into(),
        "20".into(),
        "--generation-database".into(),
        "none".into(),
        "--no-color".into(),
    ];
    let started = std::time::Instant::now();
    let run = tokio::process::Command::new(&schemathesis).args(&args).kill_on_drop(true).output();
    let out =
        tokio::time::timeout(Duration::from_secs(600), run).await.expect("schemathesis ran for over 10 minutes").expect("run schemathesis");
    let text = format!("{}\n{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    let summary = text.rfind("= SUMMARY =").map(|i| &text[i..]).unwrap_or(&text);
    println!("{} {}\n{summary}\n(took {:.0?})", schemathesis.display(), args.join(" "), started.elapsed());
    assert!(out.status.success(), "schemathesis failed ({}):\n{text}", out.status);
}

/// Sends `request`; panics unless it succeeds.
async fn created(request: reqwest::RequestBuilder) -> Value {
    let resp = request.send().await.unwrap();
    let status = resp.status();
    let body: Value = resp.json().await.unwrap();
    assert!(status.is_success(), "{status}: {body:#}");
    body
}

/// schemathesis, from the document, against a coordinator of its own (its own database and
/// broker prefix, so what the fuzzer creates, edits, cancels or rolls back harms nothing):
/// positive and negative data, a bounded number of cases per operation and a fixed seed.
/// First with generated values everywhere (ids that exist nowhere: 400s and 404s), then with
/// the path parameters pinned to a workflow, output type, material, run and render request
/// created beforehand, so the success answers are checked against the document too. No
/// operation is excluded.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn schemathesis_finds_nothing_wrong_with_positive_and_negative_data() {
    let mut w = World::new("openapi_fuzz").await;
    let c = w.start_coordinator("coordinator", &[]).await;
    let config = w.data_dir.join("schemathesis.toml");
    fuzz(&c.url, &config, CONFIG, 100).await;
    assert!(w.alive("coordinator"), "the coordinator exited during the fuzzing");

    // What exists, for the second pass.
    let url = &c.url;
    let starter: Value = w.http.get(format!("{url}/v1/workflows/starters/order_line")).send().await.unwrap().json().await.unwrap();
    let body = serde_json::json!({"name": "still", "family": "order_line", "graph": starter});
    let workflow = created(w.http.post(format!("{url}/v1/workflows")).json(&body)).await["id"].as_str().unwrap().to_string();
    let body = serde_json::json!({"key": "fuzz-still", "family": "order_line", "artifact_kind": "image_png", "workflow_id": workflow});
    created(w.http.post(format!("{url}/v1/output-types")).json(&body)).await;
    created(w.http.put(format!("{url}/v1/materials/steel")).json(&serde_json::json!({"base_color": "#B0B4B8"}))).await;
    let body = serde_json::json!({"assignments": {"bolt": "steel"}});
    created(w.http.put(format!("{url}/v1/products/bracket/material-map")).json(&body)).await;
    let graph = serde_json::json!({"nodes": [{"id": "a", "type": "util.noop"}, {"id": "b", "type": "util.noop"}], "edges": [{"from": "a", "to": "b"}]});
    let run = w.submit(&c, graph).await;
    let body = serde_json::json!({"order_line_id": "ol-1", "subject": {"product": "bracket"}, "output_type": "fuzz-still"});
    let request = created(w.http.post(format!("{url}/v1/render-requests")).header("Idempotency-Key", "fuzz-1").json(&body)).await;
    let request = request["id"].as_str().unwrap().to_string();
    let pinned = [
        (r"^/v1/runs/\{id\}", format!("id = \"{run}\"")),
        (r"^/v1/workflows/\{id\}", format!("id = \"{workflow}\"")),
        (r"^/v1/render-requests/\{id\}", format!("id = \"{request}\"")),
        (r"^/v1/output-types/\{key\}", "key = \"fuzz-still\"".to_string()),
        (r"^/v1/materials/\{name\}", "name = \"steel\"".to_string()),
        (r"^/v1/products/\{product\}", "product = \"bracket\"".to_string()),
    ];
    let toml: String = pinned
        .iter()
        .map(|(path, value)| format!("[[operations]]\ninclude-path-regex = '{path}'\nparameters = {{ {value} }}\n\n"))
        .collect();
    fuzz(&c.url, &config, &format!("{CONFIG}{toml}"), 50).await;
    assert!(w.alive("coordinator"), "the coordinator exited during the fuzzing");
}

//! Run inspection: cancelling and retrying runs through the API (the console's buttons call
//! the same code), against the real broker, database and workers; the console's sign-in,
//! CSRF and same-origin checks over plain HTTP; and the console in a real browser.

use renderfleet_coordinator::api::auth::hash_secret;
use renderfleet_tests::browser::Browser;
use renderfleet_tests::{metric, node, token, wait_until, Coord, World};
use serde_json::{json, Value};
use std::collections::{BTreeSet, VecDeque};
use std::time::{Duration, Instant};

async fn post(w: &World, url: String) -> (u16, Value) {
    let resp = w.http.post(url).send().await.unwrap();
    let status = resp.status().as_u16();
    (status, resp.json().await.unwrap_or(Value::Null))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancelled_runs_running_task_is_stopped_on_its_worker() {
    let mut w = World::new("cancel").await;
    let c = w.start_coordinator("c1", &[]).await;
    let metrics = w.start_worker("w1", &[]);
    let id = w
        .submit(
            &c,
            json!({"nodes": [{"id": "long", "type": "util.sleep", "params": {"ms": 60000}}, {"id": "after", "type": "util.noop"}],
                          "edges": [{"from": "long", "to": "after"}]}),
        )
        .await;
    w.wait_node(&c, id, "long", "running", Duration::from_secs(30)).await;
    let t = Instant::now();
    let (status, body) = post(&w, format!("{}/v1/runs/{id}/cancel", c.url)).await;
    assert_eq!((status, body["workers_told"].as_bool()), (200, Some(true)), "{body}");
    // The sleeping attempt is stopped on the worker, not left to run its minute.
    let long = wait_until("the running task to be stopped", Duration::from_secs(20), || async {
        let run = w.get_run(&c, id).await;
        node(&run, "long").filter(|n| n["status"] == "failed").cloned()
    })
    .await;
    assert!(t.elapsed() < Duration::from_secs(15), "stopped after {:?}", t.elapsed());
    assert_eq!(long["error"]["kind"], "cancelled", "{long}");
    let run = w.get_run(&c, id).await;
    assert_eq!(run["status"], "cancelled");
    assert_eq!(node(&run, "after").unwrap()["status"], "skipped");
    assert_eq!(metric(&w.http, &metrics, "renderfleet_worker_tasks_total", &[("outcome", "cancelled")]).await, 1.0);
    // Cancelling twice is refused with the run's state, and an unknown run is 404.
    let (status, body) = post(&w, format!("{}/v1/runs/{id}/cancel", c.url)).await;
    assert_eq!(status, 409, "{body}");
    assert!(body["message"].as_str().unwrap().contains("cancelled"), "{body}");
    let (status, _) = post(&w, format!("{}/v1/runs/{}/cancel", c.url, uuid::Uuid::now_v7())).await;
    assert_eq!(status, 404);
}

/// A client of the console that is no browser: no bearer token, no cookie jar, no redirects
/// followed, so each answer is seen as it is.
fn console_client() -> reqwest::Client {
    reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).timeout(Duration::from_secs(20)).build().unwrap()
}

/// A console form post with the given `Origin` and `Sec-Fetch-Site` (when `Some`).
async fn form_post(url: String, cookie: &str, origin: Option<&str>, site: Option<&str>, body: String) -> reqwest::Response {
    let mut r = console_client().post(url).header("content-type", "application/x-www-form-urlencoded").header("cookie", cookie).body(body);
    if let Some(o) = origin {
        r = r.header("origin", o);
    }
    if let Some(s) = site {
        r = r.header("sec-fetch-site", s);
    }
    r.send().await.unwrap()
}

/// Signs in as the sign-in page does; returns the `Set-Cookie` header and the cookie to send.
async fn sign_in(c: &Coord, origin: &str, secret: &str) -> (String, String) {
    let r = form_post(format!("{}/console/login", c.url), "", Some(origin), Some("same-origin"), format!("token={secret}")).await;
    assert_eq!(r.status(), 303, "signing in with Origin {origin}");
    let set = r.headers()["set-cookie"].to_str().unwrap().to_string();
    let cookie = set.split(';').next().unwrap().to_string();
    (set, cookie)
}

async fn console_get(c: &Coord, path: &str, cookie: &str) -> reqwest::Response {
    console_client().get(format!("{}{path}", c.url)).header("cookie", cookie).send().await.unwrap()
}

/// The `csrf` hidden field of a console page.
fn csrf_in(page: &str) -> String {
    page.split("name=\"csrf\" value=\"").nth(1).and_then(|r| r.split('"').next()).expect("a CSRF field in the page").to_string()
}

fn header(r: &reqwest::Response, name: &str) -> String {
    r.headers().get(name).and_then(|v| v.to_str().ok()).unwrap_or("").to_string()
}

fn assert_security_headers(r: &reqwest::Response) {
    let csp = header(r, "content-security-policy");
    for directive in ["default-src 'self'", "script-src 'none'", "frame-ancestors 'none'", "form-action 'self'"] {
        assert!(csp.contains(directive), "{} CSP {csp:?} lacks {directive}", r.url());
    }
    assert_eq!(header(r, "x-content-type-options"), "nosniff", "{}", r.url());
    assert_eq!(header(r, "x-frame-options"), "DENY", "{}", r.url());
    assert_eq!(header(r, "referrer-policy"), "same-origin", "{}", r.url());
}

/// The probe's attack: a page on another port of the same host (the same site, so
/// SameSite=Strict does not stop it) posts the console's Cancel form. Refused without the
/// session's CSRF token, and from any origin but the console's own, the sign-in included
/// (login CSRF); the cookie holds a session id, never the API token, and signing out ends the
/// session for good.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn console_forms_need_the_sessions_csrf_token_and_the_consoles_own_origin() {
    let mut w = World::new("console_csrf").await;
    let c = w.start_coordinator("c1", &[]).await;
    w.start_worker("w1", &[]);
    let id = w.submit(&c, json!({"nodes": [{"id": "long", "type": "util.sleep", "params": {"ms": 60000}}]})).await;
    w.wait_node(&c, id, "long", "running", Duration::from_secs(30)).await;
    let other = format!("http://127.0.0.1:{}", renderfleet_tests::free_port());
    let login = format!("{}/console/login", c.url);

    let page = console_get(&c, "/console/login", "").await;
    assert_security_headers(&page);
    let html = page.text().await.unwrap();
    assert!(!html.contains("<script") && !html.contains(" style="), "nothing inline for the CSP to allow: {html}");
    assert_security_headers(&console_get(&c, "/console/runs", "").await);
    // Login CSRF: nobody but the console's own page signs a browser in.
    for (origin, site) in
        [(Some(other.as_str()), None), (Some(c.url.as_str()), Some("cross-site")), (Some(c.url.as_str()), Some("same-site")), (None, None)]
    {
        let r = form_post(login.clone(), "", origin, site, format!("token={}", token("admin"))).await;
        assert_eq!((r.status().as_u16(), r.headers().get("set-cookie")), (403, None), "origin {origin:?}, site {site:?}");
        assert_security_headers(&r);
    }
    assert_eq!(w.count("SELECT count(*) FROM console_sessions").await, 0);

    let (set, cookie) = sign_in(&c, &c.url, token("admin")).await;
    let session = cookie.strip_prefix("rf_console=").unwrap();
    assert!(!set.contains(token("admin")) && !set.contains(&hash_secret(token("admin"))), "the cookie carries no token: {set}");
    for attribute in ["HttpOnly", "SameSite=Strict", "Path=/console", "Max-Age=43200"] {
        assert!(set.contains(attribute), "{set}");
    }
    assert!(!set.contains("Secure"), "plain HTTP: {set}");
    // Only the session id's SHA-256 is stored, with the token's name and scopes, for 12 h.
    let row = w
        .db()
        .await
        .query_one(
            "SELECT encode(id_sha256, 'hex'), token_name, scopes, extract(epoch FROM expires_at - created_at)::float8 FROM console_sessions",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(row.get::<_, String>(0), hash_secret(session));
    assert_eq!((row.get::<_, String>(1), row.get::<_, Vec<String>>(2)), ("test-admin".into(), vec!["admin".into()]));
    assert!((row.get::<_, f64>(3) - 43200.0).abs() < 1.0);

    let page = console_get(&c, &format!("/console/runs/{id}"), &cookie).await;
    assert_eq!(page.status(), 200);
    assert_security_headers(&page);
    let csrf = csrf_in(&page.text().await.unwrap());
    let (_, cookie2) = sign_in(&c, &c.url, token("admin")).await;
    let csrf2 = csrf_in(&console_get(&c, "/console/runs", &cookie2).await.text().await.unwrap());
    assert_ne!(csrf, csrf2, "each session has its own token");
    let cancel = format!("{}/console/runs/{id}/cancel", c.url);
    let (own, zeros) = (c.url.as_str(), "0".repeat(64));
    let refused = [
        (None, Some(own), Some("same-origin"), "no token"),
        (Some(csrf2.as_str()), Some(own), Some("same-origin"), "another session's token"),
        (Some(zeros.as_str()), Some(own), Some("same-origin"), "a wrong token"),
        (Some(csrf.as_str()), Some(other.as_str()), None, "another port of the same host"),
        (Some(csrf.as_str()), Some(own), Some("same-site"), "a same-site page"),
        (Some(csrf.as_str()), Some(own), Some("cross-site"), "a cross-site page"),
        (Some(csrf.as_str()), None, None, "no Origin"),
    ];
    for (token, origin, site, what) in refused {
        let body = token.map(|t| format!("csrf={t}")).unwrap_or_default();
        let r = form_post(cancel.clone(), &cookie, origin, site, body).await;
        assert_eq!(r.status(), 403, "{what}");
        assert_security_headers(&r);
    }
    let r = form_post(cancel.clone(), &cookie, Some(&c.url), Some("same-origin"), format!("csrf={csrf}&csrf={csrf}")).await;
    assert_eq!(r.status(), 403, "two tokens");
    let run = w.get_run(&c, id).await;
    assert_eq!(
        (run["status"].as_str(), node(&run, "long").unwrap()["status"].as_str()),
        (Some("running"), Some("running")),
        "not cancelled"
    );
    let r = form_post(cancel, &cookie, Some(&c.url), Some("same-origin"), format!("csrf={csrf}")).await;
    assert_eq!((r.status().as_u16(), header(&r, "location")), (303, format!("/console/runs/{id}")));
    assert_eq!(w.wait_run(&c, id, Duration::from_secs(20)).await["status"], "cancelled");

    // Sign-out: GET only asks; POST needs the token, then the session is gone for good.
    let r = console_get(&c, "/console/logout", &cookie).await;
    assert_eq!(r.status(), 200);
    assert!(r.text().await.unwrap().contains("id=\"confirm-sign-out\""));
    let logout = format!("{}/console/logout", c.url);
    assert_eq!(form_post(logout.clone(), &cookie, Some(&c.url), None, String::new()).await.status(), 403);
    assert_eq!(w.count("SELECT count(*) FROM console_sessions").await, 2, "GET and a refused POST sign nobody out");
    let r = form_post(logout, &cookie, Some(&c.url), None, format!("csrf={csrf}")).await;
    assert_eq!((r.status().as_u16(), header(&r, "location")), (303, "/console/login".into()));
    assert!(header(&r, "set-cookie").contains("Max-Age=0"), "the cookie is cleared");
    let r = console_get(&c, "/console/runs", &cookie).await;
    assert_eq!((r.status().as_u16(), header(&r, "location")), (303, "/console/login".into()), "the old cookie is worth nothing");
    // Sessions expire.
    assert_eq!(console_get(&c, "/console/runs", &cookie2).await.status(), 200);
    w.db().await.execute("UPDATE console_sessions SET expires_at = now() - interval '1 second'", &[]).await.unwrap();
    assert_eq!(header(&console_get(&c, "/console/runs", &cookie2).await, "location"), "/console/login");
}

/// Artifacts: a PNG preview is shown inline (as image/png, never sniffed); anything else is a
/// download, even a file whose recorded type is text/html.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn console_artifacts_are_downloads_except_png_previews() {
    let mut w = World::new("console_downloads").await;
    let store = w.artifacts_dir();
    let c = w.start_coordinator("c1", &[("RENDERFLEET_ARTIFACTS_DIR", &store.display().to_string())]).await;
    let db = w.db().await;
    let mut shas = Vec::new();
    for (content, mime) in [("a PNG preview", "image/png"), ("<script>alert(1)</script>", "text/html"), ("glTF", "model/gltf-binary")] {
        let sha = hash_secret(content);
        std::fs::create_dir_all(store.join("sha256").join(&sha[..2])).unwrap();
        std::fs::write(store.join("sha256").join(&sha[..2]).join(&sha), content).unwrap();
        db.execute(
            "INSERT INTO artifacts (sha256, kind, bytes, mime) VALUES ($1, 'test', $2, $3)",
            &[&sha, &(content.len() as i64), &mime],
        )
        .await
        .unwrap();
        shas.push(sha);
    }
    let (_, cookie) = sign_in(&c, &c.url, token("read")).await;
    let path = |sha: &str| format!("/console/artifacts/{sha}");
    let png = console_get(&c, &path(&shas[0]), &cookie).await;
    assert_eq!(
        (png.status().as_u16(), header(&png, "content-type"), header(&png, "content-disposition")),
        (200, "image/png".into(), "inline".into())
    );
    assert_security_headers(&png);
    let html = console_get(&c, &path(&shas[1]), &cookie).await;
    assert_eq!(header(&html, "content-disposition"), format!("attachment; filename=\"{}\"", &shas[1][..16]));
    assert_eq!(header(&html, "x-content-type-options"), "nosniff");
    let glb = console_get(&c, &path(&shas[2]), &cookie).await;
    assert_eq!(header(&glb, "content-disposition"), format!("attachment; filename=\"{}.glb\"", &shas[2][..16]));
    assert_eq!(glb.bytes().await.unwrap().as_ref(), b"glTF");
    // A NUL in a filter or a path is refused naming it, before it reaches the database.
    for (path, names) in
        [("/console/runs?output_type=a%00b", "query parameter `output_type`"), ("/console/runs/a%00b", "path parameter `id`")]
    {
        let r = console_get(&c, path, &cookie).await;
        assert_eq!(r.status(), 400, "{path}");
        let body = r.text().await.unwrap();
        assert!(body.contains(names) && body.contains("NUL"), "{path}: {body}");
    }
}

/// Behind a TLS proxy (`[console] https = true`) the cookie is Secure and forms must come from
/// the https:// origin.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_console_cookie_is_secure_behind_a_tls_proxy() {
    let mut w = World::new("console_https").await;
    let c = w.start_coordinator("c1", &[("RENDERFLEET_CONSOLE__HTTPS", "true")]).await;
    let r = form_post(format!("{}/console/login", c.url), "", Some(&c.url), Some("same-origin"), format!("token={}", token("read"))).await;
    assert_eq!(r.status(), 403, "http:// is not the console's origin now");
    assert!(r.text().await.unwrap().contains("[console] https"), "the refusal says why");
    let https = c.url.replace("http://", "https://");
    let (set, _) = sign_in(&c, &https, token("read")).await;
    assert!(set.ends_with("; Secure"), "{set}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retried_failed_run_runs_its_failed_node_again_and_completes() {
    let mut w = World::new("retry").await;
    let c = w.start_coordinator("c1", &[]).await;
    w.start_worker("w1", &[]);
    // Fails its first two attempts; two are allowed, so the run fails.
    let id = w
        .submit(
            &c,
            json!({"nodes": [{"id": "flaky", "type": "util.fail", "params": {"times": 2}, "max_attempts": 2},
                                     {"id": "after", "type": "util.noop"}],
                          "edges": [{"from": "flaky", "to": "after"}]}),
        )
        .await;
    let run = w.wait_run(&c, id, Duration::from_secs(30)).await;
    assert_eq!(run["status"], "failed");
    assert_eq!(node(&run, "after").unwrap()["status"], "skipped");
    let (status, body) = post(&w, format!("{}/v1/runs/{id}/retry", c.url)).await;
    assert_eq!((status, body["nodes"].as_i64()), (200, Some(2)), "{body}");
    let run = w.wait_run(&c, id, Duration::from_secs(30)).await;
    assert_eq!(run["status"], "succeeded", "{run:#}");
    let flaky = node(&run, "flaky").unwrap();
    assert_eq!(flaky["attempt"], 3, "a new attempt: {flaky}");
    assert_eq!(flaky["attempts"].as_array().unwrap().len(), 3, "every attempt is kept: {flaky}");
    assert_eq!(run["nodes_done"], 2);
    // A succeeded run cannot be retried.
    let (status, _) = post(&w, format!("{}/v1/runs/{id}/retry", c.url)).await;
    assert_eq!(status, 409);
}

/// The console in headless Chromium (Debian's `chromium` and `chromedriver`), driven over
/// WebDriver: sign in, find a failed run and its error, retry it and watch it complete, look
/// at a shadow comparison's three images, roll an output type back; then every link and every
/// button of every page ([`crawl`]) and signing out. A screenshot of every page is saved under
/// `target/test-artifacts/console/`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_console_in_a_real_browser() {
    use fantoccini::Locator;

    let mut w = World::new("console_browser").await;
    let artifacts = w.artifacts_dir().display().to_string();
    let c = w.start_coordinator("c1", &[("RENDERFLEET_ROLLOUT__INTERVAL", "200ms"), ("RENDERFLEET_ARTIFACTS_DIR", &artifacts)]).await;
    w.start_render_worker(
        "w1",
        "noop,sleep,fail,cad_resolve,glb_export,materials,blender_still,publish,legacy_render,compare",
        &[("RENDERFLEET_CONCURRENCY", "2")],
    );
    // A run that fails (one attempt allowed) and would succeed on its second.
    let failing = w
        .submit(&c, json!({"nodes": [{"id": "flaky", "type": "util.fail", "params": {"times": 1}, "max_attempts": 1}, {"id": "after", "type": "util.noop"}],
                          "edges": [{"from": "flaky", "to": "after"}]}))
        .await;
    assert_eq!(w.wait_run(&c, failing, Duration::from_secs(30)).await["status"], "failed");
    // A shadow comparison with a difference: the graph turns the camera.
    let (_, mut starter) = {
        let r = w.http.get(format!("{}/v1/workflows/starters/order_line", c.url)).send().await.unwrap();
        (r.status(), r.json::<Value>().await.unwrap())
    };
    for n in starter["nodes"].as_array_mut().unwrap() {
        if n["id"] == "still" {
            n["params"]["camera"]["azimuth_deg"] = json!(70);
        }
    }
    let wf: Value = w
        .http
        .post(format!("{}/v1/workflows", c.url))
        .json(&json!({"name": "turned", "family": "order_line", "graph": starter}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let ot = json!({"key": "still-console", "family": "order_line", "artifact_kind": "image_png", "workflow_id": wf["id"],
                    "invocation_overrides": {"still": {"width": 160, "height": 160, "samples": 4}}, "legacy_preset": {"resolution": 160, "samples": 4},
                    "rollout_mode": "shadow", "shadow_sample_pct": 100, "gate_config": {"min_samples": 1, "window": 10}});
    assert_eq!(w.http.post(format!("{}/v1/output-types", c.url)).json(&ot).send().await.unwrap().status(), 201);
    let body =
        json!({"order_line_id": "ol-1", "subject": {"cad_file": "as1-oc-214.stp", "product": "as1"}, "output_type": "still-console"});
    w.http.post(format!("{}/v1/render-requests", c.url)).header("Idempotency-Key", "ol-1").json(&body).send().await.unwrap();
    let comparison = wait_until("the comparison", Duration::from_secs(120), || async {
        let v: Value = w.http.get(format!("{}/v1/comparisons", c.url)).send().await.ok()?.json().await.ok()?;
        v["items"].as_array()?.iter().find(|k| k["status"] == "done").map(|k| k["id"].as_str().unwrap().to_string())
    })
    .await;

    // The browser.
    let browser = Browser::start(&w.data_dir.join("chromium-profile"), "console").await;
    let b = browser.client.clone();
    let shots = browser.shots_dir().to_path_buf();
    let shot = |name: &'static str| {
        let (b, shots) = (b.clone(), shots.clone());
        async move { std::fs::write(shots.join(name), b.screenshot().await.unwrap()).unwrap() }
    };
    // Clicks that submit a form return before the next page has loaded: wait for it.
    let wait_for_page = |what: &'static str, check: fn(&str) -> bool| {
        let b = b.clone();
        async move {
            wait_until(what, Duration::from_secs(20), || {
                let b = b.clone();
                async move { b.current_url().await.ok().filter(|u| check(u.as_str())).map(|_| ()) }
            })
            .await
        }
    };
    let text_of = |css: &'static str| {
        let b = b.clone();
        async move { b.find(Locator::Css(css)).await.unwrap().text().await.unwrap() }
    };

    b.goto(&format!("{}/console/runs", c.url)).await.unwrap();
    assert!(b.current_url().await.unwrap().path().ends_with("/console/login"), "unsigned visitors are sent to sign in");
    b.find(Locator::Id("token")).await.unwrap().send_keys(renderfleet_tests::token("admin")).await.unwrap();
    b.find(Locator::Id("sign-in")).await.unwrap().click().await.unwrap();
    wait_for_page("the signed-in runs page", |u| u.ends_with("/console/runs")).await;
    b.goto(&format!("{}/console/runs", c.url)).await.unwrap();
    // Filter through the form itself (its empty boxes are no filter).
    b.find(Locator::Css("#filter-status option[value='']")).await.unwrap();
    b.execute("document.getElementById('filter-status').value = 'failed'", vec![]).await.unwrap();
    b.find(Locator::Css("form.filters button")).await.unwrap().click().await.unwrap();
    wait_for_page("the filtered list", |u| u.contains("status=failed")).await;
    shot("runs.png").await;
    b.find(Locator::Css(&format!("a[href='/console/runs/{failing}']"))).await.expect("the failed run is listed").click().await.unwrap();
    let error = text_of(".node-error").await;
    assert!(error.contains("fails on purpose"), "the failing node's error is shown: {error}");
    shot("run-failed.png").await;
    b.find(Locator::Id("retry")).await.unwrap().click().await.unwrap();
    // The page reloads itself while the run runs.
    wait_until("the retried run to succeed in the page", Duration::from_secs(30), || {
        let b = b.clone();
        async move {
            let badge = b.find(Locator::Css(".card .badge")).await.ok()?.text().await.ok()?;
            (badge == "succeeded").then_some(())
        }
    })
    .await;
    assert_eq!(b.find_all(Locator::Css(".dag-node[data-status='succeeded']")).await.unwrap().len(), 2, "the DAG shows both nodes done");
    shot("run-detail.png").await;

    b.goto(&format!("{}/console/comparisons/{comparison}", c.url)).await.unwrap();
    assert_eq!(text_of("#verdict").await, "mismatch");
    for id in ["control-image", "candidate-image", "diff-image"] {
        let loaded = b.execute(&format!("return document.getElementById('{id}').naturalWidth"), vec![]).await.unwrap();
        assert_eq!(loaded.as_u64(), Some(160), "{id} is shown");
    }
    comparison_view(&b, &c, &w, &comparison).await;
    shot("comparison.png").await;

    b.goto(&format!("{}/console/rollout", c.url)).await.unwrap();
    assert_eq!(text_of("#rollout-still-console .mode").await, "shadow");
    let promote = b.find(Locator::Css("#rollout-still-console button[disabled]")).await.expect("promote is disabled while the gate fails");
    assert!(promote.attr("title").await.unwrap().unwrap_or_default().contains("gate"), "with the reason");
    b.find(Locator::Id("rollback-still-console")).await.unwrap().click().await.unwrap();
    wait_until("the rollback to show", Duration::from_secs(20), || {
        let b = b.clone();
        async move {
            let mode = b.find(Locator::Css("#rollout-still-console .mode")).await.ok()?.text().await.ok()?;
            (mode == "legacy").then_some(())
        }
    })
    .await;
    shot("rollout.png").await;
    // Preflight and a manual dispatch from the workflow page.
    b.goto(&format!("{}/console/workflows/{}", c.url, wf["id"].as_str().unwrap())).await.unwrap();
    b.find(Locator::Id("preflight")).await.unwrap().click().await.unwrap();
    let preflight = wait_until("the preflight result", Duration::from_secs(20), || {
        let b = b.clone();
        async move { b.find(Locator::Id("preflight-result")).await.ok()?.text().await.ok() }
    })
    .await;
    assert!(preflight.contains("READY") && !preflight.contains("NOT READY"), "{preflight}");
    assert!(preflight.contains("blender_still") && preflight.contains("w1"), "each module with its live worker: {preflight}");
    shot("workflow.png").await;
    b.find(Locator::Id("dispatch")).await.unwrap().click().await.unwrap();
    wait_for_page("the dispatched run's page", |u| u.contains("/console/runs/")).await;
    assert!(text_of(".card").await.contains("legacy"), "rolled back: the request renders legacy");

    b.goto(&format!("{}/console/workers", c.url)).await.unwrap();
    assert!(text_of("#workers").await.contains("w1"));
    shot("workers.png").await;
    // A subscription whose receiver is not there: its deliveries wait, each with its error.
    let hook = json!({"url": "http://127.0.0.1:9/hook", "secret": "whsec-console-0123456789", "events": ["request.succeeded", "request.cancelled"], "description": "orders"});
    assert_eq!(w.http.post(format!("{}/v1/webhooks", c.url)).json(&hook).send().await.unwrap().status(), 201);
    let body =
        json!({"order_line_id": "ol-2", "subject": {"cad_file": "as1-oc-214.stp", "product": "as1"}, "output_type": "still-console"});
    let r: Value = w
        .http
        .post(format!("{}/v1/render-requests", c.url))
        .header("Idempotency-Key", "ol-2")
        .json(&body)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let cancel = format!("{}/v1/render-requests/{}/cancel", c.url, r["id"].as_str().unwrap());
    assert_eq!(w.http.post(cancel).send().await.unwrap().status(), 200);
    b.goto(&format!("{}/console/webhooks", c.url)).await.unwrap();
    b.find(Locator::Css("#webhooks a")).await.unwrap().click().await.unwrap();
    let deliveries = wait_until("the delivery and its error", Duration::from_secs(30), || {
        let b = b.clone();
        async move {
            b.refresh().await.ok()?;
            let text = b.find(Locator::Css("#deliveries")).await.ok()?.text().await.ok()?;
            (text.contains("request.cancelled") && text.contains("no answer from")).then_some(text)
        }
    })
    .await;
    assert!(deliveries.contains("pending"), "{deliveries}");
    shot("webhook.png").await;
    // Before the crawl presses Promote.
    let ot: Value = w.http.get(format!("{}/v1/output-types/still-console", c.url)).send().await.unwrap().json().await.unwrap();
    assert_eq!(ot["rollout_mode"], "legacy", "the console's rollback is the real one");

    let session = b.get_named_cookie("rf_console").await.unwrap().value().to_string();
    assert!(!session.contains(renderfleet_tests::token("admin")), "the cookie holds a session id, not the token");
    let cookie = format!("rf_console={session}");
    // A run that is still running when the crawl comes by: Cancel, then Retry, to press.
    let sleeper = w.submit(&c, json!({"nodes": [{"id": "nap", "type": "util.sleep", "params": {"ms": 600000}}]})).await;
    w.wait_node(&c, sleeper, "nap", "running", Duration::from_secs(30)).await;
    crawl(&b, &c, &cookie, &shots, sleeper).await;

    // Sign out from the menu: the session is over, its cookie worth nothing.
    b.goto(&format!("{}/console/runs", c.url)).await.unwrap();
    b.find(Locator::Id("sign-out")).await.unwrap().click().await.unwrap();
    wait_for_page("the sign-in page", |u| u.ends_with("/console/login")).await;
    assert_eq!(header(&console_get(&c, "/console/runs", &cookie).await, "location"), "/console/login");
    // And from the confirmation GET /console/logout shows.
    b.find(Locator::Id("token")).await.unwrap().send_keys(renderfleet_tests::token("admin")).await.unwrap();
    b.find(Locator::Id("sign-in")).await.unwrap().click().await.unwrap();
    wait_for_page("the signed-in runs page", |u| u.ends_with("/console/runs")).await;
    b.goto(&format!("{}/console/logout", c.url)).await.unwrap();
    shot("logout.png").await;
    b.find(Locator::Id("confirm-sign-out")).await.unwrap().click().await.unwrap();
    wait_for_page("the sign-in page", |u| u.ends_with("/console/login")).await;
    shot("login.png").await;
    assert_eq!(w.count("SELECT count(*) FROM console_sessions").await, 0, "both sessions ended");
    browser.close().await;
}

/// The comparison view over a still whose camera moved: the metrics beside the gate's
/// thresholds; one zoom and pan for both canvases; swipe shows legacy left of the line and
/// the graph right of it, pixel for pixel; flip; a heat map that counts the failing pixels
/// as the compare module did.
async fn comparison_view(b: &fantoccini::Client, c: &Coord, w: &World, id: &str) {
    use fantoccini::actions::{InputSource, MouseActions, PointerAction, MOUSE_BUTTON_LEFT};
    use fantoccini::Locator;
    let k: Value = w.http.get(format!("{}/v1/comparisons/{id}", c.url)).send().await.unwrap().json().await.unwrap();
    let js = |script: &'static str| {
        let b = b.clone();
        async move { b.execute(script, vec![]).await.unwrap() }
    };
    let ready = || async {
        wait_until("the comparison view", Duration::from_secs(20), || async {
            (js("return document.getElementById('compare-view').dataset.state").await == "ready").then_some(())
        })
        .await
    };
    ready().await;
    // The metrics table: failing pixels over the gate's share fail, with the bound shown.
    let row = b.find(Locator::Css("#metric-fail-share")).await.unwrap().text().await.unwrap();
    let share = k["metrics"]["fail_share"].as_f64().unwrap();
    assert!(row.contains(&format!("{:.3} %", share * 100.0)) && row.contains("≤ 1 %") && row.ends_with("fail"), "{row}");
    assert!(b.find(Locator::Css("#metric-psnr")).await.unwrap().text().await.unwrap().contains("dB"));

    // Side by side: a double click zooms the legacy canvas about the pointer, a drag on the
    // graph's canvas pans; the two stay in step.
    let transforms = || async {
        let v = js("return ['canvas-control', 'canvas-candidate'].map(id => document.getElementById(id).dataset.transform)").await;
        (v[0].as_str().unwrap().to_string(), v[1].as_str().unwrap().to_string())
    };
    let before = transforms().await;
    let control = b.find(Locator::Id("canvas-control")).await.unwrap();
    let candidate = b.find(Locator::Id("canvas-candidate")).await.unwrap();
    let click =
        |m: MouseActions| m.then(PointerAction::Down { button: MOUSE_BUTTON_LEFT }).then(PointerAction::Up { button: MOUSE_BUTTON_LEFT });
    let dbl = click(click(MouseActions::new("mouse".into()).then(PointerAction::MoveToElement {
        element: control,
        duration: None,
        x: 0.0,
        y: 0.0,
    })));
    b.perform_actions(dbl).await.unwrap();
    let zoomed = transforms().await;
    assert_ne!(zoomed.0, before.0, "the double click zoomed");
    assert_eq!(zoomed.0, zoomed.1, "both canvases zoomed alike");
    assert!(zoomed.0.starts_with("2.0000 "), "{zoomed:?}");
    let pan = MouseActions::new("mouse".into())
        .then(PointerAction::MoveToElement { element: candidate, duration: None, x: 0.0, y: 0.0 })
        .then(PointerAction::Down { button: MOUSE_BUTTON_LEFT })
        .then(PointerAction::MoveBy { duration: Some(Duration::from_millis(100)), x: 40.0, y: 25.0 })
        .then(PointerAction::Up { button: MOUSE_BUTTON_LEFT });
    b.perform_actions(pan).await.unwrap();
    let panned = transforms().await;
    assert_ne!(panned.1, zoomed.1, "the drag panned");
    assert_eq!(panned.0, panned.1, "both canvases panned alike");

    // Swipe at the middle: every pixel left of the line is legacy's, right of it the graph's.
    b.find(Locator::Id("mode-swipe")).await.unwrap().click().await.unwrap();
    b.find(Locator::Id("zoom-fit")).await.unwrap().click().await.unwrap();
    const SAMPLE: &str = "
        const c = document.getElementById('canvas-single'), [s, tx, ty] = c.dataset.transform.split(' ').map(Number);
        const read = (img) => { const o = document.createElement('canvas'); o.width = img.naturalWidth; o.height = img.naturalHeight;
                                const g = o.getContext('2d'); g.drawImage(img, 0, 0); return g.getImageData(0, 0, o.width, o.height); };
        const a = read(document.getElementById('control-image')), b = read(document.getElementById('candidate-image'));
        const shown = c.getContext('2d'), w = a.width, h = a.height;
        const px = (d, x, y) => [...d.data.slice((y * w + x) * 4, (y * w + x) * 4 + 3)].join(',');
        const on = (x, y) => [...shown.getImageData(Math.floor(tx + (x + 0.5) * s), Math.floor(ty + (y + 0.5) * s), 1, 1).data.slice(0, 3)].join(',');
        let out = {left: 0, right: 0, differing: 0, wrong: []};
        for (let y = 2; y < h; y += 5) for (let x = 2; x < w; x += 5) {
          if (Math.abs(x + 0.5 - w / 2) < 3) continue;
          const left = x + 0.5 < w / 2, want = px(left ? a : b, x, y);
          if (px(a, x, y) !== px(b, x, y)) out.differing++;
          if (on(x, y) === want) out[left ? 'left' : 'right']++; else out.wrong.push([x, y, on(x, y), want]);
        }
        return out;";
    let swipe = b.execute(SAMPLE, vec![]).await.unwrap();
    let shots = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/test-artifacts/console");
    std::fs::write(shots.join("comparison-swipe.png"), b.screenshot().await.unwrap()).unwrap();
    assert_eq!(swipe["wrong"], json!([]), "{swipe}");
    assert!(swipe["differing"].as_u64().unwrap() > 20, "the sample can tell the two apart: {swipe}");
    assert!(swipe["left"].as_u64().unwrap() > 100 && swipe["right"].as_u64().unwrap() > 100, "{swipe}");

    // Flip: F shows the other image.
    b.find(Locator::Id("mode-flip")).await.unwrap().click().await.unwrap();
    assert_eq!(js("return document.getElementById('compare-view').dataset.showing").await, "control");
    b.find(Locator::Css("body")).await.unwrap().send_keys("f").await.unwrap();
    assert_eq!(js("return document.getElementById('compare-view').dataset.showing").await, "candidate");
    assert_eq!(b.find(Locator::Id("showing")).await.unwrap().text().await.unwrap(), "graph");

    // The heat map counts what the compare module counted (the same rule, in the page).
    b.find(Locator::Id("mode-heat")).await.unwrap().click().await.unwrap();
    let failing =
        js("const v = document.getElementById('compare-view').dataset; return [Number(v.heatFailing), Number(v.heatPixels)]").await;
    let (failing, pixels) = (failing[0].as_f64().unwrap(), failing[1].as_f64().unwrap());
    std::fs::write(shots.join("comparison-heat.png"), b.screenshot().await.unwrap()).unwrap();
    assert_eq!(pixels, 160.0 * 160.0);
    assert!((failing / pixels - share).abs() < 1e-9, "the heat map's failing share {} vs the compare module's {share}", failing / pixels);
    assert!(b.find(Locator::Id("heat-failing")).await.unwrap().text().await.unwrap().contains(&format!("{failing} of 25600 pixels")));
}

/// The heading the console page at `path` renders.
fn heading_of(path: &str) -> &'static str {
    let path = path.split('?').next().unwrap_or_default();
    let parts: Vec<&str> = path.trim_start_matches("/console").split('/').filter(|s| !s.is_empty()).collect();
    match parts.as_slice() {
        [] | ["runs"] => "Runs",
        ["runs", _] => "Run",
        ["comparisons"] => "Comparisons",
        ["comparisons", _] => "Comparison",
        ["rollout"] => "Rollout",
        ["workers"] => "Workers",
        ["webhooks"] => "Webhooks",
        ["webhooks", _] => "Webhook",
        ["products", _] => "Product",
        ["workflows"] => "Workflows",
        // A preflight's result, or a dispatch that was refused, shows the workflow again.
        // The editor's shell (its own test, tests/editor.rs, drives the canvas).
        ["workflows", "new"] => "New workflow",
        ["workflows", _, "edit"] => "Edit workflow",
        ["workflows", _] | ["workflows", _, "preflight" | "dispatch"] => "Workflow",
        ["logout"] => "Sign out",
        ["login"] => "Sign in",
        _ => panic!("a console page the crawl does not know: {path}"),
    }
}

type Buttons = Vec<(String, fantoccini::elements::Element)>;

/// What a page shows: its heading, the targets of its links and images, the buttons of its
/// forms, each keyed by method, target and label, and the titles of its disabled buttons.
async fn scan(b: &fantoccini::Client) -> Result<(String, Vec<String>, Buttons, Vec<String>), fantoccini::error::CmdError> {
    use fantoccini::Locator;
    let heading = b.find(Locator::Css("main h2")).await?.text().await?;
    let here = b.current_url().await?.path().to_string();
    let mut links = Vec::new();
    for (css, attr) in [("a[href]", "href"), ("img[src]", "src")] {
        for e in b.find_all(Locator::Css(css)).await? {
            links.extend(e.attr(attr).await?);
        }
    }
    let mut buttons = Vec::new();
    for form in b.find_all(Locator::Css("form")).await? {
        let method = form.attr("method").await?.unwrap_or_else(|| "get".into()).to_uppercase();
        let action = form.attr("action").await?.unwrap_or_else(|| here.clone());
        for button in form.find_all(Locator::Css("button")).await? {
            let target = button.attr("formaction").await?.unwrap_or_else(|| action.clone());
            buttons.push((format!("{method} {target} {}", button.text().await?), button));
        }
    }
    let mut disabled = Vec::new();
    for button in b.find_all(Locator::Css("button[disabled]")).await? {
        disabled.push(button.attr("title").await?.unwrap_or_default());
    }
    Ok((heading, links, buttons, disabled))
}

/// Every link under `/console` of every page, followed, and every button of every form
/// pressed once (a press may bring new buttons, Cancel brings Retry: the page is looked at
/// again until none is left; signing out is left to the caller). Each page must answer 200
/// (asked over HTTP with the browser's session: WebDriver does not tell) and render its
/// heading, never an error page; every artifact it links answers 200 with nosniff, PNGs
/// inline, the rest as downloads. The first page of each kind is saved as `crawl-KIND.png`.
async fn crawl(b: &fantoccini::Client, c: &Coord, cookie: &str, shots: &std::path::Path, sleeper: uuid::Uuid) {
    use fantoccini::Locator;
    let mut queue: VecDeque<String> = ["/console", "/console/logout", "/console/login"].map(String::from).into();
    let (mut seen, mut pressed, mut artifacts, mut kinds) = (BTreeSet::new(), BTreeSet::new(), BTreeSet::new(), BTreeSet::new());
    let mut disabled = 0;
    while let Some(path) = queue.pop_front() {
        if !seen.insert(path.clone()) {
            continue;
        }
        assert!(seen.len() < 200, "the crawl does not end: {seen:?}");
        let status = console_get(c, &path, cookie).await.status().as_u16();
        assert!(status == 200 || (path == "/console" && status == 303), "GET {path} answered {status}");
        // A running run's page reloads itself: an element gone stale means look again.
        for _attempt in 0..50 {
            b.goto(&format!("{}{path}", c.url)).await.unwrap();
            let Ok((heading, links, buttons, off)) = scan(b).await else { continue };
            // Promote while the gate does not pass: it says why.
            assert!(off.iter().all(|t| !t.is_empty()), "a disabled button on {path} without its reason");
            disabled += off.len();
            assert_eq!(heading, heading_of(&path), "GET {path}");
            if kinds.insert(heading.clone()) {
                let name = format!("crawl-{}.png", heading.to_lowercase().replace(' ', "-"));
                std::fs::write(shots.join(name), b.screenshot().await.unwrap()).unwrap();
            }
            for link in links.into_iter().filter(|l| l.starts_with("/console")) {
                if link.starts_with("/console/artifacts/") {
                    artifacts.insert(link);
                } else {
                    queue.push_back(link);
                }
            }
            let Some((key, button)) = buttons.into_iter().find(|(k, _)| !k.contains(" /console/logout ") && !pressed.contains(k)) else {
                break;
            };
            let Ok(old) = b.find(Locator::Css("html")).await else { continue };
            if button.click().await.is_err() {
                continue;
            }
            wait_until(&format!("the page after {key}"), Duration::from_secs(30), || {
                let old = old.clone();
                async move { old.tag_name().await.err().map(|_| ()) }
            })
            .await;
            let heading = wait_until(&format!("the heading after {key}"), Duration::from_secs(30), || async move {
                b.find(Locator::Css("main h2")).await.ok()?.text().await.ok()
            })
            .await;
            let landed = b.current_url().await.unwrap();
            let landed = format!("{}{}", landed.path(), landed.query().map(|q| format!("?{q}")).unwrap_or_default());
            let text = match b.find(Locator::Css("main")).await {
                Ok(main) => main.text().await.unwrap_or_default(),
                Err(_) => String::new(),
            };
            // The one race: the run ended between showing Cancel and the press.
            let raced = key.ends_with("/cancel Cancel run") && text.contains("only a running run can be cancelled");
            assert!(raced || heading == heading_of(&landed), "{key} landed on {landed}: {heading}: {text}");
            pressed.insert(key);
            // A refused press shows its error at the form's URL, which is POST only.
            if !raced && !landed.ends_with("/preflight") && !landed.ends_with("/dispatch") {
                queue.push_back(landed);
            }
        }
    }
    for a in &artifacts {
        let r = console_get(c, a, cookie).await;
        assert_eq!((r.status().as_u16(), header(&r, "x-content-type-options")), (200, "nosniff".into()), "{a}");
        let disposition = header(&r, "content-disposition");
        match header(&r, "content-type").as_str() {
            "image/png" => assert_eq!(disposition, "inline", "{a}"),
            other => assert!(disposition.starts_with("attachment; filename="), "{a} ({other}): {disposition}"),
        }
    }
    let pages: Vec<&str> = seen.iter().map(|p| heading_of(p)).collect::<BTreeSet<_>>().into_iter().collect();
    assert_eq!(pages.len(), 15, "every kind of page was visited: {pages:?}");
    let cancel = format!("/console/runs/{sleeper}/cancel Cancel run");
    let retry = format!("/console/runs/{sleeper}/retry Retry failed nodes");
    for key in [
        cancel.as_str(),
        &retry,
        "/promote Promote",
        "/rollback Roll back to legacy",
        "/preflight Preflight",
        "/dispatch Dispatch a render request",
        "/console/runs Filter",
        "/console/login Sign in",
    ] {
        assert!(pressed.iter().any(|p| p.contains(key)), "{key} was pressed: {pressed:?}");
    }
    assert!(disabled >= 1 && artifacts.len() >= 3, "{disabled} disabled buttons, artifacts {artifacts:?}");
    eprintln!("crawl: {} pages, {} buttons pressed, {} artifacts: {pressed:#?}", seen.len(), pressed.len(), artifacts.len());
}

//! The workflow editor in headless Chromium, driven by real pointer and key actions over
//! WebDriver (chromedriver's actions drive React Flow's drag-to-connect and drop-on-canvas).
//! Screenshots go to `target/test-artifacts/editor/`.

use fantoccini::actions::{InputSource, KeyAction, KeyActions, MouseActions, PointerAction, MOUSE_BUTTON_LEFT, MOUSE_BUTTON_RIGHT};
use fantoccini::elements::Element;
use fantoccini::{Client, Locator};
use renderfleet_tests::browser::Browser;
use renderfleet_tests::{token, wait_until, Coord, World};
use serde_json::{json, Value};
use std::collections::BTreeSet;
use std::time::Duration;

const CTRL: char = '\u{E009}';
const SHIFT: char = '\u{E008}';
const ENTER: char = '\u{E007}';
const DELETE: char = '\u{E017}';

/// What a person does, counted: one per click or drag, one per key pressed.
#[derive(Default)]
struct Count {
    pointer: u32,
    keys: u32,
}

struct Ed {
    b: Client,
    count: Count,
}

impl Ed {
    /// The element, waited for; when it does not come, the page is saved as `failed.png`.
    async fn find(&self, css: &str) -> Element {
        match self.b.wait().at_most(Duration::from_secs(10)).for_element(Locator::Css(css)).await {
            Ok(e) => e,
            Err(e) => {
                let shots = concat!(env!("CARGO_MANIFEST_DIR"), "/../target/test-artifacts/editor/failed.png");
                if let Ok(png) = self.b.screenshot().await {
                    let _ = std::fs::write(shots, png);
                }
                panic!("{css}: {e} (the page: {shots})")
            }
        }
    }

    async fn text(&self, css: &str) -> String {
        self.find(css).await.text().await.unwrap()
    }

    async fn js(&self, script: &str) -> Value {
        self.b.execute(script, vec![]).await.unwrap()
    }

    /// Waits until the server's validation has answered the latest edit and the canvas
    /// draws every node and edge the editor holds.
    async fn settle(&self) {
        tokio::time::sleep(Duration::from_millis(250)).await;
        wait_until("the editor's validation and drawing", Duration::from_secs(15), || async {
            let v = self
                .js("const d = document.getElementById('editor').dataset;
                     return [d.state, Number(d.nodeCount) === document.querySelectorAll('.react-flow__node').length,
                             Number(d.edgeCount) === document.querySelectorAll('.react-flow__edge').length]")
                .await;
            (v == json!(["ready", true, true])).then_some(())
        })
        .await;
    }

    async fn errors(&self) -> u64 {
        self.js("return Number(document.getElementById('editor').dataset.errors)").await.as_u64().unwrap()
    }

    async fn click(&mut self, css: &str) {
        self.find(css).await.click().await.unwrap();
        self.count.pointer += 1;
    }

    /// Clicks edge `id` where it can be seen (a point of its path no node covers).
    async fn click_edge(&mut self, id: &str) {
        let at = self
            .b
            .execute(
                "const g = document.querySelector(`.react-flow__edge[data-id='${arguments[0]}']`); const p = g.querySelector('path.react-flow__edge-path');
                 const n = p.getTotalLength(), m = p.getScreenCTM();
                 for (let k = 1; k < 20; k++) {
                   const q = p.getPointAtLength(n * k / 20), x = m.a * q.x + m.c * q.y + m.e, y = m.b * q.x + m.d * q.y + m.f;
                   const e = document.elementFromPoint(x, y);
                   if (e && g.contains(e)) return [x, y];
                 }
                 return null;",
                vec![json!(id)],
            )
            .await
            .unwrap();
        let (x, y) = (at[0].as_f64().unwrap_or_else(|| panic!("edge {id} is hidden under nodes")), at[1].as_f64().unwrap());
        let m = MouseActions::new("mouse".into())
            .then(PointerAction::MoveTo { duration: None, x, y })
            .then(PointerAction::Down { button: MOUSE_BUTTON_LEFT })
            .then(PointerAction::Up { button: MOUSE_BUTTON_LEFT });
        self.b.perform_actions(m).await.unwrap();
        self.count.pointer += 1;
    }

    async fn right_click_at(&mut self, x: f64, y: f64) {
        let m = MouseActions::new("mouse".into())
            .then(PointerAction::MoveTo { duration: None, x, y })
            .then(PointerAction::Down { button: MOUSE_BUTTON_RIGHT })
            .then(PointerAction::Up { button: MOUSE_BUTTON_RIGHT });
        self.b.perform_actions(m).await.unwrap();
        self.count.pointer += 1;
    }

    async fn right_click(&mut self, css: &str) {
        let el = self.find(css).await;
        let m = MouseActions::new("mouse".into())
            .then(PointerAction::MoveToElement { element: el, duration: None, x: 0.0, y: 0.0 })
            .then(PointerAction::Down { button: MOUSE_BUTTON_RIGHT })
            .then(PointerAction::Up { button: MOUSE_BUTTON_RIGHT });
        self.b.perform_actions(m).await.unwrap();
        self.count.pointer += 1;
    }

    /// Waits until the canvas stands still (a fit or a pan may still be moving it), so that
    /// what was measured is where the pointer lands.
    async fn steady(&self) {
        let transform = || self.js("return document.querySelector('.react-flow__viewport')?.style.transform ?? ''");
        let mut last = transform().await;
        for _ in 0..50 {
            tokio::time::sleep(Duration::from_millis(150)).await;
            let now = transform().await;
            if now == last {
                return;
            }
            last = now;
        }
        panic!("the canvas keeps moving: {last}");
    }

    /// A drag with the left button from the centre of `from` to the viewport point `to`, in
    /// steps, as a hand moves.
    async fn drag_to(&mut self, from: &str, to: (f64, f64)) {
        self.steady().await;
        // The press must land on `from` itself (a handle not yet placed would leave it on
        // the node, which then moves instead of starting a link).
        wait_until(&format!("{from} under the pointer"), Duration::from_secs(10), || async {
            let on = self
                .b
                .execute(
                    "const e = document.querySelector(arguments[0]); if (!e) return false; const r = e.getBoundingClientRect();
                     return document.elementFromPoint(r.left + r.width / 2, r.top + r.height / 2) === e;",
                    vec![json!(from)],
                )
                .await
                .ok()?;
            (on == json!(true)).then_some(())
        })
        .await;
        let el = self.find(from).await;
        let mut m = MouseActions::new("mouse".into())
            .then(PointerAction::MoveToElement { element: el, duration: None, x: 0.0, y: 0.0 })
            .then(PointerAction::Down { button: MOUSE_BUTTON_LEFT })
            .then(PointerAction::MoveBy { duration: Some(Duration::from_millis(30)), x: 8.0, y: 4.0 });
        for i in 1..=6 {
            let f = i as f64 / 6.0;
            m = m.then(PointerAction::MoveTo {
                duration: Some(Duration::from_millis(25)),
                x: to.0 - (1.0 - f) * 40.0,
                y: to.1 - (1.0 - f) * 20.0,
            });
        }
        let m = m.then(PointerAction::Pause { duration: Duration::from_millis(150) }).then(PointerAction::Up { button: MOUSE_BUTTON_LEFT });
        self.b.perform_actions(m).await.unwrap();
        self.count.pointer += 1;
    }

    /// A drag from `from` that lets go over the centre of `to`.
    async fn drag_onto(&mut self, from: &str, to: &str) {
        self.steady().await;
        let target = self.centre(to).await.unwrap_or_else(|| panic!("{to} is not on the page"));
        self.drag_to(from, target).await;
    }

    async fn centre(&self, css: &str) -> Option<(f64, f64)> {
        let v = self
            .b
            .execute(
                "const e = document.querySelector(arguments[0]); if (!e) return null; const r = e.getBoundingClientRect(); return [r.left + r.width / 2, r.top + r.height / 2];",
                vec![json!(css)],
            )
            .await
            .unwrap();
        Some((v.get(0)?.as_f64()?, v.get(1)?.as_f64()?))
    }

    /// An empty spot of the canvas with room for a node to its right and below (where a
    /// person would drop a link), away from the edges (where a dragged link pans the canvas).
    async fn free_spot(&self) -> (f64, f64) {
        self.steady().await;
        let v = self
            .js(
                "const pane = document.querySelector('.react-flow__pane').getBoundingClientRect();
                 const free = (x, y) => { const e = document.elementFromPoint(x, y); return e && e.classList.contains('react-flow__pane'); };
                 for (let y = pane.top + 110; y < pane.bottom - 140; y += 30)
                   for (let x = pane.left + 110; x < pane.right - 260; x += 30) {
                     let ok = true;
                     for (let dx = -30; dx <= 230 && ok; dx += 40) for (let dy = -20; dy <= 130 && ok; dy += 30) ok = free(x + dx, y + dy);
                     if (ok) return [x, y];
                   }
                 return null;",
            )
            .await;
        (v[0].as_f64().expect("a free spot on the canvas"), v[1].as_f64().unwrap())
    }

    async fn typed(&mut self, css: &str, text: &str) {
        self.find(css).await.send_keys(text).await.unwrap();
        self.count.keys += text.chars().count() as u32;
    }

    /// Clears a field and types `text` into it (select-all and delete count as two keys).
    async fn retype(&mut self, css: &str, text: &str) {
        // Ctrl+A, Backspace as a person does (WebDriver's clear() bypasses React's onChange).
        let el = self.find(css).await;
        el.send_keys(&format!("{CTRL}a\u{E000}\u{E003}{text}")).await.unwrap();
        self.count.keys += 2 + text.chars().count() as u32;
    }

    /// A key chord on whatever has focus: modifiers held, `key` pressed.
    async fn chord(&mut self, modifiers: &[char], key: char) {
        let mut k = KeyActions::new("keys".into());
        for &m in modifiers {
            k = k.then(KeyAction::Down { value: m });
        }
        k = k.then(KeyAction::Down { value: key }).then(KeyAction::Up { value: key });
        for &m in modifiers.iter().rev() {
            k = k.then(KeyAction::Up { value: m });
        }
        self.b.perform_actions(k).await.unwrap();
        self.count.keys += 1;
    }

    /// Focus back on the canvas (shortcuts are not taken from text fields).
    async fn focus_canvas(&self) {
        self.js("document.activeElement && document.activeElement.blur()").await;
    }

    async fn node_ids(&self) -> BTreeSet<String> {
        let v = self.js("return [...document.querySelectorAll('.react-flow__node')].map(n => n.dataset.id)").await;
        v.as_array().unwrap().iter().map(|s| s.as_str().unwrap().to_string()).collect()
    }

    async fn edge_ids(&self) -> BTreeSet<String> {
        let v = self.js("return [...document.querySelectorAll('.react-flow__edge')].map(n => n.dataset.id)").await;
        v.as_array().unwrap().iter().map(|s| s.as_str().unwrap().to_string()).collect()
    }

    /// Selects node `id` by clicking its title.
    async fn select(&mut self, id: &str) {
        self.click(&format!(".react-flow__node[data-id='{id}'] .rf-node-head")).await;
        self.find(&format!("#inspector[data-node='{id}']")).await;
    }
}

fn handle(node: &str, port: &str, side: &str) -> String {
    format!(".react-flow__handle.{side}[data-nodeid='{node}'][data-handleid='{port}']")
}

async fn api(w: &World, c: &Coord, method: reqwest::Method, path: &str, body: Option<Value>) -> (u16, Value) {
    let mut r = w.http.request(method, format!("{}{path}", c.url)).bearer_auth(token("admin"));
    if let Some(b) = body {
        r = r.json(&b);
    }
    let r = r.send().await.unwrap();
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(Value::Null))
}

async fn open(ed: &Ed, url: &str) {
    ed.b.goto(url).await.unwrap();
    if ed.b.wait().at_most(Duration::from_secs(15)).for_element(Locator::Css(".react-flow__node")).await.is_err() {
        let seen = ed
            .js("const e = document.getElementById('editor'); return [e && e.dataset.crash, document.body.innerText.slice(0, 2000)]")
            .await;
        panic!("the editor drew no node at {url}: error {}, page {}", seen[0], seen[1]);
    }
    ed.settle().await;
}

/// The palette is the registry's: every node type allowed in the family is offered, no other,
/// and a node type that exists only in this (debug, `RENDERFLEET_REGISTRY_TEST_TYPES=1`) build
/// shows up with its ports and a params form generated from its schema.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_palette_and_inspector_come_from_the_registry() {
    let mut w = World::new("editor_palette").await;
    let c = w.start_coordinator("c1", &[("RENDERFLEET_REGISTRY_TEST_TYPES", "1")]).await;
    let browser = Browser::start(&w.data_dir.join("chromium"), "editor").await;
    browser.sign_in(&c.url, token("admin")).await;
    let mut ed = Ed { b: browser.client.clone(), count: Count::default() };
    open(&ed, &format!("{}/console/workflows/new?family=order_line", c.url)).await;
    browser.shot("editor-new.png").await;

    let (_, palette) = api(&w, &c, reqwest::Method::GET, "/v1/nodes", None).await;
    let family: BTreeSet<String> =
        palette["by_family"]["order_line"].as_array().unwrap().iter().map(|v| v.as_str().unwrap().into()).collect();
    let shown: BTreeSet<String> = ed
        .js("return [...document.querySelectorAll('.palette-item')].map(e => e.dataset.type)")
        .await
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap().into())
        .collect();
    assert_eq!(shown, family, "the palette offers exactly the order_line node types of GET /v1/nodes");
    assert!(shown.contains("test.palette_probe"), "the test-only node type is offered: {shown:?}");
    let cad_only: Vec<&str> = palette["node_types"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|t| !t["families"].as_array().unwrap().iter().any(|f| f == "order_line"))
        .map(|t| t["type_key"].as_str().unwrap())
        .collect();
    assert!(!cad_only.is_empty() && cad_only.iter().all(|t| !shown.contains(*t)), "no node type of another family: {cad_only:?}");
    // Grouped by palette group, then execution role.
    ed.find("section[data-group='Test probes'] .role[data-role='transform'] .palette-item[data-type='test.palette_probe']").await;

    // Search.
    ed.typed("#palette-search", "turn").await;
    let hits = ed.js("return [...document.querySelectorAll('.palette-item')].map(e => e.dataset.type)").await;
    assert_eq!(hits, json!(["render.turntable"]));
    ed.retype("#palette-search", "").await;

    // The probe: added by a click, drawn with the ports the registry gives it, and a form
    // from its schema (bounds, enum, nested object, defaults, descriptions).
    ed.click(".palette-item[data-type='test.palette_probe']").await;
    ed.settle().await;
    let probe = "palette_probe";
    ed.find(&handle(probe, "image", "target")).await;
    ed.find(&handle(probe, "image", "source")).await;
    ed.find(&format!("#inspector[data-node='{probe}']")).await;
    let strength = ed.find(&format!("#param-{probe}-strength")).await;
    assert_eq!(strength.attr("min").await.unwrap().as_deref(), Some("1"));
    assert_eq!(strength.attr("max").await.unwrap().as_deref(), Some("10"));
    assert_eq!(strength.attr("placeholder").await.unwrap().as_deref(), Some("3"), "the default is shown");
    let modes = ed.js(&format!("return [...document.querySelectorAll('#param-{probe}-mode option')].map(o => o.textContent)")).await;
    assert_eq!(modes, json!(["(default: soft)", "soft", "hard"]));
    ed.find(&format!("fieldset[data-param='/tint'] #param-{probe}-tint-r")).await;
    let help = ed.text(&format!("#inspector .field[data-param='/strength'] .help")).await;
    assert!(!help.is_empty(), "the schema's description is the field's help");
    // Out of bounds: refused in the form, never sent.
    ed.typed(&format!("#param-{probe}-strength"), "11").await;
    assert!(ed.text(&format!(".field[data-param='/strength'] .field-problem")).await.contains("at most 10"));
    ed.retype(&format!("#param-{probe}-strength"), "7").await;
    ed.settle().await;
    // The probe's input is required and unfed: the server's problem shows on the node.
    let codes = ed
        .js(&format!(
            "return [...document.querySelectorAll(\".react-flow__node[data-id='{probe}'] .rf-node-problems li\")].map(l => l.dataset.code)"
        ))
        .await;
    assert!(codes.as_array().unwrap().iter().any(|c| c == "missing_required_input"), "{codes}");
    assert!(ed.errors().await >= 1);
    let save = ed.text("#save").await;
    assert!(save.starts_with("Save (") && save.contains("problem"), "{save}");
    assert!(!ed.find("#save").await.is_enabled().await.unwrap());
    browser.shot("editor-probe.png").await;

    // Delete with the keyboard; undo and redo.
    ed.focus_canvas().await;
    ed.chord(&[], DELETE).await;
    ed.settle().await;
    assert!(!ed.node_ids().await.contains(probe));
    assert_eq!(ed.errors().await, 0, "the starter is valid");
    ed.chord(&[CTRL], 'z').await;
    ed.settle().await;
    assert!(ed.node_ids().await.contains(probe), "undo brings it back");
    ed.chord(&[CTRL], 'z').await;
    ed.settle().await;
    let strength = ed.js(&format!("return document.querySelector(\".react-flow__node[data-id='{probe}']\") !== null")).await;
    assert_eq!(strength, json!(true));
    ed.chord(&[CTRL, SHIFT], 'z').await;
    ed.chord(&[CTRL, SHIFT], 'z').await;
    ed.settle().await;
    assert!(!ed.node_ids().await.contains(probe), "redo deletes it again");
    browser.close().await;
}

/// Authoring the demo's order-line graph from the order_line starter by pointer and key,
/// counted; type-safe connections refused with the server's reason; live validation; save
/// with a message; versions; auto-layout; copy/paste; context menus; insertion into an edge;
/// preflight and dispatch from the canvas.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn authoring_the_demo_graph_in_the_editor() {
    let mut w = World::new("editor_authoring").await;
    let c = w.start_coordinator("c1", &[("RENDERFLEET_REGISTRY_TEST_TYPES", "1")]).await;
    let browser = Browser::start(&w.data_dir.join("chromium"), "editor").await;
    browser.sign_in(&c.url, token("admin")).await;
    let mut ed = Ed { b: browser.client.clone(), count: Count::default() };
    open(&ed, &format!("{}/console/workflows/new?family=order_line", c.url)).await;
    assert_eq!(ed.node_ids().await, ["assign", "export", "publish", "resolve", "still"].map(String::from).into());
    assert_eq!(ed.errors().await, 0);

    // Link-drag search: from export.glb onto empty canvas → only types that take a glb.
    let spot = ed.free_spot().await;
    ed.drag_to(&handle("export", "glb", "source"), spot).await;
    ed.find("#search-popup").await;
    let offered = ed.js("return [...document.querySelectorAll('#search-popup li[data-choice]')].map(l => l.dataset.choice)").await;
    let offered: BTreeSet<&str> = offered.as_array().unwrap().iter().map(|v| v.as_str().unwrap()).collect();
    assert!(offered.contains("render.turntable") && offered.contains("export.blend"), "{offered:?}");
    assert!(!offered.contains("cad.resolve") && !offered.contains("video.encode"), "only types with a port that takes a glb: {offered:?}");
    ed.typed("#search-popup-input", "turn").await;
    ed.typed("#search-popup-input", &ENTER.to_string()).await;
    ed.settle().await;
    assert!(ed.edge_ids().await.contains("export.glb->turntable.glb"), "inserted and wired");
    ed.drag_onto(&handle("assign", "materials", "source"), &handle("turntable", "materials", "target")).await;
    ed.settle().await;
    assert!(ed.edge_ids().await.contains("assign.materials->turntable.materials"), "connected port to port");
    let spot = ed.free_spot().await;
    ed.drag_to(&handle("turntable", "frames", "source"), spot).await;
    ed.typed("#search-popup-input", "enc").await;
    ed.typed("#search-popup-input", &ENTER.to_string()).await;
    ed.settle().await;
    let spot = ed.free_spot().await;
    ed.drag_to(&handle("encode", "video", "source"), spot).await;
    ed.typed("#search-popup-input", "pub").await;
    ed.typed("#search-popup-input", &ENTER.to_string()).await;
    ed.settle().await;
    let spot = ed.free_spot().await;
    ed.drag_to(&handle("export", "glb", "source"), spot).await;
    ed.typed("#search-popup-input", "blend").await;
    ed.typed("#search-popup-input", &ENTER.to_string()).await;
    ed.settle().await;
    ed.drag_onto(&handle("assign", "materials", "source"), &handle("blend", "materials", "target")).await;
    ed.settle().await;
    assert!(ed.edge_ids().await.contains("assign.materials->blend.materials"));
    let spot = ed.free_spot().await;
    ed.drag_to(&handle("blend", "blend", "source"), spot).await;
    ed.typed("#search-popup-input", "pub").await;
    ed.typed("#search-popup-input", &ENTER.to_string()).await;
    ed.settle().await;
    browser.shot("editor-authoring.png").await;

    // A connection that does not fit is refused, with the server's reason beside the pointer
    // and after letting go.
    ed.drag_onto(&handle("encode", "video", "source"), &handle("still", "glb", "target")).await;
    let toast = ed.text("#toast").await;
    assert!(toast.starts_with("refused:") && toast.contains("video"), "{toast}");
    ed.drag_onto(&handle("blend", "blend", "source"), &handle("publish", "artifact", "target")).await;
    let toast = ed.text("#toast").await;
    assert!(toast.starts_with("refused:") && toast.contains("already fed by `still.image`"), "an input that is already bound: {toast}");
    assert!(!ed.edge_ids().await.contains("blend.blend->publish.artifact"));

    // Params, as the demo sets them.
    ed.select("still").await;
    ed.retype("#param-still-width", "512").await;
    ed.retype("#param-still-height", "512").await;
    ed.retype("#param-still-samples", "32").await;
    ed.select("turntable").await;
    ed.retype("#param-turntable-width", "256").await;
    ed.retype("#param-turntable-height", "256").await;
    ed.retype("#param-turntable-samples", "8").await;
    ed.retype("#param-turntable-frame_count", "36").await;
    ed.select("encode").await;
    ed.retype("#param-encode-fps", "24").await;
    ed.select("publish_2").await;
    ed.retype("#param-publish_2-name", "turntable").await;
    ed.select("publish_3").await;
    ed.retype("#param-publish_3-name", "blend").await;
    ed.settle().await;
    assert_eq!(ed.errors().await, 0, "{}", ed.text("#status").await);
    let (pointer, keys) = (ed.count.pointer, ed.count.keys);

    // The same graph by hand: the characters of the demo's JSON.
    let by_hand = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../ops/examples/order-line.json")).unwrap();
    let graph_chars = serde_json::to_string(&serde_json::from_str::<Value>(&by_hand).unwrap()["graph"]).unwrap().chars().count();
    println!("EDITOR-ACTIONS pointer={pointer} keys={keys} total={} json_chars={graph_chars}", pointer + keys);

    // Live validation: take a required edge away → flagged on the node, Save says why; undo.
    ed.focus_canvas().await;
    ed.click_edge("export.glb->still.glb").await;
    ed.find("#inspector[data-edge='export.glb->still.glb']").await;
    ed.focus_canvas().await;
    ed.chord(&[], DELETE).await;
    ed.settle().await;
    assert!(!ed.edge_ids().await.contains("export.glb->still.glb"));
    assert_eq!(ed.errors().await, 1);
    assert!(ed.find(".react-flow__node[data-id='still'] .rf-node.bad").await.is_displayed().await.unwrap());
    assert_eq!(ed.text("#save").await, "Save (1 problem)");
    ed.chord(&[CTRL], 'z').await;
    ed.settle().await;
    assert_eq!(ed.errors().await, 0);

    // Save with a message.
    ed.retype("#workflow-name", "demo order line").await;
    ed.typed("#save-message", "the demo's graph, drawn").await;
    ed.click("#save").await;
    wait_until("the saved workflow's editor", Duration::from_secs(15), || async {
        ed.b.current_url().await.ok().filter(|u| u.path().ends_with("/edit") && u.path().contains("/workflows/0")).map(|_| ())
    })
    .await;
    let url = ed.b.current_url().await.unwrap();
    let id = url.path().split('/').nth(3).unwrap().to_string();
    let (_, stored) = api(&w, &c, reqwest::Method::GET, &format!("/v1/workflows/{id}"), None).await;
    assert_eq!(stored["message"], "the demo's graph, drawn");
    let demo: Value = serde_json::from_str(&by_hand).unwrap();
    let (_, demo) = api(&w, &c, reqwest::Method::POST, "/v1/workflows/validate", Some(demo["graph"].clone())).await;
    assert_eq!(shape(&stored["graph"]), shape(&demo["normalized"]), "the drawn graph is the demo's");
    assert!(stored["graph"]["nodes"].as_array().unwrap().iter().all(|n| n["position"]["x"].is_number()), "positions are saved");
    ed.settle().await;

    // Auto-layout, a second version, and opening the first again.
    ed.click("#auto-layout").await;
    ed.typed("#save-message", "laid out").await;
    ed.click("#save").await;
    wait_until("version 2", Duration::from_secs(15), || async {
        (api(&w, &c, reqwest::Method::GET, &format!("/v1/workflows/{id}"), None).await.1["version"] == 2).then_some(())
    })
    .await;
    let (_, versions) = api(&w, &c, reqwest::Method::GET, &format!("/v1/workflows/{id}/versions"), None).await;
    assert_eq!(versions["items"][0]["message"], "laid out");
    open(&ed, &format!("{}/console/workflows/{id}/edit?version=1", c.url)).await;
    assert!(ed.text("#older-version").await.contains("Viewing version 1 of 2"));
    open(&ed, &format!("{}/console/workflows/{id}/edit", c.url)).await;

    // Copy and paste a node with its params.
    ed.select("still").await;
    ed.focus_canvas().await;
    ed.chord(&[CTRL], 'c').await;
    let spot = ed.free_spot().await;
    ed.b.perform_actions(MouseActions::new("mouse".into()).then(PointerAction::MoveTo { duration: None, x: spot.0, y: spot.1 }))
        .await
        .unwrap();
    ed.chord(&[CTRL], 'v').await;
    ed.settle().await;
    ed.find("#inspector[data-node='still_2']").await;
    assert_eq!(ed.find("#param-still_2-width").await.prop("value").await.unwrap().as_deref(), Some("512"));
    // The context menu deletes it.
    ed.right_click(".react-flow__node[data-id='still_2'] .rf-node-head").await;
    ed.click("#menu-delete").await;
    ed.settle().await;
    assert!(!ed.node_ids().await.contains("still_2"));

    // Right-click on the canvas → the palette's search at the pointer.
    let spot = ed.free_spot().await;
    ed.right_click_at(spot.0, spot.1).await;
    ed.typed("#search-popup-input", "probe").await;
    ed.typed("#search-popup-input", &ENTER.to_string()).await;
    ed.settle().await;
    assert!(ed.node_ids().await.contains("palette_probe"));
    // Drop it on the edge still → publish: it fits (image in, image out), so it goes between.
    ed.drag_onto(
        ".react-flow__node[data-id='palette_probe'] .rf-node-head",
        ".react-flow__edge[data-id='still.image->publish.artifact'] path",
    )
    .await;
    ed.settle().await;
    let edges = ed.edge_ids().await;
    assert!(edges.contains("still.image->palette_probe.image") && edges.contains("palette_probe.image->publish.artifact"), "{edges:?}");
    assert!(!edges.contains("still.image->publish.artifact"));
    ed.chord(&[CTRL], 'z').await;
    ed.chord(&[CTRL], 'z').await;
    ed.settle().await;
    assert!(ed.edge_ids().await.contains("still.image->publish.artifact"));

    // Preflight from the canvas: no worker runs here, and each node says so.
    ed.click("#preflight").await;
    ed.click("#run-preflight").await;
    let report = ed.text("#preflight-report").await;
    assert!(report.contains("would not run"), "{report}");
    browser.shot("editor-preflight.png").await;
    ed.click("#close-dialog").await;
    let mark = ed.text(".react-flow__node[data-id='still'] .rf-node-preflight").await;
    assert!(mark.contains("no live worker"), "{mark}");

    // Dispatch from the canvas: a render request of a bound output type.
    let ot =
        json!({"key": "demo-editor", "family": "order_line", "artifact_kind": "image_png", "workflow_id": id, "rollout_mode": "graph"});
    assert_eq!(api(&w, &c, reqwest::Method::POST, "/v1/output-types", Some(ot)).await.0, 201);
    open(&ed, &format!("{}/console/workflows/{id}/edit", c.url)).await;
    ed.click("#dispatch").await;
    ed.click("#run-dispatch").await;
    wait_until("the dispatched run's page", Duration::from_secs(15), || async {
        ed.b.current_url().await.ok().filter(|u| u.path().starts_with("/console/runs/")).map(|_| ())
    })
    .await;
    browser.close().await;
}

/// A stored graph that mixes families opens flagged, with the repair offered and Save
/// refused until it is family-safe.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mixed_family_graph_opens_flagged_and_must_converge() {
    let mut w = World::new("editor_migration").await;
    let c = w.start_coordinator("c1", &[]).await;
    let (_, mut starter) = api(&w, &c, reqwest::Method::GET, "/v1/workflows/starters/order_line", None).await;
    // A cad_file-only node in an order_line graph, under an old type name for repair to fix.
    starter["nodes"].as_array_mut().unwrap().push(json!({"id": "metadata", "type": "cad.extract_metadata"}));
    starter["edges"].as_array_mut().unwrap().push(json!({"from": "export", "from_port": "glb", "to": "metadata", "to_port": "glb"}));
    for n in starter["nodes"].as_array_mut().unwrap() {
        if n["id"] == "export" {
            n["type"] = json!("cad.step_to_glb");
        }
    }
    let (status, created) =
        api(&w, &c, reqwest::Method::POST, "/v1/workflows", Some(json!({"name": "imported", "family": "order_line", "graph": starter})))
            .await;
    assert_eq!(status, 201, "{created}");
    assert_eq!(created["mixed_family"], true);
    let id = created["id"].as_str().unwrap().to_string();
    // As an older coordinator stored it: the old type name, not yet normalised.
    let db = w.db().await;
    let uuid: uuid::Uuid = id.parse().unwrap();
    assert_eq!(db.execute("UPDATE workflows SET graph = $1 WHERE id = $2 AND version = 1", &[&starter, &uuid]).await.unwrap(), 1);

    let browser = Browser::start(&w.data_dir.join("chromium"), "editor").await;
    browser.sign_in(&c.url, token("admin")).await;
    let mut ed = Ed { b: browser.client.clone(), count: Count::default() };
    open(&ed, &format!("{}/console/workflows/{id}/edit", c.url)).await;
    assert!(ed.text("#migration-banner").await.contains("mixes families"));
    let codes = ed.js("return [...document.querySelectorAll(\".react-flow__node[data-id='metadata'] .rf-node-problems li\")].map(l => l.dataset.code)").await;
    assert!(codes.as_array().unwrap().iter().any(|c| c == "family_mismatch"), "{codes}");
    assert!(!ed.find("#save").await.is_enabled().await.unwrap(), "Save is refused while it mixes families");
    browser.shot("editor-migration.png").await;

    // Repair, seen first.
    ed.click("#repair").await;
    let changes = ed.text("#repair-changes").await;
    assert!(changes.contains("cad.step_to_glb"), "{changes}");
    ed.click("#apply-repair").await;
    wait_until("the repaired version", Duration::from_secs(15), || async {
        (api(&w, &c, reqwest::Method::GET, &format!("/v1/workflows/{id}"), None).await.1["version"] == 2).then_some(())
    })
    .await;
    ed.settle().await;
    // Still mixed: a person takes the foreign node out; then Save is allowed.
    assert!(ed.node_ids().await.contains("metadata"));
    ed.select("metadata").await;
    ed.click("#delete-node").await;
    ed.settle().await;
    assert_eq!(ed.errors().await, 0);
    ed.typed("#save-message", "family-safe").await;
    ed.click("#save").await;
    wait_until("version 3", Duration::from_secs(15), || async {
        let (_, v) = api(&w, &c, reqwest::Method::GET, &format!("/v1/workflows/{id}"), None).await;
        (v["version"] == 3 && v["mixed_family"] == false).then_some(())
    })
    .await;
    browser.close().await;
}

/// `v` with every number as a float: 35 and 35.0 are the same parameter.
fn as_floats(v: &Value) -> Value {
    match v {
        Value::Number(n) => json!(n.as_f64().unwrap()),
        Value::Array(a) => Value::Array(a.iter().map(as_floats).collect()),
        Value::Object(o) => Value::Object(o.iter().map(|(k, v)| (k.clone(), as_floats(v))).collect()),
        v => v.clone(),
    }
}

/// A graph's shape: node types with their params, and edges by node type, name and port;
/// node ids and positions aside.
fn shape(graph: &Value) -> (BTreeSet<String>, BTreeSet<String>) {
    let nodes = graph["nodes"].as_array().unwrap();
    let type_of = |id: &str| nodes.iter().find(|n| n["id"] == id).map(|n| n["type"].as_str().unwrap().to_string()).unwrap();
    let name_of = |id: &str| {
        let n = nodes.iter().find(|n| n["id"] == id).unwrap();
        format!("{}{}", type_of(id), n["params"]["name"].as_str().map(|s| format!("[{s}]")).unwrap_or_default())
    };
    let ns = nodes.iter().map(|n| format!("{} {}", name_of(n["id"].as_str().unwrap()), as_floats(&n["params"]))).collect();
    let es = graph["edges"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            let (from, to) = (e["from"].as_str().unwrap(), e["to"].as_str().unwrap());
            format!("{}.{} → {}.{}", name_of(from), e["from_port"], name_of(to), e["to_port"])
        })
        .collect();
    (ns, es)
}

/// A 200-node graph (the starter with 98 more still → publish branches) opens, is laid out
/// and validated; the figures are printed for the README (`EDITOR-SCALE`), not asserted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_200_node_graph_opens_and_validates() {
    let mut w = World::new("editor_scale").await;
    let c = w.start_coordinator("c1", &[]).await;
    let (_, mut g) = api(&w, &c, reqwest::Method::GET, "/v1/workflows/starters/order_line", None).await;
    for i in 0..98 {
        let (still, publish) = (format!("still_{i}"), format!("publish_{i}"));
        g["nodes"].as_array_mut().unwrap().extend([
            json!({"id": still, "type": "render.still", "params": {"width": 64 + i, "height": 64}}),
            json!({"id": publish, "type": "output.publish", "params": {"name": format!("still_{i}")}}),
        ]);
        g["edges"].as_array_mut().unwrap().extend([
            json!({"from": "export", "from_port": "glb", "to": still, "to_port": "glb"}),
            json!({"from": "assign", "from_port": "materials", "to": still, "to_port": "materials"}),
            json!({"from": still, "from_port": "image", "to": publish, "to_port": "artifact"}),
        ]);
    }
    let nodes = g["nodes"].as_array().unwrap().len();
    assert!(nodes >= 200, "{nodes}");
    let (status, created) =
        api(&w, &c, reqwest::Method::POST, "/v1/workflows", Some(json!({"name": "wide", "family": "order_line", "graph": g}))).await;
    assert_eq!(status, 201, "{created}");
    let id = created["id"].as_str().unwrap().to_string();
    let browser = Browser::start(&w.data_dir.join("chromium"), "editor").await;
    browser.sign_in(&c.url, token("admin")).await;
    let mut ed = Ed { b: browser.client.clone(), count: Count::default() };
    open(&ed, &format!("{}/console/workflows/{id}/edit", c.url)).await;
    assert_eq!(ed.errors().await, 0, "{}", ed.text("#status").await);
    assert!(ed.text("#status").await.contains(&format!("{nodes} nodes")));
    let first = ed.js("const d = document.getElementById('editor').dataset; return [Number(d.loadMs), Number(d.validateMs)]").await;
    // One edit (a node added from the palette), checked again by the server.
    ed.click(".palette-item[data-type='render.still']").await;
    ed.settle().await;
    assert!(ed.text("#status").await.contains(&format!("{} nodes", nodes + 1)));
    let edit = ed.js("return Number(document.getElementById('editor').dataset.validateMs)").await;
    println!("EDITOR-SCALE nodes={nodes} load_ms={} first_validate_ms={} edit_validate_ms={edit}", first[0], first[1]);
    browser.shot("editor-200-nodes.png").await;
    browser.close().await;
}

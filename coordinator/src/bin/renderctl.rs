//! `renderctl`: the command line for a renderfleet coordinator, kubectl-style
//! (`renderctl submit graph.json --wait`, `renderctl runs show ID`).

use anyhow::{bail, Context};
use clap::{Parser, Subcommand, ValueEnum};
use serde_json::{json, Value};
use std::collections::HashMap;
use std::io::Write;
use std::path::PathBuf;
use std::time::{Duration, Instant};

#[derive(Parser)]
#[command(version, about = "Talk to a renderfleet coordinator")]
struct Cli {
    /// Coordinator base URL.
    #[arg(long, global = true, env = "RENDERFLEET_COORDINATOR_URL", default_value = "http://127.0.0.1:8080")]
    coordinator: String,
    /// Output format.
    #[arg(short, long, global = true, value_enum, default_value_t = Output::Tree)]
    output: Output,
    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, ValueEnum, PartialEq)]
enum Output {
    Tree,
    Json,
}

#[derive(Subcommand)]
enum Command {
    /// Submit a graph as a run. GRAPH is a graph (`{"nodes": [...], "edges": [...]}`) or a
    /// whole request (`{"subject": ..., "graph": ...}`).
    Submit {
        graph: PathBuf,
        /// Subject of the run as JSON (default: the file name).
        #[arg(long)]
        subject: Option<String>,
        /// Wait until the run finishes, showing progress; exit 1 if it failed.
        #[arg(long)]
        wait: bool,
        /// Give up waiting after this long (e.g. 10m).
        #[arg(long, default_value = "30m", value_parser = humantime::parse_duration)]
        timeout: Duration,
    },
    /// Inspect runs.
    Runs {
        #[command(subcommand)]
        command: RunsCommand,
    },
}

#[derive(Subcommand)]
enum RunsCommand {
    /// A run and its nodes as a tree: status, attempt, worker and timings.
    Show { id: String },
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let cli = Cli::parse();
    match dispatch(cli).await {
        Ok(code) => std::process::exit(code),
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::exit(2);
        }
    }
}

async fn dispatch(cli: Cli) -> anyhow::Result<i32> {
    let http = reqwest::Client::builder().timeout(Duration::from_secs(30)).build()?;
    let base = cli.coordinator.trim_end_matches('/').to_string();
    match cli.command {
        Command::Submit { graph, subject, wait, timeout } => {
            let text = std::fs::read_to_string(&graph).with_context(|| format!("cannot read {}", graph.display()))?;
            let doc: Value = serde_json::from_str(&text).with_context(|| format!("{} is not JSON", graph.display()))?;
            let mut request = if doc.get("nodes").is_some() { json!({"graph": doc}) } else { doc };
            if let Some(s) = subject {
                request["subject"] = serde_json::from_str(&s).context("--subject must be JSON, e.g. '{\"order_line\": 42}'")?;
            }
            if request.get("subject").is_none() {
                request["subject"] = json!({"kind": "adhoc", "file": graph.display().to_string()});
            }
            let resp = send(http.post(format!("{base}/v1/runs")).json(&request), &base).await?;
            let id = resp["run_id"].as_str().context("the coordinator answered without a run_id")?.to_string();
            if !wait {
                if cli.output == Output::Json {
                    println!("{resp}");
                } else {
                    println!("run {id} created");
                }
                return Ok(0);
            }
            eprintln!("run {id} created; waiting");
            let run = wait_for(&http, &base, &id, timeout).await?;
            print_run(&run, cli.output);
            Ok(if run["status"] == "succeeded" { 0 } else { 1 })
        }
        Command::Runs { command: RunsCommand::Show { id } } => {
            let run = send(http.get(format!("{base}/v1/runs/{id}")), &base).await?;
            print_run(&run, cli.output);
            Ok(0)
        }
    }
}

/// Sends a request; turns an API error into its message (which carries the fix).
async fn send(req: reqwest::RequestBuilder, base: &str) -> anyhow::Result<Value> {
    let resp = req.send().await.with_context(|| {
        format!("cannot reach the coordinator at {base}; is it running? (set --coordinator or RENDERFLEET_COORDINATOR_URL)")
    })?;
    let status = resp.status();
    let body: Value = resp.json().await.unwrap_or(Value::Null);
    if status.is_success() {
        return Ok(body);
    }
    let mut msg = format!("{} {}", status.as_u16(), body["message"].as_str().unwrap_or("(no message)"));
    for p in body["problems"].as_array().into_iter().flatten() {
        msg.push_str(&format!("\n  - [{}] {}", p["code"].as_str().unwrap_or("?"), p["message"].as_str().unwrap_or("")));
    }
    bail!(msg)
}

async fn wait_for(http: &reqwest::Client, base: &str, id: &str, timeout: Duration) -> anyhow::Result<Value> {
    let deadline = Instant::now() + timeout;
    let mut last = String::new();
    loop {
        let run = send(http.get(format!("{base}/v1/runs/{id}?nodes=false")), base).await?;
        let status = run["status"].as_str().unwrap_or("?").to_string();
        let progress = format!("{status}: {}/{} nodes done", run["nodes_done"], run["nodes_total"]);
        if progress != last {
            eprint!("\r{progress}   ");
            let _ = std::io::stderr().flush();
            last = progress;
        }
        if status != "running" {
            eprintln!();
            return send(http.get(format!("{base}/v1/runs/{id}")), base).await;
        }
        if Instant::now() > deadline {
            bail!("run {id} still running after {}; see `renderctl runs show {id}`", humantime::format_duration(timeout));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn print_run(run: &Value, output: Output) {
    if output == Output::Json {
        println!("{}", serde_json::to_string_pretty(run).unwrap_or_default());
        return;
    }
    let took = span(run["created_at"].as_str(), run["finished_at"].as_str()).map(fmt_secs).unwrap_or_else(|| "-".into());
    println!(
        "run {}  {}  {} of {} nodes done  {}",
        run["id"].as_str().unwrap_or("?"),
        run["status"].as_str().unwrap_or("?"),
        run["nodes_done"],
        run["nodes_total"],
        took
    );
    if let Some(msg) = run["error"]["message"].as_str() {
        println!("  error: {msg}");
    }
    let nodes = run["nodes"].as_array().cloned().unwrap_or_default();
    // Depth of each node = longest path from a source, so the tree reads in dependency order.
    let mut preds: HashMap<String, Vec<String>> = HashMap::new();
    for e in run["edges"].as_array().into_iter().flatten() {
        if let (Some(f), Some(t)) = (e["from"].as_str(), e["to"].as_str()) {
            preds.entry(t.to_string()).or_default().push(f.to_string());
        }
    }
    let mut depth: HashMap<String, usize> = HashMap::new();
    fn depth_of(n: &str, preds: &HashMap<String, Vec<String>>, memo: &mut HashMap<String, usize>, guard: usize) -> usize {
        if let Some(d) = memo.get(n) {
            return *d;
        }
        let d = if guard == 0 {
            0
        } else {
            preds.get(n).map(|ps| ps.iter().map(|p| depth_of(p, preds, memo, guard - 1) + 1).max().unwrap_or(0)).unwrap_or(0)
        };
        memo.insert(n.to_string(), d);
        d
    }
    let mut order: Vec<&Value> = nodes.iter().collect();
    for n in &order {
        let id = n["node_id"].as_str().unwrap_or("");
        depth_of(id, &preds, &mut depth, nodes.len());
    }
    order.sort_by_key(|n| depth.get(n["node_id"].as_str().unwrap_or("")).copied().unwrap_or(0));
    println!("  {:<28} {:<8} {:<10} {:>7}  {:<20} {:>9} {:>9}", "NODE", "MODULE", "STATUS", "ATTEMPT", "WORKER", "WAITED", "RAN");
    for (i, n) in order.iter().enumerate() {
        let id = n["node_id"].as_str().unwrap_or("?");
        let d = depth.get(id).copied().unwrap_or(0);
        let branch = if i + 1 == order.len() { "└─" } else { "├─" };
        let name = format!("{}{branch} {id}", "  ".repeat(d));
        let waited = span(n["queued_at"].as_str(), n["started_at"].as_str()).map(fmt_secs).unwrap_or_else(|| "-".into());
        let ran = span(n["started_at"].as_str(), n["finished_at"].as_str()).map(fmt_secs).unwrap_or_else(|| "-".into());
        println!(
            "  {:<28} {:<8} {:<10} {:>7}  {:<20} {:>9} {:>9}",
            name,
            n["module"].as_str().unwrap_or("?"),
            n["status"].as_str().unwrap_or("?"),
            format!("{}/{}", n["attempt"], n["max_attempts"]),
            n["worker_id"].as_str().unwrap_or("-"),
            waited,
            ran
        );
        if let Some(msg) = n["error"]["message"].as_str() {
            println!("  {}   error: {msg}", "  ".repeat(d));
        }
    }
}

fn span(from: Option<&str>, to: Option<&str>) -> Option<f64> {
    let a = chrono::DateTime::parse_from_rfc3339(from?).ok()?;
    let b = chrono::DateTime::parse_from_rfc3339(to?).ok()?;
    Some((b - a).num_microseconds()? as f64 / 1e6)
}

fn fmt_secs(s: f64) -> String {
    if s < 1.0 {
        format!("{:.1}ms", s * 1000.0)
    } else {
        format!("{s:.2}s")
    }
}

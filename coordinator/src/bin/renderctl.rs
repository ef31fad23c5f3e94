//! `renderctl`: the command line for a renderfleet coordinator, kubectl-style
//! (`renderctl submit graph.json --wait`, `renderctl runs show ID`,
//! `renderctl workflows repair --all --dry-run`).

use anyhow::{bail, Context};
use clap::{Parser, Subcommand, ValueEnum};
use serde_json::{json, Value};
use std::collections::HashMap;
use std::io::Write;
use std::path::PathBuf;
use std::time::{Duration, Instant};

#[derive(Parser)]
#[command(
    version,
    about = "Talk to a renderfleet coordinator",
    after_help = "Exit status: 0 done; 1 the work failed (a run or request waited for with --wait, a refused batch line); 2 the command could not be carried out (bad input, a refusal or an error from the coordinator, no coordinator)."
)]
struct Cli {
    /// Coordinator base URL.
    #[arg(long, global = true, env = "RENDERFLEET_COORDINATOR_URL", default_value = "http://127.0.0.1:8080")]
    coordinator: String,
    /// Bearer token (never logged).
    #[arg(long, global = true, env = "RENDERFLEET_TOKEN", hide_env_values = true)]
    token: Option<String>,
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
        /// Render every node anew instead of taking results from the node result cache.
        #[arg(long)]
        refresh: bool,
        /// bulk, normal, rush or interactive (default: normal; for a request, its output type's default).
        #[arg(long)]
        priority: Option<String>,
        /// Count the work against this tenant for fair share (default: the token's name).
        #[arg(long)]
        tenant: Option<String>,
    },
    /// Inspect runs.
    Runs {
        #[command(subcommand)]
        command: RunsCommand,
    },
    /// Author workflows: validate, create, edit, repair, preflight.
    Workflows {
        #[command(subcommand)]
        command: WorkflowsCommand,
    },
    /// Output types: what the order system asks for.
    #[command(name = "output-types")]
    OutputTypes {
        #[command(subcommand)]
        command: OutputTypesCommand,
    },
    /// The node palette: every node type with its family, module, ports and params.
    Nodes,
    /// Render requests, as the order system sends them.
    Requests {
        #[command(subcommand)]
        command: RequestsCommand,
    },
    /// Rolling a graph workflow out: gate, promote, rollback, history.
    Rollout {
        #[command(subcommand)]
        command: RolloutCommand,
    },
    /// Shadow comparisons of graph against legacy.
    Comparisons {
        #[command(subcommand)]
        command: ComparisonsCommand,
    },
    /// The material library.
    Materials {
        #[command(subcommand)]
        command: MaterialsCommand,
    },
    /// Products' material maps.
    Products {
        #[command(subcommand)]
        command: ProductsCommand,
    },
    /// Artifacts by their SHA-256, as runs, requests and events name them.
    Artifacts {
        #[command(subcommand)]
        command: ArtifactsCommand,
    },
    /// Workers as their heartbeats describe them; release a quarantined module.
    Workers {
        #[command(subcommand)]
        command: WorkersCommand,
    },
    /// API tokens.
    Token {
        #[command(subcommand)]
        command: TokenCommand,
    },
}

#[derive(Subcommand)]
enum WorkflowsCommand {
    /// Every problem of a graph file, and its normalised form with -o json; writes nothing.
    Validate { graph: PathBuf },
    /// Store GRAPH as a new workflow.
    Create {
        graph: PathBuf,
        #[arg(long)]
        name: String,
        /// cad_file or order_line (default: the graph's `family`).
        #[arg(long)]
        family: Option<String>,
    },
    /// Store GRAPH as the next version of workflow ID.
    Edit {
        id: String,
        graph: PathBuf,
        /// New name (default: unchanged).
        #[arg(long)]
        name: Option<String>,
    },
    /// The latest version of each workflow.
    List,
    /// One workflow (the latest version, or --version).
    Show {
        id: String,
        #[arg(long)]
        version: Option<i32>,
    },
    /// The canonical starter graph of a family (cad_file, order_line).
    Starter { family: String },
    /// Normalise stored workflows to canonical shape and report what changed.
    Repair {
        /// One workflow; or --all.
        id: Option<String>,
        #[arg(long, conflicts_with = "id")]
        all: bool,
        /// Report only; write nothing.
        #[arg(long)]
        dry_run: bool,
    },
    /// Would a run go through? Validation, resolved params, and a live worker for each module.
    Preflight {
        id: String,
        /// Apply this output type's overrides.
        #[arg(long)]
        output_type: Option<String>,
        /// The subject as JSON.
        #[arg(long, default_value = "{}")]
        subject: String,
    },
}

#[derive(Subcommand)]
enum OutputTypesCommand {
    List,
    Show {
        key: String,
    },
    /// Create or replace the output type described by FILE (JSON with a `key`).
    Apply {
        file: PathBuf,
    },
}

#[derive(Subcommand)]
enum RolloutCommand {
    /// The output type's mode and its gate, with the numbers behind it.
    Status { output_type: String },
    /// legacy → shadow, or shadow → graph when the gate passes.
    Promote {
        output_type: String,
        /// Promote although the gate does not pass (needs --reason; recorded).
        #[arg(long)]
        force: bool,
        #[arg(long)]
        reason: Option<String>,
    },
    /// Back to legacy at once; the next request is legacy.
    Rollback {
        output_type: String,
        #[arg(long)]
        reason: Option<String>,
    },
    /// Mode changes, newest first.
    Events { output_type: String },
}

#[derive(Subcommand)]
enum ComparisonsCommand {
    List {
        #[arg(long)]
        output_type: Option<String>,
        #[arg(long)]
        verdict: Option<String>,
        #[arg(long, default_value_t = 20)]
        limit: u32,
    },
    /// A comparison's metrics and where its diff image is.
    Show { id: String },
}

#[derive(Subcommand)]
enum MaterialsCommand {
    List,
    /// Create or replace materials from FILE: `{"NAME": {"base_color": "#RRGGBB", "metallic": 0,
    /// "roughness": 0.5}, ...}`.
    Apply {
        file: PathBuf,
    },
}

#[derive(Subcommand)]
enum ProductsCommand {
    /// A product's material map.
    Map { product: String },
    /// Replace a product's material map with FILE: `{"PART KEY or PART NAME": "MATERIAL", ...}`.
    #[command(name = "map-set")]
    MapSet { product: String, file: PathBuf },
    /// Give MATERIAL to every part the product's last render found without one.
    #[command(name = "map-repair")]
    MapRepair {
        product: String,
        #[arg(long)]
        material: String,
        /// Show what would be assigned, write nothing.
        #[arg(long)]
        dry_run: bool,
    },
}

#[derive(Subcommand)]
enum RequestsCommand {
    /// Send a render request; the idempotency key defaults to ORDER_LINE/OUTPUT_TYPE.
    Submit {
        #[arg(long)]
        order_line: String,
        #[arg(long)]
        output_type: String,
        /// The subject as JSON.
        #[arg(long, default_value = "{}")]
        subject: String,
        #[arg(long)]
        idempotency_key: Option<String>,
        /// Render every node anew instead of taking results from the node result cache.
        #[arg(long)]
        refresh: bool,
        /// bulk, normal, rush or interactive (default: normal; for a request, its output type's default).
        #[arg(long)]
        priority: Option<String>,
        /// Count the work against this tenant for fair share (default: the token's name).
        #[arg(long)]
        tenant: Option<String>,
        /// Wait until the request has its answer, showing progress; exit 1 if it failed.
        #[arg(long)]
        wait: bool,
        /// Give up waiting after this long (e.g. 10m).
        #[arg(long, default_value = "30m", value_parser = humantime::parse_duration)]
        timeout: Duration,
    },
    /// Requests newest first, with the status of the run that answers each; a page at a time.
    List {
        #[arg(long)]
        output_type: Option<String>,
        /// The tenant (or token name) they count against.
        #[arg(long)]
        submitter: Option<String>,
        /// Received in the last N hours.
        #[arg(long)]
        hours: Option<f64>,
        #[arg(long, default_value_t = 50)]
        limit: u32,
        /// The cursor a previous page printed.
        #[arg(long)]
        after: Option<String>,
    },
    /// A request: status, progress and estimated finish, and once done its artifact.
    Show { id: String },
    /// Send many requests from a JSON Lines file, one request per line, each with its own
    /// `idempotency_key` (sent in batches of 1000); exit 1 if any line was refused.
    SubmitBatch {
        /// One JSON object per line: `{"idempotency_key": …, "order_line_id": …, "subject": …, "output_type": …}`.
        file: PathBuf,
    },
    /// Cancel a request: all its runs (shadow included) stop.
    Cancel {
        id: String,
        #[arg(long)]
        reason: Option<String>,
    },
}

#[derive(Subcommand)]
enum ArtifactsCommand {
    /// Download an artifact (streamed), checking its bytes against the hash.
    Get {
        sha256: String,
        /// Where to write it (default: the name the coordinator gives, in this directory; `-`: standard output).
        #[arg(short = 'f', long)]
        file: Option<PathBuf>,
    },
}

#[derive(Subcommand)]
enum WorkersCommand {
    /// The workers heard from in the last ten minutes, with what they take and what they quarantined.
    List,
    /// Let a worker take up a quarantined module again (mend the host first).
    Release {
        id: String,
        /// Only this module (default: every quarantined one).
        #[arg(long)]
        module: Option<String>,
    },
}

#[derive(Subcommand)]
enum TokenCommand {
    /// Make a new secret and print it with the configuration entry that admits it.
    New {
        name: String,
        /// Scopes joined with `+`: submit, read, operate, admin.
        scopes: String,
    },
}

#[derive(Subcommand)]
enum RunsCommand {
    /// Runs newest first, filtered as the console's Runs page; a page at a time.
    List {
        /// running, succeeded, failed or cancelled.
        #[arg(long)]
        status: Option<String>,
        #[arg(long)]
        output_type: Option<String>,
        /// graph or legacy.
        #[arg(long)]
        pipeline: Option<String>,
        /// authoritative, shadow, fallback or comparison.
        #[arg(long)]
        role: Option<String>,
        /// Created in the last N hours.
        #[arg(long)]
        hours: Option<f64>,
        /// Runs per page (at most 500).
        #[arg(long, default_value_t = 50)]
        limit: u32,
        /// The cursor a previous page printed.
        #[arg(long)]
        after: Option<String>,
    },
    /// A run and its nodes as a tree: status, attempt, worker and timings.
    Show { id: String },
    /// Stop a running run: nodes not started are skipped, running ones stopped on their workers.
    Cancel {
        id: String,
        #[arg(long)]
        reason: Option<String>,
    },
    /// Run a failed or cancelled run again: every failed or skipped node gets a new attempt.
    Retry {
        id: String,
        /// Wait until it finishes again; exit 1 if it failed.
        #[arg(long)]
        wait: bool,
    },
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
    let mut headers = reqwest::header::HeaderMap::new();
    if let Some(t) = &cli.token {
        let mut v =
            reqwest::header::HeaderValue::from_str(&format!("Bearer {t}")).context("the token holds characters a header cannot carry")?;
        v.set_sensitive(true);
        headers.insert(reqwest::header::AUTHORIZATION, v);
    }
    let http = reqwest::Client::builder().timeout(Duration::from_secs(30)).default_headers(headers).build()?;
    let base = cli.coordinator.trim_end_matches('/').to_string();
    match cli.command {
        Command::Submit { graph, subject, wait, timeout, refresh, priority, tenant } => {
            let text = std::fs::read_to_string(&graph).with_context(|| format!("cannot read {}", graph.display()))?;
            let doc: Value = serde_json::from_str(&text).with_context(|| format!("{} is not JSON", graph.display()))?;
            let mut request = if doc.get("nodes").is_some() { json!({"graph": doc}) } else { doc };
            if let Some(s) = subject {
                request["subject"] = serde_json::from_str(&s).context("--subject must be JSON, e.g. '{\"order_line\": 42}'")?;
            }
            if request.get("subject").is_none() {
                request["subject"] = json!({"kind": "adhoc", "file": graph.display().to_string()});
            }
            if refresh {
                request["cache"] = json!("refresh");
            }
            if let Some(p) = priority {
                request["priority"] = json!(p);
            }
            if let Some(t) = tenant {
                request["tenant"] = json!(t);
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
        Command::Runs { command: RunsCommand::List { status, output_type, pipeline, role, hours, limit, after } } => {
            let filters = [("status", status), ("output_type", output_type), ("pipeline", pipeline), ("role", role)];
            let url = list_url(&base, "/v1/runs", &filters, hours, limit, after)?;
            let v = send(http.get(url), &base).await?;
            if cli.output == Output::Json {
                print_value(&v, cli.output);
                return Ok(0);
            }
            println!(
                "{:<36} {:<10} {:<7} {:<13} {:<20} {:<20} {:>7}  FAILING NODE",
                "RUN", "STATUS", "PIPE", "ROLE", "OUTPUT TYPE", "CREATED", "NODES"
            );
            for r in v["items"].as_array().into_iter().flatten() {
                let created = r["created_at"].as_str().unwrap_or("?");
                println!(
                    "{:<36} {:<10} {:<7} {:<13} {:<20} {:<20} {:>7}  {}",
                    r["id"].as_str().unwrap_or("?"),
                    r["status"].as_str().unwrap_or("?"),
                    r["pipeline"].as_str().unwrap_or("?"),
                    r["role"].as_str().unwrap_or("?"),
                    r["output_type"].as_str().unwrap_or("-"),
                    created.get(..19).unwrap_or(created),
                    format!("{}/{}", r["nodes_done"], r["nodes_total"]),
                    r["failing_node"].as_str().unwrap_or("")
                );
            }
            if let Some(next) = v["next"].as_str() {
                eprintln!("more: renderctl runs list --after '{next}' (with the same filters)");
            }
            Ok(0)
        }
        Command::Runs { command: RunsCommand::Show { id } } => {
            let run = send(http.get(format!("{base}/v1/runs/{id}")), &base).await?;
            print_run(&run, cli.output);
            Ok(0)
        }
        Command::Runs { command: RunsCommand::Cancel { id, reason } } => {
            let v = send(http.post(format!("{base}/v1/runs/{id}/cancel")).json(&json!({"reason": reason})), &base).await?;
            if cli.output == Output::Json {
                print_value(&v, cli.output);
            } else if v["workers_told"] == true {
                println!("run {id} cancelled; its running tasks are being stopped");
            } else {
                println!("run {id} cancelled; the workers could not be told now (broker down?): running tasks finish and are ignored");
            }
            Ok(0)
        }
        Command::Runs { command: RunsCommand::Retry { id, wait } } => {
            let v = send(http.post(format!("{base}/v1/runs/{id}/retry")), &base).await?;
            eprintln!("run {id}: {} node(s) run again", v["nodes"]);
            if !wait {
                return Ok(0);
            }
            let run = wait_for(&http, &base, &id, Duration::from_secs(3600)).await?;
            print_run(&run, cli.output);
            Ok(if run["status"] == "succeeded" { 0 } else { 1 })
        }
        Command::Workflows { command } => workflows(&http, &base, command, cli.output).await,
        Command::OutputTypes { command } => {
            let v = match command {
                OutputTypesCommand::List => {
                    let v = send(http.get(format!("{base}/v1/output-types")), &base).await?;
                    if cli.output == Output::Tree {
                        println!("{:<28} {:<11} {:<14} {:<8} {:>7}  WORKFLOW", "KEY", "FAMILY", "ARTIFACT", "MODE", "SHADOW");
                        for t in v["items"].as_array().into_iter().flatten() {
                            let workflow = match (t["workflow_id"].as_str(), t["workflow_version"].as_i64()) {
                                (Some(id), Some(version)) => format!("{id} v{version}"),
                                (Some(id), None) => format!("{id} (latest)"),
                                _ => "-".into(),
                            };
                            println!(
                                "{:<28} {:<11} {:<14} {:<8} {:>6}%  {workflow}",
                                t["key"].as_str().unwrap_or("?"),
                                t["family"].as_str().unwrap_or("?"),
                                t["artifact_kind"].as_str().unwrap_or("?"),
                                t["rollout_mode"].as_str().unwrap_or("?"),
                                t["shadow_sample_pct"].as_f64().unwrap_or(0.0)
                            );
                        }
                        return Ok(0);
                    }
                    v
                }
                OutputTypesCommand::Show { key } => send(http.get(format!("{base}/v1/output-types/{key}")), &base).await?,
                OutputTypesCommand::Apply { file } => {
                    let body = read_json(&file)?;
                    let key = body["key"].as_str().context("the file needs a `key`")?.to_string();
                    let exists = http.get(format!("{base}/v1/output-types/{key}")).send().await.is_ok_and(|r| r.status().is_success());
                    if exists {
                        send(http.put(format!("{base}/v1/output-types/{key}")).json(&body), &base).await?
                    } else {
                        send(http.post(format!("{base}/v1/output-types")).json(&body), &base).await?
                    }
                }
            };
            print_value(&v, cli.output);
            Ok(0)
        }
        Command::Nodes => {
            let v = send(http.get(format!("{base}/v1/nodes")), &base).await?;
            if cli.output == Output::Json {
                print_value(&v, cli.output);
            } else {
                println!("{:<22} {:<18} {:<10} {:<22} INPUTS → OUTPUTS", "TYPE", "MODULE", "ROLE", "FAMILIES");
                for t in v["node_types"].as_array().into_iter().flatten() {
                    let ports = |key: &str| {
                        t[key]
                            .as_array()
                            .into_iter()
                            .flatten()
                            .map(|p| format!("{}:{}", p["name"].as_str().unwrap_or("?"), p["kind"].as_str().unwrap_or("?")))
                            .collect::<Vec<_>>()
                            .join(", ")
                    };
                    let families: Vec<&str> = t["families"].as_array().into_iter().flatten().filter_map(Value::as_str).collect();
                    println!(
                        "{:<22} {:<18} {:<10} {:<22} {} → {}",
                        t["type_key"].as_str().unwrap_or("?"),
                        t["module_key"].as_str().unwrap_or("?"),
                        t["execution_role"].as_str().unwrap_or("?"),
                        families.join(","),
                        ports("inputs"),
                        ports("outputs")
                    );
                }
            }
            Ok(0)
        }
        Command::Requests { command } => {
            let v = match command {
                RequestsCommand::Submit { order_line, output_type, subject, idempotency_key, refresh, priority, tenant, wait, timeout } => {
                    let subject: Value = serde_json::from_str(&subject).context("--subject must be JSON")?;
                    let key = idempotency_key.unwrap_or_else(|| format!("{order_line}/{output_type}"));
                    let cache = if refresh { "refresh" } else { "use" };
                    let mut body = json!({"order_line_id": order_line, "subject": subject, "output_type": output_type, "cache": cache});
                    if let Some(p) = priority {
                        body["priority"] = json!(p);
                    }
                    if let Some(t) = tenant {
                        body["tenant"] = json!(t);
                    }
                    let v = send(http.post(format!("{base}/v1/render-requests")).header("Idempotency-Key", key).json(&body), &base).await?;
                    if !wait {
                        v
                    } else {
                        let id = v["id"].as_str().context("the coordinator answered without a request id")?.to_string();
                        let done = wait_for_request(&http, &base, &id, timeout).await?;
                        if cli.output == Output::Tree {
                            print_request(&done);
                        } else {
                            print_value(&done, cli.output);
                        }
                        return Ok(if done["status"] == "succeeded" { 0 } else { 1 });
                    }
                }
                RequestsCommand::Show { id } => {
                    let v = send(http.get(format!("{base}/v1/render-requests/{id}")), &base).await?;
                    if cli.output == Output::Tree {
                        print_request(&v);
                        return Ok(0);
                    }
                    v
                }
                RequestsCommand::List { output_type, submitter, hours, limit, after } => {
                    let filters = [("output_type", output_type), ("submitter", submitter)];
                    let url = list_url(&base, "/v1/render-requests", &filters, hours, limit, after)?;
                    let v = send(http.get(url), &base).await?;
                    if cli.output == Output::Tree {
                        println!(
                            "{:<36} {:<16} {:<20} {:<10} {:<11} {:>7}  {:<12} RECEIVED",
                            "REQUEST", "ORDER LINE", "OUTPUT TYPE", "STATUS", "PRIORITY", "NODES", "SUBMITTER"
                        );
                        for r in v["items"].as_array().into_iter().flatten() {
                            let at = r["received_at"].as_str().unwrap_or("?");
                            println!(
                                "{:<36} {:<16} {:<20} {:<10} {:<11} {:>7}  {:<12} {}",
                                r["id"].as_str().unwrap_or("?"),
                                r["order_line_id"].as_str().unwrap_or("?"),
                                r["output_type"].as_str().unwrap_or("?"),
                                r["status"].as_str().unwrap_or("?"),
                                r["priority"].as_str().unwrap_or("?"),
                                format!("{}/{}", r["nodes_done"], r["nodes_total"]),
                                r["submitter"].as_str().unwrap_or("?"),
                                at.get(..19).unwrap_or(at)
                            );
                        }
                        if let Some(next) = v["next"].as_str() {
                            eprintln!("more: renderctl requests list --after '{next}' (with the same filters)");
                        }
                        return Ok(0);
                    }
                    v
                }
                RequestsCommand::SubmitBatch { file } => return submit_batch(&http, &base, &file, cli.output).await,
                RequestsCommand::Cancel { id, reason } => {
                    let body = json!({"reason": reason});
                    let v = send(http.post(format!("{base}/v1/render-requests/{id}/cancel")).json(&body), &base).await?;
                    if cli.output == Output::Tree {
                        println!("request {id} cancelled: {} run(s) stopped", v["runs"].as_array().map_or(0, Vec::len));
                        return Ok(0);
                    }
                    v
                }
            };
            print_value(&v, cli.output);
            Ok(0)
        }
        Command::Artifacts { command: ArtifactsCommand::Get { sha256, file } } => download(&http, &base, &sha256, file).await,
        Command::Workers { command } => match command {
            WorkersCommand::List => {
                let v = send(http.get(format!("{base}/v1/workers")), &base).await?;
                if cli.output == Output::Json {
                    print_value(&v, cli.output);
                    return Ok(0);
                }
                println!("{:<24} {:<10} {:>5}  MODULES", "WORKER", "STATUS", "SLOTS");
                for w in v.as_array().into_iter().flatten() {
                    let modules: Vec<&str> = w["modules"].as_array().into_iter().flatten().filter_map(Value::as_str).collect();
                    println!(
                        "{:<24} {:<10} {:>5}  {}",
                        w["id"].as_str().unwrap_or("?"),
                        w["status"].as_str().unwrap_or("?"),
                        format!("{}/{}", w["running"], w["concurrency"]),
                        modules.join(",")
                    );
                    for q in w["quarantined"].as_array().into_iter().flatten() {
                        println!(
                            "  quarantined {} after {} failures in a row, until {}: {}",
                            q["module"].as_str().unwrap_or("?"),
                            q["failures"],
                            q["until"].as_str().unwrap_or("?"),
                            q["last_error"].as_str().unwrap_or("")
                        );
                    }
                }
                Ok(0)
            }
            WorkersCommand::Release { id, module } => {
                let v = send(http.post(format!("{base}/v1/workers/{id}/release")).json(&json!({"module": module})), &base).await?;
                if cli.output == Output::Json {
                    print_value(&v, cli.output);
                } else {
                    let released: Vec<&str> = v["released"].as_array().into_iter().flatten().filter_map(Value::as_str).collect();
                    println!("worker {id} takes {} again", released.join(", "));
                }
                Ok(0)
            }
        },
        Command::Rollout { command } => {
            let v = match command {
                RolloutCommand::Status { output_type } => {
                    let v = send(http.get(format!("{base}/v1/output-types/{output_type}/gate")), &base).await?;
                    if cli.output == Output::Tree {
                        let g = &v["gate"];
                        println!(
                            "{output_type}: mode {}, gate {}",
                            v["rollout_mode"].as_str().unwrap_or("?"),
                            g["status"].as_str().unwrap_or("?")
                        );
                        println!(
                            "  samples {}/{}  mismatch {:.2}% (noise {:.2}%, net {:.2}%)  graph errors {:.2}% vs legacy {:.2}%  p95 duration ratio {}",
                            g["samples"],
                            g["min_samples"],
                            g["mismatch_rate"].as_f64().unwrap_or(0.0) * 100.0,
                            g["noise_rate"].as_f64().unwrap_or(0.0) * 100.0,
                            g["net_mismatch_rate"].as_f64().unwrap_or(0.0) * 100.0,
                            g["candidate_error_rate"].as_f64().unwrap_or(0.0) * 100.0,
                            g["control_error_rate"].as_f64().unwrap_or(0.0) * 100.0,
                            g["duration_ratio"].as_f64().map(|r| format!("{r:.2}×")).unwrap_or_else(|| "-".into()),
                        );
                        for r in g["reasons"].as_array().into_iter().flatten() {
                            println!("  - {}", r.as_str().unwrap_or(""));
                        }
                        return Ok(0);
                    }
                    v
                }
                RolloutCommand::Promote { output_type, force, reason } => {
                    let body = json!({"force": force, "reason": reason});
                    send(http.post(format!("{base}/v1/output-types/{output_type}/promote")).json(&body), &base).await?
                }
                RolloutCommand::Rollback { output_type, reason } => {
                    send(http.post(format!("{base}/v1/output-types/{output_type}/rollback")).json(&json!({"reason": reason})), &base)
                        .await?
                }
                RolloutCommand::Events { output_type } => {
                    send(http.get(format!("{base}/v1/output-types/{output_type}/rollout-events")), &base).await?
                }
            };
            print_value(&v, cli.output);
            Ok(0)
        }
        Command::Comparisons { command } => {
            let v = match command {
                ComparisonsCommand::List { output_type, verdict, limit } => {
                    // Output type keys and verdicts are URL-safe by construction (a-z, 0-9, `_.-`).
                    let mut q = format!("limit={limit}");
                    q.extend(output_type.map(|o| format!("&output_type={o}")));
                    q.extend(verdict.map(|v| format!("&verdict={v}")));
                    let v = send(http.get(format!("{base}/v1/comparisons?{q}")), &base).await?;
                    if cli.output == Output::Tree {
                        println!("{:<38} {:<20} {:<7} {:<16} {:>10} {:>8}", "ID", "OUTPUT TYPE", "KIND", "VERDICT", "FAIL %", "PSNR");
                        for c in v["items"].as_array().into_iter().flatten() {
                            let m = if c["metrics"]["worst"].is_object() { &c["metrics"]["worst"] } else { &c["metrics"] };
                            println!(
                                "{:<38} {:<20} {:<7} {:<16} {:>10} {:>8}",
                                c["id"].as_str().unwrap_or("?"),
                                c["output_type"].as_str().unwrap_or("?"),
                                c["kind"].as_str().unwrap_or("?"),
                                c["verdict"].as_str().unwrap_or(c["status"].as_str().unwrap_or("?")),
                                m["fail_share"].as_f64().map(|f| format!("{:.3}", f * 100.0)).unwrap_or_else(|| "-".into()),
                                m["psnr_db"].as_f64().map(|p| format!("{p:.1}")).unwrap_or_else(|| "-".into()),
                            );
                        }
                        return Ok(0);
                    }
                    v
                }
                ComparisonsCommand::Show { id } => {
                    let v = send(http.get(format!("{base}/v1/comparisons/{id}")), &base).await?;
                    if cli.output == Output::Tree {
                        println!(
                            "comparison {id}: {} ({})",
                            v["verdict"].as_str().unwrap_or(v["status"].as_str().unwrap_or("?")),
                            v["kind"].as_str().unwrap_or("?")
                        );
                        println!(
                            "  legacy run {}  graph run {}",
                            v["control_run"].as_str().unwrap_or("?"),
                            v["candidate_run"].as_str().unwrap_or("?")
                        );
                        if let Some(d) = v["diff_sha256"].as_str() {
                            println!("  diff image: <artifacts_dir>/sha256/{}/{d}", &d[..2.min(d.len())]);
                        }
                        println!("  metrics: {}", serde_json::to_string_pretty(&v["metrics"]).unwrap_or_default());
                        return Ok(0);
                    }
                    v
                }
            };
            print_value(&v, cli.output);
            Ok(0)
        }
        Command::Materials { command } => {
            let v = match command {
                MaterialsCommand::List => send(http.get(format!("{base}/v1/materials")), &base).await?,
                MaterialsCommand::Apply { file } => {
                    let body = read_json(&file)?;
                    let all = body.as_object().context("the file must be an object of materials by name")?;
                    let mut saved = Vec::new();
                    for (name, material) in all {
                        saved.push(send(http.put(format!("{base}/v1/materials/{name}")).json(material), &base).await?);
                    }
                    json!({ "saved": saved })
                }
            };
            print_value(&v, cli.output);
            Ok(0)
        }
        Command::Products { command } => {
            let v = match command {
                ProductsCommand::Map { product } => send(http.get(format!("{base}/v1/products/{product}/material-map")), &base).await?,
                ProductsCommand::MapSet { product, file } => {
                    let body = json!({ "assignments": read_json(&file)? });
                    send(http.put(format!("{base}/v1/products/{product}/material-map")).json(&body), &base).await?
                }
                ProductsCommand::MapRepair { product, material, dry_run } => {
                    let url = format!("{base}/v1/products/{product}/material-map/repair?dry_run={dry_run}");
                    send(http.post(url).json(&json!({ "material": material })), &base).await?
                }
            };
            print_value(&v, cli.output);
            Ok(0)
        }
        Command::Token { command: TokenCommand::New { name, scopes } } => {
            let mut bytes = [0u8; 24];
            getrandom::fill(&mut bytes).map_err(|e| anyhow::anyhow!("no randomness from the OS: {e}"))?;
            let secret = format!("rf_{}", hex::encode(bytes));
            let entry = format!("{name}:{scopes}:{}", renderfleet_coordinator::api::auth::hash_secret(&secret));
            // Checked with the coordinator's own parser, so a typo in a scope fails here.
            renderfleet_coordinator::api::auth::Tokens::from_config(std::slice::from_ref(&entry), false)?;
            println!("secret (give it to the client; it is not stored anywhere): {secret}");
            println!("configuration entry ([auth] tokens, or RENDERFLEET_AUTH__TOKENS): {entry}");
            Ok(0)
        }
    }
}

fn read_json(path: &std::path::Path) -> anyhow::Result<Value> {
    let text = std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    serde_json::from_str(&text).with_context(|| format!("{} is not JSON", path.display()))
}

/// The graph in a file: a graph (`{"nodes": …}`), or a whole run request (`{"subject": …,
/// "graph": …}`, as `renderctl submit` takes), whose graph is used.
fn read_graph(path: &std::path::Path) -> anyhow::Result<Value> {
    let doc = read_json(path)?;
    if doc.get("nodes").is_none() {
        if let Some(graph) = doc.get("graph").filter(|g| g.is_object()) {
            return Ok(graph.clone());
        }
    }
    Ok(doc)
}

/// An answer in the chosen format: JSON as the API sent it, or (the default) as an indented
/// tree of `key: value` lines, lists of plain values on one line.
fn print_value(v: &Value, output: Output) {
    match output {
        Output::Json => println!("{}", serde_json::to_string_pretty(v).unwrap_or_default()),
        Output::Tree => {
            let mut out = String::new();
            tree(v, 0, &mut out);
            print!("{out}");
        }
    }
}

fn scalar(v: &Value) -> Option<String> {
    match v {
        Value::Null => Some("-".into()),
        Value::String(s) => Some(s.clone()),
        Value::Bool(_) | Value::Number(_) => Some(v.to_string()),
        Value::Array(a) if a.is_empty() => Some("(none)".into()),
        Value::Object(o) if o.is_empty() => Some("(none)".into()),
        Value::Array(a) if a.iter().all(|x| !x.is_object() && !x.is_array()) => {
            Some(a.iter().filter_map(scalar).collect::<Vec<_>>().join(", "))
        }
        _ => None,
    }
}

fn tree(v: &Value, depth: usize, out: &mut String) {
    use std::fmt::Write as _;
    let pad = "  ".repeat(depth);
    match v {
        Value::Object(o) => {
            for (k, x) in o {
                match scalar(x) {
                    Some(s) => {
                        let _ = writeln!(out, "{pad}{k}: {s}");
                    }
                    None => {
                        let _ = writeln!(out, "{pad}{k}:");
                        tree(x, depth + 1, out);
                    }
                }
            }
        }
        Value::Array(a) => {
            for x in a {
                match scalar(x) {
                    Some(s) => {
                        let _ = writeln!(out, "{pad}- {s}");
                    }
                    None => {
                        let _ = writeln!(out, "{pad}-");
                        tree(x, depth + 1, out);
                    }
                }
            }
        }
        other => {
            let _ = writeln!(out, "{pad}{}", scalar(other).unwrap_or_default());
        }
    }
}

/// A list endpoint's URL with the filters given, an age in hours, a page size and a cursor.
fn list_url(
    base: &str,
    path: &str,
    filters: &[(&str, Option<String>)],
    hours: Option<f64>,
    limit: u32,
    after: Option<String>,
) -> anyhow::Result<reqwest::Url> {
    let mut query: Vec<(&str, String)> = vec![("limit", limit.to_string())];
    query.extend(filters.iter().filter_map(|(k, v)| v.clone().map(|v| (*k, v))));
    query.extend(hours.map(|h| ("hours", h.to_string())));
    query.extend(after.map(|a| ("after", a)));
    reqwest::Url::parse_with_params(&format!("{base}{path}"), &query).context("--coordinator is not a URL")
}

/// A render request in the default format: where it stands, and what it delivered.
fn print_request(v: &Value) {
    println!(
        "request {} ({} for {}): {}",
        v["id"].as_str().unwrap_or("?"),
        v["output_type"].as_str().unwrap_or("?"),
        v["order_line_id"].as_str().unwrap_or("?"),
        v["status"].as_str().unwrap_or("?")
    );
    println!("  priority {}, submitter {}", v["priority"].as_str().unwrap_or("?"), v["submitter"].as_str().unwrap_or("?"));
    if let Some(p) = v["progress"].as_object() {
        println!("  progress {}/{} nodes", p["nodes_done"], p["nodes_total"]);
    }
    if let Some(e) = v["estimate"].as_object() {
        println!(
            "  estimated finish {} (median of the last {} runs: {} s)",
            e["finish_at"].as_str().unwrap_or("?"),
            e["from_runs"],
            e["p50_seconds"]
        );
    }
    if let Some(run) = v["run"].as_object() {
        println!("  run {} ({} pipeline)", run["run_id"].as_str().unwrap_or("?"), run["pipeline"].as_str().unwrap_or("?"));
        if let Some(error) = run["error"].as_object() {
            println!("  error: {}", error.get("message").and_then(Value::as_str).unwrap_or("?"));
        }
    }
    if let Some(a) = v["artifact"].as_object() {
        println!(
            "  artifact {} {} ({} bytes)",
            a.get("kind").and_then(Value::as_str).unwrap_or("?"),
            a.get("sha256").and_then(Value::as_str).unwrap_or("?"),
            a.get("bytes").unwrap_or(&Value::Null)
        );
    }
}

/// `artifacts get`: streams the artifact to `file` (or the coordinator's file name), hashing
/// as it goes; a download whose bytes do not match the hash is removed and refused.
async fn download(http: &reqwest::Client, base: &str, sha256: &str, file: Option<PathBuf>) -> anyhow::Result<i32> {
    use sha2::{Digest, Sha256};
    let resp = http.get(format!("{base}/v1/artifacts/{sha256}")).send().await.with_context(|| {
        format!("cannot reach the coordinator at {base}; is it running? (set --coordinator or RENDERFLEET_COORDINATOR_URL)")
    })?;
    if !resp.status().is_success() {
        let status = resp.status().as_u16();
        let body: Value = resp.json().await.unwrap_or(Value::Null);
        bail!("{status} {}", body["message"].as_str().unwrap_or("(no message)"));
    }
    let named = resp
        .headers()
        .get(reqwest::header::CONTENT_DISPOSITION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split("filename=\"").nth(1))
        .and_then(|v| v.split('"').next())
        .map(String::from)
        .unwrap_or_else(|| format!("{}.png", &sha256[..16.min(sha256.len())]));
    let to_stdout = file.as_deref() == Some(std::path::Path::new("-"));
    let path = file.unwrap_or_else(|| PathBuf::from(named));
    let partial = path.with_extension("part");
    let mut out: Box<dyn Write> = if to_stdout {
        Box::new(std::io::stdout().lock())
    } else {
        Box::new(std::fs::File::create(&partial).with_context(|| format!("cannot write {}", partial.display()))?)
    };
    let (mut hasher, mut bytes) = (Sha256::new(), 0u64);
    let mut resp = resp;
    while let Some(chunk) = resp.chunk().await.context("the download broke off; run the command again")? {
        hasher.update(&chunk);
        bytes += chunk.len() as u64;
        out.write_all(&chunk)?;
    }
    out.flush()?;
    drop(out);
    let got = hex::encode(hasher.finalize());
    if got != sha256 {
        let _ = std::fs::remove_file(&partial);
        bail!("the download's SHA-256 is {got}, not {sha256}: the store holds a damaged copy; nothing was kept");
    }
    if !to_stdout {
        std::fs::rename(&partial, &path).with_context(|| format!("cannot write {}", path.display()))?;
        eprintln!("{} ({bytes} bytes, SHA-256 checked)", path.display());
    }
    Ok(0)
}

/// Most lines per batch call (the coordinator's limit).
const BATCH_LINES: usize = 1000;

/// `requests submit-batch FILE.jsonl`: lines that are not JSON are reported and not sent.
async fn submit_batch(http: &reqwest::Client, base: &str, file: &std::path::Path, output: Output) -> anyhow::Result<i32> {
    let text = std::fs::read_to_string(file).with_context(|| format!("cannot read {}", file.display()))?;
    let mut lines: Vec<(usize, Value)> = Vec::new();
    let mut failed = 0usize;
    for (i, line) in text.lines().enumerate().filter(|(_, l)| !l.trim().is_empty()) {
        match serde_json::from_str::<Value>(line) {
            Ok(v) => lines.push((i + 1, v)),
            Err(e) => {
                failed += 1;
                println!("{}:{}: not JSON ({e}); not sent", file.display(), i + 1);
            }
        }
    }
    let (mut created, mut existing) = (0u64, 0u64);
    for chunk in lines.chunks(BATCH_LINES) {
        let body = json!({"requests": chunk.iter().map(|(_, v)| v).collect::<Vec<_>>()});
        let v = send(http.post(format!("{base}/v1/render-requests/batch")).json(&body), base).await?;
        created += v["created"].as_u64().unwrap_or(0);
        existing += v["existing"].as_u64().unwrap_or(0);
        for (r, (line, _)) in v["results"].as_array().into_iter().flatten().zip(chunk) {
            let status = r["status"].as_u64().unwrap_or(0);
            if status >= 400 {
                failed += 1;
            }
            match output {
                Output::Json => println!("{}", json!({"file_line": line, "result": r})),
                Output::Tree if status >= 400 => println!(
                    "{}:{line}: {status} {}: {}",
                    file.display(),
                    r["error"]["error"].as_str().unwrap_or("?"),
                    r["error"]["message"].as_str().unwrap_or("")
                ),
                Output::Tree => println!(
                    "{}:{line}: {} {}",
                    file.display(),
                    if status == 201 { "created" } else { "seen before" },
                    r["request"]["id"].as_str().unwrap_or("?")
                ),
            }
        }
    }
    eprintln!("{created} created, {existing} seen before, {failed} refused");
    Ok(if failed > 0 { 1 } else { 0 })
}

fn print_problems(v: &Value) {
    for p in v["problems"].as_array().into_iter().flatten() {
        println!(
            "  - {} [{}] {}",
            p["severity"].as_str().unwrap_or("error"),
            p["code"].as_str().unwrap_or("?"),
            p["message"].as_str().unwrap_or("")
        );
    }
}

async fn workflows(http: &reqwest::Client, base: &str, command: WorkflowsCommand, output: Output) -> anyhow::Result<i32> {
    let json_out = output == Output::Json;
    match command {
        WorkflowsCommand::Validate { graph } => {
            let v = send(http.post(format!("{base}/v1/workflows/validate")).json(&read_graph(&graph)?), base).await?;
            if json_out {
                print_value(&v, output);
            } else {
                println!("{}: {}", graph.display(), if v["valid"] == true { "valid" } else { "INVALID" });
                print_problems(&v);
            }
            Ok(if v["valid"] == true { 0 } else { 1 })
        }
        WorkflowsCommand::Create { graph, name, family } => {
            let g = read_graph(&graph)?;
            let family = family
                .or_else(|| g["family"].as_str().map(String::from))
                .context("give --family (cad_file or order_line), or set `family` in the graph")?;
            let v =
                send(http.post(format!("{base}/v1/workflows")).json(&json!({"name": name, "family": family, "graph": g})), base).await?;
            if json_out {
                print_value(&v, output);
            } else {
                println!(
                    "workflow {} version {} created{}",
                    v["id"].as_str().unwrap_or("?"),
                    v["version"],
                    if v["mixed_family"] == true { " (MIXED FAMILY: repair it before use)" } else { "" }
                );
                print_problems(&v);
            }
            Ok(0)
        }
        WorkflowsCommand::Edit { id, graph, name } => {
            let current = send(http.get(format!("{base}/v1/workflows/{id}")), base).await?;
            let name = name.unwrap_or_else(|| current["name"].as_str().unwrap_or("").to_string());
            let body = json!({"name": name, "family": current["family"], "graph": read_graph(&graph)?});
            let v = send(http.put(format!("{base}/v1/workflows/{id}")).json(&body), base).await?;
            if json_out {
                print_value(&v, output);
            } else {
                println!("workflow {id} version {} stored", v["version"]);
                print_problems(&v);
            }
            Ok(0)
        }
        WorkflowsCommand::List => {
            let v = send(http.get(format!("{base}/v1/workflows")), base).await?;
            if json_out {
                print_value(&v, output);
            } else {
                println!("{:<38} {:>7} {:<11} {:<6} NAME", "ID", "VERSION", "FAMILY", "MIXED");
                for w in v["items"].as_array().into_iter().flatten() {
                    println!(
                        "{:<38} {:>7} {:<11} {:<6} {}",
                        w["id"].as_str().unwrap_or("?"),
                        w["version"],
                        w["family"].as_str().unwrap_or("?"),
                        if w["mixed_family"] == true { "yes" } else { "no" },
                        w["name"].as_str().unwrap_or("")
                    );
                }
            }
            Ok(0)
        }
        WorkflowsCommand::Show { id, version } => {
            let q = version.map(|v| format!("?version={v}")).unwrap_or_default();
            print_value(&send(http.get(format!("{base}/v1/workflows/{id}{q}")), base).await?, output);
            Ok(0)
        }
        WorkflowsCommand::Starter { family } => {
            print_value(&send(http.get(format!("{base}/v1/workflows/starters/{family}")), base).await?, output);
            Ok(0)
        }
        WorkflowsCommand::Repair { id, all, dry_run } => {
            let ids: Vec<String> = match (id, all) {
                (Some(id), _) => vec![id],
                (None, true) => send(http.get(format!("{base}/v1/workflows")), base).await?["items"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(|w| w["id"].as_str().map(String::from))
                    .collect(),
                (None, false) => bail!("name a workflow id, or --all"),
            };
            let mut reports = Vec::new();
            let (mut changed, mut mixed) = (0, 0);
            for id in &ids {
                let r = send(http.post(format!("{base}/v1/workflows/{id}/repair?dry_run={dry_run}")), base).await?;
                changed += usize::from(r["changed"] == true);
                mixed += usize::from(r["mixed_family"] == true);
                if !json_out {
                    let what = match (r["changed"] == true, dry_run) {
                        (false, _) => "already canonical".to_string(),
                        (true, true) => "would change (dry run)".to_string(),
                        (true, false) => format!("repaired: version {} → {}", r["from_version"], r["version"]),
                    };
                    println!("{id}: {what}{}", if r["mixed_family"] == true { "; MIXED FAMILY: split it by hand" } else { "" });
                    for c in r["changes"].as_array().into_iter().flatten() {
                        println!("  - {}", c.as_str().unwrap_or(""));
                    }
                }
                reports.push(r);
            }
            if json_out {
                print_value(&json!({"workflows": reports}), output);
            } else {
                println!("{} workflow(s): {changed} {}, {mixed} mixed-family", ids.len(), if dry_run { "would change" } else { "changed" });
            }
            Ok(0)
        }
        WorkflowsCommand::Preflight { id, output_type, subject } => {
            let subject: Value = serde_json::from_str(&subject).context("--subject must be JSON")?;
            let body = json!({"subject": subject, "output_type": output_type});
            let v = send(http.post(format!("{base}/v1/workflows/{id}/preflight")).json(&body), base).await?;
            if json_out {
                print_value(&v, output);
            } else {
                println!("preflight of workflow {id}: {}", if v["ok"] == true { "OK" } else { "NOT READY" });
                for n in v["nodes"].as_array().into_iter().flatten() {
                    let module = n["module"].as_str().unwrap_or("?");
                    let workers = v["modules"][module]["workers"].as_array().map(Vec::len).unwrap_or(0);
                    println!(
                        "  {:<20} {:<20} {:<18} {} live worker(s)",
                        n["id"].as_str().unwrap_or("?"),
                        n["type"].as_str().unwrap_or("?"),
                        module,
                        workers
                    );
                }
                print_problems(&v);
            }
            Ok(if v["ok"] == true { 0 } else { 1 })
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
    if status == reqwest::StatusCode::UNAUTHORIZED {
        // The coordinator's hint names HTTP headers; here the fix is a flag.
        msg = format!(
            "401 the coordinator wants a token: give one with --token or RENDERFLEET_TOKEN (an operator makes one with `renderctl token new NAME SCOPES`); it said: {}",
            body["message"].as_str().unwrap_or("(no message)")
        );
    }
    for p in body["problems"].as_array().into_iter().flatten() {
        msg.push_str(&format!("\n  - [{}] {}", p["code"].as_str().unwrap_or("?"), p["message"].as_str().unwrap_or("")));
    }
    bail!(msg)
}

/// Polls render request `id` until its answering run has ended, showing its progress.
async fn wait_for_request(http: &reqwest::Client, base: &str, id: &str, timeout: Duration) -> anyhow::Result<Value> {
    let deadline = Instant::now() + timeout;
    let mut last = String::new();
    loop {
        let v = send(http.get(format!("{base}/v1/render-requests/{id}")), base).await?;
        let status = v["status"].as_str().unwrap_or("?").to_string();
        let progress = format!("{status}: {}/{} nodes done", v["progress"]["nodes_done"], v["progress"]["nodes_total"]);
        if progress != last {
            eprint!("\r{progress}   ");
            let _ = std::io::stderr().flush();
            last = progress;
        }
        if status != "running" {
            eprintln!();
            return Ok(v);
        }
        if Instant::now() > deadline {
            eprintln!();
            bail!("gave up waiting after {}; the request goes on (`renderctl requests show {id}`)", humantime::format_duration(timeout));
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
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
    if run["cache"] == "refresh" {
        println!("  cache: refresh (every node rendered anew)");
    }
    if let (Some(p), Some(who)) = (run["priority"].as_str(), run["submitter"].as_str()) {
        println!("  priority: {p}  submitter: {who}");
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
            // A node that never started has made no attempt yet.
            if n["started_at"].is_null() && n["status"] != "running" {
                "-".to_string()
            } else {
                format!("{}/{}", n["attempt"], n["max_attempts"])
            },
            n["worker_id"].as_str().unwrap_or("-"),
            waited,
            ran
        );
        if let Some(from) = n["cached"].as_object() {
            let source = from["from_run"].as_str().map(|r| format!("run {r}")).unwrap_or_else(|| "a run no longer kept".into());
            println!("  {}   cached: outputs from {source}, no worker ran it", "  ".repeat(d));
        }
        let listed =
            |k: &str| n["outputs"][k].as_array().map(|a| a.iter().filter_map(Value::as_str).collect::<Vec<_>>()).unwrap_or_default();
        let unmatched = listed("unmatched_targets");
        if !unmatched.is_empty() {
            println!("  {}   map targets that match no part: {}", "  ".repeat(d), unmatched.join(", "));
        }
        let missing = [listed("missing"), listed("missing_materials")].concat();
        if !missing.is_empty() {
            println!("  {}   {} part(s) on the default material", "  ".repeat(d), missing.len());
        }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_print_as_a_tree_by_default() {
        let v = json!({"key": "still", "tags": ["a", "b"], "gate": {"status": "pass", "problems": []}, "items": [{"id": 1}], "none": null});
        let mut out = String::new();
        tree(&v, 0, &mut out);
        // Keys in the order the JSON map keeps them (sorted).
        assert_eq!(out, "gate:\n  problems: (none)\n  status: pass\nitems:\n  -\n    id: 1\nkey: still\nnone: -\ntags: a, b\n");
    }
}

//! `bench`: the orchestration benchmark. Runs renderfleet's workloads on the real binaries
//! (release build), the broker and the database alone as limits, and Celery on the same
//! RabbitMQ and PostgreSQL as the peer, all in one run, and prints one table (and JSON).
//! Every figure is a median over `--repeats`.
//!
//!   cargo build --release --bins && target/release/bench            # the full run
//!   target/release/bench --quick                                     # seconds: CI's smoke run
//!   target/release/bench --render                                    # the render benchmark
//!   target/release/bench --orders                                    # priorities and fair share

mod limits;
mod orders;
mod peer;
mod render;
mod system;

use clap::Parser;
use serde_json::{json, Value};
use std::path::PathBuf;

#[derive(Parser, Clone)]
#[command(about = "renderfleet orchestration benchmark")]
pub(crate) struct Args {
    /// Tiny sizes and one repeat: checks that every row is produced, in seconds.
    #[arg(long)]
    quick: bool,
    /// Repeats per figure (the median is reported).
    #[arg(long, default_value_t = 3)]
    repeats: usize,
    /// Skip the Celery peer.
    #[arg(long)]
    no_celery: bool,
    /// Where to write the JSON report.
    #[arg(long, default_value = "target/bench/report.json")]
    out: PathBuf,
    /// The render benchmark instead (real Blender, cascadio and ffmpeg on the CAD fixtures):
    /// warm against fresh Blender, the node result cache, turntables across workers.
    #[arg(long)]
    render: bool,
    /// The order system's benchmark instead: how long a rush run waits behind a bulk backlog,
    /// and a second submitter behind the first one's backlog.
    #[arg(long)]
    orders: bool,
    /// Run the orchestration workloads with the scheduler off (every ready task published at
    /// once, first in first out), to compare with its default.
    #[arg(long)]
    no_scheduling: bool,
}

/// Sizes of every workload.
#[derive(Clone, Copy)]
pub(crate) struct Sizes {
    pub independent_runs: usize,
    pub wide: usize,
    pub chain: usize,
    pub scaling: &'static [usize],
    pub worker_counts: &'static [usize],
    pub limit_iterations: usize,
    pub repeats: usize,
}

impl Sizes {
    fn of(args: &Args) -> Sizes {
        if args.quick {
            Sizes {
                independent_runs: 200,
                wide: 50,
                chain: 10,
                scaling: &[10, 100],
                worker_counts: &[1, 2],
                limit_iterations: 200,
                repeats: 1,
            }
        } else {
            Sizes {
                independent_runs: 10_000,
                wide: 1_000,
                chain: 50,
                scaling: &[10, 100, 1_000, 10_000],
                worker_counts: &[1, 2, 4, 8],
                limit_iterations: 3_000,
                repeats: args.repeats.max(1),
            }
        }
    }
}

/// Median of a list (NaN when empty).
pub(crate) fn median(mut xs: Vec<f64>) -> f64 {
    if xs.is_empty() {
        return f64::NAN;
    }
    xs.sort_by(|a, b| a.total_cmp(b));
    let n = xs.len();
    if n % 2 == 1 {
        xs[n / 2]
    } else {
        (xs[n / 2 - 1] + xs[n / 2]) / 2.0
    }
}

/// The `q` quantile (0..=1) of a list, nearest rank.
pub(crate) fn quantile(mut xs: Vec<f64>, q: f64) -> f64 {
    if xs.is_empty() {
        return f64::NAN;
    }
    xs.sort_by(|a, b| a.total_cmp(b));
    let i = ((q * xs.len() as f64).ceil() as usize).clamp(1, xs.len()) - 1;
    xs[i]
}

/// One line of the table.
#[derive(Clone, Debug, serde::Serialize)]
pub(crate) struct Row {
    pub group: &'static str,
    pub name: String,
    pub value: f64,
    pub unit: &'static str,
    /// Ratio to the peer's figure of the same workload (ours / theirs, or theirs / ours
    /// for latencies, so > 1 always means we are better).
    pub vs_celery: Option<f64>,
    /// Ratio to the matching limit (ours / limit for rates, limit / ours for latencies:
    /// the share of the limit we reach).
    pub vs_limit: Option<f64>,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let sizes = Sizes::of(&args);
    let started = chrono::Utc::now();
    if args.render {
        let rows = render::measure(render::RenderSizes::of(args.quick, args.repeats)).await?;
        render::print(&rows);
        let report = json!({"date": started.to_rfc3339(), "machine": machine(), "quick": args.quick, "render": rows});
        if let Some(dir) = args.out.parent() {
            std::fs::create_dir_all(dir)?;
        }
        std::fs::write(&args.out, serde_json::to_string_pretty(&report)?)?;
        eprintln!("bench: wrote {}", args.out.display());
        let bad = render::bad(&rows);
        anyhow::ensure!(bad.is_empty(), "rows without a real figure: {}", bad.join("; "));
        return Ok(());
    }
    if args.orders {
        let rows = orders::measure(orders::OrderSizes::of(args.quick)).await?;
        orders::print(&rows);
        let report = json!({"date": started.to_rfc3339(), "machine": machine(), "quick": args.quick, "orders": rows});
        if let Some(dir) = args.out.parent() {
            std::fs::create_dir_all(dir)?;
        }
        std::fs::write(&args.out, serde_json::to_string_pretty(&report)?)?;
        eprintln!("bench: wrote {}", args.out.display());
        let bad = orders::bad(&rows);
        anyhow::ensure!(bad.is_empty(), "rows without a real figure: {}", bad.join("; "));
        return Ok(());
    }
    eprintln!("bench: limits");
    let limits = limits::measure(sizes).await?;
    eprintln!("bench: renderfleet");
    let ours = system::measure(sizes, args.no_scheduling).await?;
    let celery = if args.no_celery {
        None
    } else {
        eprintln!("bench: celery");
        match peer::measure(sizes).await {
            Ok(c) => Some(c),
            Err(e) => {
                eprintln!("bench: the Celery peer failed: {e:#}");
                None
            }
        }
    };
    let rows = table(&limits, &ours, celery.as_ref());
    print_table(&rows);
    // The smoke run (CI) asserts that every row was produced with a real figure.
    let bad = bad_figures(&rows);
    let peer_missing = !args.no_celery && celery.is_none();
    let report = json!({
        "date": started.to_rfc3339(),
        "machine": machine(),
        "quick": args.quick,
        "repeats": sizes.repeats,
        "rows": rows,
        "limits": limits,
        "renderfleet": ours,
        "celery": celery,
    });
    if let Some(dir) = args.out.parent() {
        std::fs::create_dir_all(dir)?;
    }
    std::fs::write(&args.out, serde_json::to_string_pretty(&report)?)?;
    eprintln!("bench: wrote {}", args.out.display());
    anyhow::ensure!(bad.is_empty(), "rows without a positive, finite figure: {}", bad.join("; "));
    anyhow::ensure!(!peer_missing, "the Celery peer produced no rows (see above); run with --no-celery to skip it");
    Ok(())
}

/// The rows whose figure is not a positive finite number, each named with what it has:
/// every figure is a rate, a latency, a cost or a size, so zero, a negative number or NaN
/// (nothing measured) means the measurement failed. Ratios, where given, must be too.
fn bad_figures(rows: &[Row]) -> Vec<String> {
    let real = |v: f64| v.is_finite() && v > 0.0;
    let mut bad = Vec::new();
    for r in rows {
        if !real(r.value) {
            bad.push(format!("{} / {}: {} {}", r.group, r.name, r.value, r.unit));
        }
        for (what, ratio) in [("vs Celery", r.vs_celery), ("vs limit", r.vs_limit)] {
            if let Some(x) = ratio.filter(|x| !real(*x)) {
                bad.push(format!("{} / {}: {what} {x}", r.group, r.name));
            }
        }
    }
    bad
}

fn machine() -> Value {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| s.lines().find(|l| l.starts_with("model name")).map(|l| l.split(':').nth(1).unwrap_or("").trim().to_string()))
        .unwrap_or_default();
    let mem_kb: u64 = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|s| s.lines().next().and_then(|l| l.split_whitespace().nth(1)).and_then(|v| v.parse().ok()))
        .unwrap_or(0);
    json!({
        "cores": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0),
        "cpu": cpu,
        "memory_gib": (mem_kb as f64 / 1024.0 / 1024.0).round(),
    })
}

fn table(limits: &limits::Limits, ours: &system::Ours, celery: Option<&peer::Celery>) -> Vec<Row> {
    let mut rows = Vec::new();
    let ratio = |a: Option<f64>, b: Option<f64>| match (a, b) {
        (Some(a), Some(b)) if b > 0.0 && a.is_finite() && b.is_finite() => Some(a / b),
        _ => None,
    };
    for (workers, rate) in &ours.independent {
        let peer = celery.and_then(|c| c.independent_per_s);
        rows.push(Row {
            group: "throughput",
            name: format!("{} independent noop runs, {workers} worker process(es) × 64 slots", ours.independent_runs),
            value: *rate,
            unit: "nodes/s",
            vs_celery: ratio(Some(*rate), peer),
            vs_limit: ratio(Some(*rate), Some(limits.broker_pipelined_per_s)),
        });
    }
    for (workers, rate) in &ours.wide {
        let peer = celery.and_then(|c| c.chord_per_s);
        rows.push(Row {
            group: "throughput",
            name: format!("wide graph 1 → {} → 1, {workers} worker process(es) × 64 slots", ours.wide_nodes),
            value: *rate,
            unit: "nodes/s",
            vs_celery: ratio(Some(*rate), peer),
            vs_limit: ratio(Some(*rate), Some(limits.broker_pipelined_per_s)),
        });
    }
    let peer_hop = celery.map(|c| (c.hop_p50_ms, c.hop_p99_ms));
    rows.push(Row {
        group: "latency",
        name: format!("hop p50, {}-node noop chain", ours.chain_nodes),
        value: ours.hop_p50_ms,
        unit: "ms",
        vs_celery: ratio(peer_hop.map(|p| p.0), Some(ours.hop_p50_ms)),
        vs_limit: ratio(Some(limits.hop_floor_p50_ms), Some(ours.hop_p50_ms)),
    });
    rows.push(Row {
        group: "latency",
        name: format!("hop p99, {}-node noop chain", ours.chain_nodes),
        value: ours.hop_p99_ms,
        unit: "ms",
        vs_celery: ratio(peer_hop.map(|p| p.1), Some(ours.hop_p99_ms)),
        vs_limit: ratio(Some(limits.hop_floor_p99_ms), Some(ours.hop_p99_ms)),
    });
    for (shape, nodes, per_node_ms) in &ours.scaling {
        rows.push(Row {
            group: "scaling",
            name: if shape == "chain" {
                format!("chain of {nodes} nodes: median hop (scheduling cost per node)")
            } else {
                format!("wide graph of {nodes} nodes: fan-out body time per parallel node")
            },
            value: *per_node_ms,
            unit: "ms/node",
            vs_celery: None,
            vs_limit: None,
        });
    }
    rows.push(Row {
        group: "memory",
        name: format!("coordinator peak RSS, {} independent runs", ours.independent_runs),
        value: ours.coordinator_peak_rss_mib,
        unit: "MiB",
        vs_celery: None,
        vs_limit: None,
    });
    rows.push(Row {
        group: "limit",
        name: "broker alone: publish+confirm → consume → ack, sequential p50".into(),
        value: limits.broker_p50_ms,
        unit: "ms",
        vs_celery: None,
        vs_limit: None,
    });
    rows.push(Row {
        group: "limit",
        name: "broker alone: publish+confirm → consume → ack, sequential p99".into(),
        value: limits.broker_p99_ms,
        unit: "ms",
        vs_celery: None,
        vs_limit: None,
    });
    rows.push(Row {
        group: "limit",
        name: "broker alone: pipelined persistent messages".into(),
        value: limits.broker_pipelined_per_s,
        unit: "msgs/s",
        vs_celery: None,
        vs_limit: None,
    });
    rows.push(Row {
        group: "limit",
        name: "database alone: one hop's transaction, p50".into(),
        value: limits.db_p50_ms,
        unit: "ms",
        vs_celery: None,
        vs_limit: None,
    });
    rows.push(Row {
        group: "limit",
        name: "database alone: one hop's transaction, p99".into(),
        value: limits.db_p99_ms,
        unit: "ms",
        vs_celery: None,
        vs_limit: None,
    });
    rows.push(Row {
        group: "limit",
        name: "database alone: the same transaction in 3 round trips (BEGIN; statements; COMMIT), p50".into(),
        value: limits.db_three_trips_p50_ms,
        unit: "ms",
        vs_celery: None,
        vs_limit: None,
    });
    rows.push(Row {
        group: "limit",
        name: "database alone: hop transactions, one connection".into(),
        value: limits.db_per_s,
        unit: "tx/s",
        vs_celery: None,
        vs_limit: None,
    });
    if let Some(c) = celery {
        for (name, v, unit) in [
            (format!("celery: {} independent noop tasks", c.independent_tasks), c.independent_per_s, "tasks/s"),
            (format!("celery: group of {} + chord callback", c.chord_size), c.chord_per_s, "tasks/s"),
            (format!("celery: hop p50, chain of {}", c.chain_len), Some(c.hop_p50_ms), "ms"),
            (format!("celery: hop p99, chain of {}", c.chain_len), Some(c.hop_p99_ms), "ms"),
        ] {
            rows.push(Row { group: "peer", name, value: v.unwrap_or(f64::NAN), unit, vs_celery: None, vs_limit: None });
        }
    }
    rows
}

fn print_table(rows: &[Row]) {
    let fmt = |v: f64| {
        if !v.is_finite() {
            "-".to_string()
        } else if v >= 100.0 {
            format!("{v:.0}")
        } else {
            format!("{v:.2}")
        }
    };
    let ratio = |r: Option<f64>| r.map(|r| format!("{r:.2}×")).unwrap_or_else(|| "".into());
    println!("| group | workload | value | unit | vs Celery | vs limit |");
    println!("| --- | --- | ---: | --- | ---: | ---: |");
    for r in rows {
        println!("| {} | {} | {} | {} | {} | {} |", r.group, r.name, fmt(r.value), r.unit, ratio(r.vs_celery), ratio(r.vs_limit));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(name: &str, value: f64) -> Row {
        Row { group: "g", name: name.into(), value, unit: "u", vs_celery: None, vs_limit: None }
    }

    #[test]
    fn only_positive_finite_figures_pass() {
        let good = [row("rate", 1234.5), row("tiny latency", 0.001), Row { vs_limit: Some(0.8), ..row("with ratio", 2.0) }];
        assert!(bad_figures(&good).is_empty());
        for v in [0.0, -1.0, f64::NAN, f64::INFINITY, -0.0] {
            let bad = bad_figures(&[row("ok", 1.0), row("coordinator peak RSS", v)]);
            assert_eq!(bad.len(), 1, "{v} passed");
            assert!(bad[0].contains("coordinator peak RSS"), "the row is named: {bad:?}");
        }
        let bad = bad_figures(&[Row { vs_celery: Some(0.0), ..row("hop p50", 3.0) }]);
        assert!(bad.len() == 1 && bad[0].contains("hop p50") && bad[0].contains("vs Celery"), "{bad:?}");
    }
}

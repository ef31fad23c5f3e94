//! Celery 5 on the same RabbitMQ and PostgreSQL, run from `ops/bench/celery_peer.py` in a
//! virtual environment this benchmark creates itself (`target/bench/celery-venv`).

use std::path::{Path, PathBuf};
use std::process::Command;
use uuid::Uuid;

use crate::Sizes;

/// Pinned so repeated runs compare the same peer.
const PACKAGES: &[&str] = &["celery==5.4.0", "sqlalchemy==2.0.36", "psycopg2-binary==2.9.10"];

#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub(crate) struct Celery {
    pub version: String,
    pub independent_tasks: usize,
    pub independent_per_s: Option<f64>,
    pub chain_len: usize,
    pub hop_p50_ms: f64,
    pub hop_p99_ms: f64,
    pub chord_size: usize,
    pub chord_per_s: Option<f64>,
}

fn venv() -> anyhow::Result<PathBuf> {
    let dir = PathBuf::from("target/bench/celery-venv");
    let python = dir.join("bin/python");
    if !python.exists() {
        eprintln!("bench: creating {} and installing {}", dir.display(), PACKAGES.join(" "));
        run(Command::new("python3").args(["-m", "venv"]).arg(&dir), "python3 -m venv (install python3-venv)")?;
    }
    let ok = Command::new(&python).args(["-c", "import celery, sqlalchemy, psycopg2"]).status()?.success();
    if !ok {
        run(Command::new(&python).args(["-m", "pip", "install", "-q"]).args(PACKAGES), "pip install")?;
    }
    Ok(python)
}

fn run(cmd: &mut Command, what: &str) -> anyhow::Result<()> {
    let status = cmd.status()?;
    anyhow::ensure!(status.success(), "{what} failed: {status}");
    Ok(())
}

pub(crate) async fn measure(sizes: Sizes) -> anyhow::Result<Celery> {
    let python = venv()?;
    let admin = renderfleet_tests::admin_url();
    let base = admin.rsplit_once('/').expect("URL with a database").0.to_string();
    let db = format!("rf_bench_celery_{}", &Uuid::now_v7().simple().to_string()[22..]);
    let (client, conn) = tokio_postgres::connect(&admin, tokio_postgres::NoTls).await?;
    tokio::spawn(conn);
    client.batch_execute(&format!("CREATE DATABASE {db}")).await?;
    let pg = format!("{base}/{db}").replacen("postgres://", "postgresql://", 1);
    let out = Command::new(&python)
        .arg(Path::new("ops/bench/celery_peer.py"))
        .args(["--tasks", &sizes.independent_runs.to_string()])
        .args(["--chain", &sizes.chain.to_string()])
        .args(["--chord", &sizes.wide.to_string()])
        .args(["--repeats", &sizes.repeats.to_string()])
        .env("BENCH_BACKEND", format!("db+{pg}"))
        .env("BENCH_PG", &pg)
        .env("BENCH_QUEUE", format!("rf-bench-celery-{db}"))
        .output();
    let _ = client.batch_execute(&format!("DROP DATABASE IF EXISTS {db} WITH (FORCE)")).await;
    let out = out?;
    anyhow::ensure!(out.status.success(), "celery_peer.py failed: {}\n{}", out.status, String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8_lossy(&out.stdout);
    let last = text.lines().last().unwrap_or("");
    Ok(serde_json::from_str(last)?)
}

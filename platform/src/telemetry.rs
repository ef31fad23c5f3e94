//! Logging and the Prometheus recorder, set up once by the binary.

use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use renderfleet_shared::config::{LogConfig, LogFormat};
use renderfleet_shared::metrics::{COMPARISON_FAIL_RATIO, COMPARISON_RMSE, RATIO_BUCKETS, SECONDS_BUCKETS};
use tracing_subscriber::EnvFilter;

/// Installs the tracing subscriber; `RUST_LOG` wins over the configured filter.
pub fn init_logging(cfg: &LogConfig) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(&cfg.filter));
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    match cfg.format {
        LogFormat::Json => builder.json().init(),
        LogFormat::Pretty => builder.init(),
    }
}

/// Installs the global metrics recorder and returns the handle `/metrics` renders.
pub fn init_metrics() -> PrometheusHandle {
    PrometheusBuilder::new()
        .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), SECONDS_BUCKETS)
        .expect("bucket list is not empty")
        .set_buckets_for_metric(Matcher::Suffix("_size".into()), &[1.0, 2.0, 5.0, 10.0, 20.0, 50.0, 100.0, 200.0, 500.0, 1000.0])
        .expect("bucket list is not empty")
        .set_buckets_for_metric(Matcher::Full(COMPARISON_FAIL_RATIO.into()), RATIO_BUCKETS)
        .expect("bucket list is not empty")
        .set_buckets_for_metric(Matcher::Full(COMPARISON_RMSE.into()), RATIO_BUCKETS)
        .expect("bucket list is not empty")
        .install_recorder()
        .expect("the metrics recorder is installed once per process")
}

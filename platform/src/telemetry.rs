//! Logging and the Prometheus recorder, set up once by the binary.

use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use renderfleet_shared::config::{LogConfig, LogFormat};
use renderfleet_shared::metrics::{Kind, Unit, COMPARISON_FAIL_RATIO, COMPARISON_RMSE, FAMILIES, RATIO_BUCKETS, SECONDS_BUCKETS};
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

/// Installs the global metrics recorder, describes every metric, and returns the handle
/// `/metrics` renders.
pub fn init_metrics() -> PrometheusHandle {
    let handle = PrometheusBuilder::new()
        .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), SECONDS_BUCKETS)
        .expect("bucket list is not empty")
        .set_buckets_for_metric(Matcher::Suffix("_size".into()), &[1.0, 2.0, 5.0, 10.0, 20.0, 50.0, 100.0, 200.0, 500.0, 1000.0])
        .expect("bucket list is not empty")
        .set_buckets_for_metric(Matcher::Full(COMPARISON_FAIL_RATIO.into()), RATIO_BUCKETS)
        .expect("bucket list is not empty")
        .set_buckets_for_metric(Matcher::Full(COMPARISON_RMSE.into()), RATIO_BUCKETS)
        .expect("bucket list is not empty")
        .install_recorder()
        .expect("the metrics recorder is installed once per process");
    describe_metrics();
    handle
}

/// HELP text and unit of every family in `shared`'s table (only families with samples are
/// rendered, so each binary shows the ones it emits).
fn describe_metrics() {
    metrics::with_recorder(|r| {
        for f in FAMILIES {
            let (name, help) = (metrics::KeyName::from_const_str(f.name), metrics::SharedString::const_str(f.help));
            let unit = f.unit.map(|u| match u {
                Unit::Seconds => metrics::Unit::Seconds,
                Unit::Count => metrics::Unit::Count,
            });
            match f.kind {
                Kind::Counter => r.describe_counter(name, unit, help),
                Kind::Gauge => r.describe_gauge(name, unit, help),
                Kind::Histogram => r.describe_histogram(name, unit, help),
            }
        }
    });
}

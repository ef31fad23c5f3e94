//! Rollout gates (DESIGN §8): whether an output type's graph pipeline may replace the
//! legacy one, decided from its recent shadow comparisons. Pure arithmetic; the
//! coordinator gathers the numbers.
//!
//! Like Diffy, the mismatch rate is taken net of the noise floor: the mismatch rate of
//! legacy-against-legacy (A/A) comparisons of the same output type. Like Scientist,
//! candidate errors count against the candidate only beyond the control's own error rate.

use serde::{Deserialize, Serialize};

/// An output type's `gate_config`; every field has a default.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(default, deny_unknown_fields)]
pub struct GateConfig {
    /// Comparisons needed before the gate can pass.
    pub min_samples: u32,
    /// The most recent comparisons the gate reads.
    pub window: u32,
    /// Largest mismatch rate allowed, net of the A/A noise floor (0..1).
    pub max_mismatch_rate: f64,
    /// Largest candidate error rate allowed above the control's (0..1).
    pub max_error_rate_delta: f64,
    /// Largest p95 duration of graph runs over legacy runs.
    pub max_duration_ratio: f64,
    /// Share of requests (percent) that also get a second legacy run to measure the noise
    /// floor (A/A). 0 turns the baseline off.
    pub noise_sample_pct: f64,
    /// In `graph` mode, a graph failure rate above this over the last `window` graph runs
    /// (at least `min_samples` of them) rolls the output type back to `legacy`.
    pub max_graph_failure_rate: f64,
    /// Per-pixel difference that counts as failing, 0..1 of a channel (idiff's `fail`).
    pub fail: f64,
    /// Share of failing pixels (percent) an image may have and still match (idiff's `failpercent`).
    pub fail_percent: f64,
    /// Any pixel differing by more than this (0..1) is a mismatch (idiff's `hardfail`).
    pub hard_fail: f64,
    /// Compare every n-th turntable frame (0: all).
    pub frame_sample: u32,
    /// Known, accepted differences: a mismatch one of them covers is `ignored`.
    pub ignore_rules: Vec<IgnoreRule>,
}

/// A named excuse for a known, accepted difference (the graph's still is a touch softer, a
/// watermark moved): a mismatch within every bound the rule gives is `ignored` under the
/// rule's name, counted apart and never as a match.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct IgnoreRule {
    pub name: String,
    /// Largest share of failing pixels, percent.
    #[serde(default)]
    pub max_fail_percent: Option<f64>,
    /// Largest channel difference, 0..1.
    #[serde(default)]
    pub max_abs: Option<f64>,
    /// Smallest SSIM.
    #[serde(default)]
    pub min_ssim: Option<f64>,
}

impl IgnoreRule {
    /// Whether the rule covers a comparison with these metrics (for a turntable, its worst
    /// frame). A bound whose metric is missing does not hold.
    pub fn covers(&self, metrics: &serde_json::Value) -> bool {
        let m = if metrics["worst"].is_object() { &metrics["worst"] } else { metrics };
        let get = |k: &str| m[k].as_f64();
        self.max_fail_percent.is_none_or(|b| get("fail_share").is_some_and(|v| v * 100.0 <= b))
            && self.max_abs.is_none_or(|b| get("max_abs").is_some_and(|v| v <= b))
            && self.min_ssim.is_none_or(|b| get("ssim").is_some_and(|v| v >= b))
    }
}

/// The first rule that covers a mismatch with these metrics.
pub fn ignored_by<'a>(rules: &'a [IgnoreRule], metrics: &serde_json::Value) -> Option<&'a IgnoreRule> {
    rules.iter().find(|r| r.covers(metrics))
}

impl Default for GateConfig {
    fn default() -> Self {
        GateConfig {
            min_samples: 20,
            window: 200,
            max_mismatch_rate: 0.01,
            max_error_rate_delta: 0.02,
            max_duration_ratio: 1.5,
            noise_sample_pct: 0.0,
            max_graph_failure_rate: 0.2,
            fail: 0.016,
            fail_percent: 1.0,
            hard_fail: 1.0,
            frame_sample: 0,
            ignore_rules: Vec::new(),
        }
    }
}

impl GateConfig {
    /// Checks the bounds; the message names the field and its range.
    pub fn check(&self) -> Result<(), String> {
        let unit = [
            ("max_mismatch_rate", self.max_mismatch_rate),
            ("max_error_rate_delta", self.max_error_rate_delta),
            ("max_graph_failure_rate", self.max_graph_failure_rate),
            ("fail", self.fail),
            ("hard_fail", self.hard_fail),
        ];
        if let Some((name, v)) = unit.iter().find(|(_, v)| !(0.0..=1.0).contains(v)) {
            return Err(format!("gate_config.{name} must be between 0 and 1, got {v}"));
        }
        for (name, v) in [("fail_percent", self.fail_percent), ("noise_sample_pct", self.noise_sample_pct)] {
            if !(0.0..=100.0).contains(&v) {
                return Err(format!("gate_config.{name} must be a percentage (0 to 100), got {v}"));
            }
        }
        if self.max_duration_ratio <= 0.0 {
            return Err(format!("gate_config.max_duration_ratio must be above 0, got {}", self.max_duration_ratio));
        }
        for (i, r) in self.ignore_rules.iter().enumerate() {
            if r.name.trim().is_empty() || self.ignore_rules[..i].iter().any(|o| o.name == r.name) {
                return Err(format!("gate_config.ignore_rules[{i}] needs a name of its own"));
            }
            if r.max_fail_percent.is_none() && r.max_abs.is_none() && r.min_ssim.is_none() {
                return Err(format!(
                    "ignore rule `{}` has no bound, so it would excuse every mismatch; give max_fail_percent, max_abs or min_ssim",
                    r.name
                ));
            }
        }
        if self.min_samples == 0 || self.window < self.min_samples {
            return Err(format!("gate_config needs 1 <= min_samples <= window, got {} and {}", self.min_samples, self.window));
        }
        Ok(())
    }
}

/// The comparison verdicts (DESIGN §8).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    Match,
    Mismatch,
    CandidateError,
    ControlError,
    /// Excused by a named ignore rule: counted apart, never as a match.
    Ignored,
}

impl Verdict {
    pub fn as_str(self) -> &'static str {
        match self {
            Verdict::Match => "match",
            Verdict::Mismatch => "mismatch",
            Verdict::CandidateError => "candidate_error",
            Verdict::ControlError => "control_error",
            Verdict::Ignored => "ignored",
        }
    }

    pub const ALL: [Verdict; 5] = [Verdict::Match, Verdict::Mismatch, Verdict::CandidateError, Verdict::ControlError, Verdict::Ignored];
}

/// What the gate reads: counts over the window, and durations.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct GateInput {
    pub matches: u32,
    pub mismatches: u32,
    pub candidate_errors: u32,
    pub control_errors: u32,
    pub ignored: u32,
    /// A/A comparisons (legacy against legacy) and how many of them mismatched.
    pub noise_samples: u32,
    pub noise_mismatches: u32,
    /// p95 run seconds of the compared graph and legacy runs (None without data).
    pub candidate_p95_s: Option<f64>,
    pub control_p95_s: Option<f64>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum GateStatus {
    Pass,
    Fail,
    InsufficientData,
}

impl GateStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            GateStatus::Pass => "pass",
            GateStatus::Fail => "fail",
            GateStatus::InsufficientData => "insufficient_data",
        }
    }

    pub const ALL: [GateStatus; 3] = [GateStatus::Pass, GateStatus::Fail, GateStatus::InsufficientData];
}

/// The gate's answer with the numbers behind it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct GateResult {
    pub status: GateStatus,
    /// Comparisons that count (every verdict but `ignored`); the gate needs `min_samples` of
    /// them with a candidate verdict (matches, mismatches, candidate errors).
    pub samples: u32,
    pub min_samples: u32,
    pub mismatch_rate: f64,
    pub noise_rate: f64,
    pub net_mismatch_rate: f64,
    pub candidate_error_rate: f64,
    pub control_error_rate: f64,
    pub duration_ratio: Option<f64>,
    /// Why it does not pass (empty when it does).
    pub reasons: Vec<String>,
    pub input: GateInput,
}

fn rate(n: u32, of: u32) -> f64 {
    if of == 0 {
        0.0
    } else {
        f64::from(n) / f64::from(of)
    }
}

/// Evaluates the gate.
pub fn evaluate(cfg: &GateConfig, input: &GateInput) -> GateResult {
    let samples = input.matches + input.mismatches + input.candidate_errors + input.control_errors;
    // Mismatches are judged among the pairs where both sides produced something, and only
    // such pairs are evidence for the candidate: a broken legacy side proves nothing.
    let compared = input.matches + input.mismatches;
    let mismatch_rate = rate(input.mismatches, compared);
    // A noise floor from a handful of A/A pairs would excuse anything: it counts once it has
    // as many samples as the gate itself needs.
    let noise_rate = if input.noise_samples >= cfg.min_samples { rate(input.noise_mismatches, input.noise_samples) } else { 0.0 };
    let net = (mismatch_rate - noise_rate).max(0.0);
    let candidate_error_rate = rate(input.candidate_errors, samples);
    let control_error_rate = rate(input.control_errors, samples);
    let duration_ratio = match (input.candidate_p95_s, input.control_p95_s) {
        (Some(c), Some(l)) if l > 0.0 => Some(c / l),
        _ => None,
    };
    let mut reasons = Vec::new();
    if net > cfg.max_mismatch_rate {
        reasons.push(format!(
            "mismatch rate {:.2}% (net of a {:.2}% noise floor: {:.2}%) is above {:.2}%",
            mismatch_rate * 100.0,
            noise_rate * 100.0,
            net * 100.0,
            cfg.max_mismatch_rate * 100.0
        ));
    }
    if candidate_error_rate - control_error_rate > cfg.max_error_rate_delta {
        reasons.push(format!(
            "graph error rate {:.2}% exceeds legacy's {:.2}% by more than {:.2} points",
            candidate_error_rate * 100.0,
            control_error_rate * 100.0,
            cfg.max_error_rate_delta * 100.0
        ));
    }
    if let Some(r) = duration_ratio.filter(|r| *r > cfg.max_duration_ratio) {
        reasons.push(format!("graph runs take {r:.2}× legacy's time at p95 (limit {:.2}×)", cfg.max_duration_ratio));
    }
    // Evidence about the candidate: pairs where both delivered, and the candidate's errors.
    let evidence = compared + input.candidate_errors;
    let status = if evidence < cfg.min_samples {
        reasons.insert(0, format!("{evidence} of the {} comparisons needed", cfg.min_samples));
        GateStatus::InsufficientData
    } else if !reasons.is_empty() {
        GateStatus::Fail
    } else if compared == 0 {
        reasons.push("no pair where both pipelines delivered: nothing shows the graph renders the same".into());
        GateStatus::InsufficientData
    } else {
        GateStatus::Pass
    };
    GateResult {
        status,
        samples,
        min_samples: cfg.min_samples,
        mismatch_rate,
        noise_rate,
        net_mismatch_rate: net,
        candidate_error_rate,
        control_error_rate,
        duration_ratio,
        reasons,
        input: input.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn input(matches: u32, mismatches: u32) -> GateInput {
        GateInput { matches, mismatches, candidate_p95_s: Some(10.0), control_p95_s: Some(9.0), ..Default::default() }
    }

    #[test]
    fn too_few_samples_is_insufficient_data_with_the_count() {
        let g = evaluate(&GateConfig::default(), &input(19, 0));
        assert_eq!(g.status, GateStatus::InsufficientData);
        assert!(g.reasons[0].contains("19 of the 20"), "{:?}", g.reasons);
        // Broken legacy runs are no evidence for the graph.
        let g = evaluate(&GateConfig::default(), &GateInput { control_errors: 20, ..input(0, 0) });
        assert_eq!(g.status, GateStatus::InsufficientData);
        // One mismatching A/A pair is no noise floor.
        let g = evaluate(&GateConfig::default(), &GateInput { noise_samples: 1, noise_mismatches: 1, ..input(10, 10) });
        assert_eq!((g.status, g.noise_rate), (GateStatus::Fail, 0.0));
    }

    #[test]
    fn enough_matches_pass() {
        let g = evaluate(&GateConfig::default(), &input(20, 0));
        assert_eq!(g.status, GateStatus::Pass);
        assert!(g.reasons.is_empty());
        assert!((g.duration_ratio.unwrap() - 10.0 / 9.0).abs() < 1e-9);
    }

    #[test]
    fn mismatches_above_the_limit_fail_unless_the_noise_floor_explains_them() {
        let cfg = GateConfig::default();
        let g = evaluate(&cfg, &input(95, 5));
        assert_eq!(g.status, GateStatus::Fail);
        assert!((g.mismatch_rate - 0.05).abs() < 1e-9);
        // A/A: legacy disagrees with itself 4.5% of the time; 5% - 4.5% = 0.5% net <= 1%.
        let noisy = GateInput { noise_samples: 200, noise_mismatches: 9, ..input(95, 5) };
        let g = evaluate(&cfg, &noisy);
        assert_eq!(g.status, GateStatus::Pass, "{:?}", g.reasons);
        assert!((g.net_mismatch_rate - 0.005).abs() < 1e-9);
    }

    #[test]
    fn candidate_errors_count_beyond_the_controls_own() {
        let cfg = GateConfig::default();
        let g = evaluate(&cfg, &GateInput { candidate_errors: 5, control_errors: 4, ..input(91, 0) });
        assert_eq!(g.status, GateStatus::Pass, "1 point above legacy is within 2: {:?}", g.reasons);
        let g = evaluate(&cfg, &GateInput { candidate_errors: 5, ..input(95, 0) });
        assert_eq!(g.status, GateStatus::Fail);
        assert!(g.reasons[0].contains("graph error rate 5.00%"), "{:?}", g.reasons);
    }

    #[test]
    fn slow_graph_runs_fail_and_ignored_ones_do_not_count() {
        let cfg = GateConfig::default();
        let g = evaluate(&cfg, &GateInput { candidate_p95_s: Some(20.0), control_p95_s: Some(10.0), ..input(30, 0) });
        assert_eq!(g.status, GateStatus::Fail);
        let g = evaluate(&cfg, &GateInput { ignored: 50, ..input(10, 0) });
        assert_eq!(g.status, GateStatus::InsufficientData);
        assert_eq!(g.samples, 10);
    }

    #[test]
    fn ignore_rules_cover_only_what_they_bound() {
        let soft = IgnoreRule { name: "softer".into(), max_fail_percent: Some(5.0), max_abs: None, min_ssim: Some(0.9) };
        let small = serde_json::json!({"fail_share": 0.03, "ssim": 0.95, "max_abs": 0.4});
        assert!(soft.covers(&small));
        assert!(!soft.covers(&serde_json::json!({"fail_share": 0.08, "ssim": 0.95})), "too many failing pixels");
        assert!(!soft.covers(&serde_json::json!({"fail_share": 0.03})), "a missing metric does not hold");
        assert!(soft.covers(&serde_json::json!({"worst": small, "frames_compared": 6})), "turntables: the worst frame");
        let rules = vec![soft];
        assert_eq!(ignored_by(&rules, &small).map(|r| r.name.as_str()), Some("softer"));
        let unbounded = GateConfig {
            ignore_rules: vec![IgnoreRule { name: "all".into(), max_fail_percent: None, max_abs: None, min_ssim: None }],
            ..Default::default()
        };
        assert!(unbounded.check().unwrap_err().contains("no bound"));
    }

    #[test]
    fn configs_are_checked() {
        assert!(GateConfig::default().check().is_ok());
        let bad = GateConfig { fail: 2.0, ..Default::default() };
        assert!(bad.check().unwrap_err().contains("gate_config.fail"));
        let bad = GateConfig { min_samples: 10, window: 5, ..Default::default() };
        assert!(bad.check().is_err());
    }
}

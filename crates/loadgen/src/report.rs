//! The results of a run: per-target outcomes, the comparison table, Markdown and JSON output.

use std::fmt::Write as _;

use serde::Serialize;

use crate::target::TargetKind;

/// The unit of a measured value; also says which direction is better.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub enum Unit {
    /// Payload mebibytes per second (higher is better).
    #[serde(rename = "MiB/s")]
    MebibytesPerSecond,
    /// Microseconds (lower is better).
    #[serde(rename = "us")]
    Microseconds,
    /// Completed sessions per second (higher is better).
    #[serde(rename = "sessions/s")]
    SessionsPerSecond,
    /// A count of sessions (higher is better).
    #[serde(rename = "sessions")]
    Sessions,
    /// Bytes of resident memory per session (lower is better).
    #[serde(rename = "bytes/session")]
    BytesPerSession,
    /// A count of connections (lower is better).
    #[serde(rename = "connections")]
    Connections,
    /// Per cent of one CPU core (lower is better).
    #[serde(rename = "% of a core")]
    CorePercent,
    /// Consoles one CPU core carries (higher is better).
    #[serde(rename = "consoles/core")]
    ConsolesPerCore,
    /// Per cent of what was offered (higher is better).
    #[serde(rename = "%")]
    Percent,
}

impl Unit {
    /// The short label used in tables and JSON.
    pub fn label(self) -> &'static str {
        match self {
            Unit::MebibytesPerSecond => "MiB/s",
            Unit::Microseconds => "us",
            Unit::SessionsPerSecond => "sessions/s",
            Unit::Sessions => "sessions",
            Unit::BytesPerSession => "bytes/session",
            Unit::Connections => "connections",
            Unit::CorePercent => "% of a core",
            Unit::ConsolesPerCore => "consoles/core",
            Unit::Percent => "%",
        }
    }

    /// Whether a larger value is the better one.
    pub fn higher_is_better(self) -> bool {
        matches!(
            self,
            Unit::MebibytesPerSecond
                | Unit::SessionsPerSecond
                | Unit::Sessions
                | Unit::ConsolesPerCore
                | Unit::Percent
        )
    }
}

/// One measured value of one scenario on one target.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[non_exhaustive]
pub struct Metric {
    /// The table row it belongs to, e.g. `throughput up->client 64 KiB x8 sessions`.
    pub name: String,
    /// Its unit.
    pub unit: Unit,
    /// The value.
    pub value: f64,
}

impl Metric {
    /// A metric named `name`.
    pub fn new(name: impl Into<String>, unit: Unit, value: f64) -> Metric {
        Metric {
            name: name.into(),
            unit,
            value,
        }
    }
}

/// What one scenario did on one target: the metrics plus the counts that make them checkable.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
#[non_exhaustive]
pub struct Outcome {
    /// Sessions the scenario meant to run.
    pub sessions: u64,
    /// Operations completed (messages, round trips or sessions, by scenario).
    pub operations: u64,
    /// Sessions or operations that failed (connect, handshake, read/write, wrong reply).
    pub errors: u64,
    /// Payload bytes the clients sent.
    pub client_bytes_sent: u64,
    /// Payload bytes the clients received.
    pub client_bytes_received: u64,
    /// Payload bytes the upstream received during the scenario.
    pub upstream_bytes_received: u64,
    /// Payload bytes the upstream sent during the scenario.
    pub upstream_bytes_sent: u64,
    /// Measured wall time in seconds.
    pub elapsed_secs: f64,
    /// Whether every loop finished its count (false: the time limit or errors cut it short).
    pub completed: bool,
    /// Upstream connections still open once the scenario's sessions had ended (must be 0).
    pub upstream_left_open: u64,
    /// The measured values.
    pub metrics: Vec<Metric>,
    /// The first error seen, if any, for diagnosis.
    pub first_error: Option<String>,
}

/// One scenario's outcome on one target.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[non_exhaustive]
pub struct ScenarioRecord {
    /// Scenario name.
    pub scenario: String,
    /// The target it ran against.
    pub target: TargetKind,
    /// What happened.
    pub outcome: Outcome,
}

/// One value per column.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
#[non_exhaustive]
pub struct PerTarget<T> {
    /// Straight at the upstream.
    pub direct: T,
    /// Through socat.
    pub socat: T,
    /// Through the tokio byte relay.
    pub byte_relay: T,
    /// Through websocat.
    pub websocat: T,
    /// Through the Python original.
    pub python_original: T,
    /// Through the proxy (dev mode).
    pub proxy: T,
    /// Through the proxy in the pod's shape (TLS, CA and token files).
    pub proxy_in_cluster: T,
}

impl<T> PerTarget<T> {
    /// The value for `kind`'s column.
    pub fn get(&self, kind: TargetKind) -> &T {
        match kind {
            TargetKind::Direct => &self.direct,
            TargetKind::Socat => &self.socat,
            TargetKind::ByteRelay => &self.byte_relay,
            TargetKind::Websocat => &self.websocat,
            TargetKind::PythonOriginal => &self.python_original,
            TargetKind::Proxy => &self.proxy,
            TargetKind::ProxyInCluster => &self.proxy_in_cluster,
        }
    }

    fn get_mut(&mut self, kind: TargetKind) -> &mut T {
        match kind {
            TargetKind::Direct => &mut self.direct,
            TargetKind::Socat => &mut self.socat,
            TargetKind::ByteRelay => &mut self.byte_relay,
            TargetKind::Websocat => &mut self.websocat,
            TargetKind::PythonOriginal => &mut self.python_original,
            TargetKind::Proxy => &mut self.proxy,
            TargetKind::ProxyInCluster => &mut self.proxy_in_cluster,
        }
    }
}

/// A row of the comparison table.
///
/// With several rounds, each target's value is the median of its rounds, and each ratio is the
/// median of the round-by-round ratios: a round plays the scenario on every target back to back,
/// so a ratio compares runs made within seconds of each other.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[non_exhaustive]
pub struct Row {
    /// Metric name.
    pub metric: String,
    /// Its unit.
    pub unit: Unit,
    /// Whether larger values are better.
    pub higher_is_better: bool,
    /// Each target's median over the rounds.
    pub median: PerTarget<Option<f64>>,
    /// Each target's value in every round, in round order.
    pub rounds: PerTarget<Vec<f64>>,
    /// The median of the per-round ratios proxy / column (the proxy's own entry is `None`).
    pub proxy_ratio: PerTarget<Option<f64>>,
    /// The median of the per-round ratios in-cluster proxy / dev-mode proxy.
    pub in_cluster_ratio: Option<f64>,
}

impl Row {
    fn new(metric: &Metric) -> Row {
        Row {
            metric: metric.name.clone(),
            unit: metric.unit,
            higher_is_better: metric.unit.higher_is_better(),
            median: PerTarget::default(),
            rounds: PerTarget::default(),
            proxy_ratio: PerTarget::default(),
            in_cluster_ratio: None,
        }
    }

    fn push(&mut self, target: TargetKind, value: f64) {
        self.rounds.get_mut(target).push(value);
        *self.median.get_mut(target) = median(self.rounds.get(target));
        for base in TargetKind::BASELINES {
            *self.proxy_ratio.get_mut(base) = median(&self.proxy_ratio_rounds(base));
        }
        self.in_cluster_ratio = median(&self.in_cluster_ratio_rounds());
    }

    /// Round by round, the in-cluster proxy's value over the dev-mode proxy's.
    pub fn in_cluster_ratio_rounds(&self) -> Vec<f64> {
        ratios(&self.rounds.proxy_in_cluster, &self.rounds.proxy)
    }

    /// Round by round, the proxy's value over `base`'s (rounds where both ran and `base` is not 0).
    pub fn proxy_ratio_rounds(&self, base: TargetKind) -> Vec<f64> {
        ratios(&self.rounds.proxy, self.rounds.get(base))
    }
}

/// `values[i] / bases[i]` for the rounds where both ran and the base is not 0.
fn ratios(values: &[f64], bases: &[f64]) -> Vec<f64> {
    values
        .iter()
        .zip(bases)
        .filter(|(_, base)| **base != 0.0)
        .map(|(value, base)| value / base)
        .collect()
}

/// The median of `values` (the mean of the middle two for an even count); `None` when empty.
pub fn median(values: &[f64]) -> Option<f64> {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    let middle = sorted.len() / 2;
    match sorted.len() {
        0 => None,
        len if len % 2 == 1 => sorted.get(middle).copied(),
        _ => Some((sorted.get(middle - 1)? + sorted.get(middle)?) / 2.0),
    }
}

/// A described target of the run (never includes a token).
#[derive(Debug, Clone, PartialEq, Serialize)]
#[non_exhaustive]
pub struct TargetInfo {
    /// Which column.
    pub kind: TargetKind,
    /// Its URL template, placeholders unfilled.
    pub url_template: String,
    /// The process measured for memory, if any.
    pub pid: Option<u32>,
}

/// Everything a run produced.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[non_exhaustive]
pub struct Report {
    /// Whether the small `--quick` configuration ran.
    pub quick: bool,
    /// The targets, in column order.
    pub targets: Vec<TargetInfo>,
    /// The comparison table.
    pub rows: Vec<Row>,
    /// Every scenario on every target, with its counts.
    pub records: Vec<ScenarioRecord>,
    /// Free-form remarks: pinning, skipped targets, limits.
    pub notes: Vec<String>,
}

impl Report {
    /// An empty report for `targets`.
    pub fn new(quick: bool, targets: Vec<TargetInfo>) -> Report {
        Report {
            quick,
            targets,
            rows: Vec::new(),
            records: Vec::new(),
            notes: Vec::new(),
        }
    }

    /// Adds a remark.
    pub fn note(&mut self, note: impl Into<String>) {
        self.notes.push(note.into());
    }

    /// Records `outcome` of `scenario` on `target` and files its metrics into the table.
    pub fn record(&mut self, scenario: &str, target: TargetKind, outcome: Outcome) {
        for metric in &outcome.metrics {
            let index = match self.rows.iter().position(|row| row.metric == metric.name) {
                Some(index) => index,
                None => {
                    self.rows.push(Row::new(metric));
                    self.rows.len() - 1
                }
            };
            if let Some(row) = self.rows.get_mut(index) {
                row.push(target, metric.value);
            }
        }
        self.records.push(ScenarioRecord {
            scenario: scenario.to_owned(),
            target,
            outcome,
        });
    }

    /// The columns of the table, in column order: the targets of the run, and any kind a record
    /// names (a report built by hand may have records without targets).
    pub fn columns(&self) -> Vec<TargetKind> {
        TargetKind::ALL
            .into_iter()
            .filter(|kind| {
                self.targets.iter().any(|target| target.kind == *kind)
                    || self.records.iter().any(|record| record.target == *kind)
            })
            .collect()
    }

    /// The report as pretty JSON.
    pub fn to_json(&self) -> Result<String, crate::LoadgenError> {
        serde_json::to_string_pretty(self).map_err(crate::LoadgenError::Json)
    }

    /// The comparison table (plus notes and any incomplete scenario) as Markdown.
    ///
    /// Values are medians over the rounds; a ratio over several rounds is followed by the lowest
    /// and highest round's ratio in brackets.
    pub fn to_markdown(&self) -> String {
        let mut out = String::new();
        let columns = self.columns();
        let with_proxy = columns.contains(&TargetKind::Proxy);
        let baselines: Vec<TargetKind> = TargetKind::BASELINES
            .into_iter()
            .filter(|kind| with_proxy && columns.contains(kind))
            .collect();
        let in_cluster = with_proxy && columns.contains(&TargetKind::ProxyInCluster);
        out.push_str("| scenario | unit |");
        for kind in &columns {
            let _ = write!(out, " {kind} |");
        }
        for base in &baselines {
            let _ = write!(out, " proxy/{base} |");
        }
        if in_cluster {
            out.push_str(" in-cluster/proxy |");
        }
        out.push_str("\n|---|---|");
        let numeric = columns.len() + baselines.len() + usize::from(in_cluster);
        out.push_str(&"---:|".repeat(numeric));
        out.push('\n');
        for row in &self.rows {
            let _ = write!(out, "| {} | {} |", row.metric, row.unit.label());
            for kind in &columns {
                let _ = write!(out, " {} |", format_value(*row.median.get(*kind)));
            }
            for base in &baselines {
                let ratio =
                    format_ratio(*row.proxy_ratio.get(*base), &row.proxy_ratio_rounds(*base));
                let _ = write!(out, " {ratio} |");
            }
            if in_cluster {
                let ratio = format_ratio(row.in_cluster_ratio, &row.in_cluster_ratio_rounds());
                let _ = write!(out, " {ratio} |");
            }
            out.push('\n');
        }
        let incomplete: Vec<&ScenarioRecord> = self
            .records
            .iter()
            .filter(|record| !record.outcome.completed || record.outcome.errors > 0)
            .collect();
        if !incomplete.is_empty() {
            out.push_str("\nIncomplete or with errors:\n\n");
            for record in incomplete {
                let _ = writeln!(
                    out,
                    "- {} on {}: {} errors, completed: {}{}",
                    record.scenario,
                    record.target,
                    record.outcome.errors,
                    record.outcome.completed,
                    record
                        .outcome
                        .first_error
                        .as_deref()
                        .map(|e| format!(", first error: {e}"))
                        .unwrap_or_default(),
                );
            }
        }
        if !self.notes.is_empty() {
            out.push_str("\nNotes:\n\n");
            for note in &self.notes {
                let _ = writeln!(out, "- {note}");
            }
        }
        out
    }
}

fn format_value(value: Option<f64>) -> String {
    match value {
        None => "-".to_owned(),
        Some(value) if value.abs() >= 100.0 || value == value.trunc() => format!("{value:.0}"),
        Some(value) if value.abs() >= 10.0 => format!("{value:.1}"),
        Some(value) => format!("{value:.2}"),
    }
}

fn format_ratio(median: Option<f64>, rounds: &[f64]) -> String {
    let Some(median) = median else {
        return "-".to_owned();
    };
    let lowest = rounds.iter().copied().reduce(f64::min);
    let highest = rounds.iter().copied().reduce(f64::max);
    match (lowest, highest) {
        (Some(lowest), Some(highest)) if rounds.len() > 1 => {
            format!("{median:.2}x ({lowest:.2}-{highest:.2})")
        }
        _ => format!("{median:.2}x"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn outcome(metrics: Vec<Metric>) -> Outcome {
        Outcome {
            completed: true,
            metrics,
            ..Outcome::default()
        }
    }

    #[test]
    fn rows_collect_each_target_and_compute_ratios() {
        let mut report = Report::new(true, Vec::new());
        let name = "throughput 64 KiB x1";
        for (kind, value) in [
            (TargetKind::Direct, 200.0),
            (TargetKind::Socat, 400.0),
            (TargetKind::ByteRelay, 125.0),
            (TargetKind::Proxy, 100.0),
            (TargetKind::ProxyInCluster, 75.0),
        ] {
            report.record(
                "t",
                kind,
                outcome(vec![Metric::new(name, Unit::MebibytesPerSecond, value)]),
            );
        }
        assert_eq!(report.rows.len(), 1);
        let row = &report.rows[0];
        assert_eq!(row.proxy_ratio.direct, Some(0.5));
        assert_eq!(row.proxy_ratio.socat, Some(0.25));
        assert_eq!(row.proxy_ratio.byte_relay, Some(0.8));
        assert_eq!(row.proxy_ratio.proxy, None);
        assert_eq!(row.in_cluster_ratio, Some(0.75));
        let markdown = report.to_markdown();
        assert!(
            markdown.contains(
                "| throughput 64 KiB x1 | MiB/s | 200 | 400 | 125 | 100 | 75 | 0.50x | 0.25x | 0.80x | 0.75x |"
            ),
            "{markdown}"
        );
    }

    #[test]
    fn rounds_give_medians_and_ratios_are_paired_round_by_round() {
        let mut report = Report::new(false, Vec::new());
        let name = "session setup x1 loops";
        // The host slows down in round 2: the proxy's ratio to direct stays steady.
        for (direct, proxy) in [(1000.0, 400.0), (500.0, 200.0), (1100.0, 330.0)] {
            for (kind, value) in [(TargetKind::Direct, direct), (TargetKind::Proxy, proxy)] {
                report.record(
                    "s",
                    kind,
                    outcome(vec![Metric::new(name, Unit::SessionsPerSecond, value)]),
                );
            }
        }
        let row = &report.rows[0];
        assert_eq!(row.rounds.direct, vec![1000.0, 500.0, 1100.0]);
        assert_eq!(row.median.direct, Some(1000.0));
        assert_eq!(row.median.proxy, Some(330.0));
        assert_eq!(
            row.proxy_ratio_rounds(TargetKind::Direct),
            vec![0.4, 0.4, 0.3]
        );
        assert_eq!(row.proxy_ratio.direct, Some(0.4));
        assert!(
            report.to_markdown().contains(
                "| session setup x1 loops | sessions/s | 1000 | 330 | 0.40x (0.30-0.40) |"
            ),
            "{}",
            report.to_markdown()
        );
    }

    #[test]
    fn medians_of_odd_even_and_empty_lists() {
        assert_eq!(median(&[]), None);
        assert_eq!(median(&[3.0]), Some(3.0));
        assert_eq!(median(&[9.0, 1.0, 5.0]), Some(5.0));
        assert_eq!(median(&[4.0, 1.0, 3.0, 2.0]), Some(2.5));
    }

    #[test]
    fn missing_columns_show_a_dash_and_no_ratio() {
        let mut report = Report::new(true, Vec::new());
        report.record(
            "l",
            TargetKind::Direct,
            outcome(vec![Metric::new("p99", Unit::Microseconds, 12.345)]),
        );
        report.record(
            "l",
            TargetKind::Proxy,
            outcome(vec![Metric::new("p50", Unit::Microseconds, 20.0)]),
        );
        assert_eq!(report.rows[0].proxy_ratio.direct, None);
        let markdown = report.to_markdown();
        assert!(
            markdown.contains("| p99 | us | 12.3 | - | - |"),
            "{markdown}"
        );
        assert!(markdown.contains("| p50 | us | - | 20 | - |"), "{markdown}");
    }

    #[test]
    fn only_the_columns_that_ran_are_shown_with_their_ratios() {
        let mut report = Report::new(true, Vec::new());
        for (kind, value) in [
            (TargetKind::Websocat, 3000.0),
            (TargetKind::PythonOriginal, 600.0),
            (TargetKind::Proxy, 2400.0),
        ] {
            report.record(
                "s",
                kind,
                outcome(vec![Metric::new("setup", Unit::SessionsPerSecond, value)]),
            );
        }
        let markdown = report.to_markdown();
        assert!(
            markdown.starts_with(
                "| scenario | unit | websocat | python original | proxy | proxy/websocat | proxy/python original |\n|---|---|---:|---:|---:|---:|---:|\n| setup | sessions/s | 3000 | 600 | 2400 | 0.80x | 4.00x |\n"
            ),
            "{markdown}"
        );
    }

    #[test]
    fn failed_scenarios_are_listed_under_the_table() {
        let mut report = Report::new(true, Vec::new());
        let failed = Outcome {
            errors: 2,
            first_error: Some("boom".to_owned()),
            ..Outcome::default()
        };
        report.record("setup", TargetKind::Proxy, failed);
        assert!(
            report
                .to_markdown()
                .contains("- setup on proxy: 2 errors, completed: false, first error: boom")
        );
    }
}

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
        }
    }

    /// Whether a larger value is the better one.
    pub fn higher_is_better(self) -> bool {
        matches!(
            self,
            Unit::MebibytesPerSecond | Unit::SessionsPerSecond | Unit::Sessions
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

/// A row of the comparison table.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[non_exhaustive]
pub struct Row {
    /// Metric name.
    pub metric: String,
    /// Its unit.
    pub unit: Unit,
    /// Whether larger values are better.
    pub higher_is_better: bool,
    /// Straight at the upstream.
    pub direct: Option<f64>,
    /// Through socat.
    pub socat: Option<f64>,
    /// Through the proxy.
    pub proxy: Option<f64>,
    /// `proxy / direct`.
    pub proxy_over_direct: Option<f64>,
    /// `proxy / socat`.
    pub proxy_over_socat: Option<f64>,
}

impl Row {
    fn new(metric: &Metric) -> Row {
        Row {
            metric: metric.name.clone(),
            unit: metric.unit,
            higher_is_better: metric.unit.higher_is_better(),
            direct: None,
            socat: None,
            proxy: None,
            proxy_over_direct: None,
            proxy_over_socat: None,
        }
    }

    fn set(&mut self, target: TargetKind, value: f64) {
        match target {
            TargetKind::Direct => self.direct = Some(value),
            TargetKind::Socat => self.socat = Some(value),
            TargetKind::Proxy => self.proxy = Some(value),
        }
        let ratio = |proxy: Option<f64>, base: Option<f64>| match (proxy, base) {
            (Some(proxy), Some(base)) if base != 0.0 => Some(proxy / base),
            _ => None,
        };
        self.proxy_over_direct = ratio(self.proxy, self.direct);
        self.proxy_over_socat = ratio(self.proxy, self.socat);
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
                row.set(target, metric.value);
            }
        }
        self.records.push(ScenarioRecord {
            scenario: scenario.to_owned(),
            target,
            outcome,
        });
    }

    /// The report as pretty JSON.
    pub fn to_json(&self) -> Result<String, crate::LoadgenError> {
        serde_json::to_string_pretty(self).map_err(crate::LoadgenError::Json)
    }

    /// The comparison table (plus notes and any incomplete scenario) as Markdown.
    pub fn to_markdown(&self) -> String {
        let mut out = String::new();
        out.push_str("| scenario | unit | direct | socat | proxy | proxy/direct | proxy/socat |\n");
        out.push_str("|---|---|---:|---:|---:|---:|---:|\n");
        for row in &self.rows {
            let _ = writeln!(
                out,
                "| {} | {} | {} | {} | {} | {} | {} |",
                row.metric,
                row.unit.label(),
                format_value(row.direct),
                format_value(row.socat),
                format_value(row.proxy),
                format_ratio(row.proxy_over_direct),
                format_ratio(row.proxy_over_socat),
            );
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

fn format_ratio(ratio: Option<f64>) -> String {
    ratio
        .map(|ratio| format!("{ratio:.2}x"))
        .unwrap_or_else(|| "-".to_owned())
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
        report.record(
            "t",
            TargetKind::Direct,
            outcome(vec![Metric::new(name, Unit::MebibytesPerSecond, 200.0)]),
        );
        report.record(
            "t",
            TargetKind::Socat,
            outcome(vec![Metric::new(name, Unit::MebibytesPerSecond, 400.0)]),
        );
        report.record(
            "t",
            TargetKind::Proxy,
            outcome(vec![Metric::new(name, Unit::MebibytesPerSecond, 100.0)]),
        );
        assert_eq!(report.rows.len(), 1);
        let row = &report.rows[0];
        assert_eq!(row.proxy_over_direct, Some(0.5));
        assert_eq!(row.proxy_over_socat, Some(0.25));
        let markdown = report.to_markdown();
        assert!(
            markdown.contains("| throughput 64 KiB x1 | MiB/s | 200 | 400 | 100 | 0.50x | 0.25x |"),
            "{markdown}"
        );
    }

    #[test]
    fn missing_columns_show_a_dash_and_no_ratio() {
        let mut report = Report::new(true, Vec::new());
        report.record(
            "l",
            TargetKind::Direct,
            outcome(vec![Metric::new("p99", Unit::Microseconds, 12.345)]),
        );
        assert_eq!(report.rows[0].proxy_over_direct, None);
        assert!(
            report
                .to_markdown()
                .contains("| p99 | us | 12.3 | - | - | - | - |")
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

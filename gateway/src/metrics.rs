//! Counters and histograms for `/metrics`, in the Prometheus text format.
//!
//! Lock-free on the hot path: a [`Histogram`] is a fixed array of atomic
//! buckets, labelled counters live in a [`Family`] (a read-mostly map from
//! label values to an atomic). Nothing here ever holds a secret: labels are
//! workflow, gate and plugin names and outcome words.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::RwLock;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Upper bounds of the histogram buckets, in seconds.
pub const BUCKETS: [f64; 16] = [
    0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5,
    1.0, 2.5, 10.0,
];

/// A latency histogram with the fixed [`BUCKETS`].
#[derive(Debug, Default)]
pub struct Histogram {
    buckets: [AtomicU64; BUCKETS.len()],
    count: AtomicU64,
    sum_ns: AtomicU64,
}

impl Histogram {
    /// Records one observation.
    pub fn observe(&self, d: Duration) {
        let secs = d.as_secs_f64();
        if let Some(i) = BUCKETS.iter().position(|b| secs <= *b) {
            self.buckets[i].fetch_add(1, Ordering::Relaxed);
        }
        self.count.fetch_add(1, Ordering::Relaxed);
        self.sum_ns
            .fetch_add(d.as_nanos() as u64, Ordering::Relaxed);
    }

    /// Adds `other`'s observations to this one (to report several
    /// histograms as one series).
    pub fn absorb(&self, other: &Histogram) {
        for (mine, theirs) in self.buckets.iter().zip(&other.buckets) {
            mine.fetch_add(theirs.load(Ordering::Relaxed), Ordering::Relaxed);
        }
        self.count.fetch_add(other.count(), Ordering::Relaxed);
        self.sum_ns
            .fetch_add(other.sum_ns.load(Ordering::Relaxed), Ordering::Relaxed);
    }

    /// Number of observations.
    pub fn count(&self) -> u64 {
        self.count.load(Ordering::Relaxed)
    }

    /// Writes the histogram's series: `name_bucket`, `name_sum`, `name_count`.
    pub fn render(&self, out: &mut String, name: &str, labels: &str) {
        let mut cumulative = 0;
        let sep = if labels.is_empty() { "" } else { "," };
        for (bound, bucket) in BUCKETS.iter().zip(&self.buckets) {
            cumulative += bucket.load(Ordering::Relaxed);
            let _ = writeln!(
                out,
                "{name}_bucket{{{labels}{sep}le=\"{bound}\"}} {cumulative}"
            );
        }
        let count = self.count();
        let _ = writeln!(out, "{name}_bucket{{{labels}{sep}le=\"+Inf\"}} {count}");
        let braces = |s: &str| {
            if s.is_empty() {
                String::new()
            } else {
                format!("{{{s}}}")
            }
        };
        let sum = self.sum_ns.load(Ordering::Relaxed) as f64 / 1e9;
        let _ = writeln!(out, "{name}_sum{} {sum}", braces(labels));
        let _ = writeln!(out, "{name}_count{} {count}", braces(labels));
    }
}

/// Counters by label values (e.g. `workflow`, `outcome`).
#[derive(Debug)]
pub struct Family {
    labels: &'static [&'static str],
    series: RwLock<BTreeMap<Vec<String>, AtomicU64>>,
}

impl Family {
    /// A family whose series carry `labels`, in this order.
    pub const fn new(labels: &'static [&'static str]) -> Family {
        Family {
            labels,
            series: RwLock::new(BTreeMap::new()),
        }
    }

    /// Adds one to the series with these label values.
    pub fn inc(&self, values: &[&str]) {
        if let Ok(series) = self.series.read()
            && let Some(c) = series.iter().find_map(|(k, v)| {
                (k.len() == values.len() && k.iter().zip(values).all(|(a, b)| a == b)).then_some(v)
            })
        {
            c.fetch_add(1, Ordering::Relaxed);
            return;
        }
        if let Ok(mut series) = self.series.write() {
            series
                .entry(values.iter().map(|s| (*s).to_owned()).collect())
                .or_default()
                .fetch_add(1, Ordering::Relaxed);
        }
    }

    /// The value of one series (0 if never counted).
    pub fn get(&self, values: &[&str]) -> u64 {
        let key: Vec<String> = values.iter().map(|s| (*s).to_owned()).collect();
        self.series
            .read()
            .ok()
            .and_then(|s| s.get(&key).map(|c| c.load(Ordering::Relaxed)))
            .unwrap_or(0)
    }

    /// Every series' label values and count.
    pub fn snapshot(&self) -> Vec<(Vec<String>, u64)> {
        self.series
            .read()
            .map(|s| {
                s.iter()
                    .map(|(k, v)| (k.clone(), v.load(Ordering::Relaxed)))
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Writes every series as `name{labels} value`.
    pub fn render(&self, out: &mut String, name: &str) {
        let Ok(series) = self.series.read() else {
            return;
        };
        for (values, count) in series.iter() {
            let labels = self
                .labels
                .iter()
                .zip(values)
                .map(|(k, v)| format!("{k}=\"{}\"", escape(v)))
                .collect::<Vec<_>>()
                .join(",");
            let _ = writeln!(out, "{name}{{{labels}}} {}", count.load(Ordering::Relaxed));
        }
    }
}

/// Escapes a label value for the text format.
pub fn escape(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// Writes the `# HELP` and `# TYPE` lines of a metric.
pub fn header(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
}

/// CPU time (user + system) process `pid` has used so far, in seconds,
/// from `/proc/PID/stat` (`"self"` for this process). Benchmarks report CPU
/// per request: on this noisy machine it moves far less between runs than
/// requests per second do.
pub fn cpu_seconds(pid: &str) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // The command name (field 2) may hold spaces; count fields after its ')'.
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map_or("", |(_, rest)| rest)
        .split_whitespace()
        .collect();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|f| f.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    // utime and stime are fields 14 and 15; after ')' they are the 12th and
    // 13th. Linux reports them in USER_HZ, which is 100.
    (ticks(11) + ticks(12)) / 100.0
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn histograms_are_cumulative_and_families_escape_labels() {
        let h = Histogram::default();
        h.observe(Duration::from_micros(30));
        h.observe(Duration::from_millis(3));
        let mut out = String::new();
        h.render(&mut out, "x_seconds", "plugin=\"a\"");
        assert!(out.contains("x_seconds_bucket{plugin=\"a\",le=\"0.00005\"} 1\n"));
        assert!(out.contains("x_seconds_bucket{plugin=\"a\",le=\"0.005\"} 2\n"));
        assert!(out.contains("x_seconds_bucket{plugin=\"a\",le=\"+Inf\"} 2\n"));
        assert!(out.contains("x_seconds_count{plugin=\"a\"} 2\n"));

        let f = Family::new(&["workflow", "outcome"]);
        f.inc(&["a\"b", "ok"]);
        f.inc(&["a\"b", "ok"]);
        assert_eq!(f.get(&["a\"b", "ok"]), 2);
        let mut out = String::new();
        f.render(&mut out, "flows_total");
        assert_eq!(out, "flows_total{workflow=\"a\\\"b\",outcome=\"ok\"} 2\n");
    }
}

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

/// A latency histogram with the fixed [`BUCKETS`]. The count is the sum
/// of the buckets (the last one past the largest bound), so a scrape
/// during an observation never shows a `+Inf` bucket smaller than another.
#[derive(Debug, Default)]
pub struct Histogram {
    buckets: [AtomicU64; BUCKETS.len() + 1],
    sum_ns: AtomicU64,
}

impl Histogram {
    /// Records one observation.
    pub fn observe(&self, d: Duration) {
        let secs = d.as_secs_f64();
        let i = BUCKETS
            .iter()
            .position(|b| secs <= *b)
            .unwrap_or(BUCKETS.len());
        self.buckets[i].fetch_add(1, Ordering::Relaxed);
        self.sum_ns
            .fetch_add(d.as_nanos() as u64, Ordering::Relaxed);
    }

    /// Adds `other`'s observations to this one (to report several
    /// histograms as one series).
    pub fn absorb(&self, other: &Histogram) {
        for (mine, theirs) in self.buckets.iter().zip(&other.buckets) {
            mine.fetch_add(theirs.load(Ordering::Relaxed), Ordering::Relaxed);
        }
        self.sum_ns
            .fetch_add(other.sum_ns.load(Ordering::Relaxed), Ordering::Relaxed);
    }

    /// Number of observations.
    pub fn count(&self) -> u64 {
        self.buckets.iter().map(|b| b.load(Ordering::Relaxed)).sum()
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
        let count = cumulative + self.buckets[BUCKETS.len()].load(Ordering::Relaxed);
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

/// Writes a metric without labels: its header and its one sample.
fn sample(out: &mut String, name: &str, kind: &str, help: &str, value: impl std::fmt::Display) {
    header(out, name, kind, help);
    let _ = writeln!(out, "{name} {value}");
}

/// Writes the `# HELP` and `# TYPE` lines of a metric.
pub fn header(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
}

/// HTTP responses by the route that matched (axum's `MatchedPath`, never
/// the path a client sent): a duration histogram per status class and a
/// count per status. Allocation-free and lock-free per request once a
/// route has been seen (a read lock and a scan of the routes seen so far).
#[derive(Debug, Default)]
pub struct HttpMetrics {
    routes: RwLock<Vec<RouteSeries>>,
}

#[derive(Debug)]
struct RouteSeries {
    route: Box<str>,
    /// By status class, 1xx to 5xx.
    classes: [Histogram; 5],
    /// By status, 100 to 599.
    statuses: Box<[AtomicU64; 500]>,
}

impl RouteSeries {
    fn new(route: &str) -> RouteSeries {
        RouteSeries {
            route: route.into(),
            classes: Default::default(),
            statuses: Box::new(std::array::from_fn(|_| AtomicU64::new(0))),
        }
    }

    fn record(&self, status: u16, d: Duration) {
        if let Some(h) = self.classes.get(usize::from(status / 100).wrapping_sub(1)) {
            h.observe(d);
        }
        if let Some(c) = self.statuses.get(usize::from(status).wrapping_sub(100)) {
            c.fetch_add(1, Ordering::Relaxed);
        }
    }
}

impl HttpMetrics {
    /// Records a response with `status` to a request for `route`, which
    /// took `d`.
    pub fn observe(&self, route: &str, status: u16, d: Duration) {
        if let Ok(routes) = self.routes.read()
            && let Some(r) = routes.iter().find(|r| &*r.route == route)
        {
            r.record(status, d);
            return;
        }
        if let Ok(mut routes) = self.routes.write() {
            if !routes.iter().any(|r| &*r.route == route) {
                routes.push(RouteSeries::new(route));
            }
            if let Some(r) = routes.iter().find(|r| &*r.route == route) {
                r.record(status, d);
            }
        }
    }

    /// Writes `resetgate_http_request_duration_seconds{route,class}` and
    /// `resetgate_http_responses_total{route,status}`.
    pub fn render(&self, out: &mut String) {
        let Ok(routes) = self.routes.read() else {
            return;
        };
        let mut sorted: Vec<&RouteSeries> = routes.iter().collect();
        sorted.sort_by(|a, b| a.route.cmp(&b.route));
        let name = "resetgate_http_request_duration_seconds";
        header(
            out,
            name,
            "histogram",
            "HTTP request duration, from the request's arrival to its response's head, by matched route and status class.",
        );
        for r in &sorted {
            for (i, h) in r.classes.iter().enumerate() {
                if h.count() > 0 {
                    let labels = format!("route=\"{}\",class=\"{}xx\"", escape(&r.route), i + 1);
                    h.render(out, name, &labels);
                }
            }
        }
        let name = "resetgate_http_responses_total";
        header(
            out,
            name,
            "counter",
            "HTTP responses by matched route and status.",
        );
        for r in &sorted {
            for (i, c) in r.statuses.iter().enumerate() {
                let n = c.load(Ordering::Relaxed);
                if n > 0 {
                    let _ = writeln!(
                        out,
                        "{name}{{route=\"{}\",status=\"{}\"}} {n}",
                        escape(&r.route),
                        i + 100
                    );
                }
            }
        }
    }
}

/// Reloads (`SIGHUP`): whether the last one took everything, when it was,
/// and how many were accepted and refused. One per process.
#[derive(Debug)]
pub struct Reloads {
    success: AtomicU64,
    last_ms: AtomicU64,
    accepted: AtomicU64,
    refused: AtomicU64,
    restart_needed: AtomicU64,
}

/// The process's reload statistics.
pub static RELOADS: Reloads = Reloads {
    success: AtomicU64::new(1),
    last_ms: AtomicU64::new(0),
    accepted: AtomicU64::new(0),
    refused: AtomicU64::new(0),
    restart_needed: AtomicU64::new(0),
};

impl Reloads {
    /// The configuration was loaded at start-up at `now_ms` (counted as a
    /// successful load, not as a reload).
    pub fn loaded(&self, now_ms: u64) {
        self.success.store(1, Ordering::Relaxed);
        self.last_ms.store(now_ms, Ordering::Relaxed);
    }

    /// A reload at `now_ms`: `ok` if nothing was refused.
    pub fn record(&self, ok: bool, now_ms: u64) {
        self.success.store(u64::from(ok), Ordering::Relaxed);
        self.last_ms.store(now_ms, Ordering::Relaxed);
        let counter = if ok { &self.accepted } else { &self.refused };
        counter.fetch_add(1, Ordering::Relaxed);
    }

    /// The last reload found `settings` settings changed in the config
    /// file that only a restart applies.
    pub fn restart_needed(&self, settings: usize) {
        self.restart_needed
            .store(settings as u64, Ordering::Relaxed);
    }

    /// Writes `resetgate_reload_success`,
    /// `resetgate_reload_timestamp_seconds` and `resetgate_reloads_total`.
    pub fn render(&self, out: &mut String) {
        sample(
            out,
            "resetgate_reload_success",
            "gauge",
            "1 if the last load of the configuration (start, SIGHUP or admin reload) took every file (gateway config, TLS, workflows), 0 if it refused one and kept what was loaded before.",
            self.success.load(Ordering::Relaxed),
        );
        sample(
            out,
            "resetgate_reload_timestamp_seconds",
            "gauge",
            "When the configuration was last loaded (start or SIGHUP), in seconds since the Unix epoch.",
            self.last_ms.load(Ordering::Relaxed) as f64 / 1000.0,
        );
        header(
            out,
            "resetgate_reloads_total",
            "counter",
            "Reloads (SIGHUP) by result: accepted (every file taken) or refused (a file or the TLS certificate refused).",
        );
        for (result, n) in [("accepted", &self.accepted), ("refused", &self.refused)] {
            let _ = writeln!(
                out,
                "resetgate_reloads_total{{result=\"{result}\"}} {}",
                n.load(Ordering::Relaxed)
            );
        }
        sample(
            out,
            "resetgate_reload_restart_needed",
            "gauge",
            "Settings the config file changes that only a restart applies (listen, store, data_dir, ...), as of the last reload; 0 when the running gateway is as its file says.",
            self.restart_needed.load(Ordering::Relaxed),
        );
    }
}

/// Writes `resetgate_build_info{version}` and the `process_*` metrics of
/// this process, read from `/proc` (nothing where there is none): CPU
/// seconds, resident and virtual memory, open and allowed file
/// descriptors, and the start time.
pub fn render_process(out: &mut String) {
    header(
        out,
        "resetgate_build_info",
        "gauge",
        "The running binary's version (always 1).",
    );
    let _ = writeln!(
        out,
        "resetgate_build_info{{version=\"{}\"}} 1",
        escape(env!("CARGO_PKG_VERSION"))
    );
    let Some(stat) = Stat::read("self") else {
        return;
    };
    let mut gauge = |name: &str, kind: &str, help: &str, value: Option<f64>| {
        if let Some(v) = value {
            sample(out, name, kind, help, v);
        }
    };
    gauge(
        "process_cpu_seconds_total",
        "counter",
        "User and system CPU time spent, in seconds.",
        Some(stat.cpu_seconds()),
    );
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let kb = |key: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(key))
            .and_then(|v| v.trim().strip_suffix("kB"))
            .and_then(|v| v.trim().parse::<f64>().ok())
            .map(|v| v * 1024.0)
    };
    gauge(
        "process_resident_memory_bytes",
        "gauge",
        "Resident memory size, in bytes.",
        kb("VmRSS:"),
    );
    gauge(
        "process_virtual_memory_bytes",
        "gauge",
        "Virtual memory size, in bytes.",
        kb("VmSize:"),
    );
    let open = std::fs::read_dir("/proc/self/fd").map(|d| d.count() as f64);
    gauge(
        "process_open_fds",
        "gauge",
        "Open file descriptors.",
        open.ok(),
    );
    let max = std::fs::read_to_string("/proc/self/limits")
        .ok()
        .and_then(|l| {
            l.lines()
                .find(|l| l.starts_with("Max open files"))
                .and_then(|l| l.split_whitespace().nth(3))
                .and_then(|v| v.parse::<f64>().ok())
        });
    gauge(
        "process_max_fds",
        "gauge",
        "The limit of open file descriptors (soft).",
        max,
    );
    let boot = std::fs::read_to_string("/proc/stat").ok().and_then(|s| {
        s.lines()
            .find_map(|l| l.strip_prefix("btime "))
            .and_then(|v| v.trim().parse::<f64>().ok())
    });
    gauge(
        "process_start_time_seconds",
        "gauge",
        "When the process started, in seconds since the Unix epoch.",
        boot.map(|b| b + stat.ticks(19) / USER_HZ),
    );
}

/// The unit of `/proc`'s times: Linux reports them in USER_HZ, which is
/// 100 on every architecture it supports.
const USER_HZ: f64 = 100.0;

/// The fields of `/proc/PID/stat` after the command name.
struct Stat(String);

impl Stat {
    fn read(pid: &str) -> Option<Stat> {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
        // The command name (field 2) may hold spaces; count fields after its ')'.
        let rest = stat.rsplit_once(')')?.1.to_owned();
        Some(Stat(rest))
    }

    /// Field `i` counted from the first after the command name (field 3
    /// of `proc(5)` is 0).
    fn ticks(&self, i: usize) -> f64 {
        self.0
            .split_whitespace()
            .nth(i)
            .and_then(|f| f.parse::<f64>().ok())
            .unwrap_or(0.0)
    }

    /// utime and stime (fields 14 and 15), in seconds.
    fn cpu_seconds(&self) -> f64 {
        (self.ticks(11) + self.ticks(12)) / USER_HZ
    }
}

/// CPU time (user + system) process `pid` has used so far, in seconds,
/// from `/proc/PID/stat` (`"self"` for this process). Benchmarks report CPU
/// per request: on this noisy machine it moves far less between runs than
/// requests per second do.
pub fn cpu_seconds(pid: &str) -> f64 {
    Stat::read(pid).map_or(0.0, |s| s.cpu_seconds())
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

        assert_eq!(h.count(), 2);
        h.observe(Duration::from_secs(60));
        let mut out = String::new();
        h.render(&mut out, "x_seconds", "");
        assert!(out.contains("x_seconds_bucket{le=\"10\"} 2\n"), "{out}");
        assert!(out.contains("x_seconds_bucket{le=\"+Inf\"} 3\n"), "{out}");
        assert!(out.contains("x_seconds_count 3\n"), "{out}");

        let f = Family::new(&["workflow", "outcome"]);
        f.inc(&["a\"b", "ok"]);
        f.inc(&["a\"b", "ok"]);
        assert_eq!(f.get(&["a\"b", "ok"]), 2);
        let mut out = String::new();
        f.render(&mut out, "flows_total");
        assert_eq!(out, "flows_total{workflow=\"a\\\"b\",outcome=\"ok\"} 2\n");
    }

    #[test]
    fn http_series_are_by_matched_route_status_class_and_status() {
        let m = HttpMetrics::default();
        m.observe("/v1/flows/{id}", 200, Duration::from_millis(3));
        m.observe("/v1/flows/{id}", 204, Duration::from_millis(30));
        m.observe("/v1/flows/{id}", 404, Duration::from_micros(20));
        m.observe("unmatched", 404, Duration::from_micros(20));
        m.observe("/odd", 999, Duration::from_micros(20));
        let mut out = String::new();
        m.render(&mut out);
        for line in [
            "resetgate_http_request_duration_seconds_count{route=\"/v1/flows/{id}\",class=\"2xx\"} 2\n",
            "resetgate_http_request_duration_seconds_count{route=\"/v1/flows/{id}\",class=\"4xx\"} 1\n",
            "resetgate_http_responses_total{route=\"/v1/flows/{id}\",status=\"204\"} 1\n",
            "resetgate_http_responses_total{route=\"unmatched\",status=\"404\"} 1\n",
        ] {
            assert!(out.contains(line), "no {line:?} in\n{out}");
        }
        assert!(!out.contains("999"), "{out}");
    }
}

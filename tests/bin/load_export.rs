//! The export phase (issue 14): the portal's step latency while an operator
//! exports the whole audit log, beside the same without the export, same
//! gateway, same client, same minutes.
//!
//! The gateway (sled store) has an `auditor` operator key in its config.
//! First the client fills the audit log with real resets (the `--flows`
//! flows, as in the reset phase) until it holds at least `--records`
//! records (default 200,000), checked every 2 s by asking the admin API
//! for the entry after position `records - 1`. Resets rather than a
//! generated backup restored into the folder: the records are then exactly
//! what a portal's resets leave (kinds, details, sizes, one audit group per
//! request, the `audit_users` index built by the gateway's own indexer),
//! and it takes seconds in a release build (tens of thousands of records a
//! second); the fill doubles as the warm-up.
//!
//! Then `--rounds` times: the reset phase for `--seconds` without an
//! export, then the same phase while a thread of this client (a `ureq`
//! agent, one connection) runs `GET /v1/admin/audit/export` back to back:
//! the whole log, JSON lines, read to the end and counted; the first and
//! last line are parsed and their positions must span exactly the lines
//! counted. The log grows while it is read (the export reads on until it
//! reaches the end), and from round to round, so each round states the log
//! size its first complete export found. When the phase's time is up the
//! export in progress is dropped (its connection closed), so that it does
//! not run into the next phase.
//!
//! Per phase: resets/s; every step's p50 and p99 (all four steps of every
//! reset together) and the password step's p99; the gateway's CPU per
//! reset (with the export: the export's share included) and how many of
//! the machine's cores it and this client (resets and export reader
//! together) kept busy; for the export, the records read per
//! second over the whole phase (partial exports included) and the median
//! time of a complete export. Then the medians over the rounds, the ratio
//! of the p99 with the export to the p99 without, and the gateway's CPU
//! per exported record estimated as (CPU with − resets with × CPU per reset
//! without) / records read.

use std::io::BufRead as _;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::{lean_resets, lean_run, percentile};

/// What the export phase runs on.
pub struct Options<'a> {
    /// The gateway's `http://` base URL.
    pub base: &'a str,
    /// The gateway's process (for its CPU time).
    pub gateway_pid: u32,
    /// One user per flow.
    pub users: &'a [String],
    pub seconds: u64,
    pub rounds: usize,
    /// Fill the log to at least this many records first.
    pub records: u64,
    /// An operator key with a role that may export the audit log.
    pub operator_key: &'a str,
}

/// What one export thread read during a phase.
#[derive(Default)]
struct Exports {
    /// Lines read, partial exports included.
    records: u64,
    /// Complete exports: lines, seconds.
    complete: Vec<(u64, f64)>,
}

/// One phase's results.
struct Phase {
    resets: u64,
    elapsed: f64,
    steps: [Vec<u32>; 4],
    /// CPU seconds of the gateway and of this client during the phase.
    cpu_gateway: f64,
    cpu_client: f64,
    export: Option<Exports>,
}

impl Phase {
    fn resets_per_s(&self) -> f64 {
        self.resets as f64 / self.elapsed
    }

    /// p50 and p99 of every step (ms).
    fn every_step(&self) -> (f64, f64) {
        let mut all: Vec<u32> = self.steps.iter().flatten().copied().collect();
        all.sort_unstable();
        (percentile(&all, 0.5), percentile(&all, 0.99))
    }

    fn password_p99(&self) -> f64 {
        let mut p = self.steps[3].clone();
        p.sort_unstable();
        percentile(&p, 0.99)
    }

    /// Gateway CPU per reset (µs).
    fn cpu_per_reset(&self) -> f64 {
        self.cpu_gateway * 1e6 / self.resets.max(1) as f64
    }

    fn export_records_per_s(&self) -> f64 {
        self.export
            .as_ref()
            .map_or(0.0, |e| e.records as f64 / self.elapsed)
    }

    /// The median time of a complete export (s) and the lines of the first.
    fn full_export(&self) -> Option<(f64, u64)> {
        let e = self.export.as_ref()?;
        let first = e.complete.first()?.0;
        let mut t: Vec<f64> = e.complete.iter().map(|c| c.1).collect();
        Some((median(&mut t), first))
    }
}

fn median(x: &mut [f64]) -> f64 {
    if x.is_empty() {
        return f64::NAN;
    }
    x.sort_by(f64::total_cmp);
    x[x.len() / 2]
}

/// The `position` of one exported line.
fn position(line: &[u8]) -> u64 {
    let v: Value = serde_json::from_slice(line)
        .unwrap_or_else(|e| panic!("an exported line is not JSON ({e})"));
    v["position"]
        .as_u64()
        .expect("an exported entry's position")
}

/// Exports the whole log, again and again, until `deadline`; an export
/// still running then is dropped.
fn export_until(agent: &ureq::Agent, base: &str, key: &str, deadline: Instant) -> Exports {
    let mut out = Exports::default();
    while Instant::now() < deadline {
        let started = Instant::now();
        let mut resp = agent
            .get(format!("{base}/v1/admin/audit/export"))
            .header("X-Api-Key", key)
            .call()
            .unwrap();
        assert_eq!(resp.status(), 200, "the export was refused");
        let mut reader = std::io::BufReader::with_capacity(1 << 16, resp.body_mut().as_reader());
        let (mut line, mut last) = (Vec::new(), Vec::new());
        let (mut lines, mut first) = (0u64, None);
        let mut finished = true;
        loop {
            line.clear();
            if reader.read_until(b'\n', &mut line).unwrap() == 0 {
                break;
            }
            lines += 1;
            if first.is_none() {
                first = Some(position(&line));
            }
            std::mem::swap(&mut line, &mut last);
            if lines % 1024 == 0 && Instant::now() >= deadline {
                finished = false;
                break;
            }
        }
        out.records += lines;
        if !finished {
            break; // dropped with the response: its connection is closed
        }
        let (first, last) = (first.expect("an empty export"), position(&last));
        assert_eq!(first, 0, "the export did not start at the log's start");
        assert_eq!(
            last - first + 1,
            lines,
            "the export's positions do not span the lines read"
        );
        out.complete.push((lines, started.elapsed().as_secs_f64()));
    }
    out
}

/// Resets for `seconds`, with the export beside them if `export` is given
/// (the agent, the base URL and the key).
fn measure(
    addr: &str,
    gateway_pid: u32,
    users: &[String],
    seconds: u64,
    export: Option<(&ureq::Agent, &str, &str)>,
) -> Phase {
    let pid = gateway_pid.to_string();
    let before = resetgate_tests::cpu_seconds(&pid);
    let client_before = resetgate_tests::cpu_seconds("self");
    let started = Instant::now();
    let deadline = started + Duration::from_secs(seconds);
    let (per_flow, exports) = std::thread::scope(|s| {
        let exporter = export
            .map(|(agent, base, key)| s.spawn(move || export_until(agent, base, key, deadline)));
        let per_flow = lean_run(
            users
                .iter()
                .map(|user| {
                    Box::pin(lean_resets(addr.to_owned(), user.clone(), deadline))
                        as std::pin::Pin<
                            Box<dyn std::future::Future<Output = (u64, [Vec<u32>; 4])>>,
                        >
                })
                .collect(),
        );
        (per_flow, exporter.map(|h| h.join().unwrap()))
    });
    let elapsed = started.elapsed().as_secs_f64();
    let after = resetgate_tests::cpu_seconds(&pid);
    let client_after = resetgate_tests::cpu_seconds("self");
    let mut phase = Phase {
        resets: per_flow.iter().map(|(d, _)| d).sum(),
        elapsed,
        steps: Default::default(),
        cpu_gateway: after - before,
        cpu_client: client_after - client_before,
        export: exports,
    };
    for (_, lat) in per_flow {
        for (all, mine) in phase.steps.iter_mut().zip(lat) {
            all.extend(mine);
        }
    }
    phase
}

/// Whether the log holds an entry at `position`.
fn holds(agent: &ureq::Agent, base: &str, key: &str, position: u64) -> bool {
    let after = position
        .checked_sub(1)
        .map_or(String::new(), |a| format!("&after={a}"));
    let mut resp = agent
        .get(format!("{base}/v1/admin/audit?limit=1{after}"))
        .header("X-Api-Key", key)
        .call()
        .unwrap();
    assert_eq!(resp.status(), 200, "the audit query was refused");
    let v: Value = serde_json::from_str(&resp.body_mut().read_to_string().unwrap()).unwrap();
    !v["entries"]
        .as_array()
        .expect("a page's entries")
        .is_empty()
}

/// The export phase; see the module documentation.
pub fn run(o: &Options<'_>) {
    let Options {
        base,
        gateway_pid,
        users,
        seconds,
        rounds,
        records,
        operator_key: key,
    } = *o;
    let addr = base.trim_start_matches("http://");
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .build()
        .new_agent();

    let filling = Instant::now();
    let mut resets = 0;
    while !holds(&agent, base, key, records.saturating_sub(1)) {
        resets += measure(addr, gateway_pid, users, 2, None).resets;
    }
    let fill = filling.elapsed().as_secs_f64();

    let mut runs: Vec<(Phase, Phase)> = Vec::new();
    for _ in 0..rounds {
        let without = measure(addr, gateway_pid, users, seconds, None);
        let with = measure(addr, gateway_pid, users, seconds, Some((&agent, base, key)));
        runs.push((without, with));
    }

    let cores = std::thread::available_parallelism().map_or(0, |n| n.get()) as f64;
    println!();
    println!(
        "Export: {} flows, {seconds} s per phase, {rounds} rounds; the log filled to ≥ {records} records by {resets} resets in {fill:.1} s",
        users.len()
    );
    println!();
    println!(
        "| round | export | resets/s | every step p50 / p99 | password p99 | gateway CPU per reset | cores busy (of {cores:.0}): gateway / client | exported records/s | complete exports: median time (log size) |"
    );
    println!("|---|---|---|---|---|---|---|---|---|");
    for (round, pair) in runs.iter().enumerate() {
        for p in [&pair.0, &pair.1] {
            let (p50, p99) = p.every_step();
            let export = p.export.as_ref();
            println!(
                "| {} | {} | **{:.0}** | {p50:.2} / **{p99:.2}** ms | {:.2} ms | {:.0} µs | {:.2} / {:.2} | {} | {} |",
                round + 1,
                if export.is_some() { "yes" } else { "no" },
                p.resets_per_s(),
                p.password_p99(),
                p.cpu_per_reset(),
                p.cpu_gateway / p.elapsed,
                p.cpu_client / p.elapsed,
                export.map_or("–".to_owned(), |_| format!(
                    "{:.0}",
                    p.export_records_per_s()
                )),
                match (export, p.full_export()) {
                    (None, _) => "–".to_owned(),
                    (Some(_), None) => "none complete".to_owned(),
                    (Some(e), Some((t, n))) =>
                        format!("{} × {t:.2} s ({n} records)", e.complete.len()),
                },
            );
        }
    }
    let med = |f: &dyn Fn(&Phase) -> f64, with: bool| {
        let mut x: Vec<f64> = runs
            .iter()
            .map(|(a, b)| f(if with { b } else { a }))
            .collect();
        median(&mut x)
    };
    let p99 = |p: &Phase| p.every_step().1;
    let p50 = |p: &Phase| p.every_step().0;
    let rps = |p: &Phase| p.resets_per_s();
    let cpu = |p: &Phase| p.cpu_per_reset();
    let export_cpu: Vec<f64> = runs
        .iter()
        .map(|(a, b)| {
            let records = b.export.as_ref().map_or(0, |e| e.records).max(1) as f64;
            (b.cpu_gateway - b.resets as f64 * a.cpu_gateway / a.resets.max(1) as f64) * 1e6
                / records
        })
        .collect();
    let ratios: Vec<String> = runs
        .iter()
        .map(|(a, b)| format!("{:.2}", p99(b) / p99(a)))
        .collect();
    let mut full: Vec<f64> = runs
        .iter()
        .filter_map(|(_, b)| b.full_export())
        .map(|f| f.0)
        .collect();
    println!();
    println!("| median of {rounds} rounds | without export | with export | with / without |");
    println!("|---|---|---|---|");
    let line = |what: &str, f: &dyn Fn(&Phase) -> f64, unit: &str, digits: usize| {
        let (a, b) = (med(f, false), med(f, true));
        println!(
            "| {what} | {a:.digits$}{unit} | {b:.digits$}{unit} | {:.2} |",
            b / a
        );
    };
    line("resets/s", &rps, "", 0);
    line("every step p50", &p50, " ms", 2);
    line("every step p99", &p99, " ms", 2);
    line("password step p99", &|p: &Phase| p.password_p99(), " ms", 2);
    line("gateway CPU per reset", &cpu, " µs", 0);
    println!(
        "| export | | {:.0} records/s; a complete export {:.2} s; gateway CPU {:.2} µs per record | |",
        med(&|p: &Phase| p.export_records_per_s(), true),
        median(&mut full),
        median(&mut export_cpu.clone()),
    );
    println!();
    println!("p99 with / without, per round: {}", ratios.join(", "));
}

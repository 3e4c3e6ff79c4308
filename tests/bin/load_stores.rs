//! The stores phase (issue 13): complete resets with the sled store and
//! with one, two and three gateways on one PostgreSQL, alternating, same
//! client, same minutes.
//!
//! The client starts a PostgreSQL 15 cluster ([`Postgres`], the tests'
//! harness: `fsync` and `synchronous_commit` on) with `pg_stat_statements`
//! loaded, one gateway on the sled store and `--gateways` gateways (default
//! 3) on the cluster, each on its own loopback port with its own data
//! folder and node name and the same workflows, plugins and data key. Then,
//! `--rounds` times: the reset phase against the sled gateway, then against
//! the first PostgreSQL gateway, the first two, the first three, the
//! `--flows` flows spread round robin over the phase's gateways (flow `i`
//! talks to gateway `i mod n` over its own keep-alive connection; each flow
//! has its own user). Every gateway runs all along; the others idle.
//!
//! Per phase: resets/s, every step's p50 and p99, the password step's p99;
//! CPU per request of the gateways (together), of PostgreSQL (the postmaster
//! and its children) and of this client; and, from the server's own
//! statistics, database transactions per request (`pg_stat_database`
//! `xact_commit + xact_rollback`, read after the backends have reported)
//! and statements per request (`pg_stat_statements` calls by the gateways'
//! role, `BEGIN` and `COMMIT` included: with the sync client each statement
//! is one round trip). The most frequent statements of the last phase are
//! listed per request.

use std::path::Path;
use std::time::{Duration, Instant};

use resetgate_tests::postgres::Postgres;
use resetgate_tests::{Gateway, write_config};

use crate::{lean_resets, lean_run, percentile};

/// One phase's results.
struct Phase {
    resets: u64,
    elapsed: f64,
    steps: [Vec<u32>; 4],
    cpu_gateways: f64,
    cpu_postgres: f64,
    cpu_client: f64,
    xacts: Option<f64>,
    statements: Option<f64>,
}

impl Phase {
    fn requests(&self) -> usize {
        self.steps.iter().map(Vec::len).sum()
    }
}

/// CPU seconds of process `root` and of its children (PostgreSQL's
/// postmaster and its backends).
fn tree_cpu(root: u32) -> f64 {
    let mut total = resetgate_tests::cpu_seconds(&root.to_string());
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return total;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(pid) = name
            .to_str()
            .filter(|n| n.bytes().all(|b| b.is_ascii_digit()))
        else {
            continue;
        };
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        let ppid = stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().nth(1))
            .and_then(|p| p.parse::<u32>().ok());
        if ppid == Some(root) {
            total += resetgate_tests::cpu_seconds(pid);
        }
    }
    total
}

/// 64 hexadecimal characters from the system's random source.
fn random_hex() -> String {
    use std::io::Read;
    let mut bytes = [0u8; 32];
    std::fs::File::open("/dev/urandom")
        .unwrap()
        .read_exact(&mut bytes)
        .unwrap();
    hex::encode(bytes)
}

/// Writes `text` to `path`, readable by its owner only.
fn private_file(path: &Path, text: &str) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::write(path, text).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).unwrap();
}

/// The sum of the rows `sql` returns (one number each), or `None`.
fn number(pg: &Postgres, sql: &str) -> Option<f64> {
    pg.psql(sql).trim().parse::<f64>().ok()
}

const XACTS: &str =
    "SELECT xact_commit + xact_rollback FROM pg_stat_database WHERE datname = 'resetgate'";
const CALLS: &str =
    "SELECT coalesce(sum(calls), 0) FROM pg_stat_statements WHERE userid = 'resetgate'::regrole";

/// Runs resets for `seconds` with flow `i` on `addrs[i % n]`.
fn measure(
    addrs: &[String],
    gateway_pids: &[u32],
    pg: Option<&Postgres>,
    users: &[String],
    seconds: u64,
) -> Phase {
    let pg_pid = pg.and_then(Postgres::pid);
    let before_stats = pg.map(|pg| {
        pg.psql("SELECT pg_stat_statements_reset()");
        number(pg, XACTS)
    });
    let cpu = || {
        (
            gateway_pids
                .iter()
                .map(|p| resetgate_tests::cpu_seconds(&p.to_string()))
                .sum::<f64>(),
            pg_pid.map_or(0.0, tree_cpu),
            resetgate_tests::cpu_seconds("self"),
        )
    };
    let before = cpu();
    let started = Instant::now();
    let deadline = started + Duration::from_secs(seconds);
    let per_flow = lean_run(
        users
            .iter()
            .enumerate()
            .map(|(i, user)| {
                Box::pin(lean_resets(
                    addrs[i % addrs.len()].clone(),
                    user.clone(),
                    deadline,
                ))
                    as std::pin::Pin<Box<dyn std::future::Future<Output = (u64, [Vec<u32>; 4])>>>
            })
            .collect(),
    );
    let elapsed = started.elapsed().as_secs_f64();
    let after = cpu();
    let mut phase = Phase {
        resets: per_flow.iter().map(|(d, _)| d).sum(),
        elapsed,
        steps: Default::default(),
        cpu_gateways: after.0 - before.0,
        cpu_postgres: after.1 - before.1,
        cpu_client: after.2 - before.2,
        xacts: None,
        statements: None,
    };
    for (_, lat) in per_flow {
        for (all, mine) in phase.steps.iter_mut().zip(lat) {
            all.extend(mine);
        }
    }
    if let (Some(pg), Some(xacts_before)) = (pg, before_stats) {
        // Backends report their transaction counts when idle, at most once
        // a second: read until the count stops moving.
        let mut xacts_after = number(pg, XACTS);
        for _ in 0..20 {
            std::thread::sleep(Duration::from_millis(1000));
            let now = number(pg, XACTS);
            // Each reading is a transaction of its own.
            if now.zip(xacts_after).is_some_and(|(n, a)| n <= a + 1.0) {
                break;
            }
            xacts_after = now;
        }
        let requests = phase.requests().max(1) as f64;
        phase.xacts = xacts_before
            .zip(xacts_after)
            .map(|(b, a)| (a - b) / requests);
        phase.statements = number(pg, CALLS).map(|c| c / requests);
    }
    phase
}

fn row(round: usize, store: &str, gateways: usize, p: &mut Phase) {
    let requests = p.requests().max(1) as f64;
    for lat in p.steps.iter_mut() {
        lat.sort_unstable();
    }
    let mut all: Vec<u32> = p.steps.iter().flatten().copied().collect();
    all.sort_unstable();
    let per = |x: f64| x * 1e6 / requests;
    let opt = |x: Option<f64>| x.map_or("–".to_owned(), |v| format!("{v:.2}"));
    println!(
        "| {round} | {store} | {gateways} | **{:.0}** | {:.2} / **{:.2}** ms | {:.2} ms | {:.0} / {:.0} / {:.0} µs | {} | {} |",
        p.resets as f64 / p.elapsed,
        percentile(&all, 0.5),
        percentile(&all, 0.99),
        percentile(&p.steps[3], 0.99),
        per(p.cpu_gateways),
        per(p.cpu_postgres),
        per(p.cpu_client),
        opt(p.xacts),
        opt(p.statements),
    );
}

/// What the stores phase runs on.
pub struct Options<'a> {
    /// The client's temporary folder (each gateway gets a folder in it).
    pub dir: &'a Path,
    /// The plugins and workflows every gateway serves.
    pub plugins: &'a Path,
    pub workflows: &'a Path,
    /// The `api:` section (the client's key, rate limits out of the way).
    pub api_yaml: &'a str,
    /// One user per flow.
    pub users: &'a [String],
    pub seconds: u64,
    pub rounds: usize,
    /// The most gateways on PostgreSQL.
    pub gateways: usize,
    /// Each PostgreSQL gateway's pool size.
    pub pool: u64,
}

/// The stores phase; see the module documentation.
pub fn run(o: &Options<'_>) {
    let Options {
        dir,
        plugins,
        workflows,
        api_yaml,
        users,
        seconds,
        rounds,
        gateways: max_gateways,
        pool,
    } = *o;
    let mut pg = Postgres::start();
    // pg_stat_statements needs a restart to load.
    pg.psql("ALTER SYSTEM SET shared_preload_libraries = 'pg_stat_statements'");
    pg.stop();
    pg.start_again();
    pg.psql("CREATE EXTENSION IF NOT EXISTS pg_stat_statements");
    let version = pg.psql("SHOW server_version");

    private_file(&dir.join("db-password"), pg.password());
    private_file(&dir.join("data-key"), &random_hex());
    let common = format!(
        "{api_yaml}plugins: {plugins:?}\nworkflows: {workflows:?}\ndata_key_secret: datakey\n"
    );
    let secrets = |db: bool| {
        format!(
            "secrets:\n  datakey: {{ file: {:?} }}\n{}",
            dir.join("data-key"),
            if db {
                format!("  db: {{ file: {:?} }}\n", dir.join("db-password"))
            } else {
                String::new()
            }
        )
    };
    let start = |name: &str, store: &str, db: bool| {
        let folder = dir.join(name);
        std::fs::create_dir_all(&folder).unwrap();
        let config = write_config(&folder, &format!("{common}{}{store}", secrets(db)));
        Gateway::start_config(&config, &[])
    };
    let sled = start("sled", "", false);
    let gateways: Vec<Gateway> = (1..=max_gateways)
        .map(|k| {
            start(
                &format!("gw{k}"),
                &format!(
                    "store:\n  backend: postgres\n  url: {:?}\n  password_secret: db\n  tls: {{ mode: disable }}\n  pool: {pool}\n  node: gw{k}\n",
                    pg.url()
                ),
                true,
            )
        })
        .collect();
    let addr = |g: &Gateway| g.addr.to_string();

    // Warm-up: every gateway's plugins instantiated, connections made.
    let warm: Vec<String> = std::iter::once(addr(&sled))
        .chain(gateways.iter().map(addr))
        .collect();
    for a in &warm {
        measure(std::slice::from_ref(a), &[], None, users, 1);
    }

    println!();
    println!(
        "Stores: {} flows, {seconds} s per phase, PostgreSQL {version} (fsync on, synchronous_commit on, shared_buffers 16MB), pool {pool} per gateway",
        users.len()
    );
    println!();
    println!(
        "| round | store | gateways | resets/s | every step p50 / p99 | password p99 | CPU per request: gateways / PostgreSQL / client | transactions per request | statements per request |"
    );
    println!("|---|---|---|---|---|---|---|---|---|");
    let mut last_requests = 0;
    for round in 1..=rounds {
        let mut p = measure(&[addr(&sled)], &[sled.pid()], None, users, seconds);
        row(round, "sled", 1, &mut p);
        for n in 1..=max_gateways {
            let addrs: Vec<String> = gateways[..n].iter().map(addr).collect();
            let pids: Vec<u32> = gateways[..n].iter().map(Gateway::pid).collect();
            let mut p = measure(&addrs, &pids, Some(&pg), users, seconds);
            row(round, "postgres", n, &mut p);
            last_requests = p.requests().max(1);
        }
    }
    // What the last phase's statements were, per request.
    println!();
    println!("Statements of the last phase, per request ({last_requests} requests):");
    println!();
    println!("| per request | statement |");
    println!("|---|---|");
    for line in pg
        .psql(
            "SELECT calls || '|' || regexp_replace(left(query, 120), '\\s+', ' ', 'g') FROM pg_stat_statements \
             WHERE userid = 'resetgate'::regrole ORDER BY calls DESC LIMIT 15",
        )
        .lines()
    {
        if let Some((calls, query)) = line.split_once('|') {
            let calls: f64 = calls.parse().unwrap_or(0.0);
            println!(
                "| {:.3} | `{}` |",
                calls / last_requests as f64,
                query.replace('|', "\\|")
            );
        }
    }
    for g in gateways {
        assert!(g.stop(), "a gateway did not stop cleanly");
    }
    assert!(sled.stop(), "the sled gateway did not stop cleanly");
    drop(pg);
}

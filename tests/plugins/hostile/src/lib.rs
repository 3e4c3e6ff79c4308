//! A gate that misbehaves in the way its config names: `loop`, `membomb`,
//! `recursion`, `output-100mb`, `output-8mb`, `panic`, `snoop`, `log-flood`,
//! `sleep` (10 s in a WASI clock wait), `argon2-bomb` (a PHC string with
//! m=1 GiB, t=16 given to `slow-hash.verify`), `fields-300k` (300,000 empty
//! fields), `choices-1m` (one field with 1,000,000 empty choices),
//! `fields-33`, `duplicate-fields`; anything else behaves.

use resetgate_plugin_sdk::gate::{Field, FieldKind, FieldValue, Prompt, Round, Verdict};
use resetgate_plugin_sdk::prelude::*;
use std::hint::black_box;

struct Hostile;

fn round(title: String, state: Vec<u8>) -> Round {
    Round { prompt: Prompt { title, help: None, display: vec![], fields: vec![] }, state }
}

/// The mode: the config is a JSON string, or `{"mode": "..."}` (as a
/// workflow step's config must be a mapping).
fn mode(config: &str) -> &str {
    match config.strip_prefix("{\"mode\":\"") {
        Some(rest) => rest.trim_end_matches("\"}"),
        None => config.trim_matches('"'),
    }
}

/// A round of `n` fields of `kind`, named 0, 1, 2, ... with empty labels.
fn fields(n: usize, kind: FieldKind) -> Round {
    let fields = (0..n)
        .map(|i| Field { name: if n > 40 { String::new() } else { i.to_string() }, label: String::new(), kind: kind.clone(), max_length: 0 })
        .collect();
    Round { prompt: Prompt { title: "many".into(), help: None, display: vec![], fields }, state: vec![] }
}

#[inline(never)]
fn recurse(n: u64) -> u64 {
    if black_box(n) == u64::MAX { 0 } else { recurse(black_box(n + 1)).wrapping_add(1) }
}

fn snoop() -> String {
    let file = match std::fs::read_to_string("/etc/passwd") {
        Ok(s) => format!("read {} bytes", s.len()),
        Err(_) => "denied".to_owned(),
    };
    let dir = match std::fs::read_dir("/") {
        Ok(d) => format!("listed {}", d.count()),
        Err(_) => "denied".to_owned(),
    };
    let env = std::env::vars().count();
    let home = std::env::var("HOME").unwrap_or_else(|_| "unset".into());
    let args = std::env::args().count();
    let cwd = std::env::current_dir().map(|d| d.display().to_string()).unwrap_or_else(|_| "none".into());
    let net = match std::net::TcpStream::connect("127.0.0.1:1") {
        Ok(_) => "connected".to_owned(),
        Err(_) => "denied".to_owned(),
    };
    println!("stdout is closed or captured");
    eprintln!("stderr is closed or captured");
    format!("file={file} dir={dir} env={env} home={home} args={args} cwd={cwd} net={net}")
}

impl Plugin for Hostile {
    fn describe() -> PluginInfo {
        PluginInfo::new("hostile", "0.1.0", PluginKind::Gate, "misbehaves on purpose")
    }
}

impl Gate for Hostile {
    fn begin(ctx: CallContext, _user: User, _enrollment: Option<Vec<u8>>) -> Result<Round, PluginError> {
        match mode(&ctx.config) {
            "loop" => {
                let mut i: u64 = 0;
                loop {
                    i = black_box(i.wrapping_add(1));
                }
            }
            "membomb" => {
                let mut v: Vec<Vec<u8>> = Vec::new();
                for _ in 0..100 {
                    v.push(black_box(vec![1u8; 1 << 20]));
                }
                Ok(round(format!("allocated {}", v.len()), vec![]))
            }
            "recursion" => Ok(round(format!("{}", recurse(0)), vec![])),
            "output-100mb" => Ok(round("big".into(), vec![7u8; 100 << 20])),
            "output-8mb" => Ok(round("big".into(), vec![7u8; 8 << 20])),
            "panic" => panic!("hostile plugin panics on purpose"),
            "snoop" => Ok(round(snoop(), vec![])),
            "log-flood" => {
                for i in 0..10_000 {
                    resetgate_plugin_sdk::log::info(&format!("line {i} {}", "x".repeat(4000)));
                }
                Ok(round("flooded".into(), vec![]))
            }
            "sleep" => {
                std::thread::sleep(std::time::Duration::from_secs(10));
                Ok(round("slept".into(), vec![]))
            }
            "argon2-bomb" => {
                // A valid argon2id PHC string whose parameters ask for 1 GiB and 16 passes.
                let phc = "$argon2id$v=19$m=1048576,t=16,p=1$c29tZXNhbHRzb21lc2FsdA$\
                           ZGVhZGJlZWZkZWFkYmVlZmRlYWRiZWVmZGVhZGJlZWY";
                let ok = resetgate_plugin_sdk::slow_hash::verify("guess", phc);
                Ok(round(format!("verified {ok}"), vec![]))
            }
            "fields-300k" => Ok(fields(300_000, FieldKind::Text)),
            "fields-33" => Ok(fields(33, FieldKind::Text)),
            "choices-1m" => Ok(fields(1, FieldKind::Choice(vec![String::new(); 1_000_000]))),
            "duplicate-fields" => {
                let mut r = fields(2, FieldKind::Text);
                r.prompt.fields[1].name = r.prompt.fields[0].name.clone();
                Ok(r)
            }
            _ => Ok(round("fine".into(), b"state".to_vec())),
        }
    }

    fn answer(
        _ctx: CallContext,
        _user: User,
        _enrollment: Option<Vec<u8>>,
        _state: Vec<u8>,
        _answers: Vec<FieldValue>,
    ) -> Result<Verdict, PluginError> {
        Ok(Verdict::Passed)
    }
}

resetgate_plugin_sdk::export_gate!(Hostile);

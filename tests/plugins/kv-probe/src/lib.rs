//! A gate that uses the `kv` capability as its call's config says, to test
//! the host's side of it. The config is a JSON string of words:
//! `set KEY VALUE`, `get KEY`, `delete KEY`, `keys PREFIX LIMIT`,
//! `set-big KEY LEN` (a value of LEN bytes), `get-long LEN` (a key of LEN
//! bytes), and beyond `kv`: `now` (`clock.now-ms`), `secret NAME`
//! (`secrets.available`). `begin` returns what happened as the prompt's
//! title.

use resetgate_plugin_sdk::gate::{FieldValue, Prompt, Round, Verdict};
use resetgate_plugin_sdk::{clock, kv, secrets};
use resetgate_plugin_sdk::prelude::*;

struct KvProbe;

impl Plugin for KvProbe {
    fn describe() -> PluginInfo {
        PluginInfo::new("kv-probe", "0.1.0", PluginKind::Gate, "uses kv as told")
            .with_config_schema(r#"{"type":"string"}"#)
    }
}

fn run(command: &str) -> String {
    let words: Vec<&str> = command.split(' ').collect();
    let num = |i: usize| {
        words
            .get(i)
            .and_then(|w| w.parse::<u32>().ok())
            .unwrap_or(0)
    };
    let word = |i: usize| words.get(i).copied().unwrap_or("");
    match word(0) {
        "set" => {
            kv::set(word(1), word(2).as_bytes());
            "ok".into()
        }
        "get" => match kv::get(word(1)) {
            Some(v) => format!("some:{}", String::from_utf8_lossy(&v)),
            None => "none".into(),
        },
        "delete" => kv::delete(word(1)).to_string(),
        "keys" => kv::keys(word(1), num(2)).join(","),
        "set-big" => {
            kv::set(
                word(1),
                &b"SECRETVALUE".repeat(num(2) as usize / 11 + 1)[..num(2) as usize],
            );
            "ok".into()
        }
        "get-long" => format!(
            "{:?}",
            kv::get(&"k".repeat(num(1) as usize)).map(|v| v.len())
        ),
        "now" => clock::now_ms().to_string(),
        "secret" => secrets::available(word(1)).to_string(),
        other => format!("unknown op {other}"),
    }
}

impl Gate for KvProbe {
    fn begin(
        ctx: CallContext,
        _user: User,
        _enrollment: Option<Vec<u8>>,
    ) -> Result<Round, PluginError> {
        let title = run(ctx.config.trim_matches('"'));
        Ok(Round {
            prompt: Prompt {
                title,
                help: None,
                display: vec![],
                fields: vec![],
            },
            state: vec![],
        })
    }

    fn answer(
        _: CallContext,
        _: User,
        _: Option<Vec<u8>>,
        _: Vec<u8>,
        _: Vec<FieldValue>,
    ) -> Result<Verdict, PluginError> {
        Ok(Verdict::Passed)
    }
}

resetgate_plugin_sdk::export_gate!(KvProbe);

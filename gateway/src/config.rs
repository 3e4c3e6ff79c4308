//! The gateway config: where the plugins, workflows and state are, where
//! the gateway listens, and the named capabilities (LDAP connections,
//! secrets, commands, HTTP origins) that workflows may grant. A workflow can
//! only grant what this file defines: it cannot invent a secret.
//!
//! Every setting is optional and `GatewayConfig::default()` is what
//! `resetgate serve` runs with when there is no config file. The file is
//! read the way workflows are (`schemas/config.schema.json`, every error at
//! `file:line:column`). Relative paths written in the file are relative to
//! the file's folder; the built-in defaults are relative to the working folder.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::Duration;

use serde::Deserialize;
use serde_json::Value;

use crate::workflow::diagnostic::{Diagnostic, list};
use crate::workflow::file::{self, Kind};
use crate::workflow::units::HumanDuration;
use crate::workflow::yaml::{Document, Pos, escape};

/// The gateway config's JSON Schema, as shipped in `schemas/`.
pub const SCHEMA: &str = include_str!("../../schemas/config.schema.json");

/// The longest an allow-listed command may be given.
const MAX_COMMAND_TIMEOUT: Duration = Duration::from_secs(3600);

/// An LDAP connection workflows may grant by name.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LdapConnection {
    /// `ldaps://host[:port]` (or `ldap://`, upgraded with StartTLS).
    pub url: String,
    /// The DN to bind as; `None` for an anonymous connection.
    pub bind_dn: Option<String>,
    /// The name of the secret (in [`GatewayConfig::secrets`]) holding the bind password.
    pub bind_secret: Option<String>,
}

/// Where the host reads a secret.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SecretSource {
    /// An environment variable.
    Env(String),
    /// A file (resolved against the config file's folder).
    File(PathBuf),
}

/// An allow-listed command workflows may grant by name.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CommandSpec {
    /// The program (an absolute path) and its arguments; run without a shell.
    pub argv: Vec<String>,
    /// How long it may run.
    pub timeout: Duration,
}

/// The gateway's config.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GatewayConfig {
    /// The file it was read from; `None` for the built-in defaults.
    pub source: Option<PathBuf>,
    /// Folder of plugin components: plugin `NAME` is `<plugins>/NAME.wasm`.
    pub plugins: PathBuf,
    /// Folder of workflow files.
    pub workflows: PathBuf,
    /// Folder for state and the plugin cache.
    pub data_dir: PathBuf,
    /// Where to listen.
    pub listen: SocketAddr,
    /// LDAP connections by name.
    pub ldap: BTreeMap<String, LdapConnection>,
    /// Secrets by name.
    pub secrets: BTreeMap<String, SecretSource>,
    /// Allow-listed commands by name.
    pub commands: BTreeMap<String, CommandSpec>,
    /// Origins plugins may be granted HTTP to (lowercase, no trailing slash).
    pub http_origins: Vec<String>,
}

impl Default for GatewayConfig {
    fn default() -> Self {
        GatewayConfig {
            source: None,
            plugins: PathBuf::from("target/plugins"),
            workflows: PathBuf::from("workflows"),
            data_dir: PathBuf::from(".resetgate"),
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            ldap: BTreeMap::new(),
            secrets: BTreeMap::new(),
            commands: BTreeMap::new(),
            http_origins: Vec::new(),
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    #[allow(dead_code)] // probed before the rest is read
    version: u32,
    #[serde(default)]
    plugins: Option<PathBuf>,
    #[serde(default)]
    workflows: Option<PathBuf>,
    #[serde(default)]
    data_dir: Option<PathBuf>,
    #[serde(default)]
    listen: Option<String>,
    #[serde(default)]
    ldap: BTreeMap<String, RawLdap>,
    #[serde(default)]
    secrets: BTreeMap<String, RawSecret>,
    #[serde(default)]
    commands: BTreeMap<String, RawCommand>,
    #[serde(default)]
    http_origins: Vec<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawLdap {
    url: String,
    #[serde(default)]
    bind_dn: Option<String>,
    #[serde(default)]
    bind_secret: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSecret {
    #[serde(default)]
    env: Option<String>,
    #[serde(default)]
    file: Option<PathBuf>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCommand {
    argv: Vec<String>,
    #[serde(default)]
    timeout: Option<HumanDuration>,
}

/// The embedded schema and its compiled validator, built once.
fn schema() -> Result<&'static (Value, jsonschema::Validator), &'static str> {
    static SCHEMA_CELL: OnceLock<Result<(Value, jsonschema::Validator), String>> = OnceLock::new();
    SCHEMA_CELL
        .get_or_init(|| {
            let value: Value = serde_json::from_str(SCHEMA).map_err(|e| e.to_string())?;
            let validator = file::compile(&value)?;
            Ok((value, validator))
        })
        .as_ref()
        .map_err(String::as_str)
}

/// The origin form used for comparisons: lowercase, no trailing slash.
pub fn normalise_origin(origin: &str) -> String {
    origin.trim_end_matches('/').to_ascii_lowercase()
}

impl GatewayConfig {
    /// Reads and checks the config file at `path`: every problem is reported,
    /// each at `file:line:column`.
    pub fn load(path: &Path) -> Result<GatewayConfig, Vec<Diagnostic>> {
        let bytes = file::read(path)?;
        Self::from_bytes(path, &bytes)
    }

    /// Reads a config from `bytes`, as if from the file `path` (which names
    /// the file in diagnostics and anchors relative paths).
    pub fn from_bytes(path: &Path, bytes: &[u8]) -> Result<GatewayConfig, Vec<Diagnostic>> {
        let (schema, validator) = schema().map_err(|e| {
            vec![Diagnostic::error(
                path,
                Pos::START,
                "internal",
                format!("the built-in config schema is broken: {e}"),
            )]
        })?;
        let kind = Kind {
            noun: "gateway config",
            version: 1,
        };
        let doc = file::document(path, bytes, kind, schema, validator)?;
        let raw: RawConfig = serde_json::from_value(doc.value.clone()).map_err(|e| {
            vec![Diagnostic::error(
                path,
                Pos::START,
                "internal",
                format!("the config passed its schema but cannot be read: {e}"),
            )]
        })?;
        build(path, &doc, raw)
    }

    /// Whether `origin` is one of [`GatewayConfig::http_origins`].
    pub fn allows_origin(&self, origin: &str) -> bool {
        let wanted = normalise_origin(origin);
        self.http_origins.contains(&wanted)
    }

    /// Where this config is described in messages: its file, or the defaults.
    pub fn describe(&self) -> String {
        match &self.source {
            Some(p) => format!("the gateway config ({})", p.display()),
            None => "the gateway config (none given: built-in defaults)".to_owned(),
        }
    }
}

fn build(path: &Path, doc: &Document, raw: RawConfig) -> Result<GatewayConfig, Vec<Diagnostic>> {
    let base = path.parent().unwrap_or(Path::new(""));
    let resolve = |p: PathBuf| if p.is_absolute() { p } else { base.join(p) };
    let defaults = GatewayConfig::default();
    let mut errors = Vec::new();

    let listen = match raw.listen {
        None => defaults.listen,
        Some(text) => match text.parse::<SocketAddr>() {
            Ok(addr) => addr,
            Err(_) => {
                errors.push(
                    Diagnostic::error(
                        path,
                        doc.value_pos("/listen"),
                        "value",
                        format!("`listen` is not an address and port: `{text}`"),
                    )
                    .with_help(
                        "write an IP address and a port, e.g. `127.0.0.1:8080` or `[::1]:8080`",
                    ),
                );
                defaults.listen
            }
        },
    };

    let mut secrets = BTreeMap::new();
    for (name, s) in raw.secrets {
        let source = match (s.env, s.file) {
            (Some(var), None) => SecretSource::Env(var),
            (None, Some(f)) => SecretSource::File(resolve(f)),
            // The schema allows exactly one of the two.
            _ => continue,
        };
        secrets.insert(name, source);
    }

    let mut ldap = BTreeMap::new();
    for (name, l) in raw.ldap {
        if let Some(secret) = &l.bind_secret
            && !secrets.contains_key(secret)
        {
            let at = format!("/ldap/{}/bind_secret", escape(&name));
            errors.push(
                Diagnostic::error(
                    path,
                    doc.value_pos(&at),
                    "undefined",
                    format!("LDAP connection `{name}` binds with secret `{secret}`, which `secrets` does not define"),
                )
                .with_help(if secrets.is_empty() {
                    format!("define it: `secrets: {{ {secret}: {{ env: VARIABLE }} }}`")
                } else {
                    format!(
                        "define it under `secrets`, or use one of {}",
                        list(secrets.keys())
                    )
                }),
            );
        }
        ldap.insert(
            name,
            LdapConnection {
                url: l.url,
                bind_dn: l.bind_dn,
                bind_secret: l.bind_secret,
            },
        );
    }

    let mut commands = BTreeMap::new();
    for (name, c) in raw.commands {
        let timeout = c.timeout.map_or(Duration::from_secs(30), |t| t.0);
        if timeout.is_zero() || timeout > MAX_COMMAND_TIMEOUT {
            let at = format!("/commands/{}/timeout", escape(&name));
            errors.push(
                Diagnostic::error(
                    path,
                    doc.value_pos(&at),
                    "value",
                    format!(
                        "command `{name}` has a timeout of `{}`",
                        crate::workflow::units::format_duration(timeout)
                    ),
                )
                .with_help("a command's timeout must be more than 0 and at most 1h"),
            );
        }
        commands.insert(
            name,
            CommandSpec {
                argv: c.argv,
                timeout,
            },
        );
    }

    let mut http_origins: Vec<String> = Vec::new();
    for o in raw.http_origins {
        let n = normalise_origin(&o);
        if !http_origins.contains(&n) {
            http_origins.push(n);
        }
    }

    if !errors.is_empty() {
        crate::workflow::diagnostic::sort(&mut errors);
        return Err(errors);
    }
    Ok(GatewayConfig {
        source: Some(path.to_owned()),
        plugins: raw.plugins.map_or(defaults.plugins, resolve),
        workflows: raw.workflows.map_or(defaults.workflows, resolve),
        data_dir: raw.data_dir.map_or(defaults.data_dir, resolve),
        listen,
        ldap,
        secrets,
        commands,
        http_origins,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(text: &str) -> Result<GatewayConfig, Vec<String>> {
        GatewayConfig::from_bytes(Path::new("/etc/resetgate/config.yaml"), text.as_bytes())
            .map_err(|ds| ds.iter().map(ToString::to_string).collect())
    }

    #[test]
    fn minimal_config_is_the_defaults() {
        let c = load("version: 1\n").unwrap();
        assert_eq!(
            c,
            GatewayConfig {
                source: Some(PathBuf::from("/etc/resetgate/config.yaml")),
                ..GatewayConfig::default()
            }
        );
    }

    #[test]
    fn full_config() {
        let c = load(
            "version: 1\nplugins: plugins\ndata_dir: /var/lib/resetgate\nlisten: \"[::1]:9000\"\n\
             ldap:\n  corp-ad: {url: \"ldaps://dc1.corp.example\", bind_dn: \"cn=rg\", bind_secret: ad-bind}\n\
             secrets:\n  ad-bind: {env: AD_BIND}\n  sms-token: {file: sms.token}\n\
             commands:\n  vpn-up: {argv: [/usr/local/bin/vpn-up, --quiet], timeout: 10s}\n\
             http_origins: [\"https://SMS.example.com\"]\n",
        )
        .unwrap();
        assert_eq!(c.plugins, PathBuf::from("/etc/resetgate/plugins"));
        assert_eq!(c.data_dir, PathBuf::from("/var/lib/resetgate"));
        assert_eq!(c.workflows, PathBuf::from("workflows"));
        assert_eq!(c.listen.to_string(), "[::1]:9000");
        assert_eq!(
            c.secrets["sms-token"],
            SecretSource::File(PathBuf::from("/etc/resetgate/sms.token"))
        );
        assert_eq!(c.commands["vpn-up"].timeout, Duration::from_secs(10));
        assert!(c.allows_origin("https://sms.example.com/"));
        assert!(!c.allows_origin("https://evil.example.com"));
    }

    #[test]
    fn every_error_is_reported() {
        let errs = load(
            "version: 1\nlisten: 127.0.0.1\nplugin: x\nsecrets:\n  a: {env: A, file: b}\n\
             ldap:\n  corp: {url: \"ldaps://dc\", bind_dn: x, bind_secret: nope}\n\
             commands:\n  up: {argv: [vpn-up]}\n",
        )
        .unwrap_err();
        let all = errs.join("\n");
        assert!(
            all.contains(
                "config.yaml:2:9: error[value]: `listen` is not a valid listen address: `127.0.0.1`"
            ),
            "{all}"
        );
        assert!(
            all.contains("config.yaml:3:1: error[unknown-field]: unknown field `plugin`"),
            "{all}"
        );
        assert!(all.contains("help: did you mean `plugins`?"), "{all}");
        assert!(
            all.contains("`secrets.a` must set exactly one of `env`, `file`"),
            "{all}"
        );
        assert!(
            all.contains("`commands.up.argv[0]` is not a valid absolute path"),
            "{all}"
        );
        assert_eq!(errs.len(), 4, "{all}");
    }

    #[test]
    fn references_are_checked() {
        let errs = load(
            "version: 1\nldap:\n  corp: {url: \"ldaps://dc\", bind_dn: x, bind_secret: nope}\n",
        )
        .unwrap_err();
        assert_eq!(
            errs,
            [
                "/etc/resetgate/config.yaml:3:54: error[undefined]: LDAP connection `corp` binds with \
              secret `nope`, which `secrets` does not define\n  help: define it: `secrets: { nope: { env: VARIABLE } }`"
            ]
        );
    }

    #[test]
    fn unknown_version() {
        let errs = load("version: 2\n").unwrap_err();
        assert_eq!(
            errs,
            [
                "/etc/resetgate/config.yaml:1:10: error[version]: unknown gateway config version `2`: \
              this gateway reads version 1\n  help: write `version: 1`; a file written for a newer \
              resetgate needs a newer gateway"
            ]
        );
    }
}

//! Capabilities a workflow step grants a plugin, and the audit of a
//! component's imports against them.

use serde::Deserialize;

use crate::contract::{CONTRACT_VERSION, PluginKind};

/// A capability that needs a grant. The always-granted interfaces (`log`,
/// `clock`, `locale`, `random`, `slow-hash`, `credential`, `types`) are not listed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Capability {
    /// Outgoing HTTP to listed origins.
    Http,
    /// LDAP over admin-defined connections.
    Ldap,
    /// Named secrets.
    Secrets,
    /// Allow-listed commands.
    Commands,
    /// TCP reachability probes.
    Probe,
    /// The plugin's own key-value namespace (shared by every workflow that
    /// uses the plugin).
    Kv,
}

impl Capability {
    /// Every capability that needs a grant.
    pub const ALL: [Capability; 6] = [
        Capability::Http,
        Capability::Ldap,
        Capability::Secrets,
        Capability::Commands,
        Capability::Probe,
        Capability::Kv,
    ];

    /// The WIT interface's name, which is also the grant's key in a workflow.
    pub fn interface(self) -> &'static str {
        match self {
            Capability::Http => "http",
            Capability::Ldap => "ldap",
            Capability::Secrets => "secrets",
            Capability::Commands => "commands",
            Capability::Probe => "probe",
            Capability::Kv => "kv",
        }
    }

    /// An example of the grant to add to the workflow step.
    pub fn grant_example(self) -> &'static str {
        match self {
            Capability::Http => "grants: { http: [\"https://sms.example.com\"] }",
            Capability::Ldap => "grants: { ldap: [corp-ad] }",
            Capability::Secrets => "grants: { secrets: [sms-api-token] }",
            Capability::Commands => "grants: { commands: [vpn-up] }",
            Capability::Probe => "grants: { probe: [\"dc1.corp.example:389\"] }",
            Capability::Kv => "grants: { kv: true }",
        }
    }

    /// Whether the host implements this capability yet.
    pub fn available(self) -> bool {
        matches!(
            self,
            Capability::Kv | Capability::Secrets | Capability::Http | Capability::Ldap
        )
    }

    fn from_interface(name: &str) -> Option<Capability> {
        Capability::ALL.into_iter().find(|c| c.interface() == name)
    }
}

/// Interfaces of the contract every plugin may import without a grant.
pub const ALWAYS_GRANTED: [&str; 7] = [
    "types",
    "log",
    "clock",
    "locale",
    "random",
    "slow-hash",
    "credential",
];

/// What a workflow step grants its plugin.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Grants {
    /// Origins the plugin may send HTTP requests to.
    #[serde(default)]
    pub http: Vec<String>,
    /// LDAP connection names from the gateway config.
    #[serde(default)]
    pub ldap: Vec<String>,
    /// Secret names from the gateway config.
    #[serde(default)]
    pub secrets: Vec<String>,
    /// Command names from the gateway config.
    #[serde(default)]
    pub commands: Vec<String>,
    /// `host:port` pairs the plugin may probe.
    #[serde(default)]
    pub probe: Vec<String>,
    /// Whether the plugin gets its key-value store.
    #[serde(default)]
    pub kv: bool,
}

impl Grants {
    /// Whether `cap` is granted.
    pub fn grants(&self, cap: Capability) -> bool {
        match cap {
            Capability::Http => !self.http.is_empty(),
            Capability::Ldap => !self.ldap.is_empty(),
            Capability::Secrets => !self.secrets.is_empty(),
            Capability::Commands => !self.commands.is_empty(),
            Capability::Probe => !self.probe.is_empty(),
            Capability::Kv => self.kv,
        }
    }
}

/// A name from the `resetgate:plugin` package, split into interface and version.
#[derive(Debug, PartialEq, Eq)]
pub struct ContractName<'a> {
    pub interface: &'a str,
    pub version: &'a str,
}

/// Splits `resetgate:plugin/<interface>@<version>`.
pub fn contract_name(name: &str) -> Option<ContractName<'_>> {
    let rest = name.strip_prefix("resetgate:plugin/")?;
    let (interface, version) = rest.split_once('@').unwrap_or((rest, ""));
    Some(ContractName { interface, version })
}

/// Whether a plugin's contract version links against ours: same major and
/// minor (0.2.x), as component semver matching does.
pub fn version_compatible(version: &str) -> bool {
    let ours: Vec<&str> = CONTRACT_VERSION.split('.').collect();
    let theirs: Vec<&str> = version.split('.').collect();
    theirs.len() == 3 && theirs[0] == ours[0] && theirs[1] == ours[1]
}

/// What the audit of a component's imports found wrong.
#[derive(Debug, PartialEq, Eq)]
pub enum ImportProblem {
    /// Imports a capability the step does not grant.
    NotGranted(Capability),
    /// Granted, but the host does not implement it yet.
    Unavailable(Capability),
    /// Not part of the contract or WASI.
    Unknown(String),
    /// From another version of the contract.
    OtherVersion(String),
}

/// Checks one import name against the grants.
pub fn audit_import(name: &str, grants: &Grants) -> Result<(), ImportProblem> {
    if name.starts_with("wasi:") {
        // WASI is linked but configured with nothing: no files, environment,
        // arguments, sockets or stdio.
        return Ok(());
    }
    let Some(c) = contract_name(name) else {
        return Err(ImportProblem::Unknown(name.to_owned()));
    };
    if !version_compatible(c.version) {
        return Err(ImportProblem::OtherVersion(c.version.to_owned()));
    }
    if ALWAYS_GRANTED.contains(&c.interface) {
        return Ok(());
    }
    let Some(cap) = Capability::from_interface(c.interface) else {
        return Err(ImportProblem::Unknown(name.to_owned()));
    };
    if !grants.grants(cap) {
        return Err(ImportProblem::NotGranted(cap));
    }
    if !cap.available() {
        return Err(ImportProblem::Unavailable(cap));
    }
    Ok(())
}

/// Which world a component targets, from its exports: `Ok(kind)` for one of
/// ours, `Err(name@version)` for a contract export of another version.
pub fn world_of<'a>(exports: impl Iterator<Item = &'a str>) -> Option<Result<PluginKind, String>> {
    let mut other = None;
    for name in exports {
        let Some(c) = contract_name(name) else {
            continue;
        };
        let Some(kind) = PluginKind::ALL
            .into_iter()
            .find(|k| k.export_interface() == c.interface)
        else {
            continue;
        };
        if version_compatible(c.version) {
            return Some(Ok(kind));
        }
        other = Some(Err(format!(
            "{} (world {kind}) @{}",
            c.interface, c.version
        )));
    }
    other
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wasi_and_basic_interfaces_need_no_grant() {
        let none = Grants::default();
        assert_eq!(audit_import("wasi:cli/environment@0.2.6", &none), Ok(()));
        assert_eq!(audit_import("resetgate:plugin/log@0.2.0", &none), Ok(()));
        assert_eq!(
            audit_import("resetgate:plugin/slow-hash@0.2.3", &none),
            Ok(())
        );
    }

    #[test]
    fn capabilities_need_their_grant_and_commands_are_not_available_yet() {
        let none = Grants::default();
        assert_eq!(
            audit_import("resetgate:plugin/http@0.2.0", &none),
            Err(ImportProblem::NotGranted(Capability::Http))
        );
        let http = Grants {
            http: vec!["https://x.example".into()],
            ..Grants::default()
        };
        assert_eq!(audit_import("resetgate:plugin/http@0.2.0", &http), Ok(()));
        let commands = Grants {
            commands: vec!["vpn-up".into()],
            ..Grants::default()
        };
        assert_eq!(
            audit_import("resetgate:plugin/commands@0.2.0", &commands),
            Err(ImportProblem::Unavailable(Capability::Commands))
        );
    }

    #[test]
    fn kv_is_available_with_its_grant() {
        assert_eq!(
            audit_import("resetgate:plugin/kv@0.2.0", &Grants::default()),
            Err(ImportProblem::NotGranted(Capability::Kv))
        );
        let kv = Grants {
            kv: true,
            ..Grants::default()
        };
        assert_eq!(audit_import("resetgate:plugin/kv@0.2.0", &kv), Ok(()));
    }

    #[test]
    fn other_versions_and_strangers_are_refused() {
        let none = Grants::default();
        assert_eq!(
            audit_import("resetgate:plugin/log@0.3.0", &none),
            Err(ImportProblem::OtherVersion("0.3.0".into()))
        );
        assert_eq!(
            audit_import("evil:net/raw-socket", &none),
            Err(ImportProblem::Unknown("evil:net/raw-socket".into()))
        );
    }

    #[test]
    fn world_is_read_from_exports() {
        assert_eq!(
            world_of(["resetgate:plugin/gate-api@0.2.0"].into_iter()),
            Some(Ok(PluginKind::Gate))
        );
        assert_eq!(
            world_of(["resetgate:plugin/vpn-hook-api@0.2.9"].into_iter()),
            Some(Ok(PluginKind::VpnHook))
        );
        assert!(matches!(
            world_of(["resetgate:plugin/gate-api@0.1.0"].into_iter()),
            Some(Err(_))
        ));
        assert!(matches!(
            world_of(["resetgate:plugin/gate-api@0.3.0"].into_iter()),
            Some(Err(_))
        ));
        assert_eq!(world_of(["wasi:cli/run@0.2.0"].into_iter()), None);
    }
}

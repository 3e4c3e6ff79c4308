//! `resetgate admin ...`: the admin API (`/v1/admin`) from the command line,
//! against a running gateway. The URL and an operator's key come from
//! flags or the environment (`RESETGATE_URL`, `RESETGATE_ADMIN_KEY`);
//! `--json` prints the gateway's JSON instead of text.
//!
//! Exit status, for scripts: 0 done; 1 done, and the answer is no (a
//! candidate workflow has errors, a reload refused a file, the audit log
//! does not verify); 2 a usage mistake (a flag, a missing key, a request
//! the gateway calls invalid); 3 the gateway cannot be reached or failed;
//! 4 the key or certificate is refused, or its role does not allow the
//! command; 5 no such user, or it exists already.

use std::io::{BufRead, Read, Write};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use serde_json::{Value, json};

/// How long a request may take (an export streams as long as it sends).
const TIMEOUT: Duration = Duration::from_secs(60);
/// The most a JSON answer may be.
const MAX_ANSWER: u64 = 64 * 1024 * 1024;

/// `resetgate admin`: where the gateway is, who is asking, what to do.
#[derive(clap::Args, Debug)]
pub struct AdminArgs {
    /// The gateway's URL.
    #[arg(
        long,
        env = "RESETGATE_URL",
        default_value = "http://127.0.0.1:8080",
        global = true
    )]
    pub url: String,
    /// An operator's API key (prefer the environment variable: arguments are visible to other local users).
    #[arg(
        long,
        env = "RESETGATE_ADMIN_KEY",
        hide_env_values = true,
        global = true
    )]
    pub key: Option<String>,
    /// PEM file with the CA certificate(s) to verify an HTTPS gateway with (default: the system's roots).
    #[arg(long, env = "RESETGATE_CA_FILE", global = true)]
    pub ca_file: Option<PathBuf>,
    /// PEM file with an operator's client certificate (with --client-key), instead of a key.
    #[arg(
        long,
        env = "RESETGATE_CLIENT_CERT",
        requires = "client_key",
        global = true
    )]
    pub client_cert: Option<PathBuf>,
    /// PEM file with the client certificate's private key.
    #[arg(
        long,
        env = "RESETGATE_CLIENT_KEY",
        requires = "client_cert",
        global = true
    )]
    pub client_key: Option<PathBuf>,
    /// Print the gateway's JSON instead of text.
    #[arg(long, global = true)]
    pub json: bool,
    /// What to do.
    #[command(subcommand)]
    pub command: AdminCommand,
}

/// The `admin` subcommands.
#[derive(clap::Subcommand, Debug)]
pub enum AdminCommand {
    /// Prints the operator the key belongs to, and its role.
    Whoami,
    /// Workflows: list, validate a candidate file, reload.
    Workflows {
        /// What to do with them.
        #[command(subcommand)]
        command: WorkflowsCommand,
    },
    /// Lists the plugins current workflows use: sha256, kind, version, grants, calls, failures.
    Plugins,
    /// Users of the `local-users` directory, through the running gateway.
    Users {
        /// The directory plugin's name as workflows reference it.
        #[arg(long, default_value = "local-users", global = true)]
        plugin: String,
        /// What to do with them.
        #[command(subcommand)]
        command: UsersCommand,
    },
    /// A user's lockout: show it, or clear it (also unlocks the account in the directory).
    Lockout {
        /// What to do with it.
        #[command(subcommand)]
        command: LockoutCommand,
    },
    /// A user's recent flows and their outcomes.
    Flows {
        /// The user's name.
        user: String,
        /// At most this many flows.
        #[arg(long, default_value_t = 20)]
        limit: u32,
    },
    /// The audit log: query, export as JSON lines, verify.
    Audit {
        /// What to do with it.
        #[command(subcommand)]
        command: AuditCommand,
    },
    /// Takes a backup of the running gateway's store (every record as of one moment) into a new file; `resetgate restore` puts it back.
    Backup {
        /// The file to write: it must not exist. Written under a temporary name, checked whole, then renamed; readable by its owner only.
        #[arg(long, value_name = "FILE")]
        to: PathBuf,
    },
}

/// `admin workflows`.
#[derive(clap::Subcommand, Debug)]
pub enum WorkflowsCommand {
    /// Lists the workflows served, with version and file.
    List,
    /// Checks a workflow file as the gateway would load it, without serving it (status 1 with errors).
    Validate {
        /// The file.
        file: PathBuf,
    },
    /// Reloads workflows and capabilities, as SIGHUP does (status 1 if a file was refused).
    Reload,
}

/// `admin users`.
#[derive(clap::Subcommand, Debug)]
pub enum UsersCommand {
    /// Lists the users (never password hashes).
    List,
    /// Adds a user (refuses an existing name unless --replace).
    Add(crate::users::AddArgs),
    /// Removes a user.
    Remove {
        /// The user's name.
        name: String,
    },
}

/// `admin lockout`.
#[derive(clap::Subcommand, Debug)]
pub enum LockoutCommand {
    /// Shows a user's failures and lockout state under each workflow.
    Show {
        /// The user's name.
        user: String,
    },
    /// Clears a user's lockout and unlocks the account in the directory.
    Clear {
        /// The user's name.
        user: String,
    },
}

/// `admin audit`.
#[derive(clap::Subcommand, Debug)]
pub enum AuditCommand {
    /// Prints entries that match, a page at a time (--after for the next page).
    Query {
        /// Which entries.
        #[command(flatten)]
        filter: AuditFilter,
        /// Entries per page (at most 1000).
        #[arg(long, default_value_t = 100)]
        limit: u32,
    },
    /// Writes every matching entry as JSON lines to standard output or --out.
    Export {
        /// Which entries.
        #[command(flatten)]
        filter: AuditFilter,
        /// Write to this file instead of standard output.
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// Verifies every hash chain of the log (status 1 if it does not verify).
    Verify,
}

/// Which audit entries.
#[derive(clap::Args, Debug)]
pub struct AuditFilter {
    /// A user's name (resolved by every workflow's directory).
    #[arg(long)]
    pub user: Option<String>,
    /// A stored (hashed) user key.
    #[arg(long)]
    pub user_key: Option<String>,
    /// Only entries of this kind, e.g. `operator.unlock` (repeatable).
    #[arg(long)]
    pub kind: Vec<String>,
    /// At or after this time (ms since the Unix epoch).
    #[arg(long)]
    pub from_ms: Option<u64>,
    /// Before this time (ms since the Unix epoch).
    #[arg(long)]
    pub to_ms: Option<u64>,
    /// After this position (`next_after` of the previous page).
    #[arg(long)]
    pub after: Option<u64>,
}

impl AuditFilter {
    fn query(&self) -> Vec<(&'static str, String)> {
        let mut q = Vec::new();
        q.extend(self.user.clone().map(|v| ("user", v)));
        q.extend(self.user_key.clone().map(|v| ("user_key", v)));
        q.extend(self.kind.iter().map(|k| ("kind", k.clone())));
        q.extend(self.from_ms.map(|v| ("from_ms", v.to_string())));
        q.extend(self.to_ms.map(|v| ("to_ms", v.to_string())));
        q.extend(self.after.map(|v| ("after", v.to_string())));
        q
    }
}

/// Why an admin command failed; each kind has its exit status.
#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    /// A usage mistake.
    #[error("{0}")]
    Usage(String),
    /// The gateway cannot be reached, or failed.
    #[error("{0}")]
    Unreachable(String),
    /// The gateway answered with a problem.
    #[error("{title}{}", detail.as_ref().map(|d| format!(": {d}")).unwrap_or_default())]
    Problem {
        /// The HTTP status.
        status: u16,
        /// The problem's code.
        code: String,
        /// Its title.
        title: String,
        /// Its detail.
        detail: Option<String>,
    },
    /// The command was carried out and the answer is no.
    #[error("{0}")]
    No(String),
    /// Standard input or output failed.
    #[error("i/o error: {0}")]
    Io(#[from] std::io::Error),
    /// A local-users argument was refused before sending.
    #[error(transparent)]
    Users(#[from] crate::users::UsersError),
}

impl AdminError {
    /// The exit status (see the module documentation).
    pub fn status(&self) -> u8 {
        match self {
            AdminError::No(_) => 1,
            AdminError::Usage(_) | AdminError::Users(_) => 2,
            AdminError::Unreachable(_) | AdminError::Io(_) => 3,
            AdminError::Problem { status, .. } => match status {
                401 | 403 => 4,
                404 | 409 => 5,
                400..=499 => 2,
                _ => 3,
            },
        }
    }

    /// What to do about it, when there is something to say.
    pub fn help(&self) -> Option<String> {
        match self {
            AdminError::Problem { code, .. } if code == "forbidden" => Some(
                "this needs an operator whose role allows it (`api.operators` in the gateway config)"
                    .to_owned(),
            ),
            AdminError::Problem { code, .. }
                if code == "invalid-api-key" || code == "anonymous-not-allowed" =>
            {
                Some("give an operator's key with --key or RESETGATE_ADMIN_KEY".to_owned())
            }
            AdminError::Unreachable(_) => Some(
                "is the gateway running there? Set its URL with --url or RESETGATE_URL".to_owned(),
            ),
            _ => None,
        }
    }
}

/// An HTTP client for the admin API.
struct Client {
    agent: ureq::Agent,
    url: String,
    key: Option<String>,
}

fn unreachable(e: impl std::fmt::Display) -> AdminError {
    AdminError::Unreachable(format!("cannot reach the gateway: {e}"))
}

fn read_pem(path: &std::path::Path) -> Result<Vec<u8>, AdminError> {
    crate::readfile::read_limited(path, 1024 * 1024)
        .map_err(|e| AdminError::Usage(format!("{}: {e}", path.display())))
}

impl Client {
    fn new(args: &AdminArgs) -> Result<Client, AdminError> {
        use ureq::tls::{Certificate, ClientCert, PemItem, PrivateKey, RootCerts, TlsConfig};
        let mut tls = TlsConfig::builder();
        if let Some(path) = &args.ca_file {
            let pem = read_pem(path)?;
            let certs: Vec<Certificate<'static>> = ureq::tls::parse_pem(&pem)
                .filter_map(|i| match i {
                    Ok(PemItem::Certificate(c)) => Some(c),
                    _ => None,
                })
                .collect();
            if certs.is_empty() {
                return Err(AdminError::Usage(format!(
                    "{} holds no certificate",
                    path.display()
                )));
            }
            tls = tls.root_certs(RootCerts::new_with_certs(&certs));
        }
        if let (Some(cert), Some(key)) = (&args.client_cert, &args.client_key) {
            let cert = Certificate::from_pem(&read_pem(cert)?)
                .map_err(|e| AdminError::Usage(format!("{}: {e}", cert.display())))?
                .to_owned();
            let key = PrivateKey::from_pem(&read_pem(key)?)
                .map_err(|e| AdminError::Usage(format!("{}: {e}", key.display())))?
                .to_owned();
            tls = tls.client_cert(Some(ClientCert::new_with_certs(&[cert], key)));
        }
        let key = args.key.clone().filter(|k| !k.is_empty());
        if key.is_none() && args.client_cert.is_none() {
            return Err(AdminError::Usage(
                "no operator key: set RESETGATE_ADMIN_KEY (or --key), or give --client-cert and --client-key".to_owned(),
            ));
        }
        let agent = ureq::Agent::config_builder()
            .tls_config(tls.build())
            .http_status_as_error(false)
            .proxy(None)
            .max_redirects(0)
            .timeout_connect(Some(Duration::from_secs(10)))
            .timeout_recv_response(Some(TIMEOUT))
            .user_agent(concat!("resetgate-admin/", env!("CARGO_PKG_VERSION")))
            .build()
            .new_agent();
        Ok(Client {
            agent,
            url: args.url.trim_end_matches('/').to_owned(),
            key,
        })
    }

    fn target(&self, path: &str, query: &[(&str, String)]) -> String {
        let mut url = format!("{}{path}", self.url);
        if !query.is_empty() {
            let mut q = form_urlencoded::Serializer::new(String::new());
            for (k, v) in query {
                q.append_pair(k, v);
            }
            url.push('?');
            url.push_str(&q.finish());
        }
        url
    }

    /// Sends a request; returns the response if its status is 2xx, else the
    /// problem it carries.
    fn send(
        &self,
        method: &str,
        path: &str,
        query: &[(&str, String)],
        body: Option<&Value>,
    ) -> Result<ureq::http::Response<ureq::Body>, AdminError> {
        let url = self.target(path, query);
        let mut req = ureq::http::Request::builder().method(method).uri(&url);
        if let Some(key) = &self.key {
            req = req.header("x-api-key", key);
        }
        let sent = match body {
            Some(body) => {
                let req = req
                    .header("content-type", "application/json")
                    .body(body.to_string())
                    .map_err(|e| AdminError::Usage(format!("bad URL {url}: {e}")))?;
                self.agent.run(req)
            }
            None => {
                let req = req
                    .body(())
                    .map_err(|e| AdminError::Usage(format!("bad URL {url}: {e}")))?;
                self.agent.run(req)
            }
        };
        let mut response = sent.map_err(unreachable)?;
        let status = response.status().as_u16();
        if (200..300).contains(&status) {
            return Ok(response);
        }
        let text = response
            .body_mut()
            .with_config()
            .limit(MAX_ANSWER)
            .read_to_string()
            .unwrap_or_default();
        let problem: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
        let field = |k: &str| problem.get(k).and_then(Value::as_str).map(str::to_owned);
        Err(AdminError::Problem {
            status,
            code: field("code").unwrap_or_default(),
            title: field("title").unwrap_or_else(|| format!("the gateway answered {status}")),
            detail: field("detail"),
        })
    }

    /// Sends a request and reads its JSON answer (`null` for none).
    fn json(
        &self,
        method: &str,
        path: &str,
        query: &[(&str, String)],
        body: Option<&Value>,
    ) -> Result<Value, AdminError> {
        let mut response = self.send(method, path, query, body)?;
        let text = response
            .body_mut()
            .with_config()
            .limit(MAX_ANSWER)
            .read_to_string()
            .map_err(unreachable)?;
        if text.trim().is_empty() {
            return Ok(Value::Null);
        }
        serde_json::from_str(&text).map_err(|e| unreachable(format!("the answer is not JSON: {e}")))
    }
}

/// A path segment, percent-encoded.
fn segment(text: &str) -> String {
    form_urlencoded::byte_serialize(text.as_bytes())
        .collect::<String>()
        .replace('+', "%20")
}

fn say(out: &mut dyn Write, text: impl std::fmt::Display) -> Result<(), AdminError> {
    writeln!(out, "{text}")?;
    Ok(())
}

fn pretty(out: &mut dyn Write, v: &Value) -> Result<(), AdminError> {
    say(out, serde_json::to_string_pretty(v).unwrap_or_default())
}

fn str_of<'a>(v: &'a Value, k: &str) -> &'a str {
    v.get(k).and_then(Value::as_str).unwrap_or("")
}

fn items<'a>(v: &'a Value, k: &str) -> &'a [Value] {
    v.get(k)
        .and_then(Value::as_array)
        .map_or(&[], Vec::as_slice)
}

fn diagnostics(out: &mut dyn Write, v: &Value) -> Result<(), AdminError> {
    for d in items(v, "diagnostics") {
        say(out, str_of(d, "text"))?;
    }
    Ok(())
}

/// Runs an admin command, printing to `out`, reading a password (users add
/// --password-stdin) from `input`.
pub fn run(
    args: AdminArgs,
    out: &mut dyn Write,
    input: &mut dyn BufRead,
) -> Result<(), AdminError> {
    let client = Client::new(&args)?;
    let json = args.json;
    match args.command {
        AdminCommand::Whoami => {
            let v = client.json("GET", "/v1/admin/whoami", &[], None)?;
            if json {
                return pretty(out, &v);
            }
            say(
                out,
                format!("{} ({})", str_of(&v, "name"), str_of(&v, "role")),
            )
        }
        AdminCommand::Workflows { command } => workflows(&client, command, json, out),
        AdminCommand::Plugins => {
            let v = client.json("GET", "/v1/admin/plugins", &[], None)?;
            if json {
                return pretty(out, &v);
            }
            for p in items(&v, "plugins") {
                let failures: u64 = p
                    .get("failures")
                    .and_then(Value::as_object)
                    .map_or(0, |m| m.values().filter_map(Value::as_u64).sum());
                say(
                    out,
                    format!(
                        "{}  {} {}  sha256:{}  calls:{} failures:{}",
                        str_of(p, "name"),
                        str_of(p, "kind"),
                        str_of(p, "version"),
                        str_of(p, "sha256"),
                        p["calls"],
                        failures
                    ),
                )?;
            }
            Ok(())
        }
        AdminCommand::Users { plugin, command } => {
            users(&client, &plugin, command, json, out, input)
        }
        AdminCommand::Lockout { command } => lockout(&client, command, json, out),
        AdminCommand::Flows { user, limit } => {
            let v = client.json(
                "GET",
                "/v1/admin/flows",
                &[("user", user), ("limit", limit.to_string())],
                None,
            )?;
            if json {
                return pretty(out, &v);
            }
            for f in items(&v, "flows") {
                say(
                    out,
                    format!(
                        "{}  {}  {}  started:{}{}{}",
                        str_of(f, "flow"),
                        str_of(f, "workflow"),
                        str_of(f, "outcome"),
                        f["started_ms"],
                        if f["locked_out"] == json!(true) {
                            "  locked-out"
                        } else {
                            ""
                        },
                        f.get("reason")
                            .and_then(Value::as_str)
                            .map(|r| format!("  ({r})"))
                            .unwrap_or_default()
                    ),
                )?;
            }
            Ok(())
        }
        AdminCommand::Audit { command } => audit(&client, command, json, out),
        AdminCommand::Backup { to } => {
            if to.exists() {
                return Err(AdminError::Usage(format!(
                    "{} exists already: a backup never overwrites a file",
                    to.display()
                )));
            }
            let mut response = client.send("GET", "/v1/admin/backup", &[], None)?;
            let mut reader = response.body_mut().with_config().reader();
            let saved = crate::store::backup::save(&to, &mut |file| {
                std::io::copy(&mut reader, file).map(|_| ()).map_err(|e| {
                    crate::store::backup::BackupError::Io(format!("the backup stopped: {e}"))
                })
            });
            let header = saved.map_err(|e| match e {
                crate::store::backup::BackupError::Malformed { .. } => {
                    AdminError::Unreachable(format!(
                        "{}: the gateway's backup is incomplete ({e}); nothing was kept",
                        to.display()
                    ))
                }
                e => AdminError::Usage(format!("{}: {e}", to.display())),
            })?;
            say(
                out,
                format!(
                    "backed up the gateway's {} store (schema {}) to {}",
                    header.backend,
                    header.schema,
                    to.display()
                ),
            )?;
            eprintln!("note: {}", crate::store::backup::KEY_NOTE);
            Ok(())
        }
    }
}

fn workflows(
    client: &Client,
    command: WorkflowsCommand,
    json: bool,
    out: &mut dyn Write,
) -> Result<(), AdminError> {
    let list = |out: &mut dyn Write, v: &Value| -> Result<(), AdminError> {
        for w in items(v, "workflows") {
            say(
                out,
                format!(
                    "{}  {}  {}",
                    str_of(w, "name"),
                    str_of(w, "version").get(..12).unwrap_or(""),
                    str_of(w, "file")
                ),
            )?;
        }
        Ok(())
    };
    match command {
        WorkflowsCommand::List => {
            let v = client.json("GET", "/v1/admin/workflows", &[], None)?;
            if json {
                return pretty(out, &v);
            }
            list(out, &v)
        }
        WorkflowsCommand::Validate { file } => {
            let mut text = String::new();
            std::fs::File::open(&file)
                .and_then(|mut f| f.read_to_string(&mut text))
                .map_err(|e| AdminError::Usage(format!("{}: {e}", file.display())))?;
            let name = file
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            let v = client.json(
                "POST",
                "/v1/admin/workflows/validate",
                &[],
                Some(&json!({"file": name, "yaml": text})),
            )?;
            if json {
                pretty(out, &v)?;
            } else {
                diagnostics(out, &v)?;
                if v["valid"] == json!(true) {
                    say(
                        out,
                        format!(
                            "valid: workflow {} (version {})",
                            str_of(&v, "name"),
                            str_of(&v, "version").get(..12).unwrap_or("")
                        ),
                    )?;
                }
            }
            if v["valid"] == json!(true) {
                Ok(())
            } else {
                Err(AdminError::No(format!("{} has errors", file.display())))
            }
        }
        WorkflowsCommand::Reload => {
            let v = client.json("POST", "/v1/admin/workflows/reload", &[], None)?;
            let config = &v["config"];
            if json {
                pretty(out, &v)?;
            } else {
                diagnostics(out, config)?;
                if config["applied"] == json!(true) {
                    say(
                        out,
                        format!("reloaded the gateway config {}", str_of(config, "file")),
                    )?;
                }
                for setting in items(config, "needs_restart") {
                    say(
                        out,
                        format!(
                            "note: `{}` changed in the gateway config; it takes effect at the next restart",
                            setting.as_str().unwrap_or_default()
                        ),
                    )?;
                }
                diagnostics(out, &v)?;
                list(out, &v)?;
            }
            if config["applied"] == json!(false) {
                let why = match v["capabilities_error"].as_str() {
                    Some(e) if items(config, "diagnostics").is_empty() => {
                        format!("its capabilities cannot be set up: {e}")
                    }
                    _ => "errors listed above".to_owned(),
                };
                return Err(AdminError::No(format!(
                    "reload refused the gateway config {} ({why}); the config loaded before stays in force",
                    str_of(config, "file")
                )));
            }
            for (field, what) in [
                ("capabilities_error", "the capabilities"),
                ("tls_error", "the TLS certificate"),
            ] {
                if let Some(e) = v[field].as_str() {
                    return Err(AdminError::No(format!(
                        "reload refused {what}: {e}; what was loaded before stays"
                    )));
                }
            }
            let refused = items(&v, "refused").len();
            if refused > 0 {
                let kept: Vec<&str> = items(&v, "kept").iter().filter_map(Value::as_str).collect();
                return Err(AdminError::No(format!(
                    "reload refused {refused} file(s) with errors; kept the running version of: {}",
                    if kept.is_empty() {
                        "none".to_owned()
                    } else {
                        kept.join(", ")
                    }
                )));
            }
            Ok(())
        }
    }
}

fn users(
    client: &Client,
    plugin: &str,
    command: UsersCommand,
    json: bool,
    out: &mut dyn Write,
    input: &mut dyn BufRead,
) -> Result<(), AdminError> {
    let query = [("plugin", plugin.to_owned())];
    match command {
        UsersCommand::List => {
            let v = client.json("GET", "/v1/admin/local-users", &query, None)?;
            if json {
                return pretty(out, &v);
            }
            for u in items(&v, "users") {
                let mut flags = Vec::new();
                for (k, flag) in [("disabled", "disabled"), ("must_change", "must-change")] {
                    if u[k] == json!(true) {
                        flags.push(flag);
                    }
                }
                if u["has_password"] == json!(false) {
                    flags.push("no-password");
                }
                say(
                    out,
                    format!(
                        "{}  {}  {}",
                        str_of(u, "name"),
                        str_of(u, "id"),
                        if flags.is_empty() {
                            "ok".to_owned()
                        } else {
                            flags.join(",")
                        }
                    ),
                )?;
            }
            Ok(())
        }
        UsersCommand::Add(add) => {
            if add.print_password {
                return Err(AdminError::Usage(
                    "--print-password works only offline (`resetgate users add`): the admin API never sends a password back".to_owned(),
                ));
            }
            let attributes = crate::users::parse_attributes(&add.attrs)?;
            let password = if add.password_stdin {
                Some(crate::users::read_password(input)?)
            } else {
                None
            };
            let mut body = json!({
                "name": add.name,
                "display_name": add.display_name,
                "attributes": attributes,
                "random_password": add.random_password,
                "must_change": add.must_change,
                "disabled": add.disabled,
                "replace": add.replace,
            });
            if let Some(p) = &password {
                body["password"] = Value::String(p.expose().to_owned());
            }
            let v = client.json("POST", "/v1/admin/local-users", &query, Some(&body));
            // The body held the password: gone before anything else.
            drop(body);
            let v = v?;
            if json {
                return pretty(out, &v);
            }
            say(
                out,
                format!("added user {} ({})", str_of(&v, "name"), str_of(&v, "id")),
            )
        }
        UsersCommand::Remove { name } => {
            client.json(
                "DELETE",
                &format!("/v1/admin/local-users/{}", segment(&name)),
                &query,
                None,
            )?;
            if json {
                return pretty(out, &json!({"removed": name}));
            }
            say(out, format!("removed user {name}"))
        }
    }
}

fn lockout(
    client: &Client,
    command: LockoutCommand,
    json: bool,
    out: &mut dyn Write,
) -> Result<(), AdminError> {
    match command {
        LockoutCommand::Show { user } => {
            let v = client.json(
                "GET",
                &format!("/v1/admin/lockouts/{}", segment(&user)),
                &[],
                None,
            )?;
            if json {
                return pretty(out, &v);
            }
            for w in items(&v, "workflows") {
                let until = w
                    .get("until_ms")
                    .and_then(Value::as_u64)
                    .map(|t| format!(" until {t}"))
                    .unwrap_or_default();
                say(
                    out,
                    format!(
                        "{}  {}{}  failures:{}{}",
                        str_of(w, "workflow"),
                        str_of(w, "state"),
                        until,
                        items(w, "failures").len(),
                        if w["known"] == json!(true) {
                            ""
                        } else {
                            "  (unknown to the directory)"
                        }
                    ),
                )?;
            }
            Ok(())
        }
        LockoutCommand::Clear { user } => {
            let v = client.json(
                "DELETE",
                &format!("/v1/admin/lockouts/{}", segment(&user)),
                &[],
                None,
            )?;
            if json {
                return pretty(out, &v);
            }
            say(
                out,
                format!(
                    "cleared {} failure(s) of {user}",
                    v["failures_cleared"].as_u64().unwrap_or(0)
                ),
            )?;
            for d in items(&v, "directories") {
                say(
                    out,
                    format!(
                        "directory {} ({}): unlock {}",
                        str_of(d, "directory"),
                        str_of(d, "workflow"),
                        str_of(d, "result")
                    ),
                )?;
            }
            Ok(())
        }
    }
}

fn audit(
    client: &Client,
    command: AuditCommand,
    json: bool,
    out: &mut dyn Write,
) -> Result<(), AdminError> {
    match command {
        AuditCommand::Query { filter, limit } => {
            let mut query = filter.query();
            query.push(("limit", limit.to_string()));
            let v = client.json("GET", "/v1/admin/audit", &query, None)?;
            if json {
                return pretty(out, &v);
            }
            for e in items(&v, "entries") {
                let r = &e["record"];
                say(
                    out,
                    format!(
                        "{}  {}  {}  {}{}",
                        e["position"],
                        r["at_ms"],
                        str_of(r, "kind"),
                        str_of(r, "workflow"),
                        r.get("detail")
                            .filter(|d| d.as_object().is_some_and(|m| !m.is_empty()))
                            .map(|d| format!("  {d}"))
                            .unwrap_or_default()
                    ),
                )?;
            }
            if let Some(next) = v.get("next_after").and_then(Value::as_u64) {
                say(out, format!("(more: --after {next})"))?;
            }
            Ok(())
        }
        AuditCommand::Export { filter, out: file } => {
            let mut response =
                client.send("GET", "/v1/admin/audit/export", &filter.query(), None)?;
            let mut reader = response.body_mut().with_config().reader();
            let copied = match file {
                Some(path) => {
                    let mut f = std::fs::File::create(&path)
                        .map_err(|e| AdminError::Usage(format!("{}: {e}", path.display())))?;
                    std::io::copy(&mut reader, &mut f).and_then(|n| f.sync_all().map(|()| n))
                }
                None => std::io::copy(&mut reader, out),
            };
            copied.map_err(|e| unreachable(format!("the export stopped: {e}")))?;
            Ok(())
        }
        AuditCommand::Verify => {
            let v = client.json("GET", "/v1/admin/audit/verify", &[], None)?;
            if json {
                pretty(out, &v)?;
            } else if v["verified"] == json!(true) {
                for c in items(&v, "chains") {
                    say(
                        out,
                        format!(
                            "chain {}: {} entries, head {}",
                            str_of(c, "chain"),
                            c["entries"],
                            str_of(c, "head")
                        ),
                    )?;
                }
                say(out, format!("verified {} entries", v["entries"]))?;
            }
            if v["verified"] == json!(true) {
                Ok(())
            } else {
                Err(AdminError::No(format!(
                    "the audit log does not verify: {}",
                    str_of(&v, "error")
                )))
            }
        }
    }
}

/// Runs `resetgate admin ...` with the process's standard streams; one
/// `error:` line (and perhaps a `help:` line) on failure.
pub fn main(args: AdminArgs) -> ExitCode {
    let result = run(
        args,
        &mut std::io::stdout().lock(),
        &mut std::io::stdin().lock(),
    );
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            if let Some(help) = e.help() {
                eprintln!("help: {help}");
            }
            ExitCode::from(e.status())
        }
    }
}

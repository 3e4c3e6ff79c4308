//! The admin API under `/v1/admin`, for operators (see [`super::roles`] for
//! who may call what): workflows (list, validate a candidate, reload),
//! plugins, the users of the `local-users` directory, a user's lockout
//! (read, clear) and recent flows, and the audit log (query, export as JSON
//! lines, verify). Every change an operator makes is audited with the
//! operator's name (`operator.*` records). Errors are [`Problem`]s like the
//! rest of the API; the guide is `docs/http-api.md`.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::Json;
use axum::body::{Body, Bytes};
use axum::extract::{FromRequestParts, Path, State};
use axum::http::request::Parts;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use utoipa::{OpenApi, ToSchema};

use super::principal::{Principal, PrincipalKind};
use super::wire::SecretString;
use super::{Api, Code, JsonBody, Problem, Routes, now_ms, on_worker};
use crate::operator::{self, FlowSummary, LockoutState, OperatorError, Unlocked};
use crate::store::{AuditEntry, AuditQuery, StoreError};
use crate::users::{NewUser, Users, UsersError};
use crate::workflow::Diagnostic;

/// Entries per page of an audit query, unless `limit` says otherwise.
const AUDIT_PAGE: usize = 100;
/// The most entries one audit query page returns.
const AUDIT_PAGE_MAX: usize = 1000;
/// Entries read per step of an export.
const EXPORT_BATCH: usize = 1000;
/// Flows `GET /v1/admin/flows` returns unless `limit` says otherwise.
const FLOWS_DEFAULT: usize = 20;

/// The admin routes.
pub(super) fn routes(r: Routes) -> Routes {
    r.get("/v1/admin/whoami", whoami)
        .get("/v1/admin/workflows", list_workflows)
        .post("/v1/admin/workflows/validate", validate_workflow)
        .post("/v1/admin/workflows/reload", reload_workflows)
        .get("/v1/admin/plugins", list_plugins)
        .get("/v1/admin/local-users", list_local_users)
        .post("/v1/admin/local-users", add_local_user)
        .delete("/v1/admin/local-users/{name}", remove_local_user)
        .get("/v1/admin/lockouts/{user}", read_lockout)
        .delete("/v1/admin/lockouts/{user}", clear_lockout)
        .get("/v1/admin/flows", user_flows)
        .get("/v1/admin/audit", query_audit)
        .get("/v1/admin/audit/export", export_audit)
        .get("/v1/admin/audit/verify", verify_audit)
        .get("/v1/admin/backup", backup)
}

/// The OpenAPI description of the admin routes (merged into the API's).
#[derive(OpenApi)]
#[openapi(
    paths(
        whoami,
        list_workflows,
        validate_workflow,
        reload_workflows,
        list_plugins,
        list_local_users,
        add_local_user,
        remove_local_user,
        read_lockout,
        clear_lockout,
        user_flows,
        query_audit,
        export_audit,
        backup,
        verify_audit
    ),
    components(schemas(
        WhoAmI,
        WorkflowList,
        WorkflowInfo,
        ValidateRequest,
        Validation,
        DiagnosticView,
        ReloadReport,
        ConfigReloadView,
        PluginList,
        PluginView,
        PluginStep,
        LocalUserList,
        AddLocalUser,
        LockoutView,
        LockoutState,
        operator::FailureView,
        Unlocked,
        operator::DirectoryUnlock,
        FlowList,
        FlowSummary,
        AuditPage,
        AuditVerification
    )),
    modifiers(&OperatorKey),
    tags((name = "admin", description = "Operators: workflows, plugins, local users, lockouts, flows, the audit log"))
)]
pub struct AdminDoc;

struct OperatorKey;

impl utoipa::Modify for OperatorKey {
    fn modify(&self, api: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::security::{ApiKey, ApiKeyValue, SecurityScheme};
        let components = api.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "operator_key",
            SecurityScheme::ApiKey(ApiKey::Header(ApiKeyValue::with_description(
                "X-Api-Key",
                "An operator's API key (`api.operators` of the gateway config); a client certificate mapped to an operator works as well. The operator's role decides the routes.",
            ))),
        );
    }
}

/// The operator making the request (identification put the principal in
/// the request; the role layer let it through).
pub struct Operator(pub Principal);

impl<S: Send + Sync> FromRequestParts<S> for Operator {
    type Rejection = Problem;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Problem> {
        match parts.extensions.get::<Principal>() {
            Some(p) if matches!(p.kind(), PrincipalKind::Operator(_)) => Ok(Operator(p.clone())),
            _ => Err(Code::Forbidden.into()),
        }
    }
}

/// The query string's parameters, in order.
pub struct Params(Vec<(String, String)>);

impl<S: Send + Sync> FromRequestParts<S> for Params {
    type Rejection = Problem;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Problem> {
        let query = parts.uri.query().unwrap_or("");
        Ok(Params(
            form_urlencoded::parse(query.as_bytes())
                .map(|(k, v)| (k.into_owned(), v.into_owned()))
                .collect(),
        ))
    }
}

impl Params {
    /// The last value of `name`, if given and not empty.
    fn get(&self, name: &str) -> Option<&str> {
        self.0
            .iter()
            .rev()
            .find(|(k, v)| k == name && !v.is_empty())
            .map(|(_, v)| v.as_str())
    }

    /// Every value of `name`, commas splitting values too.
    fn all(&self, name: &str) -> Vec<String> {
        self.0
            .iter()
            .filter(|(k, _)| k == name)
            .flat_map(|(_, v)| v.split(','))
            .map(str::trim)
            .filter(|v| !v.is_empty())
            .map(str::to_owned)
            .collect()
    }

    /// `name` as a number, if given.
    fn number(&self, name: &str) -> Result<Option<u64>, Problem> {
        self.get(name)
            .map(|v| {
                v.parse::<u64>().map_err(|_| {
                    Problem::new(Code::InvalidRequest)
                        .detail(format!("`{name}` must be a whole number"))
                })
            })
            .transpose()
    }

    /// Refuses parameters other than `known`.
    fn only(&self, known: &[&str]) -> Result<(), Problem> {
        match self.0.iter().find(|(k, _)| !known.contains(&k.as_str())) {
            Some((k, _)) => Err(Problem::new(Code::InvalidRequest).detail(format!(
                "unknown query parameter `{k}`; known: {}",
                known.join(", ")
            ))),
            None => Ok(()),
        }
    }
}

impl From<OperatorError> for Problem {
    fn from(e: OperatorError) -> Problem {
        match e {
            OperatorError::Store(e) => crate::runtime::RuntimeError::Store(e).into(),
            e @ OperatorError::Corrupt(_) => {
                tracing::error!(error = %e, "an operator's request failed");
                Code::Internal.into()
            }
        }
    }
}

impl From<UsersError> for Problem {
    fn from(e: UsersError) -> Problem {
        match e {
            UsersError::Exists(_) => Code::LocalUserExists.into(),
            UsersError::NotFound(_) => Code::LocalUserNotFound.into(),
            e @ (UsersError::BadName { .. }
            | UsersError::BadAttribute(_)
            | UsersError::Kv(_)
            | UsersError::Password(_)) => Problem::new(Code::InvalidRequest).detail(e.to_string()),
            UsersError::Store(e) => crate::runtime::RuntimeError::Store(e).into(),
            e => {
                tracing::error!(error = %e, "a local-users request failed");
                Code::Internal.into()
            }
        }
    }
}

fn reloader(api: &Api) -> Result<Arc<crate::reload::Reloader>, Problem> {
    api.reloader
        .get()
        .cloned()
        .ok_or_else(|| Problem::new(Code::Unavailable))
}

/// Who the caller is.
#[derive(Debug, Serialize, ToSchema)]
pub struct WhoAmI {
    /// The operator's name.
    pub name: String,
    /// The operator's role.
    pub role: Option<super::Role>,
}

/// Who is calling: the operator's name and role.
#[utoipa::path(
    get, path = "/v1/admin/whoami", tag = "admin",
    responses(
        (status = 200, description = "The operator", body = WhoAmI),
        (status = "4XX", description = "Refused", body = Problem, content_type = "application/problem+json"),
    ),
    security(("operator_key" = []))
)]
async fn whoami(Operator(p): Operator) -> Json<WhoAmI> {
    Json(WhoAmI {
        name: p.name().to_owned(),
        role: p.kind().role(),
    })
}

/// The workflows served.
#[derive(Debug, Serialize, ToSchema)]
pub struct WorkflowList {
    /// Sorted by name.
    pub workflows: Vec<WorkflowInfo>,
}

/// One workflow served.
#[derive(Debug, Serialize, ToSchema)]
pub struct WorkflowInfo {
    /// Its name.
    pub name: String,
    /// Its version: sha256 of the file it was loaded from.
    pub version: String,
    /// The file.
    pub file: String,
    /// `reset` or `enrollment`.
    pub purpose: String,
    /// The admin's description.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
}

fn workflow_infos(workflows: &[Arc<crate::workflow::Workflow>]) -> Vec<WorkflowInfo> {
    let mut out: Vec<WorkflowInfo> = workflows
        .iter()
        .map(|w| WorkflowInfo {
            name: w.name.clone(),
            version: w.version.clone(),
            file: w.source.clone(),
            purpose: format!("{:?}", w.purpose).to_lowercase(),
            description: w.description.clone(),
        })
        .collect();
    out.sort_by(|a, b| a.name.cmp(&b.name));
    out
}

/// The workflows served, with their version and file.
#[utoipa::path(
    get, path = "/v1/admin/workflows", tag = "admin",
    responses(
        (status = 200, description = "Sorted by name", body = WorkflowList),
        (status = "4XX", description = "Refused", body = Problem, content_type = "application/problem+json"),
    ),
    security(("operator_key" = []))
)]
async fn list_workflows(State(api): State<Arc<Api>>) -> Json<WorkflowList> {
    Json(WorkflowList {
        workflows: workflow_infos(&api.runtime.current()),
    })
}

/// A candidate workflow file to check.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ValidateRequest {
    /// The file's name in the workflows folder, for the diagnostics
    /// (default `candidate.yaml`); a name, not a path.
    #[serde(default)]
    #[schema(example = "demo.yaml", pattern = "^[^/\\\\]{1,255}$")]
    pub file: Option<String>,
    /// The file's YAML text.
    #[schema(example = "version: 1\nname: demo\n...")]
    pub yaml: String,
}

/// What `resetgate check` says of a candidate.
#[derive(Debug, Serialize, ToSchema)]
pub struct Validation {
    /// Whether it loads (no errors; warnings allowed).
    pub valid: bool,
    /// The workflow's name, when it loads.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// The version it would have, when it loads.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    /// Every error and warning, at line:column of the file.
    pub diagnostics: Vec<DiagnosticView>,
}

/// One diagnostic, as `resetgate check` prints it.
#[derive(Debug, Serialize, ToSchema)]
pub struct DiagnosticView {
    /// `error` or `warning`.
    pub severity: String,
    /// The file.
    pub file: String,
    /// Line, from 1.
    pub line: usize,
    /// Column, from 1.
    pub column: usize,
    /// A stable code, e.g. `unknown-field`.
    pub code: String,
    /// What is wrong.
    pub message: String,
    /// How to fix it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub help: Option<String>,
    /// The whole diagnostic as `resetgate check` prints it.
    pub text: String,
}

impl From<&Diagnostic> for DiagnosticView {
    fn from(d: &Diagnostic) -> Self {
        DiagnosticView {
            severity: d.severity.to_string(),
            file: d.file.display().to_string(),
            line: d.line,
            column: d.column,
            code: d.code.to_owned(),
            message: d.message.clone(),
            help: d.help.clone(),
            text: d.to_string(),
        }
    }
}

/// Check a candidate workflow file without serving it.
///
/// Loads it exactly as a reload would (schema, plugins, each plugin's
/// config schema, warnings); changes nothing. The body limit of the API
/// applies (`api.body_limit`).
#[utoipa::path(
    post, path = "/v1/admin/workflows/validate", tag = "admin",
    request_body = ValidateRequest,
    responses(
        (status = 200, description = "The verdict; `valid` is false when the file has errors", body = Validation),
        (status = "4XX", description = "Refused", body = Problem, content_type = "application/problem+json"),
    ),
    security(("operator_key" = []))
)]
async fn validate_workflow(
    State(api): State<Arc<Api>>,
    JsonBody(body): JsonBody<ValidateRequest>,
) -> Result<Json<Validation>, Problem> {
    let file = body.file.unwrap_or_else(|| "candidate.yaml".to_owned());
    if file.is_empty() || file.len() > 255 || file.contains(['/', '\\']) || file.starts_with('.') {
        return Err(
            Problem::new(Code::InvalidRequest).detail("`file` must be a file name, not a path")
        );
    }
    let reloader = reloader(&api)?;
    let verdict = on_worker(&api, move || {
        Ok(reloader.validate(&file, body.yaml.as_bytes()))
    })
    .await?;
    Ok(Json(match verdict {
        Ok((wf, warnings)) => Validation {
            valid: true,
            name: Some(wf.name.clone()),
            version: Some(wf.version.clone()),
            diagnostics: warnings.iter().map(DiagnosticView::from).collect(),
        },
        Err(ds) => Validation {
            valid: ds.iter().all(|d| !d.is_error()),
            name: None,
            version: None,
            diagnostics: ds.iter().map(DiagnosticView::from).collect(),
        },
    }))
}

/// What a reload did.
#[derive(Debug, Serialize, ToSchema)]
pub struct ReloadReport {
    /// The workflows served now.
    pub workflows: Vec<WorkflowInfo>,
    /// Workflows whose file has errors: the version loaded before keeps
    /// serving.
    pub kept: Vec<String>,
    /// Files refused for their errors.
    pub refused: Vec<String>,
    /// Every error and warning of the workflow files.
    pub diagnostics: Vec<DiagnosticView>,
    /// Why the capabilities (secrets, LDAP connections, HTTP origins) were
    /// not reloaded, if they were not.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub capabilities_error: Option<String>,
    /// Why the TLS certificate was not reloaded, if it was not.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tls_error: Option<String>,
    /// The gateway config file read again (absent when the gateway runs
    /// without one).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub config: Option<ConfigReloadView>,
    /// Whether everything was taken: the config file, the TLS files, the
    /// capabilities and every workflow file.
    pub accepted: bool,
}

/// What became of the gateway config file in a reload.
#[derive(Debug, Serialize, ToSchema)]
pub struct ConfigReloadView {
    /// The file.
    pub file: String,
    /// Whether it is in force now: its API keys, operators, limits, page
    /// branding and capabilities. If not, the config loaded before is.
    pub applied: bool,
    /// Its errors, as `resetgate check --config` reports them, when it was
    /// refused.
    pub diagnostics: Vec<DiagnosticView>,
    /// Settings the file changes that only a restart applies (`listen`,
    /// `store`, `data_dir`, ...); they keep their running values.
    pub needs_restart: Vec<String>,
}

/// Reload the gateway config, TLS files, capabilities and workflows, as `SIGHUP` does.
///
/// The gateway config file (when the gateway was started with one) is
/// taken whole or not at all: with errors it is refused (`config.applied`
/// false, its diagnostics in `config.diagnostics`) and the config loaded
/// before stays in force; settings only a restart applies are listed in
/// `config.needs_restart` and keep their running values. A workflow file
/// with errors is refused (listed in `refused` with its diagnostics) and
/// the version loaded before keeps serving; running flows finish on the
/// version they started with. Audited as `operator.reload`.
#[utoipa::path(
    post, path = "/v1/admin/workflows/reload", tag = "admin",
    responses(
        (status = 200, description = "What was loaded, kept and refused", body = ReloadReport),
        (status = "4XX", description = "Refused", body = Problem, content_type = "application/problem+json"),
    ),
    security(("operator_key" = []))
)]
async fn reload_workflows(
    State(api): State<Arc<Api>>,
    Operator(op): Operator,
) -> Result<Json<ReloadReport>, Problem> {
    let reloader = reloader(&api)?;
    let rt = api.runtime.clone();
    // A reload loads plugins: a blocking thread, not a request worker.
    let report = tokio::task::spawn_blocking(move || {
        let report = reloader.reload();
        let mut detail = serde_json::Map::new();
        detail.insert("refused".into(), report.refused.len().into());
        detail.insert("kept".into(), report.kept.clone().into());
        if let Some(config) = &report.config {
            detail.insert("config_applied".into(), config.applied.into());
        }
        operator::audit_action(&rt, &op, now_ms(), "reload", None, detail)?;
        Ok::<_, OperatorError>(report)
    })
    .await
    .map_err(|_| Problem::new(Code::Internal))??;
    let accepted = report.accepted();
    Ok(Json(ReloadReport {
        workflows: workflow_infos(&report.workflows),
        kept: report.kept,
        refused: report
            .refused
            .iter()
            .map(|p| p.display().to_string())
            .collect(),
        diagnostics: report
            .diagnostics
            .iter()
            .map(DiagnosticView::from)
            .collect(),
        accepted,
        capabilities_error: report.capabilities_error,
        tls_error: report.tls_error,
        config: report.config.map(|c| ConfigReloadView {
            file: c.file.display().to_string(),
            applied: c.applied,
            diagnostics: c.diagnostics.iter().map(DiagnosticView::from).collect(),
            needs_restart: c.needs_restart.iter().map(|s| (*s).to_owned()).collect(),
        }),
    }))
}

/// The plugins current workflows use.
#[derive(Debug, Serialize, ToSchema)]
pub struct PluginList {
    /// By name.
    pub plugins: Vec<PluginView>,
}

/// One plugin (by the name workflows reference it under).
#[derive(Debug, Serialize, ToSchema)]
pub struct PluginView {
    /// `NAME` of `NAME.wasm`.
    pub name: String,
    /// sha256 of the component file.
    pub sha256: String,
    /// The world it was built for (`gate`, `directory`, ...).
    pub kind: String,
    /// The version it describes itself with.
    pub version: String,
    /// Calls since the gateway started (every load of the name).
    pub calls: u64,
    /// Calls the host stopped, by kind of failure (timeout, trap, ...).
    pub failures: BTreeMap<String, u64>,
    /// The capabilities the component imports, granted or not.
    pub imports: Vec<String>,
    /// Each step that uses it, with what the step grants.
    pub steps: Vec<PluginStep>,
}

/// A step that uses a plugin.
#[derive(Debug, Serialize, ToSchema)]
pub struct PluginStep {
    /// The workflow.
    pub workflow: String,
    /// The step, e.g. `gates[0]`.
    pub step: String,
    /// What the step grants: `http`, `ldap`, `secrets`, `commands`,
    /// `probe` (each a list of names) and `kv`.
    #[schema(value_type = Object)]
    pub grants: serde_json::Value,
}

/// The plugins current workflows use: sha256, kind, version, grants, call
/// counts and failures.
#[utoipa::path(
    get, path = "/v1/admin/plugins", tag = "admin",
    responses(
        (status = 200, description = "Sorted by name", body = PluginList),
        (status = "4XX", description = "Refused", body = Problem, content_type = "application/problem+json"),
    ),
    security(("operator_key" = []))
)]
async fn list_plugins(State(api): State<Arc<Api>>) -> Json<PluginList> {
    Json(PluginList {
        plugins: plugin_views(api.runtime.current()),
    })
}

/// The plugins `workflows` use, by name, each with the steps that use it
/// (what `GET /v1/admin/plugins` and `resetgate plugin list` show).
pub fn plugin_views(mut workflows: Vec<Arc<crate::workflow::Workflow>>) -> Vec<PluginView> {
    let mut plugins: BTreeMap<String, PluginView> = BTreeMap::new();
    workflows.sort_by(|a, b| a.name.cmp(&b.name));
    for wf in &workflows {
        for (step, kind) in wf.steps() {
            let p = &step.plugin;
            let view = plugins
                .entry(step.plugin_name.clone())
                .or_insert_with(|| PluginView {
                    name: step.plugin_name.clone(),
                    sha256: p.sha256().to_owned(),
                    kind: kind.to_string(),
                    version: p.info().version.clone(),
                    calls: p.stats().duration.count(),
                    failures: p
                        .stats()
                        .failures
                        .snapshot()
                        .into_iter()
                        .map(|(k, n)| (k.first().cloned().unwrap_or_default(), n))
                        .collect(),
                    imports: p.needs().iter().map(|c| c.interface().to_owned()).collect(),
                    steps: Vec::new(),
                });
            let g = &step.grants;
            view.steps.push(PluginStep {
                workflow: wf.name.clone(),
                step: step.path.clone(),
                grants: serde_json::json!({
                    "http": g.http, "ldap": g.ldap, "secrets": g.secrets,
                    "commands": g.commands, "probe": g.probe, "kv": g.kv,
                }),
            });
        }
    }
    plugins.into_values().collect()
}

/// The users of a `local-users` directory.
#[derive(Debug, Serialize, ToSchema)]
pub struct LocalUserList {
    /// By name: `name`, `id`, `display_name`, `attributes`, `disabled`,
    /// `must_change`, `has_password` (never a hash).
    #[schema(value_type = Vec<Object>)]
    pub users: Vec<serde_json::Value>,
}

fn local_users(api: &Api, params: &Params) -> Result<Users, Problem> {
    let plugin = params
        .get("plugin")
        .unwrap_or(crate::users::record::NAMESPACE);
    Ok(Users::new(api.runtime.store().clone(), plugin)?)
}

/// The users of the `local-users` directory (`?plugin=NAME` for a copy of
/// the plugin under another name), as `resetgate users list` shows them.
#[utoipa::path(
    get, path = "/v1/admin/local-users", tag = "admin",
    params(("plugin" = Option<String>, Query, description = "The directory plugin's name (default `local-users`)")),
    responses(
        (status = 200, description = "By name", body = LocalUserList),
        (status = "4XX", description = "Refused", body = Problem, content_type = "application/problem+json"),
    ),
    security(("operator_key" = []))
)]
async fn list_local_users(
    State(api): State<Arc<Api>>,
    params: Params,
) -> Result<Json<LocalUserList>, Problem> {
    params.only(&["plugin"])?;
    let users = local_users(&api, &params)?;
    let listed = on_worker(&api, move || Ok(users.list()?)).await?;
    Ok(Json(LocalUserList {
        users: listed
            .iter()
            .map(|u| match u {
                Ok(u) => crate::users::user_json(u),
                Err(e) => serde_json::json!({ "error": e.to_string() }),
            })
            .collect(),
    }))
}

/// A user to add to the `local-users` directory.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AddLocalUser {
    /// The name (stored trimmed and lowercased).
    #[schema(example = "alice")]
    pub name: String,
    /// The name shown to people.
    #[serde(default)]
    pub display_name: Option<String>,
    /// Attributes gates may check.
    #[serde(default)]
    #[schema(example = json!({"employee_id": "4711"}))]
    pub attributes: BTreeMap<String, String>,
    /// The password (stored only as an argon2id hash). Without it and
    /// without `random_password`, no password works until a reset sets one.
    #[serde(default)]
    #[schema(value_type = Option<String>)]
    pub password: Option<SecretString>,
    /// Set a random password nobody knows (the user sets their own through
    /// a reset).
    #[serde(default)]
    pub random_password: bool,
    /// The password must be changed at next logon.
    #[serde(default)]
    pub must_change: bool,
    /// Add the user disabled.
    #[serde(default)]
    pub disabled: bool,
    /// Replace a user of that name (with a new id).
    #[serde(default)]
    pub replace: bool,
}

/// Add a user to the `local-users` directory (`resetgate users add`).
/// Audited as `operator.local-user-add`.
#[utoipa::path(
    post, path = "/v1/admin/local-users", tag = "admin",
    params(("plugin" = Option<String>, Query, description = "The directory plugin's name (default `local-users`)")),
    request_body = AddLocalUser,
    responses(
        (status = 201, description = "Added", body = Object),
        (status = "4XX", description = "Refused (`local-user-exists` without `replace`)", body = Problem, content_type = "application/problem+json"),
    ),
    security(("operator_key" = []))
)]
async fn add_local_user(
    State(api): State<Arc<Api>>,
    Operator(op): Operator,
    params: Params,
    JsonBody(body): JsonBody<AddLocalUser>,
) -> Result<Response, Problem> {
    params.only(&["plugin"])?;
    if body.password.is_some() && body.random_password {
        return Err(Problem::new(Code::InvalidRequest)
            .detail("give `password` or `random_password`, not both"));
    }
    let users = local_users(&api, &params)?;
    let rt = api.runtime.clone();
    let user = on_worker(&api, move || {
        let password = match (body.password, body.random_password) {
            (Some(p), _) => Some(p.0),
            (None, true) => Some(crate::users::random_password()?),
            (None, false) => None,
        };
        let user = users.add(
            NewUser {
                name: body.name,
                display_name: body.display_name,
                attributes: body.attributes,
                password,
                must_change: body.must_change,
                disabled: body.disabled,
            },
            body.replace,
        )?;
        let mut detail = serde_json::Map::new();
        detail.insert("id".into(), user.id.clone().into());
        detail.insert("replace".into(), body.replace.into());
        let key = crate::runtime::user_key_of(
            Some(&crate::contract::User {
                id: user.id.clone(),
                ..Default::default()
            }),
            &user.name,
        );
        operator::audit_action(&rt, &op, now_ms(), "local-user-add", Some(key), detail)?;
        Ok(crate::users::user_json(&user))
    })
    .await?;
    Ok((StatusCode::CREATED, Json(user)).into_response())
}

/// Remove a user from the `local-users` directory (`resetgate users
/// remove`). Audited as `operator.local-user-remove`.
#[utoipa::path(
    delete, path = "/v1/admin/local-users/{name}", tag = "admin",
    params(
        ("name" = String, Path, description = "The user's name"),
        ("plugin" = Option<String>, Query, description = "The directory plugin's name (default `local-users`)"),
    ),
    responses(
        (status = 204, description = "Removed"),
        (status = "4XX", description = "Refused (`local-user-not-found`)", body = Problem, content_type = "application/problem+json"),
    ),
    security(("operator_key" = []))
)]
async fn remove_local_user(
    State(api): State<Arc<Api>>,
    Operator(op): Operator,
    Path(name): Path<String>,
    params: Params,
) -> Result<StatusCode, Problem> {
    params.only(&["plugin"])?;
    let users = local_users(&api, &params)?;
    let rt = api.runtime.clone();
    on_worker(&api, move || {
        let id = users.get(&name)?.map(|u| u.id);
        users.remove(&name)?;
        let key = id.map(|id| {
            crate::runtime::user_key_of(
                Some(&crate::contract::User {
                    id,
                    ..Default::default()
                }),
                &name,
            )
        });
        operator::audit_action(
            &rt,
            &op,
            now_ms(),
            "local-user-remove",
            key,
            serde_json::Map::new(),
        )?;
        Ok(())
    })
    .await?;
    Ok(StatusCode::NO_CONTENT)
}

/// A user's lockout under every workflow.
#[derive(Debug, Serialize, ToSchema)]
pub struct LockoutView {
    /// The name asked about.
    pub user: String,
    /// Whether any workflow's rule locks the user out now.
    pub locked: bool,
    /// Each current workflow, by name.
    pub workflows: Vec<LockoutState>,
}

/// A user's lockout: history and state under each current workflow's
/// lockout rule (each workflow's directory resolves the name).
#[utoipa::path(
    get, path = "/v1/admin/lockouts/{user}", tag = "admin",
    params(("user" = String, Path, description = "The user's name, as people type it")),
    responses(
        (status = 200, description = "The lockout", body = LockoutView),
        (status = "4XX", description = "Refused", body = Problem, content_type = "application/problem+json"),
    ),
    security(("operator_key" = []))
)]
async fn read_lockout(
    State(api): State<Arc<Api>>,
    Path(user): Path<String>,
) -> Result<Json<LockoutView>, Problem> {
    let rt = api.runtime.clone();
    let name = user.clone();
    let workflows = on_worker(&api, move || Ok(operator::lockout(&rt, &name, now_ms())?)).await?;
    Ok(Json(LockoutView {
        user,
        locked: workflows.iter().any(|w| w.state.starts_with("locked")),
        workflows,
    }))
}

/// Clear a user's lockout: the failures every workflow counts are
/// removed, and each directory that knows the user is asked to unlock the
/// account (its `unlock`). Audited as `operator.unlock` with the
/// operator's name.
#[utoipa::path(
    delete, path = "/v1/admin/lockouts/{user}", tag = "admin",
    params(("user" = String, Path, description = "The user's name, as people type it")),
    responses(
        (status = 200, description = "Cleared; each directory's answer", body = Unlocked),
        (status = "4XX", description = "Refused", body = Problem, content_type = "application/problem+json"),
    ),
    security(("operator_key" = []))
)]
async fn clear_lockout(
    State(api): State<Arc<Api>>,
    Operator(op): Operator,
    Path(user): Path<String>,
) -> Result<Json<Unlocked>, Problem> {
    let rt = api.runtime.clone();
    let unlocked = on_worker(&api, move || {
        Ok(operator::unlock(&rt, &user, &op, now_ms())?)
    })
    .await?;
    Ok(Json(unlocked))
}

/// A user's recent flows.
#[derive(Debug, Serialize, ToSchema)]
pub struct FlowList {
    /// Newest first.
    pub flows: Vec<FlowSummary>,
}

/// A user's recent flows and their outcomes, from the audit log.
#[utoipa::path(
    get, path = "/v1/admin/flows", tag = "admin",
    params(
        ("user" = String, Query, description = "The user's name, as people type it"),
        ("limit" = Option<u64>, Query, description = "At most this many flows (default 20, at most 1000)"),
    ),
    responses(
        (status = 200, description = "Newest first", body = FlowList),
        (status = "4XX", description = "Refused", body = Problem, content_type = "application/problem+json"),
    ),
    security(("operator_key" = []))
)]
async fn user_flows(
    State(api): State<Arc<Api>>,
    params: Params,
) -> Result<Json<FlowList>, Problem> {
    params.only(&["user", "limit"])?;
    let user = params
        .get("user")
        .ok_or_else(|| Problem::new(Code::InvalidRequest).detail("give `user`"))?
        .to_owned();
    let limit = params
        .number("limit")?
        .map_or(FLOWS_DEFAULT, |n| (n as usize).clamp(1, AUDIT_PAGE_MAX));
    let rt = api.runtime.clone();
    let flows = on_worker(&api, move || {
        Ok(operator::flows(&rt, &user, now_ms(), limit)?)
    })
    .await?;
    Ok(Json(FlowList { flows }))
}

/// A page of the audit log.
#[derive(Debug, Serialize, ToSchema)]
pub struct AuditPage {
    /// In log order: `chain`, `position`, `seq`, `prev_hash`, `hash` and
    /// the `record` (`at_ms`, `kind`, `flow`, `user` — a hashed user key —,
    /// `workflow`, `detail`).
    #[schema(value_type = Vec<Object>)]
    pub entries: Vec<AuditEntry>,
    /// Pass as `after` for the next page; absent on the last page.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next_after: Option<u64>,
}

/// The audit filters of a query or an export: `user` (a name, resolved by
/// every workflow's directory), `user_key` (a stored key), `kind` (one or
/// more, comma-separated or repeated), `from_ms`, `to_ms`, `after`.
struct AuditFilter {
    user: Option<String>,
    user_key: Option<String>,
    query: AuditQuery,
}

const AUDIT_PARAMS: [&str; 7] = [
    "user", "user_key", "kind", "from_ms", "to_ms", "after", "limit",
];

fn audit_filter(params: &Params, limit: usize) -> Result<AuditFilter, Problem> {
    params.only(&AUDIT_PARAMS)?;
    Ok(AuditFilter {
        user: params.get("user").map(str::to_owned),
        user_key: params.get("user_key").map(str::to_owned),
        query: AuditQuery {
            user: None,
            kinds: params.all("kind"),
            from_ms: params.number("from_ms")?,
            to_ms: params.number("to_ms")?,
            after: params.number("after")?,
            limit,
        },
    })
}

/// The entries `filter` selects (blocking).
fn audit_entries(
    rt: &crate::runtime::Runtime,
    filter: &AuditFilter,
    query: &AuditQuery,
) -> Result<Vec<AuditEntry>, OperatorError> {
    let mut keys = Vec::new();
    if let Some(name) = &filter.user {
        keys.extend(operator::keys(
            &operator::accounts(rt, name, now_ms()),
            name,
        ));
    }
    keys.extend(filter.user_key.clone());
    if keys.is_empty() {
        Ok(rt.store().audit().query(query)?)
    } else {
        operator::audit_of_keys(rt, &keys, query)
    }
}

/// Query the audit log by user, time range and kind, a page at a time.
#[utoipa::path(
    get, path = "/v1/admin/audit", tag = "admin",
    params(
        ("user" = Option<String>, Query, description = "A user's name: entries about the keys every workflow's directory resolves it to"),
        ("user_key" = Option<String>, Query, description = "A stored (hashed) user key"),
        ("kind" = Option<String>, Query, description = "Kinds, e.g. `flow.started,operator.unlock` (repeatable)"),
        ("from_ms" = Option<u64>, Query, description = "At or after (ms since the Unix epoch)"),
        ("to_ms" = Option<u64>, Query, description = "Before (ms since the Unix epoch)"),
        ("after" = Option<u64>, Query, description = "After this position: `next_after` of the previous page"),
        ("limit" = Option<u64>, Query, description = "Entries per page (default 100, at most 1000)"),
    ),
    responses(
        (status = 200, description = "A page, in log order", body = AuditPage),
        (status = "4XX", description = "Refused", body = Problem, content_type = "application/problem+json"),
    ),
    security(("operator_key" = []))
)]
async fn query_audit(
    State(api): State<Arc<Api>>,
    params: Params,
) -> Result<Json<AuditPage>, Problem> {
    let limit = params
        .number("limit")?
        .map_or(AUDIT_PAGE, |n| (n as usize).clamp(1, AUDIT_PAGE_MAX));
    let filter = audit_filter(&params, limit)?;
    let rt = api.runtime.clone();
    let entries = on_worker(&api, move || {
        Ok(audit_entries(&rt, &filter, &filter.query)?)
    })
    .await?;
    let next_after = (entries.len() == limit)
        .then(|| entries.last().map(|e| e.position))
        .flatten();
    Ok(Json(AuditPage {
        entries,
        next_after,
    }))
}

/// Export the audit log (or what the filters select) as JSON lines, one
/// entry a line, streamed.
///
/// Read in batches while it is sent, on a thread of its own, so an export
/// of the whole log holds no request worker.
#[utoipa::path(
    get, path = "/v1/admin/audit/export", tag = "admin",
    params(
        ("user" = Option<String>, Query, description = "A user's name"),
        ("user_key" = Option<String>, Query, description = "A stored (hashed) user key"),
        ("kind" = Option<String>, Query, description = "Kinds (repeatable, or comma-separated)"),
        ("from_ms" = Option<u64>, Query, description = "At or after (ms since the Unix epoch)"),
        ("to_ms" = Option<u64>, Query, description = "Before (ms since the Unix epoch)"),
        ("after" = Option<u64>, Query, description = "After this position"),
    ),
    responses(
        (status = 200, description = "One audit entry per line", content_type = "application/x-ndjson", body = String),
        (status = "4XX", description = "Refused", body = Problem, content_type = "application/problem+json"),
    ),
    security(("operator_key" = []))
)]
async fn export_audit(State(api): State<Arc<Api>>, params: Params) -> Result<Response, Problem> {
    if params.get("limit").is_some() {
        return Err(Problem::new(Code::InvalidRequest).detail("an export has no `limit`"));
    }
    let filter = audit_filter(&params, EXPORT_BATCH)?;
    let rt = api.runtime.clone();
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<Bytes, std::io::Error>>(4);
    tokio::task::spawn_blocking(move || {
        let mut query = filter.query.clone();
        loop {
            let batch = match audit_entries(&rt, &filter, &query) {
                Ok(batch) => batch,
                Err(e) => {
                    tracing::error!(error = %e, "an audit export stopped: reading the log failed");
                    let _ = tx
                        .blocking_send(Err(std::io::Error::other("reading the audit log failed")));
                    return;
                }
            };
            let Some(last) = batch.last().map(|e| e.position) else {
                return;
            };
            let mut chunk = Vec::new();
            for entry in &batch {
                if serde_json::to_writer(&mut chunk, entry).is_err() {
                    return;
                }
                chunk.push(b'\n');
            }
            if tx.blocking_send(Ok(Bytes::from(chunk))).is_err() {
                return; // the client went away
            }
            if batch.len() < query.limit {
                return;
            }
            query.after = Some(last);
        }
    });
    Ok(ndjson(rx))
}

/// Take a backup of the store: every record as of one moment, in the
/// backup file format (`resetgate restore` puts it back into a stopped
/// gateway's store), streamed. Audited as `operator.backup` before it
/// starts.
///
/// Written on a thread of its own while it is sent. A backup that fails
/// midway ends without its end line, which `restore` refuses.
#[utoipa::path(
    get, path = "/v1/admin/backup", tag = "admin",
    responses(
        (status = 200, description = "The backup: JSON lines, a header first and an end line last", content_type = "application/x-ndjson", body = String),
        (status = "4XX", description = "Refused", body = Problem, content_type = "application/problem+json"),
    ),
    security(("operator_key" = []))
)]
async fn backup(State(api): State<Arc<Api>>, Operator(op): Operator) -> Result<Response, Problem> {
    let rt = api.runtime.clone();
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<Bytes, std::io::Error>>(4);
    let audited = {
        let rt = rt.clone();
        tokio::task::spawn_blocking(move || {
            operator::audit_action(&rt, &op, now_ms(), "backup", None, serde_json::Map::new())
        })
        .await
        .map_err(|_| Problem::new(Code::Internal))?
    };
    audited?;
    tokio::task::spawn_blocking(move || {
        let mut sink = ChunkSink {
            tx,
            chunk: Vec::with_capacity(CHUNK),
        };
        let store = rt.store();
        match crate::store::backup::write(&**store, &mut sink, now_ms()) {
            Ok(records) => tracing::info!(records, "backup taken"),
            Err(e) => {
                tracing::error!(error = %e, "a backup stopped");
                let _ = sink
                    .tx
                    .blocking_send(Err(std::io::Error::other("the backup failed")));
            }
        }
    });
    Ok(ndjson(rx))
}

/// A JSON-lines response whose body is what arrives on `rx`.
fn ndjson(rx: tokio::sync::mpsc::Receiver<Result<Bytes, std::io::Error>>) -> Response {
    let stream = futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|item| (item, rx))
    });
    let mut response = Body::from_stream(stream).into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/x-ndjson"),
    );
    response
}

/// Bytes a streamed backup sends at a time.
const CHUNK: usize = 64 * 1024;

/// A `Write` that hands what is written to a response stream in chunks.
struct ChunkSink {
    tx: tokio::sync::mpsc::Sender<Result<Bytes, std::io::Error>>,
    chunk: Vec<u8>,
}

impl std::io::Write for ChunkSink {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.chunk.extend_from_slice(buf);
        if self.chunk.len() >= CHUNK {
            self.flush()?;
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        if self.chunk.is_empty() {
            return Ok(());
        }
        let chunk = std::mem::replace(&mut self.chunk, Vec::with_capacity(CHUNK));
        self.tx
            .blocking_send(Ok(Bytes::from(chunk)))
            .map_err(|_| std::io::Error::other("the client went away"))
    }
}

/// The audit log's verification.
#[derive(Debug, Serialize, ToSchema)]
pub struct AuditVerification {
    /// Whether every chain verifies from its first entry to its last.
    pub verified: bool,
    /// Entries in all chains (when verified).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub entries: Option<u64>,
    /// Each chain: `chain`, `entries`, `head` (when verified).
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Vec<Object>>)]
    pub chains: Option<Vec<crate::store::ChainSummary>>,
    /// Where and why it does not verify.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// Verify every hash chain of the audit log (`resetgate audit verify`,
/// while the gateway runs).
#[utoipa::path(
    get, path = "/v1/admin/audit/verify", tag = "admin",
    responses(
        (status = 200, description = "The verdict", body = AuditVerification),
        (status = "4XX", description = "Refused", body = Problem, content_type = "application/problem+json"),
    ),
    security(("operator_key" = []))
)]
async fn verify_audit(State(api): State<Arc<Api>>) -> Result<Json<AuditVerification>, Problem> {
    let rt = api.runtime.clone();
    let verdict = tokio::task::spawn_blocking(move || rt.store().audit().verify())
        .await
        .map_err(|_| Problem::new(Code::Internal))?;
    Ok(Json(match verdict {
        Ok(summary) => AuditVerification {
            verified: true,
            entries: Some(summary.entries),
            chains: Some(summary.chains),
            error: None,
        },
        Err(crate::store::AuditError::Store(
            e @ (StoreError::Unavailable { .. } | StoreError::Closed),
        )) => return Err(crate::runtime::RuntimeError::Store(e).into()),
        Err(e) => AuditVerification {
            verified: false,
            entries: None,
            chains: None,
            error: Some(e.to_string()),
        },
    }))
}

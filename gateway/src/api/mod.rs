//! The portal API under `/v1`, the operational routes and the self-service
//! page. Only this module knows status codes and wire shapes; it turns
//! requests into [`Runtime`] calls (on the request workers: they call plugins
//! and wait for durable flushes) and outcomes into [`wire::FlowView`]s.
//!
//! Every request passes one layer ([`serve`]): its log span and security
//! headers, its small body read, client identification (API key, client
//! certificate or anonymous, with its rate limit: a [`Principal`] in the
//! request's extensions), the role layer ([`roles::RULES`]: who may use the
//! matched route), then the route. Every error is a [`Problem`]. The guide for portal writers and operators is
//! `docs/http-api.md`.

pub mod admin;
pub mod limit;
pub mod page;
pub mod principal;
pub mod problem;
pub mod roles;
pub mod wire;

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::extract::{
    ConnectInfo, FromRequest, FromRequestParts, MatchedPath, Path, Request, State,
};
use axum::handler::Handler;
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{MethodRouter, get, post};
use axum::{Json, Router};
use serde::de::DeserializeOwned;
use sha2::{Digest, Sha256};
use utoipa::OpenApi;

use crate::contract::FieldValue;
use tracing::Instrument as _;

use crate::logging::RequestId;
use crate::metrics::{self, HttpMetrics};
use crate::runtime::{PasswordFor, Runtime, RuntimeError, Staged};

pub use limit::{Hit, HitLog, Limiter, Rate};
pub use principal::{Principal, Role};
pub use problem::{Code, Problem};
use wire::{AnswersRequest, FlowView, PasswordRequest, StartRequest};

/// How much of an oversized body is read (and dropped) before the 413, so
/// that an ordinary client still sending it can read the answer.
const DRAIN_LIMIT: usize = 1024 * 1024;

/// The Content-Security-Policy of every response: the page loads only its
/// own script and style, talks only to this origin, and cannot be framed.
const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; \
                   connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'";

/// A portal's API key, as the config holds it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ApiKey {
    /// The portal's name (for logs and metrics).
    pub name: String,
    /// sha256 of the key.
    pub sha256: [u8; 32],
}

/// The API's settings (the `api` section of the gateway config).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ApiConfig {
    /// Largest request body accepted.
    pub body_limit: usize,
    /// How long a client may take to send a request body.
    pub body_timeout: Duration,
    /// Whether clients without an API key (the self-service page) are served.
    pub anonymous: bool,
    /// Portal keys.
    pub keys: Vec<ApiKey>,
    /// Operators: their keys or certificates and roles.
    pub operators: Vec<principal::Operator>,
    /// Rate per client address for anonymous clients.
    pub anonymous_rate: Rate,
    /// Rate per portal key.
    pub portal_rate: Rate,
    /// Flow starts per user name (whoever asks).
    pub user_rate: Rate,
}

impl Default for ApiConfig {
    fn default() -> Self {
        ApiConfig {
            body_limit: 16 * 1024,
            body_timeout: Duration::from_secs(10),
            anonymous: true,
            keys: Vec::new(),
            operators: Vec::new(),
            anonymous_rate: Rate::per_minute(120, 30),
            portal_rate: Rate::per_minute(120_000, 4000),
            user_rate: Rate::per_minute(10, 5),
        }
    }
}

/// The API's settings in force and the rate limiters they set, swapped
/// whole by a reload ([`Api::set_config`]): a request reads them once, so
/// it sees either the old key set or the new one, never a mix.
pub struct Live {
    /// The `api` section of the gateway config.
    pub config: ApiConfig,
    clients: Arc<Limiter>,
    portals: Arc<Limiter>,
    users: Arc<Limiter>,
}

impl Live {
    fn new(config: ApiConfig) -> Live {
        Live {
            clients: Arc::new(Limiter::new(config.anonymous_rate)),
            portals: Arc::new(Limiter::new(config.portal_rate)),
            users: Arc::new(Limiter::new(config.user_rate)),
            config,
        }
    }

    /// The settings `config` makes after these: a limiter whose rate is
    /// unchanged is kept with its buckets (a reload gives no client a fresh
    /// burst); one whose rate changed starts anew.
    fn next(&self, config: ApiConfig) -> Live {
        let keep = |old: &Arc<Limiter>, was: Rate, now: Rate| {
            if was == now {
                old.clone()
            } else {
                Arc::new(Limiter::new(now))
            }
        };
        Live {
            clients: keep(
                &self.clients,
                self.config.anonymous_rate,
                config.anonymous_rate,
            ),
            portals: keep(&self.portals, self.config.portal_rate, config.portal_rate),
            users: keep(&self.users, self.config.user_rate, config.user_rate),
            config,
        }
    }
}

/// The API's shared state.
pub struct Api {
    runtime: Arc<Runtime>,
    /// Where runtime requests are carried out.
    workers: crate::workers::Workers,
    /// Keys, operators, limits: replaced whole on reload.
    live: std::sync::RwLock<Arc<Live>>,
    ready: AtomicBool,
    /// Responses by matched route: durations and statuses (`/metrics`).
    http: HttpMetrics,
    /// Rate-limit hits, sampled for the log.
    hits: HitLog,
    /// The plugin host, whose per-plugin statistics `/metrics` shows.
    plugins: std::sync::OnceLock<crate::plugin::PluginHost>,
    /// The page's branding (the config's `page:` section).
    page: std::sync::RwLock<Arc<page::PageSettings>>,
    /// What reloads workflows (the admin API's reload and validate).
    reloader: std::sync::OnceLock<Arc<crate::reload::Reloader>>,
}

impl Api {
    /// The API over `runtime` with `config`.
    pub fn new(runtime: Arc<Runtime>, config: ApiConfig) -> Arc<Api> {
        let api = Arc::new(Api {
            runtime,
            workers: crate::workers::Workers::per_core(),
            live: std::sync::RwLock::new(Arc::new(Live::new(config))),
            ready: AtomicBool::new(true),
            http: HttpMetrics::default(),
            hits: HitLog::default(),
            plugins: std::sync::OnceLock::new(),
            page: std::sync::RwLock::default(),
            reloader: std::sync::OnceLock::new(),
        });
        // Drop the rate limiters' full buckets on a timer; the thread ends
        // with the API.
        let weak = Arc::downgrade(&api);
        let sweeper = std::thread::Builder::new()
            .name("rate-limit-sweep".into())
            .spawn(move || {
                loop {
                    std::thread::sleep(limit::SWEEP_EVERY);
                    let Some(api) = weak.upgrade() else { return };
                    let live = api.live();
                    for limiter in [&live.clients, &live.portals, &live.users] {
                        limiter.sweep();
                    }
                    for (limit, key, hits) in api.hits.expired(std::time::Instant::now()) {
                        tracing::warn!(limit, key = %key, suppressed = hits, "rate limit hits not logged one by one");
                    }
                }
            });
        if let Err(e) = sweeper {
            tracing::error!(error = %e, "cannot start the rate limiters' sweep; idle buckets stay");
        }
        api
    }

    /// The plugin host whose statistics `/metrics` shows: every plugin it
    /// has called, including those of workflows a reload removed, so no
    /// counter goes back (set once; later calls do nothing).
    pub fn show_plugins(&self, host: crate::plugin::PluginHost) {
        let _ = self.plugins.set(host);
    }

    /// The API's settings in force (read once per request).
    pub fn live(&self) -> Arc<Live> {
        self.live
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    /// Replaces the API's settings (a reload of the gateway config): keys,
    /// operators and their roles, anonymous access, body and rate limits.
    /// Requests under way finish with the settings they started with.
    pub fn set_config(&self, config: ApiConfig) {
        let mut live = self
            .live
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let next = live.next(config);
        *live = Arc::new(next);
    }

    /// Sets the page's branding (at start and on reload).
    pub fn set_page(&self, settings: page::PageSettings) {
        *self
            .page
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Arc::new(settings);
    }

    /// The page's branding now.
    fn page(&self) -> Arc<page::PageSettings> {
        self.page
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    /// Gives the admin API what reloads and validates workflows (set once,
    /// at start).
    pub fn set_reloader(&self, reloader: Arc<crate::reload::Reloader>) {
        let _ = self.reloader.set(reloader);
    }

    /// Marks the gateway ready or not (`/readyz`).
    pub fn set_ready(&self, ready: bool) {
        self.ready.store(ready, Ordering::Release);
    }
}

/// The OpenAPI 3.1 description of the API.
#[derive(OpenApi)]
#[openapi(
    info(
        title = "resetgate portal API",
        description = "Drive self-service password reset and enrollment flows. Guide: docs/http-api.md.",
        license(name = "Apache-2.0")
    ),
    paths(start_flow, read_flow, answer_flow, set_password, authenticate, list_workflows),
    components(schemas(Problem)),
    modifiers(&Security),
    tags((name = "flows", description = "Reset and enrollment flows"))
)]
pub struct ApiDoc;

struct Security;

impl utoipa::Modify for Security {
    fn modify(&self, api: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::security::{
            ApiKey as Key, ApiKeyValue, HttpAuthScheme, HttpBuilder, SecurityScheme,
        };
        let components = api.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "portal_key",
            SecurityScheme::ApiKey(Key::Header(ApiKeyValue::with_description(
                "X-Api-Key",
                "A portal's API key. Without one the caller is the anonymous client (the self-service page).",
            ))),
        );
        components.add_security_scheme(
            "flow_token",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some("The flow's token, returned once by POST /v1/flows."))
                    .build(),
            ),
        );
    }
}

/// The OpenAPI document as pretty JSON (what `schemas/openapi.json` holds).
pub fn openapi_json() -> String {
    let mut doc = ApiDoc::openapi();
    doc.merge(admin::AdminDoc::openapi());
    doc.to_pretty_json().unwrap_or_default() + "\n"
}

/// The routes the router serves, recorded as they are added so that the
/// role table can be checked against them ([`routes`]).
pub(crate) struct Routes {
    router: Router<Arc<Api>>,
    list: Vec<(Method, &'static str)>,
}

impl Routes {
    fn new() -> Routes {
        Routes {
            router: Router::new(),
            list: Vec::new(),
        }
    }

    fn add(mut self, method: Method, path: &'static str, mr: MethodRouter<Arc<Api>>) -> Routes {
        self.router = self.router.route(path, mr);
        self.list.push((method, path));
        self
    }

    /// A `GET` route.
    pub(crate) fn get<H, T>(self, path: &'static str, handler: H) -> Routes
    where
        H: Handler<T, Arc<Api>>,
        T: 'static,
    {
        self.add(Method::GET, path, get(handler))
    }

    /// A `POST` route.
    pub(crate) fn post<H, T>(self, path: &'static str, handler: H) -> Routes
    where
        H: Handler<T, Arc<Api>>,
        T: 'static,
    {
        self.add(Method::POST, path, post(handler))
    }

    /// A `DELETE` route.
    pub(crate) fn delete<H, T>(self, path: &'static str, handler: H) -> Routes
    where
        H: Handler<T, Arc<Api>>,
        T: 'static,
    {
        self.add(Method::DELETE, path, axum::routing::delete(handler))
    }
}

/// The routes behind client identification: the portal API, the page,
/// `/metrics` and the admin API.
fn identified_routes() -> Routes {
    let routes = Routes::new()
        .post("/v1/flows", start_flow)
        .get("/v1/flows/{id}", read_flow)
        .post("/v1/flows/{id}/answers", answer_flow)
        .post("/v1/flows/{id}/password", set_password)
        .post("/v1/flows/{id}/authenticate", authenticate)
        .get("/v1/workflows", list_workflows)
        .get("/v1/openapi.json", openapi)
        .get("/metrics", metrics_text);
    admin::routes(page::routes(routes))
}

/// The routes served without identification (health checks).
fn public_routes() -> Routes {
    Routes::new()
        .get("/healthz", || async { "ok\n" })
        .get("/readyz", readyz)
}

/// Every route of the router: method and path as the router writes them.
/// The role table ([`roles::RULES`]) must have one rule for each.
pub fn routes() -> Vec<(Method, &'static str)> {
    let mut list = public_routes().list;
    list.extend(identified_routes().list);
    list
}

/// The gateway's router. Every request, routed or not, passes through
/// [`serve`] (one layer: a layer of its own for each step cost a boxed
/// service and future apiece per request).
pub fn router(api: Arc<Api>) -> Router {
    Router::new()
        .merge(public_routes().router)
        .merge(identified_routes().router)
        .fallback(|| async { Problem::new(Code::NotFound) })
        .method_not_allowed_fallback(|| async { Problem::new(Code::MethodNotAllowed) })
        .layer(middleware::from_fn_with_state(api.clone(), serve))
        .with_state(api)
}

/// Every request: runs it in its log span (see [`crate::logging`]) with a
/// fresh request id (also sent as `X-Request-Id`), admits it
/// ([`admit`]: body, identification, role), sets the security headers,
/// counts the response by matched route for `/metrics`, and logs it: a
/// refused request (4xx but 429, which identification samples) at `info`
/// with its problem code, every other at `debug`.
async fn serve(State(api): State<Arc<Api>>, req: Request, next: Next) -> Response {
    let started = std::time::Instant::now();
    let id = RequestId::next();
    let span = crate::logging::request_span(id, peer(&req).map(|a| a.ip()));
    let route = req.extensions().get::<MatchedPath>().cloned();
    let method = req.method().clone();
    async move {
        let mut response = match admit(&api, req, route.as_ref()).await {
            Ok(req) => next.run(req).await,
            Err(problem) => problem.into_response(),
        };
        let status = response.status();
        let route = route.as_ref().map_or("unmatched", |r| r.as_str());
        let took = started.elapsed();
        api.http.observe(route, status.as_u16(), took);
        let code = response
            .extensions()
            .get::<problem::ProblemCode>()
            .map(|c| c.0);
        if status.is_client_error() && status != StatusCode::TOO_MANY_REQUESTS {
            tracing::info!(%method, route, status = status.as_u16(), code, "request refused");
        } else {
            tracing::debug!(
                %method,
                route,
                status = status.as_u16(),
                code,
                micros = took.as_micros() as u64,
                "request"
            );
        }
        let h = response.headers_mut();
        h.insert(
            header::CONTENT_SECURITY_POLICY,
            HeaderValue::from_static(CSP),
        );
        h.insert(
            header::REFERRER_POLICY,
            HeaderValue::from_static("no-referrer"),
        );
        h.insert(
            header::X_CONTENT_TYPE_OPTIONS,
            HeaderValue::from_static("nosniff"),
        );
        h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
        h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        if let Ok(v) = HeaderValue::from_bytes(&id.hex()) {
            h.insert("x-request-id", v);
        }
        response
    }
    .instrument(span)
    .await
}

/// What a request passes before its route, in order: its small body is
/// read ([`read_body`]); on a matched route other than a public one, the client
/// is identified (API key, client certificate or anonymous) and its rate
/// limit applied ([`identified`]: a [`Principal`] in the request's
/// extensions; a rate-limited answer is held back, [`tarpit`]); then the
/// role layer ([`roles::authorize`]) decides. An unmatched request goes to
/// the fallback (`404`).
async fn admit(api: &Api, req: Request, route: Option<&MatchedPath>) -> Result<Request, Problem> {
    let req = read_body(api, req).await?;
    let Some(route) = route else {
        return Ok(req);
    };
    let path = route.as_str();
    let req = if roles::is_public(path) {
        req
    } else {
        match identified(api, req).await {
            Ok(req) => req,
            Err(problem) => return Err(tarpit(problem).await),
        }
    };
    roles::authorize(req.method(), path, req.extensions().get::<Principal>())?;
    Ok(req)
}

/// Reads a request body whose `Content-Length` is within the body limit
/// (`api.body_limit`) before anything else looks at the request, so that a
/// request refused before its handler would read the body (a wrong key, a
/// role, a rate limit, an unknown route, a wrong media type) leaves its
/// keep-alive connection usable: hyper ends a connection whose request body
/// was left unread. A larger body, or one of unknown length, is left to the
/// handler ([`JsonBody`] reads and drops an oversized one before its 413).
async fn read_body(api: &Api, req: Request) -> Result<Request, Problem> {
    let settings = api.live();
    let length = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<usize>().ok())
        .filter(|&n| n > 0 && n <= settings.config.body_limit);
    let (Some(length), false) = (
        length,
        req.headers().contains_key(header::TRANSFER_ENCODING),
    ) else {
        return Ok(req);
    };
    let (parts, body) = req.into_parts();
    let read = axum::body::to_bytes(body, length);
    match tokio::time::timeout(settings.config.body_timeout, read).await {
        Ok(Ok(bytes)) => Ok(Request::from_parts(parts, axum::body::Body::from(bytes))),
        // The client stopped sending before its Content-Length.
        Ok(Err(_)) => Err(Problem::new(Code::BadJson)),
        Err(_) => Err(Problem::new(Code::RequestTimeout)),
    }
}

/// The peer's address, from the listener.
fn peer(req: &Request) -> Option<SocketAddr> {
    if let Some(peer) = req.extensions().get::<crate::listen::Peer>() {
        return Some(peer.addr);
    }
    req.extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0)
}

/// How long a `429` is held back: a flooding client then gets at most one
/// answer per connection per [`TARPIT`], so its flood costs the gateway
/// next to nothing (and costs its sender the wait).
const TARPIT: Duration = Duration::from_millis(500);

/// Holds a rate-limited answer back for [`TARPIT`] (or less, if the client
/// may retry sooner); other problems pass at once.
async fn tarpit(problem: Problem) -> Problem {
    if let Some(secs) = problem.retry_after {
        tokio::time::sleep(TARPIT.min(Duration::from_secs(secs))).await;
    }
    problem
}

/// Logs a rate-limit hit of `limit` for `key`, sampled by [`HitLog`].
fn log_hit(api: &Api, limit: &'static str, key: &str, retry_after: u64) {
    if let Hit::Log { suppressed } = api.hits.hit(limit, key, std::time::Instant::now()) {
        tracing::warn!(limit, key, retry_after, suppressed, "rate limit hit");
    }
}

/// Whether `digest` equals `other`, comparing every byte (timing says
/// nothing about how much of it matched).
fn same_digest(digest: &[u8; 32], other: &[u8; 32]) -> bool {
    digest
        .iter()
        .zip(other)
        .fold(0u8, |acc, (a, b)| acc | (a ^ b))
        == 0
}

/// The principal an `X-Api-Key` names: an operator's key or a portal's.
/// Every configured key is compared in full, whichever matches.
fn principal_of_key(config: &ApiConfig, key: &[u8]) -> Option<Principal> {
    let digest: [u8; 32] = Sha256::digest(key).into();
    let mut found = None;
    for k in &config.keys {
        if same_digest(&k.sha256, &digest) {
            found = Some(Principal::portal(k.name.clone()));
        }
    }
    for op in &config.operators {
        if let Some(sha256) = &op.key_sha256
            && same_digest(sha256, &digest)
        {
            found = Some(Principal::operator(op.name.clone(), op.role));
        }
    }
    found
}

async fn identified(api: &Api, mut req: Request) -> Result<Request, Problem> {
    let live = api.live();
    let addr = peer(&req).map(|a| a.ip());
    // A client certificate (verified against the configured client CA in
    // the handshake) identifies an operator mapped to it, or else a portal,
    // as well as a key does.
    let certified = req
        .extensions()
        .get::<crate::listen::Peer>()
        .and_then(|p| p.client_certificate())
        .map(|c| {
            live.config
                .operators
                .iter()
                .find(|op| op.certificate.as_ref().is_some_and(|m| m.matches(c)))
                .map(|op| Principal::operator(op.name.clone(), op.role))
                .unwrap_or_else(|| {
                    Principal::portal(format!(
                        "cert:{}",
                        c.common_name.as_deref().unwrap_or(&c.sha256)
                    ))
                })
        });
    let principal = match req.headers().get("x-api-key") {
        Some(key) => principal_of_key(&live.config, key.as_bytes()).ok_or(Code::InvalidApiKey)?,
        None => match certified {
            Some(p) => p,
            None => {
                let is_metrics = req.uri().path() == "/metrics";
                let loopback = addr.is_some_and(|a| a.is_loopback());
                if is_metrics && !loopback {
                    // Counts are not for anonymous clients from elsewhere.
                    return Err(Code::AnonymousNotAllowed.into());
                }
                let allowed = live.config.anonymous || (is_metrics && loopback);
                if !allowed {
                    return Err(Code::AnonymousNotAllowed.into());
                }
                Principal::anonymous()
            }
        },
    };
    tracing::Span::current().record("principal", tracing::field::display(&principal));
    // Portals and operators are limited per name, anonymous clients per
    // address.
    let (limiter, key, limit): (&Limiter, Vec<u8>, &'static str) = match principal.kind() {
        principal::PrincipalKind::Anonymous => {
            let key = match addr {
                Some(IpAddr::V4(a)) => a.octets().to_vec(),
                // One IPv6 client usually owns a whole /64.
                Some(IpAddr::V6(a)) => a.octets()[..8].to_vec(),
                None => vec![],
            };
            (&live.clients, key, "client")
        }
        _ => (&live.portals, principal.to_string().into_bytes(), "portal"),
    };
    if let Err(secs) = limiter.take(&key) {
        let who = match limit {
            "client" => addr.map(|a| a.to_string()).unwrap_or_default(),
            _ => String::from_utf8_lossy(&key).into_owned(),
        };
        log_hit(api, limit, &who, secs);
        return Err(Problem::rate_limited(secs));
    }
    req.extensions_mut().insert(principal);
    Ok(req)
}

/// How long `/readyz` waits for the store's answer.
const READY_WAIT: Duration = Duration::from_secs(3);

/// Ready: started, with workflows, and the store answers
/// ([`crate::store::Store::ready`]); `store-unavailable` while it does not
/// (why is in the log: the store's pools say when they cannot connect).
async fn readyz(State(api): State<Arc<Api>>) -> Response {
    if !api.ready.load(Ordering::Acquire) || api.runtime.workflows().is_empty() {
        return Problem::new(Code::Unavailable).into_response();
    }
    let store = api.runtime.store().clone();
    let probe = tokio::task::spawn_blocking(move || store.ready());
    match tokio::time::timeout(READY_WAIT, probe).await {
        Ok(Ok(Ok(()))) => (StatusCode::OK, "ready\n").into_response(),
        Ok(Ok(Err(crate::store::StoreError::Closed))) => {
            Problem::new(Code::Unavailable).into_response()
        }
        Ok(Ok(Err(_)) | Err(_)) | Err(_) => Problem::new(Code::StoreUnavailable).into_response(),
    }
}

async fn openapi() -> Response {
    ([(header::CONTENT_TYPE, "application/json")], openapi_json()).into_response()
}

/// A JSON request body: `application/json`, at most the body limit,
/// arriving within the body timeout; every failure is a [`Problem`].
pub struct JsonBody<T>(pub T);

impl<T: DeserializeOwned> FromRequest<Arc<Api>> for JsonBody<T> {
    type Rejection = Problem;

    async fn from_request(req: Request, api: &Arc<Api>) -> Result<Self, Problem> {
        let json = req
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split(';').next())
            .is_some_and(|v| v.trim().eq_ignore_ascii_case("application/json"));
        if !json {
            return Err(Code::UnsupportedMediaType.into());
        }
        let settings = api.live();
        let limit = settings.config.body_limit;
        let mut body = req.into_body().into_data_stream();
        let read = async {
            let mut bytes = Vec::new();
            let mut seen = 0usize;
            while let Some(chunk) = futures_util::StreamExt::next(&mut body).await {
                let chunk = chunk.map_err(|_| Code::BadJson)?;
                seen += chunk.len();
                if seen <= limit {
                    bytes.extend_from_slice(&chunk);
                } else if seen > DRAIN_LIMIT {
                    // Too much to read politely: answer and let the
                    // connection close.
                    break;
                }
                // Past the limit the rest is read and dropped, so that the
                // client, still sending, gets to read the 413.
            }
            if seen > limit {
                Err(Code::BodyTooLarge)
            } else {
                Ok(bytes)
            }
        };
        let bytes = match tokio::time::timeout(settings.config.body_timeout, read).await {
            Err(_) => return Err(Code::RequestTimeout.into()),
            Ok(Err(code)) => return Err(code.into()),
            Ok(Ok(b)) => b,
        };
        serde_json::from_slice(&bytes).map(JsonBody).map_err(|e| {
            use serde_json::error::Category;
            match e.classify() {
                Category::Syntax | Category::Eof | Category::Io => Problem::new(Code::BadJson)
                    .detail(format!("at line {} column {}", e.line(), e.column())),
                Category::Data => {
                    // serde names fields but may quote values; keep only
                    // messages about fields, never about values.
                    let msg = e.to_string();
                    let detail =
                        if msg.starts_with("missing field") || msg.starts_with("unknown field") {
                            msg.split(" at line").next().unwrap_or("").to_owned()
                        } else {
                            format!(
                                "a value has the wrong type (line {} column {})",
                                e.line(),
                                e.column()
                            )
                        };
                    Problem::new(Code::InvalidRequest).detail(detail)
                }
            }
        })
    }
}

/// The flow token from `Authorization: Bearer`.
pub struct Bearer(String);

impl<S: Send + Sync> FromRequestParts<S> for Bearer {
    type Rejection = Problem;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Problem> {
        bearer(&parts.headers)
            .map(Bearer)
            .ok_or_else(|| Problem::new(Code::FlowNotFound))
    }
}

fn bearer(headers: &HeaderMap) -> Option<String> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| token.trim().to_owned())
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// Runs `f` on a request worker (runtime calls block on plugins and
/// flushes), in arrival order.
async fn on_worker<T: Send + 'static>(
    api: &Api,
    f: impl FnOnce() -> Result<T, Problem> + Send + 'static,
) -> Result<T, Problem> {
    // The request's span follows it onto the worker.
    let span = tracing::Span::current();
    api.workers
        .run(move || span.in_scope(f))
        .await
        .unwrap_or_else(|| {
            tracing::error!("request task panicked");
            Err(Code::Internal.into())
        })
}

/// Which of the request span's `flow` and `workflow` a handler has not
/// recorded before [`request`]: `request` records it once the flow is
/// known (a field recorded twice would show twice on a text line).
#[derive(Clone, Copy)]
enum Unrecorded {
    /// A new flow: its workflow was recorded from the request body.
    Flow,
    /// An existing flow: its id was recorded from the path.
    Workflow,
}

/// Runs a runtime request on a request worker (it calls plugins), then
/// waits for its flush here, without holding a thread, and renders the flow.
/// Nothing is answered before the request's writes are durable.
async fn request(
    api: &Api,
    unrecorded: Unrecorded,
    f: impl FnOnce(&Runtime) -> Result<Staged, RuntimeError> + Send + 'static,
) -> Result<FlowView, Problem> {
    let rt = &api.runtime;
    let staged = {
        let rt = rt.clone();
        on_worker(api, move || f(&rt).map_err(Problem::from)).await?
    };
    let out = staged.durable().await?;
    let span = tracing::Span::current();
    match unrecorded {
        Unrecorded::Flow => span.record("flow", out.flow.id.as_str()),
        Unrecorded::Workflow => span.record("workflow", out.flow.workflow.as_str()),
    };
    let wf = rt.workflow_of(&out.flow)?;
    let mut view = wire::view(&out.flow, &wf, out.notice.as_ref());
    view.token = out.token.map(|t| t.expose().to_owned());
    Ok(view)
}

fn flow_response(status: StatusCode, view: FlowView) -> Response {
    let mut response = (status, Json(&view)).into_response();
    if status == StatusCode::CREATED
        && let Ok(v) = HeaderValue::from_str(&format!("/v1/flows/{}", view.id))
    {
        response.headers_mut().insert(header::LOCATION, v);
    }
    response
}

/// Start a flow.
///
/// A flow for an unknown, locked or disabled user starts exactly like a
/// real one; it fails at its first gate with the generic message. The
/// flow keeps the person's language (`?lang=`, else `Accept-Language`,
/// else English): its notices and password rules are in it, and plugins
/// are told it to localise their prompts.
#[utoipa::path(
    post, path = "/v1/flows", tag = "flows",
    params(
        ("lang" = Option<String>, Query, description = "The person's language (`en`, `de`); wins over `Accept-Language`; another value is ignored"),
        ("Accept-Language" = Option<String>, Header, description = "The person's languages (RFC 9110); the best one spoken here is chosen, else English"),
    ),
    request_body = StartRequest,
    responses(
        (status = 201, description = "Started; `token` is shown only here", body = FlowView),
        (status = "4XX", description = "Refused", body = Problem, content_type = "application/problem+json"),
    ),
    security((), ("portal_key" = []))
)]
async fn start_flow(
    State(api): State<Arc<Api>>,
    page::Lang(lang): page::Lang,
    JsonBody(body): JsonBody<StartRequest>,
) -> Result<Response, Problem> {
    body.check()
        .map_err(|detail| Problem::new(Code::InvalidRequest).detail(detail))?;
    tracing::Span::current().record("workflow", body.workflow.as_str());
    // Per user name, known or not, so the limit says nothing about existence.
    let key = body.user.trim().to_lowercase();
    if let Err(secs) = api.live().users.take(key.as_bytes()) {
        // The user as the audit log and the flow events name them.
        let user = hex::encode(Sha256::digest(format!("name:{key}").as_bytes()));
        log_hit(&api, "user", &user, secs);
        return Err(tarpit(Problem::rate_limited(secs)).await);
    }
    let view = request(&api, Unrecorded::Flow, move |rt| {
        rt.start_staged(&body.workflow, &body.user, lang, now_ms())
    })
    .await?;
    Ok(flow_response(StatusCode::CREATED, view))
}

/// Read a flow: its state and current prompt.
#[utoipa::path(
    get, path = "/v1/flows/{id}", tag = "flows",
    params(("id" = String, Path, description = "The flow's id: 32 lowercase hex digits", pattern = "^[0-9a-f]{32}$")),
    responses(
        (status = 200, description = "The flow", body = FlowView),
        (status = "4XX", description = "Refused", body = Problem, content_type = "application/problem+json"),
    ),
    security(("flow_token" = []), ("flow_token" = [], "portal_key" = []))
)]
async fn read_flow(
    State(api): State<Arc<Api>>,
    Path(id): Path<String>,
    Bearer(token): Bearer,
) -> Result<Response, Problem> {
    tracing::Span::current().record("flow", id.as_str());
    let rt = api.runtime.clone();
    let view = on_worker(&api, move || {
        let flow = rt.authorize(&id, &token)?;
        let wf = rt.workflow_of(&flow)?;
        Ok(wire::view(&flow, &wf, None))
    })
    .await?;
    Ok(flow_response(StatusCode::OK, view))
}

/// Answer the current gate (or register enrollment data).
#[utoipa::path(
    post, path = "/v1/flows/{id}/answers", tag = "flows",
    params(("id" = String, Path, description = "The flow's id: 32 lowercase hex digits", pattern = "^[0-9a-f]{32}$")),
    request_body = AnswersRequest,
    responses(
        (status = 200, description = "The flow after the answers", body = FlowView),
        (status = "4XX", description = "Refused", body = Problem, content_type = "application/problem+json"),
    ),
    security(("flow_token" = []), ("flow_token" = [], "portal_key" = []))
)]
async fn answer_flow(
    State(api): State<Arc<Api>>,
    Path(id): Path<String>,
    Bearer(token): Bearer,
    JsonBody(body): JsonBody<AnswersRequest>,
) -> Result<Response, Problem> {
    tracing::Span::current().record("flow", id.as_str());
    body.check()
        .map_err(|detail| Problem::new(Code::InvalidRequest).detail(detail))?;
    let view = request(&api, Unrecorded::Workflow, move |rt| {
        let answers = body
            .answers
            .into_iter()
            .map(|(name, value)| FieldValue {
                name,
                value: value.0,
            })
            .collect();
        rt.answer_as(&id, &token, &body.gate, body.round, answers, now_ms())
    })
    .await?;
    Ok(flow_response(StatusCode::OK, view))
}

async fn submit_password(
    api: Arc<Api>,
    id: String,
    token: String,
    body: PasswordRequest,
    which: PasswordFor,
) -> Result<Response, Problem> {
    tracing::Span::current().record("flow", id.as_str());
    let view = request(&api, Unrecorded::Workflow, move |rt| {
        rt.password_as(&id, &token, which, body.password.0, now_ms())
    })
    .await?;
    Ok(flow_response(StatusCode::OK, view))
}

/// Set the new password (state `awaiting-password`).
#[utoipa::path(
    post, path = "/v1/flows/{id}/password", tag = "flows",
    params(("id" = String, Path, description = "The flow's id: 32 lowercase hex digits", pattern = "^[0-9a-f]{32}$")),
    request_body = PasswordRequest,
    responses(
        (status = 200, description = "The flow after the attempt; `password-rejected` lists each rule broken", body = FlowView),
        (status = "4XX", description = "Refused", body = Problem, content_type = "application/problem+json"),
    ),
    security(("flow_token" = []), ("flow_token" = [], "portal_key" = []))
)]
async fn set_password(
    State(api): State<Arc<Api>>,
    Path(id): Path<String>,
    Bearer(token): Bearer,
    JsonBody(body): JsonBody<PasswordRequest>,
) -> Result<Response, Problem> {
    submit_password(api, id, token, body, PasswordFor::New).await
}

/// Prove the current password (enrollment, state `authenticating`).
#[utoipa::path(
    post, path = "/v1/flows/{id}/authenticate", tag = "flows",
    params(("id" = String, Path, description = "The flow's id: 32 lowercase hex digits", pattern = "^[0-9a-f]{32}$")),
    request_body = PasswordRequest,
    responses(
        (status = 200, description = "The flow after the attempt", body = FlowView),
        (status = "4XX", description = "Refused", body = Problem, content_type = "application/problem+json"),
    ),
    security(("flow_token" = []), ("flow_token" = [], "portal_key" = []))
)]
async fn authenticate(
    State(api): State<Arc<Api>>,
    Path(id): Path<String>,
    Bearer(token): Bearer,
    JsonBody(body): JsonBody<PasswordRequest>,
) -> Result<Response, Problem> {
    submit_password(api, id, token, body, PasswordFor::Current).await
}

/// The workflows served.
#[utoipa::path(
    get, path = "/v1/workflows", tag = "flows",
    params(
        ("lang" = Option<String>, Query, description = "The language of the titles (`en`, `de`); wins over `Accept-Language`"),
        ("Accept-Language" = Option<String>, Header, description = "The person's languages (RFC 9110); titles in the best one spoken here, else English"),
    ),
    responses((status = 200, description = "Sorted by name", body = wire::WorkflowList)),
    security((), ("portal_key" = []))
)]
async fn list_workflows(
    State(api): State<Arc<Api>>,
    page::Lang(lang): page::Lang,
) -> Json<wire::WorkflowList> {
    let mut workflows: Vec<wire::WorkflowView> = api
        .runtime
        .current()
        .iter()
        .map(|w| wire::WorkflowView {
            name: w.name.clone(),
            description: w.description.clone(),
            title: w.title.as_ref().map(|t| t.pick(lang).to_owned()),
            version: w.version.clone(),
            purpose: format!("{:?}", w.purpose).to_lowercase(),
        })
        .collect();
    workflows.sort_by(|a, b| a.name.cmp(&b.name));
    Json(wire::WorkflowList { workflows })
}

/// `/metrics` in the Prometheus text format.
async fn metrics_text(State(api): State<Arc<Api>>) -> Response {
    let mut out = String::new();
    let m = &api.runtime.metrics;
    metrics::header(
        &mut out,
        "resetgate_flows_started_total",
        "counter",
        "Flows started, by workflow.",
    );
    m.started.render(&mut out, "resetgate_flows_started_total");
    metrics::header(
        &mut out,
        "resetgate_flows_ended_total",
        "counter",
        "Flows ended, by workflow and outcome (completed, failed, locked, expired, interrupted).",
    );
    m.ended.render(&mut out, "resetgate_flows_ended_total");
    metrics::header(
        &mut out,
        "resetgate_gate_results_total",
        "counter",
        "Gate verdicts by workflow, gate and result.",
    );
    m.gates.render(&mut out, "resetgate_gate_results_total");
    metrics::header(
        &mut out,
        "resetgate_timers_total",
        "counter",
        "Timers this gateway claimed and ran (the cluster's flow sweep, ...), by kind and result.",
    );
    m.timers.render(&mut out, "resetgate_timers_total");
    metrics::header(
        &mut out,
        "resetgate_lockouts_total",
        "counter",
        "Users locked out, by workflow.",
    );
    m.lockouts.render(&mut out, "resetgate_lockouts_total");

    metrics::header(
        &mut out,
        "resetgate_workflow_versions",
        "gauge",
        "Workflow versions loaded: the current ones and older ones flows in progress run on.",
    );
    out.push_str(&format!(
        "resetgate_workflow_versions {}\n",
        api.runtime.versions_loaded()
    ));

    // Every load of a plugin (several steps, every reload) shares the
    // host's statistics for its name: one series per plugin name the host
    // has loaded for a step, in use or not (a reload that drops a workflow
    // must not make its plugin's counters go back).
    let mut plugins: std::collections::BTreeMap<String, (metrics::Histogram, Vec<(String, u64)>)> =
        Default::default();
    let stats = api
        .plugins
        .get()
        .map(|host| host.plugin_stats())
        .unwrap_or_default();
    for (name, stats) in stats {
        let std::collections::btree_map::Entry::Vacant(entry) = plugins.entry(name) else {
            continue;
        };
        let histogram = metrics::Histogram::default();
        histogram.absorb(&stats.duration);
        let failures = stats
            .failures
            .snapshot()
            .into_iter()
            .map(|(kind, n)| (kind.first().cloned().unwrap_or_default(), n))
            .collect();
        entry.insert((histogram, failures));
    }
    metrics::header(
        &mut out,
        "resetgate_plugin_call_seconds",
        "histogram",
        "Plugin call wall time, by plugin.",
    );
    for (name, (h, _)) in &plugins {
        let labels = format!("plugin=\"{}\"", metrics::escape(name));
        h.render(&mut out, "resetgate_plugin_call_seconds", &labels);
    }
    metrics::header(
        &mut out,
        "resetgate_plugin_call_failures_total",
        "counter",
        "Plugin calls stopped by the host (timeout, trap, limits), by plugin and kind.",
    );
    for (name, (_, failures)) in &plugins {
        for (kind, n) in failures {
            out.push_str(&format!(
                "resetgate_plugin_call_failures_total{{plugin=\"{}\",kind=\"{}\"}} {n}\n",
                metrics::escape(name),
                metrics::escape(kind)
            ));
        }
    }
    if let Some(h) = api.runtime.flush_latency() {
        metrics::header(
            &mut out,
            "resetgate_store_flush_seconds",
            "histogram",
            "Durable flushes of the store to disk.",
        );
        h.render(&mut out, "resetgate_store_flush_seconds", "");
    }
    api.http.render(&mut out);
    metrics::header(
        &mut out,
        "resetgate_connections_refused_total",
        "counter",
        "Connections closed as soon as they were accepted, by reason (per-ip: the client address held connections.max_per_ip already).",
    );
    out.push_str(&format!(
        "resetgate_connections_refused_total{{reason=\"per-ip\"}} {}\n",
        crate::listen::refused_per_ip()
    ));
    metrics::RELOADS.render(&mut out);
    metrics::render_process(&mut out);
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        out,
    )
        .into_response()
}

//! The role layer: one table, [`RULES`], says for every route of the router
//! which principals may use it, and [`authorize`] applies it to every
//! request after client identification. A route without a rule is refused
//! to everyone (and the route-table test fails), so a new route cannot be
//! served by accident; a principal the rule does not name gets `403
//! forbidden`.

use std::sync::OnceLock;

use axum::http::Method;

use super::principal::{Principal, PrincipalKind, Role};
use super::{Code, Problem};

/// Who may use a route.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Access {
    /// The anonymous client (the self-service page; `/metrics` only from
    /// loopback, which identification checks).
    pub anonymous: bool,
    /// Portals.
    pub portal: bool,
    /// Operators with one of these roles.
    pub roles: &'static [Role],
}

impl Access {
    /// Whether `principal` may use the route.
    pub fn allows(&self, principal: &Principal) -> bool {
        match principal.kind() {
            PrincipalKind::Anonymous => self.anonymous,
            PrincipalKind::Portal => self.portal,
            PrincipalKind::Operator(role) => self.roles.contains(&role),
        }
    }
}

/// Portals and the page: the flow API and the page's files.
const PORTALS: Access = Access {
    anonymous: true,
    portal: true,
    roles: &[],
};
/// Everyone identified, operators included (the API description, the
/// page's files).
const EVERYONE: Access = Access {
    anonymous: true,
    portal: true,
    roles: &Role::ALL,
};
/// Admins only.
const ADMIN: Access = Access {
    anonymous: false,
    portal: false,
    roles: &[Role::Admin],
};
/// Helpdesk and admins: a user's flows and lockout.
const HELPDESK: Access = Access {
    anonymous: false,
    portal: false,
    roles: &[Role::Helpdesk, Role::Admin],
};
/// Auditors and admins: the audit log.
const AUDIT: Access = Access {
    anonymous: false,
    portal: false,
    roles: &[Role::Auditor, Role::Admin],
};
/// Any operator.
const OPERATORS: Access = Access {
    anonymous: false,
    portal: false,
    roles: &Role::ALL,
};
/// Metrics: auditors, admins, and anonymous scrapers on loopback.
const METRICS: Access = Access {
    anonymous: true,
    portal: false,
    roles: &[Role::Auditor, Role::Admin],
};
/// Health checks: no identification at all.
const PUBLIC: Access = EVERYONE;

/// One route's rule: method, path as the router writes it, who may use it.
#[derive(Clone, Copy, Debug)]
pub struct Rule {
    /// `GET`, `POST`, `DELETE`.
    pub method: &'static str,
    /// The router's path, e.g. `/v1/flows/{id}`.
    pub path: &'static str,
    /// Who may use it.
    pub access: Access,
}

const fn rule(method: &'static str, path: &'static str, access: Access) -> Rule {
    Rule {
        method,
        path,
        access,
    }
}

/// Every route's rule.
pub const RULES: &[Rule] = &[
    rule("GET", "/healthz", PUBLIC),
    rule("GET", "/readyz", PUBLIC),
    rule("POST", "/v1/flows", PORTALS),
    rule("GET", "/v1/flows/{id}", PORTALS),
    rule("POST", "/v1/flows/{id}/answers", PORTALS),
    rule("POST", "/v1/flows/{id}/password", PORTALS),
    rule("POST", "/v1/flows/{id}/authenticate", PORTALS),
    rule("GET", "/v1/workflows", PORTALS),
    rule("GET", "/v1/openapi.json", EVERYONE),
    rule("GET", "/metrics", METRICS),
    rule("GET", "/", EVERYONE),
    rule("GET", "/app.js", EVERYONE),
    rule("GET", "/style.css", EVERYONE),
    rule("GET", "/favicon.svg", EVERYONE),
    rule("GET", "/brand.css", EVERYONE),
    rule("GET", "/logo", EVERYONE),
    rule("GET", "/v1/admin/whoami", OPERATORS),
    rule("GET", "/v1/admin/workflows", ADMIN),
    rule("POST", "/v1/admin/workflows/validate", ADMIN),
    rule("POST", "/v1/admin/workflows/reload", ADMIN),
    rule("GET", "/v1/admin/plugins", ADMIN),
    rule("GET", "/v1/admin/local-users", ADMIN),
    rule("POST", "/v1/admin/local-users", ADMIN),
    rule("DELETE", "/v1/admin/local-users/{name}", ADMIN),
    rule("GET", "/v1/admin/lockouts/{user}", HELPDESK),
    rule("DELETE", "/v1/admin/lockouts/{user}", HELPDESK),
    rule("GET", "/v1/admin/flows", HELPDESK),
    rule("GET", "/v1/admin/audit", AUDIT),
    rule("GET", "/v1/admin/audit/export", AUDIT),
    rule("GET", "/v1/admin/audit/verify", AUDIT),
    rule("GET", "/v1/admin/backup", ADMIN),
];

/// The rule for `method` on the router path `path`, if any.
pub fn rule_for(method: &str, path: &str) -> Option<&'static Rule> {
    RULES
        .iter()
        .find(|r| r.method.eq_ignore_ascii_case(method) && r.path == path)
}

/// The routes the router serves, listed once.
fn served() -> &'static [(Method, &'static str)] {
    static ROUTES: OnceLock<Vec<(Method, &'static str)>> = OnceLock::new();
    ROUTES.get_or_init(super::routes)
}

/// Applies [`RULES`] to a request the router matched to `path`: the
/// principal identification found (anonymous when none) must be allowed by
/// the rule of the route. A method the route does not serve passes (the
/// router answers `405`).
pub(super) fn authorize(
    method: &Method,
    path: &str,
    principal: Option<&Principal>,
) -> Result<(), Problem> {
    // `HEAD` is served by a route's `GET` handler, so it has its rule.
    let method = if method == Method::HEAD {
        &Method::GET
    } else {
        method
    };
    let Some(rule) = rule_for(method.as_str(), path) else {
        if !served().iter().any(|(m, p)| m == method && *p == path) {
            return Ok(());
        }
        // A route nobody gave a rule: refused to everyone.
        tracing::error!(method = %method, route = path, "a route has no rule in the role table; refused");
        return Err(Code::Forbidden.into());
    };
    let anonymous = Principal::anonymous();
    if !rule.access.allows(principal.unwrap_or(&anonymous)) {
        return Err(Code::Forbidden.into());
    }
    Ok(())
}

/// Whether `path` is a route served without identification (health
/// checks: [`super::public_routes`]).
pub(super) fn is_public(path: &str) -> bool {
    static PUBLIC: OnceLock<Vec<&'static str>> = OnceLock::new();
    PUBLIC
        .get_or_init(|| {
            super::public_routes()
                .list
                .into_iter()
                .map(|(_, p)| p)
                .collect()
        })
        .contains(&path)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The route-table test: every route the router serves has exactly one
    /// rule, and every rule names a route the router serves. The list of
    /// routes is the one the router is built from (`super::super::routes`).
    #[test]
    fn every_route_has_exactly_one_rule_and_every_rule_a_route() {
        let routes = super::super::routes();
        assert!(routes.len() > 20, "{routes:?}");
        for (method, path) in &routes {
            let n = RULES
                .iter()
                .filter(|r| r.method == method.as_str() && r.path == *path)
                .count();
            assert_eq!(n, 1, "{method} {path} has {n} rules in api::roles::RULES");
        }
        for r in RULES {
            assert!(
                routes
                    .iter()
                    .any(|(m, p)| m.as_str() == r.method && *p == r.path),
                "the rule for {} {} names no route",
                r.method,
                r.path
            );
        }
    }

    /// A portal key never reaches an operator route; an auditor only reads.
    #[test]
    fn portals_reach_no_admin_route_and_auditors_change_nothing() {
        let portal = Principal::portal("web");
        let anonymous = Principal::anonymous();
        let auditor = Principal::operator("ida", Role::Auditor);
        let admin = Principal::operator("root", Role::Admin);
        for r in RULES.iter().filter(|r| r.path.starts_with("/v1/admin")) {
            assert!(!r.access.allows(&portal), "{} {}", r.method, r.path);
            assert!(!r.access.allows(&anonymous), "{} {}", r.method, r.path);
            assert!(r.access.allows(&admin), "{} {}", r.method, r.path);
            if r.method != "GET" {
                assert!(!r.access.allows(&auditor), "{} {}", r.method, r.path);
            }
        }
        for r in RULES.iter().filter(|r| r.path.starts_with("/v1/flows")) {
            assert!(!r.access.allows(&admin), "{} {}", r.method, r.path);
        }
    }
}

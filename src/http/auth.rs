//! Access control in front of every route (an axum middleware, see [`middleware`]).
//!
//! In order, for every request:
//!
//! 1. **Host** (DNS rebinding), only when the listener is bound to a loopback address: the
//!    `Host` header must be an IP literal, `localhost` (or `*.localhost`), or a name in the
//!    web config's `allowed_hosts` or `allowed_origins`; otherwise 403. A page of
//!    `evil.example` whose name an attacker re-points to 127.0.0.1 sends `Host:
//!    evil.example`, and its requests are same-origin as far as the browser knows, so
//!    the Origin check alone does not stop it. Listeners on other addresses are reached
//!    by any name and skip this check.
//! 2. **Origin** (CSRF), always, with or without a web config: a request carrying an
//!    `Origin` header is refused (403, Prometheus' JSON error shape) unless that origin's
//!    host and port are the request's `Host` (scheme-less; a missing port is the scheme's
//!    default) or it is listed in `allowed_origins`. Browsers send `Origin` on every
//!    cross-origin request, on POSTs and on websocket handshakes, so this protects SQL
//!    POSTed as `text/plain`, `/-/reload`, remote_write and `/api/v1/alerts/stream`.
//!    Clients that are not browsers (Prometheus, Grafana's backend, curl) send no
//!    `Origin` and are not affected.
//! 3. **Credentials**, when the web config has `basic_auth_users` or `bearer_tokens`:
//!    every endpoint, `/-/healthy` and `/-/ready` included, needs `Authorization: Basic`
//!    or `Bearer` (as Prometheus, whose web-config auth covers everything). Missing or
//!    wrong credentials get 401 `Unauthorized` with `WWW-Authenticate: Basic`.
//! 4. **Scope**: a principal with the read scope calling an endpoint for which
//!    [`required_scope`] says write gets 403.
//!
//! bcrypt checks run on the blocking pool, at most one per core at a time, so a flood of
//! wrong passwords cannot stall the request threads; a (user, password) pair that
//! verified once is remembered (by its SHA-256) and costs nothing the next time.

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::request::Parts;
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use base64::Engine;
use tokio::sync::Semaphore;

use crate::http::api_error;
use crate::http::web_config::{split_authority, Origin, Scope, WebConfig};

/// The access policy of one listener.
pub struct Access {
    web: Option<Arc<WebConfig>>,
    /// Whether the listener serves TLS (the default port of the `Host` header).
    tls: bool,
    /// Whether the listener is bound to a loopback address (the `Host` check).
    loopback: bool,
    /// Concurrent bcrypt verifications.
    bcrypt_slots: Semaphore,
}

impl Access {
    /// No credentials and no `Host` check; the Origin check only.
    pub fn open() -> Access {
        Access::new(None, false, false)
    }

    pub fn new(web: Option<Arc<WebConfig>>, tls: bool, loopback: bool) -> Access {
        let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
        Access {
            web,
            tls,
            loopback,
            bcrypt_slots: Semaphore::new(cores),
        }
    }

    fn allowed_origins(&self) -> &[Origin] {
        self.web.as_deref().map_or(&[], |web| &web.allowed_origins)
    }

    /// The request's `Host` (header, or the authority of an absolute-form target).
    fn host(request: &Parts) -> Option<&str> {
        match request.headers.get(header::HOST) {
            Some(host) => host.to_str().ok(),
            None => request.uri.authority().map(|a| a.as_str()),
        }
    }

    /// Step 1: the `Host` of a request to a loopback listener.
    fn check_host(&self, request: &Parts) -> Result<(), String> {
        if !self.loopback {
            return Ok(());
        }
        let Some(host) = Self::host(request) else {
            return Ok(());
        };
        let name = split_authority(host).map(|(name, _)| name);
        let allowed = name.as_deref().is_some_and(|name| {
            let literal = name
                .strip_prefix('[')
                .and_then(|n| n.strip_suffix(']'))
                .unwrap_or(name);
            literal.parse::<std::net::IpAddr>().is_ok()
                || name == "localhost"
                || name.ends_with(".localhost")
                || self
                    .web
                    .as_deref()
                    .is_some_and(|web| web.allowed_hosts.iter().any(|h| h == name))
        });
        if allowed {
            Ok(())
        } else {
            Err(format!(
                "host {host:?} refused: this server listens on loopback and accepts IP addresses, localhost and the web config's allowed_hosts only (DNS rebinding protection)"
            ))
        }
    }

    /// Step 2: a request with an `Origin` must come from our own origin or an allowed one.
    fn check_origin(&self, request: &Parts) -> Result<(), String> {
        let Some(origin) = request.headers.get(header::ORIGIN) else {
            return Ok(());
        };
        let text = String::from_utf8_lossy(origin.as_bytes());
        if let Some(parsed) = Origin::parse(&text) {
            let default_port = if self.tls { 443 } else { 80 };
            let same = Self::host(request)
                .and_then(split_authority)
                .is_some_and(|(host, port)| {
                    host == parsed.host && port.unwrap_or(default_port) == parsed.port
                });
            if same || self.allowed_origins().contains(&parsed) {
                return Ok(());
            }
        }
        Err(format!("cross-origin request from {text} refused"))
    }

    /// Step 3: the principal's scope; `None` means 401.
    async fn authenticate(
        &self,
        web: &Arc<WebConfig>,
        headers: &HeaderMap,
    ) -> Option<(Scope, Principal)> {
        let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
        let (scheme, credentials) = value.trim().split_once(' ')?;
        let credentials = credentials.trim();
        if scheme.eq_ignore_ascii_case("bearer") {
            let scope = web.token_scope(credentials)?;
            // Named by a hash of the token: the token itself is never kept or shown.
            let mut hasher = std::collections::hash_map::DefaultHasher::new();
            std::hash::Hash::hash(credentials, &mut hasher);
            let id = std::hash::Hasher::finish(&hasher);
            return Some((scope, Principal(format!("token:{:08x}", id >> 32))));
        }
        if !scheme.eq_ignore_ascii_case("basic") || !web.has_users() {
            return None;
        }
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(credentials)
            .ok()?;
        let decoded = String::from_utf8(decoded).ok()?;
        let (user, password) = decoded.split_once(':')?;
        let principal = Principal(format!("user:{user}"));
        if let Some(scope) = web.cached_basic(user, password) {
            return Some((scope, principal));
        }
        let _slot = self.bcrypt_slots.acquire().await.ok()?;
        let web = web.clone();
        let (user, password) = (user.to_string(), password.to_string());
        tokio::task::spawn_blocking(move || web.verify_basic(&user, &password))
            .await
            .ok()
            .flatten()
            .map(|scope| (scope, principal))
    }

    fn unauthorized(web: &WebConfig) -> Response {
        let mut response = (StatusCode::UNAUTHORIZED, "Unauthorized\n").into_response();
        let headers = response.headers_mut();
        if web.has_users() || !web.has_tokens() {
            headers.append(header::WWW_AUTHENTICATE, HeaderValue::from_static("Basic"));
        }
        if web.has_tokens() {
            headers.append(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        response
    }
}

/// The scope a request needs. Write: remote_write (`/api/v1/write`) and any other
/// ingestion under `/api/v1/otlp/`, the lifecycle endpoints (`/-/reload`, `/-/quit`),
/// the admin API (`/api/v1/admin/…`), and every method but GET/HEAD/OPTIONS under
/// `/api/v1/continuous` (rule and continuous-query management). Everything else —
/// PromQL, SQL (planned read-only), metadata, rules, alerts and their stream, status,
/// `/metrics`, `/-/healthy`, `/-/ready` — is read.
///
/// The path is compared after percent-decoding, collapsing repeated slashes, dropping a
/// trailing slash and lower-casing, so no spelling of a write endpoint passes as read.
pub fn required_scope(method: &Method, path: &str, query: Option<&str>) -> Scope {
    let path = normalize_path(path);
    let under = |prefix: &str| {
        path == prefix
            || path
                .strip_prefix(prefix)
                .is_some_and(|rest| rest.starts_with('/'))
    };
    let safe = matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS);
    // Ingestion: remote_write, OTLP (HTTP paths and gRPC methods), Loki push, Elasticsearch `_bulk` (any index) and
    // index template changes.
    let elastic_write = path.ends_with("/_bulk")
        || ((path.starts_with("/_index_template") || path.starts_with("/_template")) && !safe);
    if under("/api/v1/write")
        || under("/api/v1/otlp")
        || under("/v1")
        || path.starts_with("/opentelemetry.proto.collector.")
        || under("/loki/api/v1/push")
        || elastic_write
        || under("/-/reload")
        || under("/-/quit")
        || under("/api/v1/admin")
        || (under("/api/v1/continuous") && !safe)
        || (under("/api/v1/subscribe") && query.is_some_and(creates_inline_query))
    {
        Scope::Write
    } else {
        Scope::Read
    }
}

/// Whether a subscription's parameters give an inline query (which creates a continuous
/// query, as `POST /api/v1/continuous` does), decoded as the handler decodes them (an
/// encoded `%71uery` counts); parameters that do not decode need write too.
fn creates_inline_query(query: &str) -> bool {
    serde_urlencoded::from_str::<Vec<(String, String)>>(query)
        .map_or(true, |pairs| pairs.iter().any(|(key, _)| key == "query"))
}

fn normalize_path(path: &str) -> String {
    let bytes = path.as_bytes();
    let mut decoded = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = |b: u8| (b as char).to_digit(16);
        if bytes[i] == b'%' && i + 2 < bytes.len() {
            if let (Some(hi), Some(lo)) = (hex(bytes[i + 1]), hex(bytes[i + 2])) {
                decoded.push((hi * 16 + lo) as u8);
                i += 3;
                continue;
            }
        }
        decoded.push(bytes[i]);
        i += 1;
    }
    let decoded = String::from_utf8_lossy(&decoded).to_ascii_lowercase();
    let mut out = String::with_capacity(decoded.len() + 1);
    for segment in decoded.split('/').filter(|s| !s.is_empty() && *s != ".") {
        out.push('/');
        out.push_str(segment);
    }
    if out.is_empty() {
        out.push('/');
    }
    out
}

/// The middleware: Host and Origin checks, then credentials and scope when the web config
/// asks for them; adds the configured response headers to every response.
/// Who made a request, once authenticated (`user:<name>` or `token:<hash>`), in the
/// request's extensions; absent when the server requires no credentials.
#[derive(Debug, Clone)]
pub struct Principal(pub String);

pub async fn middleware(
    State(access): State<Arc<Access>>,
    request: Request,
    next: Next,
) -> Response {
    let (mut parts, body) = request.into_parts();
    let mut response = match admit(&access, &parts).await {
        Ok(principal) => {
            if let Some(principal) = principal {
                parts.extensions.insert(principal);
            }
            next.run(Request::from_parts(parts, body)).await
        }
        Err(refusal) => refusal,
    };
    if let Some(web) = &access.web {
        for (name, value) in &web.headers {
            response.headers_mut().insert(name.clone(), value.clone());
        }
    }
    response
}

async fn admit(access: &Access, request: &Parts) -> Result<Option<Principal>, Response> {
    let refuse = |message| api_error(StatusCode::FORBIDDEN, "bad_data", message);
    access.check_host(request).map_err(refuse)?;
    access.check_origin(request).map_err(refuse)?;
    let Some(web) = access.web.as_ref().filter(|web| web.requires_auth()) else {
        return Ok(None);
    };
    let Some((scope, principal)) = access.authenticate(web, &request.headers).await else {
        return Err(Access::unauthorized(web));
    };
    let needed = required_scope(&request.method, request.uri.path(), request.uri.query());
    if scope < needed {
        return Err((
            StatusCode::FORBIDDEN,
            format!(
                "Forbidden: {} {} needs the {} scope; these credentials have {}\n",
                request.method,
                request.uri.path(),
                needed.as_str(),
                scope.as_str()
            ),
        )
            .into_response());
    }
    Ok(Some(principal))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scopes() {
        let read = [
            (Method::GET, "/api/v1/query"),
            (Method::POST, "/api/v1/query"),
            (Method::POST, "/api/v1/sql"),
            (Method::GET, "/api/v1/alerts/stream"),
            (Method::GET, "/-/healthy"),
            (Method::GET, "/api/v1/continuous"),
            (Method::GET, "/api/v1/writer"),
            (Method::GET, "/metrics"),
        ];
        assert_eq!(
            required_scope(&Method::GET, "/api/v1/subscribe", Some("name=x&from_seq=3")),
            Scope::Read
        );
        for inline in ["query=SELECT%201", "name=x&%71uery=SELECT%201"] {
            assert_eq!(
                required_scope(&Method::GET, "/api/v1/subscribe", Some(inline)),
                Scope::Write,
                "{inline}"
            );
        }
        for (method, path) in read {
            assert_eq!(
                required_scope(&method, path, None),
                Scope::Read,
                "{method} {path}"
            );
        }
        let write = [
            (Method::POST, "/api/v1/write"),
            (Method::POST, "//api/v1//write/"),
            (Method::POST, "/api/v1/%77rite"),
            (Method::POST, "/API/v1/write"),
            (Method::POST, "/-/reload"),
            (Method::PUT, "/-/reload"),
            (Method::POST, "/api/v1/continuous/queries"),
            (Method::DELETE, "/api/v1/continuous/queries/x"),
            (Method::POST, "/api/v1/admin/tsdb/snapshot"),
        ];
        for (method, path) in write {
            assert_eq!(
                required_scope(&method, path, None),
                Scope::Write,
                "{method} {path}"
            );
        }
    }
}

//! The web config file (`--web.config.file`): Prometheus' format (the exporter-toolkit
//! `web-config.yml`) for TLS and basic auth, plus Vigil's access-control extensions.
//!
//! ```yaml
//! tls_server_config:
//!   cert_file: server.crt          # or `cert:` with the PEM inline
//!   key_file: server.key           # or `key:`
//!   min_version: TLS12             # TLS10..TLS13; rustls speaks 1.2 and 1.3 only
//!   max_version: TLS13
//!   client_auth_type: RequireAndVerifyClientCert   # or VerifyClientCertIfGiven, NoClientCert
//!   client_ca_file: clients-ca.crt # or `client_ca:`
//!   prefer_server_cipher_suites: true
//! http_server_config:
//!   http2: true                    # accepted; Vigil speaks HTTP/1.1
//!   headers:                       # added to every response
//!     X-Frame-Options: deny
//! basic_auth_users:                # user: bcrypt hash (htpasswd -nBC 10 "" | tr -d ':\n')
//!   alice: $2y$10$...
//!   grafana: $2y$10$...
//! # Vigil extensions:
//! read_only_users: [grafana]       # these basic-auth users get the read scope
//! bearer_tokens:                   # `Authorization: Bearer <token>`
//!   - token: "s3cr3t"
//!     scope: read                  # read (default) or write
//!   - token_file: writer.token     # the file's content, trailing whitespace removed
//!     scope: write
//! allowed_origins: ["https://grafana.example"]   # browser origins besides our own
//! allowed_hosts: ["vigil.internal"]              # Host names accepted on a loopback listener
//! ```
//!
//! Relative paths resolve against the directory of the web config file. Unknown keys are
//! an error naming the file, as in Prometheus. The file is read once at startup (Prometheus
//! re-reads it per request): restart Vigil to change credentials or certificates.
//!
//! Scopes: every user in `basic_auth_users` has the write scope unless listed in
//! `read_only_users`; tokens have the scope they are given. Write includes read; which
//! requests need write is [`crate::http::auth::required_scope`]. When neither users nor tokens
//! are configured, no credentials are asked for (as in Prometheus).
//!
//! `client_auth_type` `RequestClientCert` and `RequireAnyClientCert` (certificates asked
//! for but not verified), `client_allowed_sans`, `cipher_suites` and `curve_preferences`
//! are not supported: they are rejected with an error rather than silently ignored.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{anyhow, bail, Context};
use axum::http::{HeaderName, HeaderValue};
use parking_lot::Mutex;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use serde::Deserialize;

/// What a principal may do. `Write` includes `Read`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Scope {
    Read,
    Write,
}

impl Scope {
    pub fn as_str(self) -> &'static str {
        match self {
            Scope::Read => "read",
            Scope::Write => "write",
        }
    }
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawWebConfig {
    #[serde(default)]
    tls_server_config: Option<RawTls>,
    #[serde(default)]
    http_server_config: Option<RawHttp>,
    #[serde(default)]
    basic_auth_users: Option<BTreeMap<String, String>>,
    #[serde(default)]
    read_only_users: Vec<String>,
    #[serde(default)]
    bearer_tokens: Vec<RawToken>,
    #[serde(default)]
    allowed_origins: Vec<String>,
    #[serde(default)]
    allowed_hosts: Vec<String>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawTls {
    cert_file: Option<PathBuf>,
    key_file: Option<PathBuf>,
    cert: Option<String>,
    key: Option<String>,
    client_auth_type: Option<String>,
    client_ca_file: Option<PathBuf>,
    client_ca: Option<String>,
    #[serde(default)]
    client_allowed_sans: Vec<String>,
    #[serde(default)]
    cipher_suites: Vec<String>,
    #[serde(default)]
    curve_preferences: Vec<String>,
    min_version: Option<String>,
    max_version: Option<String>,
    prefer_server_cipher_suites: Option<bool>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawHttp {
    /// Accepted for compatibility; Vigil serves HTTP/1.1.
    #[serde(default)]
    #[allow(dead_code)]
    http2: Option<bool>,
    #[serde(default)]
    headers: BTreeMap<String, String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawToken {
    token: Option<String>,
    token_file: Option<PathBuf>,
    #[serde(default = "read_scope")]
    scope: Scope,
}

fn read_scope() -> Scope {
    Scope::Read
}

/// A browser origin: scheme, lower-case host, port (the scheme's default if absent).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Origin {
    pub scheme: String,
    pub host: String,
    pub port: u16,
}

impl Origin {
    /// Parses `scheme://host[:port]` (a trailing `/` is tolerated); `None` for anything
    /// else, including the opaque origin `null`.
    pub fn parse(text: &str) -> Option<Origin> {
        let (scheme, rest) = text.trim().split_once("://")?;
        let scheme = scheme.to_ascii_lowercase();
        let default_port = match scheme.as_str() {
            "http" | "ws" => 80,
            "https" | "wss" => 443,
            _ => return None,
        };
        let authority = rest.strip_suffix('/').unwrap_or(rest);
        let (host, port) = split_authority(authority)?;
        Some(Origin {
            scheme,
            host,
            port: port.unwrap_or(default_port),
        })
    }
}

impl std::fmt::Display for Origin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}://{}:{}", self.scheme, self.host, self.port)
    }
}

/// Splits `host[:port]` or `[v6]:port` into a lower-case host (brackets kept for IPv6)
/// and the port; `None` if malformed (empty host, path, user info, bad port).
pub fn split_authority(authority: &str) -> Option<(String, Option<u16>)> {
    if authority.is_empty()
        || authority
            .chars()
            .any(|c| matches!(c, '/' | '@' | '?' | '#' | ' ' | '\\'))
    {
        return None;
    }
    let (host, port) = if authority.starts_with('[') {
        let end = authority.find(']')?;
        let host = &authority[..=end];
        match &authority[end + 1..] {
            "" => (host, None),
            rest => (host, Some(rest.strip_prefix(':')?)),
        }
    } else {
        match authority.rsplit_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (authority, None),
        }
    };
    if host.is_empty() || (!host.starts_with('[') && host.contains(':')) {
        return None;
    }
    let port = match port {
        Some(port) => Some(port.parse::<u16>().ok()?),
        None => None,
    };
    Some((host.to_ascii_lowercase(), port))
}

/// A parsed web config: TLS settings ready for rustls, credentials, origin policy.
pub struct WebConfig {
    /// The file it was read from (for messages).
    pub path: PathBuf,
    /// The server's TLS configuration when `tls_server_config` is present.
    pub tls: Option<Arc<rustls::ServerConfig>>,
    /// Extra response headers from `http_server_config.headers`.
    pub headers: Vec<(HeaderName, HeaderValue)>,
    /// Browser origins accepted besides the server's own.
    pub allowed_origins: Vec<Origin>,
    /// Lower-case host names accepted in `Host` on a loopback listener besides IP
    /// literals and `localhost` (the hosts of `allowed_origins` are included).
    pub allowed_hosts: Vec<String>,
    credentials: Credentials,
}

struct User {
    hash: String,
    scope: Scope,
}

/// Basic-auth users and bearer tokens, with the cache of successful bcrypt checks.
#[derive(Default)]
struct Credentials {
    users: BTreeMap<String, User>,
    /// SHA-256 of each token → its scope (a lookup by digest compares no secret bytes).
    tokens: HashMap<[u8; 32], Scope>,
    /// A hash of the first user's cost, checked for unknown users so that the time of a
    /// failed login does not tell whether the user exists.
    dummy_hash: Option<String>,
    /// SHA-256 of (user, password) pairs that verified, so a request does not pay bcrypt.
    verified: Mutex<HashMap<[u8; 32], Scope>>,
}

/// Successful verifications kept; the cache is emptied when it reaches this size.
const VERIFIED_CACHE_ENTRIES: usize = 4096;

impl WebConfig {
    /// Reads and validates the file; every error names it.
    pub fn load(path: &Path) -> anyhow::Result<WebConfig> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read web config file {}", path.display()))?;
        Self::parse(&text, path)
            .with_context(|| format!("invalid web config file {}", path.display()))
    }

    /// Parses `text` as the content of the file at `path` (relative paths in it resolve
    /// against `path`'s directory).
    pub fn parse(text: &str, path: &Path) -> anyhow::Result<WebConfig> {
        let raw: RawWebConfig = if text.trim().is_empty() {
            RawWebConfig::default()
        } else {
            serde_yaml::from_str(text)?
        };
        let base = path
            .parent()
            .map(Path::to_path_buf)
            .unwrap_or_else(|| PathBuf::from("."));
        let resolve = |p: &Path| {
            if p.is_absolute() {
                p.to_path_buf()
            } else {
                base.join(p)
            }
        };

        let tls = match raw.tls_server_config {
            Some(tls) => Some(Arc::new(tls_config(tls, &resolve)?)),
            None => None,
        };

        let mut headers = Vec::new();
        if let Some(http) = raw.http_server_config {
            for (name, value) in http.headers {
                let allowed = [
                    "strict-transport-security",
                    "x-content-type-options",
                    "x-frame-options",
                    "x-xss-protection",
                    "content-security-policy",
                ];
                let lower = name.to_ascii_lowercase();
                if !allowed.contains(&lower.as_str()) {
                    bail!(
                        "http_server_config.headers: header {name:?} may not be set (allowed: {})",
                        allowed.join(", ")
                    );
                }
                let header_name = HeaderName::from_bytes(lower.as_bytes())?;
                let header_value = HeaderValue::from_str(&value)
                    .with_context(|| format!("invalid value for header {name}"))?;
                headers.push((header_name, header_value));
            }
        }

        let mut users = BTreeMap::new();
        for (name, hash) in raw.basic_auth_users.unwrap_or_default() {
            if name.contains(':') {
                bail!("basic_auth_users: user name {name:?} contains ':'");
            }
            hash.parse::<bcrypt::HashParts>().map_err(|err| {
                anyhow!("basic_auth_users: the password of {name:?} is not a bcrypt hash: {err}")
            })?;
            users.insert(
                name,
                User {
                    hash,
                    scope: Scope::Write,
                },
            );
        }
        for name in &raw.read_only_users {
            match users.get_mut(name) {
                Some(user) => user.scope = Scope::Read,
                None => bail!("read_only_users: {name:?} is not in basic_auth_users"),
            }
        }
        let dummy_hash = match users.values().next() {
            Some(user) => {
                let cost = user
                    .hash
                    .parse::<bcrypt::HashParts>()
                    .map(|parts| parts.get_cost())
                    .unwrap_or(bcrypt::DEFAULT_COST);
                Some(bcrypt::hash("vigil does not know this user", cost)?)
            }
            None => None,
        };

        let mut tokens = HashMap::new();
        for (index, entry) in raw.bearer_tokens.into_iter().enumerate() {
            let token = match (entry.token, entry.token_file) {
                (Some(token), None) => token,
                (None, Some(file)) => {
                    let file = resolve(&file);
                    std::fs::read_to_string(&file)
                        .with_context(|| {
                            format!("bearer_tokens[{index}]: cannot read {}", file.display())
                        })?
                        .trim_end()
                        .to_string()
                }
                _ => bail!("bearer_tokens[{index}]: give exactly one of token and token_file"),
            };
            if token.is_empty() || token.chars().any(|c| c.is_whitespace() || c.is_control()) {
                bail!("bearer_tokens[{index}]: a token must be non-empty, without whitespace");
            }
            if tokens
                .insert(sha256(&[token.as_bytes()]), entry.scope)
                .is_some()
            {
                bail!("bearer_tokens[{index}]: the same token is listed twice");
            }
        }

        let mut allowed_origins = Vec::new();
        let mut allowed_hosts = Vec::new();
        for text in raw.allowed_origins {
            let origin = Origin::parse(&text).ok_or_else(|| {
                anyhow!(
                    "allowed_origins: {text:?} is not an origin such as https://grafana.example:3000"
                )
            })?;
            allowed_hosts.push(origin.host.clone());
            allowed_origins.push(origin);
        }
        for host in raw.allowed_hosts {
            match split_authority(&host) {
                Some((name, None)) => allowed_hosts.push(name),
                _ => bail!("allowed_hosts: {host:?} is not a host name (no scheme or port)"),
            }
        }

        Ok(WebConfig {
            path: path.to_path_buf(),
            tls,
            headers,
            allowed_origins,
            allowed_hosts,
            credentials: Credentials {
                users,
                tokens,
                dummy_hash,
                verified: Mutex::new(HashMap::new()),
            },
        })
    }

    /// Whether requests must authenticate (some user or token is configured).
    pub fn requires_auth(&self) -> bool {
        !self.credentials.users.is_empty() || !self.credentials.tokens.is_empty()
    }

    pub fn has_users(&self) -> bool {
        !self.credentials.users.is_empty()
    }

    pub fn has_tokens(&self) -> bool {
        !self.credentials.tokens.is_empty()
    }

    /// The scope of a bearer token, if it is one of ours.
    pub fn token_scope(&self, token: &str) -> Option<Scope> {
        self.credentials
            .tokens
            .get(&sha256(&[token.as_bytes()]))
            .copied()
    }

    /// The cached scope of a (user, password) pair that verified before, without bcrypt.
    pub fn cached_basic(&self, user: &str, password: &str) -> Option<Scope> {
        let key = basic_key(user, password);
        self.credentials.verified.lock().get(&key).copied()
    }

    /// Verifies a basic-auth login with bcrypt (slow: run it off the async threads);
    /// successful checks are cached. Unknown users cost the same as a wrong password.
    pub fn verify_basic(&self, user: &str, password: &str) -> Option<Scope> {
        if let Some(scope) = self.cached_basic(user, password) {
            return Some(scope);
        }
        let Some(known) = self.credentials.users.get(user) else {
            if let Some(dummy) = &self.credentials.dummy_hash {
                let _ = bcrypt::verify(password, dummy);
            }
            return None;
        };
        if !bcrypt::verify(password, &known.hash).unwrap_or(false) {
            return None;
        }
        let mut verified = self.credentials.verified.lock();
        if verified.len() >= VERIFIED_CACHE_ENTRIES {
            verified.clear();
        }
        verified.insert(basic_key(user, password), known.scope);
        Some(known.scope)
    }
}

fn sha256(parts: &[&[u8]]) -> [u8; 32] {
    let mut context = ring::digest::Context::new(&ring::digest::SHA256);
    for part in parts {
        context.update(part);
    }
    let mut out = [0u8; 32];
    out.copy_from_slice(context.finish().as_ref());
    out
}

/// The cache key of a login: the user's length prefixes it so `("ab", "c")` and
/// `("a", "bc")` differ.
fn basic_key(user: &str, password: &str) -> [u8; 32] {
    sha256(&[
        &(user.len() as u64).to_be_bytes(),
        user.as_bytes(),
        password.as_bytes(),
    ])
}

fn tls_version(text: &str) -> anyhow::Result<u8> {
    match text {
        "TLS10" => Ok(10),
        "TLS11" => Ok(11),
        "TLS12" => Ok(12),
        "TLS13" => Ok(13),
        other => bail!("unknown TLS version {other:?}: use TLS10, TLS11, TLS12 or TLS13"),
    }
}

/// Builds the rustls server configuration (ring provider, HTTP/1.1 over ALPN).
fn tls_config(
    raw: RawTls,
    resolve: &dyn Fn(&Path) -> PathBuf,
) -> anyhow::Result<rustls::ServerConfig> {
    let context = |what: &str| format!("tls_server_config: {what}");
    if !raw.cipher_suites.is_empty() {
        bail!("tls_server_config: cipher_suites is not supported (rustls chooses among its safe suites)");
    }
    if !raw.curve_preferences.is_empty() {
        bail!("tls_server_config: curve_preferences is not supported");
    }
    if !raw.client_allowed_sans.is_empty() {
        bail!("tls_server_config: client_allowed_sans is not supported");
    }
    let auth_type = raw
        .client_auth_type
        .clone()
        .unwrap_or_else(|| "NoClientCert".to_string());
    match auth_type.as_str() {
        "" | "NoClientCert" | "RequireAndVerifyClientCert" | "VerifyClientCertIfGiven" => {}
        "RequestClientCert" | "RequireAnyClientCert" => bail!(
            "tls_server_config: client_auth_type {auth_type} (unverified client certificates) is not supported: use RequireAndVerifyClientCert or VerifyClientCertIfGiven"
        ),
        other => bail!(
            "tls_server_config: unknown client_auth_type {other:?} (NoClientCert, VerifyClientCertIfGiven, RequireAndVerifyClientCert)"
        ),
    }

    let certs: Vec<CertificateDer<'static>> = match (&raw.cert_file, &raw.cert) {
        (Some(file), None) => {
            let file = resolve(file);
            CertificateDer::pem_file_iter(&file)
                .and_then(|certs| certs.collect())
                .with_context(|| context(&format!("cannot read cert_file {}", file.display())))?
        }
        (None, Some(pem)) => CertificateDer::pem_slice_iter(pem.as_bytes())
            .collect::<Result<_, _>>()
            .with_context(|| context("invalid cert"))?,
        (None, None) => bail!("tls_server_config: cert_file is missing"),
        (Some(_), Some(_)) => bail!("tls_server_config: give cert_file or cert, not both"),
    };
    if certs.is_empty() {
        bail!("tls_server_config: no certificate in the certificate file");
    }
    let key = match (&raw.key_file, &raw.key) {
        (Some(file), None) => {
            let file = resolve(file);
            PrivateKeyDer::from_pem_file(&file)
                .with_context(|| context(&format!("cannot read key_file {}", file.display())))?
        }
        (None, Some(pem)) => {
            PrivateKeyDer::from_pem_slice(pem.as_bytes()).with_context(|| context("invalid key"))?
        }
        (None, None) => bail!("tls_server_config: key_file is missing"),
        (Some(_), Some(_)) => bail!("tls_server_config: give key_file or key, not both"),
    };

    let min = tls_version(raw.min_version.as_deref().unwrap_or("TLS12"))?;
    let max = match raw.max_version.as_deref() {
        Some(max) => tls_version(max)?,
        None => 13,
    };
    let mut versions = Vec::new();
    if min <= 12 && max >= 12 {
        versions.push(&rustls::version::TLS12);
    }
    if max >= 13 {
        versions.push(&rustls::version::TLS13);
    }
    if versions.is_empty() {
        bail!("tls_server_config: min_version/max_version allow no TLS version Vigil speaks (TLS12, TLS13)");
    }

    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&versions)
        .with_context(|| context("unsupported protocol versions"))?;

    let client_cas = || -> anyhow::Result<rustls::RootCertStore> {
        let cas: Vec<CertificateDer<'static>> = match (&raw.client_ca_file, &raw.client_ca) {
            (Some(file), None) => {
                let file = resolve(file);
                CertificateDer::pem_file_iter(&file)
                    .and_then(|certs| certs.collect())
                    .with_context(|| {
                        context(&format!("cannot read client_ca_file {}", file.display()))
                    })?
            }
            (None, Some(pem)) => CertificateDer::pem_slice_iter(pem.as_bytes())
                .collect::<Result<_, _>>()
                .with_context(|| context("invalid client_ca"))?,
            (None, None) => bail!(
                "tls_server_config: client_auth_type {:?} needs client_ca_file",
                raw.client_auth_type.as_deref().unwrap_or("")
            ),
            (Some(_), Some(_)) => {
                bail!("tls_server_config: give client_ca_file or client_ca, not both")
            }
        };
        let mut roots = rustls::RootCertStore::empty();
        for ca in cas {
            roots
                .add(ca)
                .with_context(|| context("invalid client CA certificate"))?;
        }
        Ok(roots)
    };
    let builder = match auth_type.as_str() {
        // A client CA with NoClientCert is accepted and unused, as in Prometheus.
        "" | "NoClientCert" => builder.with_no_client_auth(),
        "RequireAndVerifyClientCert" | "VerifyClientCertIfGiven" => {
            let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
                Arc::new(client_cas()?),
                provider,
            );
            let verifier = if auth_type == "VerifyClientCertIfGiven" {
                verifier.allow_unauthenticated()
            } else {
                verifier
            };
            builder.with_client_cert_verifier(
                verifier
                    .build()
                    .with_context(|| context("invalid client CA"))?,
            )
        }
        other => bail!("tls_server_config: unknown client_auth_type {other:?}"),
    };
    let mut config = builder
        .with_single_cert(certs, key)
        .with_context(|| context("the certificate and key do not form a usable pair"))?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    config.ignore_client_order = raw.prefer_server_cipher_suites.unwrap_or(true);
    Ok(config)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> anyhow::Result<WebConfig> {
        WebConfig::parse(text, Path::new("/etc/vigil/web.yml"))
    }

    #[test]
    fn unknown_keys_are_rejected() {
        let err = parse("basic_auth_user: {}\n")
            .err()
            .map(|e| format!("{e:#}"));
        assert!(
            err.as_deref().is_some_and(|e| e.contains("unknown field")),
            "{err:?}"
        );
        let err = parse("tls_server_config:\n  cert_fil: x\n")
            .err()
            .map(|e| format!("{e:#}"));
        assert!(
            err.as_deref().is_some_and(|e| e.contains("unknown field")),
            "{err:?}"
        );
    }

    #[test]
    fn empty_file_means_no_auth() -> anyhow::Result<()> {
        let config = parse("")?;
        assert!(!config.requires_auth());
        assert!(config.tls.is_none());
        Ok(())
    }

    #[test]
    fn users_tokens_and_scopes() -> anyhow::Result<()> {
        let hash = bcrypt::hash("pw", 4)?;
        let config = parse(&format!(
            "basic_auth_users:\n  alice: {hash}\n  bob: {hash}\nread_only_users: [bob]\n\
             bearer_tokens:\n  - token: tok-r\n  - token: tok-w\n    scope: write\n"
        ))?;
        assert!(config.requires_auth());
        assert_eq!(config.verify_basic("alice", "pw"), Some(Scope::Write));
        assert_eq!(config.cached_basic("alice", "pw"), Some(Scope::Write));
        assert_eq!(config.verify_basic("bob", "pw"), Some(Scope::Read));
        assert_eq!(config.verify_basic("bob", "wrong"), None);
        assert_eq!(config.verify_basic("carol", "pw"), None);
        assert_eq!(config.token_scope("tok-r"), Some(Scope::Read));
        assert_eq!(config.token_scope("tok-w"), Some(Scope::Write));
        assert_eq!(config.token_scope("tok"), None);
        Ok(())
    }

    #[test]
    fn invalid_entries_name_the_problem() {
        for (text, expected) in [
            ("basic_auth_users:\n  a: plain\n", "not a bcrypt hash"),
            ("read_only_users: [x]\n", "not in basic_auth_users"),
            ("bearer_tokens:\n  - scope: read\n", "exactly one of"),
            ("bearer_tokens:\n  - token: a\n    scope: admin\n", "unknown variant"),
            ("allowed_origins: ['*']\n", "not an origin"),
            ("tls_server_config:\n  key_file: k\n", "cert_file is missing"),
            (
                "tls_server_config:\n  cert_file: c\n  key_file: k\n",
                "cannot read cert_file /etc/vigil/c",
            ),
            (
                "tls_server_config:\n  cert_file: c\n  key_file: k\n  client_auth_type: RequireAnyClientCert\n",
                "is not supported",
            ),
            (
                "tls_server_config:\n  cert_file: c\n  key_file: k\n  cipher_suites: [TLS_AES_128_GCM_SHA256]\n",
                "cipher_suites is not supported",
            ),
            ("http_server_config:\n  headers:\n    Server: x\n", "may not be set"),
        ] {
            let err = parse(text).err().map(|e| format!("{e:#}"));
            assert!(
                err.as_deref().is_some_and(|e| e.contains(expected)),
                "{text}: {err:?}"
            );
        }
    }

    #[test]
    fn origins_and_authorities() {
        assert_eq!(
            Origin::parse("https://Grafana.example"),
            Some(Origin {
                scheme: "https".into(),
                host: "grafana.example".into(),
                port: 443
            })
        );
        assert_eq!(
            Origin::parse("http://[::1]:9190").map(|o| o.port),
            Some(9190)
        );
        assert_eq!(Origin::parse("null"), None);
        assert_eq!(Origin::parse("file://"), None);
        assert_eq!(
            split_authority("127.0.0.1:9190"),
            Some(("127.0.0.1".into(), Some(9190)))
        );
        assert_eq!(split_authority("a@b"), None);
        assert_eq!(split_authority("::1"), None);
    }
}

//! How a connection is secured: `security.protocol`, TLS files and checks, SASL credentials.
//!
//! Names follow the Java client's properties one to one (see
//! [`ClientConfig::from_properties`](super::ClientConfig::from_properties)), so a file written
//! for the Java tools or a cloud provider's quick-start maps onto these fields.

use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;
use std::sync::Arc;

use super::error::{Error, Result};

/// `security.protocol`: what a connection runs over, and whether it authenticates with SASL.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SecurityProtocol {
    /// Plain TCP, no authentication (the default, as in the Java client).
    #[default]
    Plaintext,
    /// TLS (optionally mutual TLS, with a client certificate).
    Ssl,
    /// SASL authentication over plain TCP.
    SaslPlaintext,
    /// SASL authentication over TLS.
    SaslSsl,
}

impl SecurityProtocol {
    /// Whether the socket is wrapped in TLS.
    pub fn uses_tls(self) -> bool {
        matches!(self, SecurityProtocol::Ssl | SecurityProtocol::SaslSsl)
    }

    /// Whether the connection authenticates with SASL.
    pub fn uses_sasl(self) -> bool {
        matches!(
            self,
            SecurityProtocol::SaslPlaintext | SecurityProtocol::SaslSsl
        )
    }

    /// The Java client's name, e.g. `SASL_SSL`.
    pub fn name(self) -> &'static str {
        match self {
            SecurityProtocol::Plaintext => "PLAINTEXT",
            SecurityProtocol::Ssl => "SSL",
            SecurityProtocol::SaslPlaintext => "SASL_PLAINTEXT",
            SecurityProtocol::SaslSsl => "SASL_SSL",
        }
    }
}

impl fmt::Display for SecurityProtocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for SecurityProtocol {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s.trim().to_ascii_uppercase().replace('-', "_").as_str() {
            "PLAINTEXT" => Ok(SecurityProtocol::Plaintext),
            "SSL" => Ok(SecurityProtocol::Ssl),
            "SASL_PLAINTEXT" => Ok(SecurityProtocol::SaslPlaintext),
            "SASL_SSL" => Ok(SecurityProtocol::SaslSsl),
            _ => Err(format!(
                "unknown security protocol {s:?}; use PLAINTEXT, SSL, SASL_PLAINTEXT or SASL_SSL"
            )),
        }
    }
}

/// A secret (password, private key, token). `Debug` prints `***`; there is no `Display`, so
/// it cannot end up in a log line or an error by accident. Read it with [`expose`](Self::expose).
#[derive(Clone, PartialEq, Eq, Default)]
pub struct Secret(String);

impl Secret {
    /// Wrap a secret value.
    pub fn new(value: impl Into<String>) -> Self {
        Secret(value.into())
    }
    /// The secret itself, for the code that must send or use it.
    pub fn expose(&self) -> &str {
        &self.0
    }
    /// Whether the secret is empty.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

impl From<&str> for Secret {
    fn from(s: &str) -> Self {
        Secret(s.to_owned())
    }
}

impl From<String> for Secret {
    fn from(s: String) -> Self {
        Secret(s)
    }
}

/// PEM text, from a file or given inline (the Java client's `ssl.truststore.certificates`,
/// `ssl.keystore.certificate.chain`, `ssl.keystore.key`).
#[derive(Clone, PartialEq, Eq)]
pub enum Pem {
    /// A PEM file, read at connect time.
    File(PathBuf),
    /// PEM text itself. Hidden in `Debug`: an inline private key is a secret.
    Inline(Secret),
}

impl fmt::Debug for Pem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Pem::File(p) => f.debug_tuple("File").field(p).finish(),
            Pem::Inline(_) => f.write_str("Inline(***)"),
        }
    }
}

impl Pem {
    /// Where this PEM comes from, for error messages (never the content).
    pub fn origin(&self) -> String {
        match self {
            Pem::File(p) => p.display().to_string(),
            Pem::Inline(_) => "inline PEM".to_owned(),
        }
    }

    /// The PEM bytes.
    #[cfg_attr(not(feature = "tls"), allow(dead_code))]
    pub(crate) fn read(&self, field: &'static str) -> Result<Vec<u8>> {
        match self {
            Pem::File(p) => std::fs::read(p).map_err(|e| Error::Config {
                field,
                reason: format!("cannot read {}: {e}", p.display()),
            }),
            Pem::Inline(s) => Ok(s.expose().as_bytes().to_vec()),
        }
    }
}

/// How much of the broker's certificate is checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum TlsVerify {
    /// The chain up to a trusted CA, and that the certificate names the host connected to
    /// (the default; the Java client's `ssl.endpoint.identification.algorithm=https`).
    #[default]
    Full,
    /// The chain, but not the host name (`ssl.endpoint.identification.algorithm=` empty).
    /// Logs a warning at every connect.
    NoHostname,
    /// Nothing: any certificate is accepted, so anyone in the path can read and change the
    /// traffic. For experiments only; logs a warning at every connect.
    Insecure,
}

/// TLS settings, used when [`SecurityProtocol::uses_tls`].
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct TlsConfig {
    /// CA certificates to trust (`ssl.truststore.location` / `ssl.truststore.certificates`).
    /// Default `None`: the system's root certificates.
    pub ca: Option<Pem>,
    /// Client certificate chain for mutual TLS (`ssl.keystore.certificate.chain`, or the
    /// certificates of `ssl.keystore.location`). Default `None`.
    pub client_cert: Option<Pem>,
    /// The client certificate's private key, PKCS#8, PKCS#1 or SEC1, unencrypted
    /// (`ssl.keystore.key`, or the key of `ssl.keystore.location`). Default `None`.
    pub client_key: Option<Pem>,
    /// How the broker's certificate is checked. Default [`TlsVerify::Full`].
    pub verify: TlsVerify,
    /// The name sent in SNI and checked against the certificate. Default `None`: the host
    /// of the address being connected to.
    pub server_name: Option<String>,
}

/// A SASL mechanism (`sasl.mechanism`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SaslMechanism {
    /// `PLAIN`: user and password, in the clear (use it over TLS).
    Plain,
    /// `SCRAM-SHA-256` (RFC 5802 / 7677).
    ScramSha256,
    /// `SCRAM-SHA-512`.
    ScramSha512,
    /// `OAUTHBEARER` (RFC 7628, KIP-255) with a token from a [`TokenProvider`].
    OAuthBearer,
}

impl SaslMechanism {
    /// The mechanism's name on the wire, e.g. `SCRAM-SHA-512`.
    pub fn name(self) -> &'static str {
        match self {
            SaslMechanism::Plain => "PLAIN",
            SaslMechanism::ScramSha256 => "SCRAM-SHA-256",
            SaslMechanism::ScramSha512 => "SCRAM-SHA-512",
            SaslMechanism::OAuthBearer => "OAUTHBEARER",
        }
    }
}

impl fmt::Display for SaslMechanism {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for SaslMechanism {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s.trim().to_ascii_uppercase().replace('_', "-").as_str() {
            "PLAIN" => Ok(SaslMechanism::Plain),
            "SCRAM-SHA-256" => Ok(SaslMechanism::ScramSha256),
            "SCRAM-SHA-512" => Ok(SaslMechanism::ScramSha512),
            "OAUTHBEARER" => Ok(SaslMechanism::OAuthBearer),
            "GSSAPI" => Err("GSSAPI (Kerberos) is not supported by kpipe; use PLAIN, SCRAM-SHA-256, SCRAM-SHA-512 or OAUTHBEARER".into()),
            _ => Err(format!(
                "unknown SASL mechanism {s:?}; use PLAIN, SCRAM-SHA-256, SCRAM-SHA-512 or OAUTHBEARER"
            )),
        }
    }
}

/// Supplies OAUTHBEARER tokens. Called before every authentication (the first one on each
/// connection, and each re-authentication), so a provider can hand out fresh tokens.
///
/// Any `Fn() -> Result<Secret, String> + Send + Sync` closure is a provider.
pub trait TokenProvider: Send + Sync {
    /// A token (a JWT, usually) to present to the broker, or why there is none.
    fn token(&self) -> std::result::Result<Secret, String>;
}

impl<F> TokenProvider for F
where
    F: Fn() -> std::result::Result<Secret, String> + Send + Sync,
{
    fn token(&self) -> std::result::Result<Secret, String> {
        self()
    }
}

/// A token read anew from a file at every authentication (rotated tokens are picked up).
#[derive(Debug, Clone)]
pub struct TokenFile(pub PathBuf);

impl TokenProvider for TokenFile {
    fn token(&self) -> std::result::Result<Secret, String> {
        match std::fs::read_to_string(&self.0) {
            Ok(t) if !t.trim().is_empty() => Ok(Secret::new(t.trim())),
            Ok(_) => Err(format!("token file {} is empty", self.0.display())),
            Err(e) => Err(format!("cannot read token file {}: {e}", self.0.display())),
        }
    }
}

/// An unsecured JWT (`alg: none`) for the given principal, made afresh at each
/// authentication, as the Java client's default OAUTHBEARER login does with
/// `unsecuredLoginStringClaim_sub`. Only brokers running Kafka's unsecured validator accept
/// it: for tests and local brokers.
#[derive(Debug, Clone)]
pub struct UnsecuredToken {
    /// The `sub` claim.
    pub principal: String,
    /// Lifetime of each token. Default 1 h (the Java default).
    pub lifetime: std::time::Duration,
}

impl UnsecuredToken {
    /// A one-hour unsecured token for `principal`.
    pub fn new(principal: impl Into<String>) -> Self {
        UnsecuredToken {
            principal: principal.into(),
            lifetime: std::time::Duration::from_secs(3600),
        }
    }
}

impl TokenProvider for UnsecuredToken {
    fn token(&self) -> std::result::Result<Secret, String> {
        use base64::Engine;
        let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_err(|e| e.to_string())?
            .as_secs();
        let header = b64.encode(br#"{"alg":"none"}"#);
        let claims = serde_json::json!({
            "sub": self.principal,
            "iat": now,
            "exp": now + self.lifetime.as_secs().max(1),
        });
        let payload = b64.encode(claims.to_string());
        Ok(Secret::new(format!("{header}.{payload}.")))
    }
}

/// SASL credentials: the mechanism and what it needs.
#[derive(Clone)]
pub enum Sasl {
    /// `PLAIN` with a user and password.
    Plain {
        /// The user name.
        username: String,
        /// The password.
        password: Secret,
    },
    /// `SCRAM-SHA-256` or `SCRAM-SHA-512` with a user and password.
    Scram {
        /// [`SaslMechanism::ScramSha256`] or [`SaslMechanism::ScramSha512`].
        mechanism: SaslMechanism,
        /// The user name.
        username: String,
        /// The password.
        password: Secret,
    },
    /// `OAUTHBEARER` with tokens from a provider.
    OAuthBearer {
        /// Called before each authentication.
        provider: Arc<dyn TokenProvider>,
    },
}

impl Sasl {
    /// PLAIN credentials.
    pub fn plain(username: impl Into<String>, password: impl Into<Secret>) -> Self {
        Sasl::Plain {
            username: username.into(),
            password: password.into(),
        }
    }
    /// SCRAM-SHA-256 credentials.
    pub fn scram_sha256(username: impl Into<String>, password: impl Into<Secret>) -> Self {
        Sasl::Scram {
            mechanism: SaslMechanism::ScramSha256,
            username: username.into(),
            password: password.into(),
        }
    }
    /// SCRAM-SHA-512 credentials.
    pub fn scram_sha512(username: impl Into<String>, password: impl Into<Secret>) -> Self {
        Sasl::Scram {
            mechanism: SaslMechanism::ScramSha512,
            username: username.into(),
            password: password.into(),
        }
    }
    /// OAUTHBEARER with `provider` called before each authentication.
    pub fn oauthbearer(provider: impl TokenProvider + 'static) -> Self {
        Sasl::OAuthBearer {
            provider: Arc::new(provider),
        }
    }
    /// Credentials for `mechanism` with a user and password (not OAUTHBEARER).
    pub fn with_password(
        mechanism: SaslMechanism,
        username: impl Into<String>,
        password: impl Into<Secret>,
    ) -> std::result::Result<Self, String> {
        let (username, password) = (username.into(), password.into());
        match mechanism {
            SaslMechanism::Plain => Ok(Sasl::Plain { username, password }),
            SaslMechanism::ScramSha256 | SaslMechanism::ScramSha512 => Ok(Sasl::Scram {
                mechanism,
                username,
                password,
            }),
            SaslMechanism::OAuthBearer => {
                Err("OAUTHBEARER takes a token, not a user name and password".into())
            }
        }
    }

    /// The mechanism.
    pub fn mechanism(&self) -> SaslMechanism {
        match self {
            Sasl::Plain { .. } => SaslMechanism::Plain,
            Sasl::Scram { mechanism, .. } => *mechanism,
            Sasl::OAuthBearer { .. } => SaslMechanism::OAuthBearer,
        }
    }

    /// The user name, where the mechanism has one (for error messages).
    pub fn username(&self) -> Option<&str> {
        match self {
            Sasl::Plain { username, .. } | Sasl::Scram { username, .. } => Some(username),
            Sasl::OAuthBearer { .. } => None,
        }
    }
}

impl fmt::Debug for Sasl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut d = f.debug_struct("Sasl");
        d.field("mechanism", &self.mechanism());
        match self {
            Sasl::Plain { username, password }
            | Sasl::Scram {
                username, password, ..
            } => d.field("username", username).field("password", password),
            Sasl::OAuthBearer { .. } => d.field("provider", &"<token provider>"),
        };
        d.finish()
    }
}

impl PartialEq for Sasl {
    fn eq(&self, other: &Self) -> bool {
        match (self, other) {
            (
                Sasl::Plain {
                    username: a,
                    password: p,
                },
                Sasl::Plain {
                    username: b,
                    password: q,
                },
            ) => a == b && p == q,
            (
                Sasl::Scram {
                    mechanism: m,
                    username: a,
                    password: p,
                },
                Sasl::Scram {
                    mechanism: n,
                    username: b,
                    password: q,
                },
            ) => m == n && a == b && p == q,
            (Sasl::OAuthBearer { provider: a }, Sasl::OAuthBearer { provider: b }) => {
                Arc::ptr_eq(a, b)
            }
            _ => false,
        }
    }
}

impl Eq for Sasl {}

/// The security section of [`ClientConfig`](super::ClientConfig).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SecurityConfig {
    /// `security.protocol`. Default [`SecurityProtocol::Plaintext`].
    pub protocol: SecurityProtocol,
    /// TLS settings, used with `SSL` and `SASL_SSL`.
    pub tls: TlsConfig,
    /// SASL credentials, needed with `SASL_PLAINTEXT` and `SASL_SSL`. Default `None`.
    pub sasl: Option<Sasl>,
}

impl SecurityConfig {
    /// Check that the pieces fit together; the error names the field and the fix.
    pub fn validate(&self) -> Result<()> {
        let bad = |field, reason: String| Err(Error::Config { field, reason });
        let p = self.protocol;
        if p.uses_sasl() && self.sasl.is_none() {
            return bad(
                "sasl",
                format!("security.protocol {p} needs SASL credentials: set sasl.mechanism and sasl.jaas.config (or --sasl-mechanism and --sasl-username)"),
            );
        }
        if !p.uses_sasl() && self.sasl.is_some() {
            return bad(
                "sasl",
                format!("SASL credentials are set but security.protocol is {p}; use SASL_SSL or SASL_PLAINTEXT to authenticate with them"),
            );
        }
        if p.uses_tls() && !cfg!(feature = "tls") {
            return bad(
                "security.protocol",
                format!("security.protocol {p} needs TLS, which is not built in: enable kpipe's `tls` cargo feature (on by default; `default-features = false` turns it off)"),
            );
        }
        if let Some(sasl) = &self.sasl {
            if matches!(sasl, Sasl::Scram { .. }) && !cfg!(feature = "tls") {
                return bad(
                    "sasl",
                    format!("{} is not built in: enable kpipe's `tls` cargo feature (SCRAM takes its HMAC, SHA-2 and PBKDF2 from the same ring that TLS uses)", sasl.mechanism()),
                );
            }
            if let Sasl::Plain { username, .. } | Sasl::Scram { username, .. } = sasl {
                if username.is_empty() {
                    return bad("sasl", format!("{} needs a user name", sasl.mechanism()));
                }
            }
        }
        let tls = &self.tls;
        if tls.client_cert.is_some() != tls.client_key.is_some() {
            return bad(
                "tls.client_cert",
                "mutual TLS needs both a client certificate and its private key (ssl.keystore.certificate.chain and ssl.keystore.key, or --tls-cert and --tls-key)".into(),
            );
        }
        if !p.uses_tls() && (tls.ca.is_some() || tls.client_cert.is_some()) {
            return bad(
                "tls",
                format!("TLS files are set but security.protocol is {p}; use SSL or SASL_SSL to connect with TLS"),
            );
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_hides_every_secret() {
        let mut c = SecurityConfig {
            protocol: SecurityProtocol::SaslSsl,
            sasl: Some(Sasl::scram_sha512("alice", "hunter2-password")),
            ..Default::default()
        };
        c.tls.client_key = Some(Pem::Inline(Secret::new(
            "-----BEGIN PRIVATE KEY-----\nc2VjcmV0LWtleQ==\n-----END PRIVATE KEY-----",
        )));
        c.tls.ca = Some(Pem::File("/etc/ca.pem".into()));
        let text = format!("{c:?} {:#?}", c);
        assert!(!text.contains("hunter2"), "{text}");
        assert!(!text.contains("c2VjcmV0"), "{text}");
        assert!(
            text.contains("alice") && text.contains("/etc/ca.pem"),
            "{text}"
        );
        let plain = format!("{:?}", Sasl::plain("bob", "pw-plain-123"));
        assert!(!plain.contains("pw-plain-123"), "{plain}");
        let oauth = format!(
            "{:?}",
            Sasl::oauthbearer(|| Ok(Secret::new("eyJtoken-value")))
        );
        assert!(!oauth.contains("eyJtoken"), "{oauth}");
    }

    #[test]
    fn names_parse_like_the_java_client() {
        assert_eq!(
            "sasl_ssl".parse::<SecurityProtocol>().unwrap(),
            SecurityProtocol::SaslSsl
        );
        assert_eq!(
            "SCRAM-SHA-512".parse::<SaslMechanism>().unwrap(),
            SaslMechanism::ScramSha512
        );
        let err = "GSSAPI".parse::<SaslMechanism>().unwrap_err();
        assert!(err.contains("not supported"), "{err}");
        assert!("TLS"
            .parse::<SecurityProtocol>()
            .unwrap_err()
            .contains("SASL_SSL"));
    }

    #[test]
    #[cfg_attr(not(feature = "tls"), ignore = "needs the tls feature")]
    fn validate_names_what_is_missing() {
        let c = SecurityConfig {
            protocol: SecurityProtocol::SaslSsl,
            ..Default::default()
        };
        assert!(c
            .validate()
            .unwrap_err()
            .to_string()
            .contains("sasl.mechanism"));
        let c = SecurityConfig {
            sasl: Some(Sasl::plain("a", "b")),
            ..Default::default()
        };
        assert!(c.validate().unwrap_err().to_string().contains("SASL_SSL"));
        let mut c = SecurityConfig {
            protocol: SecurityProtocol::Ssl,
            ..Default::default()
        };
        c.tls.client_cert = Some(Pem::File("c.pem".into()));
        assert!(c
            .validate()
            .unwrap_err()
            .to_string()
            .contains("private key"));
    }

    #[test]
    fn unsecured_tokens_are_three_part_jwts() {
        let t = UnsecuredToken::new("alice").token().unwrap();
        let parts: Vec<&str> = t.expose().split('.').collect();
        assert_eq!(parts.len(), 3);
        assert!(parts[2].is_empty());
        use base64::Engine;
        let claims = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(parts[1])
            .unwrap();
        let v: serde_json::Value = serde_json::from_slice(&claims).unwrap();
        assert_eq!(v["sub"], "alice");
        assert!(v["exp"].as_u64().unwrap() > v["iat"].as_u64().unwrap());
    }
}

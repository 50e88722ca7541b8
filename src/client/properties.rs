//! Java-style client properties files: the `client.properties` a user already has for the
//! Java tools or from a cloud provider's quick-start, read into a [`ClientConfig`].
//!
//! The file format is `java.util.Properties` (comments with `#` or `!`, `key=value`,
//! `key: value` or `key value`, backslash continuations and escapes). `sasl.jaas.config` is
//! read as Kafka reads it: one login module, a control flag, `name="value"` options, `;`.

use std::path::Path;
use std::time::Duration;

use super::config::{ClientConfig, MetadataRecovery};
use super::error::{Error, Result};
use super::security::{Pem, Sasl, SaslMechanism, Secret, TlsVerify, TokenFile, UnsecuredToken};

/// One entry of a properties file, with the line it starts on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Property {
    pub key: String,
    pub value: String,
    pub line: usize,
}

/// Split `text` into entries as `java.util.Properties.load` does.
pub(crate) fn parse_properties(text: &str) -> Vec<Property> {
    let mut out = Vec::new();
    let mut lines = text.lines().enumerate().peekable();
    while let Some((n, raw)) = lines.next() {
        let first = raw.trim_start_matches([' ', '\t', '\u{c}']);
        if first.is_empty() || first.starts_with('#') || first.starts_with('!') {
            continue;
        }
        // Join continuation lines: an odd number of trailing backslashes continues.
        let mut logical = String::from(first);
        while ends_with_odd_backslashes(&logical) {
            logical.pop();
            match lines.next() {
                Some((_, next)) => logical.push_str(next.trim_start_matches([' ', '\t', '\u{c}'])),
                None => break,
            }
        }
        let (key, value) = split_entry(&logical);
        out.push(Property {
            key: unescape(key),
            value: unescape(value),
            line: n + 1,
        });
    }
    out
}

fn ends_with_odd_backslashes(s: &str) -> bool {
    s.bytes().rev().take_while(|&b| b == b'\\').count() % 2 == 1
}

/// Split at the first unescaped `=`, `:` or whitespace; the separator and the whitespace
/// around it are dropped.
fn split_entry(line: &str) -> (&str, &str) {
    let bytes = line.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'\\' => i += 2,
            b'=' | b':' | b' ' | b'\t' | b'\x0c' => break,
            _ => i += 1,
        }
    }
    let i = i.min(bytes.len());
    let key = &line[..i];
    let mut rest = line[i..].trim_start_matches([' ', '\t', '\u{c}']);
    if let Some(r) = rest.strip_prefix(['=', ':']) {
        rest = r.trim_start_matches([' ', '\t', '\u{c}']);
    }
    (key, rest)
}

fn unescape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('t') => out.push('\t'),
            Some('n') => out.push('\n'),
            Some('r') => out.push('\r'),
            Some('f') => out.push('\u{c}'),
            Some('u') => {
                let hex: String = chars.clone().take(4).collect();
                match u32::from_str_radix(&hex, 16).ok().and_then(char::from_u32) {
                    Some(ch) if hex.len() == 4 => {
                        out.push(ch);
                        for _ in 0..4 {
                            chars.next();
                        }
                    }
                    _ => out.push('u'),
                }
            }
            Some(other) => out.push(other),
            None => {}
        }
    }
    out
}

/// One JAAS login module entry: `<class> <flag> name=value ...;`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct JaasEntry {
    pub module: String,
    pub flag: String,
    pub options: Vec<(String, String)>,
}

impl JaasEntry {
    fn option(&self, name: &str) -> Option<&str> {
        self.options
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

#[derive(Debug, PartialEq)]
enum Token {
    Word(String),
    Quoted(String),
    Eq,
    Semi,
}

fn jaas_tokens(s: &str) -> std::result::Result<Vec<Token>, String> {
    let mut out = Vec::new();
    let mut chars = s.chars().peekable();
    while let Some(&c) = chars.peek() {
        match c {
            c if c.is_whitespace() => {
                chars.next();
            }
            '=' => {
                chars.next();
                out.push(Token::Eq);
            }
            ';' => {
                chars.next();
                out.push(Token::Semi);
            }
            '"' | '\'' => {
                let quote = c;
                chars.next();
                let mut v = String::new();
                loop {
                    match chars.next() {
                        None => return Err("a quoted value is not closed".into()),
                        Some(q) if q == quote => break,
                        Some('\\') => match chars.next() {
                            Some('n') => v.push('\n'),
                            Some('t') => v.push('\t'),
                            Some('r') => v.push('\r'),
                            Some(e) => v.push(e),
                            None => return Err("a quoted value ends in a backslash".into()),
                        },
                        Some(ch) => v.push(ch),
                    }
                }
                out.push(Token::Quoted(v));
            }
            _ => {
                let mut w = String::new();
                while let Some(&ch) = chars.peek() {
                    if ch.is_whitespace() || matches!(ch, '=' | ';' | '"' | '\'') {
                        break;
                    }
                    w.push(ch);
                    chars.next();
                }
                out.push(Token::Word(w));
            }
        }
    }
    Ok(out)
}

/// Parse a `sasl.jaas.config` value, which must hold exactly one login module.
pub(crate) fn parse_jaas(value: &str) -> std::result::Result<JaasEntry, String> {
    let tokens = jaas_tokens(value)?;
    let mut it = tokens.into_iter();
    let module = match it.next() {
        Some(Token::Word(w)) => w,
        _ => return Err("expected a login module class, e.g. org.apache.kafka.common.security.scram.ScramLoginModule".into()),
    };
    let flag = match it.next() {
        Some(Token::Word(w)) => w,
        _ => return Err(format!("expected a control flag (required) after {module}")),
    };
    if !["required", "requisite", "sufficient", "optional"]
        .contains(&flag.to_ascii_lowercase().as_str())
    {
        return Err(format!(
            "{flag:?} is not a control flag; write `{module} required ...;`"
        ));
    }
    let mut options = Vec::new();
    loop {
        match it.next() {
            Some(Token::Semi) => break,
            Some(Token::Word(name)) => {
                if it.next() != Some(Token::Eq) {
                    return Err(format!("option {name} has no `=value`"));
                }
                match it.next() {
                    Some(Token::Quoted(v) | Token::Word(v)) => options.push((name, v)),
                    _ => return Err(format!("option {name} has no value")),
                }
            }
            None => return Err("the login module entry does not end with `;`".into()),
            Some(t) => return Err(format!("unexpected {t:?} in the options")),
        }
    }
    if it.next().is_some() {
        return Err("only one login module may be given in sasl.jaas.config".into());
    }
    Ok(JaasEntry {
        module,
        flag,
        options,
    })
}

/// What `from_properties` made of a file: the config, and the keys it did not use.
#[derive(Debug)]
pub(crate) struct Loaded {
    pub config: ClientConfig,
    pub unknown: Vec<String>,
}

/// Keys of the Java consumer that [`ConsumerConfig::from_properties`](crate::consumer::ConsumerConfig::from_properties)
/// reads: not a client config's, and not unknown to kpipe.
pub(crate) const CONSUMER_KEYS: &[&str] = &[
    "group.id",
    "group.instance.id",
    "group.protocol",
    "isolation.level",
    "auto.offset.reset",
    "enable.auto.commit",
    "auto.commit.interval.ms",
    "max.poll.records",
    "session.timeout.ms",
    "heartbeat.interval.ms",
    "max.poll.interval.ms",
    "fetch.min.bytes",
    "fetch.max.bytes",
    "fetch.max.wait.ms",
    "max.partition.fetch.bytes",
    "client.rack",
];

/// Keys of the Java client that a kpipe client config has no use for but that are common in
/// shared files: they are not reported as unknown.
const IGNORED: &[&str] = &[
    "ssl.truststore.password",
    "ssl.keystore.password",
    "sasl.login.callback.handler.class",
    "ssl.protocol",
    "ssl.enabled.protocols",
];

const PLAIN_MODULE: &str = "org.apache.kafka.common.security.plain.PlainLoginModule";
const SCRAM_MODULE: &str = "org.apache.kafka.common.security.scram.ScramLoginModule";
const OAUTH_MODULE: &str = "org.apache.kafka.common.security.oauthbearer.OAuthBearerLoginModule";

/// Read a properties file's text; `origin` names it in errors.
pub(crate) fn load(text: &str, origin: &str, base: ClientConfig) -> Result<Loaded> {
    let props = parse_properties(text);
    let mut config = base;
    let mut unknown = Vec::new();
    let err = |p: &Property, reason: String| Error::Properties {
        file: origin.to_owned(),
        line: p.line,
        key: p.key.clone(),
        reason,
    };
    let find = |key: &str| props.iter().rev().find(|p| p.key == key);

    // Later entries win, as in java.util.Properties.
    let mut mechanism: Option<(SaslMechanism, &Property)> = None;
    let mut jaas: Option<(JaasEntry, &Property)> = None;
    for p in &props {
        if !std::ptr::eq(find(&p.key).expect("present"), p) {
            continue;
        }
        let v = p.value.trim();
        match p.key.as_str() {
            "bootstrap.servers" => config.bootstrap = ClientConfig::new([v]).bootstrap,
            "client.id" => config.connection.client_id = v.to_owned(),
            "security.protocol" => {
                config.security.protocol = v.parse().map_err(|e| err(p, e))?;
            }
            "sasl.mechanism" => mechanism = Some((v.parse().map_err(|e| err(p, e))?, p)),
            "sasl.jaas.config" => jaas = Some((parse_jaas(v).map_err(|e| err(p, e))?, p)),
            "ssl.truststore.type" | "ssl.keystore.type" => {
                if !v.eq_ignore_ascii_case("PEM") {
                    return Err(err(p, store_conversion_hint(&p.key, v)));
                }
            }
            "ssl.truststore.location" => {
                config.security.tls.ca = Some(Pem::File(v.into()));
            }
            "ssl.truststore.certificates" => {
                config.security.tls.ca = Some(Pem::Inline(Secret::new(v)));
            }
            "ssl.keystore.location" => {
                config.security.tls.client_cert = Some(Pem::File(v.into()));
                config.security.tls.client_key = Some(Pem::File(v.into()));
            }
            "ssl.keystore.certificate.chain" => {
                config.security.tls.client_cert = Some(Pem::Inline(Secret::new(v)));
            }
            "ssl.keystore.key" => {
                config.security.tls.client_key = Some(Pem::Inline(Secret::new(v)));
            }
            "ssl.key.password" => {
                if !v.is_empty() {
                    return Err(err(p, "encrypted private keys are not supported; decrypt the key (openssl pkcs8 -in key.pem -out key-plain.pem), keep that file private, and drop ssl.key.password".into()));
                }
            }
            "ssl.endpoint.identification.algorithm" => {
                config.security.tls.verify = match v.to_ascii_lowercase().as_str() {
                    "https" => TlsVerify::Full,
                    "" => TlsVerify::NoHostname,
                    _ => return Err(err(p, format!("{v:?} is not an algorithm; use https (check the host name, the default) or leave it empty (do not)"))),
                };
            }
            "request.timeout.ms" => {
                config.connection.request_timeout = millis(p).map_err(|e| err(p, e))?
            }
            "socket.connection.setup.timeout.ms" => {
                config.connection.connect_timeout = millis(p).map_err(|e| err(p, e))?
            }
            "metadata.max.age.ms" => config.metadata_max_age = millis(p).map_err(|e| err(p, e))?,
            "retry.backoff.ms" => config.retry_backoff = millis(p).map_err(|e| err(p, e))?,
            "retry.backoff.max.ms" => {
                config.retry_backoff_max = millis(p).map_err(|e| err(p, e))?
            }
            "metadata.recovery.strategy" => {
                config.metadata_recovery = match v.to_ascii_lowercase().as_str() {
                    "rebootstrap" => MetadataRecovery::Rebootstrap,
                    "none" => MetadataRecovery::None,
                    _ => {
                        return Err(err(
                            p,
                            format!(
                                "{v:?} is not a strategy; use rebootstrap (the default) or none"
                            ),
                        ))
                    }
                };
            }
            "metadata.recovery.rebootstrap.trigger.ms" => {
                config.rebootstrap_trigger = millis(p).map_err(|e| err(p, e))?
            }
            // Used together with sasl.jaas.config below.
            "sasl.oauthbearer.token.endpoint.url" => {}
            k if IGNORED.contains(&k) || CONSUMER_KEYS.contains(&k) => {}
            k => unknown.push(k.to_owned()),
        }
    }

    if let Some((entry, jp)) = jaas {
        let mech = match mechanism {
            Some((m, _)) => m,
            None if config.security.protocol.uses_sasl() => {
                return Err(err(jp, "sasl.mechanism is not set (the Java default, GSSAPI, is not supported); set it to PLAIN, SCRAM-SHA-256, SCRAM-SHA-512 or OAUTHBEARER".into()));
            }
            None => SaslMechanism::Plain,
        };
        let expected = match mech {
            SaslMechanism::Plain => PLAIN_MODULE,
            SaslMechanism::ScramSha256 | SaslMechanism::ScramSha512 => SCRAM_MODULE,
            SaslMechanism::OAuthBearer => OAUTH_MODULE,
        };
        if entry.module != expected {
            return Err(err(
                jp,
                format!(
                    "sasl.mechanism {mech} needs the login module {expected}, not {}",
                    entry.module
                ),
            ));
        }
        let sasl = match mech {
            SaslMechanism::OAuthBearer => {
                let endpoint = find("sasl.oauthbearer.token.endpoint.url");
                match (endpoint, entry.option("unsecuredLoginStringClaim_sub")) {
                    (Some(ep), _) => {
                        let url = ep.value.trim();
                        let Some(path) = url.strip_prefix("file://") else {
                            return Err(err(ep, "only file:// token endpoints are supported (kpipe makes no HTTP requests); fetch the token yourself and point this at file:///path/to/token".into()));
                        };
                        Sasl::oauthbearer(TokenFile(path.into()))
                    }
                    (None, Some(sub)) => {
                        log::warn!("{origin}: OAUTHBEARER with an unsecured token for {sub:?} (unsecuredLoginStringClaim_sub): only brokers with Kafka's unsecured validator accept it");
                        Sasl::oauthbearer(UnsecuredToken::new(sub))
                    }
                    (None, None) => {
                        return Err(err(jp, "OAUTHBEARER needs a token: set sasl.oauthbearer.token.endpoint.url=file:///path/to/token, or unsecuredLoginStringClaim_sub=\"name\" for a test broker (the kpipe command also takes --sasl-token-file)".into()));
                    }
                }
            }
            _ => {
                let (Some(user), Some(password)) =
                    (entry.option("username"), entry.option("password"))
                else {
                    return Err(err(
                        jp,
                        format!(
                            "{} needs username=\"...\" and password=\"...\" options",
                            entry.module
                        ),
                    ));
                };
                Sasl::with_password(mech, user, Secret::new(password)).map_err(|e| err(jp, e))?
            }
        };
        config.security.sasl = Some(sasl);
    } else if let Some((m, mp)) = mechanism {
        if config.security.protocol.uses_sasl() {
            return Err(err(
                mp,
                format!("sasl.mechanism {m} is set but sasl.jaas.config is not; add e.g. sasl.jaas.config={} required username=\"...\" password=\"...\";", if m == SaslMechanism::Plain { PLAIN_MODULE } else { SCRAM_MODULE }),
            ));
        }
    }
    Ok(Loaded { config, unknown })
}

pub(crate) fn millis(p: &Property) -> std::result::Result<Duration, String> {
    p.value
        .trim()
        .parse::<u64>()
        .map(Duration::from_millis)
        .map_err(|_| format!("{:?} is not a number of milliseconds", p.value))
}

fn store_conversion_hint(key: &str, kind: &str) -> String {
    let how = if key.starts_with("ssl.truststore") {
        "convert it to PEM: `keytool -exportcert -rfc -keystore truststore.jks -alias CARoot -file ca.pem` (JKS) or `openssl pkcs12 -in truststore.p12 -nokeys -out ca.pem` (PKCS12), then set ssl.truststore.type=PEM and ssl.truststore.location=ca.pem"
    } else {
        "convert it to PEM: `keytool -importkeystore -srckeystore keystore.jks -destkeystore keystore.p12 -deststoretype PKCS12` (JKS), then `openssl pkcs12 -in keystore.p12 -nodes -out client.pem`, and set ssl.keystore.type=PEM and ssl.keystore.location=client.pem"
    };
    format!("{kind} stores are not supported, only PEM; {how}")
}

impl ClientConfig {
    /// Read a Java client properties file (`bootstrap.servers`, `security.protocol`,
    /// `sasl.mechanism`, `sasl.jaas.config`, `ssl.*` with PEM stores, `client.id`, and the
    /// timeouts). Keys kpipe does not use are listed in one warning; a malformed value is an
    /// error naming the file, the line and the key. Unset fields keep their defaults.
    pub fn from_properties(path: impl AsRef<Path>) -> Result<ClientConfig> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path).map_err(|e| Error::Config {
            field: "properties",
            reason: format!("cannot read {}: {e}", path.display()),
        })?;
        ClientConfig::from_properties_str(&text, &path.display().to_string())
    }

    /// [`from_properties`](Self::from_properties) for text already read; `origin` names it
    /// in errors and warnings.
    pub fn from_properties_str(text: &str, origin: &str) -> Result<ClientConfig> {
        let loaded = load(text, origin, ClientConfig::default())?;
        if !loaded.unknown.is_empty() {
            log::warn!(
                "{origin}: ignoring keys kpipe does not use: {}",
                loaded.unknown.join(", ")
            );
        }
        Ok(loaded.config)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::client::SecurityProtocol;

    #[test]
    fn java_properties_syntax() {
        let text = "# comment\n! also a comment\n\
                    a=1\n  b : 2\nc 3\nd=long \\\n    value\nkey\\=with\\:seps = x\n\
                    e=\\u0041\\tB\nempty=\n";
        let p = parse_properties(text);
        let kv: Vec<(&str, &str, usize)> = p
            .iter()
            .map(|p| (p.key.as_str(), p.value.as_str(), p.line))
            .collect();
        assert_eq!(
            kv,
            [
                ("a", "1", 3),
                ("b", "2", 4),
                ("c", "3", 5),
                ("d", "long value", 6),
                ("key=with:seps", "x", 8),
                ("e", "A\tB", 9),
                ("empty", "", 10),
            ]
        );
    }

    #[test]
    fn jaas_quoting_and_escapes() {
        let e = parse_jaas(
            r#"org.apache.kafka.common.security.scram.ScramLoginModule required username="al ice" password="p\"w;d=\\x" extra=plain;"#,
        )
        .unwrap();
        assert_eq!(e.module, SCRAM_MODULE);
        assert_eq!(e.flag, "required");
        assert_eq!(e.option("username"), Some("al ice"));
        assert_eq!(e.option("password"), Some(r#"p"w;d=\x"#));
        assert_eq!(e.option("extra"), Some("plain"));
        for bad in [
            "",
            "Module",
            "Module required username=\"x\"",
            "Module maybe a=b;",
            "Module required a=\"open;",
            "Module required a=b; Other required;",
            "Module required a;",
        ] {
            assert!(parse_jaas(bad).is_err(), "{bad:?} should be refused");
        }
    }

    #[test]
    #[cfg_attr(not(feature = "tls"), ignore = "needs the tls feature")]
    fn a_quick_start_file_maps_onto_the_config() {
        let text = format!(
            "bootstrap.servers=b1:9093,b2:9093\nsecurity.protocol=SASL_SSL\n\
             sasl.mechanism=SCRAM-SHA-512\n\
             sasl.jaas.config={SCRAM_MODULE} required \\\n  username=\"alice\" password=\"alice-secret\";\n\
             ssl.truststore.type=PEM\nssl.truststore.location=/tmp/ca.pem\n\
             client.id=my-app\nacks=all\ngroup.id=g\n"
        );
        let l = load(&text, "client.properties", ClientConfig::default()).unwrap();
        let c = &l.config;
        assert_eq!(c.bootstrap, ["b1:9093", "b2:9093"]);
        assert_eq!(c.security.protocol, SecurityProtocol::SaslSsl);
        assert_eq!(
            c.security.sasl,
            Some(Sasl::scram_sha512("alice", "alice-secret"))
        );
        assert_eq!(c.security.tls.ca, Some(Pem::File("/tmp/ca.pem".into())));
        assert_eq!(c.connection.client_id, "my-app");
        // group.id is the consumer's (ConsumerConfig::from_properties reads it).
        assert_eq!(l.unknown, ["acks"]);
        c.validate().unwrap();
        assert!(!format!("{c:?}").contains("alice-secret"));
    }

    #[test]
    fn metadata_recovery_keys() {
        let c = ClientConfig::default();
        assert_eq!(c.metadata_recovery, MetadataRecovery::Rebootstrap);
        assert_eq!(c.rebootstrap_trigger, Duration::from_secs(300));
        let text =
            "metadata.recovery.strategy=none\nmetadata.recovery.rebootstrap.trigger.ms=45000\n";
        let l = load(text, "r", ClientConfig::default()).unwrap();
        assert!(l.unknown.is_empty(), "{:?}", l.unknown);
        assert_eq!(l.config.metadata_recovery, MetadataRecovery::None);
        assert_eq!(l.config.rebootstrap_trigger, Duration::from_secs(45));
        let err = load(
            "metadata.recovery.strategy=retry\n",
            "r",
            ClientConfig::default(),
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("rebootstrap"), "{err}");
    }

    #[test]
    fn bad_values_name_the_line_and_key() {
        let cases = [
            ("security.protocol=TLS\n", 1, "security.protocol"),
            ("x=1\nssl.truststore.type=JKS\n", 2, "keytool"),
            ("ssl.keystore.type=PKCS12\n", 1, "openssl pkcs12"),
            ("security.protocol=SASL_SSL\nsasl.jaas.config=Foo required;\n", 2, "sasl.mechanism is not set"),
            ("sasl.mechanism=PLAIN\nsasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required username=\"a\" password=\"b\";\n", 2, "PlainLoginModule"),
            ("sasl.mechanism=GSSAPI\n", 1, "not supported"),
            ("request.timeout.ms=soon\n", 1, "milliseconds"),
            ("ssl.key.password=pw\n", 1, "encrypted"),
            ("security.protocol=SASL_SSL\nsasl.mechanism=OAUTHBEARER\nsasl.oauthbearer.token.endpoint.url=https://idp/token\nsasl.jaas.config=org.apache.kafka.common.security.oauthbearer.OAuthBearerLoginModule required;\n", 3, "file://"),
        ];
        for (text, line, needle) in cases {
            let err = load(text, "f.properties", ClientConfig::default()).unwrap_err();
            let s = err.to_string();
            assert!(
                s.starts_with(&format!("f.properties:{line}: ")),
                "{text:?}: {s}"
            );
            assert!(s.contains(needle), "{text:?}: {s}");
            assert!(!s.contains("pw\n"), "{s}");
        }
    }

    #[test]
    fn oauthbearer_and_mtls_entries() {
        let text = format!(
            "security.protocol=SASL_SSL\nsasl.mechanism=OAUTHBEARER\n\
             sasl.jaas.config={OAUTH_MODULE} required unsecuredLoginStringClaim_sub=\"alice\";\n\
             ssl.keystore.type=PEM\nssl.keystore.location=/k/client.pem\n\
             ssl.endpoint.identification.algorithm=\n"
        );
        let c = load(&text, "o", ClientConfig::default()).unwrap().config;
        assert_eq!(
            c.security.sasl.as_ref().map(Sasl::mechanism),
            Some(SaslMechanism::OAuthBearer)
        );
        assert_eq!(
            c.security.tls.client_cert,
            Some(Pem::File("/k/client.pem".into()))
        );
        assert_eq!(
            c.security.tls.client_key,
            Some(Pem::File("/k/client.pem".into()))
        );
        assert_eq!(c.security.tls.verify, TlsVerify::NoHostname);
        let text = format!(
            "security.protocol=SASL_SSL\nsasl.mechanism=OAUTHBEARER\n\
             sasl.oauthbearer.token.endpoint.url=file:///run/token\n\
             sasl.jaas.config={OAUTH_MODULE} required;\n"
        );
        let c = load(&text, "o", ClientConfig::default()).unwrap().config;
        assert!(c.security.sasl.is_some());
    }
}

//! Settings of the client layer: how to reach brokers and how long to wait for them.

use std::time::Duration;

use super::backoff::Backoff;
use super::error::{Error, Result};
use super::security::SecurityConfig;

/// How one connection behaves. Part of [`ClientConfig`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnectionConfig {
    /// Sent in every request header so broker logs and quotas can tell clients apart.
    /// Default `"kpipe"`.
    pub client_id: String,
    /// Bound on opening a TCP connection. Default 10 s.
    pub connect_timeout: Duration,
    /// Bound on each request, from sending it to reading its whole response. Default 30 s
    /// (the Java client's `request.timeout.ms`). Must exceed any fetch `max_wait`.
    pub request_timeout: Duration,
    /// Largest response frame accepted, in bytes; a larger one closes the connection with
    /// [`Error::FrameTooLarge`]. Default 100 MiB.
    pub max_response_bytes: usize,
}

impl Default for ConnectionConfig {
    fn default() -> Self {
        ConnectionConfig {
            client_id: "kpipe".to_owned(),
            connect_timeout: Duration::from_secs(10),
            request_timeout: Duration::from_secs(30),
            max_response_bytes: 100 << 20,
        }
    }
}

/// How to find and talk to a cluster.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientConfig {
    /// Bootstrap brokers as `host:port`; tried in order until one answers. Default
    /// `["localhost:9092"]`.
    pub bootstrap: Vec<String>,
    /// Per-connection settings.
    pub connection: ConnectionConfig,
    /// Metadata older than this is refreshed before use. Default 5 min (the Java client's
    /// `metadata.max.age.ms`).
    pub metadata_max_age: Duration,
    /// TLS and SASL: `security.protocol` and what it needs. Default plaintext.
    pub security: SecurityConfig,
    /// First delay before a retry (of a produce, a fetch, a metadata or group request, a
    /// connect); doubles per retry in a row, with jitter. Default 100 ms (Java
    /// `retry.backoff.ms`). The one retry policy of everything built on this config.
    pub retry_backoff: Duration,
    /// Longest retry delay. Default 1 s (Java `retry.backoff.max.ms`).
    pub retry_backoff_max: Duration,
    /// What to do when no broker the metadata named can be reached (the cluster replaced
    /// behind the same bootstrap names, say). Default [`MetadataRecovery::Rebootstrap`]
    /// (Java `metadata.recovery.strategy`, whose 4.x default is `rebootstrap`).
    pub metadata_recovery: MetadataRecovery,
    /// With [`MetadataRecovery::Rebootstrap`]: go back to the bootstrap servers when no
    /// broker has answered for this long, even if some are still being tried. Default 5 min
    /// (Java `metadata.recovery.rebootstrap.trigger.ms`, KIP-1102).
    pub rebootstrap_trigger: Duration,
}

/// How a client finds its cluster again when the brokers it learnt of are all gone.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum MetadataRecovery {
    /// Resolve the bootstrap servers again and start over from them (KIP-899, KIP-1102):
    /// when every known broker failed, when none answered for `rebootstrap_trigger`, or when
    /// a broker answers REBOOTSTRAP_REQUIRED. The default.
    #[default]
    Rebootstrap,
    /// Keep to the brokers the last metadata named; a REBOOTSTRAP_REQUIRED answer is an
    /// error. The bootstrap servers are used only to connect.
    None,
}

impl Default for ClientConfig {
    fn default() -> Self {
        ClientConfig {
            bootstrap: vec!["localhost:9092".to_owned()],
            connection: ConnectionConfig::default(),
            metadata_max_age: Duration::from_secs(300),
            security: SecurityConfig::default(),
            retry_backoff: Duration::from_millis(100),
            retry_backoff_max: Duration::from_secs(1),
            metadata_recovery: MetadataRecovery::Rebootstrap,
            rebootstrap_trigger: Duration::from_secs(300),
        }
    }
}

impl ClientConfig {
    /// A config for the given bootstrap list (comma-separated `host:port` entries allowed).
    pub fn new<I, S>(bootstrap: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        ClientConfig {
            bootstrap: bootstrap
                .into_iter()
                .flat_map(|s| {
                    s.as_ref()
                        .split(',')
                        .map(|p| p.trim().to_owned())
                        .filter(|p| !p.is_empty())
                        .collect::<Vec<_>>()
                })
                .collect(),
            ..Default::default()
        }
    }

    /// Check every field; the error names the field and what would be valid.
    pub fn validate(&self) -> Result<()> {
        if self.bootstrap.is_empty() {
            return Err(Error::Config {
                field: "bootstrap",
                reason:
                    "the broker list is empty; give at least one host:port, e.g. localhost:9092"
                        .into(),
            });
        }
        for addr in &self.bootstrap {
            validate_addr(addr)?;
        }
        if self.connection.client_id.len() > i16::MAX as usize {
            return Err(Error::Config {
                field: "client_id",
                reason: format!(
                    "{} bytes is longer than the 32767 Kafka allows",
                    self.connection.client_id.len()
                ),
            });
        }
        for (field, value) in [
            ("connect_timeout", self.connection.connect_timeout),
            ("request_timeout", self.connection.request_timeout),
            ("rebootstrap_trigger", self.rebootstrap_trigger),
        ] {
            if value.is_zero() {
                return Err(Error::Config {
                    field,
                    reason: "must be greater than zero".into(),
                });
            }
        }
        if self.connection.max_response_bytes < 1024
            || self.connection.max_response_bytes > i32::MAX as usize
        {
            return Err(Error::Config {
                field: "max_response_bytes",
                reason: format!(
                    "{} is outside 1 KiB..2 GiB",
                    self.connection.max_response_bytes
                ),
            });
        }
        if self.retry_backoff.is_zero() || self.retry_backoff > self.retry_backoff_max {
            return Err(Error::Config {
                field: "retry_backoff",
                reason: format!(
                    "{:?} must be above zero and at most retry_backoff_max ({:?})",
                    self.retry_backoff, self.retry_backoff_max
                ),
            });
        }
        self.security.validate()
    }
}

impl ClientConfig {
    /// A fresh backoff of the configured retry policy (`retry_backoff` doubling to
    /// `retry_backoff_max`).
    pub fn backoff(&self) -> Backoff {
        Backoff::new(self.retry_backoff, self.retry_backoff_max)
    }
}

/// Check that `addr` looks like `host:port` with a valid port.
pub(super) fn validate_addr(addr: &str) -> Result<()> {
    let bad = |why: &str| Error::Config {
        field: "bootstrap",
        reason: format!("{addr:?} is not host:port ({why}); e.g. localhost:9092"),
    };
    let (host, port) = addr.rsplit_once(':').ok_or_else(|| bad("no port"))?;
    if host.is_empty() {
        return Err(bad("no host"));
    }
    match port.parse::<u16>() {
        Ok(0) | Err(_) => Err(bad("the port must be a number from 1 to 65535")),
        Ok(_) => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bootstrap_lists_split_on_commas() {
        let c = ClientConfig::new(["a:1, b:2", "c:3"]);
        assert_eq!(c.bootstrap, ["a:1", "b:2", "c:3"]);
        c.validate().unwrap();
    }

    #[test]
    fn bad_values_name_the_field() {
        let err = ClientConfig::new(Vec::<String>::new())
            .validate()
            .unwrap_err();
        assert!(err.to_string().contains("`bootstrap`"), "{err}");
        for bad in ["localhost", ":9092", "host:0", "host:99999", "host:x"] {
            let err = ClientConfig::new([bad]).validate().unwrap_err();
            assert!(err.to_string().contains("host:port"), "{bad}: {err}");
        }
        let c = ClientConfig {
            retry_backoff: Duration::from_secs(5),
            ..Default::default()
        };
        let err = c.validate().unwrap_err().to_string();
        assert!(err.contains("retry_backoff_max"), "{err}");
        let mut c = ClientConfig::default();
        c.connection.request_timeout = Duration::ZERO;
        assert!(c
            .validate()
            .unwrap_err()
            .to_string()
            .contains("request_timeout"));
    }
}

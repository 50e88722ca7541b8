//! The fourth step of a connection, when SASL is configured: SaslHandshake names the
//! mechanism, then SaslAuthenticate requests carry the mechanism's messages
//! ([`mechanisms`](super::mechanisms)) until it is done.

use std::time::Instant;

use bytes::Bytes;
use kafka_protocol::messages::{SaslAuthenticateRequest, SaslHandshakeRequest};
use kafka_protocol::protocol::StrBytes;

use super::mechanisms::{SaslSession, Step};
use crate::client::connection::{reauth_time, Connection};
use crate::client::error::{Error, KafkaCode, Result};
use crate::client::security::Sasl;
use crate::client::transport::Transport;

/// Authenticate with SASL: SaslHandshake names the mechanism, then SaslAuthenticate
/// requests carry the mechanism's messages until it is done. When the broker limits the
/// session (KIP-368, `connections.max.reauth.ms`), the connection runs this again on its
/// own before the session ends.
pub(crate) fn authenticate<S: Transport>(conn: &mut Connection<S>, sasl: Sasl) -> Result<()> {
    let mechanism = sasl.mechanism();
    // The broker closes the connection after a failed authentication: so do we.
    let refused = |conn: &mut Connection<S>, message: String| {
        let err = Error::Auth {
            broker: conn.broker().to_owned(),
            mechanism: mechanism.name(),
            user: sasl.username().map(str::to_owned),
            message,
        };
        conn.poison(err)
    };
    let started = Instant::now();
    let mut reauth_at = None;
    let mut hs = SaslHandshakeRequest::default();
    hs.mechanism = StrBytes::from_static_str(mechanism.name());
    let resp = conn.request(&hs)?;
    if resp.error_code != 0 {
        let enabled: Vec<&str> = resp.mechanisms.iter().map(|m| m.as_str()).collect();
        let message = match KafkaCode::try_from_code(resp.error_code) {
            Some(KafkaCode::UnsupportedSaslMechanism) => format!(
                "the broker does not offer {mechanism} on this listener (it offers: {}); set sasl.mechanism to one of those",
                if enabled.is_empty() { "none".to_owned() } else { enabled.join(", ") }
            ),
            Some(KafkaCode::IllegalSaslState) => "the broker does not expect SASL here; is this a listener without SASL? then use security.protocol=PLAINTEXT or SSL".to_owned(),
            Some(code) => format!("SaslHandshake failed: {code}"),
            None => format!("SaslHandshake failed with error {}", resp.error_code),
        };
        return Err(refused(conn, message));
    }
    let (mut session, mut out) = match SaslSession::start(&sasl) {
        Ok(v) => v,
        Err(message) => return Err(refused(conn, message)),
    };
    loop {
        let mut req = SaslAuthenticateRequest::default();
        req.auth_bytes = Bytes::from(std::mem::take(&mut out));
        let resp = conn.request(&req)?;
        if resp.error_code != 0 {
            let said = resp
                .error_message
                .as_ref()
                .map(|m| m.to_string())
                .filter(|m| !m.is_empty());
            let message = match (session.failure(), said) {
                (Some(why), _) => why.to_owned(),
                (None, Some(m)) => m,
                (None, None) => KafkaCode::try_from_code(resp.error_code)
                    .map_or_else(|| format!("error {}", resp.error_code), |c| c.to_string()),
            };
            return Err(refused(conn, message));
        }
        match session.next(&resp.auth_bytes) {
            Ok(Step::Send(bytes)) => out = bytes,
            Ok(Step::Done) => {
                if resp.session_lifetime_ms > 0 {
                    reauth_at = Some(reauth_time(started, resp.session_lifetime_ms));
                }
                break;
            }
            Err(message) => return Err(refused(conn, message)),
        }
    }
    log::debug!("authenticated to {} with {mechanism}", conn.broker());
    conn.set_authenticated(sasl, reauth_at, authenticate::<S>);
    Ok(())
}

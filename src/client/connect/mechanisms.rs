//! The SASL mechanisms' messages, apart from I/O: PLAIN, SCRAM-SHA-256/512 (RFC 5802 and
//! 7677, the server's signature verified) and OAUTHBEARER (RFC 7628).
//!
//! A [`SaslSession`] produces the client's first message, then answers each server
//! challenge until it is [`Done`](Step::Done). The connection carries the bytes in
//! SaslAuthenticate requests.

#[cfg(feature = "tls")]
use super::scram::Scram;
use crate::client::security::{Sasl, Secret};

/// What the client does after reading a server message.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Step {
    /// Send these bytes in the next SaslAuthenticate.
    Send(Vec<u8>),
    /// Authentication is complete.
    Done,
}

/// One authentication exchange in progress.
pub(crate) enum SaslSession {
    /// PLAIN: one message, then done.
    Plain { sent: bool },
    /// SCRAM: client-first, client-final, then the server signature check.
    #[cfg(feature = "tls")]
    Scram(Box<Scram>),
    /// OAUTHBEARER: the token, then done, or an error challenge to acknowledge.
    OAuth { failed: Option<String> },
}

impl SaslSession {
    /// Start authenticating with `sasl`; returns the session and the first message.
    pub(crate) fn start(sasl: &Sasl) -> Result<(SaslSession, Vec<u8>), String> {
        match sasl {
            Sasl::Plain { username, password } => {
                // authzid (empty) NUL authcid NUL password
                let mut msg = Vec::with_capacity(username.len() + password.expose().len() + 2);
                msg.push(0);
                msg.extend_from_slice(username.as_bytes());
                msg.push(0);
                msg.extend_from_slice(password.expose().as_bytes());
                Ok((SaslSession::Plain { sent: true }, msg))
            }
            #[cfg(feature = "tls")]
            Sasl::Scram {
                mechanism,
                username,
                password,
            } => {
                let scram = Scram::start(*mechanism, username, password.clone())?;
                let first = scram.client_first();
                Ok((SaslSession::Scram(Box::new(scram)), first))
            }
            #[cfg(not(feature = "tls"))]
            Sasl::Scram { mechanism, .. } => Err(format!(
                "{mechanism} is not built in: enable kpipe's `tls` cargo feature"
            )),
            Sasl::OAuthBearer { provider } => {
                let token = provider
                    .token()
                    .map_err(|e| format!("the OAUTHBEARER token provider failed: {e}"))?;
                Ok((SaslSession::OAuth { failed: None }, oauth_first(&token)))
            }
        }
    }

    /// Answer the server's message (the `auth_bytes` of a successful SaslAuthenticate).
    pub(crate) fn next(&mut self, server: &[u8]) -> Result<Step, String> {
        match self {
            SaslSession::Plain { sent } => {
                debug_assert!(*sent);
                Ok(Step::Done)
            }
            #[cfg(feature = "tls")]
            SaslSession::Scram(s) => Ok(s.next(server)?.map_or(Step::Done, Step::Send)),
            SaslSession::OAuth { failed } => {
                if let Some(why) = failed.take() {
                    return Err(why);
                }
                if server.is_empty() {
                    return Ok(Step::Done);
                }
                // RFC 7628 §3.2.2: an error challenge (JSON) is acknowledged with %x01, and
                // the server then fails the exchange; remember why.
                *failed = Some(format!(
                    "the broker rejected the token: {}",
                    String::from_utf8_lossy(server)
                ));
                Ok(Step::Send(vec![0x01]))
            }
        }
    }

    /// Why an OAUTHBEARER exchange failed, if the server said so in a challenge.
    pub(crate) fn failure(&self) -> Option<&str> {
        match self {
            SaslSession::OAuth { failed } => failed.as_deref(),
            _ => None,
        }
    }
}

fn oauth_first(token: &Secret) -> Vec<u8> {
    // gs2-header "n,," then kvpairs separated by %x01, ended by %x01%x01.
    let mut msg = b"n,,\x01auth=Bearer ".to_vec();
    msg.extend_from_slice(token.expose().as_bytes());
    msg.extend_from_slice(b"\x01\x01");
    msg
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_and_oauthbearer_messages() {
        let (mut p, first) = SaslSession::start(&Sasl::plain("alice", "pw")).unwrap();
        assert_eq!(first, b"\0alice\0pw");
        assert_eq!(p.next(b"").unwrap(), Step::Done);

        let sasl = Sasl::oauthbearer(|| Ok(Secret::new("tok.en.")));
        let (mut o, first) = SaslSession::start(&sasl).unwrap();
        assert_eq!(first, b"n,,\x01auth=Bearer tok.en.\x01\x01");
        assert_eq!(o.next(b"").unwrap(), Step::Done);
        // An error challenge is acknowledged, and its text kept for the error.
        let (mut o, _) = SaslSession::start(&sasl).unwrap();
        assert_eq!(
            o.next(br#"{"status":"invalid_token"}"#).unwrap(),
            Step::Send(vec![1])
        );
        assert!(o.failure().unwrap().contains("invalid_token"));

        let failing = Sasl::oauthbearer(|| Err("no token today".to_owned()));
        let err = SaslSession::start(&failing).err().unwrap();
        assert!(err.contains("no token today"), "{err}");
    }
}

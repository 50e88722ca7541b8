//! The third step of a connection: ApiVersions, which every broker answers before
//! authentication, so that the SASL requests and all later ones go out at versions both
//! sides support. A broker that does not know our ApiVersions version answers
//! UNSUPPORTED_VERSION encoded as v0 with its own range, and we ask again inside it.

use bytes::Buf;
use kafka_protocol::messages::{ApiKey, ApiVersionsRequest, ApiVersionsResponse};
use kafka_protocol::protocol::{Message, StrBytes};

use crate::client::connection::Connection;
use crate::client::error::{Error, Location, Result};
use crate::client::transport::Transport;
use crate::client::versions::BrokerVersions;

/// Negotiate API versions on a fresh connection (a failure gets a hint when the listener
/// likely wants another security protocol).
pub(crate) fn negotiate<S: Transport>(conn: &mut Connection<S>) -> Result<()> {
    negotiate_versions(conn).map_err(|e| conn.hint_security(e))
}

fn negotiate_versions<S: Transport>(conn: &mut Connection<S>) -> Result<()> {
    let mut req = ApiVersionsRequest::default();
    req.client_software_name = StrBytes::from_static_str("kpipe");
    req.client_software_version = StrBytes::from_static_str(env!("CARGO_PKG_VERSION"));
    let mut version = ApiVersionsRequest::VERSIONS.max;
    for _ in 0..2 {
        let pending = conn.send_versioned(&req, version, true)?;
        let mut body = conn.receive_body(pending, 0)?;
        // A broker that does not know our version answers error 35 encoded as v0,
        // listing its own ApiVersions range: retry inside it.
        let code = if body.len() >= 2 {
            (&body[..2]).get_i16()
        } else {
            0
        };
        let decode_version = if code == 35 { 0 } else { version };
        let resp: ApiVersionsResponse = conn.decode(&mut body, decode_version, "ApiVersions")?;
        if resp.error_code == 35 {
            let theirs = BrokerVersions::from_response(&resp).range(ApiKey::ApiVersions as i16);
            match theirs {
                Some(r) if r.max < version && r.max >= 0 => {
                    version = r.max.min(ApiVersionsRequest::VERSIONS.max);
                    continue;
                }
                _ => {
                    return Err(conn.poison(Error::UnsupportedVersion {
                        broker: conn.broker().to_owned(),
                        api: "ApiVersions",
                        ours: ApiVersionsRequest::VERSIONS.to_string(),
                        theirs: theirs.map_or_else(|| "none".into(), |r| r.to_string()),
                    }))
                }
            }
        }
        Error::check(
            resp.error_code,
            || Location {
                broker: conn.broker().to_owned(),
                api: "ApiVersions",
                ..Default::default()
            },
            None,
        )?;
        conn.set_versions(BrokerVersions::from_response(&resp));
        return Ok(());
    }
    Err(conn.poison(Error::Protocol {
        broker: conn.broker().to_owned(),
        detail: "ApiVersions kept answering UNSUPPORTED_VERSION".into(),
    }))
}

//! SCRAM-SHA-256 and SCRAM-SHA-512 (RFC 5802 and 7677, the server's signature verified),
//! with the `tls` feature: HMAC, SHA-2, PBKDF2 and the nonce come from ring.

use std::num::NonZeroU32;

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use ring::{digest, hmac, pbkdf2, rand::SecureRandom};

use crate::client::security::{SaslMechanism, Secret};

/// The SCRAM hash functions.
#[derive(Clone, Copy)]
struct ScramHash {
    hmac: hmac::Algorithm,
    digest: &'static digest::Algorithm,
    pbkdf2: pbkdf2::Algorithm,
}

/// Kafka's SCRAM iteration bounds (the broker refuses credentials outside 4096..=16384);
/// anything outside what kpipe accepts is a downgrade or a denial of service.
const MIN_ITERATIONS: u32 = 4096;
const MAX_ITERATIONS: u32 = 65536;

/// A SCRAM client exchange (RFC 5802), with channel binding not supported ("n,,").
pub(crate) struct Scram {
    hash: ScramHash,
    mechanism: SaslMechanism,
    password: Secret,
    client_nonce: String,
    client_first_bare: String,
    /// The server signature expected in server-final, once client-final was sent.
    expected_server_signature: Option<Vec<u8>>,
}

impl Scram {
    /// Start an exchange with a fresh random nonce.
    pub(super) fn start(
        mechanism: SaslMechanism,
        username: &str,
        password: Secret,
    ) -> Result<Scram, String> {
        let mut raw = [0u8; 24];
        ring::rand::SystemRandom::new()
            .fill(&mut raw)
            .map_err(|_| "the system random source failed".to_owned())?;
        Scram::new(mechanism, username, password, B64.encode(raw))
    }

    fn new(
        mechanism: SaslMechanism,
        username: &str,
        password: Secret,
        client_nonce: String,
    ) -> Result<Self, String> {
        let hash = match mechanism {
            SaslMechanism::ScramSha256 => ScramHash {
                hmac: hmac::HMAC_SHA256,
                digest: &digest::SHA256,
                pbkdf2: pbkdf2::PBKDF2_HMAC_SHA256,
            },
            SaslMechanism::ScramSha512 => ScramHash {
                hmac: hmac::HMAC_SHA512,
                digest: &digest::SHA512,
                pbkdf2: pbkdf2::PBKDF2_HMAC_SHA512,
            },
            other => return Err(format!("{other} is not a SCRAM mechanism")),
        };
        let user = username.replace('=', "=3D").replace(',', "=2C");
        let client_first_bare = format!("n={user},r={client_nonce}");
        Ok(Scram {
            hash,
            mechanism,
            password,
            client_nonce,
            client_first_bare,
            expected_server_signature: None,
        })
    }

    pub(super) fn client_first(&self) -> Vec<u8> {
        format!("n,,{}", self.client_first_bare).into_bytes()
    }

    /// Answer the server's message: `Some` bytes to send (client-final), or `None` when the
    /// server's signature checked out and the exchange is done.
    pub(super) fn next(&mut self, server: &[u8]) -> Result<Option<Vec<u8>>, String> {
        let text = std::str::from_utf8(server)
            .map_err(|_| format!("{}: the server's message is not UTF-8", self.mechanism))?;
        match self.expected_server_signature.take() {
            None => self.client_final(text).map(Some),
            Some(expected) => self.verify_server_final(text, &expected).map(|()| None),
        }
    }

    /// Read server-first, return client-final.
    fn client_final(&mut self, server_first: &str) -> Result<Vec<u8>, String> {
        let m = self.mechanism;
        let (mut nonce, mut salt, mut iterations) = (None, None, None);
        for attr in server_first.split(',') {
            match attr.split_once('=') {
                Some(("r", v)) => nonce = Some(v),
                Some(("s", v)) => salt = Some(v),
                Some(("i", v)) => iterations = Some(v),
                Some(("m", _)) => {
                    return Err(format!(
                        "{m}: the server asks for an extension kpipe does not know"
                    ))
                }
                Some(("e", v)) => return Err(format!("{m}: the server refused: {v}")),
                _ => {}
            }
        }
        let nonce = nonce.ok_or_else(|| format!("{m}: server-first has no nonce"))?;
        if !nonce.starts_with(&self.client_nonce) || nonce.len() == self.client_nonce.len() {
            return Err(format!(
                "{m}: the server's nonce does not extend ours (not the broker, or a replay)"
            ));
        }
        let salt = B64
            .decode(salt.ok_or_else(|| format!("{m}: server-first has no salt"))?)
            .map_err(|_| format!("{m}: the salt is not base64"))?;
        let iterations: u32 = iterations
            .and_then(|i| i.parse().ok())
            .ok_or_else(|| format!("{m}: server-first has no valid iteration count"))?;
        if !(MIN_ITERATIONS..=MAX_ITERATIONS).contains(&iterations) {
            return Err(format!(
                "{m}: the server asks for {iterations} iterations, outside {MIN_ITERATIONS}..={MAX_ITERATIONS}"
            ));
        }
        let h = self.hash;
        let mut salted = vec![0u8; h.digest.output_len()];
        pbkdf2::derive(
            h.pbkdf2,
            NonZeroU32::new(iterations).expect("checked above"),
            &salt,
            self.password.expose().as_bytes(),
            &mut salted,
        );
        let salted_key = hmac::Key::new(h.hmac, &salted);
        let client_key = hmac::sign(&salted_key, b"Client Key");
        let stored_key = digest::digest(h.digest, client_key.as_ref());
        let without_proof = format!("c=biws,r={nonce}");
        let auth_message = format!("{},{server_first},{without_proof}", self.client_first_bare);
        let client_signature = hmac::sign(
            &hmac::Key::new(h.hmac, stored_key.as_ref()),
            auth_message.as_bytes(),
        );
        let proof: Vec<u8> = client_key
            .as_ref()
            .iter()
            .zip(client_signature.as_ref())
            .map(|(k, s)| k ^ s)
            .collect();
        let server_key = hmac::sign(&salted_key, b"Server Key");
        let server_signature = hmac::sign(
            &hmac::Key::new(h.hmac, server_key.as_ref()),
            auth_message.as_bytes(),
        );
        self.expected_server_signature = Some(server_signature.as_ref().to_vec());
        Ok(format!("{without_proof},p={}", B64.encode(proof)).into_bytes())
    }

    fn verify_server_final(&self, server_final: &str, expected: &[u8]) -> Result<(), String> {
        let m = self.mechanism;
        if let Some(e) = server_final.strip_prefix("e=") {
            return Err(format!("{m}: the server refused: {e}"));
        }
        let v = server_final
            .split(',')
            .find_map(|a| a.strip_prefix("v="))
            .ok_or_else(|| format!("{m}: server-final carries no signature"))?;
        let got = B64
            .decode(v)
            .map_err(|_| format!("{m}: the server signature is not base64"))?;
        // Compare without an early exit.
        let same = got.len() == expected.len()
            && got
                .iter()
                .zip(expected)
                .fold(0u8, |acc, (a, b)| acc | (a ^ b))
                == 0;
        if !same {
            return Err(format!(
                "{m}: the server's signature is wrong: it does not know this user's credentials (not the real broker?)"
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// RFC 7677 §3: SCRAM-SHA-256, user "user", password "pencil".
    #[test]
    fn scram_sha256_matches_the_rfc_7677_vector() {
        let mut s = Scram::new(
            SaslMechanism::ScramSha256,
            "user",
            Secret::new("pencil"),
            "rOprNGfwEbeRWgbNEkqO".into(),
        )
        .unwrap();
        assert_eq!(s.client_first(), b"n,,n=user,r=rOprNGfwEbeRWgbNEkqO");
        let server_first =
            b"r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096";
        let Some(client_final) = s.next(server_first).unwrap() else {
            panic!("expected client-final")
        };
        assert_eq!(
            String::from_utf8(client_final).unwrap(),
            "c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ="
        );
        assert_eq!(
            s.next(b"v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4=")
                .unwrap(),
            None
        );
    }

    #[test]
    fn scram_rejects_a_wrong_server_signature_and_foreign_nonces() {
        let fresh = || {
            Scram::new(
                SaslMechanism::ScramSha256,
                "user",
                Secret::new("pencil"),
                "rOprNGfwEbeRWgbNEkqO".into(),
            )
            .unwrap()
        };
        let mut s = fresh();
        s.next(b"r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096")
            .unwrap();
        let err = s
            .next(b"v=AAAATRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4=")
            .unwrap_err();
        assert!(err.contains("signature is wrong"), "{err}");
        let err = fresh()
            .next(b"r=someoneElsesNonce,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096")
            .unwrap_err();
        assert!(err.contains("nonce"), "{err}");
        let err = fresh()
            .next(b"r=rOprNGfwEbeRWgbNEkqOxyz,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=1")
            .unwrap_err();
        assert!(err.contains("iterations"), "{err}");
        let mut s = fresh();
        s.next(b"r=rOprNGfwEbeRWgbNEkqOx,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096")
            .unwrap();
        let err = s.next(b"e=invalid-proof").unwrap_err();
        assert!(err.contains("invalid-proof"), "{err}");
    }

    #[test]
    fn scram_sha512_round_trips_with_a_server_computed_here() {
        // A server side computed independently with the same primitives: the client's proof
        // must verify and its check of the server signature must pass.
        let mut s = Scram::new(
            SaslMechanism::ScramSha512,
            "a,b=c",
            Secret::new("secret"),
            "clientnonce".into(),
        )
        .unwrap();
        assert_eq!(s.client_first(), b"n,,n=a=2Cb=3Dc,r=clientnonce");
        let salt = b"0123456789abcdef";
        let server_first = format!("r=clientnonceSERVER,s={},i=4096", B64.encode(salt));
        let Some(cf) = s.next(server_first.as_bytes()).unwrap() else {
            panic!()
        };
        let cf = String::from_utf8(cf).unwrap();
        let (without_proof, proof) = cf.rsplit_once(",p=").unwrap();
        let mut salted = [0u8; 64];
        pbkdf2::derive(
            pbkdf2::PBKDF2_HMAC_SHA512,
            NonZeroU32::new(4096).unwrap(),
            salt,
            b"secret",
            &mut salted,
        );
        let key = hmac::Key::new(hmac::HMAC_SHA512, &salted);
        let stored = digest::digest(&digest::SHA512, hmac::sign(&key, b"Client Key").as_ref());
        let auth = format!("n=a=2Cb=3Dc,r=clientnonce,{server_first},{without_proof}");
        let sig = hmac::sign(
            &hmac::Key::new(hmac::HMAC_SHA512, stored.as_ref()),
            auth.as_bytes(),
        );
        let client_key: Vec<u8> = B64
            .decode(proof)
            .unwrap()
            .iter()
            .zip(sig.as_ref())
            .map(|(p, s)| p ^ s)
            .collect();
        assert_eq!(
            digest::digest(&digest::SHA512, &client_key).as_ref(),
            stored.as_ref(),
            "the proof must recover the client key"
        );
        let server_key = hmac::sign(&key, b"Server Key");
        let server_sig = hmac::sign(
            &hmac::Key::new(hmac::HMAC_SHA512, server_key.as_ref()),
            auth.as_bytes(),
        );
        let last = format!("v={}", B64.encode(server_sig.as_ref()));
        assert_eq!(s.next(last.as_bytes()).unwrap(), None);
    }
}

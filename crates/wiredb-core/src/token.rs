//! Signed access tokens, verified natively so that a server needs no Python call per connection.
//!
//! A token is a JWT signed with HMAC-SHA256 (`HS256`): any JWT library can mint one. Its claims:
//! `room` (the room id it opens, exactly), `exp` (expiry, Unix seconds), `ro` (read-only, default
//! false), optionally `sub` (who it was given to) and `nbf` (not valid before). Verification
//! checks the signature in constant time before it parses anything else, accepts no algorithm
//! but HS256 (never `none`), and never panics on the untrusted string.

use std::time::{SystemTime, UNIX_EPOCH};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use hmac::{Hmac, KeyInit, Mac};
use serde_json::{json, Value};
use sha2::Sha256;

type HmacSha256 = Hmac<Sha256>;

/// Shortest secret accepted: shorter ones can be guessed offline from one token.
pub const MIN_SECRET_BYTES: usize = 16;
/// Longest token read; anything longer is refused before it is decoded.
pub const MAX_TOKEN_BYTES: usize = 4096;

/// The JOSE header of every token minted here.
const HEADER: &str = r#"{"alg":"HS256","typ":"JWT"}"#;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    #[error("the token secret must be at least {MIN_SECRET_BYTES} bytes")]
    WeakSecret,
    #[error("malformed token")]
    Malformed,
    #[error("token signed with another algorithm or key")]
    BadSignature,
    #[error("token expired")]
    Expired,
    #[error("token not valid yet")]
    NotYetValid,
    #[error("token for another room")]
    WrongRoom,
}

/// What a token grants.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Claims {
    pub room: String,
    pub read_only: bool,
    /// Unix seconds after which the token is refused.
    pub expires_at: u64,
    /// Who the token was given to, if it says.
    pub subject: Option<String>,
}

/// The server's secret: mints and verifies tokens.
#[derive(Clone)]
pub struct TokenKey {
    secret: Vec<u8>,
}

impl std::fmt::Debug for TokenKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TokenKey(..)")
    }
}

pub fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

impl TokenKey {
    pub fn new(secret: &[u8]) -> Result<Self, TokenError> {
        if secret.len() < MIN_SECRET_BYTES {
            return Err(TokenError::WeakSecret);
        }
        Ok(TokenKey {
            secret: secret.to_vec(),
        })
    }

    fn mac(&self) -> HmacSha256 {
        // HMAC takes a key of any length: this cannot fail.
        <HmacSha256 as KeyInit>::new_from_slice(&self.secret).expect("HMAC accepts any key")
    }

    pub fn mint(&self, claims: &Claims) -> String {
        let mut payload = json!({
            "room": claims.room,
            "exp": claims.expires_at,
            "ro": claims.read_only,
        });
        if let Some(subject) = &claims.subject {
            payload["sub"] = Value::String(subject.clone());
        }
        let signing_input = format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(HEADER),
            URL_SAFE_NO_PAD.encode(payload.to_string())
        );
        let tag = self.mac().chain_update(signing_input.as_bytes()).finalize();
        format!(
            "{signing_input}.{}",
            URL_SAFE_NO_PAD.encode(tag.into_bytes())
        )
    }

    /// The claims of `token` if it is signed with this key, valid at `now` (Unix seconds) and
    /// opens `room`.
    pub fn verify(&self, token: &str, room: &str, now: u64) -> Result<Claims, TokenError> {
        if token.len() > MAX_TOKEN_BYTES {
            return Err(TokenError::Malformed);
        }
        let (signing_input, signature) = token.rsplit_once('.').ok_or(TokenError::Malformed)?;
        let (header, payload) = signing_input.split_once('.').ok_or(TokenError::Malformed)?;
        let signature = URL_SAFE_NO_PAD
            .decode(signature)
            .map_err(|_| TokenError::Malformed)?;
        // The signature first, in constant time: nothing of an unsigned token is looked at.
        self.mac()
            .chain_update(signing_input.as_bytes())
            .verify_slice(&signature)
            .map_err(|_| TokenError::BadSignature)?;
        let header = decode_json(header)?;
        if header.get("alg").and_then(Value::as_str) != Some("HS256") {
            return Err(TokenError::BadSignature);
        }
        let payload = decode_json(payload)?;
        let claims = Claims {
            room: payload
                .get("room")
                .and_then(Value::as_str)
                .ok_or(TokenError::Malformed)?
                .to_owned(),
            read_only: match payload.get("ro") {
                None => false,
                Some(value) => value.as_bool().ok_or(TokenError::Malformed)?,
            },
            expires_at: seconds(payload.get("exp")).ok_or(TokenError::Malformed)?,
            subject: match payload.get("sub") {
                None => None,
                Some(value) => Some(value.as_str().ok_or(TokenError::Malformed)?.to_owned()),
            },
        };
        if let Some(not_before) = payload.get("nbf") {
            if seconds(Some(not_before)).ok_or(TokenError::Malformed)? > now {
                return Err(TokenError::NotYetValid);
            }
        }
        if now >= claims.expires_at {
            return Err(TokenError::Expired);
        }
        if claims.room != room {
            return Err(TokenError::WrongRoom);
        }
        Ok(claims)
    }
}

fn decode_json(part: &str) -> Result<Value, TokenError> {
    let bytes = URL_SAFE_NO_PAD
        .decode(part)
        .map_err(|_| TokenError::Malformed)?;
    serde_json::from_slice(&bytes).map_err(|_| TokenError::Malformed)
}

/// A JWT NumericDate: whole or fractional seconds (fractions are dropped).
fn seconds(value: Option<&Value>) -> Option<u64> {
    let value = value?;
    value
        .as_u64()
        .or_else(|| value.as_f64().filter(|s| *s >= 0.0).map(|s| s as u64))
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &[u8] = b"0123456789abcdef0123456789abcdef";

    fn claims(room: &str, read_only: bool, expires_at: u64) -> Claims {
        Claims {
            room: room.into(),
            read_only,
            expires_at,
            subject: Some("alice".into()),
        }
    }

    #[test]
    fn a_minted_token_verifies_with_its_claims() {
        let key = TokenKey::new(SECRET).unwrap();
        let token = key.mint(&claims("notes", true, 2000));
        assert_eq!(
            key.verify(&token, "notes", 1999),
            Ok(claims("notes", true, 2000))
        );
    }

    #[test]
    fn expired_early_or_misdirected_tokens_are_refused() {
        let key = TokenKey::new(SECRET).unwrap();
        let token = key.mint(&claims("notes", false, 2000));
        assert_eq!(key.verify(&token, "notes", 2000), Err(TokenError::Expired));
        assert_eq!(
            key.verify(&token, "other", 1000),
            Err(TokenError::WrongRoom)
        );
        let early = sign(SECRET, HEADER, r#"{"room":"notes","exp":2000,"nbf":1500}"#);
        assert_eq!(
            key.verify(&early, "notes", 1000),
            Err(TokenError::NotYetValid)
        );
        assert!(key.verify(&early, "notes", 1500).is_ok());
    }

    fn sign(secret: &[u8], header: &str, payload: &str) -> String {
        let input = format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(header),
            URL_SAFE_NO_PAD.encode(payload)
        );
        let mut mac = <HmacSha256 as KeyInit>::new_from_slice(secret).unwrap();
        mac.update(input.as_bytes());
        format!(
            "{input}.{}",
            URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes())
        )
    }

    #[test]
    fn tampered_tokens_are_refused() {
        let key = TokenKey::new(SECRET).unwrap();
        let token = key.mint(&claims("notes", true, 2000));
        let (input, signature) = token.rsplit_once('.').unwrap();
        let (header, _) = input.split_once('.').unwrap();
        // Read-write instead of read-only, with the original signature.
        let forged_payload = URL_SAFE_NO_PAD.encode(r#"{"room":"notes","exp":2000,"ro":false}"#);
        let forged = format!("{header}.{forged_payload}.{signature}");
        assert_eq!(
            key.verify(&forged, "notes", 1000),
            Err(TokenError::BadSignature)
        );
        // Another key, a flipped signature byte, alg none, garbage.
        let other = TokenKey::new(b"another secret of 32 bytes......").unwrap();
        assert_eq!(
            other.verify(&token, "notes", 1000),
            Err(TokenError::BadSignature)
        );
        let mut flipped = token.clone().into_bytes();
        let last = flipped.len() - 2;
        flipped[last] = if flipped[last] == b'A' { b'B' } else { b'A' };
        assert!(key
            .verify(std::str::from_utf8(&flipped).unwrap(), "notes", 1000)
            .is_err());
        let none = format!(
            "{}.{}.",
            URL_SAFE_NO_PAD.encode(r#"{"alg":"none"}"#),
            URL_SAFE_NO_PAD.encode(r#"{"room":"notes","exp":2000}"#)
        );
        assert_eq!(
            key.verify(&none, "notes", 1000),
            Err(TokenError::BadSignature)
        );
        // Signed with the right key but claiming another algorithm: still refused.
        let hs512 = sign(
            SECRET,
            r#"{"alg":"HS512"}"#,
            r#"{"room":"notes","exp":2000}"#,
        );
        assert_eq!(
            key.verify(&hs512, "notes", 1000),
            Err(TokenError::BadSignature)
        );
        for garbage in [
            "",
            ".",
            "..",
            "a.b.c",
            "é.é.é",
            &"x".repeat(MAX_TOKEN_BYTES + 1),
        ] {
            assert!(key.verify(garbage, "notes", 1000).is_err(), "{garbage:?}");
        }
        // Signed but with claims of the wrong types.
        let bad_types = sign(SECRET, HEADER, r#"{"room":1,"exp":"soon"}"#);
        assert_eq!(
            key.verify(&bad_types, "notes", 1000),
            Err(TokenError::Malformed)
        );
    }

    #[test]
    fn short_secrets_are_refused() {
        assert_eq!(TokenKey::new(b"short").unwrap_err(), TokenError::WeakSecret);
    }
}

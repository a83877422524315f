//! Signing keys and compact JWS. Keys are generated and parsed once with aws-lc-rs and kept
//! parsed in memory: `jsonwebtoken` re-parses the private key on every signature, which would
//! cost more than the RSA signature itself on the token endpoint. Verification goes through
//! `jsonwebtoken` (see `verify.rs`) and through [`KeyRing::verify`] here.

use crate::Error;
use aws_lc_rs::encoding::AsDer;
use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::rsa::KeySize;
use aws_lc_rs::signature::{
    self, EcdsaKeyPair, Ed25519KeyPair, KeyPair, RsaKeyPair, UnparsedPublicKey,
};
use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use serde::Serialize;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use std::sync::Arc;

/// The signature algorithms a client may choose for its tokens.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Alg {
    RS256,
    ES256,
    EdDSA,
}

impl Alg {
    pub const ALL: [Alg; 3] = [Alg::RS256, Alg::ES256, Alg::EdDSA];

    pub fn as_str(self) -> &'static str {
        match self {
            Alg::RS256 => "RS256",
            Alg::ES256 => "ES256",
            Alg::EdDSA => "EdDSA",
        }
    }

    pub fn parse(s: &str) -> Option<Alg> {
        match s {
            "RS256" => Some(Alg::RS256),
            "ES256" => Some(Alg::ES256),
            "EdDSA" => Some(Alg::EdDSA),
            _ => None,
        }
    }
}

enum Pair {
    Rsa(RsaKeyPair),
    Ec(EcdsaKeyPair),
    Ed(Ed25519KeyPair),
}

/// One parsed private signing key with its id.
pub struct SigningKey {
    pub kid: String,
    pub alg: Alg,
    pair: Pair,
    /// The base64url JWS header `{alg, typ: JWT, kid}`, the same for every token: encoded once.
    header_b64: String,
    /// The JWK of the public half, computed once.
    jwk: Value,
    /// Base64 SPKI DER of the public half (Keycloak's `public_key`).
    spki_b64: String,
}

impl std::fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SigningKey({} {})", self.alg.as_str(), self.kid)
    }
}

fn b64u(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

fn crypto_err(what: &str) -> Error {
    Error::Crypto(what.to_string())
}

impl SigningKey {
    /// Generates a fresh key; returns it with its PKCS#8 DER for storage.
    pub fn generate(alg: Alg) -> Result<(SigningKey, Vec<u8>), Error> {
        let der = match alg {
            Alg::RS256 => {
                let kp =
                    RsaKeyPair::generate(KeySize::Rsa2048).map_err(|_| crypto_err("rsa keygen"))?;
                let der = kp.as_der().map_err(|_| crypto_err("rsa export"))?;
                der.as_ref().to_vec()
            }
            Alg::ES256 => {
                let kp = EcdsaKeyPair::generate(&signature::ECDSA_P256_SHA256_FIXED_SIGNING)
                    .map_err(|_| crypto_err("ec keygen"))?;
                kp.to_pkcs8v1()
                    .map_err(|_| crypto_err("ec export"))?
                    .as_ref()
                    .to_vec()
            }
            Alg::EdDSA => {
                let kp = Ed25519KeyPair::generate().map_err(|_| crypto_err("ed25519 keygen"))?;
                kp.to_pkcs8v1()
                    .map_err(|_| crypto_err("ed25519 export"))?
                    .as_ref()
                    .to_vec()
            }
        };
        let kid = kid_of(alg, &der);
        let key = SigningKey::from_pkcs8(kid, alg, &der)?;
        Ok((key, der))
    }

    pub fn from_pkcs8(kid: String, alg: Alg, der: &[u8]) -> Result<SigningKey, Error> {
        let (pair, jwk, spki) = match alg {
            Alg::RS256 => {
                let kp = RsaKeyPair::from_pkcs8(der).map_err(|_| crypto_err("rsa key"))?;
                let public = kp.public_key();
                let n = public.modulus().big_endian_without_leading_zero().to_vec();
                let e = public.exponent().big_endian_without_leading_zero().to_vec();
                let spki = public
                    .as_der()
                    .map_err(|_| crypto_err("rsa spki"))?
                    .as_ref()
                    .to_vec();
                let jwk = json!({
                    "kid": kid, "kty": "RSA", "alg": "RS256", "use": "sig",
                    "n": b64u(&n), "e": b64u(&e),
                });
                (Pair::Rsa(kp), jwk, spki)
            }
            Alg::ES256 => {
                let kp = EcdsaKeyPair::from_pkcs8(&signature::ECDSA_P256_SHA256_FIXED_SIGNING, der)
                    .map_err(|_| crypto_err("ec key"))?;
                let point = kp.public_key().as_ref();
                if point.len() != 65 || point[0] != 4 {
                    return Err(crypto_err("ec point"));
                }
                let spki = kp
                    .public_key()
                    .as_der()
                    .map_err(|_| crypto_err("ec spki"))?
                    .as_ref()
                    .to_vec();
                let jwk = json!({
                    "kid": kid, "kty": "EC", "alg": "ES256", "use": "sig", "crv": "P-256",
                    "x": b64u(&point[1..33]), "y": b64u(&point[33..65]),
                });
                (Pair::Ec(kp), jwk, spki)
            }
            Alg::EdDSA => {
                let kp = Ed25519KeyPair::from_pkcs8(der).map_err(|_| crypto_err("ed25519 key"))?;
                let x = kp.public_key().as_ref().to_vec();
                let spki = kp
                    .public_key()
                    .as_der()
                    .map_err(|_| crypto_err("ed spki"))?
                    .as_ref()
                    .to_vec();
                let jwk = json!({
                    "kid": kid, "kty": "OKP", "alg": "EdDSA", "use": "sig", "crv": "Ed25519",
                    "x": b64u(&x),
                });
                (Pair::Ed(kp), jwk, spki)
            }
        };
        Ok(SigningKey {
            header_b64: header_b64(alg.as_str(), &kid),
            kid,
            alg,
            pair,
            jwk,
            spki_b64: STANDARD.encode(spki),
        })
    }

    pub fn jwk(&self) -> &Value {
        &self.jwk
    }

    /// Base64 SPKI DER, without PEM armor, as Keycloak's `GET /realms/{realm}` shows it.
    pub fn public_key_b64(&self) -> &str {
        &self.spki_b64
    }

    fn sign_raw(&self, msg: &[u8]) -> Result<Vec<u8>, Error> {
        match &self.pair {
            Pair::Rsa(kp) => {
                let mut sig = vec![0; kp.public_modulus_len()];
                kp.sign(
                    &signature::RSA_PKCS1_SHA256,
                    &SystemRandom::new(),
                    msg,
                    &mut sig,
                )
                .map_err(|_| crypto_err("rsa sign"))?;
                Ok(sig)
            }
            Pair::Ec(kp) => Ok(kp
                .sign(&SystemRandom::new(), msg)
                .map_err(|_| crypto_err("ec sign"))?
                .as_ref()
                .to_vec()),
            Pair::Ed(kp) => Ok(kp.sign(msg).as_ref().to_vec()),
        }
    }

    /// A compact JWS of `claims` with header `{alg, typ: JWT, kid}`.
    pub fn sign<T: Serialize>(&self, claims: &T) -> Result<String, Error> {
        sign_compact(&self.header_b64, claims, |m| self.sign_raw(m))
    }

    fn verify_raw(&self, msg: &[u8], sig: &[u8]) -> bool {
        match &self.pair {
            Pair::Rsa(kp) => {
                let Ok(spki) = kp.public_key().as_der() else {
                    return false;
                };
                // The SPKI form parses in aws-lc as an RSA public key.
                UnparsedPublicKey::new(&signature::RSA_PKCS1_2048_8192_SHA256, spki.as_ref())
                    .verify(msg, sig)
                    .is_ok()
            }
            Pair::Ec(kp) => UnparsedPublicKey::new(
                &signature::ECDSA_P256_SHA256_FIXED,
                kp.public_key().as_ref(),
            )
            .verify(msg, sig)
            .is_ok(),
            Pair::Ed(kp) => UnparsedPublicKey::new(&signature::ED25519, kp.public_key().as_ref())
                .verify(msg, sig)
                .is_ok(),
        }
    }
}

fn kid_of(alg: Alg, der: &[u8]) -> String {
    let d = Sha256::digest(der);
    format!("{}-{}", alg.as_str().to_ascii_lowercase(), b64u(&d[..15]))
}

/// The base64url of a JWS header `{alg, typ: JWT, kid}`.
fn header_b64(alg: &str, kid: &str) -> String {
    b64u(
        json!({"alg": alg, "typ": "JWT", "kid": kid})
            .to_string()
            .as_bytes(),
    )
}

fn sign_compact<T: Serialize>(
    header_b64: &str,
    claims: &T,
    sign: impl FnOnce(&[u8]) -> Result<Vec<u8>, Error>,
) -> Result<String, Error> {
    // Access tokens' claims run to about a kilobyte: sized once rather than grown by doubling.
    let mut c = Vec::with_capacity(1024);
    serde_json::to_writer(&mut c, claims).map_err(|_| crypto_err("claims"))?;
    // Room for the header, the claims and an RSA-4096 signature, in base64.
    let mut out = String::with_capacity(header_b64.len() + c.len() * 4 / 3 + 700);
    out.push_str(header_b64);
    out.push('.');
    URL_SAFE_NO_PAD.encode_string(&c, &mut out);
    let sig = sign(out.as_bytes())?;
    out.push('.');
    URL_SAFE_NO_PAD.encode_string(&sig, &mut out);
    Ok(out)
}

/// An HS256 key for the realm's refresh tokens, which only this service reads.
#[derive(Clone)]
pub struct HmacKey {
    pub kid: String,
    header_b64: String,
    key: aws_lc_rs::hmac::Key,
}

impl HmacKey {
    pub fn new(kid: String, secret: &[u8]) -> HmacKey {
        HmacKey {
            header_b64: header_b64("HS256", &kid),
            kid,
            key: aws_lc_rs::hmac::Key::new(aws_lc_rs::hmac::HMAC_SHA256, secret),
        }
    }

    pub fn sign<T: Serialize>(&self, claims: &T) -> Result<String, Error> {
        sign_compact(&self.header_b64, claims, |m| {
            Ok(aws_lc_rs::hmac::sign(&self.key, m).as_ref().to_vec())
        })
    }

    /// The claims of a token this key signed, or None. Expiry is the caller's to check.
    pub fn verify(&self, token: &str) -> Option<Value> {
        let (msg, sig, header, claims) = split(token)?;
        if header.get("alg")?.as_str()? != "HS256" {
            return None;
        }
        aws_lc_rs::hmac::verify(&self.key, msg.as_bytes(), &sig).ok()?;
        Some(claims)
    }
}

fn split(token: &str) -> Option<(&str, Vec<u8>, Value, Value)> {
    let (msg, sig) = token.rsplit_once('.')?;
    let (h, c) = msg.split_once('.')?;
    let header: Value = serde_json::from_slice(&URL_SAFE_NO_PAD.decode(h).ok()?).ok()?;
    let claims: Value = serde_json::from_slice(&URL_SAFE_NO_PAD.decode(c).ok()?).ok()?;
    if !claims.is_object() {
        return None;
    }
    let sig = URL_SAFE_NO_PAD.decode(sig).ok()?;
    Some((msg, sig, header, claims))
}

/// The unverified header of a compact JWS (for its `kid` and `alg`).
pub fn peek_header(token: &str) -> Option<Value> {
    let h = token.split('.').next()?;
    serde_json::from_slice(&URL_SAFE_NO_PAD.decode(h).ok()?).ok()
}

/// A realm's keys: the one signing per algorithm, and the retired ones that still verify.
#[derive(Default, Clone)]
pub struct KeyRing {
    pub active: Vec<Arc<SigningKey>>,
    pub passive: Vec<Arc<SigningKey>>,
}

impl KeyRing {
    pub fn signer(&self, alg: Alg) -> Option<&Arc<SigningKey>> {
        self.active.iter().find(|k| k.alg == alg)
    }

    fn by_kid(&self, kid: &str) -> Option<&Arc<SigningKey>> {
        self.active
            .iter()
            .chain(self.passive.iter())
            .find(|k| k.kid == kid)
    }

    /// Every key still published, active first.
    pub fn jwks(&self) -> Value {
        let keys: Vec<&Value> = self
            .active
            .iter()
            .chain(self.passive.iter())
            .map(|k| k.jwk())
            .collect();
        json!({ "keys": keys })
    }

    /// The claims of a token signed by one of these keys, with its header's `alg` matching the
    /// key's. Expiry and the other claims are the caller's to check.
    pub fn verify(&self, token: &str) -> Option<Value> {
        let (msg, sig, header, claims) = split(token)?;
        let kid = header.get("kid")?.as_str()?;
        let key = self.by_kid(kid)?;
        if header.get("alg")?.as_str()? != key.alg.as_str() {
            return None;
        }
        key.verify_raw(msg.as_bytes(), &sig).then_some(claims)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_alg_signs_and_verifies_and_survives_a_round_trip_through_pkcs8() {
        for alg in Alg::ALL {
            let (key, der) = SigningKey::generate(alg).unwrap();
            let again = SigningKey::from_pkcs8(key.kid.clone(), alg, &der).unwrap();
            let token = key.sign(&json!({"sub": "x"})).unwrap();
            let ring = KeyRing {
                active: vec![Arc::new(again)],
                passive: vec![],
            };
            assert_eq!(ring.verify(&token).unwrap()["sub"], "x", "{alg:?}");
            let mut bad = token.clone();
            bad.replace_range(bad.len() - 3.., "AAA");
            assert!(ring.verify(&bad).is_none());
            assert_eq!(peek_header(&token).unwrap()["kid"], key.kid);
        }
    }

    #[test]
    fn an_unknown_kid_does_not_verify() {
        let (a, _) = SigningKey::generate(Alg::ES256).unwrap();
        let (b, _) = SigningKey::generate(Alg::ES256).unwrap();
        let ring = KeyRing {
            active: vec![Arc::new(b)],
            passive: vec![],
        };
        assert!(ring.verify(&a.sign(&json!({})).unwrap()).is_none());
    }

    #[test]
    fn hmac_tokens_verify_only_with_their_key() {
        let k = HmacKey::new("r".into(), b"0123456789abcdef0123456789abcdef");
        let t = k.sign(&json!({"typ": "Refresh"})).unwrap();
        assert_eq!(k.verify(&t).unwrap()["typ"], "Refresh");
        let other = HmacKey::new("r".into(), b"another secret of thirty-two byt");
        assert!(other.verify(&t).is_none());
    }
}

//! Integration tests: the real server on 127.0.0.1:0, spoken to over HTTP by reqwest, by the
//! real python-keycloak, by the `openidconnect` crate and by the crate's own BearerVerifier.

mod admin;
mod oidc;
mod openid;
mod python;
mod storage;
mod support;
mod verifier;

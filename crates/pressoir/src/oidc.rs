//! Press accepts the identity service's access tokens (or a real Keycloak's): this adapts
//! `pressoir_identity::verify::BearerVerifier` (JWKS over HTTP, cached by `kid`; signature,
//! `exp`, `iss`, `aud`) to Press's `auth::BearerVerifier`, which names a Press user.
//!
//! Mapping (pure, in [`press_user`]):
//! - a service-account token of the system client (`press`) is the Press system client,
//!   `Administrator`; so is the service account of any client holding the admin realm role;
//!   other service accounts are refused (they are no Press user);
//! - a user token whose `preferred_username` is `Administrator` (any case, as Keycloak lowercases
//!   usernames) and who holds the admin realm role is `Administrator`;
//! - any other user is their `email`, else their `preferred_username` (Press user names are
//!   emails). Press then loads that user, so an unknown user is still a 401, and the user's
//!   permissions are Press's own (team membership, `is_admin`): Press's trait takes a user
//!   name only, so realm roles beyond the admin role cannot narrow or widen them.
//!
//! It must not log tokens; a refusal is logged at debug level with its reason only.

use pressoir_identity::verify::{BearerVerifier, VerifiedClaims, VerifierConfig};
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

/// The Press user acting as the system client.
pub const SYSTEM_USER: &str = "Administrator";

/// Where Press gets its tokens' keys and what it requires of them.
#[derive(Debug, Clone)]
pub struct OidcSettings {
    pub issuer: String,
    pub audience: String,
    /// Default `<issuer>/protocol/openid-connect/certs`.
    pub jwks_url: Option<String>,
    /// The client whose service account is the Press system client.
    pub system_client: String,
    /// The realm role that maps to Press's administrator.
    pub admin_role: String,
    /// Accept `azp` = audience when `aud` lacks it (a stock Keycloak client's tokens).
    pub accept_azp: bool,
}

impl OidcSettings {
    pub fn new(issuer: &str, audience: &str) -> Self {
        OidcSettings {
            issuer: issuer.to_string(),
            audience: audience.to_string(),
            jwks_url: None,
            system_client: "press".to_string(),
            admin_role: pressoir_identity::admin::ADMIN_ROLE.to_string(),
            accept_azp: false,
        }
    }

    /// Press's `Config.bearer` for these settings.
    pub fn bearer(&self) -> pressoir_press::Bearer {
        let mut cfg = VerifierConfig::keycloak(&self.issuer, &self.audience);
        if let Some(u) = &self.jwks_url {
            cfg.jwks_url = u.clone();
        }
        cfg.accept_azp = self.accept_azp;
        pressoir_press::Bearer(Arc::new(PressBearer {
            inner: BearerVerifier::new(cfg),
            system_client: self.system_client.clone(),
            admin_role: self.admin_role.clone(),
        }))
    }
}

struct PressBearer {
    inner: BearerVerifier,
    system_client: String,
    admin_role: String,
}

/// The Press user a verified token acts as, or `None` when it maps to none.
pub fn press_user(c: &VerifiedClaims, system_client: &str, admin_role: &str) -> Option<String> {
    let admin = c.has_role(admin_role);
    if c.is_service_account {
        let client = c.client_id.as_deref().unwrap_or_default();
        return (client == system_client || admin).then(|| SYSTEM_USER.to_string());
    }
    let username = c.preferred_username.as_deref().filter(|u| !u.is_empty());
    if admin && username.is_some_and(|u| u.eq_ignore_ascii_case(SYSTEM_USER)) {
        return Some(SYSTEM_USER.to_string());
    }
    c.email
        .as_deref()
        .filter(|e| !e.is_empty())
        .or(username)
        .filter(|u| !u.eq_ignore_ascii_case(SYSTEM_USER))
        .map(str::to_string)
}

impl pressoir_press::auth::BearerVerifier for PressBearer {
    fn verify(&self, token: &str) -> Pin<Box<dyn Future<Output = Option<String>> + Send + '_>> {
        let token = token.trim().to_string();
        Box::pin(async move {
            match self.inner.verify(&token).await {
                Ok(c) => {
                    let u = press_user(&c, &self.system_client, &self.admin_role);
                    if u.is_none() {
                        tracing::debug!(sub = %c.sub, "bearer token maps to no Press user");
                    }
                    u
                }
                Err(e) => {
                    tracing::debug!(reason = %e, "bearer token refused");
                    None
                }
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn claims(
        user: Option<&str>,
        email: Option<&str>,
        client: Option<&str>,
        roles: &[&str],
    ) -> VerifiedClaims {
        VerifiedClaims {
            sub: "s".into(),
            preferred_username: user.map(str::to_string),
            email: email.map(str::to_string),
            realm_roles: roles.iter().map(|r| r.to_string()).collect(),
            azp: client.map(str::to_string),
            client_id: client.map(str::to_string),
            is_service_account: client.is_some(),
            scope: String::new(),
            exp: 0,
            raw: serde_json::Value::Null,
        }
    }

    #[test]
    fn the_press_service_account_is_the_system_client() {
        let c = claims(Some("service-account-press"), None, Some("press"), &[]);
        assert_eq!(
            press_user(&c, "press", "admin").as_deref(),
            Some("Administrator")
        );
        let other = claims(Some("service-account-ci"), None, Some("ci"), &[]);
        assert_eq!(press_user(&other, "press", "admin"), None);
        let other_admin = claims(Some("service-account-ci"), None, Some("ci"), &["admin"]);
        assert_eq!(
            press_user(&other_admin, "press", "admin").as_deref(),
            Some("Administrator")
        );
    }

    #[test]
    fn users_map_by_email_then_username() {
        let c = claims(Some("jane"), Some("jane@example.com"), None, &[]);
        assert_eq!(
            press_user(&c, "press", "admin").as_deref(),
            Some("jane@example.com")
        );
        let c = claims(Some("bob@example.com"), None, None, &[]);
        assert_eq!(
            press_user(&c, "press", "admin").as_deref(),
            Some("bob@example.com")
        );
        assert_eq!(
            press_user(&claims(None, None, None, &[]), "press", "admin"),
            None
        );
    }

    #[test]
    fn administrator_needs_the_admin_role() {
        let c = claims(Some("administrator"), None, None, &["admin"]);
        assert_eq!(
            press_user(&c, "press", "admin").as_deref(),
            Some("Administrator")
        );
        let c = claims(Some("Administrator"), None, None, &[]);
        assert_eq!(press_user(&c, "press", "admin"), None);
    }
}

//! Press accepts the identity service's access tokens (or a real Keycloak's): this adapts
//! `pressoir_identity::verify::BearerVerifier` (JWKS over HTTP, cached by `kid`; signature,
//! `exp`, `iss`, `aud`) to Press's `auth::BearerVerifier`, which names a Press user and what
//! the token may do there.
//!
//! Realm roles → Press access (pure, in [`grant`]); the widest role a token holds wins:
//! - the admin role (`admin`): Press Administrator rights (every team, servers);
//! - the user role (`press-user`): the token's Press user with that user's own rights (team
//!   membership, `is_admin`);
//! - the read role (`press-read`): the same user, read methods only (`site.list`, `site.get`,
//!   ...); any other method is a 403 PermissionError;
//! - no such role: 403 PermissionError. A token is never full access by default.
//!
//! Who the token acts as:
//! - a service account of the system client (`press`) is `Administrator`, whatever its roles;
//!   another client's service account is `Administrator` with its admin or read role, and
//!   nothing with the user role alone (a service account is no Press user);
//! - a user token whose `preferred_username` is `Administrator` (any case, as Keycloak
//!   lowercases usernames) needs the admin role to be `Administrator`;
//! - any other user is their `email`, else their `preferred_username` (Press user names are
//!   emails). Press then loads that user, so an unknown user is a 401.
//!
//! It must not log tokens; a refusal is logged at debug level with its reason only.

use pressoir_identity::verify::{BearerVerifier, VerifiedClaims, VerifierConfig};
use pressoir_press::auth::{Access, BearerGrant, BearerRefusal};
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

/// The Press user acting as the system client.
pub const SYSTEM_USER: &str = "Administrator";

/// The realm roles Press reads.
#[derive(Debug, Clone)]
pub struct RoleMap {
    /// Press Administrator rights.
    pub admin: String,
    /// The token's own Press user, with that user's rights.
    pub user: String,
    /// The token's own Press user, read methods only.
    pub read: String,
}

impl Default for RoleMap {
    fn default() -> Self {
        RoleMap {
            admin: pressoir_identity::admin::ADMIN_ROLE.to_string(),
            user: pressoir_identity::admin::PRESS_USER_ROLE.to_string(),
            read: pressoir_identity::admin::PRESS_READ_ROLE.to_string(),
        }
    }
}

/// Where Press gets its tokens' keys and what it requires of them.
#[derive(Debug, Clone)]
pub struct OidcSettings {
    pub issuer: String,
    pub audience: String,
    /// Default `<issuer>/protocol/openid-connect/certs`.
    pub jwks_url: Option<String>,
    /// The client whose service account is the Press system client.
    pub system_client: String,
    /// The realm roles that map to Press access.
    pub roles: RoleMap,
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
            roles: RoleMap::default(),
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
            roles: self.roles.clone(),
        }))
    }
}

struct PressBearer {
    inner: BearerVerifier,
    system_client: String,
    roles: RoleMap,
}

/// What a verified token may do in Press, or `None` when its roles grant nothing.
pub fn grant(c: &VerifiedClaims, system_client: &str, roles: &RoleMap) -> Option<BearerGrant> {
    let as_admin = |access| {
        Some(BearerGrant {
            user: SYSTEM_USER.to_string(),
            access,
        })
    };
    let access = if c.has_role(&roles.admin) {
        Some(Access::Admin)
    } else if c.has_role(&roles.user) {
        Some(Access::Full)
    } else if c.has_role(&roles.read) {
        Some(Access::ReadOnly)
    } else {
        None
    };
    if c.is_service_account {
        let client = c.client_id.as_deref().unwrap_or_default();
        return match access {
            _ if client == system_client => as_admin(Access::Admin),
            Some(a @ (Access::Admin | Access::ReadOnly)) => as_admin(a),
            _ => None,
        };
    }
    let access = access?;
    let username = c.preferred_username.as_deref().filter(|u| !u.is_empty());
    if access == Access::Admin && username.is_some_and(|u| u.eq_ignore_ascii_case(SYSTEM_USER)) {
        return as_admin(Access::Admin);
    }
    let user = c
        .email
        .as_deref()
        .filter(|e| !e.is_empty())
        .or(username)
        .filter(|u| !u.eq_ignore_ascii_case(SYSTEM_USER))?;
    Some(BearerGrant {
        user: user.to_string(),
        access,
    })
}

impl pressoir_press::auth::BearerVerifier for PressBearer {
    fn verify(
        &self,
        token: &str,
    ) -> Pin<Box<dyn Future<Output = Result<BearerGrant, BearerRefusal>> + Send + '_>> {
        let token = token.trim().to_string();
        Box::pin(async move {
            match self.inner.verify(&token).await {
                Ok(c) => grant(&c, &self.system_client, &self.roles).ok_or_else(|| {
                    tracing::debug!(sub = %c.sub, "bearer token's roles grant no Press access");
                    BearerRefusal::NoAccess
                }),
                Err(e) => {
                    tracing::debug!(reason = %e, "bearer token refused");
                    Err(BearerRefusal::Invalid)
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

    fn roles() -> RoleMap {
        RoleMap::default()
    }

    fn user_of(c: &VerifiedClaims) -> Option<(String, Access)> {
        grant(c, "press", &roles()).map(|g| (g.user, g.access))
    }

    fn admin(access: Access) -> Option<(String, Access)> {
        Some(("Administrator".to_string(), access))
    }

    #[test]
    fn the_press_service_account_is_the_system_client() {
        let c = claims(Some("service-account-press"), None, Some("press"), &[]);
        assert_eq!(user_of(&c), admin(Access::Admin));
        let other = claims(Some("service-account-ci"), None, Some("ci"), &[]);
        assert_eq!(user_of(&other), None);
        let other = claims(
            Some("service-account-ci"),
            None,
            Some("ci"),
            &["press-user"],
        );
        assert_eq!(user_of(&other), None, "a service account is no Press user");
        let other = claims(Some("service-account-ci"), None, Some("ci"), &["admin"]);
        assert_eq!(user_of(&other), admin(Access::Admin));
        let monitor = claims(
            Some("service-account-mon"),
            None,
            Some("mon"),
            &["press-read"],
        );
        assert_eq!(user_of(&monitor), admin(Access::ReadOnly));
    }

    #[test]
    fn users_map_by_email_then_username_with_their_widest_role() {
        let c = claims(
            Some("jane"),
            Some("jane@example.com"),
            None,
            &["press-user"],
        );
        assert_eq!(
            user_of(&c),
            Some(("jane@example.com".to_string(), Access::Full))
        );
        let c = claims(Some("bob@example.com"), None, None, &["press-read"]);
        assert_eq!(
            user_of(&c),
            Some(("bob@example.com".to_string(), Access::ReadOnly))
        );
        let c = claims(
            Some("bob@example.com"),
            None,
            None,
            &["press-read", "admin"],
        );
        assert_eq!(
            user_of(&c),
            Some(("bob@example.com".to_string(), Access::Admin))
        );
        assert_eq!(user_of(&claims(None, None, None, &["press-user"])), None);
    }

    #[test]
    fn roles_that_grant_nothing_are_no_access() {
        let c = claims(
            Some("jane"),
            Some("jane@example.com"),
            None,
            &["default-roles-frappe-cloud", "offline_access"],
        );
        assert_eq!(user_of(&c), None);
        let custom = RoleMap {
            admin: "ops".into(),
            user: "cloud-user".into(),
            read: "cloud-viewer".into(),
        };
        let c = claims(Some("jane"), None, None, &["press-user"]);
        assert!(grant(&c, "press", &custom).is_none());
        let c = claims(Some("jane"), None, None, &["cloud-viewer"]);
        assert_eq!(
            grant(&c, "press", &custom).unwrap().access,
            Access::ReadOnly
        );
    }

    #[test]
    fn administrator_needs_the_admin_role() {
        let c = claims(Some("administrator"), None, None, &["admin"]);
        assert_eq!(user_of(&c), admin(Access::Admin));
        let c = claims(Some("Administrator"), None, None, &["press-user"]);
        assert_eq!(user_of(&c), None);
    }
}

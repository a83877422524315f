//! The real python-keycloak (`KeycloakOpenID`) against the server.

use crate::support::spawn;

const SCRIPT: &str = r#"
import os, sys
from keycloak import KeycloakOpenID
from keycloak.exceptions import KeycloakAuthenticationError, KeycloakPostError

base = os.environ["KC_BASE"]
kc = KeycloakOpenID(server_url=base + "/", realm_name="frappe-cloud", client_id="press",
                    client_secret_key=os.environ["KC_SECRET"])

wk = kc.well_known()
assert wk["issuer"] == base + "/realms/frappe-cloud", wk["issuer"]

# client_credentials (python-keycloak sends empty username/password/code/redirect_uri)
cc = kc.token(grant_type="client_credentials")
assert cc["token_type"] == "Bearer" and cc["expires_in"] == 300, cc
info = kc.userinfo(cc["access_token"])
assert info["preferred_username"] == "service-account-press", info

# password grant
tok = kc.token("Administrator", os.environ["KC_ADMIN_PASSWORD"])
for k in ("access_token", "refresh_token", "id_token", "session_state", "not-before-policy", "refresh_expires_in"):
    assert k in tok, k
info = kc.userinfo(tok["access_token"])
assert info["preferred_username"] == "administrator", info

intro = kc.introspect(tok["access_token"])
assert intro["active"] is True and intro["client_id"] == "press" and intro["username"] == "administrator", intro

# public_key + decode_token (validates the signature with the realm's RSA key)
pk = kc.public_key()
assert pk.startswith("MII"), pk
decoded = kc.decode_token(tok["access_token"])
assert decoded["preferred_username"] == "administrator" and "admin" in decoded["realm_access"]["roles"], decoded
assert decoded["iss"] == base + "/realms/frappe-cloud"

certs = kc.certs()
assert any(k["alg"] == "RS256" for k in certs["keys"]), certs

# refresh with rotation
new = kc.refresh_token(tok["refresh_token"])
assert new["refresh_token"] != tok["refresh_token"]
try:
    kc.refresh_token(tok["refresh_token"])
    raise SystemExit("a spent refresh token was accepted")
except KeycloakPostError as e:
    assert e.response_code == 400 and b"Stale token" in e.response_body, e.response_body

# logout (204 only), then the session's tokens are dead
tok = kc.token("Administrator", os.environ["KC_ADMIN_PASSWORD"])
assert kc.logout(tok["refresh_token"]) == {}
assert kc.introspect(tok["access_token"]) == {"active": False}
try:
    kc.userinfo(tok["access_token"])
    raise SystemExit("userinfo accepted a logged-out token")
except KeycloakAuthenticationError as e:
    assert e.response_code == 401

# bad credentials surface as python-keycloak's authentication error
try:
    kc.token("Administrator", "wrong")
    raise SystemExit("a wrong password was accepted")
except KeycloakAuthenticationError as e:
    assert b"Invalid user credentials" in e.response_body, e.response_body

bad = KeycloakOpenID(server_url=base + "/auth/", realm_name="frappe-cloud", client_id="press",
                     client_secret_key="wrong")
try:
    bad.token(grant_type="client_credentials")
    raise SystemExit("a wrong client secret was accepted")
except KeycloakAuthenticationError as e:
    assert b"invalid_client" in e.response_body, e.response_body
print("PYTHON-KEYCLOAK-OK")
"#;

const ADMIN_SCRIPT: &str = r#"
import os
from keycloak import KeycloakAdmin, KeycloakOpenID

base = os.environ["KC_BASE"] + "/"
adm = KeycloakAdmin(server_url=base, realm_name="frappe-cloud", user_realm_name="frappe-cloud",
                    client_id="press", client_secret_key=os.environ["KC_SECRET"])
adm.create_realm({"realm": "acme", "enabled": True})
adm.change_current_realm("acme")
adm.create_realm_role({"name": "ops", "description": "operators"})
uid = adm.create_user({"username": "grace", "email": "grace@example.com", "enabled": True,
                       "credentials": [{"type": "password", "value": "grace-pw", "temporary": False}]})
assert adm.get_user(uid)["username"] == "grace"
adm.assign_realm_roles(uid, [adm.get_realm_role("ops")])
adm.create_client({"clientId": "portal", "secret": "portal-secret-0123456789abcdef", "directAccessGrantsEnabled": True})
assert any(c["clientId"] == "portal" for c in adm.get_clients())

kc = KeycloakOpenID(server_url=base, realm_name="acme", client_id="portal",
                    client_secret_key="portal-secret-0123456789abcdef")
tok = kc.token("grace", "grace-pw")
claims = kc.decode_token(tok["access_token"])
assert "ops" in claims["realm_access"]["roles"], claims
print("PYTHON-KEYCLOAK-ADMIN-OK")
"#;

#[tokio::test]
async fn python_keycloak_admin_adds_a_realm_role_user_and_client() {
    let Ok(python) = std::env::var("PRESSOIR_TEST_PYTHON") else {
        println!("SKIPPED: PRESSOIR_TEST_PYTHON is not set");
        return;
    };
    let s = spawn().await;
    let out = tokio::process::Command::new(python)
        .arg("-c")
        .arg(ADMIN_SCRIPT)
        .env("KC_BASE", &s.base)
        .env("KC_SECRET", &s.secret)
        .output()
        .await
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success() && stdout.contains("PYTHON-KEYCLOAK-ADMIN-OK"),
        "stdout:\n{stdout}\nstderr:\n{stderr}"
    );
}

#[tokio::test]
async fn python_keycloak_works_unchanged() {
    let Ok(python) = std::env::var("PRESSOIR_TEST_PYTHON") else {
        println!("SKIPPED: PRESSOIR_TEST_PYTHON is not set");
        return;
    };
    let s = spawn().await;
    let out = tokio::process::Command::new(python)
        .arg("-c")
        .arg(SCRIPT)
        .env("KC_BASE", &s.base)
        .env("KC_SECRET", &s.secret)
        .env("KC_ADMIN_PASSWORD", &s.admin_password)
        .output()
        .await
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success() && stdout.contains("PYTHON-KEYCLOAK-OK"),
        "stdout:\n{stdout}\nstderr:\n{stderr}"
    );
}

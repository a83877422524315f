//! What benchmarks of Press need from it before they measure.

use serde_json::{Value, json};
use std::net::SocketAddr;

/// A fresh API key of `user` on the Press at `addr`, as an `Authorization` value
/// (`token <key>:<secret>`): a login for the session, then `create_api_secret` with it.
pub async fn api_key(http: &reqwest::Client, addr: SocketAddr, user: &str, pwd: &str) -> String {
    let login: Value = http
        .post(format!(
            "http://{addr}/api/method/frappe.auth.get_logged_user"
        ))
        .json(&json!({"usr": user, "pwd": pwd}))
        .send()
        .await
        .expect("log in")
        .json()
        .await
        .expect("login answer");
    let sid = login["sid"].as_str().expect("a session id");
    let keys: Value = http
        .post(format!(
            "http://{addr}/api/method/press.api.account.create_api_secret"
        ))
        .header("Cookie", format!("sid={sid}"))
        .send()
        .await
        .expect("create an API secret")
        .json()
        .await
        .expect("API secret answer");
    format!(
        "token {}:{}",
        keys["message"]["api_key"].as_str().expect("an API key"),
        keys["message"]["api_secret"]
            .as_str()
            .expect("an API secret")
    )
}

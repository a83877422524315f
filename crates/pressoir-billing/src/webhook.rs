//! Webhook delivery from the durable outbox (`webhooks` table, written in the same transaction
//! as the change that caused it). Each delivery is signed as Lago signs it: `hmac` is the
//! base64 HMAC-SHA256 of the raw body with the organization's HMAC key; `jwt` is an RS256 JWT
//! `{data: <raw body>, iss: <api url>}` checked with the key at `/webhooks/json_public_key`.
//! Failures are retried with Lago's backoff (`n^4 + 2` units, with jitter) up to `attempts`.

use crate::Error;
use crate::service::App;
use crate::store;
use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use hmac::{Hmac, Mac};
use pressoir_core::Shutdown;
use pressoir_core::clock::now_ms;
use rand::Rng;
use serde::Serialize;
use sha2::Sha256;
use std::sync::Arc;
use std::time::Duration;

/// How deliveries are retried.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Total attempts per delivery (Lago: 3).
    pub attempts: u32,
    /// The unit of the backoff `n^4 + 2` (Lago: one second).
    pub retry_unit: Duration,
    pub timeout: Duration,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            attempts: 3,
            retry_unit: Duration::from_secs(1),
            timeout: Duration::from_secs(30),
        }
    }
}

/// Signs bodies both ways.
pub struct Signer {
    hmac_key: String,
    jwt: jsonwebtoken::EncodingKey,
    /// The public key, PEM (SubjectPublicKeyInfo).
    pub public_pem: String,
    pub issuer: String,
}

#[derive(Serialize)]
struct Claims<'a> {
    data: &'a str,
    iss: &'a str,
}

impl Signer {
    pub fn new(hmac_key: &str, private_pem: &str, issuer: &str) -> Result<Signer, Error> {
        use rsa::pkcs1::DecodeRsaPrivateKey;
        use rsa::pkcs8::{DecodePrivateKey, EncodePublicKey, LineEnding};
        let key = rsa::RsaPrivateKey::from_pkcs1_pem(private_pem)
            .or_else(|_| rsa::RsaPrivateKey::from_pkcs8_pem(private_pem))
            .map_err(|e| Error::Key(format!("webhook RSA key: {e}")))?;
        let public_pem = rsa::RsaPublicKey::from(&key)
            .to_public_key_pem(LineEnding::LF)
            .map_err(|e| Error::Key(format!("webhook RSA public key: {e}")))?;
        let jwt = jsonwebtoken::EncodingKey::from_rsa_pem(private_pem.as_bytes())
            .map_err(|e| Error::Key(format!("webhook RSA key: {e}")))?;
        Ok(Signer {
            hmac_key: hmac_key.to_string(),
            jwt,
            public_pem,
            issuer: issuer.to_string(),
        })
    }

    pub fn hmac(&self, body: &[u8]) -> String {
        hmac_signature(&self.hmac_key, body)
    }

    pub fn jwt(&self, body: &str) -> Result<String, Error> {
        let header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::RS256);
        jsonwebtoken::encode(
            &header,
            &Claims {
                data: body,
                iss: &self.issuer,
            },
            &self.jwt,
        )
        .map_err(|e| Error::Key(format!("signing webhook: {e}")))
    }
}

pub fn hmac_signature(key: &str, body: &[u8]) -> String {
    let mut mac =
        Hmac::<Sha256>::new_from_slice(key.as_bytes()).expect("HMAC takes any key length");
    mac.update(body);
    B64.encode(mac.finalize().into_bytes())
}

/// A fresh 2048-bit RSA private key, PKCS#1 PEM.
pub fn generate_private_pem() -> Result<String, Error> {
    use rsa::pkcs1::EncodeRsaPrivateKey;
    use rsa::pkcs8::LineEnding;
    let key = rsa::RsaPrivateKey::new(&mut rand::thread_rng(), 2048)
        .map_err(|e| Error::Key(format!("generating RSA key: {e}")))?;
    Ok(key
        .to_pkcs1_pem(LineEnding::LF)
        .map_err(|e| Error::Key(e.to_string()))?
        .to_string())
}

/// Lago's wait before retry `n` (1-based), in units, with up to 15% jitter.
pub fn backoff(n: u32, unit: Duration) -> Duration {
    let base = (n as f64).powi(4);
    let jitter = rand::thread_rng().gen_range(0.0..0.15) * base;
    unit.mul_f64(base + jitter + 2.0)
}

/// Delivers due webhooks until shutdown.
pub async fn run(app: Arc<App>, shutdown: Shutdown) {
    let http = match reqwest::Client::builder()
        .timeout(app.webhook.timeout)
        .build()
    {
        Ok(c) => c,
        Err(e) => {
            tracing::error!(error = %e, "webhook client");
            return;
        }
    };
    loop {
        let wait = match deliver_due(&app, &http).await {
            Ok(next) => next,
            Err(e) => {
                tracing::warn!(error = %e, "webhook delivery pass failed");
                Duration::from_secs(1)
            }
        };
        tokio::select! {
            _ = shutdown.wait() => return,
            _ = app.webhook_wake.notified() => {}
            _ = tokio::time::sleep(wait) => {}
        }
    }
}

/// One pass over due deliveries; returns how long until the next is due (at most 1 s).
async fn deliver_due(app: &App, http: &reqwest::Client) -> Result<Duration, Error> {
    loop {
        let due = {
            let mut c = app.store.read().await?;
            store::due_webhooks(&mut c, now_ms(), 50).await?
        };
        if due.is_empty() {
            break;
        }
        for w in due {
            let endpoint = {
                let mut c = app.store.read().await?;
                store::endpoint_by_id(&mut c, &w.endpoint_id).await?
            };
            let attempts = w.attempts + 1;
            let outcome = match &endpoint {
                None => Err(None),
                Some(e) => {
                    send(
                        app,
                        http,
                        &e.webhook_url,
                        &e.signature_algo,
                        &w.lago_id,
                        &w.payload,
                    )
                    .await
                }
            };
            let now = now_ms();
            let (status, next, code) = match outcome {
                Ok(code) => ("succeeded", now, Some(code)),
                Err(code) if endpoint.is_some() && (attempts as u32) < app.webhook.attempts => {
                    let d = backoff(attempts as u32, app.webhook.retry_unit);
                    ("retrying", now + d.as_millis() as i64, code)
                }
                Err(code) => ("failed", now, code),
            };
            let mut tx = app.store.begin().await?;
            store::mark_webhook(tx.conn(), &w.lago_id, status, attempts, next, code, now).await?;
            tx.commit().await?;
        }
    }
    let mut c = app.store.read().await?;
    let next = store::next_webhook_due(&mut c).await?;
    Ok(match next {
        Some(t) => Duration::from_millis((t - now_ms()).clamp(1, 1000) as u64),
        None => Duration::from_secs(1),
    })
}

async fn send(
    app: &App,
    http: &reqwest::Client,
    url: &str,
    algo: &str,
    unique_key: &str,
    body: &str,
) -> Result<i64, Option<i64>> {
    let signature = if algo == "hmac" {
        app.signer.hmac(body.as_bytes())
    } else {
        app.signer.jwt(body).map_err(|_| None)?
    };
    let r = http
        .post(url)
        .header("content-type", "application/json")
        .header("X-Lago-Signature", signature)
        .header(
            "X-Lago-Signature-Algorithm",
            if algo == "hmac" { "hmac" } else { "jwt" },
        )
        .header("X-Lago-Unique-Key", unique_key)
        .body(body.to_string())
        .send()
        .await;
    match r {
        Ok(resp) => {
            let code = resp.status().as_u16() as i64;
            if matches!(code, 200 | 201 | 202 | 204) {
                Ok(code)
            } else {
                Err(Some(code))
            }
        }
        Err(_) => Err(None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hmac_matches_a_known_vector() {
        // RFC 4231 test case 2
        let sig = hmac_signature("Jefe", b"what do ya want for nothing?");
        let hex = "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843";
        assert_eq!(B64.decode(sig).unwrap(), hex::decode(hex).unwrap());
    }

    #[test]
    fn backoff_grows_like_lago() {
        let u = Duration::from_millis(100);
        assert!(
            backoff(1, u) >= Duration::from_millis(300)
                && backoff(1, u) < Duration::from_millis(320)
        );
        assert!(backoff(2, u) >= Duration::from_millis(1800));
    }
}

impl App {
    pub async fn save_endpoint(
        &self,
        id: Option<&str>,
        m: &serde_json::Map<String, serde_json::Value>,
    ) -> Result<serde_json::Value, Error> {
        use crate::input::Fields;
        use crate::proto::{ApiError, Code};
        let mut f = Fields::new(m);
        let mut tx = self.store.begin().await?;
        let c = tx.conn();
        let existing = match id {
            Some(id) => Some(
                store::endpoint_by_id(c, id)
                    .await?
                    .ok_or(ApiError::Code(Code::WebhookEndpointNotFound))?,
            ),
            None => None,
        };
        let url = if existing.is_none() || m.contains_key("webhook_url") {
            f.req_str("webhook_url")
        } else {
            existing.as_ref().map(|e| e.webhook_url.clone())
        };
        if let Some(u) = &url {
            let ok = reqwest::Url::parse(u)
                .is_ok_and(|p| matches!(p.scheme(), "http" | "https") && p.host().is_some());
            if !ok {
                f.err("webhook_url", "url_is_invalid");
            }
        }
        let algo = if m.contains_key("signature_algo") {
            f.one_of("signature_algo", &["jwt", "hmac"])
        } else {
            None
        }
        .or_else(|| existing.as_ref().map(|e| e.signature_algo.clone()))
        .unwrap_or_else(|| "jwt".into());
        let name = if m.contains_key("name") {
            f.str("name")
        } else {
            existing.as_ref().and_then(|e| e.name.clone())
        };
        let event_types = if m.contains_key("event_types") {
            match f.get("event_types") {
                None => None,
                Some(serde_json::Value::Array(a)) if a.iter().all(|v| v.is_string()) => Some(
                    a.iter()
                        .filter_map(|v| v.as_str().map(str::to_string))
                        .collect(),
                ),
                Some(_) => {
                    f.err("event_types", "value_is_invalid");
                    None
                }
            }
        } else {
            existing.as_ref().and_then(|e| e.event_types.clone())
        };
        let all = store::endpoints(c).await?;
        if let Some(u) = &url
            && all.iter().any(|e| {
                &e.webhook_url == u && Some(&e.lago_id) != existing.as_ref().map(|x| &x.lago_id)
            })
        {
            f.err("webhook_url", "value_already_exist");
        }
        if existing.is_none() && all.len() >= 10 {
            f.err("base", "exceeded_limit");
        }
        f.finish()?;
        let row = store::EndpointRow {
            lago_id: existing
                .as_ref()
                .map(|e| e.lago_id.clone())
                .unwrap_or_else(crate::service::new_id),
            webhook_url: url.unwrap_or_default(),
            signature_algo: algo,
            name,
            event_types,
            created_at: existing
                .as_ref()
                .map(|e| e.created_at)
                .unwrap_or_else(now_ms),
        };
        store::save_endpoint(c, &row).await?;
        tx.commit().await?;
        self.has_endpoints
            .store(true, std::sync::atomic::Ordering::Relaxed);
        Ok(crate::render::endpoint(&row, &self.org_id))
    }

    pub async fn endpoint(&self, id: &str) -> Result<serde_json::Value, Error> {
        let mut c = self.store.read().await?;
        let e = store::endpoint_by_id(&mut c, id)
            .await?
            .ok_or(crate::proto::ApiError::Code(
                crate::proto::Code::WebhookEndpointNotFound,
            ))?;
        Ok(crate::render::endpoint(&e, &self.org_id))
    }

    pub async fn endpoints(&self, page: store::Page) -> Result<serde_json::Value, Error> {
        let mut c = self.store.read().await?;
        let all = store::endpoints(&mut c).await?;
        let total = all.len() as i64;
        let items: Vec<_> = all
            .iter()
            .skip(page.offset().max(0) as usize)
            .take(page.per_page as usize)
            .map(|e| crate::render::endpoint(e, &self.org_id))
            .collect();
        Ok(
            serde_json::json!({"webhook_endpoints": items, "meta": crate::render::meta(page, total)}),
        )
    }

    pub async fn delete_endpoint(&self, id: &str) -> Result<serde_json::Value, Error> {
        let mut tx = self.store.begin().await?;
        let c = tx.conn();
        let e = store::endpoint_by_id(c, id)
            .await?
            .ok_or(crate::proto::ApiError::Code(
                crate::proto::Code::WebhookEndpointNotFound,
            ))?;
        store::delete_endpoint(c, id).await?;
        let left = store::endpoints(c).await?.len();
        tx.commit().await?;
        self.has_endpoints
            .store(left > 0, std::sync::atomic::Ordering::Relaxed);
        Ok(crate::render::endpoint(&e, &self.org_id))
    }

    /// Deliveries recorded in the outbox: (webhook_type, status, attempts), oldest first.
    pub async fn deliveries(&self) -> Result<Vec<(String, String, i64)>, Error> {
        let mut c = self.store.read().await?;
        store::webhook_statuses(&mut c).await
    }
}

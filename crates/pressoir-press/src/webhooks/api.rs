//! `press.api.webhook.*`: a team's webhooks (`add`, `list`, `get`, `update`, `delete`,
//! `attempts`, `deliveries`, `redeliver`, `events`), and with `"scope": "global"` the
//! Administrator's webhooks for all teams (Press Settings > Webhooks). The operations are
//! also plain functions for the admin CLI. Secrets are shown once, by `add`, and never again.

use super::store::{self as wstore, Attempt, Delivery, Webhook};
use super::{EVENTS, VALIDATE_EVENT, WebhookConfig, deliver, guard, is_event, sign};
use crate::auth::Caller;
use crate::error::{Error, Result};
use crate::store::{Store, new_id};
use axum::response::{IntoResponse, Response};
use pressoir_core::clock::{now_ms, rfc3339_ms};
use serde_json::{Map, Value, json};

/// The team column of administrator-level webhooks.
pub const GLOBAL: &str = "";

const RESERVED_HEADERS: [&str; 10] = [
    "content-type",
    "content-length",
    "host",
    "transfer-encoding",
    "connection",
    "webhook-id",
    "webhook-timestamp",
    "webhook-signature",
    "x-webhook-secret",
    "user-agent",
];

/// What `add` takes (also from the CLI).
#[derive(Debug, Clone, Default)]
pub struct NewWebhook {
    pub url: String,
    pub events: Vec<String>,
    pub headers: Map<String, Value>,
    /// Sent as `X-Webhook-Secret` (Frappe Press's plain shared secret), when set.
    pub secret: Option<String>,
}

/// Answers one `press.api.webhook.*` call. `team` is the caller's acting team.
pub async fn call(
    store: &Store,
    cfg: &WebhookConfig,
    method: &str,
    caller: &Caller,
    team: Result<String>,
    args: &Map<String, Value>,
) -> Result<Response> {
    let a = Args(args);
    let global = a.str("scope").as_deref() == Some("global");
    if global && !caller.is_admin {
        return Err(Error::permission(
            "only the Administrator manages global webhooks",
        ));
    }
    let scope = || -> Result<String> {
        if global {
            Ok(GLOBAL.to_string())
        } else {
            team.as_ref().map(|t| t.clone()).map_err(clone_err)
        }
    };
    let message = match method {
        "press.api.webhook.events" | "press.api.webhook.available_events" => {
            json!(
                EVENTS
                    .iter()
                    .map(|(n, d)| json!({"name": n, "title": n, "description": d}))
                    .collect::<Vec<_>>()
            )
        }
        "press.api.webhook.add" => {
            let new = NewWebhook {
                url: a
                    .str("url")
                    .or_else(|| a.str("endpoint"))
                    .filter(|s| !s.is_empty())
                    .ok_or_else(|| Error::validation("missing argument 'url'"))?,
                events: a
                    .events()?
                    .ok_or_else(|| Error::validation("missing argument 'event' or 'events'"))?,
                headers: a.obj("headers")?.unwrap_or_default(),
                secret: a.str("secret").filter(|s| !s.is_empty()),
            };
            add(store, cfg, &scope()?, new).await?
        }
        "press.api.webhook.list" => list(store, &scope()?).await?,
        "press.api.webhook.get" => {
            let w = visible(store, caller, &team, &a.name()?).await?;
            webhook_json(store, &w).await?
        }
        "press.api.webhook.update" => {
            let w = visible(store, caller, &team, &a.name()?).await?;
            let change = Change {
                url: a.str("url").or_else(|| a.str("endpoint")),
                events: a.events()?,
                headers: a.obj("headers")?,
                secret: a
                    .args_has("secret")
                    .then(|| a.str("secret").filter(|s| !s.is_empty())),
                enabled: a.bool("enabled")?,
            };
            update(store, cfg, w, change).await?
        }
        "press.api.webhook.delete" => {
            let w = visible(store, caller, &team, &a.name()?).await?;
            wstore::delete(&store.db, &w.name).await?;
            json!({"name": w.name, "deleted": true})
        }
        "press.api.webhook.attempts" => {
            let w = visible(store, caller, &team, &a.name_or("webhook")?).await?;
            let (start, limit) = a.page()?;
            json!(
                wstore::attempts(&store.db, &w.name, start, limit)
                    .await?
                    .iter()
                    .map(attempt_json)
                    .collect::<Vec<_>>()
            )
        }
        "press.api.webhook.deliveries" => {
            let w = visible(store, caller, &team, &a.name_or("webhook")?).await?;
            let (_, limit) = a.page()?;
            let status = a.str("status").filter(|s| !s.is_empty());
            json!(
                wstore::deliveries(&store.db, &w.name, status.as_deref(), limit)
                    .await?
                    .iter()
                    .map(delivery_json)
                    .collect::<Vec<_>>()
            )
        }
        "press.api.webhook.redeliver" => {
            let id = match (a.str("delivery"), a.str("event_id")) {
                (Some(d), _) if !d.is_empty() => d,
                (_, Some(e)) if !e.is_empty() => format!("{e}.{}", a.name_or("webhook")?),
                _ => return Err(Error::validation("missing argument 'delivery'")),
            };
            let d = wstore::delivery(&store.db, &id)
                .await?
                .ok_or_else(|| Error::not_found(format!("Delivery {id} not found")))?;
            visible(store, caller, &team, &d.webhook).await?;
            if !wstore::redeliver(&store.db, &id).await? {
                return Err(Error::validation(format!(
                    "delivery {id} is already pending"
                )));
            }
            json!({"delivery": id, "status": "Pending"})
        }
        _ => return Err(Error::not_found(format!("method '{method}' not found"))),
    };
    Ok(axum::Json(json!({ "message": message })).into_response())
}

fn clone_err(e: &Error) -> Error {
    match e {
        Error::Frappe(k, m) => Error::Frappe(*k, m.clone()),
        other => Error::internal(other.to_string()),
    }
}

/// The webhook if the caller may see it; another team's answers as a missing one.
async fn visible(
    store: &Store,
    caller: &Caller,
    team: &Result<String>,
    name: &str,
) -> Result<Webhook> {
    let missing = || Error::not_found(format!("Press Webhook {name} not found"));
    let w = wstore::get(&store.db, name).await?.ok_or_else(missing)?;
    let mine = match team {
        Ok(t) => &w.team == t,
        Err(_) => false,
    };
    if caller.is_admin || (mine && w.team != GLOBAL) {
        Ok(w)
    } else {
        Err(missing())
    }
}

/// Checks the settings, sends the validation ping (a 2xx is needed) and stores the webhook;
/// answers its name and signing secret (shown this once).
pub async fn add(store: &Store, cfg: &WebhookConfig, team: &str, new: NewWebhook) -> Result<Value> {
    let events = check_events(&new.events)?;
    let headers = check_headers(&new.headers)?;
    let url = check_target(&new.url, cfg.allow_private).await?;
    if team != GLOBAL
        && wstore::count_for_team(&store.db, team).await? >= i64::from(cfg.max_per_team)
    {
        return Err(Error::validation(format!(
            "a team can have at most {} webhooks",
            cfg.max_per_team
        )));
    }
    let now = now_ms();
    let w = Webhook {
        name: new_id(),
        team: team.to_string(),
        url,
        headers: Value::Object(headers).to_string(),
        secret: new.secret,
        signing_secret: sign::generate_secret(),
        enabled: 1,
        disabled_reason: None,
        consecutive_failures: 0,
        failing_since: None,
        last_success: None,
        created: now,
        modified: now,
    };
    ping(cfg, &w).await?;
    wstore::insert(&store.db, &w, &events).await?;
    let mut v = webhook_json(store, &w).await?;
    v["signing_secret"] = json!(w.signing_secret);
    Ok(v)
}

/// An `update`: any of these may be given.
#[derive(Debug, Default)]
pub struct Change {
    pub url: Option<String>,
    pub events: Option<Vec<String>>,
    pub headers: Option<Map<String, Value>>,
    /// `Some(None)` clears the secret.
    pub secret: Option<Option<String>>,
    pub enabled: Option<bool>,
}

/// Applies a change. A new URL, or enabling a disabled webhook, needs a fresh 2xx ping;
/// enabling resets the failure streak and the webhook's pending deliveries resume.
pub async fn update(
    store: &Store,
    cfg: &WebhookConfig,
    mut w: Webhook,
    c: Change,
) -> Result<Value> {
    let events = match &c.events {
        Some(e) => Some(check_events(e)?),
        None => None,
    };
    if let Some(h) = &c.headers {
        w.headers = Value::Object(check_headers(h)?).to_string();
    }
    if let Some(s) = c.secret {
        w.secret = s;
    }
    let mut needs_ping = false;
    if let Some(u) = &c.url
        && u != &w.url
    {
        w.url = check_target(u, cfg.allow_private).await?;
        needs_ping = true;
    }
    match c.enabled {
        Some(true) if w.enabled == 0 => {
            w.enabled = 1;
            w.disabled_reason = None;
            w.consecutive_failures = 0;
            w.failing_since = None;
            needs_ping = true;
        }
        Some(false) => {
            w.enabled = 0;
            w.disabled_reason = Some("disabled by its owner".into());
        }
        _ => {}
    }
    if needs_ping && w.enabled == 1 {
        ping(cfg, &w).await?;
    }
    wstore::update(&store.db, &w, events.as_deref()).await?;
    let w = wstore::get(&store.db, &w.name)
        .await?
        .ok_or_else(|| Error::not_found("Press Webhook not found"))?;
    webhook_json(store, &w).await
}

pub async fn list(store: &Store, team: &str) -> Result<Value> {
    let mut out = Vec::new();
    for w in wstore::list(&store.db, team).await? {
        out.push(webhook_json(store, &w).await?);
    }
    Ok(Value::Array(out))
}

async fn ping(cfg: &WebhookConfig, w: &Webhook) -> Result<()> {
    let client = guard::client(cfg.allow_private, cfg.timeout).map_err(Error::internal)?;
    let id = new_id();
    let body =
        json!({"event": VALIDATE_EVENT, "id": id, "timestamp": rfc3339_ms(now_ms()), "data": {}})
            .to_string();
    let r = deliver::send(
        &client,
        cfg.allow_private,
        cfg.timeout,
        &w.url,
        &w.header_map(),
        w.secret.as_deref(),
        &w.signing_secret,
        &id,
        &body,
    )
    .await;
    if r.ok() {
        Ok(())
    } else {
        let why = r.error.unwrap_or_else(|| "no answer".into());
        Err(Error::validation(format!(
            "webhook validation failed: {} did not answer 2xx ({why})",
            w.url
        )))
    }
}

/// http(s), no credentials, and every address the host resolves to allowed.
async fn check_target(url: &str, allow_private: bool) -> Result<String> {
    let u = guard::check_url(url.trim(), allow_private).map_err(Error::validation)?;
    if let Some(url::Host::Domain(host)) = u.host() {
        guard::resolve_checked(host, allow_private)
            .await
            .map_err(Error::validation)?;
    }
    Ok(u.to_string())
}

fn check_events(events: &[String]) -> Result<Vec<String>> {
    if events.is_empty() {
        return Err(Error::validation("at least one event is required"));
    }
    let mut out: Vec<String> = Vec::new();
    for e in events {
        if !is_event(e) {
            return Err(Error::validation(format!(
                "unknown event '{e}' (see press.api.webhook.events)"
            )));
        }
        if !out.contains(e) {
            out.push(e.clone());
        }
    }
    Ok(out)
}

fn check_headers(h: &Map<String, Value>) -> Result<Map<String, Value>> {
    if h.len() > 20 {
        return Err(Error::validation("at most 20 headers"));
    }
    let mut out = Map::new();
    for (k, v) in h {
        let Some(v) = v.as_str() else {
            return Err(Error::validation(format!("header '{k}' must be a string")));
        };
        if http::HeaderName::from_bytes(k.as_bytes()).is_err() {
            return Err(Error::validation(format!(
                "'{k}' is not a valid header name"
            )));
        }
        if http::HeaderValue::from_str(v).is_err() {
            return Err(Error::validation(format!(
                "the value of header '{k}' is not valid"
            )));
        }
        if RESERVED_HEADERS.contains(&k.to_ascii_lowercase().as_str()) {
            return Err(Error::validation(format!(
                "header '{k}' is set by Press and cannot be configured"
            )));
        }
        out.insert(k.clone(), Value::String(v.to_string()));
    }
    Ok(out)
}

async fn webhook_json(store: &Store, w: &Webhook) -> Result<Value> {
    let events = wstore::events_of(&store.db, &w.name).await?;
    let (pending, sent, failed) = wstore::delivery_counts(&store.db, &w.name).await?;
    let headers: Map<String, Value> = w
        .header_map()
        .into_iter()
        .map(|(k, _)| (k, json!("***")))
        .collect();
    Ok(json!({
        "name": w.name,
        "team": if w.team == GLOBAL { Value::Null } else { json!(w.team) },
        "scope": if w.team == GLOBAL { "global" } else { "team" },
        "url": w.url,
        "endpoint": w.url,
        "events": events,
        "headers": headers,
        "has_secret": w.secret.is_some(),
        "enabled": w.enabled == 1,
        "disabled_reason": w.disabled_reason,
        "consecutive_failures": w.consecutive_failures,
        "last_success": w.last_success.map(rfc3339_ms),
        "pending": pending,
        "sent": sent,
        "failed": failed,
        "creation": rfc3339_ms(w.created),
        "modified": rfc3339_ms(w.modified),
    }))
}

fn attempt_json(a: &Attempt) -> Value {
    json!({
        "name": a.id,
        "webhook": a.webhook,
        "delivery": a.delivery,
        "event": a.event,
        "event_id": a.event_id,
        "attempt": a.attempt,
        "status": if a.ok == 1 { "Sent" } else { "Failed" },
        "response_status_code": a.status_code,
        "response_body": a.response_excerpt,
        "duration_ms": a.duration_ms,
        "error": a.error,
        "timestamp": rfc3339_ms(a.created),
    })
}

fn delivery_json(d: &Delivery) -> Value {
    json!({
        "name": d.id,
        "event": d.event,
        "event_id": d.event_id,
        "lane": d.lane,
        "status": d.status,
        "attempts": d.attempts,
        "next_attempt": (d.status == "Pending").then(|| rfc3339_ms(d.next_at)),
        "response_status_code": d.last_status_code,
        "error": d.last_error,
        "creation": rfc3339_ms(d.created),
        "sent_at": d.sent_at.map(rfc3339_ms),
    })
}

struct Args<'a>(&'a Map<String, Value>);

impl Args<'_> {
    fn args_has(&self, k: &str) -> bool {
        self.0.contains_key(k)
    }

    fn str(&self, k: &str) -> Option<String> {
        match self.0.get(k)? {
            Value::String(s) => Some(s.clone()),
            Value::Null => None,
            other => Some(other.to_string()),
        }
    }

    fn name(&self) -> Result<String> {
        self.name_or("webhook")
    }

    fn name_or(&self, alt: &str) -> Result<String> {
        self.str("name")
            .or_else(|| self.str(alt))
            .filter(|s| !s.is_empty())
            .ok_or_else(|| Error::validation("missing argument 'name'"))
    }

    fn bool(&self, k: &str) -> Result<Option<bool>> {
        match self.0.get(k) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::Bool(b)) => Ok(Some(*b)),
            Some(Value::Number(n)) => Ok(Some(n.as_i64() != Some(0))),
            Some(Value::String(s)) => match s.as_str() {
                "1" | "true" | "yes" => Ok(Some(true)),
                "0" | "false" | "no" => Ok(Some(false)),
                _ => Err(Error::validation(format!(
                    "argument '{k}' must be true or false"
                ))),
            },
            Some(_) => Err(Error::validation(format!(
                "argument '{k}' must be true or false"
            ))),
        }
    }

    fn obj(&self, k: &str) -> Result<Option<Map<String, Value>>> {
        match self.0.get(k) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::Object(o)) => Ok(Some(o.clone())),
            Some(Value::String(s)) if s.is_empty() => Ok(None),
            Some(Value::String(s)) => match serde_json::from_str::<Value>(s) {
                Ok(Value::Object(o)) => Ok(Some(o)),
                _ => Err(Error::validation(format!(
                    "argument '{k}' must be a JSON object"
                ))),
            },
            Some(_) => Err(Error::validation(format!(
                "argument '{k}' must be a JSON object"
            ))),
        }
    }

    /// `events` (a list, a JSON list as text, or comma-separated) or the reference's `event`.
    fn events(&self) -> Result<Option<Vec<String>>> {
        let raw = self.0.get("events").or_else(|| self.0.get("event"));
        let list = match raw {
            None | Some(Value::Null) => return Ok(None),
            Some(Value::Array(a)) => a
                .iter()
                .map(|v| v.as_str().map(str::to_string))
                .collect::<Option<Vec<_>>>(),
            Some(Value::String(s)) if s.trim_start().starts_with('[') => {
                serde_json::from_str::<Vec<String>>(s).ok()
            }
            Some(Value::String(s)) => Some(
                s.split(',')
                    .map(|e| e.trim().to_string())
                    .filter(|e| !e.is_empty())
                    .collect(),
            ),
            Some(_) => None,
        };
        list.map(Some)
            .ok_or_else(|| Error::validation("events must be a list of event names"))
    }

    fn page(&self) -> Result<(i64, i64)> {
        let num = |k: &str, d: i64| -> Result<i64> {
            match self.str(k) {
                None => Ok(d),
                Some(s) => s
                    .parse::<i64>()
                    .map_err(|_| Error::validation(format!("argument '{k}' must be a number"))),
            }
        };
        Ok((num("start", 0)?.max(0), num("limit", 100)?.clamp(1, 1000)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_and_headers_are_checked() {
        assert!(check_events(&[]).is_err());
        assert!(check_events(&["site.nope".into()]).is_err());
        assert_eq!(
            check_events(&["site.created".into(), "site.created".into()]).unwrap(),
            vec!["site.created"]
        );
        let mut h = Map::new();
        h.insert("X-Secret".into(), json!("v"));
        assert!(check_headers(&h).is_ok());
        h.insert("webhook-signature".into(), json!("v"));
        assert!(check_headers(&h).is_err());
        let mut bad = Map::new();
        bad.insert("bad header".into(), json!("v"));
        assert!(check_headers(&bad).is_err());
    }
}

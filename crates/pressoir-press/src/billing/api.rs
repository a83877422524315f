//! `press.api.billing.usage` and `press.api.billing.invoices`, for the caller's team, and
//! `press.api.site.change_plan`. Thin: they ask billing through the Lago client.

use super::BillingConfig;
use crate::error::{Error, Result};
use crate::store::{Site, Store};
use axum::response::{IntoResponse, Response};
use pressoir_billing::client::{ClientError, ErrorCode};
use serde_json::{Map, Value, json};

fn ok(message: Value) -> Response {
    axum::Json(json!({ "message": message })).into_response()
}

fn configured(cfg: Option<&BillingConfig>) -> Result<&BillingConfig> {
    cfg.ok_or_else(|| Error::validation("Billing is not configured on this Press"))
}

fn unavailable(e: ClientError) -> Error {
    tracing::warn!(error = %e, "billing call failed");
    Error::internal("billing is unavailable")
}

fn int_arg(args: &Map<String, Value>, k: &str, default: i64) -> Result<i64> {
    match args.get(k) {
        None | Some(Value::Null) => Ok(default),
        Some(Value::Number(n)) => n
            .as_i64()
            .ok_or_else(|| Error::validation(format!("{k} must be an integer"))),
        Some(Value::String(s)) => s
            .parse()
            .map_err(|_| Error::validation(format!("{k} must be an integer"))),
        _ => Err(Error::validation(format!("{k} must be an integer"))),
    }
}

pub async fn call(
    store: &Store,
    cfg: Option<&BillingConfig>,
    method: &str,
    team: &str,
    args: &Map<String, Value>,
) -> Result<Response> {
    match method {
        "press.api.billing.usage" => usage(store, configured(cfg)?, team).await,
        "press.api.billing.invoices" => invoices(configured(cfg)?, team, args).await,
        _ => Err(Error::not_found(format!("method '{method}' not found"))),
    }
}

/// The current period's usage of each of the team's live sites (one Lago subscription each).
async fn usage(store: &Store, cfg: &BillingConfig, team: &str) -> Result<Response> {
    let lago = super::worker::client(cfg)?;
    let sites = store.sites(team, None, 0, 1000).await?;
    let mut out = Vec::new();
    let (mut total, mut currency) = (0i64, None::<String>);
    for s in sites.iter().filter(|s| s.status != "Archived") {
        match lago.current_usage(team, &s.name).await {
            Ok(u) => {
                total += u.total_amount_cents;
                currency.get_or_insert(u.currency.clone());
                let charges: Vec<Value> = u
                    .charges_usage
                    .iter()
                    .map(|c| json!({"code": c.billable_metric.code, "units": c.units, "events_count": c.events_count, "amount_cents": c.amount_cents}))
                    .collect();
                out.push(json!({
                    "site": s.name, "plan": s.plan, "from_datetime": u.from_datetime, "to_datetime": u.to_datetime,
                    "currency": u.currency, "amount_cents": u.amount_cents, "total_amount_cents": u.total_amount_cents,
                    "charges": charges,
                }));
            }
            Err(ClientError::Api {
                code:
                    ErrorCode::NoActiveSubscription
                    | ErrorCode::SubscriptionNotFound
                    | ErrorCode::CustomerNotFound,
                ..
            }) => {}
            Err(e) => return Err(unavailable(e)),
        }
    }
    Ok(ok(
        json!({"team": team, "currency": currency, "total_amount_cents": total, "sites": out}),
    ))
}

async fn invoices(cfg: &BillingConfig, team: &str, args: &Map<String, Value>) -> Result<Response> {
    let page = int_arg(args, "page", 1)?.max(1);
    let per_page = int_arg(args, "per_page", 20)?.clamp(1, 100);
    let lago = super::worker::client(cfg)?;
    let (list, meta) = match lago.list_invoices(Some(team), page, per_page).await {
        Ok(v) => v,
        Err(ClientError::Api {
            code: ErrorCode::CustomerNotFound,
            ..
        }) => (Vec::new(), Default::default()),
        Err(e) => return Err(unavailable(e)),
    };
    let invoices: Vec<Value> = list
        .iter()
        .map(|i| {
            json!({
                "name": i.lago_id, "number": i.number, "issuing_date": i.issuing_date, "invoice_type": i.invoice_type,
                "status": i.status, "payment_status": i.payment_status, "currency": i.currency,
                "fees_amount_cents": i.fees_amount_cents, "taxes_amount_cents": i.taxes_amount_cents,
                "total_amount_cents": i.total_amount_cents,
            })
        })
        .collect();
    Ok(ok(json!({
        "invoices": invoices,
        "meta": {"current_page": meta.current_page, "next_page": meta.next_page, "total_pages": meta.total_pages, "total_count": meta.total_count},
    })))
}

/// `press.api.site.change_plan {name, plan}`: the plan must exist and be enabled; the site's
/// subscription follows through the outbox.
pub async fn change_plan(store: &Store, site: &Site, plan: &str) -> Result<Response> {
    let p = store.plan(plan).await?.filter(|p| p.enabled == 1);
    let p = p.ok_or_else(|| Error::not_found(format!("Plan {plan} does not exist")))?;
    if site.status == "Archived" {
        return Err(Error::validation("Site is in Archived state"));
    }
    if site.plan == p.name {
        return Ok(ok(json!({"site": site.name, "plan": p.name})));
    }
    if !super::store::change_plan(&store.db, site, &p.name).await? {
        return Err(Error::validation("Site is in Archived state"));
    }
    // The plan is written beside the store's own site writes: its site cache must forget.
    store.sites_changed();
    Ok(ok(json!({"site": site.name, "plan": p.name})))
}

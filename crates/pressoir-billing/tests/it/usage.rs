use crate::common::*;
use serde_json::{Value, json};

async fn metric(s: &Server, code: &str, agg: &str, field: Option<&str>) -> Value {
    let mut m = json!({"name": code, "code": code, "aggregation_type": agg});
    if let Some(f) = field {
        m["field_name"] = json!(f);
    }
    s.ok(
        "POST",
        "/billable_metrics",
        Some(json!({"billable_metric": m})),
    )
    .await["billable_metric"]["lago_id"]
        .clone()
}

fn tiers(key: &str) -> Value {
    json!({key: [
        {"from_value": 0, "to_value": 10, "flat_amount": "2", "per_unit_amount": "1"},
        {"from_value": 11, "to_value": 20, "flat_amount": "3", "per_unit_amount": "0.5"},
        {"from_value": 21, "to_value": null, "flat_amount": "0", "per_unit_amount": "0.1"}]})
}

/// Sets up one plan with a charge of every model and returns the expected cents per metric.
pub async fn usage_plan(s: &Server, sub: &str) -> Vec<(&'static str, &'static str, i64)> {
    let calls = metric(s, "api_calls", "count_agg", None).await;
    let bw = metric(s, "bandwidth", "sum_agg", Some("gb")).await;
    let seats = metric(s, "seats", "unique_count_agg", Some("user_id")).await;
    let cpu = metric(s, "cpu", "sum_agg", Some("cpu_seconds")).await;
    let revenue = metric(s, "revenue", "sum_agg", Some("amount")).await;
    let disk = metric(s, "disk", "latest_agg", Some("gb")).await;
    s.ok("POST", "/plans", Some(json!({"plan": {"name": "Usage", "code": "usage", "interval": "monthly",
        "amount_cents": 1000, "amount_currency": "EUR", "pay_in_advance": false, "charges": [
            {"billable_metric_id": calls, "charge_model": "standard", "properties": {"amount": "0.001"}},
            {"billable_metric_id": bw, "charge_model": "graduated", "properties": tiers("graduated_ranges")},
            {"billable_metric_id": seats, "charge_model": "volume", "properties": tiers("volume_ranges")},
            {"billable_metric_id": cpu, "charge_model": "package",
             "properties": {"amount": "10", "package_size": 100, "free_units": 10}},
            {"billable_metric_id": revenue, "charge_model": "percentage",
             "properties": {"rate": "2.5", "fixed_amount": "0.5", "free_units_per_events": 1}},
            {"billable_metric_id": disk, "charge_model": "standard", "properties": {"amount": "1"}}]}}))).await;
    s.ok(
        "POST",
        "/subscriptions",
        Some(json!({"subscription": {"external_customer_id": "acme",
        "plan_code": "usage", "external_id": sub}})),
    )
    .await;
    let now = pressoir_core::clock::now_ms() / 1000;
    let mut n = 0;
    let mut ev = |code: &str, props: Value, dt: i64| {
        n += 1;
        json!({"transaction_id": format!("{code}-{n}"), "external_subscription_id": sub, "code": code,
               "timestamp": now + dt, "properties": props})
    };
    let mut batch = Vec::new();
    for _ in 0..300 {
        batch.push(ev("api_calls", json!({}), 1));
    }
    for gb in ["7.5", "10", "7.5"] {
        batch.push(ev("bandwidth", json!({"gb": gb}), 1));
    }
    for (u, op) in [("a", "add"), ("b", "add"), ("c", "add"), ("a", "add")] {
        batch.push(ev("seats", json!({"user_id": u, "operation_type": op}), 1));
    }
    batch.push(ev(
        "seats",
        json!({"user_id": "b", "operation_type": "remove"}),
        2,
    ));
    for c in [50, 60, 1] {
        batch.push(ev("cpu", json!({"cpu_seconds": c}), 1));
    }
    for (i, a) in ["100", "200", "300"].iter().enumerate() {
        batch.push(ev("revenue", json!({"amount": a}), 1 + i as i64));
    }
    for (i, g) in [5, 9, 3].iter().enumerate() {
        batch.push(ev("disk", json!({"gb": g}), 1 + i as i64));
    }
    for chunk in batch.chunks(100) {
        s.ok("POST", "/events/batch", Some(json!({"events": chunk})))
            .await;
    }
    vec![
        // 300 × 0.001
        ("api_calls", "300.0", 30),
        // 25 GB: 10×1 + 2 + 10×0.5 + 3 + 5×0.1
        ("bandwidth", "25.0", 2050),
        // a and c remain: volume tier 1, 2×1 + 2
        ("seats", "2.0", 400),
        // 111 − 10 free → 2 packages of 100 at 10
        ("cpu", "111.0", 2000),
        // first event free: (600 − 100) × 2.5% + 2 × 0.5
        ("revenue", "600.0", 1350),
        // the latest value
        ("disk", "3.0", 300),
    ]
}

#[tokio::test]
async fn current_usage_applies_every_charge_model_exactly() {
    for b in backends() {
        let s = spawn(b).await;
        let expected = usage_plan(&s, "site-u").await;
        let u = s
            .ok(
                "GET",
                "/customers/acme/current_usage?external_subscription_id=site-u",
                None,
            )
            .await;
        let u = &u["customer_usage"];
        assert_eq!(u["currency"], "EUR");
        let lines = u["charges_usage"].as_array().unwrap();
        assert_eq!(lines.len(), expected.len());
        for (code, units, cents) in &expected {
            let l = lines
                .iter()
                .find(|l| l["billable_metric"]["code"] == *code)
                .unwrap();
            assert_eq!(l["units"], *units, "{code}: {l}");
            assert_eq!(l["amount_cents"], *cents, "{code}: {l}");
        }
        let total: i64 = expected.iter().map(|e| e.2).sum();
        assert_eq!(u["amount_cents"], total);
        assert_eq!(u["total_amount_cents"], total);
        assert!(u["from_datetime"].is_string() && u["issuing_date"].is_string());
    }
}

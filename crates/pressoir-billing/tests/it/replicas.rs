use crate::common::*;
use serde_json::json;

/// Two billing processes on one PostgreSQL schema behave as one service.
#[tokio::test]
async fn replicas_on_postgres_share_metrics_and_subscriptions() {
    if pressoir_core::db::test_postgres_url().is_none() {
        println!("SKIPPED: PRESSOIR_TEST_POSTGRES_URL is not set");
        return;
    }
    let schema = format!("t_{}", random_hex(12));
    let a = spawn_with(Backend::Postgres, |c| c.schema = schema.clone()).await;
    let b = spawn_with(Backend::Postgres, |c| c.schema = schema.clone()).await;
    let m = a
        .ok(
            "POST",
            "/billable_metrics",
            Some(
                json!({"billable_metric": {"name": "Build minutes", "code": "build_minutes",
            "aggregation_type": "sum_agg", "field_name": "minutes"}}),
            ),
        )
        .await;
    a.ok("POST", "/plans", Some(json!({"plan": {"name": "CI", "code": "ci", "interval": "monthly", "amount_cents": 0,
        "amount_currency": "USD", "charges": [{"billable_metric_id": m["billable_metric"]["lago_id"],
        "charge_model": "standard", "properties": {"amount": "0.01"}}]}}))).await;
    let s1 = a
        .ok(
            "POST",
            "/subscriptions",
            Some(json!({"subscription": {"external_customer_id": "r",
        "plan_code": "ci", "external_id": "site-r"}})),
        )
        .await;
    let s2 = b
        .ok(
            "POST",
            "/subscriptions",
            Some(json!({"subscription": {"external_customer_id": "r",
        "plan_code": "ci", "external_id": "site-r"}})),
        )
        .await;
    assert_eq!(s1["subscription"]["lago_id"], s2["subscription"]["lago_id"]);
    // The metric was created through A; B extracts its field all the same.
    b.ok(
        "POST",
        "/events",
        Some(
            json!({"event": {"transaction_id": "r1", "external_subscription_id": "site-r",
        "code": "build_minutes", "properties": {"minutes": 250}}}),
        ),
    )
    .await;
    let (st, _) = a
        .call(
            "POST",
            "/events",
            Some(
                json!({"event": {"transaction_id": "r1", "external_subscription_id": "site-r",
            "code": "build_minutes", "properties": {"minutes": 250}}}),
            ),
        )
        .await;
    assert_eq!(
        st, 422,
        "a duplicate through the other replica is still a duplicate"
    );
    let u = a
        .ok(
            "GET",
            "/customers/r/current_usage?external_subscription_id=site-r",
            None,
        )
        .await;
    assert_eq!(u["customer_usage"]["charges_usage"][0]["units"], "250.0");
    assert_eq!(u["customer_usage"]["amount_cents"], 250);
}

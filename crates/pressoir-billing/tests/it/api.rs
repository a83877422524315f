use crate::common::*;
use serde_json::json;

#[tokio::test]
async fn auth_and_error_bodies_are_lago_shaped() {
    for b in backends() {
        let s = spawn(b).await;
        let (st, v) = s.call_as("GET", "/customers", None, None).await;
        assert_eq!(
            (st, v.clone()),
            (401, json!({"status": 401, "error": "Unauthorized"}))
        );
        let (st, _) = s.call_as("GET", "/customers", None, Some("wrong")).await;
        assert_eq!(st, 401);
        let (st, v) = s.raw("POST", "/customers", "{not json").await;
        assert_eq!(st, 400);
        assert!(
            v["error"].as_str().unwrap().starts_with("BadRequest:"),
            "{v}"
        );
        let (st, v) = s
            .call("POST", "/customers", Some(json!({"nope": {}})))
            .await;
        assert_eq!(st, 400, "{v}");
        let (st, v) = s.call("GET", "/customers/missing", None).await;
        assert_eq!(
            (st, v),
            (
                404,
                json!({"status": 404, "error": "Not Found", "code": "customer_not_found"})
            )
        );
        let (st, v) = s.call("GET", "/nothing/here", None).await;
        assert_eq!((st, v["code"].clone()), (404, json!("route_not_found")));
        let (st, v) = s
            .call(
                "POST",
                "/customers",
                Some(json!({"customer": {"name": "x"}})),
            )
            .await;
        assert_eq!(st, 422);
        assert_eq!(v["code"], "validation_errors");
        assert_eq!(
            v["error_details"]["external_id"],
            json!(["value_is_mandatory"])
        );
    }
}

#[tokio::test]
async fn customers_upsert_changes_only_the_fields_sent() {
    for b in backends() {
        let s = spawn(b).await;
        let c1 = s
            .ok(
                "POST",
                "/customers",
                Some(json!({"customer": {"external_id": "team-1", "name": "Acme",
                "email": "billing@acme.com", "currency": "EUR"}})),
            )
            .await;
        let c2 = s
            .ok(
                "POST",
                "/customers",
                Some(json!({"customer": {"external_id": "team-1", "email": "ap@acme.com"}})),
            )
            .await;
        assert_eq!(c1["customer"]["lago_id"], c2["customer"]["lago_id"]);
        assert_eq!(c2["customer"]["name"], "Acme");
        assert_eq!(c2["customer"]["email"], "ap@acme.com");
        assert_eq!(c2["customer"]["currency"], "EUR");
        assert_eq!(c2["customer"]["applicable_timezone"], "UTC");
        let (st, v) = s
            .call(
                "POST",
                "/customers",
                Some(json!({"customer": {"external_id": "t2", "currency": "euro"}})),
            )
            .await;
        assert_eq!(st, 422);
        assert_eq!(v["error_details"]["currency"], json!(["value_is_invalid"]));
        s.ok(
            "POST",
            "/customers",
            Some(json!({"customer": {"external_id": "team-2"}})),
        )
        .await;
        let list = s.ok("GET", "/customers?per_page=1&page=1", None).await;
        assert_eq!(list["customers"].as_array().unwrap().len(), 1);
        assert_eq!(list["meta"]["total_count"], 2);
        assert_eq!(list["meta"]["total_pages"], 2);
        assert_eq!(list["meta"]["next_page"], 2);
        // Deleting terminates the customer's subscriptions.
        s.ok(
            "POST",
            "/subscriptions",
            Some(json!({"subscription": {"external_customer_id": "team-1",
            "plan_code": "starter_monthly", "external_id": "site-1"}})),
        )
        .await;
        let d = s.ok("DELETE", "/customers/team-1", None).await;
        assert!(d["customer"]["deleted_at"].is_string());
        let (st, _) = s.call("GET", "/customers/team-1", None).await;
        assert_eq!(st, 404);
        let sub = s.ok("GET", "/subscriptions/site-1", None).await;
        assert_eq!(sub["subscription"]["status"], "terminated");
    }
}

#[tokio::test]
async fn billable_metrics_validate_as_lago() {
    for b in backends() {
        let s = spawn(b).await;
        let seeded = s.ok("GET", "/billable_metrics/storage_gb", None).await;
        assert_eq!(seeded["billable_metric"]["field_name"], "gb_used");
        let (st, v) = s
            .call(
                "POST",
                "/billable_metrics",
                Some(json!({"billable_metric": {"name": "CPU", "code": "cpu",
                "aggregation_type": "sum_agg"}})),
            )
            .await;
        assert_eq!(st, 422);
        assert_eq!(
            v["error_details"]["field_name"],
            json!(["value_is_mandatory"])
        );
        let (st, v) = s
            .call(
                "POST",
                "/billable_metrics",
                Some(json!({"billable_metric": {"name": "CPU", "code": "cpu",
                "aggregation_type": "max_agg", "field_name": "s", "recurring": true}})),
            )
            .await;
        assert_eq!(st, 422);
        assert_eq!(
            v["error_details"]["recurring"],
            json!(["not_compatible_with_aggregation_type"])
        );
        let m = s
            .ok(
                "POST",
                "/billable_metrics",
                Some(json!({"billable_metric": {"name": "Calls", "code": "calls",
                "aggregation_type": "count_agg", "field_name": "ignored"}})),
            )
            .await;
        assert_eq!(m["billable_metric"]["field_name"], json!(null));
        let (st, v) = s
            .call(
                "POST",
                "/billable_metrics",
                Some(json!({"billable_metric": {"name": "Calls", "code": "calls",
                "aggregation_type": "count_agg"}})),
            )
            .await;
        assert_eq!(
            (st, v["error_details"]["code"].clone()),
            (422, json!(["value_already_exist"]))
        );
        let u = s
            .ok(
                "PUT",
                "/billable_metrics/calls",
                Some(json!({"billable_metric": {"name": "API calls"}})),
            )
            .await;
        assert_eq!(u["billable_metric"]["name"], "API calls");
        assert_eq!(u["billable_metric"]["aggregation_type"], "count_agg");
        let list = s.ok("GET", "/billable_metrics", None).await;
        assert_eq!(list["meta"]["total_count"], 2);
        s.ok("DELETE", "/billable_metrics/calls", None).await;
        let (st, v) = s.call("GET", "/billable_metrics/calls", None).await;
        assert_eq!(
            (st, v["code"].clone()),
            (404, json!("billable_metric_not_found"))
        );
    }
}

#[tokio::test]
async fn plans_reference_metrics_by_id_and_validate_charges() {
    for b in backends() {
        let s = spawn(b).await;
        let starter = s.ok("GET", "/plans/starter_monthly", None).await;
        assert_eq!(starter["plan"]["amount_cents"], 1000);
        assert_eq!(
            starter["plan"]["charges"][0]["billable_metric_code"],
            "storage_gb"
        );
        for code in ["trial_monthly", "pro_monthly", "business_monthly"] {
            s.ok("GET", &format!("/plans/{code}"), None).await;
        }
        let metric_id = s.ok("GET", "/billable_metrics/storage_gb", None).await["billable_metric"]
            ["lago_id"]
            .clone();
        let bad = json!({"plan": {"name": "Bad", "code": "bad", "interval": "monthly", "amount_cents": 100,
            "amount_currency": "USD", "pay_in_advance": false, "charges": [{"billable_metric_id": metric_id,
            "charge_model": "graduated", "properties": {"graduated_ranges": [
                {"from_value": 0, "to_value": 10, "flat_amount": "0", "per_unit_amount": "1"},
                {"from_value": 20, "to_value": null, "flat_amount": "0", "per_unit_amount": "1"}]}}]}});
        let (st, v) = s.call("POST", "/plans", Some(bad)).await;
        assert_eq!(st, 422, "{v}");
        assert_eq!(
            v["error_details"]["charges.0.properties.graduated_ranges"],
            json!(["invalid_graduated_ranges"])
        );
        let (st, v) = s
            .call(
                "POST",
                "/plans",
                Some(
                    json!({"plan": {"name": "X", "code": "x", "interval": "daily",
                "amount_cents": -1, "amount_currency": "USD"}}),
                ),
            )
            .await;
        assert_eq!(st, 422);
        assert_eq!(v["error_details"]["interval"], json!(["value_is_invalid"]));
        assert_eq!(
            v["error_details"]["amount_cents"],
            json!(["value_is_out_of_range"])
        );
        let p = s
            .ok("POST", "/plans", Some(json!({"plan": {"name": "Weekly", "code": "weekly", "interval": "weekly",
                "amount_cents": 100, "amount_currency": "USD", "pay_in_advance": true, "trial_period": 7,
                "charges": [{"billable_metric_id": metric_id, "charge_model": "package",
                    "properties": {"amount": "5", "package_size": 10, "free_units": 2}}]}})))
            .await;
        assert_eq!(p["plan"]["charges"][0]["properties"]["amount"], "5");
        assert_eq!(p["plan"]["trial_period"], 7.0);
        let charge_id = p["plan"]["charges"][0]["lago_id"].clone();
        let u = s
            .ok(
                "PUT",
                "/plans/weekly",
                Some(
                    json!({"plan": {"amount_cents": 200, "charges": [{"id": charge_id,
                "properties": {"amount": "6", "package_size": 10}}]}}),
                ),
            )
            .await;
        assert_eq!(u["plan"]["amount_cents"], 200);
        assert_eq!(u["plan"]["interval"], "weekly");
        assert_eq!(u["plan"]["charges"][0]["lago_id"], charge_id);
        assert_eq!(u["plan"]["charges"][0]["properties"]["amount"], "6");
        let (st, v) = s
            .call(
                "POST",
                "/plans",
                Some(json!({"plan": {"name": "W", "code": "weekly",
            "interval": "weekly", "amount_cents": 1, "amount_currency": "USD"}})),
            )
            .await;
        assert_eq!(
            (st, v["error_details"]["code"].clone()),
            (422, json!(["value_already_exist"]))
        );
        s.ok("DELETE", "/plans/weekly", None).await;
        let (st, v) = s.call("GET", "/plans/weekly", None).await;
        assert_eq!((st, v["code"].clone()), (404, json!("plan_not_found")));
    }
}

#[tokio::test]
async fn subscriptions_are_idempotent_and_change_plan_as_lago() {
    for b in backends() {
        let s = spawn(b).await;
        let body = |plan: &str| {
            json!({"subscription": {"external_customer_id": "team-9", "plan_code": plan,
            "external_id": "site-9", "name": "site9.localhost"}})
        };
        let a = s
            .ok("POST", "/subscriptions", Some(body("starter_monthly")))
            .await;
        assert_eq!(a["subscription"]["status"], "active");
        assert_eq!(a["subscription"]["billing_time"], "calendar");
        // The customer was created on the way.
        s.ok("GET", "/customers/team-9", None).await;
        let again = s
            .ok("POST", "/subscriptions", Some(body("starter_monthly")))
            .await;
        assert_eq!(
            a["subscription"]["lago_id"],
            again["subscription"]["lago_id"]
        );
        // Upgrade: immediate, a new subscription under the same external id.
        let up = s
            .ok("POST", "/subscriptions", Some(body("business_monthly")))
            .await;
        assert_ne!(up["subscription"]["lago_id"], a["subscription"]["lago_id"]);
        assert_eq!(up["subscription"]["plan_code"], "business_monthly");
        assert_eq!(up["subscription"]["previous_plan_code"], "starter_monthly");
        assert_eq!(up["subscription"]["status"], "active");
        // Downgrade: at period end.
        let down = s
            .ok("POST", "/subscriptions", Some(body("pro_monthly")))
            .await;
        assert_eq!(
            down["subscription"]["lago_id"],
            up["subscription"]["lago_id"]
        );
        assert_eq!(down["subscription"]["plan_code"], "business_monthly");
        assert_eq!(down["subscription"]["next_plan_code"], "pro_monthly");
        assert!(down["subscription"]["downgrade_plan_date"].is_string());
        // Another customer cannot take the external id.
        let (st, v) = s
            .call(
                "POST",
                "/subscriptions",
                Some(json!({"subscription": {"external_customer_id": "other",
                "plan_code": "starter_monthly", "external_id": "site-9"}})),
            )
            .await;
        assert_eq!(
            (st, v["error_details"]["external_id"].clone()),
            (422, json!(["value_already_exist"]))
        );
        let (st, v) = s
            .call(
                "POST",
                "/subscriptions",
                Some(json!({"subscription": {"external_customer_id": "team-9",
                "plan_code": "gold", "external_id": "site-10"}})),
            )
            .await;
        assert_eq!((st, v["code"].clone()), (404, json!("plan_not_found")));
        let future = s
            .ok("POST", "/subscriptions", Some(json!({"subscription": {"external_customer_id": "team-9",
                "plan_code": "starter_monthly", "external_id": "site-11", "subscription_at": "2099-01-01T00:00:00Z",
                "billing_time": "anniversary"}})))
            .await;
        assert_eq!(future["subscription"]["status"], "pending");
        let list = s
            .ok("GET", "/subscriptions?external_customer_id=team-9", None)
            .await;
        assert_eq!(list["meta"]["total_count"], 1);
        let list = s.ok("GET", "/subscriptions?external_customer_id=team-9&status[]=active&status[]=pending&status[]=terminated", None).await;
        assert_eq!(list["meta"]["total_count"], 4, "{list}");
        let list = s
            .ok("GET", "/subscriptions?plan_code=business_monthly", None)
            .await;
        assert_eq!(list["meta"]["total_count"], 1);
        let t = s.ok("DELETE", "/subscriptions/site-9", None).await;
        assert_eq!(t["subscription"]["status"], "terminated");
        assert!(t["subscription"]["terminated_at"].is_string());
        let (st, _) = s.call("DELETE", "/subscriptions/site-9", None).await;
        assert_eq!(st, 404);
        let c = s
            .ok("DELETE", "/subscriptions/site-11?status=pending", None)
            .await;
        assert_eq!(c["subscription"]["status"], "canceled");
    }
}

#[tokio::test]
async fn events_are_counted_once_and_batches_are_all_or_nothing() {
    for b in backends() {
        let s = spawn(b).await;
        s.ok(
            "POST",
            "/subscriptions",
            Some(json!({"subscription": {"external_customer_id": "t",
            "plan_code": "starter_monthly", "external_id": "site"}})),
        )
        .await;
        let ev = |tx: &str, gb: &str| {
            json!({"transaction_id": tx, "external_subscription_id": "site",
            "code": "storage_gb", "timestamp": null, "properties": {"gb_used": gb}, "precise_total_amount_cents": null})
        };
        let e = s
            .ok(
                "POST",
                "/events",
                Some(json!({"event": ev("tx-1", "12.5")})),
            )
            .await;
        assert_eq!(e["event"]["transaction_id"], "tx-1");
        assert!(e["event"]["timestamp"].as_str().unwrap().ends_with("Z"));
        let (st, v) = s
            .call("POST", "/events", Some(json!({"event": ev("tx-1", "99")})))
            .await;
        assert_eq!(st, 422);
        assert_eq!(
            v["error_details"]["transaction_id"],
            json!(["value_already_exist"])
        );
        let (st, v) = s
            .call(
                "POST",
                "/events/batch",
                Some(json!({"events": [ev("tx-2", "30"), ev("tx-1", "40"), ev("tx-3", "50")]})),
            )
            .await;
        assert_eq!(st, 422);
        assert_eq!(
            v["error_details"],
            json!({"1": {"transaction_id": ["value_already_exist"]}})
        );
        let (st, _) = s.call("GET", "/events/tx-2", None).await;
        assert_eq!(st, 404, "a refused batch leaves nothing behind");
        let (st, v) = s
            .call(
                "POST",
                "/events/batch",
                Some(json!({"events": [ev("tx-4", "1"), {"code": "storage_gb"}]})),
            )
            .await;
        assert_eq!(st, 422);
        assert_eq!(
            v["error_details"]["1"]["transaction_id"],
            json!(["value_is_mandatory"])
        );
        let (st, v) = s
            .call("POST", "/events/batch", Some(json!({"events": []})))
            .await;
        assert_eq!(
            (st, v["error_details"]["events"].clone()),
            (422, json!(["no_events"]))
        );
        let many: Vec<_> = (0..101).map(|i| ev(&format!("m{i}"), "1")).collect();
        let (st, v) = s
            .call("POST", "/events/batch", Some(json!({"events": many})))
            .await;
        assert_eq!(
            (st, v["error_details"]["events"].clone()),
            (422, json!(["too_many_events"]))
        );
        let (st, v) = s
            .call(
                "POST",
                "/events",
                Some(
                    json!({"event": {"transaction_id": "bad-ts", "external_subscription_id": "site",
                "code": "storage_gb", "timestamp": "yesterday"}}),
                ),
            )
            .await;
        assert_eq!(
            (st, v["error_details"]["timestamp"].clone()),
            (422, json!(["invalid_format"]))
        );
        let batch: Vec<_> = (0..100).map(|i| ev(&format!("b{i}"), "1")).collect();
        let r = s
            .ok("POST", "/events/batch", Some(json!({"events": batch})))
            .await;
        assert_eq!(r["events"].as_array().unwrap().len(), 100);
        let got = s.ok("GET", "/events/b7", None).await;
        assert_eq!(got["event"]["properties"]["gb_used"], "1");
        let list = s
            .ok(
                "GET",
                "/events?external_subscription_id=site&per_page=10",
                None,
            )
            .await;
        assert_eq!(list["meta"]["total_count"], 101);
        let usage = s
            .ok(
                "GET",
                "/customers/t/current_usage?external_subscription_id=site",
                None,
            )
            .await;
        let line = &usage["customer_usage"]["charges_usage"][0];
        assert_eq!(line["events_count"], 101);
        assert_eq!(line["units"], "12.5");
        // graduated: 5 GB included, then 0.10 per GB: 7.5 * 0.10 = 0.75
        assert_eq!(line["amount_cents"], 75);
        // Unix seconds with decimals, as strings or numbers.
        let e = s
            .ok("POST", "/events", Some(json!({"event": {"transaction_id": "ts", "external_subscription_id": "site",
                "code": "storage_gb", "timestamp": "1764850000.250", "properties": {"gb_used": 1}}})))
            .await;
        assert_eq!(e["event"]["timestamp"], "2025-12-04T12:06:40.250Z");
    }
}

#[tokio::test]
async fn current_usage_without_an_active_subscription_is_405() {
    for b in backends() {
        let s = spawn(b).await;
        s.ok(
            "POST",
            "/customers",
            Some(json!({"customer": {"external_id": "lonely"}})),
        )
        .await;
        let (st, v) = s
            .call(
                "GET",
                "/customers/lonely/current_usage?external_subscription_id=none",
                None,
            )
            .await;
        assert_eq!(
            (st, v),
            (
                405,
                json!({"status": 405, "error": "Method Not Allowed", "code": "no_active_subscription"})
            )
        );
        let (st, v) = s
            .call(
                "GET",
                "/customers/ghost/current_usage?external_subscription_id=none",
                None,
            )
            .await;
        assert_eq!((st, v["code"].clone()), (404, json!("customer_not_found")));
    }
}

#[tokio::test]
async fn rate_limit_answers_429_with_lago_headers() {
    let s = spawn_with(Backend::Sqlite, |c| c.rate_limit = "3/min".parse().unwrap()).await;
    for _ in 0..3 {
        let r = s
            .http
            .get(format!("{}/api/v1/plans", s.base))
            .bearer_auth(KEY)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        assert_eq!(r.headers()["x-ratelimit-limit"], "3");
    }
    let r = s
        .http
        .get(format!("{}/api/v1/plans", s.base))
        .bearer_auth(KEY)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 429);
    assert_eq!(r.headers()["x-ratelimit-remaining"], "0");
    let reset: u64 = r.headers()["x-ratelimit-reset"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=60).contains(&reset));
    let v: serde_json::Value = r.json().await.unwrap();
    assert_eq!(v["status"], 429);
}

#[tokio::test]
async fn concurrent_creates_of_one_subscription_make_one() {
    for b in backends() {
        let s = std::sync::Arc::new(spawn(b).await);
        let mut tasks = vec![];
        for _ in 0..8 {
            let s = s.clone();
            tasks.push(tokio::spawn(async move {
                s.ok(
                    "POST",
                    "/subscriptions",
                    Some(json!({"subscription": {"external_customer_id": "race",
                    "plan_code": "starter_monthly", "external_id": "site-race"}})),
                )
                .await["subscription"]["lago_id"]
                    .clone()
            }));
        }
        let mut ids = vec![];
        for t in tasks {
            ids.push(t.await.unwrap());
        }
        assert!(ids.iter().all(|i| *i == ids[0]), "{ids:?}");
        let list = s
            .ok(
                "GET",
                "/subscriptions?external_customer_id=race&status[]=active&status[]=terminated",
                None,
            )
            .await;
        assert_eq!(list["meta"]["total_count"], 1);
    }
}

#[tokio::test]
async fn concurrent_duplicates_are_counted_once() {
    for b in backends() {
        let s = std::sync::Arc::new(spawn(b).await);
        s.ok(
            "POST",
            "/subscriptions",
            Some(json!({"subscription": {"external_customer_id": "dup",
            "plan_code": "starter_monthly", "external_id": "site-dup"}})),
        )
        .await;
        let mut tasks = vec![];
        for i in 0..40 {
            let s = s.clone();
            tasks.push(tokio::spawn(async move {
                // Every transaction id is sent twice at once; half go as one-event batches.
                let ev = json!({"transaction_id": format!("c-{}", i / 2), "external_subscription_id": "site-dup",
                                "code": "storage_gb", "properties": {"gb_used": i}});
                if i % 4 < 2 {
                    s.call("POST", "/events", Some(json!({"event": ev}))).await.0
                } else {
                    s.call("POST", "/events/batch", Some(json!({"events": [ev]}))).await.0
                }
            }));
        }
        let mut codes = vec![];
        for t in tasks {
            codes.push(t.await.unwrap());
        }
        assert_eq!(codes.iter().filter(|c| **c == 200).count(), 20, "{codes:?}");
        assert_eq!(codes.iter().filter(|c| **c == 422).count(), 20, "{codes:?}");
        let u = s
            .ok(
                "GET",
                "/customers/dup/current_usage?external_subscription_id=site-dup",
                None,
            )
            .await;
        assert_eq!(u["customer_usage"]["charges_usage"][0]["events_count"], 20);
        let list = s
            .ok("GET", "/events?external_subscription_id=site-dup", None)
            .await;
        assert_eq!(list["meta"]["total_count"], 20);
    }
}

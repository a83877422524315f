use crate::common::*;
use pressoir_billing::money::prorate;
use serde_json::json;
use time::{Date, Duration, Month, OffsetDateTime};

fn month_start(d: Date, back: i32) -> Date {
    let total = d.year() * 12 + d.month() as i32 - 1 - back;
    Date::from_calendar_date(
        total.div_euclid(12),
        Month::try_from((total.rem_euclid(12) + 1) as u8).unwrap(),
        1,
    )
    .unwrap()
}

fn days_in(d: Date) -> i64 {
    d.month().length(d.year()) as i64
}

#[tokio::test]
async fn invoices_are_issued_per_period_and_on_termination() {
    for b in backends() {
        let s = spawn(b).await;
        let today = OffsetDateTime::now_utc().date();
        let m0 = month_start(today, 0);
        let m2 = month_start(today, 2);
        let start = m2 + Duration::days(14);
        let at = format!("{}T00:00:00Z", start);
        let sub = s
            .ok("POST", "/subscriptions", Some(json!({"subscription": {"external_customer_id": "inv",
                "plan_code": "starter_monthly", "external_id": "site-inv", "subscription_at": at}})))
            .await;
        assert_eq!(sub["subscription"]["status"], "active");
        let list = s
            .ok("GET", "/invoices?external_customer_id=inv", None)
            .await;
        let invoices = list["invoices"].as_array().unwrap();
        assert_eq!(invoices.len(), 2, "{list}");
        // Newest first: the full month before this one, then the partial first month.
        let full = &invoices[0];
        let partial = &invoices[1];
        assert_eq!(full["total_amount_cents"], 1000);
        assert_eq!(
            partial["total_amount_cents"],
            prorate(1000, days_in(m2) - 14, days_in(m2))
        );
        assert_eq!(full["status"], "finalized");
        assert_eq!(full["payment_status"], "pending");
        assert_eq!(full["invoice_type"], "subscription");
        let fees = full["fees"].as_array().unwrap();
        assert!(
            fees.iter()
                .any(|f| f["item"]["type"] == "subscription" && f["amount_cents"] == 1000)
        );
        assert!(
            fees.iter()
                .any(|f| f["item"]["code"] == "storage_gb" && f["amount_cents"] == 0)
        );
        assert_eq!(
            full["billing_periods"][0]["invoicing_reason"],
            "subscription_periodic"
        );

        // Usage this month, then termination: the closing invoice bills it with the prorated fee.
        s.ok(
            "POST",
            "/events",
            Some(
                json!({"event": {"transaction_id": "g1", "external_subscription_id": "site-inv",
            "code": "storage_gb", "properties": {"gb_used": 25}}}),
            ),
        )
        .await;
        s.ok("DELETE", "/subscriptions/site-inv", None).await;
        let list = s
            .ok("GET", "/invoices?external_customer_id=inv", None)
            .await;
        let invoices = list["invoices"].as_array().unwrap();
        assert_eq!(invoices.len(), 3);
        let closing = &invoices[0];
        let days_used = (today - m0).whole_days() + 1;
        let fee = prorate(1000, days_used, days_in(m0));
        assert_eq!(closing["total_amount_cents"], fee + 200, "{closing}");
        assert_eq!(
            closing["billing_periods"][0]["invoicing_reason"],
            "subscription_terminating"
        );
        let id = closing["lago_id"].as_str().unwrap().to_string();

        let got = s.ok("GET", &format!("/invoices/{id}"), None).await;
        assert_eq!(got["invoice"]["number"], closing["number"]);
        let f = s.ok("PUT", &format!("/invoices/{id}/finalize"), None).await;
        assert_eq!(f["invoice"]["status"], "finalized");
        let paid = s
            .ok(
                "PUT",
                &format!("/invoices/{id}"),
                Some(json!({"invoice": {"payment_status": "succeeded"}})),
            )
            .await;
        assert_eq!(paid["invoice"]["payment_status"], "succeeded");
        let (st, v) = s.call("POST", &format!("/invoices/{id}/void"), None).await;
        assert_eq!((st, v["code"].clone()), (405, json!("not_voidable")));
        let other = invoices[1]["lago_id"].as_str().unwrap();
        let v = s.ok("POST", &format!("/invoices/{other}/void"), None).await;
        assert_eq!(v["invoice"]["status"], "voided");
        let (st, v) = s.call("GET", "/invoices/nope", None).await;
        assert_eq!((st, v["code"].clone()), (404, json!("invoice_not_found")));
        let voided = s.ok("GET", "/invoices?status=voided", None).await;
        assert_eq!(voided["meta"]["total_count"], 1);

        // The biller issues nothing twice.
        tokio::time::sleep(std::time::Duration::from_millis(450)).await;
        let list = s.ok("GET", "/invoices", None).await;
        assert_eq!(list["meta"]["total_count"], 3);
    }
}

#[tokio::test]
async fn draft_invoices_wait_for_the_grace_period() {
    let s = spawn(Backend::Sqlite).await;
    s.ok(
        "POST",
        "/customers",
        Some(json!({"customer": {"external_id": "g",
        "billing_configuration": {"invoice_grace_period": 3}}})),
    )
    .await;
    let start = format!(
        "{}T00:00:00Z",
        month_start(OffsetDateTime::now_utc().date(), 1)
    );
    s.ok(
        "POST",
        "/subscriptions",
        Some(json!({"subscription": {"external_customer_id": "g",
        "plan_code": "pro_monthly", "external_id": "site-g", "subscription_at": start}})),
    )
    .await;
    let list = s.ok("GET", "/invoices?external_customer_id=g", None).await;
    let inv = &list["invoices"][0];
    assert_eq!(inv["status"], "draft");
    assert_eq!(inv["total_amount_cents"], 2500);
    let id = inv["lago_id"].as_str().unwrap();
    let (st, _) = s.call("POST", &format!("/invoices/{id}/void"), None).await;
    assert_eq!(st, 405);
    let f = s.ok("PUT", &format!("/invoices/{id}/finalize"), None).await;
    assert_eq!(f["invoice"]["status"], "finalized");
}

#[tokio::test]
async fn plans_paid_in_advance_invoice_the_fee_at_the_start() {
    for b in backends() {
        let s = spawn(b).await;
        s.ok(
            "POST",
            "/plans",
            Some(
                json!({"plan": {"name": "Ahead", "code": "ahead", "interval": "monthly",
            "amount_cents": 3100, "amount_currency": "USD", "pay_in_advance": true}}),
            ),
        )
        .await;
        s.ok(
            "POST",
            "/subscriptions",
            Some(json!({"subscription": {"external_customer_id": "adv",
            "plan_code": "ahead", "external_id": "site-adv", "billing_time": "anniversary"}})),
        )
        .await;
        let list = s
            .ok("GET", "/invoices?external_customer_id=adv", None)
            .await;
        assert_eq!(list["meta"]["total_count"], 1, "{list}");
        let inv = &list["invoices"][0];
        // Anniversary: the first period is a full month from today.
        assert_eq!(inv["total_amount_cents"], 3100);
        assert_eq!(
            inv["billing_periods"][0]["invoicing_reason"],
            "subscription_starting"
        );
        assert_eq!(inv["fees"][0]["pay_in_advance"], true);
    }
}

#[tokio::test]
async fn recurring_metrics_carry_units_across_periods() {
    for b in backends() {
        let s = spawn(b).await;
        let mut ids = vec![];
        for (code, recurring) in [("licenses", true), ("licenses_once", false)] {
            let m = s
                .ok(
                    "POST",
                    "/billable_metrics",
                    Some(json!({"billable_metric": {"name": code, "code": code,
                    "aggregation_type": "sum_agg", "field_name": "n", "recurring": recurring}})),
                )
                .await;
            ids.push(m["billable_metric"]["lago_id"].clone());
        }
        s.ok("POST", "/plans", Some(json!({"plan": {"name": "Seats", "code": "seats", "interval": "monthly",
            "amount_cents": 0, "amount_currency": "USD", "charges": [
                {"billable_metric_id": ids[0], "charge_model": "standard", "properties": {"amount": "1"}},
                {"billable_metric_id": ids[1], "charge_model": "standard", "properties": {"amount": "1"}}]}}))).await;
        let today = OffsetDateTime::now_utc().date();
        let m1 = month_start(today, 1);
        s.ok("POST", "/subscriptions", Some(json!({"subscription": {"external_customer_id": "rec",
            "plan_code": "seats", "external_id": "site-rec", "subscription_at": format!("{m1}T00:00:00Z")}}))).await;
        let last_month = m1.midnight().assume_utc().unix_timestamp() + 86_400;
        let mut events = vec![];
        for (i, code) in ["licenses", "licenses_once"].iter().enumerate() {
            events.push(
                json!({"transaction_id": format!("old-{i}"), "external_subscription_id": "site-rec",
                "code": code, "timestamp": last_month, "properties": {"n": 3}}),
            );
            events.push(
                json!({"transaction_id": format!("new-{i}"), "external_subscription_id": "site-rec",
                "code": code, "properties": {"n": 2}}),
            );
        }
        s.ok("POST", "/events/batch", Some(json!({"events": events})))
            .await;
        let u = s
            .ok(
                "GET",
                "/customers/rec/current_usage?external_subscription_id=site-rec",
                None,
            )
            .await;
        let lines = u["customer_usage"]["charges_usage"].as_array().unwrap();
        let by = |code: &str| {
            lines
                .iter()
                .find(|l| l["billable_metric"]["code"] == code)
                .unwrap()
                .clone()
        };
        assert_eq!(by("licenses")["units"], "5.0");
        assert_eq!(by("licenses")["amount_cents"], 500);
        assert_eq!(by("licenses_once")["units"], "2.0");
        assert_eq!(by("licenses_once")["events_count"], 1);
    }
}

#[tokio::test]
async fn weighted_sums_are_invoiced_over_the_whole_period() {
    for b in backends() {
        let s = spawn(b).await;
        let m = s
            .ok(
                "POST",
                "/billable_metrics",
                Some(
                    json!({"billable_metric": {"name": "GB held", "code": "gb_held",
                "aggregation_type": "weighted_sum_agg", "field_name": "gb"}}),
                ),
            )
            .await;
        s.ok("POST", "/plans", Some(json!({"plan": {"name": "Held", "code": "held", "interval": "monthly",
            "amount_cents": 0, "amount_currency": "USD", "charges": [{"billable_metric_id": m["billable_metric"]["lago_id"],
            "charge_model": "standard", "properties": {"amount": "1"}}]}}))).await;
        let m1 = month_start(OffsetDateTime::now_utc().date(), 1);
        let from = m1.midnight().assume_utc().unix_timestamp();
        let len = days_in(m1) * 86_400;
        // Events may arrive before their subscription exists (Lago keeps them by external id).
        s.ok(
            "POST",
            "/events/batch",
            Some(json!({"events": [
            {"transaction_id": "w1", "external_subscription_id": "site-w", "code": "gb_held",
             "timestamp": from + len / 2, "properties": {"gb": 10}},
            {"transaction_id": "w2", "external_subscription_id": "site-w", "code": "gb_held",
             "timestamp": from + 3 * len / 4, "properties": {"gb": -4}}]})),
        )
        .await;
        s.ok("POST", "/subscriptions", Some(json!({"subscription": {"external_customer_id": "w",
            "plan_code": "held", "external_id": "site-w", "subscription_at": format!("{m1}T00:00:00Z")}}))).await;
        let list = s.ok("GET", "/invoices?external_customer_id=w", None).await;
        let inv = &list["invoices"][0];
        // 0 for half the month, 10 for a quarter, 6 for the last quarter: 4 on average.
        let fee = inv["fees"]
            .as_array()
            .unwrap()
            .iter()
            .find(|f| f["item"]["code"] == "gb_held")
            .unwrap()
            .clone();
        assert_eq!(fee["units"], "4.0", "{fee}");
        assert_eq!(inv["total_amount_cents"], 400);
    }
}

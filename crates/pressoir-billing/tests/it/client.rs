use crate::common::*;
use pressoir_billing::client::{
    CustomerInput, ErrorCode, Event, LagoClient, Sent, SubscriptionInput,
};
use pressoir_core::Secret;
use serde_json::json;

fn event(tx: &str, gb: i64) -> Event {
    let mut properties = serde_json::Map::new();
    properties.insert("gb_used".into(), json!(gb));
    Event {
        transaction_id: tx.into(),
        external_subscription_id: "site-c".into(),
        code: "storage_gb".into(),
        timestamp: None,
        properties,
    }
}

#[tokio::test]
async fn the_press_client_drives_the_service() {
    for b in backends() {
        let s = spawn(b).await;
        let lago = LagoClient::new(s.base.clone(), Secret::new(KEY)).unwrap();
        let c = lago
            .upsert_customer(&CustomerInput {
                external_id: "team-c".into(),
                name: Some("Team C".into()),
                ..Default::default()
            })
            .await
            .unwrap();
        assert_eq!(c.name.as_deref(), Some("Team C"));
        let input = SubscriptionInput {
            external_customer_id: "team-c".into(),
            plan_code: "starter_monthly".into(),
            external_id: "site-c".into(),
            ..Default::default()
        };
        let a = lago.create_subscription(&input).await.unwrap();
        let again = lago.create_subscription(&input).await.unwrap();
        assert_eq!(a.lago_id, again.lago_id);
        assert_eq!(a.status.as_deref(), Some("active"));

        assert_eq!(
            lago.send_event(&event("c-1", 12)).await.unwrap(),
            Sent::Accepted
        );
        assert_eq!(
            lago.send_event(&event("c-1", 12)).await.unwrap(),
            Sent::Duplicate
        );
        let out = lago
            .send_events_batch(&[event("c-2", 3), event("c-1", 12), event("c-3", 30)])
            .await
            .unwrap();
        assert_eq!(out, vec![Sent::Accepted, Sent::Duplicate, Sent::Accepted]);
        let usage = lago.current_usage("team-c", "site-c").await.unwrap();
        assert_eq!(usage.charges_usage[0].events_count, 3);
        assert_eq!(usage.charges_usage[0].units, "30.0");
        assert_eq!(usage.amount_cents, 250);

        let err = lago.current_usage("team-c", "nope").await.unwrap_err();
        assert_eq!(err.code(), Some(&ErrorCode::NoActiveSubscription));
        assert!(!err.is_transient());
        let err = lago
            .create_subscription(&SubscriptionInput {
                plan_code: "gold".into(),
                ..input.clone()
            })
            .await
            .unwrap_err();
        assert_eq!(err.code(), Some(&ErrorCode::PlanNotFound));

        let t = lago
            .terminate_subscription("site-c")
            .await
            .unwrap()
            .unwrap();
        assert_eq!(t.status.as_deref(), Some("terminated"));
        assert!(
            lago.terminate_subscription("site-c")
                .await
                .unwrap()
                .is_none()
        );
        let (invoices, meta) = lago.list_invoices(Some("team-c"), 1, 20).await.unwrap();
        assert_eq!(meta.total_count, 1);
        assert!(invoices[0].total_amount_cents >= 250);

        let bad = LagoClient::new(s.base.clone(), Secret::new("wrong")).unwrap();
        let err = bad.list_invoices(None, 1, 1).await.unwrap_err();
        assert_eq!(err.code(), Some(&ErrorCode::Unauthorized));
        let down = LagoClient::new("http://127.0.0.1:9", Secret::new(KEY)).unwrap();
        assert!(
            down.send_event(&event("x", 1))
                .await
                .unwrap_err()
                .is_transient()
        );
    }
}

use crate::common::*;
use pressoir_billing::aggregate::{Agg, HOUR_MS};
use pressoir_billing::store::{self, EventRow, Store};

fn event(tx: usize, ts: i64, value: Option<i64>) -> EventRow {
    EventRow {
        lago_id: format!("id-{tx}"),
        transaction_id: format!("tx-{tx}"),
        external_subscription_id: "sub".into(),
        code: "m".into(),
        timestamp: ts,
        properties: "{}".into(),
        value,
        value_text: value.map(|v| v.to_string()),
        precise_total_amount_cents: None,
        created_at: 0,
    }
}

async fn open(b: Backend) -> (Store, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let c = test_config(b, dir.path());
    (
        Store::open(&c.database_url, &c.schema, 4).await.unwrap(),
        dir,
    )
}

#[tokio::test]
async fn hourly_buckets_agree_with_the_raw_events() {
    for b in backends() {
        let (st, _dir) = open(b).await;
        let base = 1_800_000_000_000i64 / HOUR_MS * HOUR_MS;
        let mut events = Vec::new();
        for i in 0..400usize {
            // spread over ~10 hours, some without a value, some negative
            let ts = base + (i as i64) * 97_000 + 13;
            let v = match i % 7 {
                0 => None,
                3 => Some(-(i as i64) * 1000),
                _ => Some((i as i64 * 7919) % 100_000),
            };
            events.push(event(i, ts, v));
        }
        for chunk in events.chunks(37) {
            let mut tx = st.begin().await.unwrap();
            assert!(
                store::insert_events(tx.conn(), chunk)
                    .await
                    .unwrap()
                    .is_empty()
            );
            tx.commit().await.unwrap();
        }
        let mut c = st.read().await.unwrap();
        for (from, to) in [
            (base, base + 10 * HOUR_MS),
            (base + 1234, base + 3 * HOUR_MS + 5),
            (base + HOUR_MS + 10, base + HOUR_MS + 500_000),
            (base - HOUR_MS, base + 20 * HOUR_MS),
            (base + 2 * HOUR_MS, base + 2 * HOUR_MS),
        ] {
            let fast = store::agg(&mut c, "sub", "m", from, to).await.unwrap();
            let raw = store::agg_raw(&mut c, "sub", "m", from, to).await.unwrap();
            let expected = events
                .iter()
                .filter(|e| e.timestamp >= from && e.timestamp < to)
                .fold(Agg::default(), |a, e| {
                    a.merge(Agg::of_event(e.timestamp, e.value))
                });
            assert_eq!(fast, raw, "{b:?} [{from}, {to})");
            assert_eq!(fast, expected, "{b:?} [{from}, {to})");
        }
        // A duplicate transaction id is reported by index and, rolled back, counts nothing.
        let mut tx = st.begin().await.unwrap();
        let mut dup = event(5, base, Some(1));
        dup.lago_id = "another-id".into();
        let dups = store::insert_events(tx.conn(), &[event(1000, base, Some(1)), dup])
            .await
            .unwrap();
        assert_eq!(dups, vec![1]);
        drop(tx);
        // So is a repeat inside one batch.
        let mut tx = st.begin().await.unwrap();
        let mut again = event(2000, base, Some(1));
        again.lago_id = "again".into();
        let dups = store::insert_events(tx.conn(), &[event(2000, base, Some(1)), again])
            .await
            .unwrap();
        assert_eq!(dups, vec![1]);
        drop(tx);
        let all = store::agg(&mut c, "sub", "m", i64::MIN, i64::MAX)
            .await
            .unwrap();
        assert_eq!(all.events_count, 400);
    }
}

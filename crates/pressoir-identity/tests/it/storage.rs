//! The store on SQLite always, and on PostgreSQL when PRESSOIR_TEST_POSTGRES_URL is set.

use pressoir_identity::admin::{self, NewClient, NewUser};
use pressoir_identity::model::Session;
use pressoir_identity::store::{RefreshUse, Store};

async fn backends() -> Vec<(Store, tempfile::TempDir)> {
    let dir = tempfile::tempdir().unwrap();
    let url = pressoir_core::db::sqlite_url(&dir.path().join("s.sqlite"));
    let mut out = vec![(Store::open(&url, "identity").await.unwrap(), dir)];
    match pressoir_core::db::test_postgres_url() {
        Some(pg) => {
            let schema = format!("t_{}", hex::encode(rand::random::<[u8; 6]>()));
            out.push((
                Store::open(&pg, &schema).await.unwrap(),
                tempfile::tempdir().unwrap(),
            ));
        }
        None => println!("SKIPPED: PostgreSQL variant (PRESSOIR_TEST_POSTGRES_URL is not set)"),
    }
    out
}

#[tokio::test]
async fn realms_clients_users_and_roles_round_trip() {
    for (st, _dir) in backends().await {
        admin::create_realm(&st, "acme").await.unwrap();
        assert!(admin::create_realm(&st, "acme").await.is_err());
        assert!(admin::create_realm(&st, "../etc").await.is_err());
        admin::create_role(&st, "acme", "ops", "operators")
            .await
            .unwrap();
        let mut c = NewClient::new("acme", "svc");
        c.service_accounts = true;
        let secret = admin::create_client(&st, &c).await.unwrap().unwrap();
        assert_eq!(secret.expose().len(), 32);
        let clients = st.clients("acme").await.unwrap();
        assert_eq!(clients.len(), 1);
        assert!(clients[0].service_accounts);
        let u = admin::create_user(
            &st,
            &NewUser {
                realm: "acme".into(),
                username: "Grace".into(),
                email: Some("grace@example.com".into()),
                password: Some(pressoir_core::Secret::new("pw")),
                roles: vec!["ops".into()],
                ..NewUser::default()
            },
        )
        .await
        .unwrap();
        assert_eq!(u.username, "grace");
        let by_email = st
            .user_by_login("acme", "GRACE@example.com")
            .await
            .unwrap()
            .unwrap();
        assert_eq!(by_email.id, u.id);
        assert_eq!(by_email.roles, vec!["ops"]);
        assert!(
            admin::grant_role(&st, "acme", "grace", "nope")
                .await
                .is_err()
        );
        admin::grant_role(&st, "acme", "service-account-svc", "ops")
            .await
            .unwrap();
        let sa = st
            .user_by_login("acme", "service-account-svc")
            .await
            .unwrap()
            .unwrap();
        assert_eq!(sa.roles, vec!["ops"]);
        assert!(
            admin::create_user(
                &st,
                &NewUser {
                    realm: "acme".into(),
                    username: "grace".into(),
                    ..NewUser::default()
                }
            )
            .await
            .is_err()
        );
    }
}

#[tokio::test]
async fn refresh_ids_and_codes_are_single_use() {
    for (st, _dir) in backends().await {
        admin::create_realm(&st, "r").await.unwrap();
        let u = admin::create_user(
            &st,
            &NewUser {
                realm: "r".into(),
                username: "u".into(),
                ..NewUser::default()
            },
        )
        .await
        .unwrap();
        let now = pressoir_core::clock::now_ms();
        let s = Session {
            id: "s1".into(),
            realm: "r".into(),
            user_id: u.id.clone(),
            client_id: "c".into(),
            scope: "openid".into(),
            auth_time_s: now / 1000,
            created_ms: now,
            last_ms: now,
        };
        st.insert_session(&s).await.unwrap();
        st.insert_refresh("j1", "s1", now + 60_000).await.unwrap();
        assert_eq!(
            st.use_refresh("j1").await.unwrap(),
            RefreshUse::Fresh("s1".into())
        );
        assert_eq!(
            st.use_refresh("j1").await.unwrap(),
            RefreshUse::Reused("s1".into())
        );
        assert_eq!(st.use_refresh("j2").await.unwrap(), RefreshUse::Unknown);

        let code = pressoir_identity::store::CodeRow {
            realm: "r".into(),
            client_id: "c".into(),
            session_id: "s1".into(),
            redirect_uri: "http://x/cb".into(),
            scope: "openid".into(),
            nonce: None,
            code_challenge: Some("ch".into()),
            challenge_method: Some("S256".into()),
            expires_ms: now + 60_000,
        };
        st.insert_code("h1", &code).await.unwrap();
        assert!(
            matches!(st.take_code("h1").await.unwrap(), Some(Ok(c)) if c.code_challenge.as_deref() == Some("ch"))
        );
        assert!(matches!(st.take_code("h1").await.unwrap(), Some(Err(sid)) if sid == "s1"));
        assert!(st.take_code("h2").await.unwrap().is_none());

        st.revoke_jti("a", now + 1000).await.unwrap();
        st.revoke_jti("a", now + 1000).await.unwrap();
        assert!(st.is_revoked("a").await.unwrap());
        st.purge(now + 120_000).await.unwrap();
        assert!(!st.is_revoked("a").await.unwrap());
        assert_eq!(st.use_refresh("j1").await.unwrap(), RefreshUse::Unknown);
        assert!(st.delete_session("s1").await.unwrap());
        assert!(st.session("s1").await.unwrap().is_none());
    }
}

#[tokio::test]
async fn the_whole_service_runs_on_postgres() {
    let Some(pg) = pressoir_core::db::test_postgres_url() else {
        println!("SKIPPED: PostgreSQL variant (PRESSOIR_TEST_POSTGRES_URL is not set)");
        return;
    };
    let schema = format!("t_{}", hex::encode(rand::random::<[u8; 6]>()));
    let s = crate::support::spawn_on(&pg, &schema, tempfile::tempdir().unwrap(), |_| {}).await;
    let t = s.admin_tokens().await;
    assert_eq!(
        s.userinfo(t["access_token"].as_str().unwrap())
            .await
            .status(),
        200
    );
    let at = s.press_token().await;
    assert_eq!(s.userinfo(&at).await.status(), 200);
}

use crate::common::*;
use serde_json::json;

#[tokio::test]
async fn a_team_never_sees_another_teams_sites() {
    for b in backends() {
        let cloud = Cloud::start(&b, Opts::default()).await;
        let admin = cloud.admin().await;
        let (admin_site, _) = admin.new_site("adminsite", &["frappe"]).await;

        // The Administrator creates a user and a team for them.
        let (s, body) = admin
            .post("press.api.account.new_user", json!({"email": "ana@example.com", "full_name": "Ana", "password": "ana-password-1"}))
            .await;
        assert_eq!(s, 200, "{body}");
        let (s, body) = admin
            .post(
                "press.api.account.new_team",
                json!({"name": "acme", "title": "Acme", "user": "ana@example.com"}),
            )
            .await;
        assert_eq!(s, 200, "{body}");
        let (s, _) = admin
            .post(
                "press.api.account.new_team",
                json!({"name": "acme", "title": "Acme"}),
            )
            .await;
        assert_eq!(s, 409);

        let ana = cloud.login_token("ana@example.com", "ana-password-1").await;
        let (_, me) = ana.get("press.api.account.me", &[]).await;
        assert_eq!(me["message"]["team"], "acme");

        // Not an administrator.
        let (s, body) = ana
            .post(
                "press.api.account.new_team",
                json!({"name": "evil", "title": "Evil"}),
            )
            .await;
        assert_eq!(
            (s, body["exc_type"].as_str()),
            (403, Some("PermissionError"))
        );
        let (s, _) = ana
            .post(
                "press.api.server.new",
                json!({"name": "x1", "agent_url": "http://127.0.0.1:1", "agent_password": "p"}),
            )
            .await;
        assert_eq!(s, 403);

        // Ana's site is hers; the Administrator's is invisible to her.
        let (ana_site, _) = ana.new_site("anasite", &["frappe"]).await;
        ana.wait_status(&ana_site, "Active", 20).await;
        let (_, list) = ana.get("press.api.site.list", &[]).await;
        let names: Vec<&str> = list["message"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["name"].as_str().unwrap())
            .collect();
        assert_eq!(names, vec![ana_site.as_str()]);
        for (method, body) in [
            ("press.api.site.get", json!({"name": admin_site})),
            ("press.api.site.jobs", json!({"name": admin_site})),
            ("press.api.site.archive", json!({"name": admin_site})),
            (
                "press.api.site.install_app",
                json!({"name": admin_site, "app": "hrms"}),
            ),
        ] {
            let (s, body) = ana.post(method, body).await;
            assert_eq!(
                (s, body["exc_type"].as_str()),
                (404, Some("DoesNotExistError")),
                "{method}: {body}"
            );
        }
        // Asking for the Administrator's team by header falls back to her own.
        let mut sneaky = ana.clone();
        sneaky.team = Some("Administrator".into());
        let (_, list) = sneaky.get("press.api.site.list", &[]).await;
        assert_eq!(list["message"].as_array().unwrap().len(), 1);
        assert_eq!(
            sneaky
                .get("press.api.site.get", &[("name", &admin_site)])
                .await
                .0,
            404
        );
        // A job of another team is as missing as its site.
        let (_, jobs) = admin
            .get("press.api.site.jobs", &[("name", &admin_site)])
            .await;
        let job = jobs["message"][0]["name"].as_str().unwrap();
        assert_eq!(ana.get("press.api.site.job", &[("job", job)]).await.0, 404);

        // The Administrator picks a team with X-Press-Team and sees it.
        let mut as_acme = admin.clone();
        as_acme.team = Some("acme".into());
        let (_, list) = as_acme.get("press.api.site.list", &[]).await;
        assert_eq!(list["message"][0]["name"], ana_site.as_str());
        cloud.shutdown().await;
    }
}

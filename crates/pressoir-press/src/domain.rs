//! Press's rules, without I/O: site names, app lists, and how agent job states move sites.

use crate::error::{Error, Result};

/// Site statuses, as Frappe Press names them.
pub mod site_status {
    pub const PENDING: &str = "Pending";
    pub const INSTALLING: &str = "Installing";
    pub const ACTIVE: &str = "Active";
    pub const INACTIVE: &str = "Inactive";
    pub const BROKEN: &str = "Broken";
    pub const ARCHIVED: &str = "Archived";
    pub const SUSPENDED: &str = "Suspended";
    pub const ALL: [&str; 7] = [
        PENDING, INSTALLING, ACTIVE, INACTIVE, BROKEN, ARCHIVED, SUSPENDED,
    ];
}

/// Agent job statuses on Press's side: the agent's four plus `Undelivered` before delivery.
pub mod job_status {
    pub const UNDELIVERED: &str = "Undelivered";
    pub const PENDING: &str = "Pending";
    pub const RUNNING: &str = "Running";
    pub const SUCCESS: &str = "Success";
    pub const FAILURE: &str = "Failure";

    pub fn is_terminal(s: &str) -> bool {
        s == SUCCESS || s == FAILURE
    }

    /// Maps an agent's status onto ours; unknown text is not accepted.
    pub fn from_agent(s: &str) -> Option<&'static str> {
        match s {
            "Pending" => Some(PENDING),
            "Running" => Some(RUNNING),
            "Success" => Some(SUCCESS),
            "Failure" => Some(FAILURE),
            _ => None,
        }
    }

    /// Order used so an update never moves a job backwards.
    pub fn rank(s: &str) -> u8 {
        match s {
            UNDELIVERED => 0,
            PENDING => 1,
            RUNNING => 2,
            _ => 3,
        }
    }
}

/// The job types Press sends, named as the agent knows them.
pub mod job_type {
    pub const NEW_SITE: &str = "New Site";
    pub const ARCHIVE_SITE: &str = "Archive Site";
    pub const INSTALL_APP: &str = "Install App on Site";
    pub const UNINSTALL_APP: &str = "Uninstall App on Site";
    pub const UPDATE_CONFIG: &str = "Update Site Configuration";
    pub const NEW_SITE_FROM_BACKUP: &str = "New Site from Backup";
    pub const BACKUP_SITE: &str = "Backup Site";
    pub const RESTORE_SITE: &str = "Restore Site";
    pub const DELETE_BACKUP: &str = "Delete Site Backup";
}

/// A backup's full name, `<site>/<id>`: a job's `backup` may be a bare id, of the job's own
/// `site`.
pub fn backup_name(site: Option<&str>, backup: &str) -> String {
    match site {
        Some(site) if !backup.contains('/') => format!("{site}/{backup}"),
        _ => backup.to_string(),
    }
}

/// Frappe Press's `validate_subdomain`.
pub fn validate_subdomain(sub: &str) -> Result<()> {
    if sub.len() < 5 {
        return Err(Error::validation(
            "Subdomain too short. Use 5 or more characters",
        ));
    }
    if sub.len() > 32 {
        return Err(Error::validation(
            "Subdomain too long. Use 32 or less characters",
        ));
    }
    let b = sub.as_bytes();
    let inner_ok = b
        .iter()
        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-');
    let edge = |c: u8| c.is_ascii_lowercase() || c.is_ascii_digit();
    if !inner_ok || !edge(b[0]) || !edge(b[b.len() - 1]) {
        return Err(Error::validation(
            "Subdomain contains invalid characters. Use lowercase characters, numbers and hyphens",
        ));
    }
    Ok(())
}

/// Apps must exist on the bench, `frappe` first, none twice.
pub fn validate_apps(apps: &[String], bench_apps: &[String]) -> Result<()> {
    match apps.first() {
        Some(a) if a == "frappe" => {}
        _ => return Err(Error::validation("the first app must be 'frappe'")),
    }
    for (i, app) in apps.iter().enumerate() {
        if !bench_apps.iter().any(|b| b == app) {
            return Err(Error::validation(format!(
                "app '{app}' is not available on the bench"
            )));
        }
        if apps[..i].contains(app) {
            return Err(Error::validation(format!(
                "app '{app}' appears more than once"
            )));
        }
    }
    Ok(())
}

/// A name safe as an identifier (team, server, bench, user names): no path tricks.
pub fn validate_name(kind: &str, name: &str) -> Result<()> {
    let ok = !name.is_empty()
        && name.len() <= 140
        && !name.contains("..")
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | '@' | '+'));
    if ok {
        Ok(())
    } else {
        Err(Error::validation(format!(
            "{kind} '{name}' must be letters, digits, '-', '_', '.', '@' or '+'"
        )))
    }
}

/// Accepts either a full site name (`mysite.cloud.localhost`) or its subdomain.
pub fn full_site_name(name: &str, domain: &str) -> String {
    let suffix = format!(".{domain}");
    if name.ends_with(&suffix) {
        name.to_string()
    } else {
        format!("{name}{suffix}")
    }
}

/// States from which a site may be archived (Frappe's `@site_action` guard).
pub fn can_archive(status: &str) -> Result<()> {
    use site_status::*;
    if [ACTIVE, BROKEN, INACTIVE, SUSPENDED].contains(&status) {
        Ok(())
    } else {
        Err(Error::validation(format!(
            "Site is in {status} state. Your site have to be active to archive."
        )))
    }
}

/// States in which a site accepts app and config changes.
pub fn can_change(status: &str) -> Result<()> {
    use site_status::*;
    if [ACTIVE, BROKEN, INACTIVE].contains(&status) {
        Ok(())
    } else {
        Err(Error::validation(format!("Site is in {status} state")))
    }
}

/// The site status a job update leads to, if it changes anything (Press's
/// `process_new_site_job_update` and `process_archive_site_job_update`, one job each).
pub fn site_status_after(kind: &str, status: &str, site: &str) -> Option<&'static str> {
    use job_status as j;
    use site_status as s;
    if site == s::ARCHIVED {
        return None;
    }
    // A site made from a backup moves exactly as a new one.
    let kind = match kind {
        job_type::NEW_SITE_FROM_BACKUP => job_type::NEW_SITE,
        k => k,
    };
    let next = match (kind, status) {
        (job_type::NEW_SITE, j::PENDING) | (job_type::NEW_SITE, j::UNDELIVERED) => s::PENDING,
        (job_type::NEW_SITE, j::RUNNING) => s::INSTALLING,
        (job_type::NEW_SITE, j::SUCCESS) => s::ACTIVE,
        (job_type::NEW_SITE, j::FAILURE) => s::BROKEN,
        (job_type::ARCHIVE_SITE, j::SUCCESS) => s::ARCHIVED,
        (job_type::ARCHIVE_SITE, j::FAILURE) => s::BROKEN,
        _ => return None,
    };
    (next != site).then_some(next)
}

/// A new app list after an install or uninstall succeeded.
pub fn apps_after(job_type: &str, apps: &[String], app: &str) -> Option<Vec<String>> {
    match job_type {
        job_type::INSTALL_APP if !apps.iter().any(|a| a == app) => {
            let mut v = apps.to_vec();
            v.push(app.to_string());
            Some(v)
        }
        job_type::UNINSTALL_APP if apps.iter().any(|a| a == app) => {
            Some(apps.iter().filter(|a| *a != app).cloned().collect())
        }
        _ => None,
    }
}

/// A server's status after a reachability check of its agent: Active turns Broken once
/// `failures` consecutive failed checks reach `threshold`, Broken turns Active again on the
/// first answer. Pending, Installing and Archived servers are not the health check's to change.
pub fn server_status_after_check(
    status: &str,
    reachable: bool,
    failures: u32,
    threshold: u32,
) -> Option<&'static str> {
    match (status, reachable) {
        ("Active", false) if failures >= threshold.max(1) => Some("Broken"),
        ("Broken", true) => Some("Active"),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(v: &[&str]) -> Vec<String> {
        v.iter().map(|x| x.to_string()).collect()
    }

    #[test]
    fn server_health_moves_only_active_and_broken() {
        assert_eq!(server_status_after_check("Active", false, 2, 3), None);
        assert_eq!(
            server_status_after_check("Active", false, 3, 3),
            Some("Broken")
        );
        assert_eq!(server_status_after_check("Active", true, 0, 3), None);
        assert_eq!(
            server_status_after_check("Broken", true, 0, 3),
            Some("Active")
        );
        assert_eq!(server_status_after_check("Broken", false, 9, 3), None);
        for other in ["Pending", "Installing", "Archived"] {
            assert_eq!(server_status_after_check(other, false, 99, 3), None);
            assert_eq!(server_status_after_check(other, true, 0, 3), None);
        }
    }

    #[test]
    fn subdomains_follow_frappe_press() {
        assert!(validate_subdomain("mysite").is_ok());
        assert!(validate_subdomain("my-site-01").is_ok());
        for bad in [
            "abcd",
            "-mysite",
            "mysite-",
            "MySite",
            "my_site",
            "my.site",
            &"a".repeat(33),
        ] {
            assert!(validate_subdomain(bad).is_err(), "{bad}");
        }
        assert!(validate_subdomain(&"a".repeat(32)).is_ok());
    }

    #[test]
    fn apps_need_frappe_first_no_duplicates_and_the_bench() {
        let bench = s(&["frappe", "erpnext", "hrms"]);
        assert!(validate_apps(&s(&["frappe", "erpnext"]), &bench).is_ok());
        assert!(validate_apps(&s(&["erpnext", "frappe"]), &bench).is_err());
        assert!(validate_apps(&s(&["frappe", "erpnext", "erpnext"]), &bench).is_err());
        assert!(validate_apps(&s(&["frappe", "nope"]), &bench).is_err());
        assert!(validate_apps(&[], &bench).is_err());
    }

    #[test]
    fn site_status_follows_jobs() {
        use job_status as j;
        assert_eq!(
            site_status_after(job_type::NEW_SITE, j::RUNNING, "Pending"),
            Some("Installing")
        );
        assert_eq!(
            site_status_after(job_type::NEW_SITE, j::SUCCESS, "Installing"),
            Some("Active")
        );
        assert_eq!(
            site_status_after(job_type::NEW_SITE, j::FAILURE, "Installing"),
            Some("Broken")
        );
        assert_eq!(
            site_status_after(job_type::NEW_SITE, j::SUCCESS, "Active"),
            None
        );
        assert_eq!(
            site_status_after(job_type::ARCHIVE_SITE, j::SUCCESS, "Active"),
            Some("Archived")
        );
        assert_eq!(
            site_status_after(job_type::NEW_SITE, j::SUCCESS, "Archived"),
            None
        );
    }

    #[test]
    fn names_cannot_escape() {
        assert!(validate_name("server", "app-server-1").is_ok());
        assert!(validate_name("server", "../x").is_err());
        assert!(validate_name("server", "a/b").is_err());
        assert_eq!(
            full_site_name("mysite", "cloud.localhost"),
            "mysite.cloud.localhost"
        );
        assert_eq!(
            full_site_name("mysite.cloud.localhost", "cloud.localhost"),
            "mysite.cloud.localhost"
        );
    }

    #[test]
    fn app_lists_change_once() {
        let apps = s(&["frappe"]);
        assert_eq!(
            apps_after(job_type::INSTALL_APP, &apps, "hrms"),
            Some(s(&["frappe", "hrms"]))
        );
        assert_eq!(
            apps_after(job_type::INSTALL_APP, &s(&["frappe", "hrms"]), "hrms"),
            None
        );
        assert_eq!(
            apps_after(job_type::UNINSTALL_APP, &s(&["frappe", "hrms"]), "hrms"),
            Some(apps)
        );
    }
}

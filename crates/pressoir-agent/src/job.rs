//! The job model, without I/O: job types and the data each accepts, the plan of steps each
//! runs, statuses, and which parts of the data are secrets.
//!
//! To add a job type: a [`JobSpec`] variant, its parsing in [`JobSpec::parse`], its steps in
//! [`JobSpec::plan`] (new [`StepKind`]s if needed), and the steps in each driver.

use crate::config::Benches;
use crate::names::{AppName, BenchName, SiteName};
use pressoir_core::Secret;
use serde_json::{Map, Value, json};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JobStatus {
    Pending,
    Running,
    Success,
    Failure,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StepStatus {
    Pending,
    Running,
    Success,
    Failure,
    Skipped,
}

macro_rules! text_enum {
    ($t:ty { $($v:ident),* }) => {
        impl $t {
            pub fn as_str(self) -> &'static str {
                match self { $(Self::$v => stringify!($v)),* }
            }
            pub fn parse(s: &str) -> Option<Self> {
                match s { $(stringify!($v) => Some(Self::$v),)* _ => None }
            }
        }
    };
}
text_enum!(JobStatus {
    Pending,
    Running,
    Success,
    Failure
});
text_enum!(StepStatus {
    Pending,
    Running,
    Success,
    Failure,
    Skipped
});

impl JobStatus {
    pub fn is_terminal(self) -> bool {
        matches!(self, JobStatus::Success | JobStatus::Failure)
    }
}

/// One step a driver knows how to run. Its name is what callers see.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum StepKind {
    NewSite,
    InstallApps,
    UpdateSiteConfiguration,
    SetAdministratorPassword,
    EnableScheduler,
    ArchiveSite,
    InstallApp,
    UninstallApp,
    Ping,
    BackupSite,
    UploadBackup,
    DownloadBackup,
    RestoreSite,
    NewSiteFromBackup,
    DeleteBackup,
}

impl StepKind {
    pub const ALL: [StepKind; 15] = [
        StepKind::NewSite,
        StepKind::InstallApps,
        StepKind::UpdateSiteConfiguration,
        StepKind::SetAdministratorPassword,
        StepKind::EnableScheduler,
        StepKind::ArchiveSite,
        StepKind::InstallApp,
        StepKind::UninstallApp,
        StepKind::Ping,
        StepKind::BackupSite,
        StepKind::UploadBackup,
        StepKind::DownloadBackup,
        StepKind::RestoreSite,
        StepKind::NewSiteFromBackup,
        StepKind::DeleteBackup,
    ];

    pub fn name(self) -> &'static str {
        match self {
            StepKind::NewSite => "New Site",
            StepKind::InstallApps => "Install Apps",
            StepKind::UpdateSiteConfiguration => "Update Site Configuration",
            StepKind::SetAdministratorPassword => "Set Administrator Password",
            StepKind::EnableScheduler => "Enable Scheduler",
            StepKind::ArchiveSite => "Archive Site",
            StepKind::InstallApp => "Install App on Site",
            StepKind::UninstallApp => "Uninstall App from Site",
            StepKind::Ping => "Ping Step",
            StepKind::BackupSite => "Backup Site",
            StepKind::UploadBackup => "Upload Site Backup",
            StepKind::DownloadBackup => "Download Site Backup",
            StepKind::RestoreSite => "Restore Site",
            StepKind::NewSiteFromBackup => "New Site from Backup",
            StepKind::DeleteBackup => "Delete Site Backup",
        }
    }

    pub fn from_name(name: &str) -> Option<StepKind> {
        StepKind::ALL.into_iter().find(|k| k.name() == name)
    }
}

/// A site on a bench.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SiteRef {
    pub bench: BenchName,
    pub name: SiteName,
}

#[derive(Debug, Clone)]
pub struct NewSite {
    pub site: SiteRef,
    /// frappe first, no duplicates, all offered by the bench.
    pub apps: Vec<AppName>,
    pub admin_password: Secret,
    pub config: Map<String, Value>,
}

#[derive(Debug, Clone)]
pub struct SiteApp {
    pub site: SiteRef,
    pub app: AppName,
}

#[derive(Debug, Clone)]
pub struct UpdateConfig {
    pub site: SiteRef,
    pub config: Map<String, Value>,
    pub remove: Vec<String>,
}

/// A backup in offsite storage: the site it was taken of, and its id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackupRef {
    pub site: SiteName,
    pub id: String,
}

impl BackupRef {
    /// `<site>/<id>`, or a bare `<id>` of `default_site`. Ids are letters, digits, `-`, `_`
    /// and `.`, not starting with a dot, at most 100 characters (they become object keys).
    pub fn parse(s: &str, default_site: &SiteName) -> Result<BackupRef, String> {
        let (site, id) = match s.rsplit_once('/') {
            Some((site, id)) => (
                SiteName::parse(site).map_err(|m| format!("site part {m}"))?,
                id,
            ),
            None => (default_site.clone(), s),
        };
        let ok = !id.is_empty()
            && id.len() <= 100
            && !id.starts_with('.')
            && id
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
        if !ok {
            return Err("must be a backup id ('<site>/<id>' or '<id>'): letters, digits, '-', '_' and '.', at most 100".into());
        }
        Ok(BackupRef {
            site,
            id: id.to_string(),
        })
    }
}

impl std::fmt::Display for BackupRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.site, self.id)
    }
}

#[derive(Debug, Clone)]
pub struct BackupSite {
    pub site: SiteRef,
    pub with_files: bool,
}

#[derive(Debug, Clone)]
pub struct RestoreSite {
    pub site: SiteRef,
    pub backup: BackupRef,
}

/// "Delete Site Backup": `site` names the job's site (its ordering key), which may be gone.
#[derive(Debug, Clone)]
pub struct DeleteBackup {
    pub site: SiteRef,
    pub backup: BackupRef,
}

#[derive(Debug, Clone)]
pub struct NewSiteFromBackup {
    pub site: SiteRef,
    pub backup: BackupRef,
    /// Apps to install on top of the backup's (each offered by the bench).
    pub apps: Vec<AppName>,
    /// When set, replaces the backup's Administrator password.
    pub admin_password: Option<Secret>,
    pub config: Map<String, Value>,
}

/// A validated job: its type and typed data.
#[derive(Debug, Clone)]
pub enum JobSpec {
    NewSite(NewSite),
    ArchiveSite(SiteRef),
    InstallApp(SiteApp),
    UninstallApp(SiteApp),
    UpdateSiteConfiguration(UpdateConfig),
    BackupSite(BackupSite),
    /// "Archive Site" with `offsite_backup`: a backup first; the site is archived only once
    /// the backup is uploaded.
    BackupAndArchive(BackupSite),
    RestoreSite(RestoreSite),
    NewSiteFromBackup(NewSiteFromBackup),
    DeleteBackup(DeleteBackup),
    Ping,
}

/// The job types this agent accepts.
pub const JOB_TYPES: &[&str] = &[
    "New Site",
    "Archive Site",
    "Install App on Site",
    "Uninstall App on Site",
    "Update Site Configuration",
    "Backup Site",
    "Restore Site",
    "New Site from Backup",
    "Delete Site Backup",
    "Ping Job",
];

/// Site configuration keys the agent owns: a caller may neither set nor remove them.
pub const MANAGED_CONFIG_KEYS: &[&str] = &["db_name", "db_password", "db_type"];

/// A field of a submission that is missing or invalid. `field` is a path such as `data.name`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldError {
    pub field: String,
    pub message: String,
}

impl FieldError {
    pub fn new(field: impl Into<String>, message: impl Into<String>) -> Self {
        FieldError {
            field: field.into(),
            message: message.into(),
        }
    }

    /// Prefixes the path, e.g. `jobs[3]` for an entry of a batch.
    pub fn within(mut self, prefix: &str) -> Self {
        self.field = format!("{prefix}.{}", self.field);
        self
    }
}

impl std::fmt::Display for FieldError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.field, self.message)
    }
}

struct Data<'a>(&'a Map<String, Value>);

impl<'a> Data<'a> {
    fn field(key: &str) -> String {
        format!("data.{key}")
    }

    fn str(&self, key: &str) -> Result<&'a str, FieldError> {
        match self.0.get(key) {
            None | Some(Value::Null) => Err(FieldError::new(Self::field(key), "is required")),
            Some(Value::String(s)) => Ok(s),
            Some(_) => Err(FieldError::new(Self::field(key), "must be a string")),
        }
    }

    fn opt_str(&self, key: &str) -> Result<Option<&'a str>, FieldError> {
        match self.0.get(key) {
            None | Some(Value::Null) => Ok(None),
            Some(_) => self.str(key).map(Some),
        }
    }

    fn opt_object(&self, key: &str) -> Result<Map<String, Value>, FieldError> {
        match self.0.get(key) {
            None | Some(Value::Null) => Ok(Map::new()),
            Some(Value::Object(m)) => Ok(m.clone()),
            Some(_) => Err(FieldError::new(Self::field(key), "must be an object")),
        }
    }

    fn opt_bool(&self, key: &str) -> Result<bool, FieldError> {
        match self.0.get(key) {
            None | Some(Value::Null) => Ok(false),
            Some(Value::Bool(b)) => Ok(*b),
            // Frappe's clients send checkboxes as 0/1.
            Some(Value::Number(n)) if n.as_u64() == Some(0) => Ok(false),
            Some(Value::Number(n)) if n.as_u64() == Some(1) => Ok(true),
            Some(_) => Err(FieldError::new(Self::field(key), "must be a boolean")),
        }
    }

    fn backup(&self, site: &SiteRef) -> Result<BackupRef, FieldError> {
        BackupRef::parse(self.str("backup")?, &site.name)
            .map_err(|m| FieldError::new("data.backup", m))
    }

    fn opt_strings(&self, key: &str) -> Result<Vec<&'a str>, FieldError> {
        match self.0.get(key) {
            None | Some(Value::Null) => Ok(Vec::new()),
            Some(Value::Array(items)) => items
                .iter()
                .enumerate()
                .map(|(i, v)| {
                    v.as_str().ok_or_else(|| {
                        FieldError::new(format!("data.{key}[{i}]"), "must be a string")
                    })
                })
                .collect(),
            Some(_) => Err(FieldError::new(
                Self::field(key),
                "must be a list of strings",
            )),
        }
    }

    fn bench(&self, benches: &Benches) -> Result<BenchName, FieldError> {
        let name = match self.opt_str("bench")? {
            None => return Ok(benches.default_bench().clone()),
            Some(b) => BenchName::parse(b).map_err(|m| FieldError::new("data.bench", m))?,
        };
        if benches.apps(&name).is_none() {
            return Err(FieldError::new(
                "data.bench",
                format!("bench '{name}' does not exist"),
            ));
        }
        Ok(name)
    }

    fn site(&self, benches: &Benches) -> Result<SiteRef, FieldError> {
        let name =
            SiteName::parse(self.str("name")?).map_err(|m| FieldError::new("data.name", m))?;
        Ok(SiteRef {
            bench: self.bench(benches)?,
            name,
        })
    }

    fn app(&self, key: &str, bench: &BenchName, benches: &Benches) -> Result<AppName, FieldError> {
        let app =
            AppName::parse(self.str(key)?).map_err(|m| FieldError::new(Self::field(key), m))?;
        offered(&app, bench, benches).map_err(|m| FieldError::new(Self::field(key), m))?;
        Ok(app)
    }
}

fn offered(app: &AppName, bench: &BenchName, benches: &Benches) -> Result<(), String> {
    match benches.apps(bench) {
        Some(apps) if apps.contains(app) => Ok(()),
        _ => Err(format!("app '{app}' is not available on bench '{bench}'")),
    }
}

fn check_config_keys(config: &Map<String, Value>, field: &str) -> Result<(), FieldError> {
    for key in config.keys() {
        if MANAGED_CONFIG_KEYS.contains(&key.as_str()) {
            return Err(FieldError::new(
                format!("{field}.{key}"),
                "is managed by the agent and cannot be set",
            ));
        }
    }
    Ok(())
}

impl JobSpec {
    /// Validates a submission. Fields the job type does not know are ignored and never stored.
    pub fn parse(job_type: &str, data: &Value, benches: &Benches) -> Result<JobSpec, FieldError> {
        let empty = Map::new();
        let obj = match data {
            Value::Object(m) => m,
            Value::Null => &empty,
            _ => return Err(FieldError::new("data", "must be an object")),
        };
        let d = Data(obj);
        match job_type {
            "New Site" => {
                let site = d.site(benches)?;
                let names = d.opt_strings("apps")?;
                if names.is_empty() {
                    return Err(FieldError::new("data.apps", "must list at least frappe"));
                }
                let mut apps: Vec<AppName> = Vec::with_capacity(names.len());
                for (i, n) in names.iter().enumerate() {
                    let field = format!("data.apps[{i}]");
                    let app = AppName::parse(n).map_err(|m| FieldError::new(&field, m))?;
                    if i == 0 && app.as_str() != "frappe" {
                        return Err(FieldError::new(field, "the first app must be frappe"));
                    }
                    if apps.contains(&app) {
                        return Err(FieldError::new(
                            field,
                            format!("app '{app}' is listed twice"),
                        ));
                    }
                    offered(&app, &site.bench, benches).map_err(|m| FieldError::new(&field, m))?;
                    apps.push(app);
                }
                let pw = d.str("admin_password")?;
                if pw.is_empty() {
                    return Err(FieldError::new("data.admin_password", "must not be empty"));
                }
                let config = d.opt_object("config")?;
                check_config_keys(&config, "data.config")?;
                Ok(JobSpec::NewSite(NewSite {
                    site,
                    apps,
                    admin_password: Secret::new(pw),
                    config,
                }))
            }
            "Archive Site" => {
                let site = d.site(benches)?;
                if d.opt_bool("offsite_backup")? {
                    let with_files = d.opt_bool("with_files")?;
                    Ok(JobSpec::BackupAndArchive(BackupSite { site, with_files }))
                } else {
                    Ok(JobSpec::ArchiveSite(site))
                }
            }
            "Install App on Site" | "Uninstall App on Site" => {
                let site = d.site(benches)?;
                let app = d.app("app", &site.bench, benches)?;
                if job_type == "Install App on Site" {
                    Ok(JobSpec::InstallApp(SiteApp { site, app }))
                } else {
                    if app.as_str() == "frappe" {
                        return Err(FieldError::new("data.app", "frappe cannot be uninstalled"));
                    }
                    Ok(JobSpec::UninstallApp(SiteApp { site, app }))
                }
            }
            "Update Site Configuration" => {
                let site = d.site(benches)?;
                if !obj.contains_key("config") && !obj.contains_key("remove") {
                    return Err(FieldError::new("data.config", "is required"));
                }
                let config = d.opt_object("config")?;
                check_config_keys(&config, "data.config")?;
                let remove: Vec<String> = d
                    .opt_strings("remove")?
                    .into_iter()
                    .map(String::from)
                    .collect();
                for (i, k) in remove.iter().enumerate() {
                    if MANAGED_CONFIG_KEYS.contains(&k.as_str()) {
                        return Err(FieldError::new(
                            format!("data.remove[{i}]"),
                            "is managed by the agent and cannot be removed",
                        ));
                    }
                }
                Ok(JobSpec::UpdateSiteConfiguration(UpdateConfig {
                    site,
                    config,
                    remove,
                }))
            }
            "Backup Site" => {
                let site = d.site(benches)?;
                let with_files = d.opt_bool("with_files")?;
                Ok(JobSpec::BackupSite(BackupSite { site, with_files }))
            }
            "Restore Site" => {
                let site = d.site(benches)?;
                let backup = d.backup(&site)?;
                Ok(JobSpec::RestoreSite(RestoreSite { site, backup }))
            }
            "New Site from Backup" => {
                let site = d.site(benches)?;
                let backup = d.backup(&site)?;
                let mut apps: Vec<AppName> = Vec::new();
                for (i, n) in d.opt_strings("apps")?.iter().enumerate() {
                    let field = format!("data.apps[{i}]");
                    let app = AppName::parse(n).map_err(|m| FieldError::new(&field, m))?;
                    offered(&app, &site.bench, benches).map_err(|m| FieldError::new(&field, m))?;
                    if !apps.contains(&app) {
                        apps.push(app);
                    }
                }
                let admin_password = match d.opt_str("admin_password")? {
                    None => None,
                    Some("") => {
                        return Err(FieldError::new("data.admin_password", "must not be empty"));
                    }
                    Some(p) => Some(Secret::new(p)),
                };
                let config = d.opt_object("config")?;
                check_config_keys(&config, "data.config")?;
                Ok(JobSpec::NewSiteFromBackup(NewSiteFromBackup {
                    site,
                    backup,
                    apps,
                    admin_password,
                    config,
                }))
            }
            "Delete Site Backup" => {
                let site = d.site(benches)?;
                let backup = d.backup(&site)?;
                Ok(JobSpec::DeleteBackup(DeleteBackup { site, backup }))
            }
            "Ping Job" => Ok(JobSpec::Ping),
            other => Err(FieldError::new(
                "job_type",
                format!(
                    "unknown job type '{other}'; expected one of: {}",
                    JOB_TYPES.join(", ")
                ),
            )),
        }
    }

    pub fn job_type(&self) -> &'static str {
        match self {
            JobSpec::NewSite(_) => "New Site",
            JobSpec::ArchiveSite(_) | JobSpec::BackupAndArchive(_) => "Archive Site",
            JobSpec::InstallApp(_) => "Install App on Site",
            JobSpec::UninstallApp(_) => "Uninstall App on Site",
            JobSpec::UpdateSiteConfiguration(_) => "Update Site Configuration",
            JobSpec::BackupSite(_) => "Backup Site",
            JobSpec::RestoreSite(_) => "Restore Site",
            JobSpec::NewSiteFromBackup(_) => "New Site from Backup",
            JobSpec::DeleteBackup(_) => "Delete Site Backup",
            JobSpec::Ping => "Ping Job",
        }
    }

    /// The steps, in order. Callers see the whole plan from the start.
    pub fn plan(&self) -> Vec<StepKind> {
        use StepKind::*;
        match self {
            JobSpec::NewSite(_) => vec![
                NewSite,
                InstallApps,
                UpdateSiteConfiguration,
                SetAdministratorPassword,
                EnableScheduler,
            ],
            JobSpec::ArchiveSite(_) => vec![ArchiveSite],
            JobSpec::BackupAndArchive(_) => vec![BackupSite, UploadBackup, ArchiveSite],
            JobSpec::InstallApp(_) => vec![InstallApp],
            JobSpec::UninstallApp(_) => vec![UninstallApp],
            JobSpec::UpdateSiteConfiguration(_) => vec![UpdateSiteConfiguration],
            // Dump to a work folder, then upload it (manifest last): both may run again.
            JobSpec::BackupSite(_) => vec![BackupSite, UploadBackup],
            // Download and verify everything first; only then swap the site's data.
            JobSpec::RestoreSite(_) => vec![DownloadBackup, RestoreSite],
            JobSpec::NewSiteFromBackup(n) => {
                let mut plan = vec![
                    DownloadBackup,
                    NewSiteFromBackup,
                    InstallApps,
                    UpdateSiteConfiguration,
                ];
                if n.admin_password.is_some() {
                    plan.push(SetAdministratorPassword);
                }
                plan.push(EnableScheduler);
                plan
            }
            // The manifest goes first, so a half-deleted backup is never usable.
            JobSpec::DeleteBackup(_) => vec![DeleteBackup],
            JobSpec::Ping => vec![Ping],
        }
    }

    pub fn site(&self) -> Option<&SiteRef> {
        match self {
            JobSpec::NewSite(n) => Some(&n.site),
            JobSpec::ArchiveSite(s) => Some(s),
            JobSpec::InstallApp(a) | JobSpec::UninstallApp(a) => Some(&a.site),
            JobSpec::UpdateSiteConfiguration(u) => Some(&u.site),
            JobSpec::BackupSite(b) | JobSpec::BackupAndArchive(b) => Some(&b.site),
            JobSpec::RestoreSite(r) => Some(&r.site),
            JobSpec::NewSiteFromBackup(n) => Some(&n.site),
            JobSpec::DeleteBackup(d) => Some(&d.site),
            JobSpec::Ping => None,
        }
    }

    /// Jobs with the same key run one after another, in submission order.
    pub fn ordering_key(&self) -> Option<String> {
        self.site().map(|s| format!("{}/{}", s.bench, s.name))
    }

    /// The data as stored: the typed fields without secrets, and the secrets apart (the store
    /// wipes them when the job ends).
    pub fn stored(&self) -> (Value, Option<Value>) {
        let site = |s: &SiteRef| json!({"bench": s.bench.as_str(), "name": s.name.as_str()});
        match self {
            JobSpec::NewSite(n) => {
                let mut d = site(&n.site);
                d["apps"] = json!(n.apps.iter().map(|a| a.as_str()).collect::<Vec<_>>());
                d["config"] = Value::Object(n.config.clone());
                (
                    d,
                    Some(json!({"admin_password": n.admin_password.expose()})),
                )
            }
            JobSpec::ArchiveSite(s) => (site(s), None),
            JobSpec::InstallApp(a) | JobSpec::UninstallApp(a) => {
                let mut d = site(&a.site);
                d["app"] = json!(a.app.as_str());
                (d, None)
            }
            JobSpec::UpdateSiteConfiguration(u) => {
                let mut d = site(&u.site);
                d["config"] = Value::Object(u.config.clone());
                d["remove"] = json!(u.remove);
                (d, None)
            }
            JobSpec::BackupSite(b) => {
                let mut d = site(&b.site);
                d["with_files"] = json!(b.with_files);
                (d, None)
            }
            JobSpec::BackupAndArchive(b) => {
                let mut d = site(&b.site);
                d["offsite_backup"] = json!(true);
                d["with_files"] = json!(b.with_files);
                (d, None)
            }
            JobSpec::RestoreSite(r) => {
                let mut d = site(&r.site);
                d["backup"] = json!(r.backup.to_string());
                (d, None)
            }
            JobSpec::DeleteBackup(b) => {
                let mut d = site(&b.site);
                d["backup"] = json!(b.backup.to_string());
                (d, None)
            }
            JobSpec::NewSiteFromBackup(n) => {
                let mut d = site(&n.site);
                d["backup"] = json!(n.backup.to_string());
                d["apps"] = json!(n.apps.iter().map(|a| a.as_str()).collect::<Vec<_>>());
                d["config"] = Value::Object(n.config.clone());
                let secrets = n
                    .admin_password
                    .as_ref()
                    .map(|p| json!({"admin_password": p.expose()}));
                (d, secrets)
            }
            JobSpec::Ping => (json!({}), None),
        }
    }

    /// Rebuilds a stored job (to run it, perhaps after a restart).
    pub fn from_stored(
        job_type: &str,
        data: &Value,
        secrets: Option<&Value>,
        benches: &Benches,
    ) -> Result<JobSpec, FieldError> {
        let mut merged = data.clone();
        if let (Value::Object(m), Some(Value::Object(s))) = (&mut merged, secrets) {
            for (k, v) in s {
                m.insert(k.clone(), v.clone());
            }
        }
        JobSpec::parse(job_type, &merged, benches)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn benches() -> Benches {
        Benches::default()
    }

    fn parse(t: &str, v: Value) -> Result<JobSpec, FieldError> {
        JobSpec::parse(t, &v, &benches())
    }

    fn field(t: &str, v: Value) -> String {
        parse(t, v).unwrap_err().field
    }

    #[test]
    fn new_site_is_validated_field_by_field() {
        let ok =
            json!({"name": "a.example.com", "apps": ["frappe", "erpnext"], "admin_password": "pw"});
        let JobSpec::NewSite(n) = parse("New Site", ok).unwrap() else {
            panic!()
        };
        assert_eq!(n.site.bench.as_str(), "bench-0001");
        assert_eq!(n.apps.len(), 2);
        assert_eq!(
            field(
                "New Site",
                json!({"apps": ["frappe"], "admin_password": "x"})
            ),
            "data.name"
        );
        assert_eq!(
            field(
                "New Site",
                json!({"name": "../x", "apps": ["frappe"], "admin_password": "x"})
            ),
            "data.name"
        );
        assert_eq!(
            field("New Site", json!({"name": "a", "admin_password": "x"})),
            "data.apps"
        );
        assert_eq!(
            field(
                "New Site",
                json!({"name": "a", "apps": ["erpnext"], "admin_password": "x"})
            ),
            "data.apps[0]"
        );
        assert_eq!(
            field(
                "New Site",
                json!({"name": "a", "apps": ["frappe", "frappe"], "admin_password": "x"})
            ),
            "data.apps[1]"
        );
        assert_eq!(
            field(
                "New Site",
                json!({"name": "a", "apps": ["frappe", "nope"], "admin_password": "x"})
            ),
            "data.apps[1]"
        );
        assert_eq!(
            field("New Site", json!({"name": "a", "apps": ["frappe"]})),
            "data.admin_password"
        );
        assert_eq!(
            field(
                "New Site",
                json!({"name": "a", "apps": ["frappe"], "admin_password": "x", "bench": "zz"})
            ),
            "data.bench"
        );
        assert_eq!(
            field(
                "New Site",
                json!({"name": "a", "apps": ["frappe"], "admin_password": "x", "config": {"db_name": 1}})
            ),
            "data.config.db_name"
        );
        assert_eq!(field("New Site", json!([1])), "data");
        assert_eq!(field("Make Coffee", json!({})), "job_type");
    }

    #[test]
    fn secrets_are_stored_apart_and_unknown_fields_dropped() {
        let v = json!({"name": "a", "apps": ["frappe"], "admin_password": "s3cret", "mariadb_root_password": "root"});
        let spec = parse("New Site", v).unwrap();
        let (data, secrets) = spec.stored();
        let text = data.to_string();
        assert!(!text.contains("s3cret") && !text.contains("root"), "{text}");
        assert_eq!(secrets.as_ref().unwrap()["admin_password"], "s3cret");
        let back = JobSpec::from_stored("New Site", &data, secrets.as_ref(), &benches()).unwrap();
        let JobSpec::NewSite(n) = back else { panic!() };
        assert_eq!(n.admin_password.expose(), "s3cret");
        assert!(JobSpec::from_stored("New Site", &data, None, &benches()).is_err());
    }

    #[test]
    fn backup_jobs_parse_plan_and_keep_secrets_apart() {
        let b = parse("Backup Site", json!({"name": "a", "with_files": 1})).unwrap();
        let JobSpec::BackupSite(ref bs) = b else {
            panic!()
        };
        assert!(bs.with_files);
        assert_eq!(b.plan(), [StepKind::BackupSite, StepKind::UploadBackup]);
        assert_eq!(b.ordering_key().as_deref(), Some("bench-0001/a"));
        let r = parse(
            "Restore Site",
            json!({"name": "a", "backup": "b.example/x-1"}),
        )
        .unwrap();
        let JobSpec::RestoreSite(ref rs) = r else {
            panic!()
        };
        assert_eq!(rs.backup.to_string(), "b.example/x-1");
        let r = parse("Restore Site", json!({"name": "a", "backup": "x-1"})).unwrap();
        assert_eq!(r.stored().0["backup"], "a/x-1");
        let n = parse(
            "New Site from Backup",
            json!({"name": "n", "backup": "a/x-1", "admin_password": "pw-9"}),
        )
        .unwrap();
        let (data, secrets) = n.stored();
        assert!(!data.to_string().contains("pw-9"));
        assert_eq!(secrets.unwrap()["admin_password"], "pw-9");
        assert!(n.plan().contains(&StepKind::SetAdministratorPassword));
        let n = parse(
            "New Site from Backup",
            json!({"name": "n", "backup": "a/x-1"}),
        )
        .unwrap();
        assert!(!n.plan().contains(&StepKind::SetAdministratorPassword));
        assert!(n.stored().1.is_none());
        let arch = parse("Archive Site", json!({"name": "a", "offsite_backup": true})).unwrap();
        assert_eq!(arch.job_type(), "Archive Site");
        assert_eq!(
            arch.plan(),
            [
                StepKind::BackupSite,
                StepKind::UploadBackup,
                StepKind::ArchiveSite
            ]
        );
        let back =
            JobSpec::from_stored("Archive Site", &arch.stored().0, None, &benches()).unwrap();
        assert!(matches!(back, JobSpec::BackupAndArchive(_)));
        assert_eq!(
            field("Restore Site", json!({"name": "a", "backup": "a/../b"})),
            "data.backup"
        );
        let d = parse("Delete Site Backup", json!({"name": "a", "backup": "x-1"})).unwrap();
        assert_eq!(d.plan(), [StepKind::DeleteBackup]);
        assert_eq!(d.stored().0["backup"], "a/x-1");
        assert_eq!(d.ordering_key().as_deref(), Some("bench-0001/a"));
        assert_eq!(
            field("Delete Site Backup", json!({"name": "a"})),
            "data.backup"
        );
        assert_eq!(
            field(
                "New Site from Backup",
                json!({"name": "a", "backup": "x", "admin_password": ""})
            ),
            "data.admin_password"
        );
    }

    #[test]
    fn plans_and_ordering() {
        let spec = parse(
            "New Site",
            json!({"name": "a", "apps": ["frappe"], "admin_password": "x"}),
        )
        .unwrap();
        let names: Vec<_> = spec.plan().into_iter().map(StepKind::name).collect();
        assert_eq!(
            names,
            [
                "New Site",
                "Install Apps",
                "Update Site Configuration",
                "Set Administrator Password",
                "Enable Scheduler"
            ]
        );
        assert_eq!(spec.ordering_key().as_deref(), Some("bench-0001/a"));
        assert_eq!(parse("Ping Job", json!(null)).unwrap().ordering_key(), None);
        for k in StepKind::ALL {
            assert_eq!(StepKind::from_name(k.name()), Some(k));
        }
        assert_eq!(
            field(
                "Uninstall App on Site",
                json!({"name": "a", "app": "frappe"})
            ),
            "data.app"
        );
        assert_eq!(
            field("Update Site Configuration", json!({"name": "a"})),
            "data.config"
        );
        assert_eq!(
            field(
                "Update Site Configuration",
                json!({"name": "a", "remove": ["db_password"]})
            ),
            "data.remove[0]"
        );
    }
}

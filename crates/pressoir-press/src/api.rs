//! The Frappe-style HTTP surface: `GET|POST /api/method/<dotted.name>`, arguments from the
//! query string and a JSON or form body, answers as `{"message": ...}` and errors in Frappe's
//! body. Handlers are thin: they parse arguments, call `domain` and `store`, and wake the
//! dispatcher.

use crate::auth;
use crate::auth::{Authenticator, Caller, cookie};
use crate::config::Config;
use crate::dispatch::Dispatcher;
use crate::domain::{self, job_status, job_type, site_status};
use crate::error::{Error, ExcType, Result, frappe_response};
use crate::store::{BackupUse, Job, NewJob, Server, Site, Store, new_id};
use axum::Router;
use axum::extract::{ConnectInfo, Path, Request, State};
use axum::response::{IntoResponse, Response};
use axum::routing::any;
use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Method, header};
use pressoir_core::clock::{now_ms, rfc3339_ms};
use pressoir_core::ratelimit::{self, RateLimiter};
use serde_json::{Map, Value, json};
use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

pub(crate) mod site_backups;

pub struct AppState {
    pub store: Store,
    pub auth: Authenticator,
    pub config: Config,
    pub dispatcher: Arc<Dispatcher>,
    ping_cache: Mutex<HashMap<String, (Instant, Value)>>,
    /// Serialized site lists by (team, status, start, limit), valid while the team's
    /// `sites_version` is unchanged; served without asking for the version while younger than
    /// the site cache's lifetime and no site was written through this process since.
    list_cache: Mutex<HashMap<ListKey, CachedList>>,
}

/// (team, status filter, start, limit) of a cached site list.
type ListKey = (String, String, i64, i64);

/// A serialized site list: the team's `sites_version` and the store's site generation it
/// was checked against, and when.
#[derive(Clone)]
struct CachedList {
    version: i64,
    generation: u64,
    checked: Instant,
    body: Bytes,
}

impl AppState {
    pub fn new(store: Store, config: Config, dispatcher: Arc<Dispatcher>) -> Self {
        let mut auth = Authenticator::new(store.clone(), config.session_ttl);
        auth.bearer = config.bearer.as_ref().map(|b| b.0.clone());
        AppState {
            store,
            auth,
            config,
            dispatcher,
            ping_cache: Mutex::new(HashMap::new()),
            list_cache: Mutex::new(HashMap::new()),
        }
    }
}

type St = Arc<AppState>;

/// The Press router, with its rate limit applied.
pub fn router(state: St) -> Router {
    let limiter = RateLimiter::new(state.config.rate_limit);
    let r = Router::new()
        .route("/api/method/{method}", any(method))
        .fallback(not_found)
        .with_state(state);
    ratelimit::apply(
        r,
        limiter,
        rate_key,
        Arc::new(|| {
            frappe_response(
                ExcType::TooManyRequestsError,
                "You hit the rate limit because of too many requests. Please try after sometime.",
            )
        }),
    )
}

/// Per credential: the Authorization header, else the session cookie, else the client IP.
fn rate_key(parts: &http::request::Parts, peer: Option<SocketAddr>) -> String {
    if let Some(v) = parts.headers.get(header::AUTHORIZATION) {
        return ratelimit::credential_key(v.as_bytes());
    }
    if let Some(sid) = cookie(&parts.headers, "sid").filter(|s| s != "Guest" && !s.is_empty()) {
        return ratelimit::credential_key(sid.as_bytes());
    }
    ratelimit::ip_key(peer)
}

async fn not_found() -> Response {
    Error::not_found("Not Found").into_response()
}

/// One call's context.
struct Ctx {
    st: St,
    method: Method,
    headers: HeaderMap,
    host: String,
    ip: Option<IpAddr>,
    args: Map<String, Value>,
    /// The method called, for read-only callers.
    name: String,
}

/// What a read-only caller may call: methods that change nothing and reveal no secret.
const READ_METHODS: &[&str] = &[
    "press.api.account.me",
    "press.api.account.teams",
    "press.api.site.list",
    "press.api.site.all",
    "press.api.site.get",
    "press.api.site.exists",
    "press.api.site.jobs",
    "press.api.site.job",
    "press.api.site.backups",
    "press.api.site.get_site_plans",
    "press.api.plan.list",
    "press.api.server.list",
    "press.api.server.all",
    "press.api.server.get",
    "press.api.server.status",
    "press.api.billing.usage",
    "press.api.billing.invoices",
    "press.api.webhook.events",
    "press.api.webhook.available_events",
    "press.api.webhook.list",
    "press.api.webhook.attempts",
    "press.api.webhook.deliveries",
];

async fn method(State(st): State<St>, Path(name): Path<String>, req: Request) -> Response {
    let ip = req
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0.ip());
    let (parts, body) = req.into_parts();
    let body = match axum::body::to_bytes(body, 4 * 1024 * 1024).await {
        Ok(b) => b,
        Err(_) => return Error::validation("request body too large or unreadable").into_response(),
    };
    let args = match parse_args(parts.uri.query(), &parts.headers, &body) {
        Ok(a) => a,
        Err(e) => return e.into_response(),
    };
    let host = parts
        .headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .unwrap_or("")
        .to_string();
    let ctx = Ctx {
        st,
        method: parts.method,
        headers: parts.headers,
        host,
        ip,
        args,
        name,
    };
    match call(&ctx, &ctx.name).await {
        Ok(r) => r,
        Err(e) => e.into_response(),
    }
}

/// Arguments from the query string, then the body (JSON object or form), body winning.
fn parse_args(
    query: Option<&str>,
    headers: &HeaderMap,
    body: &Bytes,
) -> Result<Map<String, Value>> {
    let mut args = Map::new();
    if let Some(q) = query {
        let pairs: Vec<(String, String)> = serde_urlencoded::from_str(q)
            .map_err(|_| Error::validation("malformed query string"))?;
        for (k, v) in pairs {
            args.insert(k, Value::String(v));
        }
    }
    let trimmed = body.iter().all(|b| b.is_ascii_whitespace());
    if trimmed {
        return Ok(args);
    }
    let ctype = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    if ctype.starts_with("application/x-www-form-urlencoded") || ctype.starts_with("multipart/") {
        let pairs: Vec<(String, String)> = serde_urlencoded::from_bytes(body)
            .map_err(|_| Error::validation("malformed form body"))?;
        for (k, v) in pairs {
            args.insert(k, Value::String(v));
        }
        return Ok(args);
    }
    // JSON, whatever the content type says (curl -d sends form's type with JSON text).
    match serde_json::from_slice::<Value>(body) {
        Ok(Value::Object(o)) => args.extend(o),
        Ok(_) => return Err(Error::validation("the request body must be a JSON object")),
        Err(e) => {
            if ctype.starts_with("application/json") || body.first() == Some(&b'{') {
                return Err(Error::validation(format!("malformed JSON body: {e}")));
            }
            let pairs: Vec<(String, String)> = serde_urlencoded::from_bytes(body)
                .map_err(|_| Error::validation("malformed request body"))?;
            for (k, v) in pairs {
                args.insert(k, Value::String(v));
            }
        }
    }
    Ok(args)
}

impl Ctx {
    fn str_arg(&self, key: &str) -> Option<String> {
        match self.args.get(key)? {
            Value::String(s) => Some(s.clone()),
            Value::Null => None,
            other => Some(other.to_string()),
        }
    }

    fn required(&self, key: &str) -> Result<String> {
        self.str_arg(key)
            .filter(|s| !s.is_empty())
            .ok_or_else(|| Error::validation(format!("missing argument '{key}'")))
    }

    /// An object argument, given as JSON or as a JSON string (as form and query clients send).
    fn obj_arg(&self, key: &str) -> Result<Option<Map<String, Value>>> {
        match self.args.get(key) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::Object(o)) => Ok(Some(o.clone())),
            Some(Value::String(s)) if s.is_empty() => Ok(None),
            Some(Value::String(s)) => match serde_json::from_str::<Value>(s) {
                Ok(Value::Object(o)) => Ok(Some(o)),
                _ => Err(Error::validation(format!(
                    "argument '{key}' must be a JSON object"
                ))),
            },
            Some(_) => Err(Error::validation(format!(
                "argument '{key}' must be a JSON object"
            ))),
        }
    }

    async fn caller(&self) -> Result<Caller> {
        let c = self
            .st
            .auth
            .authenticate(&self.method, &self.headers, &self.host)
            .await?
            .ok_or_else(|| Error::auth("Not Permitted"))?;
        if c.read_only && !READ_METHODS.contains(&self.name.as_str()) {
            return Err(Error::permission(format!(
                "the token grants read-only access: {} is not a read method",
                self.name
            )));
        }
        Ok(c)
    }

    async fn admin(&self) -> Result<Caller> {
        let c = self.caller().await?;
        if !c.is_admin {
            return Err(Error::permission("Only the Administrator can do this"));
        }
        Ok(c)
    }

    /// The team acting: `X-Press-Team` when the caller belongs to it (any team for the
    /// Administrator), else the caller's default team, as Frappe Press falls back.
    async fn team(&self, c: &Caller) -> Result<String> {
        if let Some(t) = self
            .headers
            .get("x-press-team")
            .and_then(|v| v.to_str().ok())
            .filter(|t| !t.is_empty())
        {
            let ok = if c.is_admin {
                self.st.store.team(t).await?.is_some()
            } else {
                self.st.store.is_member(t, &c.user).await?
            };
            if ok {
                return Ok(t.to_string());
            }
        }
        if let Some(t) = &c.default_team {
            return Ok(t.clone());
        }
        self.st
            .store
            .teams_of(&c.user)
            .await?
            .into_iter()
            .next()
            .ok_or_else(|| Error::auth(format!("User {} is not part of any team", c.user)))
    }

    /// A site of the caller's team (any team's for the Administrator); another team's site
    /// answers exactly as a missing one.
    async fn site(&self, c: &Caller, name: &str) -> Result<Site> {
        let full = domain::full_site_name(name, &self.st.config.domain);
        let site = if c.is_admin && self.headers.get("x-press-team").is_none() {
            self.st.store.site(None, &full).await?
        } else {
            let team = self.team(c).await?;
            self.st.store.site(Some(&team), &full).await?
        };
        site.ok_or_else(|| Error::not_found(format!("Site {full} not found")))
    }
}

fn ok(message: Value) -> Response {
    axum::Json(json!({ "message": message })).into_response()
}

async fn call(ctx: &Ctx, name: &str) -> Result<Response> {
    match name {
        "ping" => Ok(ok(json!("pong"))),
        "login" => login(ctx).await,
        "logout" => logout(ctx).await,
        "frappe.auth.get_logged_user" => get_logged_user(ctx).await,
        "press.api.callbacks.agent_jobs" => agent_callback(ctx).await,
        "press.api.account.me" => me(ctx).await,
        "press.api.account.create_api_secret" => create_api_secret(ctx).await,
        "press.api.account.teams" => teams(ctx).await,
        "press.api.account.new_team" => new_team(ctx).await,
        "press.api.account.new_user" => new_user(ctx).await,
        "press.api.account.add_team_member" => add_team_member(ctx).await,
        "press.api.site.new" => site_new(ctx).await,
        "press.api.site.list" | "press.api.site.all" => site_list(ctx).await,
        "press.api.site.get" => site_get(ctx).await,
        "press.api.site.exists" => site_exists(ctx).await,
        "press.api.site.jobs" => site_jobs(ctx).await,
        "press.api.site.job" => site_job(ctx).await,
        "press.api.site.archive" => site_archive(ctx).await,
        "press.api.site.install_app" => site_app(ctx, job_type::INSTALL_APP).await,
        "press.api.site.uninstall_app" => site_app(ctx, job_type::UNINSTALL_APP).await,
        "press.api.site.update_config" => site_update_config(ctx).await,
        "press.api.site.backup" => site_backups::backup(ctx).await,
        "press.api.site.backups" => site_backups::backups(ctx).await,
        "press.api.site.restore" => site_backups::restore(ctx).await,
        "press.api.site.get_site_plans" | "press.api.plan.list" => plans(ctx).await,
        "press.api.server.list" | "press.api.server.all" => server_list(ctx).await,
        "press.api.server.get" => server_get(ctx).await,
        "press.api.server.status" => server_status(ctx).await,
        "press.api.server.new" => server_new(ctx).await,
        "press.api.site.change_plan" => {
            let c = ctx.caller().await?;
            let site = ctx.site(&c, &ctx.required("name")?).await?;
            crate::billing::api::change_plan(&ctx.st.store, &site, &ctx.required("plan")?).await
        }
        m if m.starts_with("press.api.billing.") => {
            let c = ctx.caller().await?;
            let team = ctx.team(&c).await?;
            crate::billing::api::call(
                &ctx.st.store,
                ctx.st.config.billing.as_ref(),
                m,
                &team,
                &ctx.args,
            )
            .await
        }
        m if m.starts_with("press.api.webhook.") => {
            let c = ctx.caller().await?;
            let team = ctx.team(&c).await;
            crate::webhooks::api::call(
                &ctx.st.store,
                &ctx.st.config.webhooks,
                m,
                &c,
                team,
                &ctx.args,
            )
            .await
        }
        _ => {
            ctx.caller().await?;
            Err(Error::not_found(format!("method '{name}' not found")))
        }
    }
}

// ---------- authentication ----------

fn session_cookies(sid: &str, user: &str, full_name: &str, ttl: Duration) -> Vec<HeaderValue> {
    let age = ttl.as_secs();
    let enc = |s: &str| {
        s.replace(
            |c: char| !c.is_ascii_alphanumeric() && c != '@' && c != '.' && c != '-',
            "_",
        )
    };
    [
        format!("sid={sid}; Path=/; HttpOnly; SameSite=Lax; Max-Age={age}"),
        format!("user_id={}; Path=/; SameSite=Lax; Max-Age={age}", enc(user)),
        format!(
            "full_name={}; Path=/; SameSite=Lax; Max-Age={age}",
            enc(full_name)
        ),
        format!("system_user=yes; Path=/; SameSite=Lax; Max-Age={age}"),
    ]
    .into_iter()
    .filter_map(|c| HeaderValue::from_str(&c).ok())
    .collect()
}

async fn do_login(ctx: &Ctx) -> Result<(crate::store::User, String, Vec<HeaderValue>)> {
    let usr = ctx.str_arg("usr").unwrap_or_default();
    let pwd = ctx.str_arg("pwd").unwrap_or_default();
    let user = ctx.st.auth.login(&usr, &pwd, ctx.ip).await?;
    let (sid, _csrf) = ctx.st.auth.start_session(&user.name).await?;
    let cookies = session_cookies(&sid, &user.name, &user.full_name, ctx.st.config.session_ttl);
    Ok((user, sid, cookies))
}

fn with_cookies(mut r: Response, cookies: Vec<HeaderValue>) -> Response {
    for c in cookies {
        r.headers_mut().append(header::SET_COOKIE, c);
    }
    r
}

async fn login(ctx: &Ctx) -> Result<Response> {
    let (user, _sid, cookies) = do_login(ctx).await?;
    let body = json!({"message": "Logged In", "home_page": "/app", "full_name": user.full_name});
    Ok(with_cookies(axum::Json(body).into_response(), cookies))
}

async fn logout(ctx: &Ctx) -> Result<Response> {
    if let Ok(Some(c)) = ctx
        .st
        .auth
        .authenticate(&Method::GET, &ctx.headers, &ctx.host)
        .await
    {
        ctx.st.auth.end_session(&c).await?;
    }
    let gone = [
        "sid=Guest; Path=/; HttpOnly; SameSite=Lax; Max-Age=0",
        "user_id=Guest; Path=/; Max-Age=0",
    ]
    .iter()
    .filter_map(|c| HeaderValue::from_str(c).ok())
    .collect();
    Ok(with_cookies(axum::Json(json!({})).into_response(), gone))
}

async fn get_logged_user(ctx: &Ctx) -> Result<Response> {
    if ctx.args.contains_key("usr") || ctx.args.contains_key("pwd") {
        let (user, sid, cookies) = do_login(ctx).await?;
        let body = json!({"message": user.name, "sid": sid, "full_name": user.full_name});
        return Ok(with_cookies(axum::Json(body).into_response(), cookies));
    }
    let c = ctx.caller().await?;
    Ok(ok(json!(c.user)))
}

async fn me(ctx: &Ctx) -> Result<Response> {
    let c = ctx.caller().await?;
    let team = ctx.team(&c).await?;
    let teams = ctx.st.store.teams_of(&c.user).await?;
    Ok(ok(
        json!({"user": c.user, "full_name": c.full_name, "team": team, "teams": teams, "is_admin": c.is_admin}),
    ))
}

async fn create_api_secret(ctx: &Ctx) -> Result<Response> {
    let c = ctx.caller().await?;
    let key = auth::random_token(8)[..15].to_string();
    let secret = auth::random_token(16);
    let hash = pressoir_core::TokenHash::of(secret.as_bytes()).to_hex();
    let key = ctx.st.store.set_api_secret(&c.user, &key, &hash).await?;
    ctx.st.auth.forget_key(&key);
    Ok(ok(json!({"api_key": key, "api_secret": secret})))
}

async fn teams(ctx: &Ctx) -> Result<Response> {
    let c = ctx.caller().await?;
    let rows = if c.is_admin {
        ctx.st.store.teams().await?
    } else {
        let mut v = Vec::new();
        for t in ctx.st.store.teams_of(&c.user).await? {
            if let Some(t) = ctx.st.store.team(&t).await? {
                v.push(t);
            }
        }
        v
    };
    let list: Vec<Value> = rows
        .iter()
        .map(|t| json!({"name": t.name, "team_title": t.title, "user": t.owner, "enabled": t.enabled == 1, "creation": rfc3339_ms(t.created)}))
        .collect();
    Ok(ok(Value::Array(list)))
}

async fn new_team(ctx: &Ctx) -> Result<Response> {
    let c = ctx.admin().await?;
    let title = ctx
        .str_arg("title")
        .or_else(|| ctx.str_arg("team_title"))
        .or_else(|| ctx.str_arg("name"));
    let title = title
        .filter(|t| !t.is_empty())
        .ok_or_else(|| Error::validation("missing argument 'title'"))?;
    let name = ctx.str_arg("name").unwrap_or_else(|| auth::random_token(5));
    let owner = ctx.str_arg("user").unwrap_or(c.user.clone());
    let team = crate::admin_new_team(&ctx.st.store, &name, &title, &owner).await?;
    ctx.st.auth.forget_user(&owner);
    Ok(ok(
        json!({"name": team, "team_title": title, "user": owner}),
    ))
}

async fn new_user(ctx: &Ctx) -> Result<Response> {
    ctx.admin().await?;
    let name = ctx
        .str_arg("email")
        .or_else(|| ctx.str_arg("usr"))
        .or_else(|| ctx.str_arg("name"))
        .ok_or_else(|| Error::validation("missing argument 'email'"))?;
    let password = ctx.required("password")?;
    let full_name = ctx.str_arg("full_name").unwrap_or_else(|| name.clone());
    let team = ctx.str_arg("team");
    crate::admin_new_user(&ctx.st.store, &name, &full_name, &password, team.as_deref()).await?;
    Ok(ok(
        json!({"name": name, "full_name": full_name, "team": team}),
    ))
}

async fn add_team_member(ctx: &Ctx) -> Result<Response> {
    ctx.admin().await?;
    let team = ctx.required("team")?;
    let user = ctx.required("user")?;
    crate::admin_add_member(&ctx.st.store, &team, &user).await?;
    ctx.st.auth.forget_user(&user);
    Ok(ok(json!({"team": team, "user": user})))
}

/// Frappe Press's agent callback: a batch of job JSON pushed by the agent of `server`,
/// authenticated with that server's agent password.
async fn agent_callback(ctx: &Ctx) -> Result<Response> {
    let server = ctx.required("server")?;
    let presented = ctx
        .headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            v.strip_prefix("Bearer ")
                .or_else(|| v.strip_prefix("bearer "))
        })
        .ok_or_else(|| Error::auth("Not Permitted"))?;
    let row = ctx.st.store.server(&server).await?;
    let valid = row.as_ref().is_some_and(|s| {
        pressoir_core::Secret::new(s.agent_password.clone()).matches(presented.trim().as_bytes())
    });
    if !valid {
        return Err(Error::auth("Not Permitted"));
    }
    let jobs = match ctx.args.get("jobs") {
        Some(Value::Array(a)) => a.clone(),
        _ => return Err(Error::validation("'jobs' must be a list of jobs")),
    };
    if jobs.len() > 1000 {
        return Err(Error::validation("at most 1000 jobs per push"));
    }
    let accepted = ctx.st.dispatcher.apply(&server, &jobs, |_| None).await?;
    Ok(ok(json!({"accepted": accepted})))
}

// ---------- sites ----------

/// A site as the API shows it; serialized straight from the row, without a `Value` tree.
#[derive(serde::Serialize)]
struct SiteView<'a> {
    name: &'a str,
    host_name: &'a str,
    status: &'a str,
    plan: &'a str,
    apps: Vec<String>,
    server: &'a str,
    bench: &'a str,
    group: &'a str,
    team: &'a str,
    subdomain: &'a str,
    domain: &'a str,
    creation: String,
    modified: String,
}

impl<'a> SiteView<'a> {
    fn of(s: &'a Site) -> Self {
        SiteView {
            name: &s.name,
            host_name: &s.name,
            status: &s.status,
            plan: &s.plan,
            apps: s.app_list(),
            server: &s.server,
            bench: &s.bench,
            group: &s.bench,
            team: &s.team,
            subdomain: &s.subdomain,
            domain: &s.domain,
            creation: rfc3339_ms(s.created),
            modified: rfc3339_ms(s.modified),
        }
    }
}

pub(crate) fn site_json(s: &Site) -> Value {
    serde_json::to_value(SiteView::of(s)).unwrap_or(Value::Null)
}

pub(crate) fn job_summary(j: &Job) -> Value {
    let status = if j.status == job_status::UNDELIVERED {
        job_status::PENDING
    } else {
        j.status.as_str()
    };
    json!({
        "name": j.name,
        "job_type": j.job_type,
        "status": status,
        "delivery_status": j.status,
        "site": j.site_name,
        "server": j.server,
        "creation": rfc3339_ms(j.created),
        "start": j.started.map(rfc3339_ms),
        "end": j.ended.map(rfc3339_ms),
        "duration": j.duration_ms.map(|d| d as f64 / 1000.0),
    })
}

fn job_detail(j: &Job) -> Value {
    let mut v = job_summary(j);
    let steps: Vec<Value> = serde_json::from_str::<Vec<Value>>(&j.steps)
        .unwrap_or_default()
        .into_iter()
        .map(|s| {
            json!({
                "step_name": s["name"],
                "status": s["status"],
                "start": s.get("started_at").cloned().unwrap_or(Value::Null),
                "end": s.get("ended_at").cloned().unwrap_or(Value::Null),
                "duration": s.get("duration_ms").and_then(|d| d.as_f64()).map(|d| d / 1000.0),
                "output": s.get("output").cloned().unwrap_or(Value::Null),
            })
        })
        .collect();
    v["steps"] = Value::Array(steps);
    v["error"] = j.error.clone().map(Value::String).unwrap_or(Value::Null);
    v["result"] = j
        .result
        .as_deref()
        .and_then(|r| serde_json::from_str(r).ok())
        .unwrap_or(Value::Null);
    v
}

const NEW_SITE_STEPS: [&str; 5] = [
    "New Site",
    "Install Apps",
    "Update Site Configuration",
    "Set Administrator Password",
    "Enable Scheduler",
];

async fn pick_server(ctx: &Ctx, team: &str, wanted: Option<String>) -> Result<Server> {
    let usable = |s: &Server| s.status == "Active" && (s.team == team || s.use_for_new_sites == 1);
    match wanted {
        Some(name) => {
            let s = ctx.st.store.server(&name).await?;
            match s {
                Some(s) if usable(&s) => Ok(s),
                Some(s) if s.team == team => {
                    Err(Error::validation(format!("Server {name} is {}", s.status)))
                }
                _ => Err(Error::not_found(format!("Server {name} not found"))),
            }
        }
        None => ctx
            .st
            .store
            .servers()
            .await?
            .into_iter()
            .find(|s| usable(s))
            .ok_or_else(|| Error::validation("no server is available for new sites")),
    }
}

async fn site_new(ctx: &Ctx) -> Result<Response> {
    let c = ctx.caller().await?;
    let team = ctx.team(&c).await?;
    let spec = ctx
        .obj_arg("site")?
        .ok_or_else(|| Error::validation("missing argument 'site'"))?;
    let text = |k: &str| {
        spec.get(k)
            .and_then(|v| v.as_str())
            .map(|s| s.to_string())
            .filter(|s| !s.is_empty())
    };
    let sub = text("name")
        .or_else(|| text("subdomain"))
        .ok_or_else(|| Error::validation("site.name is required"))?;
    domain::validate_subdomain(&sub)?;
    if let Some(d) = text("domain")
        && d != ctx.st.config.domain
    {
        return Err(Error::not_found(format!("Root Domain {d} does not exist")));
    }
    let apps: Vec<String> = match spec.get("apps") {
        None | Some(Value::Null) => vec!["frappe".into()],
        Some(Value::Array(a)) => a
            .iter()
            .map(|v| {
                v.as_str()
                    .map(|s| s.to_string())
                    .or_else(|| v.get("app").and_then(|a| a.as_str()).map(|s| s.to_string()))
                    .ok_or_else(|| Error::validation("site.apps must be a list of app names"))
            })
            .collect::<Result<_>>()?,
        Some(_) => return Err(Error::validation("site.apps must be a list of app names")),
    };
    let plan_name = text("plan").ok_or_else(|| Error::validation("site.plan is required"))?;
    let plan = ctx.st.store.plan(&plan_name).await?;
    let plan = plan
        .filter(|p| p.enabled == 1)
        .ok_or_else(|| Error::not_found(format!("Plan {plan_name} does not exist")))?;
    let t = ctx
        .st
        .store
        .team(&team)
        .await?
        .ok_or_else(|| Error::auth("Invalid Team"))?;
    if t.enabled != 1 {
        return Err(Error::permission("Invalid Team"));
    }
    let server = pick_server(ctx, &team, text("server")).await?;
    let benches = ctx.st.store.benches(&server.name).await?;
    let bench = match text("bench").or_else(|| text("group")) {
        Some(b) => benches.into_iter().find(|x| x.name == b).ok_or_else(|| {
            Error::not_found(format!("Bench {b} not found on server {}", server.name))
        })?,
        None => benches.into_iter().next().ok_or_else(|| {
            Error::validation(format!("server {} has no active bench", server.name))
        })?,
    };
    domain::validate_apps(&apps, &bench.app_list())?;
    // `backup`: the new site starts from one of the team's backups, with its apps.
    let from_backup = match text("backup") {
        Some(b) => Some(site_backups::usable_backup(ctx, &c, &b).await?),
        None => None,
    };
    let site_apps = match &from_backup {
        Some((_, of)) => {
            let mut all = of.app_list();
            let extra: Vec<String> = apps.iter().filter(|a| !all.contains(a)).cloned().collect();
            all.extend(extra);
            all
        }
        None => apps.clone(),
    };
    let mut config = match spec.get("config") {
        None | Some(Value::Null) => Map::new(),
        Some(Value::Object(o)) => o.clone(),
        Some(_) => return Err(Error::validation("site.config must be an object")),
    };
    config.insert(
        "plan_limit".into(),
        json!({"max_database_usage": plan.max_database_mb, "max_storage_usage": plan.max_storage_mb}),
    );
    config.insert(
        "rate_limit".into(),
        json!({"limit": plan.cpu_time_per_day * 3600, "window": 86400}),
    );
    let name = format!("{sub}.{}", ctx.st.config.domain);
    let now = now_ms();
    let site = Site {
        id: new_id(),
        name: name.clone(),
        subdomain: sub,
        domain: ctx.st.config.domain.clone(),
        team,
        plan: plan.name.clone(),
        server: server.name.clone(),
        bench: bench.name.clone(),
        status: site_status::PENDING.into(),
        apps: serde_json::to_string(&site_apps).unwrap_or_default(),
        config: Value::Object(config.clone()).to_string(),
        created: now,
        modified: now,
    };
    let job = match &from_backup {
        Some((backup, _)) => site_backups::new_site_from_backup_job(
            &server.name,
            &name,
            &bench.name,
            &apps,
            &config,
            backup,
        ),
        None => NewJob {
            server: server.name.clone(),
            job_type: job_type::NEW_SITE.into(),
            data: json!({"name": name, "apps": apps, "bench": bench.name, "config": config}),
            steps: NEW_SITE_STEPS.iter().map(|s| s.to_string()).collect(),
        },
    };
    let reads = from_backup.as_ref().map(|(name, of)| BackupUse::Reads {
        site_id: &of.id,
        name,
    });
    let job_name = ctx.st.store.insert_site(&site, &job, reads).await?;
    ctx.st.dispatcher.wake();
    Ok(ok(json!({"site": name, "job": job_name})))
}

async fn site_list(ctx: &Ctx) -> Result<Response> {
    let c = ctx.caller().await?;
    let team = ctx.team(&c).await?;
    let filter = ctx.obj_arg("site_filter").ok().flatten();
    let status = filter
        .as_ref()
        .and_then(|f| {
            f.get("status")
                .and_then(|s| s.as_str())
                .map(|s| s.to_string())
        })
        .or_else(|| ctx.str_arg("status"))
        .filter(|s| !s.is_empty() && s != "All");
    if let Some(s) = &status
        && !site_status::ALL.contains(&s.as_str())
    {
        return Err(Error::validation(format!("unknown site status '{s}'")));
    }
    let num = |k: &str, d: i64| -> Result<i64> {
        match ctx.str_arg(k) {
            None => Ok(d),
            Some(v) => v
                .parse::<i64>()
                .ok()
                .filter(|n| *n >= 0)
                .ok_or_else(|| Error::validation(format!("'{k}' must be a number"))),
        }
    };
    let start = num("start", 0)?;
    let limit = num("limit", 100_000)?;
    let key = (
        team.clone(),
        status.clone().unwrap_or_default(),
        start,
        limit,
    );
    // Taken before any read, so a site write committed meanwhile makes the entry unfit.
    let generation = ctx.st.store.sites_generation();
    let cached = ctx
        .st
        .list_cache
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .get(&key)
        .cloned();
    if let Some(c) = &cached
        && c.generation == generation
        && c.checked.elapsed() < crate::store::SITE_CACHE_TTL
    {
        return Ok(([(header::CONTENT_TYPE, "application/json")], c.body.clone()).into_response());
    }
    let version = ctx.st.store.sites_version(&team).await?;
    let body = match cached {
        Some(c) if c.version == version => c.body,
        _ => {
            let sites = ctx
                .st
                .store
                .sites(&team, status.as_deref(), start, limit)
                .await?;
            let list = Value::Array(sites.iter().map(site_json).collect());
            Bytes::from(serde_json::to_vec(&json!({ "message": list })).unwrap_or_default())
        }
    };
    let mut c = ctx.st.list_cache.lock().unwrap_or_else(|p| p.into_inner());
    if c.len() > 1024 {
        c.clear();
    }
    c.insert(
        key,
        CachedList {
            version,
            generation,
            checked: Instant::now(),
            body: body.clone(),
        },
    );
    drop(c);
    Ok(([(header::CONTENT_TYPE, "application/json")], body).into_response())
}

async fn site_get(ctx: &Ctx) -> Result<Response> {
    let c = ctx.caller().await?;
    let site = ctx.site(&c, &ctx.required("name")?).await?;
    #[derive(serde::Serialize)]
    struct Detail<'a> {
        #[serde(flatten)]
        site: SiteView<'a>,
        config: Value,
        info: Info<'a>,
    }
    #[derive(serde::Serialize)]
    struct Info<'a> {
        owner: &'a str,
        created_on: String,
    }
    #[derive(serde::Serialize)]
    struct Message<'a> {
        message: Detail<'a>,
    }
    let body = Message {
        message: Detail {
            site: SiteView::of(&site),
            config: serde_json::from_str(&site.config).unwrap_or(Value::Null),
            info: Info {
                owner: &site.team,
                created_on: rfc3339_ms(site.created),
            },
        },
    };
    Ok(axum::Json(body).into_response())
}

async fn site_exists(ctx: &Ctx) -> Result<Response> {
    ctx.caller().await?;
    let sub = ctx.required("subdomain")?;
    let full = domain::full_site_name(&sub, &ctx.st.config.domain);
    let live = ctx
        .st
        .store
        .site(None, &full)
        .await?
        .is_some_and(|s| s.status != site_status::ARCHIVED);
    Ok(ok(json!(live)))
}

async fn site_jobs(ctx: &Ctx) -> Result<Response> {
    let c = ctx.caller().await?;
    let site = ctx.site(&c, &ctx.required("name")?).await?;
    let start = ctx
        .str_arg("limit_start")
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let limit = ctx
        .str_arg("limit_page_length")
        .and_then(|s| s.parse().ok())
        .unwrap_or(100);
    let jobs = ctx.st.store.site_jobs(&site.id, start, limit).await?;
    Ok(ok(Value::Array(jobs.iter().map(job_summary).collect())))
}

async fn site_job(ctx: &Ctx) -> Result<Response> {
    let c = ctx.caller().await?;
    let name = ctx
        .str_arg("job")
        .or_else(|| ctx.str_arg("name"))
        .ok_or_else(|| Error::validation("missing argument 'job'"))?;
    let job = ctx.st.store.job(&name).await?;
    let visible = match &job {
        Some(j) if c.is_admin && ctx.headers.get("x-press-team").is_none() => true,
        Some(j) => j.team == ctx.team(&c).await?,
        None => false,
    };
    match job {
        Some(j) if visible => Ok(ok(job_detail(&j))),
        _ => Err(Error::not_found(format!("Agent Job {name} not found"))),
    }
}

async fn queue(
    ctx: &Ctx,
    site: &Site,
    job_type: &str,
    data: Value,
    steps: &[&str],
    allowed: &[&str],
    backup: Option<BackupUse<'_>>,
) -> Result<Response> {
    let job = NewJob {
        server: site.server.clone(),
        job_type: job_type.into(),
        data,
        steps: steps.iter().map(|s| s.to_string()).collect(),
    };
    let name = ctx
        .st
        .store
        .queue_site_job(site, &job, allowed, backup)
        .await?;
    ctx.st.dispatcher.wake();
    Ok(ok(json!({"site": site.name, "job": name})))
}

async fn site_archive(ctx: &Ctx) -> Result<Response> {
    use site_status::*;
    let c = ctx.caller().await?;
    let site = ctx.site(&c, &ctx.required("name")?).await?;
    domain::can_archive(&site.status)?;
    let force = matches!(ctx.args.get("force"), Some(Value::Bool(true)))
        || matches!(ctx.str_arg("force").as_deref(), Some("1" | "true"));
    let (data, steps) = site_backups::archive_job(ctx, &site, force);
    queue(
        ctx,
        &site,
        job_type::ARCHIVE_SITE,
        data,
        steps,
        &[ACTIVE, BROKEN, INACTIVE, SUSPENDED],
        None,
    )
    .await
}

async fn site_app(ctx: &Ctx, kind: &str) -> Result<Response> {
    use site_status::*;
    let c = ctx.caller().await?;
    let site = ctx.site(&c, &ctx.required("name")?).await?;
    let app = ctx.required("app")?;
    domain::can_change(&site.status)?;
    let installed = site.app_list();
    if kind == job_type::INSTALL_APP {
        let benches = ctx.st.store.benches(&site.server).await?;
        let on_bench = benches
            .iter()
            .find(|b| b.name == site.bench)
            .is_some_and(|b| b.app_list().contains(&app));
        if !on_bench {
            return Err(Error::validation(format!(
                "app '{app}' is not available on the bench"
            )));
        }
        if installed.contains(&app) {
            return Err(Error::validation(format!(
                "app '{app}' is already installed on {}",
                site.name
            )));
        }
    } else {
        if app == "frappe" {
            return Err(Error::validation("frappe cannot be uninstalled"));
        }
        if !installed.contains(&app) {
            return Err(Error::validation(format!(
                "app '{app}' is not installed on {}",
                site.name
            )));
        }
    }
    let step = if kind == job_type::INSTALL_APP {
        "Install App on Site"
    } else {
        "Uninstall App from Site"
    };
    queue(
        ctx,
        &site,
        kind,
        json!({"name": site.name, "bench": site.bench, "app": app}),
        &[step],
        &[ACTIVE, BROKEN, INACTIVE],
        None,
    )
    .await
}

async fn site_update_config(ctx: &Ctx) -> Result<Response> {
    use site_status::*;
    let c = ctx.caller().await?;
    let site = ctx.site(&c, &ctx.required("name")?).await?;
    domain::can_change(&site.status)?;
    // Frappe Press sends a list of {key, value, type}; a plain object works too.
    let raw = match ctx.args.get("config") {
        Some(Value::String(s)) => {
            serde_json::from_str(s).map_err(|_| Error::validation("config must be JSON"))?
        }
        Some(v) => v.clone(),
        None => return Err(Error::validation("missing argument 'config'")),
    };
    let config = match raw {
        Value::Object(o) => o,
        Value::Array(items) => {
            let mut o = Map::new();
            for i in items {
                let k = i
                    .get("key")
                    .and_then(|k| k.as_str())
                    .ok_or_else(|| Error::validation("config entries need a 'key'"))?;
                o.insert(
                    k.to_string(),
                    i.get("value").cloned().unwrap_or(Value::Null),
                );
            }
            o
        }
        _ => return Err(Error::validation("config must be an object")),
    };
    for k in config.keys() {
        if k.is_empty() || k.starts_with("db_") || k == "plan_limit" || k == "rate_limit" {
            return Err(Error::validation(format!(
                "config key '{k}' cannot be changed"
            )));
        }
    }
    queue(
        ctx,
        &site,
        job_type::UPDATE_CONFIG,
        json!({"name": site.name, "bench": site.bench, "config": config}),
        &["Update Site Configuration"],
        &[ACTIVE, BROKEN, INACTIVE],
        None,
    )
    .await
}

async fn plans(ctx: &Ctx) -> Result<Response> {
    ctx.caller().await?;
    let list: Vec<Value> = ctx
        .st
        .store
        .plans()
        .await?
        .iter()
        .map(|p| {
            json!({
                "name": p.name, "plan_title": p.name, "price_cents": p.price_cents, "currency": p.currency,
                "price_usd": p.price_cents as f64 / 100.0,
                "cpu_time_per_day": p.cpu_time_per_day, "max_database_usage": p.max_database_mb,
                "max_storage_usage": p.max_storage_mb, "billing_code": p.billing_code, "is_trial_plan": p.is_trial == 1,
            })
        })
        .collect();
    Ok(ok(Value::Array(list)))
}

// ---------- servers ----------

pub(crate) fn server_json(s: &Server, admin: bool) -> Value {
    let mut v = json!({
        "name": s.name, "title": s.title, "status": s.status, "team": s.team,
        "creation": rfc3339_ms(s.created), "use_for_new_sites": s.use_for_new_sites == 1,
    });
    if admin {
        v["agent_url"] = json!(s.agent_url);
    }
    v
}

async fn visible_server(ctx: &Ctx, c: &Caller, name: &str) -> Result<Server> {
    let s = ctx.st.store.server(name).await?;
    let team = ctx.team(c).await?;
    match s {
        Some(s) if c.is_admin || s.team == team || s.use_for_new_sites == 1 => Ok(s),
        _ => Err(Error::not_found(format!("Server {name} not found"))),
    }
}

async fn server_list(ctx: &Ctx) -> Result<Response> {
    let c = ctx.caller().await?;
    let team = ctx.team(&c).await?;
    let list: Vec<Value> = ctx
        .st
        .store
        .servers()
        .await?
        .iter()
        .filter(|s| c.is_admin || s.team == team)
        .map(|s| server_json(s, c.is_admin))
        .collect();
    Ok(ok(Value::Array(list)))
}

async fn server_get(ctx: &Ctx) -> Result<Response> {
    let c = ctx.caller().await?;
    let name = ctx
        .str_arg("name")
        .or_else(|| ctx.str_arg("server"))
        .ok_or_else(|| Error::validation("missing argument 'name'"))?;
    let s = visible_server(ctx, &c, &name).await?;
    let mut v = server_json(&s, c.is_admin);
    let benches: Vec<Value> = ctx
        .st
        .store
        .benches(&s.name)
        .await?
        .iter()
        .map(|b| json!({"name": b.name, "status": b.status, "apps": b.app_list()}))
        .collect();
    v["benches"] = Value::Array(benches);
    Ok(ok(v))
}

async fn server_status(ctx: &Ctx) -> Result<Response> {
    let c = ctx.caller().await?;
    let name = ctx
        .str_arg("server")
        .or_else(|| ctx.str_arg("name"))
        .ok_or_else(|| Error::validation("missing argument 'server'"))?;
    let s = visible_server(ctx, &c, &name).await?;
    let agent = agent_health(ctx, &s).await;
    let (sites, pending, running) = ctx.st.store.server_counts(&s.name).await?;
    Ok(ok(json!({
        "name": s.name,
        "status": s.status,
        "agent": agent,
        "sites": sites,
        "jobs": {"pending": pending, "running": running},
    })))
}

/// The agent's ping, cached a few seconds so status calls do not spend the agent's budget.
async fn agent_health(ctx: &Ctx, s: &Server) -> Value {
    if let Some((at, v)) = ctx
        .st
        .ping_cache
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .get(&s.name)
        .cloned()
        && at.elapsed() < Duration::from_secs(5)
    {
        return v;
    }
    let v = match ctx
        .st
        .dispatcher
        .client()
        .ping(&s.agent_url, &s.agent_password)
        .await
    {
        Ok((version, latency)) => json!({
            "reachable": true, "version": version,
            "latency_ms": (latency.as_secs_f64() * 1000.0 * 100.0).round() / 100.0,
        }),
        Err(e) => {
            json!({"reachable": false, "version": null, "latency_ms": null, "error": e.to_string()})
        }
    };
    ctx.st
        .ping_cache
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .insert(s.name.clone(), (Instant::now(), v.clone()));
    v
}

async fn server_new(ctx: &Ctx) -> Result<Response> {
    let c = ctx.admin().await?;
    let spec = ctx.obj_arg("server")?.unwrap_or_else(|| ctx.args.clone());
    let text = |k: &str| {
        spec.get(k)
            .and_then(|v| v.as_str())
            .map(|s| s.to_string())
            .filter(|s| !s.is_empty())
    };
    let name = text("name")
        .or_else(|| text("hostname"))
        .ok_or_else(|| Error::validation("missing argument 'name'"))?;
    domain::validate_name("server", &name)?;
    let url = text("agent_url").ok_or_else(|| Error::validation("missing argument 'agent_url'"))?;
    if !(url.starts_with("http://") || url.starts_with("https://")) {
        return Err(Error::validation(
            "agent_url must start with http:// or https://",
        ));
    }
    let password = text("agent_password")
        .ok_or_else(|| Error::validation("missing argument 'agent_password'"))?;
    let team = match text("team") {
        Some(t) => {
            ctx.st
                .store
                .team(&t)
                .await?
                .ok_or_else(|| Error::not_found(format!("Team {t} not found")))?
                .name
        }
        None => ctx.team(&c).await?,
    };
    let bench = text("bench").unwrap_or_else(|| "bench-0001".into());
    domain::validate_name("bench", &bench)?;
    let apps: Vec<String> = match spec.get("apps") {
        Some(Value::Array(a)) => a
            .iter()
            .filter_map(|x| x.as_str().map(|s| s.to_string()))
            .collect(),
        _ => crate::DEFAULT_APPS.iter().map(|s| s.to_string()).collect(),
    };
    let public = !matches!(spec.get("use_for_new_sites"), Some(Value::Bool(false)));
    let row = Server {
        name: name.clone(),
        title: text("title").unwrap_or_else(|| name.clone()),
        team,
        status: "Active".into(),
        agent_url: url,
        agent_password: password,
        use_for_new_sites: public as i64,
        created: now_ms(),
    };
    ctx.st.store.put_server(&row, false).await?;
    ctx.st.store.put_bench(&name, &bench, &apps).await?;
    Ok(ok(json!({"server": name, "bench": bench})))
}

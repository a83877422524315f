//! The `pressoir up` gateway: one listener in front of every service's router, routing by
//! `Host` prefix (`auth.` → identity, `s3.` → objects, ...) like the reference's ingress, with
//! path prefixes that route on any host (`/realms/`, `/api/v1/`), and a default service (Press)
//! for the domain itself and any unknown host.
//!
//! Mounting a service is one line: `gateway.host("auth.", router)` or `.path("/realms/", router)`.

use axum::Router;
use axum::extract::{Request, State};
use axum::response::Response;
use std::convert::Infallible;
use std::sync::Arc;
use tower::ServiceExt;

#[derive(Clone)]
pub struct Gateway {
    hosts: Vec<(String, Router)>,
    paths: Vec<(String, Router)>,
    default: Router,
}

impl Gateway {
    /// A gateway that sends everything to `default`.
    pub fn new(default: Router) -> Self {
        Gateway {
            hosts: Vec::new(),
            paths: Vec::new(),
            default,
        }
    }

    /// Requests whose `Host` starts with `prefix` (such as `"auth."`) go to `router`.
    pub fn host(mut self, prefix: &str, router: Router) -> Self {
        self.hosts.push((prefix.to_ascii_lowercase(), router));
        self
    }

    /// Requests whose path starts with `prefix` (such as `"/realms/"`) go to `router`, on any host.
    /// Host entries are checked first, so `s3.<domain>/api/v1/x` still reaches S3.
    pub fn path(mut self, prefix: &str, router: Router) -> Self {
        self.paths.push((prefix.to_string(), router));
        self
    }

    /// The router a request with this host and path goes to.
    pub fn pick(&self, host: &str, path: &str) -> &Router {
        let host = host.to_ascii_lowercase();
        if let Some((_, r)) = self
            .hosts
            .iter()
            .find(|(p, _)| host.starts_with(p.as_str()))
        {
            return r;
        }
        if let Some((_, r)) = self
            .paths
            .iter()
            .find(|(p, _)| path.starts_with(p.as_str()))
        {
            return r;
        }
        &self.default
    }

    /// The gateway as one router, to hand to [`crate::serve`].
    pub fn into_router(self) -> Router {
        Router::new().fallback(route).with_state(Arc::new(self))
    }
}

fn host_of(req: &Request) -> &str {
    let h = req
        .headers()
        .get(http::header::HOST)
        .and_then(|v| v.to_str().ok())
        .or_else(|| req.uri().host())
        .unwrap_or("");
    // Drop the port; keep IPv6 literals whole.
    match h.rsplit_once(':') {
        Some((name, port))
            if !name.ends_with(']')
                && port.chars().all(|c| c.is_ascii_digit())
                && !name.contains(':') =>
        {
            name
        }
        _ => h,
    }
}

async fn route(State(gw): State<Arc<Gateway>>, req: Request) -> Result<Response, Infallible> {
    let router = gw.pick(host_of(&req), req.uri().path()).clone();
    router.oneshot(req).await
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::routing::get;

    fn named(n: &'static str) -> Router {
        Router::new().fallback(get(move || async move { n }))
    }

    #[tokio::test]
    async fn routes_by_host_then_path_then_default() {
        let gw = Gateway::new(named("press"))
            .host("auth.", named("identity"))
            .path("/realms/", named("identity-path"));
        assert!(std::ptr::eq(
            gw.pick("auth.localhost", "/x"),
            &gw.hosts[0].1
        ));
        assert!(std::ptr::eq(
            gw.pick("cloud.localhost", "/realms/x"),
            &gw.paths[0].1
        ));
        assert!(std::ptr::eq(
            gw.pick("cloud.localhost", "/api/method/ping"),
            &gw.default
        ));
        assert!(std::ptr::eq(gw.pick("unknown.example", "/"), &gw.default));
        let app = gw.into_router();
        let req = Request::builder()
            .uri("/x")
            .header("host", "auth.localhost:30080")
            .body(axum::body::Body::empty())
            .unwrap();
        let resp = app.oneshot(req).await.unwrap();
        let body = axum::body::to_bytes(resp.into_body(), 1024).await.unwrap();
        assert_eq!(&body[..], b"identity");
    }
}

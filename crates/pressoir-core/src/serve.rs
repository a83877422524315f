//! Serving a router on a listener it is given: TCP nodelay, client addresses for the rate
//! limiter, request ids and one tracing span per request, and a graceful drain on shutdown.

use axum::extract::Request;
use axum::response::{IntoResponse, Response};
use axum::serve::ListenerExt;
use axum::{Router, ServiceExt};
use http::HeaderValue;
use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tower::{Service, ServiceBuilder};
use tower_http::request_id::{
    MakeRequestId, PropagateRequestIdLayer, RequestId, SetRequestIdLayer,
};
use tower_http::trace::TraceLayer;

/// How long in-flight requests may take to finish once shutdown has begun.
pub const DRAIN: Duration = Duration::from_secs(10);

/// A shutdown signal shared by servers and background tasks.
#[derive(Clone, Default)]
pub struct Shutdown(CancellationToken);

impl Shutdown {
    pub fn new() -> Self {
        Shutdown(CancellationToken::new())
    }

    /// A shutdown that fires on SIGINT or SIGTERM.
    pub fn on_signals() -> Self {
        let s = Shutdown::new();
        let t = s.clone();
        tokio::spawn(async move {
            wait_for_signal().await;
            tracing::info!("shutdown signal received, draining");
            t.trigger();
        });
        s
    }

    pub fn trigger(&self) {
        self.0.cancel();
    }

    pub fn is_triggered(&self) -> bool {
        self.0.is_cancelled()
    }

    pub fn wait(&self) -> impl Future<Output = ()> + Send + 'static {
        let t = self.0.clone();
        async move { t.cancelled().await }
    }
}

async fn wait_for_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let mut term = signal(SignalKind::terminate()).expect("install SIGTERM handler");
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

/// Random (v4) UUIDs as request ids, from `rand`'s thread-local CSPRNG (seeded by the OS):
/// tower-http's `MakeRequestUuid` calls `Uuid::new_v4`, a getrandom system call per request.
#[derive(Clone, Copy)]
struct MakeRequestV4;

impl MakeRequestId for MakeRequestV4 {
    fn make_request_id<B>(&mut self, _: &Request<B>) -> Option<RequestId> {
        let id = uuid::Builder::from_random_bytes(rand::random()).into_uuid();
        let mut buf = uuid::Uuid::encode_buffer();
        let id = HeaderValue::from_str(id.hyphenated().encode_lower(&mut buf)).ok()?;
        Some(RequestId::new(id))
    }
}

/// Adds request ids (`x-request-id`, kept when the client sends one) and a span per request.
/// The layers wrap the router as a whole: `Router::layer` would box them into every route,
/// and clone that box for each request.
fn with_http_layers(
    router: Router,
) -> impl Service<Request, Response = Response, Error = Infallible, Future: Send> + Clone + Send {
    ServiceBuilder::new()
        // Back to axum's body type, which `axum::serve` wants, from the trace layer's.
        .map_response(IntoResponse::into_response)
        .layer(SetRequestIdLayer::x_request_id(MakeRequestV4))
        .layer(
            TraceLayer::new_for_http().make_span_with(|req: &Request| {
                let id = req
                    .headers()
                    .get("x-request-id")
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or("");
                tracing::info_span!("request", method = %req.method(), path = %req.uri().path(), request_id = %id)
            }),
        )
        .layer(PropagateRequestIdLayer::x_request_id())
        .service(router)
}

/// Serves `router` on `listener` until `shutdown` fires, then drains for at most [`DRAIN`].
pub async fn serve(
    listener: TcpListener,
    router: Router,
    shutdown: Shutdown,
) -> std::io::Result<()> {
    let listener = listener.tap_io(|tcp| {
        let _ = tcp.set_nodelay(true);
    });
    let app = with_http_layers(router).into_make_service_with_connect_info::<SocketAddr>();
    let stop = shutdown.wait();
    let server = axum::serve(listener, app).with_graceful_shutdown(stop);
    let mut server = tokio::spawn(async move { server.await });
    tokio::select! {
        r = &mut server => return r.unwrap_or_else(|join| Err(std::io::Error::other(join))),
        _ = shutdown.wait() => {}
    }
    match tokio::time::timeout(DRAIN, server).await {
        Ok(Ok(r)) => r,
        Ok(Err(join)) => Err(std::io::Error::other(join)),
        Err(_) => {
            tracing::warn!("requests still in flight after the drain deadline; closing");
            Ok(())
        }
    }
}

/// Installs the `tracing` subscriber for the binary: `RUST_LOG` filter, `info` by default.
pub fn init_tracing() {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_target(false)
        .try_init();
}

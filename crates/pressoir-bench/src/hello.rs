//! A plain hyper hello-world server: the ceiling a Rust HTTP service can reach on this
//! machine, measured in the same run as the service under test so the ratio shows.

use bytes::Bytes;
use http_body_util::Full;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use std::convert::Infallible;
use std::net::SocketAddr;
use tokio::net::TcpListener;

/// Binds 127.0.0.1:0, serves `Hello, World!` on every path on the current runtime, and
/// returns the bound address. Panics if it cannot bind (benchmark support only).
pub async fn spawn() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind 127.0.0.1:0 for the hello-world server");
    let addr = listener
        .local_addr()
        .expect("local address of the hello-world server");
    tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                continue;
            };
            let _ = tcp.set_nodelay(true);
            tokio::spawn(async move {
                let svc = service_fn(|_req: Request<hyper::body::Incoming>| async {
                    Ok::<_, Infallible>(Response::new(Full::new(Bytes::from_static(
                        b"Hello, World!",
                    ))))
                });
                let _ = http1::Builder::new()
                    .serve_connection(TokioIo::new(tcp), svc)
                    .await;
            });
        }
    });
    addr
}

/// Starts the hello-world server, loads it over 64 keep-alive connections for `secs`,
/// prints the baseline line every benchmark shows, and returns its requests/s.
pub async fn baseline(secs: std::time::Duration) -> f64 {
    use crate::{Spec, Stop, load};
    let r = load::run(
        Spec::get(spawn().await, "/")
            .connections(64)
            .stop(Stop::Duration(secs)),
    )
    .await;
    println!("hello-world baseline (hyper, 64 connections): {}", r.line());
    r.rps
}

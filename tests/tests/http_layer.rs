//! `perfkit::http::MetricsLayer` in a real axum router and a real hyper server on loopback:
//! route templates as labels (never raw paths), statuses, sizes, requests in flight and the
//! snapshot's per-route quantiles.

mod common;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::routing::{get, post};

fn rendered() -> String {
    perfkit::metrics::render()
}

/// The value of the series line starting with `prefix` (name and labels), if present.
fn value(text: &str, prefix: &str) -> Option<f64> {
    text.lines()
        .find(|l| l.starts_with(prefix))
        .and_then(|l| l.rsplit(' ').next()?.parse().ok())
}

/// The value of `series` once it reads `want`, or the last value read after about 1 s.
async fn settle(series: &str, want: f64) -> Option<f64> {
    let mut seen = None;
    for _ in 0..100 {
        seen = value(&rendered(), series);
        if seen == Some(want) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    seen
}

async fn serve_axum(app: Router) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    addr
}

/// One request over a fresh connection; a non-empty body goes with its Content-Length.
fn send(addr: SocketAddr, method: &str, path: &str, body: &str) -> common::Resp {
    use std::io::Write;
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Type: text/plain\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    common::read_response(&mut s)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn axum_routes_are_labelled_by_template_with_status_sizes_and_in_flight() {
    let gate = Arc::new(tokio::sync::Notify::new());
    let g = Arc::clone(&gate);
    let app = Router::new()
        .route("/v1/progress/{user}", get(|| async { "{\"points\":42}" }))
        .route(
            "/layer-test/events",
            post(|body: String| async move { format!("got {}", body.len()) }),
        )
        .route(
            "/layer-test/slow",
            get(move || {
                let g = Arc::clone(&g);
                async move {
                    g.notified().await;
                    "done"
                }
            }),
        )
        .layer(perfkit::http::MetricsLayer::new());
    let addr = serve_axum(app).await;

    let client = tokio::task::spawn_blocking(move || {
        for user in ["u1", "u2", "u3", "u4", "u5"] {
            assert_eq!(
                send(addr, "GET", &format!("/v1/progress/{user}"), "").status,
                200
            );
        }
        assert_eq!(
            send(addr, "POST", "/layer-test/events", &"x".repeat(100)).status,
            200
        );
        assert_eq!(send(addr, "GET", "/no/such/path", "").status, 404);
    });
    client.await.unwrap();

    let text = rendered();
    assert!(
        !text.contains("/v1/progress/u1"),
        "a raw path leaked into the labels"
    );
    assert_eq!(
        value(
            &text,
            r#"http_server_request_duration_seconds_count{method="GET",route="/v1/progress/{user}",status="200"}"#
        ),
        Some(5.0),
        "{text}"
    );
    assert_eq!(
        value(
            &text,
            r#"http_server_request_duration_seconds_count{method="GET",route="__unmatched__",status="404"}"#
        ),
        Some(1.0),
        "{text}"
    );
    assert_eq!(
        value(
            &text,
            r#"http_server_request_size_bytes_sum{method="POST",route="/layer-test/events"}"#
        ),
        Some(100.0)
    );
    // "got 100" is 7 bytes; `{"points":42}` is 13, five times.
    assert_eq!(
        value(
            &text,
            r#"http_server_response_size_bytes_sum{method="POST",route="/layer-test/events"}"#
        ),
        Some(7.0)
    );
    assert_eq!(
        value(
            &text,
            r#"http_server_response_size_bytes_sum{method="GET",route="/v1/progress/{user}"}"#
        ),
        Some(65.0)
    );

    // A request parked in its handler is in flight until it answers.
    let slow = tokio::task::spawn_blocking(move || send(addr, "GET", "/layer-test/slow", ""));
    let in_flight = r#"http_server_requests_in_flight{method="GET",route="/layer-test/slow"}"#;
    assert_eq!(settle(in_flight, 1.0).await, Some(1.0));
    gate.notify_one();
    assert_eq!(slow.await.unwrap().status, 200);
    assert_eq!(settle(in_flight, 0.0).await, Some(0.0));

    let snap = perfkit::metrics::registry().snapshot();
    let route = common::entry(&snap, "http_routes", "GET /v1/progress/{user}");
    assert_eq!(route["requests"], 5);
    assert_eq!(route["errors"], 0);
    assert_eq!(route["route"], "/v1/progress/{user}");
    assert!(route["seconds"]["p95"].as_f64().unwrap() > 0.0, "{route}");
    assert!(route["seconds"]["p99"].as_f64().unwrap() >= route["seconds"]["p95"].as_f64().unwrap());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plain_hyper_server_uses_the_given_templates() {
    use bytes::Bytes;
    use http_body_util::Full;
    use hyper::{Request, Response};
    use tower::ServiceBuilder;

    let svc = ServiceBuilder::new()
        .layer(perfkit::http::MetricsLayer::routes([
            "/hyper-test/items/{id}",
            "/hyper-test/files/{*path}",
        ]))
        .service(tower::service_fn(
            |req: Request<hyper::body::Incoming>| async move {
                let status = if req.uri().path().ends_with("/missing") {
                    500
                } else {
                    200
                };
                Ok::<_, std::convert::Infallible>(
                    Response::builder()
                        .status(status)
                        .body(Full::new(Bytes::from_static(b"ok")))
                        .unwrap(),
                )
            },
        ));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let (stream, _) = listener.accept().await.unwrap();
            let svc = hyper_util::service::TowerToHyperService::new(svc.clone());
            tokio::spawn(async move {
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(stream), svc)
                    .await;
            });
        }
    });

    tokio::task::spawn_blocking(move || {
        for p in [
            "/hyper-test/items/1",
            "/hyper-test/items/2",
            "/hyper-test/files/a/b.txt",
            "/hyper-test/items/missing",
            "/hyper-test/elsewhere",
        ] {
            send(addr, "GET", p, "");
        }
    })
    .await
    .unwrap();
    let text = rendered();
    assert!(!text.contains("/hyper-test/items/1"), "raw path in labels");
    for (series, n) in [
        (
            r#"http_server_request_duration_seconds_count{method="GET",route="/hyper-test/items/{id}",status="200"}"#,
            2.0,
        ),
        (
            r#"http_server_request_duration_seconds_count{method="GET",route="/hyper-test/items/{id}",status="500"}"#,
            1.0,
        ),
        (
            r#"http_server_request_duration_seconds_count{method="GET",route="/hyper-test/files/{*path}",status="200"}"#,
            1.0,
        ),
    ] {
        assert_eq!(value(&text, series), Some(n), "{series}\n{text}");
    }
    let snap = perfkit::metrics::registry().snapshot();
    let items = common::entry(&snap, "http_routes", "GET /hyper-test/items/{id}");
    assert_eq!(items["requests"], 3);
    assert_eq!(items["errors"], 1);
    // The unmatched path is counted under __unmatched__ (shared with the other test).
    assert!(text.contains(r#"route="__unmatched__""#));
}

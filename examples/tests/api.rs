//! End-to-end tests of the HTTP API over a real socket (no perfkit involved).

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};

use perfkit_examples::config::{Config, DbLocation};
use perfkit_examples::{Report, Service};
use tokio::sync::oneshot;

/// Sends one HTTP/1.1 request and returns (status, body).
async fn request(addr: SocketAddr, method: &str, path: &str, body: &[u8]) -> (u16, String) {
    let head = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    let body = body.to_vec();
    tokio::task::spawn_blocking(move || {
        let mut stream = TcpStream::connect(addr).unwrap();
        stream.write_all(head.as_bytes()).unwrap();
        // The server may answer (413) and close before reading a large body.
        let _ = stream.write_all(&body);
        let mut raw = Vec::new();
        let _ = stream.read_to_end(&mut raw);
        let raw = String::from_utf8_lossy(&raw).into_owned();
        let status = raw[9..12].parse().unwrap();
        let body = raw
            .split_once("\r\n\r\n")
            .map(|(_, b)| b.to_owned())
            .unwrap_or_default();
        (status, body)
    })
    .await
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_round_trip() {
    let config = Config {
        addr: "127.0.0.1:0".parse().unwrap(),
        db: DbLocation::Temp,
        flush_interval: std::time::Duration::from_millis(20),
        ..Config::default()
    };
    let service = Service::bind(&config).await.unwrap();
    let addr = service.local_addr();
    let (stop, stopped) = oneshot::channel::<()>();
    let server = tokio::spawn(service.serve(async move {
        let _ = stopped.await;
    }));

    assert_eq!(
        request(addr, "GET", "/healthz", b"").await,
        (200, "ok".into())
    );

    let one = br#"{"user_id":"u1","stat":"kills","value":3}"#;
    assert_eq!(
        request(addr, "POST", "/events", one).await,
        (202, r#"{"accepted":1,"rejected":0}"#.into())
    );
    let two = br#"[{"user_id":"u1","stat":"kills","value":4},{"user_id":"u1","stat":"deaths","value":1}]"#;
    assert_eq!(
        request(addr, "POST", "/events", two).await,
        (202, r#"{"accepted":2,"rejected":0}"#.into())
    );
    // Writes go through the queue and the batcher: wait for the flush (20 ms here).
    let want = (
        200,
        r#"{"user_id":"u1","stats":{"deaths":1,"kills":7}}"#.to_string(),
    );
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let got = request(addr, "GET", "/v1/progress/u1", b"").await;
        if got == want {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "never flushed: {got:?}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    assert_eq!(
        request(addr, "GET", "/v1/progress/nobody", b"").await,
        (200, r#"{"user_id":"nobody","stats":{}}"#.into())
    );

    for bad in [
        &b"not json"[..],
        br#"{"user_id":"","stat":"s","value":1}"#,
        br#"{"user_id":"u","stat":"s","value":1.5}"#,
    ] {
        let (status, body) = request(addr, "POST", "/events", bad).await;
        assert_eq!(status, 400, "{body}");
        assert!(
            body.starts_with(r#"{"error":"#) && !body.contains('\n'),
            "{body}"
        );
    }
    let event = r#"{"user_id":"u","stat":"s","value":1}"#;
    let too_many = format!("[{}]", vec![event; 1001].join(","));
    assert_eq!(
        request(addr, "POST", "/events", too_many.as_bytes())
            .await
            .0,
        400
    );
    let too_big = vec![b' '; (1 << 20) + 1];
    assert_eq!(request(addr, "POST", "/events", &too_big).await.0, 413);

    stop.send(()).unwrap();
    let report = server.await.unwrap().unwrap();
    assert_eq!(
        report,
        Report {
            accepted_events: 3,
            applied_events: 3,
            dropped_events: 0,
        }
    );
}

#[tokio::test]
async fn a_request_not_answered_in_time_gets_503_with_the_reason() {
    use axum::routing::get;
    use std::time::Duration;
    let app = axum::Router::new()
        .route(
            "/slow",
            get(|| async {
                tokio::time::sleep(Duration::from_secs(30)).await;
                "late"
            }),
        )
        .route("/fast", get(|| async { "ok" }))
        .layer(axum::middleware::from_fn(|req, next| {
            perfkit_examples::http::answer_within(Duration::from_millis(100), req, next)
        }));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    let started = std::time::Instant::now();
    let (status, body) = request(addr, "GET", "/slow", b"").await;
    assert_eq!(status, 503);
    assert!(started.elapsed() < Duration::from_secs(5));
    assert_eq!(
        body,
        r#"{"error":"the request was not answered within 100 ms (INGEST_REQUEST_TIMEOUT_MS)"}"#
    );
    assert_eq!(request(addr, "GET", "/fast", b"").await, (200, "ok".into()));
}

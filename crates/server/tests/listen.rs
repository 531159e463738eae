//! The connection loop (`listen::serve`) on loopback: the header timeout closes half-sent and
//! idle connections, the cap holds extra connections back until one closes, and a request with
//! both `Transfer-Encoding` and `Content-Length` is refused with 400.

use axum::routing::post;
use axum::Router;
use everett_server::listen::{serve, ConnLimits};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

async fn start(limits: ConnLimits) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let app = Router::new().route("/echo", post(|body: String| async move { body }));
    tokio::spawn(serve(listener, app, limits, std::future::pending()));
    addr
}

/// What the server sends before it closes the connection (or `timeout` passes).
async fn read_all(conn: &mut TcpStream, timeout: Duration) -> String {
    let mut out = Vec::new();
    let _ = tokio::time::timeout(timeout, conn.read_to_end(&mut out)).await;
    String::from_utf8_lossy(&out).into_owned()
}

const REQUEST: &[u8] = b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\nhi";

#[tokio::test(flavor = "multi_thread")]
async fn half_sent_and_idle_connections_close_and_the_cap_holds_the_rest_back() {
    let addr = start(ConnLimits {
        max_connections: 2,
        header_timeout: Duration::from_millis(500),
    })
    .await;
    // Two half-sent requests take both slots.
    let mut held = Vec::new();
    for _ in 0..2 {
        let mut c = TcpStream::connect(&addr).await.unwrap();
        c.write_all(b"POST /echo HTTP/1.1\r\nHost: x\r\n")
            .await
            .unwrap();
        held.push(c);
    }
    // A third connection is accepted by the kernel but served only once a slot frees.
    let start = Instant::now();
    let mut third = TcpStream::connect(&addr).await.unwrap();
    third.write_all(REQUEST).await.unwrap();
    let mut first = [0u8; 12];
    third.read_exact(&mut first).await.unwrap();
    assert_eq!(&first, b"HTTP/1.1 200");
    let waited = start.elapsed();
    assert!(
        waited >= Duration::from_millis(400),
        "served after {waited:?}"
    );
    // The half-sent ones were closed without an answer.
    for mut c in held {
        assert_eq!(read_all(&mut c, Duration::from_secs(5)).await, "");
    }
    // The third one, now idle on keep-alive, is closed after the timeout too.
    let rest = read_all(&mut third, Duration::from_secs(5)).await;
    assert!(rest.ends_with("hi"), "{rest}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_request_with_both_transfer_encoding_and_content_length_is_refused() {
    let addr = start(ConnLimits::default()).await;
    for headers in [
        "Content-Length: 2\r\nTransfer-Encoding: chunked\r\n",
        "transfer-encoding: chunked\r\ncontent-length: 2\r\n",
    ] {
        let mut c = TcpStream::connect(&addr).await.unwrap();
        let req = format!("POST /echo HTTP/1.1\r\nHost: x\r\n{headers}\r\n2\r\nhi\r\n0\r\n\r\n");
        c.write_all(req.as_bytes()).await.unwrap();
        let reply = read_all(&mut c, Duration::from_secs(5)).await;
        assert!(reply.starts_with("HTTP/1.1 400"), "{headers:?}: {reply}");
        assert!(
            reply.contains("Transfer-Encoding and Content-Length"),
            "{reply}"
        );
    }
    // Chunked alone is fine.
    let mut c = TcpStream::connect(&addr).await.unwrap();
    c.write_all(b"POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n2\r\nhi\r\n0\r\n\r\n")
        .await
        .unwrap();
    let reply = read_all(&mut c, Duration::from_secs(5)).await;
    assert!(
        reply.starts_with("HTTP/1.1 200") && reply.ends_with("hi"),
        "{reply}"
    );
}

//! Bounded connections against the real `deckhand serve`: silent sockets and half-sent
//! heads are closed after the header timeout, idle keep-alives after the idle timeout, and
//! at the connection cap a new client is still answered.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::common::{Backend, Server, Workspace, eventually, free_port, parse_metrics};

/// A server with these `[server]` settings (as `DECKHAND__SERVER__…` variables).
fn start(server: &[(&str, &str)], env: &[(&str, &str)]) -> (Workspace, Server) {
    let ws = Workspace::new(Backend::Sqlite, "", &[]).unwrap();
    let mut vars: Vec<(String, String)> = server
        .iter()
        .map(|(k, v)| {
            (
                format!("DECKHAND__SERVER__{}", k.to_uppercase()),
                v.to_string(),
            )
        })
        .collect();
    vars.extend(env.iter().map(|(k, v)| (k.to_string(), v.to_string())));
    let pairs: Vec<(&str, &str)> = vars.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let server = Server::start(&ws, &pairs);
    (ws, server)
}

/// Read one HTTP/1.1 response (head and `Content-Length` body) off a kept-alive socket.
async fn read_response(s: &mut TcpStream) -> String {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        let text = String::from_utf8_lossy(&buf).into_owned();
        if let Some((head, body)) = text.split_once("\r\n\r\n") {
            let len: usize = head
                .lines()
                .find_map(|l| {
                    let (k, v) = l.split_once(':')?;
                    k.eq_ignore_ascii_case("content-length")
                        .then(|| v.trim().parse().ok())?
                })
                .unwrap_or(0);
            if body.len() >= len {
                return text;
            }
        }
        let n = tokio::time::timeout(Duration::from_secs(10), s.read(&mut chunk))
            .await
            .expect("a response within 10 s")
            .expect("read a response");
        assert!(n > 0, "connection closed mid-response: {text:?}");
        buf.extend_from_slice(&chunk[..n]);
    }
}

const HEALTH: &[u8] = b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n";

/// A request whose body stalls: in flight until the request timeout answers 503.
const STALLED: &[u8] = b"POST /slack/commands HTTP/1.1\r\nHost: x\r\n\
Content-Type: application/x-www-form-urlencoded\r\nContent-Length: 100\r\n\r\ncommand=";

/// A new client asking for `/health`: how long connect, request and answer took.
async fn health(port: u16) -> Duration {
    let started = Instant::now();
    let mut s = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    s.write_all(HEALTH).await.unwrap();
    let r = read_response(&mut s).await;
    assert!(r.starts_with("HTTP/1.1 200"), "{r}");
    started.elapsed()
}

/// Wait until the server closes `s` (EOF or reset); how long that took from `since`.
async fn closed_after(mut s: TcpStream, since: Instant, limit: Duration) -> Option<Duration> {
    let mut b = [0u8; 1024];
    loop {
        match tokio::time::timeout_at((since + limit).into(), s.read(&mut b)).await {
            Err(_) => return None,
            Ok(Ok(n)) if n > 0 => continue,
            Ok(_) => return Some(since.elapsed()),
        }
    }
}

async fn metrics(port: u16) -> BTreeMap<String, f64> {
    let text = reqwest::get(format!("http://127.0.0.1:{port}/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    parse_metrics(&text)
}

/// Resident and peak memory of a process, in MiB, from `/proc/PID/status`.
fn memory_mib(pid: u32) -> (f64, f64) {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let kb = |key: &str| -> f64 {
        s.lines()
            .find_map(|l| l.strip_prefix(key))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("no {key} in /proc/{pid}/status"))
    };
    (kb("VmRSS:") / 1024.0, kb("VmHWM:") / 1024.0)
}

fn open_files_limit() -> u64 {
    let mut l = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    assert_eq!(unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut l) }, 0);
    l.rlim_cur
}

fn series(listener: &str, reason: &str) -> String {
    format!("deckhand_http_connections_closed_total{{listener=\"{listener}\",reason=\"{reason}\"}}")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_thousand_idle_and_two_thousand_half_sent_sockets_leave_health_fast() {
    const EACH: usize = 2_000;
    const HEADER: Duration = Duration::from_secs(2);
    // The test holds 4,000 sockets and the server (which inherits the limit) as many.
    assert!(
        open_files_limit() > 2 * EACH as u64 + 500,
        "this test needs `ulimit -n` above {}",
        2 * EACH + 500
    );
    let (_ws, server) = start(
        &[
            ("header_read_timeout_seconds", "2"),
            ("max_connections", "5000"),
        ],
        &[],
    );
    let port = server.port;
    let pid = server.child.id();
    let (rss_before, _) = memory_mib(pid);

    let mut latencies = Vec::new();
    let mut rss_max = rss_before;
    let mut open_max = 0.0f64;
    let mut watchers = Vec::new();
    let mut slowest_connect = Duration::ZERO;
    // In batches, with a new client's /health between them: the check is "throughout".
    for batch in 0..(2 * EACH / 200) {
        for _ in 0..100 {
            let opened = Instant::now();
            let idle = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
            watchers.push((
                false,
                tokio::spawn(closed_after(idle, opened, Duration::from_secs(30))),
            ));
            // Timed from before the connect: the header clock starts at the accept.
            let opened = Instant::now();
            let mut half = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
            slowest_connect = slowest_connect.max(opened.elapsed());
            half.write_all(
                format!("GET /health HTTP/1.1\r\nHost: x\r\nX-Batch: {batch}\r\n").as_bytes(),
            )
            .await
            .unwrap();
            watchers.push((
                true,
                tokio::spawn(closed_after(half, opened, Duration::from_secs(30))),
            ));
        }
        latencies.push(health(port).await);
        rss_max = rss_max.max(memory_mib(pid).0);
    }
    let opened_all = Instant::now();
    // Until every socket is closed: /health every 50 ms, memory and the open gauge.
    let mut tick = tokio::time::interval(Duration::from_millis(50));
    while !watchers.iter().all(|w| w.1.is_finished()) {
        tick.tick().await;
        latencies.push(health(port).await);
        rss_max = rss_max.max(memory_mib(pid).0);
        if latencies.len() % 10 == 0 {
            let m = metrics(port).await;
            open_max = open_max.max(m["deckhand_http_connections_open{listener=\"public\"}"]);
        }
        assert!(
            opened_all.elapsed() < Duration::from_secs(30),
            "sockets still open 30 s after the last was opened"
        );
    }
    let mut closes = (Vec::new(), Vec::new());
    for (half, w) in watchers {
        let took = w
            .await
            .unwrap()
            .expect("the server closed the socket within 30 s");
        if half { &mut closes.1 } else { &mut closes.0 }.push(took);
    }
    let (rss_after, peak) = memory_mib(pid);
    let m = metrics(port).await;
    let max_latency = latencies.iter().max().unwrap();
    let range = |v: &[Duration]| (*v.iter().min().unwrap(), *v.iter().max().unwrap());
    let (idle_range, half_range) = (range(&closes.0), range(&closes.1));
    eprintln!(
        "{} /health checks, slowest {max_latency:?}; RSS {rss_before:.1} MiB before, {rss_max:.1} max, \
         {rss_after:.1} after (peak {peak:.1}); open gauge max {open_max}; idle closed after \
         {idle_range:?}, half-sent after {half_range:?}; slowest connect {slowest_connect:?}",
        latencies.len()
    );
    assert!(
        *max_latency < Duration::from_millis(100),
        "slowest /health {max_latency:?}"
    );
    assert!(rss_max < 60.0, "RSS reached {rss_max:.1} MiB");
    // Neither kind closes before the header timeout, nor long after it.
    for (what, (min, max)) in [("idle", idle_range), ("half-sent", half_range)] {
        assert!(min >= HEADER, "{what}: one closed after {min:?}");
        assert!(
            max < HEADER + Duration::from_secs(3),
            "{what}: one closed after {max:?}"
        );
    }
    assert!(
        m[&series("public", "header_timeout")] >= (2 * EACH) as f64,
        "{m:?}"
    );
    assert_eq!(m[&series("public", "shed")], 0.0);
    // The sockets were held at once (the gauge is sampled, so allow for what closed).
    assert!(open_max >= EACH as f64, "open gauge peaked at {open_max}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_keep_alive_outlives_the_header_timeout_and_closes_at_the_idle_timeout() {
    let (_ws, server) = start(
        &[
            ("header_read_timeout_seconds", "1"),
            ("idle_timeout_seconds", "3"),
        ],
        &[],
    );
    let mut s = TcpStream::connect(("127.0.0.1", server.port))
        .await
        .unwrap();
    s.write_all(HEALTH).await.unwrap();
    assert!(read_response(&mut s).await.starts_with("HTTP/1.1 200"));
    // Another keep-alive starts a second head and stalls: the header clock runs from its
    // first byte, not the idle one.
    let mut slow = TcpStream::connect(("127.0.0.1", server.port))
        .await
        .unwrap();
    slow.write_all(HEALTH).await.unwrap();
    assert!(read_response(&mut slow).await.starts_with("HTTP/1.1 200"));
    slow.write_all(b"GET /health HTTP/1.1\r\nHost:")
        .await
        .unwrap();
    let slow = tokio::spawn(closed_after(slow, Instant::now(), Duration::from_secs(10)));
    // Idle for twice the header timeout: the connection still serves the next request.
    tokio::time::sleep(Duration::from_secs(2)).await;
    s.write_all(HEALTH).await.unwrap();
    assert!(read_response(&mut s).await.starts_with("HTTP/1.1 200"));
    let answered = Instant::now();
    let took = closed_after(s, answered, Duration::from_secs(10))
        .await
        .expect("the idle keep-alive was closed");
    eprintln!("idle keep-alive closed {took:?} after its last response (idle timeout 3 s)");
    assert!(
        took >= Duration::from_millis(2950) && took < Duration::from_secs(5),
        "closed after {took:?}"
    );
    let slow = slow
        .await
        .unwrap()
        .expect("the stalled second head was closed");
    eprintln!("a stalled second head closed {slow:?} after its first byte (header timeout 1 s)");
    assert!(
        slow >= Duration::from_millis(950) && slow < Duration::from_millis(2500),
        "closed after {slow:?}"
    );
    let m = metrics(server.port).await;
    assert_eq!(m[&series("public", "idle_timeout")], 1.0, "{m:?}");
    assert_eq!(m[&series("public", "header_timeout")], 1.0, "{m:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn at_the_cap_a_new_client_is_answered_and_the_longest_idle_connection_goes() {
    const CAP: usize = 16;
    let (_ws, server) = start(
        &[
            ("max_connections", "16"),
            ("header_read_timeout_seconds", "30"),
        ],
        &[],
    );
    let port = server.port;
    // The cap's worth of idle keep-alives, oldest first.
    let mut idle = Vec::new();
    for _ in 0..CAP {
        let mut s = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
        s.write_all(HEALTH).await.unwrap();
        assert!(read_response(&mut s).await.starts_with("HTTP/1.1 200"));
        idle.push(s);
    }
    let took = health(port).await;
    eprintln!("/health at the cap: {took:?}");
    assert!(took < Duration::from_secs(1), "{took:?}");
    // The oldest idle one made room; the others stay (the idle timeout is 60 s).
    let mut idle = idle.into_iter();
    let first = idle.next().unwrap();
    let closed = closed_after(first, Instant::now(), Duration::from_secs(5)).await;
    assert!(
        closed.is_some(),
        "the longest-idle connection was not closed"
    );
    let mut b = [0u8; 16];
    for (i, s) in idle.enumerate() {
        assert!(
            matches!(s.try_read(&mut b), Err(e) if e.kind() == std::io::ErrorKind::WouldBlock),
            "idle connection {} was closed too",
            i + 1
        );
    }
    let m = metrics(port).await;
    assert!(m[&series("public", "shed")] >= 1.0, "{m:?}");
    assert_eq!(m[&series("public", "over_capacity")], 0.0, "{m:?}");
    assert!(m["deckhand_http_connections_open{listener=\"public\"}"] <= CAP as f64 + 1.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn when_every_connection_has_a_request_in_flight_a_new_one_is_closed_at_once() {
    const CAP: usize = 16;
    let metrics_port = free_port();
    let addr = format!("127.0.0.1:{metrics_port}");
    let (_ws, server) = start(
        &[
            ("max_connections", "16"),
            ("request_timeout_seconds", "3"),
            ("metrics_listen", &addr),
        ],
        &[("SLACK_SIGNING_SECRET", "s3cret-for-the-test")],
    );
    let port = server.port;
    // Bodies that stall: each request is in flight until the request timeout answers 503.
    let mut busy = Vec::new();
    for _ in 0..CAP {
        let mut s = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
        s.write_all(STALLED).await.unwrap();
        busy.push(s);
    }
    // The metrics listener has its own cap: it tells when the server holds all of them.
    eventually(
        10,
        "every connection to have a request in flight",
        || async {
            let m = metrics(metrics_port).await;
            (m["deckhand_http_connections_busy{listener=\"public\"}"] == CAP as f64).then_some(())
        },
    )
    .await;
    let sent = Instant::now();
    let mut s = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    let _ = s.write_all(HEALTH).await;
    let mut b = [0u8; 64];
    let n = tokio::time::timeout(Duration::from_secs(2), s.read(&mut b))
        .await
        .expect("the new connection was closed at once, not left waiting");
    assert!(
        matches!(n, Ok(0) | Err(_)),
        "over the cap with every request in flight, got {:?}",
        n.map(|n| String::from_utf8_lossy(&b[..n]).into_owned())
    );
    assert!(sent.elapsed() < Duration::from_secs(2));
    // The requests in flight were not cut: each gets its 503 at the request timeout.
    for mut s in busy {
        let r = read_response(&mut s).await;
        assert!(r.starts_with("HTTP/1.1 503"), "{r}");
    }
    let m = metrics(metrics_port).await;
    assert_eq!(m[&series("public", "over_capacity")], 1.0, "{m:?}");
    assert_eq!(m[&series("public", "shed")], 0.0, "{m:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_metrics_listener_has_the_same_bounds() {
    let metrics_port = free_port();
    let addr = format!("127.0.0.1:{metrics_port}");
    let (_ws, _server) = start(
        &[
            ("header_read_timeout_seconds", "1"),
            ("metrics_listen", &addr),
        ],
        &[],
    );
    let opened = Instant::now();
    let silent = TcpStream::connect(("127.0.0.1", metrics_port))
        .await
        .unwrap();
    let took = closed_after(silent, opened, Duration::from_secs(10))
        .await
        .expect("a silent socket on the metrics listener is closed");
    assert!(
        took >= Duration::from_millis(950) && took < Duration::from_secs(3),
        "{took:?}"
    );
    let m = metrics(metrics_port).await;
    assert_eq!(m[&series("metrics", "header_timeout")], 1.0, "{m:?}");
    assert!(m["deckhand_http_connections_open{listener=\"metrics\"}"] >= 1.0);
    assert!(m.contains_key("deckhand_http_connections_open{listener=\"public\"}"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_finishes_a_request_in_flight_and_closes_idle_connections() {
    let (_ws, mut server) = start(
        &[
            ("request_timeout_seconds", "3"),
            ("shutdown_grace_seconds", "5"),
        ],
        &[("SLACK_SIGNING_SECRET", "s3cret-for-the-test")],
    );
    let port = server.port;
    let mut idle = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    idle.write_all(HEALTH).await.unwrap();
    assert!(read_response(&mut idle).await.starts_with("HTTP/1.1 200"));
    let mut busy = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    busy.write_all(STALLED).await.unwrap();
    let _ = health(port).await;
    let signalled = Instant::now();
    server.sigterm();
    let idle_closed = tokio::spawn(closed_after(idle, signalled, Duration::from_secs(15)));
    // The in-flight request still gets its answer (the request timeout's 503), whole...
    let r = read_response(&mut busy).await;
    let answered = signalled.elapsed();
    assert!(r.starts_with("HTTP/1.1 503"), "{r}");
    // ...while the idle keep-alive was closed at once, before it.
    let idle_closed = idle_closed
        .await
        .unwrap()
        .expect("the idle keep-alive was closed");
    assert!(
        idle_closed < answered,
        "idle closed {idle_closed:?}, request answered {answered:?}"
    );
    let status = loop {
        if let Some(s) = server.child.try_wait().unwrap() {
            break s;
        }
        assert!(
            signalled.elapsed() < Duration::from_secs(20),
            "no exit:\n{}",
            server.output()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    eprintln!(
        "exit {status:?} {:?} after SIGTERM; idle keep-alive closed after {idle_closed:?}, \
         request in flight answered after {answered:?}",
        signalled.elapsed()
    );
    assert_eq!(status.code(), Some(0), "{}", server.output());
}

//! Helpers of the service tests (tests/service*.rs): a real server on 127.0.0.1, clients,
//! tokens.
#![allow(dead_code)]

use baken::service::{self, Running, ServiceConfig, pb};
use pb::list_service_client::ListServiceClient;
use tonic::transport::{Channel, Endpoint};
use tonic::{Request, Status};

/// The tests' configuration: loopback on a free port, data under `dir`, no demo list, quick
/// refresh, metrics on a free port.
pub fn test_config(dir: &std::path::Path) -> ServiceConfig {
    let mut c = ServiceConfig {
        listen: "127.0.0.1:0".into(),
        data: dir.join("data"),
        demo_list: false,
        refresh_interval_ms: 200,
        drain_timeout_secs: 20,
        ..ServiceConfig::default()
    };
    c.metrics.listen = "127.0.0.1:0".into();
    c
}

pub async fn start(f: impl FnOnce(&mut ServiceConfig)) -> (Running, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let mut c = test_config(dir.path());
    f(&mut c);
    // As `baken serve` starts it: the real report store from the configuration.
    let r = service::Server::new(c).start().await.unwrap();
    (r, dir)
}

pub async fn channel(addr: std::net::SocketAddr) -> Channel {
    Endpoint::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect()
        .await
        .unwrap()
}

pub fn authed<T>(msg: T, token: Option<&str>) -> Request<T> {
    let mut r = Request::new(msg);
    if let Some(t) = token {
        r.metadata_mut()
            .insert("authorization", format!("Bearer {t}").parse().unwrap());
    }
    r
}

pub fn kind(s: &Status) -> String {
    s.metadata()
        .get(service::ERROR_KIND_KEY)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string()
}

pub async fn import_csv(
    lists: &mut ListServiceClient<Channel>,
    list: &str,
    csv: &str,
    token: Option<&str>,
) -> Result<pb::ImportListResponse, Status> {
    let mut msgs = vec![pb::ImportListRequest {
        part: Some(pb::import_list_request::Part::Header(pb::ImportHeader {
            list: list.into(),
            format: pb::ListFormat::Csv as i32,
            source: "test.csv".into(),
            entry_id: String::new(),
        })),
    }];
    // Split the file across several messages, as a client streaming a large file would.
    for chunk in csv.as_bytes().chunks(50) {
        msgs.push(pb::ImportListRequest {
            part: Some(pb::import_list_request::Part::Data(chunk.to_vec())),
        });
    }
    lists
        .import_list(authed(tokio_stream::iter(msgs), token))
        .await
        .map(|r| r.into_inner())
}

pub async fn create_list(lists: &mut ListServiceClient<Channel>, name: &str, token: Option<&str>) {
    lists
        .create_list(authed(
            pb::CreateListRequest {
                name: name.into(),
                source: "test".into(),
                ..Default::default()
            },
            token,
        ))
        .await
        .unwrap();
}

pub async fn metrics_text(addr: std::net::SocketAddr) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    s.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).await.unwrap();
    out
}

/// MD5 of `b` as a number (formatted `{:032x}` it is the hex digest).
pub fn md5_digest(b: &[u8]) -> u128 {
    use md5::Digest;
    u128::from_be_bytes(md5::Md5::digest(b).into())
}

/// A Scan of `image` with a report context naming `content_reference`.
pub fn scan_with_context(image: Vec<u8>, content_reference: &str) -> pb::ScanRequest {
    pb::ScanRequest {
        image,
        context: Some(pb::ReportContext {
            content_reference: content_reference.into(),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// Whether nothing accepts gRPC connections at `addr` any more.
pub async fn refuses_connections(addr: impl std::fmt::Display) -> bool {
    Endpoint::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect()
        .await
        .is_err()
}

/// HashImage of `image` with the default algorithms.
pub async fn hash_image(
    scan: &mut pb::scan_service_client::ScanServiceClient<Channel>,
    image: Vec<u8>,
) -> pb::HashResponse {
    scan.hash_image(pb::HashRequest {
        image,
        ..Default::default()
    })
    .await
    .unwrap()
    .into_inner()
}

/// Wait (at most 10 s) until the server has a request in flight.
pub async fn wait_in_flight(running: &Running) {
    let t0 = std::time::Instant::now();
    while running.state().admission.in_flight() == 0 {
        assert!(
            t0.elapsed() < std::time::Duration::from_secs(10),
            "no request arrived"
        );
        tokio::time::sleep(std::time::Duration::from_millis(2)).await;
    }
}

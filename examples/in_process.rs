//! The mesh in-process: two axum services and a client, with mutual TLS on loopback and no
//! sidecar. A 90/10 canary split is changed live to 50/50, the canary fails 30 % of its
//! requests and retries hide it, and the client's metrics are printed in Prometheus text.
//!
//! Run it with `cargo run --example in_process`; it exits by itself in a few seconds.

use std::collections::BTreeMap;
use std::error::Error;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use axum::Router;
use axum::http::StatusCode;
use axum::routing::get;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use mesh::identity::{CertStore, Identity, TrustBundle, TrustStore, ca, tls};
use mesh::tower::PolicyHandle;
use mesh::tower::client::MeshClient;
use mesh::tower::discover::{Endpoint, StaticResolver};
use mesh::tower::server::{MeshServer, local_target};
use tokio::net::TcpListener;

type BoxError = Box<dyn Error + Send + Sync>;

const DAY: Duration = Duration::from_secs(86_400);

/// `web` sends 90 % of its traffic to v1 and 10 % to the v2 canary; failed GETs (5xx) are
/// retried up to three times, within Linkerd's default retry budget.
fn split(v1: u32, v2: u32) -> String {
    format!(
        r#"
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata:
  name: web-canary
  namespace: shop
  annotations: {{ retry.linkerd.io/http: 5xx, retry.linkerd.io/limit: "3" }}
spec:
  parentRefs: [{{ name: web, kind: Service, port: 80 }}]
  rules:
  - backendRefs:
    - {{ name: web-v1, port: 80, weight: {v1} }}
    - {{ name: web-v2, port: 80, weight: {v2} }}
"#
    )
}

#[tokio::main]
async fn main() -> Result<(), BoxError> {
    // One trust anchor and issuer; every workload gets its own certificate in-process.
    let anchor = ca::TrustAnchor::generate("cluster.local", DAY)?;
    let issuer = ca::Issuer::generate(&anchor, DAY)?;
    let trust = TrustStore::new(TrustBundle::from_pem(&anchor.cert_pem())?);
    let certs = |id: &Identity| -> Result<CertStore, BoxError> {
        Ok(CertStore::with(issuer.issue_local(id, DAY)?))
    };

    // Two versions of the `web` service, each an axum app behind a MeshServer.
    let v1_id = Identity::new("cluster.local", "shop", "web-v1")?;
    let v2_id = Identity::new("cluster.local", "shop", "web-v2")?;
    let v1_app = Router::new().route("/", get(|| async { "hello from v1" }));
    let canary_failures = Arc::new(AtomicUsize::new(0));
    let failures = Arc::clone(&canary_failures);
    let v2_app = Router::new().route(
        "/",
        get(move || {
            let failures = Arc::clone(&failures);
            async move {
                if fastrand::f64() < 0.3 {
                    failures.fetch_add(1, Ordering::Relaxed);
                    (StatusCode::INTERNAL_SERVER_ERROR, "canary broke")
                } else {
                    (StatusCode::OK, "hello from v2")
                }
            }
        }),
    );
    let v1 = serve(
        tls::server_config(certs(&v1_id)?, trust.clone())?,
        "web-v1",
        v1_app,
    )
    .await?;
    let v2 = serve(
        tls::server_config(certs(&v2_id)?, trust.clone())?,
        "web-v2",
        v2_app,
    )
    .await?;

    // The client: discovery says where each version runs and which identity it must prove.
    let resolver = StaticResolver::new()
        .with("web-v1.shop", vec![Endpoint::meshed(v1, v1_id)])
        .with("web-v2.shop", vec![Endpoint::meshed(v2, v2_id)]);
    let policy = PolicyHandle::from_yaml(&split(90, 10))?;
    let frontend = Identity::new("cluster.local", "shop", "frontend")?;
    let builder = MeshClient::builder(policy.clone(), resolver)
        .mtls(tls::client_config(certs(&frontend)?, trust)?);
    let metrics = builder.registry().clone();
    let client: MeshClient<Full<Bytes>> = builder.build();

    run(&client, "90/10", &canary_failures).await?;
    policy.update_yaml(&split(50, 50))?;
    run(&client, "50/50", &canary_failures).await?;

    println!("\n# The client's metrics (what a Prometheus scrape of it would read):\n");
    print!("{}", metrics.render());
    Ok(())
}

/// Serves `app` with mesh mTLS on an ephemeral loopback port.
async fn serve(
    tls: mesh::identity::rustls::ServerConfig,
    app_label: &str,
    app: Router,
) -> Result<std::net::SocketAddr, BoxError> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let server = MeshServer::new(
        Some(tls),
        PolicyHandle::from_yaml("")?,
        local_target("shop", 8080, &[("app", app_label)]),
    );
    tokio::spawn(server.serve(listener, app));
    Ok(addr)
}

/// Sends 500 requests and says where they went.
async fn run(
    client: &MeshClient<Full<Bytes>>,
    split: &str,
    canary_failures: &AtomicUsize,
) -> Result<(), BoxError> {
    let failures_before = canary_failures.load(Ordering::Relaxed);
    let mut answers: BTreeMap<String, usize> = BTreeMap::new();
    for _ in 0..500 {
        let req = http::Request::get("http://web.shop/").body(Full::default())?;
        let rsp = client.request(req).await;
        let status = rsp.status();
        let body = rsp.into_body().collect().await?.to_bytes();
        let key = format!("{status} {}", String::from_utf8_lossy(&body).trim());
        *answers.entry(key).or_insert(0) += 1;
    }
    let failed = canary_failures.load(Ordering::Relaxed) - failures_before;
    println!("{split} split, 500 requests:");
    for (answer, n) in &answers {
        println!("  {n:>4} × {answer}");
    }
    println!("  (the canary failed {failed} attempts; retries answered them elsewhere or again)");
    Ok(())
}

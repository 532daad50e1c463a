//! `ControllerClient` against an in-test controller (mesh-api's generated servers) over real
//! mesh mTLS on 127.0.0.1: what the controller sends is compiled and served, a controller
//! that goes away leaves the last data serving and is resynced from when it returns, and a
//! server that is not the controller is refused.

mod support;

use std::net::SocketAddr;
use std::time::Duration;

use mesh_api::v1;
use mesh_core::split::BackendRef;
use mesh_identity::Identity;
use mesh_tower::PolicyHandle;
use mesh_tower::controller::{AddressTarget, ControllerClient, ControllerConfig, PolicyResolver};
use mesh_tower::discover::Resolve;
use mesh_tower::metrics::Registry;
use serde_json::json;
use support::controller::{Data, FakeController};
use support::{NS, Pki, TRUST_DOMAIN, id};

fn controller_id() -> Identity {
    Identity::new(TRUST_DOMAIN, "mesh", "mesh-controller").unwrap()
}

fn service(name: &str, ip: &str) -> serde_json::Value {
    json!({
        "apiVersion": "v1", "kind": "Service",
        "metadata": { "name": name, "namespace": NS },
        "spec": { "clusterIP": ip, "ports": [{ "name": "http", "port": 80, "targetPort": 8080 }] },
    })
}

fn route(path: &str, backend: &str) -> serde_json::Value {
    json!({
        "apiVersion": "gateway.networking.k8s.io/v1", "kind": "HTTPRoute",
        "metadata": { "name": "web-route", "namespace": NS },
        "spec": {
            "parentRefs": [{ "name": "web", "kind": "Service", "group": "core", "port": 80 }],
            "rules": [{
                "matches": [{ "path": { "type": "PathPrefix", "value": path } }],
                "backendRefs": [{ "name": backend, "port": 80 }],
            }],
        },
    })
}

fn endpoint(ip: &str) -> v1::Endpoint {
    v1::Endpoint {
        ip: ip.into(),
        ports: vec![v1::Port {
            name: "http".into(),
            port: 8080,
        }],
        pod: format!("web-{}", ip.replace('.', "-")),
        namespace: NS.into(),
        service_account: "web".into(),
    }
}

fn data() -> Data {
    let mut data = Data::default();
    data.services.insert(
        (NS.into(), "web".into()),
        (
            vec![service("web", "10.96.0.10"), route("/api", "web")],
            vec![endpoint("10.1.0.1")],
        ),
    );
    data
}

struct Client {
    client: ControllerClient,
    policy: PolicyHandle,
    resolver: PolicyResolver,
    registry: Registry,
}

fn start_client(pki: &Pki, addr: SocketAddr) -> Client {
    let policy = PolicyHandle::from_yaml("").unwrap();
    let resolver = PolicyResolver::default();
    let registry = Registry::new();
    let mut config = ControllerConfig::new(addr, controller_id());
    config.source_namespace = NS.into();
    config.backoff =
        mesh_tower::controller::Backoff::new(Duration::from_millis(20), Duration::from_millis(200));
    let client = ControllerClient::start(
        config,
        pki.client_tls(&id("client")),
        (policy.clone(), resolver.clone()),
        registry.clone(),
    );
    Client {
        client,
        policy,
        resolver,
        registry,
    }
}

fn web_backend() -> BackendRef {
    BackendRef::new("web", NS, Some(80))
}

/// The endpoint addresses the resolver serves for web:80.
fn web_endpoints(c: &Client) -> Vec<SocketAddr> {
    c.resolver
        .resolve(&web_backend())
        .map(|rx| rx.borrow().iter().map(|e| e.addr).collect())
        .unwrap_or_default()
}

/// Whether web's policy, as compiled from what the controller sent, has a route for
/// `path` (`None`: web is unknown).
fn web_routes(c: &Client, path: &str) -> Option<bool> {
    let policy = c.policy.load();
    policy.service("web", NS)?;
    let req = mesh_core::Request::new("GET", &format!("http://web.{NS}{path}")).unwrap();
    Some(!policy.outbound(&req).is_no_route())
}

/// A controller on a free loopback port proving `identity`, knowing [`data`].
async fn serve(pki: &Pki, identity: &Identity) -> FakeController {
    let any: SocketAddr = "127.0.0.1:0".parse().unwrap();
    FakeController::start(any, pki.server_tls(identity), data()).await
}

/// Polls `f` until it holds, for at most 10 s (bounded: a broken client fails, not hangs).
async fn eventually(what: &str, mut f: impl FnMut() -> bool) {
    for _ in 0..500 {
        if f() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("never happened: {what}");
}

#[tokio::test]
async fn updates_arrive_and_are_compiled() {
    let pki = Pki::new();
    let ctl = serve(&pki, &controller_id()).await;
    let c = start_client(&pki, ctl.addr);

    assert!(
        c.client.ensure(NS, "web").await,
        "{:?}",
        c.client.not_ready()
    );
    assert!(
        c.client.not_ready().is_empty(),
        "{:?}",
        c.client.not_ready()
    );
    assert_eq!(web_routes(&c, "/api/x"), Some(true));
    assert_eq!(web_routes(&c, "/v2/x"), Some(false));
    assert_eq!(web_endpoints(&c), vec!["10.1.0.1:8080".parse().unwrap()]);
    let ep = &c.resolver.resolve(&web_backend()).unwrap().borrow()[0].clone();
    assert_eq!(
        ep.identity,
        Some(id("web")),
        "endpoints carry their identity"
    );

    ctl.update(|d| {
        let web = d.services.get_mut(&(NS.into(), "web".into())).unwrap();
        web.0[1] = route("/v2", "web");
        web.1 = vec![endpoint("10.1.0.2"), endpoint("10.1.0.3")];
    });
    eventually("the new route is compiled", || {
        web_routes(&c, "/v2/x") == Some(true)
    })
    .await;
    eventually("the new endpoints are served", || {
        web_endpoints(&c).len() == 2
    })
    .await;
    assert!(!web_endpoints(&c).contains(&"10.1.0.1:8080".parse().unwrap()));
    assert_eq!(
        c.registry.counter_value("controller_reconnects_total", &[]),
        None,
        "no reconnect happened"
    );
}

#[tokio::test]
async fn the_last_data_serves_while_the_controller_is_away_and_resyncs_on_return() {
    let pki = Pki::new();
    let ctl = serve(&pki, &controller_id()).await;
    let addr = ctl.addr;
    let c = start_client(&pki, addr);
    assert!(c.client.ensure(NS, "web").await);

    let mut data = ctl.stop();
    eventually("the client notices", || {
        (c.client.degraded().iter()).any(|r| r.starts_with("controller not connected"))
    })
    .await;
    assert!(
        c.client.not_ready().is_empty(),
        "it had answers: still ready"
    );
    assert_eq!(web_routes(&c, "/api/x"), Some(true), "last policy kept");
    assert_eq!(web_endpoints(&c).len(), 1, "last endpoints kept");

    // It comes back knowing something else: every watch is reopened and replaced.
    let web = data.services.get_mut(&(NS.into(), "web".into())).unwrap();
    web.0[1] = route("/back", "web");
    web.1 = vec![endpoint("10.1.0.9")];
    let _ctl = FakeController::start(addr, pki.server_tls(&controller_id()), data).await;
    eventually("the route resyncs", || {
        web_routes(&c, "/back/x") == Some(true)
    })
    .await;
    eventually("the endpoints resync", || {
        web_endpoints(&c) == vec!["10.1.0.9:8080".parse::<SocketAddr>().unwrap()]
    })
    .await;
    assert!(
        c.client.not_ready().is_empty(),
        "{:?}",
        c.client.not_ready()
    );
    assert!(c.registry.counter_value("controller_reconnects_total", &[]) >= Some(1));
}

#[tokio::test]
async fn a_server_with_another_identity_is_refused() {
    let pki = Pki::new();
    let impostor = Identity::new(TRUST_DOMAIN, NS, "web").unwrap();
    let ctl = serve(&pki, &impostor).await;
    let c = start_client(&pki, ctl.addr);

    assert!(
        !c.client.ensure(NS, "web").await,
        "no answer from an impostor"
    );
    assert!(c.policy.load().service("web", NS).is_none());
    let reasons = c.client.not_ready();
    assert!(
        reasons
            .iter()
            .any(|r| r.starts_with("controller not connected")),
        "{reasons:?}"
    );
}

#[tokio::test]
async fn a_mesh_client_routes_by_what_the_controller_sends() {
    let pki = Pki::new();
    let (a, b) = (
        support::Backend::start(&pki, "web").await,
        support::Backend::start(&pki, "web-v2").await,
    );
    let at = |b: &support::Backend, sa: &str| v1::Endpoint {
        ip: b.addr.ip().to_string(),
        ports: vec![v1::Port {
            name: "http".into(),
            port: u32::from(b.addr.port()),
        }],
        pod: sa.into(),
        namespace: NS.into(),
        service_account: sa.into(),
    };
    let named_port = |mut svc: serde_json::Value| {
        svc["spec"]["ports"][0]["targetPort"] = json!("http");
        svc
    };
    let (web, v2) = (
        named_port(service("web", "10.96.0.10")),
        named_port(service("web-v2", "10.96.0.11")),
    );
    let mut data = Data::default();
    data.services.insert(
        (NS.into(), "web".into()),
        (
            vec![web.clone(), v2.clone(), route("/", "web-v2")],
            vec![at(&a, "web")],
        ),
    );
    data.services.insert(
        (NS.into(), "web-v2".into()),
        (vec![v2], vec![at(&b, "web-v2")]),
    );
    let ctl = FakeController::start(
        "127.0.0.1:0".parse().unwrap(),
        pki.server_tls(&controller_id()),
        data,
    )
    .await;
    let c = start_client(&pki, ctl.addr);
    let client = mesh_tower::client::MeshClient::builder(c.policy.clone(), c.resolver.clone())
        .mtls(pki.client_tls(&id("client")))
        .namespace(NS)
        .controller(c.client.clone())
        .build();

    // Nothing was asked before this request: it waits for web's policy, sees the route to
    // web-v2, and web-v2's endpoints are fetched too.
    let (status, body) = support::read(client.request(support::get("http://web/x")).await).await;
    assert_eq!((status.as_u16(), body.as_str()), (200, "web-v2"));

    ctl.update(|d| {
        let web = d.services.get_mut(&(NS.into(), "web".into())).unwrap();
        web.0[2] = route("/", "web");
    });
    assert_eq!((a.hits(), b.hits()), (0, 1));
    let mut answered_by_web = false;
    for _ in 0..100 {
        let (_, body) = support::read(client.request(support::get("http://web/x")).await).await;
        if body == "web" {
            answered_by_web = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(answered_by_web, "requests follow the updated route");
}

#[tokio::test]
async fn watches_beyond_the_cap_drop_the_least_recently_asked() {
    let pki = Pki::new();
    let ctl = serve(&pki, &controller_id()).await;
    ctl.update(|d| {
        let api = (
            vec![service("api", "10.96.0.20")],
            vec![endpoint("10.1.0.20")],
        );
        d.services.insert((NS.into(), "api".into()), api);
    });
    let policy = PolicyHandle::from_yaml("").unwrap();
    let mut config = ControllerConfig::new(ctl.addr, controller_id());
    config.max_watches = 1;
    let client = ControllerClient::start(
        config,
        pki.client_tls(&id("client")),
        (policy.clone(), PolicyResolver::default()),
        Registry::new(),
    );

    assert!(client.ensure(NS, "web").await);
    assert!(policy.load().service("web", NS).is_some());
    assert!(client.ensure(NS, "api").await);
    // web was asked for less recently: its watches and everything only they carried are gone.
    let snapshot = policy.load();
    assert!(snapshot.service("api", NS).is_some());
    assert!(snapshot.service("web", NS).is_none());
    assert!(
        (snapshot.endpoints().iter()).all(|s| s.service == "api"),
        "web's endpoints left with its watch"
    );
    // Asked again, it is watched again.
    assert!(client.ensure(NS, "web").await);
    assert!(policy.load().service("web", NS).is_some());
}

#[tokio::test]
async fn an_original_destination_is_asked_for_by_address() {
    let pki = Pki::new();
    let ctl = serve(&pki, &controller_id()).await;
    let cluster_ip: SocketAddr = "10.96.0.10:80".parse().unwrap();
    ctl.update(|d| {
        d.addresses.insert(cluster_ip, (NS.into(), "web".into()));
    });
    let c = start_client(&pki, ctl.addr);

    let target = c.client.ensure_addr(cluster_ip).await;
    assert_eq!(
        target,
        Some(AddressTarget::Service(NS.into(), "web".into()))
    );
    // The snapshot now routes that address as web, and web's endpoints are known.
    assert!(matches!(
        c.policy.load().lookup_addr(cluster_ip),
        mesh_core::Destination::Service { port: 80, .. }
    ));
    assert_eq!(web_endpoints(&c), vec!["10.1.0.1:8080".parse().unwrap()]);

    let elsewhere: SocketAddr = "192.0.2.1:443".parse().unwrap();
    assert_eq!(
        c.client.ensure_addr(elsewhere).await,
        Some(AddressTarget::Unknown),
        "the controller answered: nothing the mesh knows"
    );
}

#[tokio::test]
async fn a_refused_inbound_policy_says_why_the_client_is_not_ready() {
    let pki = Pki::new();
    let ctl = serve(&pki, &controller_id()).await;
    ctl.update(|d| d.deny_inbound = true);
    let mut config = ControllerConfig::new(ctl.addr, controller_id());
    config.workload = Some((NS.into(), "web-0".into()));
    let client = ControllerClient::start(
        config,
        pki.client_tls(&id("client")),
        (
            PolicyHandle::from_yaml("").unwrap(),
            PolicyResolver::default(),
        ),
        Registry::new(),
    );
    // Outbound still works: the refusal is about this pod's inbound policy only.
    assert!(client.ensure(NS, "web").await);
    eventually("the refusal is reported", || {
        client.not_ready().iter().any(|r| {
            r.starts_with("no answer yet for the inbound policy of pod shop/web-0")
                && r.contains("is not pod web-0's service account")
        })
    })
    .await;
}

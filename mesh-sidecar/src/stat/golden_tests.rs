//! The tables computed from two known scrapes of two proxies: `web` calls `api` over mTLS,
//! 100 responses in the window, 20 of them failures, 70 of them matched by route `api-route`.

use std::net::SocketAddr;
use std::time::Duration;

use super::query::{self, Kind, Resource, RoutesQuery, Scope, StatQuery};
use super::series;
use super::source::{Scraped, Source, Target};
use super::workload_labels;

const WEB_ID: &str = "web.default.serviceaccount.identity.linkerd.cluster.local";
const API_ID: &str = "api.default.serviceaccount.identity.linkerd.cluster.local";

fn web_after() -> String {
    let out = format!(
        "direction=\"outbound\",authority=\"api.default.svc.cluster.local:80\",tls=\"true\",server_id=\"{API_ID}\",dst_service=\"api\",dst_namespace=\"default\""
    );
    let rt =
        "direction=\"outbound\",dst=\"api.default.svc.cluster.local:80\",rt_route=\"api-route\"";
    format!(
        "response_total{{{out},status_code=\"200\",classification=\"success\"}} 85
response_total{{{out},status_code=\"500\",classification=\"failure\"}} 25
response_latency_ms_bucket{{{out},status_code=\"200\",le=\"1\"}} 55
response_latency_ms_bucket{{{out},status_code=\"200\",le=\"+Inf\"}} 110
route_response_total{{{rt},status_code=\"200\",classification=\"success\"}} 60
route_response_total{{{rt},status_code=\"500\",classification=\"failure\"}} 10
route_response_latency_ms_bucket{{{rt},status_code=\"200\",le=\"1\"}} 35
route_response_latency_ms_bucket{{{rt},status_code=\"200\",le=\"+Inf\"}} 70
"
    )
}

/// Before the window, web had already seen 10 responses (5 failed) outside any route.
fn web_before() -> String {
    let out = format!(
        "direction=\"outbound\",authority=\"api.default.svc.cluster.local:80\",tls=\"true\",server_id=\"{API_ID}\",dst_service=\"api\",dst_namespace=\"default\""
    );
    format!(
        "response_total{{{out},status_code=\"200\",classification=\"success\"}} 5
response_total{{{out},status_code=\"500\",classification=\"failure\"}} 5
response_latency_ms_bucket{{{out},status_code=\"200\",le=\"1\"}} 5
response_latency_ms_bucket{{{out},status_code=\"200\",le=\"+Inf\"}} 10
"
    )
}

fn api_after() -> String {
    let inb = format!("direction=\"inbound\",tls=\"true\",client_id=\"{WEB_ID}\"");
    format!(
        "response_total{{{inb},status_code=\"200\",classification=\"success\"}} 80
response_total{{{inb},status_code=\"500\",classification=\"failure\"}} 20
response_latency_ms_bucket{{{inb},status_code=\"200\",le=\"1\"}} 50
response_latency_ms_bucket{{{inb},status_code=\"200\",le=\"+Inf\"}} 100
tcp_open_connections{{{inb},peer=\"src\"}} 2
tcp_read_bytes_total{{{inb},peer=\"src\"}} 1000
"
    )
}

fn source() -> Source {
    let addr = SocketAddr::from(([127, 0, 0, 1], 4191));
    let targets = [
        Target {
            labels: workload_labels("default", "web"),
            addr,
        },
        Target {
            labels: workload_labels("default", "api"),
            addr,
        },
    ];
    Source::Scraped(Scraped::from_scrapes(
        &targets,
        vec![Some(series::parse(&web_before())), Some(vec![])],
        vec![
            Some(series::parse(&web_after())),
            Some(series::parse(&api_after())),
        ],
        Duration::from_secs(10),
    ))
}

fn deploy(name: Option<&str>) -> Resource {
    Resource {
        kind: Kind::Deployment,
        name: name.map(str::to_owned),
    }
}

fn stat_query(from: Option<Resource>, to: Option<Resource>, ns: &str) -> StatQuery {
    StatQuery {
        resource: deploy(None),
        scope: Scope::Namespace(ns.into()),
        from,
        to,
    }
}

fn block_on<T>(f: impl Future<Output = T>) -> T {
    tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap()
        .block_on(f)
}

#[test]
fn stat_rows_are_per_workload_inbound() {
    let rows = block_on(query::stat(
        &source(),
        &stat_query(None, None, "default"),
        true,
    ))
    .unwrap();
    let names: Vec<&str> = rows.iter().map(|r| r.name.as_str()).collect();
    assert_eq!(names, ["api", "web"]);
    let api = &rows[0];
    assert_eq!(api.golden.requests, 100.0);
    assert_eq!(api.success_rate, Some(0.8));
    assert_eq!(api.golden.rps, 10.0);
    assert_eq!(api.golden.latency_ms_p50, Some(1.0));
    assert_eq!((api.meshed, api.tcp_conn), (Some(1.0), Some(2.0)));
    assert_eq!(api.read_bytes_per_sec, Some(100.0));
    // web serves nothing, but its proxy is there.
    assert_eq!((rows[1].meshed, rows[1].success_rate), (Some(1.0), None));

    let other = block_on(query::stat(
        &source(),
        &stat_query(None, None, "shop"),
        false,
    ))
    .unwrap();
    assert!(other.is_empty(), "{other:?}");
}

#[test]
fn stat_from_and_to_read_the_callers_view() {
    let from = stat_query(Some(deploy(Some("web"))), None, "default");
    let rows = block_on(query::stat(&source(), &from, false)).unwrap();
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0].name, "api");
    assert_eq!(rows[0].golden.requests, 100.0);
    assert_eq!(rows[0].success_rate, Some(0.8));
    assert_eq!(rows[0].meshed, None, "unknown from the caller's side");

    let svc = Resource {
        kind: Kind::Service,
        name: Some("api".into()),
    };
    // A Service's own rows are the same view, per Service.
    let q = StatQuery {
        resource: svc.clone(),
        ..stat_query(None, None, "default")
    };
    let rows = block_on(query::stat(&source(), &q, false)).unwrap();
    assert_eq!(rows.len(), 1);
    assert_eq!(
        (rows[0].name.as_str(), rows[0].golden.requests),
        ("api", 100.0)
    );

    let to = stat_query(None, Some(svc), "default");
    let rows = block_on(query::stat(&source(), &to, false)).unwrap();
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0].name, "web");
    assert_eq!(rows[0].golden.requests, 100.0);
}

#[test]
fn routes_leave_what_no_route_matched_to_default() {
    let q = RoutesQuery {
        resource: deploy(Some("web")),
        scope: Scope::Namespace("default".into()),
        to: None,
    };
    let rows = block_on(query::routes(&source(), &q, true)).unwrap();
    let route = |name: &str| rows.iter().find(|r| r.route == name).unwrap();
    let api = route("api-route");
    assert_eq!(api.golden.requests, 70.0);
    assert_eq!(api.golden.successes, 60.0);
    assert_eq!(api.golden.latency_ms_p50, Some(1.0));
    let default = route("[DEFAULT]");
    assert_eq!(
        (default.golden.requests, default.golden.successes),
        (30.0, 20.0)
    );
    assert_eq!(default.golden.latency_ms_p50, None);
    let backend = rows.iter().find(|r| r.backend.is_some()).unwrap();
    assert_eq!(backend.backend.as_deref(), Some("api"));
    assert_eq!(backend.golden.requests, 100.0);

    let elsewhere = RoutesQuery {
        to: Some("emoji".into()),
        ..q
    };
    assert!(
        block_on(query::routes(&source(), &elsewhere, false))
            .unwrap()
            .is_empty()
    );
}

#[test]
fn edges_carry_the_identities_each_side_verified() {
    let rows = block_on(query::edges(&source(), &Scope::All)).unwrap();
    assert_eq!(rows.len(), 1, "{rows:?}");
    let e = &rows[0];
    assert_eq!((e.src.as_str(), e.dst.as_str()), ("web", "api"));
    assert!(e.secured);
    assert_eq!(e.client_id.as_deref(), Some(WEB_ID));
    assert_eq!(e.server_id.as_deref(), Some(API_ID));
    assert_eq!(e.requests, 100.0);
}

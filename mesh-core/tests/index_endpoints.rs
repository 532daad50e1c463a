//! Endpoints given directly to the index (as a controller's Destination stream sends them)
//! serve address lookups exactly as EndpointSlice objects would.

use std::net::SocketAddr;

use mesh_core::destination::Destination;
use mesh_core::policy::{EndpointAddress, EndpointSet};
use mesh_core::{PolicyConfig, PolicyIndex};

fn set(ips: &[&str]) -> EndpointSet {
    EndpointSet {
        service: "web".into(),
        namespace: "shop".into(),
        ports: vec![(Some("http".into()), 8080)],
        addresses: ips
            .iter()
            .map(|ip| EndpointAddress {
                ip: ip.parse().unwrap(),
                service_account: Some("web".into()),
                pod: Some(format!("web-{ip}")),
            })
            .collect(),
    }
}

fn pod_at(index: &PolicyIndex, addr: &str) -> Option<String> {
    let addr: SocketAddr = addr.parse().unwrap();
    match index.snapshot().lookup_addr(addr) {
        Destination::Endpoint(pod) => pod.pod.clone(),
        _ => None,
    }
}

#[test]
fn addresses_follow_endpoints_set_directly() {
    let mut index = PolicyIndex::new(PolicyConfig::default());
    let web = ("shop".to_owned(), "web".to_owned());

    let changes = index.set_endpoints("shop", "web", vec![set(&["10.1.0.1", "10.1.0.2"])]);
    assert!(changes.endpoints.contains(&web));
    assert!(!changes.policy_changed());
    assert!(pod_at(&index, "10.1.0.1:8080").is_some());
    assert!(pod_at(&index, "10.1.0.2:8080").is_some());
    assert_eq!(index.snapshot().endpoints().len(), 1);

    // A new set replaces the old one: the address that left is unknown again.
    let changes = index.set_endpoints("shop", "web", vec![set(&["10.1.0.2"])]);
    assert!(changes.endpoints.contains(&web));
    assert!(pod_at(&index, "10.1.0.1:8080").is_none());
    assert!(pod_at(&index, "10.1.0.2:8080").is_some());

    // No sets: the Service has no endpoints, and no address points at it.
    let changes = index.set_endpoints("shop", "web", Vec::new());
    assert!(changes.endpoints.contains(&web));
    assert!(index.service_endpoints("web", "shop").is_empty());
    assert!(index.snapshot().endpoints().is_empty());
    assert!(pod_at(&index, "10.1.0.2:8080").is_none());
}

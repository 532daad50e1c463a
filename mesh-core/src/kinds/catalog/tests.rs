use std::collections::BTreeSet;

use super::*;

#[test]
fn every_kind_has_one_storage_version_and_a_unique_name() {
    let mut seen = BTreeSet::new();
    for k in iter() {
        assert_eq!(
            k.versions.iter().filter(|v| v.storage).count(),
            1,
            "{}",
            k.kind
        );
        assert!(k.storage().served, "{}", k.kind);
        assert!(seen.insert((k.group, k.kind)), "{} twice", k.kind);
        assert!(seen.len() < 100);
    }
}

#[test]
fn a_bare_kind_names_one_row() {
    let mut bare = BTreeSet::new();
    for k in iter().filter(|k| k.bare_kind) {
        assert!(bare.insert(k.kind), "{} is bare twice", k.kind);
    }
    assert_eq!(
        infer("HTTPRoute"),
        Some(("gateway.networking.k8s.io", "v1"))
    );
    assert_eq!(
        infer("TrafficSplit"),
        Some(("split.smi-spec.io", "v1alpha4"))
    );
    assert_eq!(infer("Service"), None);
}

#[test]
fn lookups() {
    let r = by_group_kind("policy.linkerd.io", "HTTPRoute").unwrap();
    assert_eq!(r.family, Family::LinkerdHttpRoute);
    assert_eq!(r.crd_name(), "httproutes.policy.linkerd.io");
    assert!(by_group_kind("networking.istio.io", "VirtualService").is_none());
    let ns = by_group_kind("", "Namespace").unwrap();
    assert_eq!(ns.scope, Scope::Cluster);
    assert_eq!(ns.api_version("v1"), "v1");
    let cron = by_group_kind("batch", "CronJob").unwrap();
    assert_eq!(cron.served().map(|v| v.name).collect::<Vec<_>>(), ["v1"]);
    assert!(cron.version("v1beta1").is_some());
}

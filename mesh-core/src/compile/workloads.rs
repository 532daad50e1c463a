//! Core kinds: Services (ports, ClusterIPs, selector, annotations), EndpointSlices (ready
//! addresses), Namespaces (default inbound policy) and workloads' pod templates.

use std::collections::BTreeMap;
use std::net::IpAddr;

use super::doc::{Cx, Doc};
use super::fields::{Annotated, annotated, port};
use crate::authz::DefaultPolicy;
use crate::policy::{
    EndpointAddress, EndpointSet, NamespaceInfo, ServicePort, TargetPort, Workload,
};

/// A Service after its own checks.
#[derive(Clone, Debug)]
pub(crate) struct ParsedService {
    pub(crate) ports: Vec<ServicePort>,
    pub(crate) cluster_ips: Vec<IpAddr>,
    pub(crate) headless: bool,
    pub(crate) selector: Option<BTreeMap<String, String>>,
    pub(crate) annotations: BTreeMap<String, String>,
    /// Its `retry.linkerd.io/*` and `timeout.linkerd.io/*` annotations, read.
    pub(crate) annotated: Annotated,
}

pub(crate) fn parse_service(cx: &mut Cx, doc: &Doc) -> Option<ParsedService> {
    use k8s_openapi::api::core::v1::ServiceSpec;
    use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString as K8sIntOrString;
    let spec = cx
        .typed::<Option<ServiceSpec>>(doc, "spec")?
        .unwrap_or_default();
    let mut ports = Vec::new();
    for (i, p) in spec.ports.iter().flatten().enumerate() {
        let number = match port(i64::from(p.port)) {
            Ok(n) => n,
            Err(e) => {
                cx.err(doc, format!("spec.ports[{i}].port"), e);
                continue;
            }
        };
        let target = match &p.target_port {
            None => None,
            Some(K8sIntOrString::Int(n)) => match port(i64::from(*n)) {
                Ok(n) => Some(TargetPort::Number(n)),
                Err(e) => {
                    cx.err(doc, format!("spec.ports[{i}].targetPort"), e);
                    continue;
                }
            },
            Some(K8sIntOrString::String(s)) => Some(TargetPort::Name(s.clone())),
        };
        ports.push(ServicePort {
            name: p.name.clone(),
            port: number,
            target,
        });
    }
    let (cluster_ips, headless) = cluster_ips(cx, doc, &spec);
    // Check the annotations here, where errors can name the Service.
    let annotated = annotated(cx, doc, false);
    Some(ParsedService {
        ports,
        cluster_ips,
        headless,
        selector: spec.selector,
        annotations: doc.meta.annotations.clone(),
        annotated,
    })
}

pub(crate) fn parse_endpoint_slice(cx: &mut Cx, doc: &Doc) -> Option<EndpointSet> {
    use k8s_openapi::api::discovery::v1::EndpointSlice;
    let slice = cx.typed::<EndpointSlice>(doc, "")?;
    let Some(service) = doc.meta.labels.get("kubernetes.io/service-name").cloned() else {
        cx.err(
            doc,
            "metadata.labels",
            "an EndpointSlice needs the kubernetes.io/service-name label",
        );
        return None;
    };
    let mut ports = Vec::new();
    for (i, p) in slice.ports.iter().flatten().enumerate() {
        match p.port.map(|n| port(i64::from(n))) {
            Some(Ok(n)) => ports.push((p.name.clone(), n)),
            Some(Err(e)) => cx.err(doc, format!("ports[{i}].port"), e),
            None => {}
        }
    }
    let slice_sa = doc.meta.annotations.get("mesh.io/service-account").cloned();
    let mut addresses = Vec::new();
    for (i, e) in slice.endpoints.iter().flatten().enumerate() {
        if e.conditions.as_ref().and_then(|c| c.ready) == Some(false) {
            continue;
        }
        // The pod behind the endpoint, resolved to its service account when linking.
        let pod = e
            .target_ref
            .as_ref()
            .filter(|r| r.kind.as_deref() == Some("Pod"))
            .and_then(|r| r.name.clone());
        for (j, a) in e.addresses.iter().enumerate() {
            match a.parse() {
                Ok(ip) => {
                    addresses.push(EndpointAddress {
                        ip,
                        service_account: slice_sa.clone(),
                        pod: pod.clone(),
                    });
                }
                Err(_) => cx.err(
                    doc,
                    format!("endpoints[{i}].addresses[{j}]"),
                    format!("{a:?} is not an IP address"),
                ),
            }
        }
    }
    Some(EndpointSet {
        service,
        namespace: doc.namespace.clone(),
        ports,
        addresses,
    })
}

pub(crate) fn parse_namespace(cx: &mut Cx, doc: &Doc) -> NamespaceInfo {
    let key = "config.linkerd.io/default-inbound-policy";
    let default_policy =
        doc.meta
            .annotations
            .get(key)
            .and_then(|v| match v.parse::<DefaultPolicy>() {
                Ok(p) => Some(p),
                Err(e) => {
                    cx.err(doc, format!("metadata.annotations[{key:?}]"), e);
                    None
                }
            });
    NamespaceInfo { default_policy }
}

pub(crate) fn parse_workload(cx: &mut Cx, doc: &Doc, template: &str) -> Option<Workload> {
    use k8s_openapi::api::core::v1::PodTemplateSpec;
    let t = cx.typed::<Option<PodTemplateSpec>>(doc, template)?;
    let Some(t) = t else {
        cx.err(doc, template, "missing; a workload needs a pod template");
        return None;
    };
    let meta = t.metadata.unwrap_or_default();
    Some(workload(
        cx,
        doc,
        meta.labels.unwrap_or_default(),
        meta.annotations.unwrap_or_default(),
        t.spec,
    ))
}

pub(crate) fn parse_pod(cx: &mut Cx, doc: &Doc) -> Option<Workload> {
    use k8s_openapi::api::core::v1::PodSpec;
    let spec = cx.typed::<Option<PodSpec>>(doc, "spec")?;
    Some(workload(
        cx,
        doc,
        doc.meta.labels.clone(),
        doc.meta.annotations.clone(),
        spec,
    ))
}

fn workload(
    cx: &mut Cx,
    doc: &Doc,
    labels: BTreeMap<String, String>,
    annotations: BTreeMap<String, String>,
    spec: Option<k8s_openapi::api::core::v1::PodSpec>,
) -> Workload {
    use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString as K8sIntOrString;
    let mut ports = Vec::new();
    let mut probes = Vec::new();
    let service_account = spec.as_ref().and_then(|s| {
        s.service_account_name
            .clone()
            .or_else(|| s.service_account.clone())
    });
    let containers = spec.map(|s| s.containers).unwrap_or_default();
    for c in &containers {
        for p in c.ports.iter().flatten() {
            // The API server refuses such a port; a file may hold one, and nothing routes to it.
            match port(i64::from(p.container_port)) {
                Ok(n) => ports.push((n, p.name.clone())),
                Err(e) => cx.note(doc, format!("containerPort skipped: {e}")),
            }
        }
    }
    for c in &containers {
        for probe in [&c.liveness_probe, &c.readiness_probe, &c.startup_probe]
            .into_iter()
            .flatten()
        {
            let Some(get) = &probe.http_get else { continue };
            let number = match &get.port {
                K8sIntOrString::Int(n) => port(i64::from(*n)).ok(),
                K8sIntOrString::String(name) => ports
                    .iter()
                    .find(|(_, n)| n.as_deref() == Some(name.as_str()))
                    .map(|(p, _)| *p),
            };
            match number {
                Some(n) => probes.push((n, get.path.clone().unwrap_or_else(|| "/".to_owned()))),
                // The kubelet fails such a probe; it is not one the proxy lets through.
                None => cx.note(
                    doc,
                    format!(
                        "an HTTP probe names no container port ({:?}); not treated as a probe",
                        get.port
                    ),
                ),
            }
        }
    }
    if let Some(p) = annotations.get("config.linkerd.io/default-inbound-policy")
        && let Err(e) = p.parse::<DefaultPolicy>()
    {
        cx.err(
            doc,
            "spec.template.metadata.annotations[\"config.linkerd.io/default-inbound-policy\"]",
            e,
        );
    }
    Workload {
        id: doc.id(),
        labels,
        annotations,
        ports,
        probes,
        service_account,
    }
}

/// A Service's `spec.clusterIP` and `spec.clusterIPs` (which repeats the first), and whether
/// it is headless (`None`). A value that is no address is an error naming the field.
fn cluster_ips(
    cx: &mut Cx,
    doc: &Doc,
    spec: &k8s_openapi::api::core::v1::ServiceSpec,
) -> (Vec<std::net::IpAddr>, bool) {
    let listed = spec.cluster_ips.iter().flatten().enumerate();
    let fields = spec
        .cluster_ip
        .iter()
        .map(|ip| ("spec.clusterIP".to_owned(), ip))
        .chain(listed.map(|(i, ip)| (format!("spec.clusterIPs[{i}]"), ip)));
    let (mut ips, mut headless) = (Vec::new(), false);
    for (field, value) in fields {
        match value.as_str() {
            "None" => headless = true,
            "" => {}
            v => match v.parse() {
                Ok(ip) if !ips.contains(&ip) => ips.push(ip),
                Ok(_) => {}
                Err(_) => cx.err(doc, field, format!("{v:?} is not an IP address or None")),
            },
        }
    }
    (ips, headless)
}

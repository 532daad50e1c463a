//! `mesh controller` against the in-repo test API server, with clients that speak its gRPC
//! API over mesh mTLS as two different workload identities (mesh-api's generated clients).
//!
//! Everything is on loopback; the controller is killed on drop, also when the test fails;
//! every wait is bounded.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::time::{Duration, Instant};

use mesh_api::v1::destination_client::DestinationClient;
use mesh_api::v1::inbound_policies_client::InboundPoliciesClient;
use mesh_api::v1::outbound_policies_client::OutboundPoliciesClient;
use mesh_api::v1::{
    EndpointUpdate, InboundPolicy, OutboundPolicy, OutboundTarget, ServiceRef, WorkloadRef,
    endpoint_update, outbound_policy, outbound_target,
};
use serde_json::Value;
use support::apiserver::ApiServer;
use support::controller::{Controller, H2, connect, origin};
use support::pods::{Trust, free_port};

/// How long any one expected message may take.
const WAIT: Duration = Duration::from_secs(15);

const OBJECTS: &str = "
apiVersion: v1
kind: Service
metadata: { name: web, namespace: default }
spec: { clusterIP: 10.96.0.10, selector: { app: web }, ports: [{ name: http, port: 80, targetPort: 8080 }] }
---
apiVersion: v1
kind: Service
metadata: { name: api, namespace: default }
spec: { clusterIP: 10.96.0.11, selector: { app: api }, ports: [{ name: http, port: 80, targetPort: 8080 }] }
---
apiVersion: v1
kind: Pod
metadata: { name: web-pod, namespace: default, labels: { app: web } }
spec: { serviceAccountName: web, containers: [{ name: web, image: web, ports: [{ name: http, containerPort: 8080 }] }] }
---
apiVersion: v1
kind: Pod
metadata: { name: api-pod, namespace: default, labels: { app: api } }
spec: { serviceAccountName: api, containers: [{ name: api, image: api, ports: [{ name: http, containerPort: 8080 }] }] }
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: { name: web-1, namespace: default, labels: { kubernetes.io/service-name: web } }
addressType: IPv4
ports: [{ name: http, port: 8080 }]
endpoints: [{ addresses: [10.213.0.1], targetRef: { kind: Pod, name: web-pod } }]
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: { name: api-1, namespace: default, labels: { kubernetes.io/service-name: api } }
addressType: IPv4
ports: [{ name: http, port: 8080 }]
endpoints: [{ addresses: [10.213.0.9], targetRef: { kind: Pod, name: api-pod } }]
";

/// HTTPRoute `web-route` on Service web, to `backend`, with a path regex when given.
fn route(backend: &str, regex: Option<&str>) -> String {
    let matches = regex.map_or_else(
        || "[{ path: { type: PathPrefix, value: / } }]".to_owned(),
        |r| format!("[{{ path: {{ type: RegularExpression, value: '{r}' }} }}]"),
    );
    format!(
        "apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {{ name: web-route, namespace: default }}
spec:
  parentRefs: [{{ name: web, kind: Service, group: core, port: 80 }}]
  rules: [{{ matches: {matches}, backendRefs: [{{ name: {backend}, port: 80 }}] }}]
"
    )
}

fn slice(name: &str, service: &str, ip: &str) -> String {
    format!(
        "apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {{ name: {name}, namespace: default, labels: {{ kubernetes.io/service-name: {service} }} }}
addressType: IPv4
ports: [{{ name: http, port: 8080 }}]
endpoints: [{{ addresses: [{ip}] }}]
"
    )
}

async fn next<T: std::fmt::Debug>(stream: &mut tonic::Streaming<T>, what: &str) -> T {
    match tokio::time::timeout(WAIT, stream.message()).await {
        Ok(Ok(Some(m))) => m,
        other => panic!("{what}: no message: {other:?}"),
    }
}

async fn watch_service(conn: &H2, name: &str) -> tonic::Streaming<OutboundPolicy> {
    let mut client = OutboundPoliciesClient::with_origin(conn.clone(), origin());
    let target = OutboundTarget {
        target: Some(outbound_target::Target::Service(ServiceRef {
            namespace: "default".to_owned(),
            name: name.to_owned(),
        })),
        source_namespace: "default".to_owned(),
    };
    client.watch(target).await.unwrap().into_inner()
}

async fn endpoints(conn: &H2, name: &str) -> tonic::Streaming<EndpointUpdate> {
    let mut client = DestinationClient::with_origin(conn.clone(), origin());
    let service = ServiceRef {
        namespace: "default".to_owned(),
        name: name.to_owned(),
    };
    client.get(service).await.unwrap().into_inner()
}

/// The backends of HTTPRoute `web-route` in an outbound policy.
fn route_backends(p: &OutboundPolicy) -> Vec<String> {
    assert!(
        matches!(&p.target, Some(outbound_policy::Target::Service(s)) if s.name == "web"),
        "{p:?}"
    );
    let route = p
        .objects
        .iter()
        .find(|o| o.kind == "HTTPRoute")
        .expect("the route");
    let v: Value = serde_json::from_slice(&route.json).unwrap();
    assert!(v.get("status").is_none());
    (v["spec"]["rules"][0]["backendRefs"]
        .as_array()
        .unwrap()
        .iter())
    .map(|b| b["name"].as_str().unwrap().to_owned())
    .collect()
}

/// The IPs an endpoint update adds or removes: ("add" | "remove" | "none", ips).
fn ips(u: &EndpointUpdate) -> (&'static str, Vec<String>) {
    let list = |e: &mesh_api::v1::Endpoints| e.endpoints.iter().map(|e| e.ip.clone()).collect();
    match u.update.as_ref().unwrap() {
        endpoint_update::Update::Add(e) => ("add", list(e)),
        endpoint_update::Update::Remove(e) => ("remove", list(e)),
        endpoint_update::Update::NoEndpoints(_) => ("none", Vec::new()),
    }
}

async fn inbound(conn: &H2, pod: &str) -> Result<InboundPolicy, tonic::Status> {
    let mut client = InboundPoliciesClient::with_origin(conn.clone(), origin());
    let workload = WorkloadRef {
        namespace: "default".to_owned(),
        pod: pod.to_owned(),
    };
    let mut stream = client.watch(workload).await?.into_inner();
    match tokio::time::timeout(WAIT, stream.message()).await {
        Ok(Ok(Some(m))) => Ok(m),
        Ok(Ok(None)) => Err(tonic::Status::unknown("the stream ended")),
        Ok(Err(s)) => Err(s),
        Err(_) => Err(tonic::Status::deadline_exceeded("no inbound policy")),
    }
}

/// Waits until `check` holds for the API server's state.
fn eventually(what: &str, controller: &Controller, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + WAIT;
    while !check() {
        assert!(Instant::now() < deadline, "{what}\n{}", controller.log());
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn the_controller_streams_policy_endpoints_and_status_to_who_may_read_them() {
    let api = ApiServer::start();
    api.apply(OBJECTS);
    api.apply(&route("web-v1", None));
    let trust = Trust::new();
    trust.issue(&["mesh-controller", "web", "api"]);
    let kubeconfig = api.kubeconfig(&trust.dir);
    let grpc = free_port();
    let controller = Controller::start(
        &kubeconfig,
        &trust.certs("mesh-controller"),
        grpc,
        &trust.dir,
    );
    controller.wait_ready();

    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let web = connect(&trust, "web", grpc).await;
        let other = connect(&trust, "api", grpc).await;

        // Outbound: the first message carries the Service's route; a change reaches both.
        let mut a = watch_service(&web, "web").await;
        let mut b = watch_service(&other, "web").await;
        assert_eq!(route_backends(&next(&mut a, "first policy").await), ["web-v1"]);
        assert_eq!(route_backends(&next(&mut b, "first policy").await), ["web-v1"]);
        api.apply(&route("web-v2", None));
        assert_eq!(route_backends(&next(&mut a, "changed route").await), ["web-v2"]);
        assert_eq!(route_backends(&next(&mut b, "changed route").await), ["web-v2"]);

        // Invalid: refused, nothing changes; the next change the streams see still has the
        // last accepted route, and the route's status and an Event say why.
        api.apply(&route("web-v3", Some("/api/([")));
        eventually("Accepted=False on the refused route", &controller, || {
            let r = api.get("gateway.networking.k8s.io", "httproutes", "default", "web-route");
            let parent = r.map(|r| r["status"]["parents"][0].clone()).unwrap_or_default();
            parent["controllerName"] == "mesh.io/controller"
                && parent["conditions"][0]["type"] == "Accepted"
                && parent["conditions"][0]["status"] == "False"
                && parent["conditions"][0]["reason"] == "Invalid"
        });
        eventually("a Warning Event for the refused route", &controller, || {
            api.list("", "events", "default").iter().any(|e| {
                e["involvedObject"]["name"] == "web-route"
                    && e["type"] == "Warning"
                    && e["message"].as_str().is_some_and(|m| m.contains("regex") || m.contains("regular expression"))
            })
        });
        api.apply(
            "apiVersion: v1
kind: Service
metadata: { name: web, namespace: default, annotations: { timeout.linkerd.io/request: 3s } }
spec: { clusterIP: 10.96.0.10, selector: { app: web }, ports: [{ name: http, port: 80, targetPort: 8080 }] }
",
        );
        let p = next(&mut a, "the Service's change").await;
        assert_eq!(route_backends(&p), ["web-v2"], "the refused version must not be sent");
        let svc = p.objects.iter().find(|o| o.kind == "Service").unwrap();
        assert!(String::from_utf8_lossy(&svc.json).contains("timeout.linkerd.io/request"));
        assert_eq!(route_backends(&next(&mut b, "the Service's change").await), ["web-v2"]);

        // Fixed: accepted again, and the status says so.
        api.apply(&route("web-v4", None));
        assert_eq!(route_backends(&next(&mut a, "fixed route").await), ["web-v4"]);
        eventually("Accepted=True once fixed", &controller, || {
            let r = api.get("gateway.networking.k8s.io", "httproutes", "default", "web-route");
            r.is_some_and(|r| r["status"]["parents"][0]["conditions"][0]["status"] == "True")
        });

        // Destination: the whole set first, then an add and a remove; another Service's
        // stream gets only its own change.
        let mut eps = endpoints(&web, "web").await;
        let mut api_eps = endpoints(&web, "api").await;
        assert_eq!(ips(&next(&mut eps, "web endpoints").await), ("add", vec!["10.213.0.1".to_owned()]));
        assert_eq!(ips(&next(&mut api_eps, "api endpoints").await), ("add", vec!["10.213.0.9".to_owned()]));
        api.apply(&slice("web-2", "web", "10.213.0.2"));
        assert_eq!(ips(&next(&mut eps, "a new endpoint").await), ("add", vec!["10.213.0.2".to_owned()]));
        api.delete("discovery.k8s.io", "endpointslices", "default", "web-2");
        assert_eq!(ips(&next(&mut eps, "a deleted endpoint").await), ("remove", vec!["10.213.0.2".to_owned()]));
        api.apply(&slice("api-2", "api", "10.213.0.8"));
        assert_eq!(
            ips(&next(&mut api_eps, "api's own change").await),
            ("add", vec!["10.213.0.8".to_owned()]),
            "the api stream must get nothing of web's changes"
        );

        // By address, as a transparent proxy asks: a ClusterIP is its Service, a pod IP the
        // pod and its Service, anything else unknown.
        for (ip, port, want) in [
            ("10.96.0.10", 80, "service web"),
            ("10.213.0.9", 8080, "pod api-pod of api as api"),
            ("192.0.2.1", 80, "unknown"),
        ] {
            let mut client = OutboundPoliciesClient::with_origin(web.clone(), origin());
            let target = OutboundTarget {
                target: Some(outbound_target::Target::Address(mesh_api::v1::SocketAddress {
                    ip: ip.to_owned(),
                    port,
                })),
                source_namespace: "default".to_owned(),
            };
            let mut stream = client.watch(target).await.unwrap().into_inner();
            let p = next(&mut stream, ip).await;
            let got = match p.target.unwrap() {
                outbound_policy::Target::Service(s) => format!("service {}", s.name),
                outbound_policy::Target::Pod(p) => {
                    let e = p.endpoint.unwrap();
                    let s = p.service.unwrap();
                    format!("pod {} of {} as {}", e.pod, s.name, e.service_account)
                }
                outbound_policy::Target::Unknown(_) => "unknown".to_owned(),
                outbound_policy::Target::NotFound(_) => "not found".to_owned(),
            };
            assert_eq!(got, want, "{ip}");
        }

        // Inbound: identity web may not read api's pod, and gets its own.
        let denied = inbound(&web, "api-pod").await.unwrap_err();
        assert_eq!(denied.code(), tonic::Code::PermissionDenied, "{denied:?}");
        let own = inbound(&web, "web-pod").await.unwrap();
        assert!(own.objects.iter().any(|o| o.kind == "Pod" && o.name == "web-pod"), "{own:?}");
        assert!(!own.objects.iter().any(|o| o.name == "api-pod"));
    });

    let (code, metrics) = controller.admin("/metrics").unwrap();
    assert_eq!(code, 200);
    assert!(
        metrics.contains("controller_updates_sent_total{api=\"outbound\"}"),
        "{metrics}"
    );
    assert!(metrics.contains("policy_object_refused_total"), "{metrics}");
}

/// What the controller's status writes rely on: the test API server keeps a custom
/// resource's status apart from its spec, as a real one does with `subresources.status`.
#[test]
fn the_test_api_server_keeps_status_apart_from_the_resource() {
    use kube::api::{Api, ApiResource as KubeResource, DynamicObject, Patch, PatchParams};

    let api = ApiServer::start();
    api.apply(&route("web-v1", None));
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let config = kube::Config::new(api.url().parse().unwrap());
        let client = kube::Client::try_from(config).unwrap();
        let ar = KubeResource {
            group: "gateway.networking.k8s.io".to_owned(),
            version: "v1".to_owned(),
            api_version: "gateway.networking.k8s.io/v1".to_owned(),
            kind: "HTTPRoute".to_owned(),
            plural: "httproutes".to_owned(),
        };
        let routes: Api<DynamicObject> = Api::namespaced_with(client, "default", &ar);
        let first = routes.get("web-route").await.unwrap();
        assert_eq!(first.metadata.generation, Some(1));

        // A status write changes the status only, not the generation. (It must fit the
        // CRD's status schema: a controllerName is `domain/path`, a parentRef is required;
        // what the schema does not list is pruned.)
        let parent =
            serde_json::json!({"controllerName": "example.com/x", "parentRef": {"name": "web"}});
        let status =
            serde_json::json!({"status": {"parents": [parent], "spec": 1}, "spec": {"rules": []}});
        let after = routes
            .patch_status("web-route", &PatchParams::default(), &Patch::Merge(status))
            .await
            .unwrap();
        assert_eq!(
            after.data["status"]["parents"][0]["controllerName"],
            "example.com/x"
        );
        assert!(after.data["status"].get("spec").is_none(), "pruned");
        assert_eq!(after.data["spec"], first.data["spec"]);
        assert_eq!(after.metadata.generation, Some(1));
    });

    // A write to the resource keeps the stored status and counts a spec change.
    let stored = || {
        api.get(
            "gateway.networking.k8s.io",
            "httproutes",
            "default",
            "web-route",
        )
        .unwrap()
    };
    api.apply(&route("web-v2", None));
    assert_eq!(
        stored()["status"]["parents"][0]["controllerName"],
        "example.com/x"
    );
    assert_eq!(stored()["metadata"]["generation"], 2);
    api.apply(&route("web-v2", None));
    assert_eq!(stored()["metadata"]["generation"], 2);
}

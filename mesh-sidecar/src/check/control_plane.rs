//! The checks of an installed mesh: the control plane `mesh install` wrote (read from what it
//! writes, so the two cannot drift), its CRDs, certificates and webhook, and the proxies.

use std::time::SystemTime;

use k8s_openapi::ByteString;
use mesh_core::kinds::catalog::{self, Definition};
use serde_json::Value;

use super::kube::{Kube, KubeError};
use super::pki;
use super::report::{Category, Outcome};
use crate::inject::DEFAULT_IMAGE;
use crate::inject::pod::{PROXY_CONTAINER, TRUST_ROOTS_CONFIGMAP, TRUST_ROOTS_KEY};
use crate::install::{InstallError, Pki, control_plane};

const CRDS_HINT: &str = "install them with `mesh install --crds | kubectl apply -f -`";

/// What `mesh install` writes for a namespace, as JSON documents.
pub(crate) struct Install {
    pub(crate) namespace: String,
    docs: Vec<Value>,
}

// === impl Install ===

impl Install {
    pub(crate) fn new(namespace: &str) -> Result<Self, InstallError> {
        let docs = control_plane(namespace, DEFAULT_IMAGE, &Pki::default())?;
        let docs = docs
            .iter()
            .map(serde_json::to_value)
            .collect::<Result<_, _>>()?;
        Ok(Self {
            namespace: namespace.to_owned(),
            docs,
        })
    }

    /// Each (apiVersion, kind) the install writes, the CRDs' own kind included, once.
    pub(crate) fn kinds(&self) -> Vec<(String, String)> {
        let mut kinds: Vec<(String, String)> = Vec::new();
        let crd = (
            "apiextensions.k8s.io/v1".to_owned(),
            "CustomResourceDefinition".to_owned(),
        );
        let written = self.docs.iter().filter_map(|d| {
            Some((
                d["apiVersion"].as_str()?.to_owned(),
                d["kind"].as_str()?.to_owned(),
            ))
        });
        for k in written.chain([crd]) {
            if !kinds.contains(&k) {
                kinds.push(k);
            }
        }
        kinds
    }

    fn names(&self, kind: &str) -> Vec<String> {
        (self.docs.iter())
            .filter(|d| d["kind"] == kind)
            .filter_map(|d| d["metadata"]["name"].as_str().map(str::to_owned))
            .collect()
    }

    /// The name of the Secret the install writes that holds `key`.
    fn secret_with(&self, key: &str) -> Option<String> {
        (self.docs.iter())
            .find(|d| d["kind"] == "Secret" && d["stringData"].get(key).is_some())
            .and_then(|d| d["metadata"]["name"].as_str().map(str::to_owned))
    }

    fn path(&self, resource: &str, name: &str) -> String {
        let ns = &self.namespace;
        match resource {
            "deployments" => format!("/apis/apps/v1/namespaces/{ns}/deployments/{name}"),
            _ => format!("/api/v1/namespaces/{ns}/{resource}/{name}"),
        }
    }
}

/// An API request failed for another reason than "not found".
pub(crate) fn api_failed(e: &KubeError) -> Outcome {
    Outcome::error(
        format!("the API server did not answer: {e}"),
        "check the kubeconfig's credentials and your RBAC rights (`kubectl auth can-i --list`)",
    )
}

/// The namespace, the Deployments (ready) and their Services (with ready endpoints).
pub(crate) async fn existence(kube: &Kube, install: &Install) -> Category {
    let mut c = Category::new("mesh-existence");
    let ns = &install.namespace;
    let outcome = match kube.get(&format!("/api/v1/namespaces/{ns}")).await {
        Ok(Some(_)) => Outcome::Success,
        Ok(None) => Outcome::error(
            format!("the namespace {ns} does not exist"),
            "install the control plane: `mesh install | kubectl apply -f -` (or pass --namespace)",
        ),
        Err(e) => api_failed(&e),
    };
    c.push(format!("control plane namespace {ns} exists"), outcome);
    if c.failed() {
        return c;
    }
    for name in install.names("Deployment") {
        let outcome = match kube.get(&install.path("deployments", &name)).await {
            Ok(Some(d)) => deployment_ready(&d, ns, &name),
            Ok(None) => Outcome::error(
                format!("the Deployment {ns}/{name} does not exist"),
                "re-apply the control plane: `mesh install | kubectl apply -f -`",
            ),
            Err(e) => api_failed(&e),
        };
        c.push(format!("{name} is ready"), outcome);
    }
    for name in install.names("Service") {
        let path = format!("/apis/discovery.k8s.io/v1/namespaces/{ns}/endpointslices");
        let outcome = match kube.list(&path).await {
            Ok(slices) => service_endpoints(&slices, ns, &name),
            Err(e) => api_failed(&e),
        };
        c.push(format!("the {name} Service has ready endpoints"), outcome);
    }
    c
}

/// Ready as `kubectl rollout status` sees it: the current generation observed and every
/// wanted replica ready.
fn deployment_ready(d: &Value, ns: &str, name: &str) -> Outcome {
    let want = d["spec"]["replicas"].as_i64().unwrap_or(1);
    let ready = d["status"]["readyReplicas"].as_i64().unwrap_or(0);
    let generation = d["metadata"]["generation"].as_i64().unwrap_or(0);
    let observed = d["status"]["observedGeneration"].as_i64().unwrap_or(0);
    // The Deployment controller's own verdict, when it has given one, outranks the counts.
    let unavailable = (d["status"]["conditions"].as_array().into_iter().flatten())
        .any(|c| c["type"] == "Available" && c["status"] == "False");
    if observed >= generation && ready >= want && !unavailable {
        return Outcome::Success;
    }
    Outcome::error(
        format!("{ready} of {want} replicas of {ns}/{name} are ready"),
        format!(
            "see why with `kubectl -n {ns} describe deploy/{name}` and `kubectl -n {ns} logs deploy/{name}`"
        ),
    )
}

fn service_endpoints(slices: &[Value], ns: &str, name: &str) -> Outcome {
    let ready = slices
        .iter()
        .filter(|s| s["metadata"]["labels"]["kubernetes.io/service-name"] == name)
        .flat_map(|s| s["endpoints"].as_array().into_iter().flatten())
        .any(|e| e["conditions"]["ready"] != false);
    if ready {
        return Outcome::Success;
    }
    Outcome::error(
        format!("the Service {ns}/{name} has no ready endpoint"),
        format!(
            "its pods are not ready: `kubectl -n {ns} get endpointslices -l kubernetes.io/service-name={name}`"
        ),
    )
}

/// The CRDs of every kind mesh reads exist, are established and serve the versions it reads.
pub(crate) async fn config(kube: &Kube) -> Category {
    let mut c = Category::new("mesh-config");
    let mut problems = Vec::new();
    for kind in catalog::iter().filter(|k| k.definition != Definition::BuiltIn) {
        let name = format!("{}.{}", kind.plural, kind.group);
        let path = format!("/apis/apiextensions.k8s.io/v1/customresourcedefinitions/{name}");
        let crd = match kube.get(&path).await {
            Ok(Some(crd)) => crd,
            Ok(None) => {
                problems.push(format!("{name} is missing"));
                continue;
            }
            Err(e) => {
                c.push("the CRDs exist", api_failed(&e));
                return c;
            }
        };
        let established = (crd["status"]["conditions"].as_array().into_iter().flatten())
            .any(|cond| cond["type"] == "Established" && cond["status"] == "True");
        if !established {
            problems.push(format!("{name} is not established"));
        }
        let served: Vec<&str> = (crd["spec"]["versions"].as_array().into_iter().flatten())
            .filter(|v| v["served"] == true)
            .filter_map(|v| v["name"].as_str())
            .collect();
        for v in kind.served().filter(|v| !served.contains(&v.name)) {
            problems.push(format!("{name} does not serve {}", v.name));
        }
    }
    let outcome = match problems.is_empty() {
        true => Outcome::Success,
        false => Outcome::error(problems.join("; "), CRDS_HINT),
    };
    c.push("the CRDs exist and serve the versions mesh reads", outcome);
    c
}

/// Reads `key` of a Secret's (base64) data.
fn secret_value(secret: &Value, key: &str) -> Option<String> {
    let b: ByteString = serde_json::from_value(secret["data"][key].clone()).ok()?;
    String::from_utf8(b.0).ok()
}

async fn secret(kube: &Kube, install: &Install, key: &str) -> Result<Value, Outcome> {
    let ns = &install.namespace;
    let Some(name) = install.secret_with(key) else {
        return Err(Outcome::error(
            "mesh install writes no such Secret",
            "a bug in mesh",
        ));
    };
    match kube.get(&install.path("secrets", &name)).await {
        Ok(Some(s)) if secret_value(&s, key).is_some() => Ok(s),
        Ok(_) => Err(Outcome::error(
            format!("the Secret {ns}/{name} holds no {key}"),
            "re-apply the control plane: `mesh install | kubectl apply -f -`",
        )),
        Err(e) => Err(api_failed(&e)),
    }
}

/// The trust anchors the control plane hands to proxies, PEM.
pub(crate) async fn trust_anchors(kube: &Kube, install: &Install) -> Result<String, Outcome> {
    let path = install.path("configmaps", TRUST_ROOTS_CONFIGMAP);
    match kube.get(&path).await {
        Ok(Some(cm)) => cm["data"][TRUST_ROOTS_KEY]
            .as_str()
            .map(str::to_owned)
            .ok_or_else(|| {
                Outcome::error(
                    format!("the ConfigMap {TRUST_ROOTS_CONFIGMAP} holds no {TRUST_ROOTS_KEY}"),
                    "re-apply the control plane: `mesh install | kubectl apply -f -`",
                )
            }),
        Ok(None) => Err(Outcome::error(
            format!(
                "the ConfigMap {}/{TRUST_ROOTS_CONFIGMAP} does not exist",
                install.namespace
            ),
            "re-apply the control plane: `mesh install | kubectl apply -f -`",
        )),
        Err(e) => Err(api_failed(&e)),
    }
}

/// Anchors and issuer valid now (warning under 60 days), the issuer signed by the anchors.
pub(crate) async fn identity(kube: &Kube, install: &Install, now: SystemTime) -> Category {
    let mut c = Category::new("mesh-identity");
    let anchors = trust_anchors(kube, install).await;
    let outcome = match &anchors {
        Ok(pem) => pki::validity(pem, "trust anchor", now),
        Err(o) => o.clone(),
    };
    c.push("trust anchors are within their validity period", outcome);
    let issuer = secret(kube, install, "issuer.crt").await;
    let crt = issuer
        .as_ref()
        .ok()
        .and_then(|s| secret_value(s, "issuer.crt"));
    let outcome = match (&issuer, &crt) {
        (Err(o), _) => o.clone(),
        (Ok(_), Some(crt)) => pki::validity(crt, "issuer certificate", now),
        (Ok(_), None) => Outcome::error("no issuer.crt", "re-apply the control plane"),
    };
    let issuer_valid = !outcome.is_error();
    c.push("issuer certificate is within its validity period", outcome);
    let key = issuer
        .as_ref()
        .ok()
        .and_then(|s| secret_value(s, "issuer.key"));
    if let (Ok(anchors), Some(crt), Some(key), true) = (&anchors, &crt, &key, issuer_valid) {
        let outcome = pki::issuer_signed_by(anchors, crt, key, now);
        c.push("issuer certificate is signed by the trust anchors", outcome);
    }
    c
}

/// The mutating webhook's caBundle verifies the injector's serving certificate.
pub(crate) async fn webhooks(kube: &Kube, install: &Install, now: SystemTime) -> Category {
    let mut c = Category::new("mesh-webhooks");
    let description = "the injector webhook's caBundle verifies the injector's certificate";
    for name in install.names("MutatingWebhookConfiguration") {
        let path =
            format!("/apis/admissionregistration.k8s.io/v1/mutatingwebhookconfigurations/{name}");
        let config = match kube.get(&path).await {
            Ok(Some(w)) => w,
            Ok(None) => {
                let error = format!("the MutatingWebhookConfiguration {name} does not exist");
                let hint = "re-apply the control plane: `mesh install | kubectl apply -f -`";
                c.push(description, Outcome::error(error, hint));
                continue;
            }
            Err(e) => {
                c.push(description, api_failed(&e));
                continue;
            }
        };
        let tls = secret(kube, install, "tls.crt").await;
        let outcome = match tls {
            Ok(s) => webhook_outcome(&config, &s, &install.namespace, now),
            Err(o) => o,
        };
        c.push(description, outcome);
    }
    c
}

fn webhook_outcome(config: &Value, tls: &Value, ns: &str, now: SystemTime) -> Outcome {
    let crt = secret_value(tls, "tls.crt").unwrap_or_default();
    for hook in config["webhooks"].as_array().into_iter().flatten() {
        let cc = &hook["clientConfig"];
        let bundle: Option<ByteString> = serde_json::from_value(cc["caBundle"].clone()).ok();
        let bundle = bundle
            .and_then(|b| String::from_utf8(b.0).ok())
            .unwrap_or_default();
        let svc = cc["service"]["name"].as_str().unwrap_or_default();
        let host = format!("{svc}.{ns}.svc");
        let outcome = pki::ca_bundle_verifies(&bundle, &crt, &host, now);
        if outcome != Outcome::Success {
            return outcome;
        }
    }
    Outcome::Success
}

/// Injected pods are ready and were started with the control plane's current anchors.
pub(crate) async fn data_plane(kube: &Kube, install: &Install) -> Category {
    let mut c = Category::new("mesh-data-plane");
    let pods = match kube.list("/api/v1/pods").await {
        Ok(p) => p,
        Err(e) => {
            c.push("data plane proxies are ready", api_failed(&e));
            return c;
        }
    };
    let injected: Vec<&Value> = pods.iter().filter(|p| proxy(p).is_some()).collect();
    let unready: Vec<String> = (injected.iter())
        .filter(|p| !pod_ready(p))
        .map(|p| pod_name(p))
        .collect();
    let outcome = match unready.is_empty() {
        true => Outcome::Success,
        false => Outcome::error(
            format!("not ready: {}", unready.join(", ")),
            "see why with `kubectl describe pod` and `kubectl logs POD -c mesh-proxy`",
        ),
    };
    c.push("data plane proxies are ready", outcome);
    let current = match trust_anchors(kube, install).await {
        Ok(a) => a,
        Err(o) => {
            c.push("data plane proxies trust the current anchors", o);
            return c;
        }
    };
    let mut stale = Vec::new();
    for pod in injected {
        if !pod_anchors_match(kube, pod, &current).await {
            stale.push(pod_name(pod));
        }
    }
    let outcome = match stale.is_empty() {
        true => Outcome::Success,
        false => Outcome::error(
            format!("started with other trust anchors: {}", stale.join(", ")),
            "restart them to pick up the current anchors: `kubectl rollout restart deploy -n NAMESPACE`",
        ),
    };
    c.push("data plane proxies trust the current anchors", outcome);
    c
}

fn proxy(pod: &Value) -> Option<&Value> {
    let spec = &pod["spec"];
    (spec["containers"].as_array().into_iter().flatten())
        .chain(spec["initContainers"].as_array().into_iter().flatten())
        .find(|c| c["name"] == PROXY_CONTAINER)
}

fn pod_ready(pod: &Value) -> bool {
    (pod["status"]["conditions"].as_array().into_iter().flatten())
        .any(|c| c["type"] == "Ready" && c["status"] == "True")
}

fn pod_name(pod: &Value) -> String {
    let m = &pod["metadata"];
    format!(
        "{}/{}",
        m["namespace"].as_str().unwrap_or(""),
        m["name"].as_str().unwrap_or("")
    )
}

/// The anchors a proxy was started with: inline (`mesh inject --trust-anchors`), or the
/// ConfigMap of its namespace the injector mounts.
async fn pod_anchors_match(kube: &Kube, pod: &Value, current: &str) -> bool {
    let Some(container) = proxy(pod) else {
        return false;
    };
    let env = |name: &str| {
        (container["env"].as_array().into_iter().flatten())
            .find(|e| e["name"] == name)
            .and_then(|e| e["value"].as_str())
            .map(str::to_owned)
    };
    if let Some(pem) = env("MESH_TRUST_ANCHORS") {
        return pki::same_certs(&pem, current);
    }
    let ns = pod["metadata"]["namespace"].as_str().unwrap_or("default");
    let path = format!("/api/v1/namespaces/{ns}/configmaps/{TRUST_ROOTS_CONFIGMAP}");
    match kube.get(&path).await {
        Ok(Some(cm)) => cm["data"][TRUST_ROOTS_KEY]
            .as_str()
            .is_some_and(|pem| pki::same_certs(pem, current)),
        _ => false,
    }
}

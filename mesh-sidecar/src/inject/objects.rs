//! The per-document and per-object steps of `mesh inject`: which kinds hold a pod template,
//! Lists, Namespaces' annotations, and where each object sits, for messages.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::PodSpec;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use serde_norway::Value;

use mesh_core::manifest::strip_location;

use super::{InjectConfig, Injected, Outcome, SidecarMode, inject_pod, pod};

/// Everything the per-object step needs, fixed for a run.
pub(super) struct Ctx<'a> {
    pub(super) config: &'a InjectConfig,
    /// Annotations of the Namespace objects found in the stream.
    pub(super) namespaces: BTreeMap<String, BTreeMap<String, String>>,
    /// Annotations assumed for namespaces the stream does not hold.
    pub(super) default_namespace: &'a BTreeMap<String, String>,
}

/// Where an object sits, for messages: `x.yaml: document 2 (line 14) item 0`.
pub(super) struct Origin<'a> {
    pub(super) input: &'a str,
    pub(super) document: usize,
    pub(super) line: usize,
    pub(super) item: Option<usize>,
}

/// Returns whether the document changed.
pub(super) fn process_document(
    value: &mut Value,
    ctx: &Ctx<'_>,
    origin: &Origin<'_>,
    done: &mut Injected,
) -> Result<bool, String> {
    if !is_list(value) {
        return process_object(value, ctx, origin, done);
    }
    match value.get_mut("items") {
        None | Some(Value::Null) => Ok(false),
        Some(Value::Sequence(items)) => {
            let mut changed = false;
            for (i, item) in items.iter_mut().enumerate() {
                // A List may hold nulls (kubectl writes them); they are kept as they are.
                if item.is_null() {
                    continue;
                }
                let origin = Origin {
                    item: Some(i),
                    ..*origin
                };
                changed |= process_object(item, ctx, &origin, done)?;
            }
            Ok(changed)
        }
        Some(_) => Err(format!(
            "{origin}: items: a List's items must be a sequence"
        )),
    }
}

fn process_object(
    value: &mut Value,
    ctx: &Ctx<'_>,
    origin: &Origin<'_>,
    done: &mut Injected,
) -> Result<bool, String> {
    let kind = value.get("kind").and_then(Value::as_str).map(str::to_owned);
    let Some(kind) = kind else {
        done.lines.push(format!("{origin} passed through: no kind"));
        return Ok(false);
    };
    let api_version = value
        .get("apiVersion")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_owned();
    let name = object_name(value);
    let label = format!("{} {name}", kind.to_lowercase());
    let Some((path, served)) = workload(&kind) else {
        done.lines.push(format!("{label} passed through"));
        return Ok(false);
    };
    if !served.contains(&api_version.as_str()) {
        // Linkerd's injector never looks at a workload's apiVersion; neither do we, but a
        // user who wrote `apps/v1` on a Pod should hear about it before the API server says no.
        done.warnings.push(format!(
            "{label} ({origin}): apiVersion {api_version:?} is not one Kubernetes serves for \
             {kind} ({}); injecting it as a {kind}",
            served.join(", ")
        ));
    }
    let namespace = value
        .get("metadata")
        .and_then(|m| m.get("namespace"))
        .and_then(Value::as_str)
        .map(str::to_owned);
    let ns_annotations = namespace
        .as_deref()
        .and_then(|ns| ctx.namespaces.get(ns))
        .unwrap_or(ctx.default_namespace);

    let mut template = &mut *value;
    let mut at = String::new();
    for key in path {
        if !at.is_empty() {
            at.push('.');
        }
        at.push_str(key);
        template = match template.get_mut(*key) {
            Some(t) if !t.is_null() => t,
            _ => return Err(format!("{origin}: {label}: {at}: missing: no pod template")),
        };
    }
    let prefix = if at.is_empty() {
        String::new()
    } else {
        format!("{at}.")
    };
    let metadata: ObjectMeta = match template.get("metadata") {
        None | Some(Value::Null) => ObjectMeta::default(),
        Some(m) => from_value(m, &format!("{prefix}metadata"))
            .map_err(|e| format!("{origin}: {label}: {e}"))?,
    };
    let spec: PodSpec = match template.get("spec") {
        None | Some(Value::Null) => {
            return Err(format!("{origin}: {label}: {prefix}spec: missing"));
        }
        Some(s) => from_value(s, &format!("{prefix}spec"))
            .map_err(|e| format!("{origin}: {label}: {e}"))?,
    };
    let outcome = inject_pod(&metadata, &spec, ns_annotations, ctx.config)
        .map_err(|e| format!("{origin}: {label}: {e}"))?;
    let run_to_completion = matches!(kind.as_str(), "Job" | "CronJob")
        || (kind == "Pod" && matches!(spec.restart_policy.as_deref(), Some("Never" | "OnFailure")));
    if ctx.config.sidecar == SidecarMode::Legacy
        && run_to_completion
        && matches!(outcome, Outcome::Injected { .. })
    {
        // A regular proxy container never exits, so the pod never completes; native
        // sidecars are stopped by the kubelet once the app's containers are done.
        done.warnings.push(format!(
            "{label} ({origin}): with --legacy-sidecar the proxy keeps it from completing"
        ));
    }
    match outcome {
        Outcome::Skipped(why) => {
            done.lines.push(format!("{label} skipped: {why}"));
            Ok(false)
        }
        Outcome::Injected { metadata, spec } => {
            // Serialising k8s-openapi types cannot fail (string keys only); still reported.
            let err = |e: serde_norway::Error| format!("{origin}: cannot write YAML: {e}");
            template["metadata"] = serde_norway::to_value(&*metadata).map_err(err)?;
            template["spec"] = serde_norway::to_value(&*spec).map_err(err)?;
            done.lines.push(format!("{label} injected"));
            Ok(true)
        }
    }
}

/// The pod template's path in a workload, and the apiVersions Kubernetes serves it under.
fn workload(kind: &str) -> Option<(&'static [&'static str], &'static [&'static str])> {
    const TEMPLATE: &[&str] = &["spec", "template"];
    const APPS: &[&str] = &[
        "apps/v1",
        "apps/v1beta2",
        "apps/v1beta1",
        "extensions/v1beta1",
    ];
    Some(match kind {
        "Pod" => (&[], &["v1"]),
        "Deployment" | "DaemonSet" | "ReplicaSet" | "StatefulSet" => (TEMPLATE, APPS),
        "ReplicationController" => (TEMPLATE, &["v1"]),
        "Job" => (TEMPLATE, &["batch/v1"]),
        "CronJob" => (
            &["spec", "jobTemplate", "spec", "template"],
            &["batch/v1", "batch/v1beta1"],
        ),
        _ => return None,
    })
}

fn is_list(value: &Value) -> bool {
    value
        .get("kind")
        .and_then(Value::as_str)
        .is_some_and(|k| k == "List" || (k.ends_with("List") && value.get("items").is_some()))
}

/// Namespace objects' annotations, with an `mesh.io/inject` label counted as an annotation:
/// the webhook's namespaceSelector can only see labels, so both spellings opt a namespace in.
pub(super) fn collect_namespaces(
    value: &Value,
    out: &mut BTreeMap<String, BTreeMap<String, String>>,
) {
    if is_list(value) {
        if let Some(Value::Sequence(items)) = value.get("items") {
            for item in items {
                collect_namespaces(item, out);
            }
        }
        return;
    }
    if value.get("kind").and_then(Value::as_str) != Some("Namespace") {
        return;
    }
    let meta = value.get("metadata");
    let Some(name) = meta.and_then(|m| m.get("name")).and_then(Value::as_str) else {
        return;
    };
    let strings = |key: &str| -> BTreeMap<String, String> {
        match meta.and_then(|m| m.get(key)) {
            Some(Value::Mapping(m)) => m
                .iter()
                .filter_map(|(k, v)| Some((k.as_str()?.to_owned(), v.as_str()?.to_owned())))
                .collect(),
            _ => BTreeMap::new(),
        }
    };
    let mut annotations = strings("annotations");
    for (k, v) in strings("labels") {
        if k == pod::INJECT_ANNOTATION {
            annotations.entry(k).or_insert(v);
        }
    }
    out.insert(name.to_owned(), annotations);
}

fn object_name(value: &Value) -> String {
    let meta = value.get("metadata");
    let field = |k: &str| meta.and_then(|m| m.get(k)).and_then(Value::as_str);
    match (field("name"), field("generateName")) {
        (Some(n), _) => format!("{n:?}"),
        (None, Some(g)) => format!("{:?}", format!("{g}*")),
        (None, None) => "(unnamed)".to_owned(),
    }
}

fn from_value<T: serde::de::DeserializeOwned>(value: &Value, at: &str) -> Result<T, String> {
    serde_path_to_error::deserialize(value.clone()).map_err(|e| {
        let path = e.path().to_string();
        let path = if path == "." {
            at.to_owned()
        } else {
            format!("{at}.{path}")
        };
        format!("{path}: {}", strip_location(&e.into_inner().to_string()))
    })
}

/// The comment and blank lines a document starts with.
pub(super) fn leading_comments(text: &str) -> &str {
    let mut end = 0;
    for line in text.split_inclusive('\n') {
        let t = line.trim();
        if !(t.is_empty() || t.starts_with('#')) {
            break;
        }
        end += line.len();
    }
    &text[..end]
}

// === impl Origin ===

impl std::fmt::Display for Origin<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}: document {} (line {})",
            self.input, self.document, self.line
        )?;
        if let Some(i) = self.item {
            write!(f, " item {i}")?;
        }
        Ok(())
    }
}

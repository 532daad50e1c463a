//! `mesh inject`: add the mesh to every workload of a YAML stream.
//!
//! The stream is split into documents by hand, as mesh-core's loader does, so that a syntax
//! error names its own document and line, and so that documents we do not change are written
//! back byte for byte (comments included). Only documents holding a workload are
//! re-serialised. Nothing is written unless every document is valid: the output is meant to
//! be piped into `kubectl apply -f -`, which must never see half a stream.

use std::collections::BTreeMap;
use std::io::{Read as _, Write as _};
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context as _;
use clap::Args;
use k8s_openapi::api::core::v1::PodSpec;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use serde_norway::Value;

use crate::identity::IssuerAccount;

// The pure pod patching lives in mesh-inject (shared with the webhook and its fuzz target);
// the rest of the binary keeps naming it through this module.
pub(crate) use mesh_inject::pod;
pub(crate) use mesh_inject::{InjectConfig, Outcome, SidecarMode, inject_pod};

/// The image `mesh install` deploys and `mesh inject` adds, unless `--image` says otherwise.
pub(crate) const DEFAULT_IMAGE: &str = concat!("ghcr.io/mesh/mesh:", env!("CARGO_PKG_VERSION"));

/// Add the mesh (init step + proxy) to every workload of a YAML stream.
#[derive(Debug, Args)]
pub(crate) struct InjectArgs {
    /// YAML files, directories (read recursively: *.yaml, *.yml) or `-` for stdin.
    #[arg(required = true, value_name = "FILE|DIR|-")]
    inputs: Vec<PathBuf>,
    /// Annotations of namespaces that are not in the stream, KEY=VALUE (repeatable, or
    /// comma-separated), e.g. `mesh.io/inject=disabled`. A value may hold commas
    /// (`config.mesh.io/skip-inbound-ports=25,443`): a piece without `=` continues the value.
    #[arg(long = "namespace-annotations", value_name = "KEY=VALUE")]
    namespace_annotations: Vec<String>,
    #[command(flatten)]
    proxy: ProxyArgs,
}

/// What the added proxy looks like; shared by `mesh inject` and `mesh injector`.
#[derive(Clone, Debug, Args)]
pub(crate) struct ProxyArgs {
    /// The mesh image for the init step and the proxy.
    #[arg(long, default_value = DEFAULT_IMAGE)]
    image: String,
    /// Add the proxy as a regular container with a startup hook, for clusters older than
    /// Kubernetes 1.29 (no native sidecars).
    #[arg(long)]
    legacy_sidecar: bool,
    /// The mesh CNI plugin sets up the traffic redirect: add no privileged init container.
    #[arg(long)]
    cni: bool,
    /// Audience of the service-account token the proxy presents to the issuer.
    #[arg(long, default_value = "identity.mesh.io")]
    identity_audience: String,
    /// The issuer's address, host:port.
    #[arg(long, default_value = "mesh-identity.mesh.svc.cluster.local:8443")]
    identity_addr: String,
    /// Where proxies get their policy and endpoints: `mesh controller`'s address, host:port.
    #[arg(long, default_value = "mesh-controller.mesh.svc.cluster.local:8090")]
    controller_addr: String,
    /// The namespace and service account `mesh controller` runs as, which its certificate
    /// names; proxies check it (`mesh install`'s, beside the address above).
    #[arg(
        long,
        value_name = "NAMESPACE/NAME",
        default_value = "mesh/mesh-controller"
    )]
    controller_service_account: IssuerAccount,
    /// The namespace and service account the issuer runs as, which its certificate names
    /// (`mesh install`'s, beside the address above).
    #[arg(
        long,
        value_name = "NAMESPACE/NAME",
        default_value = "mesh/mesh-identity"
    )]
    identity_service_account: IssuerAccount,
    /// The trust anchors (PEM file, e.g. the ca.crt of `mesh identity init`), put into each
    /// proxy's environment. Without it, proxies read them from the ConfigMap
    /// mesh-identity-trust-roots, which must then exist in the pod's namespace.
    #[arg(long, value_name = "PEM")]
    trust_anchors: Option<PathBuf>,
    /// The trust domain the issuer signs for, handed to each proxy (`mesh install` passes the
    /// one of its issuer).
    #[arg(long, default_value = mesh_core::identity::DEFAULT_TRUST_DOMAIN)]
    trust_domain: String,
}

/// One named input: a file, or stdin.
#[derive(Clone, Debug)]
pub(crate) struct Input {
    pub(crate) name: String,
    pub(crate) text: String,
}

/// A successful run: the stream to print, and what happened to each resource.
#[derive(Clone, Debug, Default)]
pub(crate) struct Injected {
    pub(crate) output: String,
    /// One line per resource: `deployment "web" injected`.
    pub(crate) lines: Vec<String>,
    pub(crate) warnings: Vec<String>,
}

/// Everything the per-object step needs, fixed for a run.
struct Ctx<'a> {
    config: &'a InjectConfig,
    /// Annotations of the Namespace objects found in the stream.
    namespaces: BTreeMap<String, BTreeMap<String, String>>,
    /// Annotations assumed for namespaces the stream does not hold.
    default_namespace: &'a BTreeMap<String, String>,
}

/// Where an object sits, for messages: `x.yaml: document 2 (line 14) item 0`.
struct Origin<'a> {
    input: &'a str,
    document: usize,
    line: usize,
    item: Option<usize>,
}

pub(crate) fn run(args: InjectArgs) -> ExitCode {
    let inputs = match read_inputs(&args.inputs) {
        Ok(i) => i,
        Err(e) => {
            eprintln!("error: {e:#}");
            return ExitCode::from(2);
        }
    };
    let ns = match parse_annotations(&args.namespace_annotations) {
        Ok(ns) => ns,
        Err(e) => {
            eprintln!("error: --namespace-annotations: {e}");
            return ExitCode::from(2);
        }
    };
    // The CLI injects what it is given, as `linkerd inject` does; only `disabled` opts out.
    let config = match args.proxy.config(true) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("error: {e:#}");
            return ExitCode::from(2);
        }
    };
    match inject_stream(&inputs, &ns, &config) {
        Ok(done) => {
            for w in &done.warnings {
                eprintln!("warning: {w}");
            }
            for l in &done.lines {
                eprintln!("{l}");
            }
            let mut out = std::io::stdout().lock();
            if let Err(e) = out
                .write_all(done.output.as_bytes())
                .and_then(|()| out.flush())
            {
                eprintln!("error: writing the stream: {e}");
                return ExitCode::FAILURE;
            }
            ExitCode::SUCCESS
        }
        Err(errors) => {
            for e in &errors {
                eprintln!("error: {e}");
            }
            eprintln!("error: nothing written: fix the documents above first");
            ExitCode::FAILURE
        }
    }
}

/// A `--namespace-annotations` value whose first piece is not `KEY=VALUE`.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
#[error("{0:?} is not KEY=VALUE")]
struct NotKeyValue(String);

/// `a=1,b=2`, `c=3,4` → {a: 1, b: 2, c: "3,4"}.
fn parse_annotations(args: &[String]) -> Result<BTreeMap<String, String>, NotKeyValue> {
    let mut out = BTreeMap::new();
    for arg in args {
        let mut last: Option<String> = None;
        for piece in arg.split(',') {
            match (piece.split_once('='), &last) {
                (Some((k, v)), _) => {
                    let k = k.trim().to_owned();
                    out.insert(k.clone(), v.trim().to_owned());
                    last = Some(k);
                }
                (None, Some(k)) => {
                    if let Some(v) = out.get_mut(k) {
                        v.push(',');
                        v.push_str(piece.trim());
                    }
                }
                (None, None) => return Err(NotKeyValue(arg.clone())),
            }
        }
    }
    Ok(out)
}

/// Injects every workload of the inputs, read as one stream.
///
/// `namespace` holds the annotations assumed for namespaces that have no Namespace object in
/// the stream. Returns every error when any document is invalid, and then no output at all.
pub(crate) fn inject_stream(
    inputs: &[Input],
    namespace: &BTreeMap<String, String>,
    config: &InjectConfig,
) -> Result<Injected, Vec<String>> {
    let mut errors = Vec::new();
    // Parse all first: Namespace objects anywhere in the stream apply to workloads before them.
    let mut parsed = Vec::new();
    for input in inputs {
        let mut docs = Vec::new();
        let mut document = 0;
        for seg in split_documents(&input.text) {
            if !seg.has_content {
                docs.push((seg, None, 0));
                continue;
            }
            document += 1;
            // Merge keys (`<<: *defaults`) are resolved here: k8s-openapi would otherwise
            // see a `<<` field, ignore it, and the merged fields would vanish from the output.
            let parsed = serde_norway::from_str::<Value>(seg.text).and_then(|mut v| {
                v.apply_merge()?;
                Ok(v)
            });
            match parsed {
                Ok(v) => docs.push((seg, Some(v), document)),
                Err(e) => {
                    let at = e
                        .location()
                        .map(|l| format!(" at line {}", seg.line + l.line() - 1))
                        .unwrap_or_default();
                    errors.push(format!(
                        "{}: document {document} (line {}): {}{at}",
                        input.name,
                        seg.line,
                        strip_location(&e.to_string())
                    ));
                }
            }
        }
        parsed.push((input, docs));
    }

    let mut namespaces = BTreeMap::new();
    for (_, docs) in &parsed {
        for v in docs.iter().filter_map(|(_, v, _)| v.as_ref()) {
            collect_namespaces(v, &mut namespaces);
        }
    }
    let ctx = Ctx {
        config,
        namespaces,
        default_namespace: namespace,
    };

    let mut done = Injected::default();
    let mut pieces: Vec<String> = Vec::new();
    for (input, docs) in parsed {
        for (seg, value, document) in docs {
            let Some(mut value) = value else {
                pieces.push(seg.text.to_owned());
                continue;
            };
            let origin = Origin {
                input: &input.name,
                document,
                line: seg.line,
                item: None,
            };
            match process_document(&mut value, &ctx, &origin, &mut done) {
                Ok(false) => pieces.push(seg.text.to_owned()),
                Ok(true) => match serde_norway::to_string(&value) {
                    // Comments inside a rewritten document are lost; the ones heading it
                    // (a licence line, a note) cost nothing to keep.
                    Ok(text) => pieces.push(format!("{}{text}", leading_comments(seg.text))),
                    Err(e) => errors.push(format!("{origin}: cannot write YAML: {e}")),
                },
                Err(e) => errors.push(e),
            }
        }
    }
    if !errors.is_empty() {
        return Err(errors);
    }
    for p in &mut pieces {
        if !p.ends_with('\n') {
            p.push('\n');
        }
    }
    done.output = pieces.join("---\n");
    Ok(done)
}

/// Returns whether the document changed.
fn process_document(
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
fn collect_namespaces(value: &Value, out: &mut BTreeMap<String, BTreeMap<String, String>>) {
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
fn leading_comments(text: &str) -> &str {
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

use mesh_core::manifest::{split_stream as split_documents, strip_location};

/// Expands directories into their YAML files, sorted, so output order is stable.
fn read_inputs(paths: &[PathBuf]) -> anyhow::Result<Vec<Input>> {
    let mut inputs = Vec::new();
    for p in paths {
        if p.as_os_str() == "-" {
            let mut text = String::new();
            std::io::stdin()
                .read_to_string(&mut text)
                .context("cannot read stdin")?;
            inputs.push(Input {
                name: "<stdin>".to_owned(),
                text,
            });
            continue;
        }
        for f in crate::files::yaml_files(std::slice::from_ref(p))? {
            let text = crate::files::read(&f)?;
            inputs.push(Input {
                name: f.display().to_string(),
                text,
            });
        }
    }
    Ok(inputs)
}

// === impl ProxyArgs ===

impl ProxyArgs {
    /// The injection config; reads `--trust-anchors`.
    pub(crate) fn config(&self, inject_by_default: bool) -> anyhow::Result<InjectConfig> {
        let trust_anchors = match &self.trust_anchors {
            Some(path) => {
                let pem = std::fs::read_to_string(path)
                    .with_context(|| format!("cannot read {}", path.display()))?;
                mesh_identity::TrustBundle::from_pem(&pem)
                    .with_context(|| format!("{}: not PEM trust anchors", path.display()))?;
                Some(pem)
            }
            None => None,
        };
        Ok(InjectConfig {
            image: self.image.clone(),
            sidecar: if self.legacy_sidecar {
                SidecarMode::Legacy
            } else {
                SidecarMode::Native
            },
            cni: self.cni,
            identity_audience: self.identity_audience.clone(),
            identity_addr: self.identity_addr.clone(),
            controller_addr: self.controller_addr.clone(),
            controller_service_account: self.controller_service_account.to_string(),
            identity_service_account: self.identity_service_account.to_string(),
            trust_domain: self.trust_domain.clone(),
            trust_anchors,
            inject_by_default,
            version: env!("CARGO_PKG_VERSION").to_owned(),
        })
    }
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

#[cfg(test)]
mod tests {
    use clap::Parser as _;

    use super::*;

    /// The inject flags alone, to build a config the way the CLI does.
    #[derive(clap::Parser)]
    struct InjectArgsOnly {
        #[command(flatten)]
        args: InjectArgs,
    }

    impl InjectArgs {
        fn parse_from<const N: usize>(argv: [&str; N]) -> Self {
            InjectArgsOnly::parse_from(argv).args
        }
    }

    #[test]
    fn namespace_annotation_values_may_hold_commas() {
        let args = [
            "mesh.io/inject=enabled,config.mesh.io/skip-inbound-ports=25,443".to_owned(),
            "config.linkerd.io/opaque-ports=5432".to_owned(),
        ];
        let got = parse_annotations(&args).unwrap();
        assert_eq!(got["mesh.io/inject"], "enabled");
        assert_eq!(got["config.mesh.io/skip-inbound-ports"], "25,443");
        assert_eq!(got["config.linkerd.io/opaque-ports"], "5432");
        assert!(parse_annotations(&["nope".to_owned()]).is_err());
    }

    #[test]
    fn split_keeps_comment_only_pieces_and_counts_documents() {
        let s = "# banner\n---\na: 1\n---\n# only a comment\n---\nb: 2\n---\n";
        let segs = split_documents(s);
        let seen: Vec<_> = segs.iter().map(|s| (s.line, s.has_content)).collect();
        assert_eq!(seen, [(1, false), (3, true), (5, false), (7, true)]);
    }

    #[test]
    fn leading_comments_are_the_head_only() {
        assert_eq!(leading_comments("# a\n\n# b\nx: 1\n# c\n"), "# a\n\n# b\n");
        assert_eq!(leading_comments("x: 1\n"), "");
    }

    #[test]
    fn merge_keys_reach_the_pod_spec() {
        let text = "apiVersion: v1\nkind: Pod\nmetadata: {name: p}\nspec:\n  \
                    containers:\n  - &app {name: app, image: app:1}\n  - <<: *app\n    name: two\n";
        let input = Input {
            name: "t".to_owned(),
            text: text.to_owned(),
        };
        let config = InjectArgs::parse_from(["inject", "-"])
            .proxy
            .config(true)
            .unwrap();
        let out = inject_stream(&[input], &BTreeMap::new(), &config).unwrap();
        let v: Value = serde_norway::from_str(&out.output).unwrap();
        assert_eq!(v["spec"]["containers"][1]["image"].as_str(), Some("app:1"));
    }
}

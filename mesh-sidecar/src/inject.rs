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
use serde_norway::Value;

use crate::identity::IssuerAccount;
use mesh_core::manifest::{Segment, split_stream as split_documents, strip_location};

mod objects;

use objects::{Ctx, Origin, collect_namespaces, leading_comments, process_document};

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
    let parsed: Vec<_> = (inputs.iter())
        .map(|input| (input, parse_documents(input, &mut errors)))
        .collect();

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

/// The documents of `input`, each with its parsed value (`None` for one without content, or
/// one that did not parse: its error is added to `errors`) and its number in the stream.
fn parse_documents<'a>(
    input: &'a Input,
    errors: &mut Vec<String>,
) -> Vec<(Segment<'a>, Option<Value>, usize)> {
    let mut docs = Vec::new();
    let mut document = 0;
    for seg in split_documents(&input.text) {
        if !seg.has_content {
            docs.push((seg, None, 0));
            continue;
        }
        document += 1;
        // Merge keys (`<<: *defaults`) are resolved here: k8s-openapi would otherwise see a
        // `<<` field, ignore it, and the merged fields would vanish from the output.
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
    docs
}

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

//! Which kind an object is: its group, kind and served versions, and the notes for what the
//! mesh does not read.

use serde_norway::Value;

use super::doc::{Cx, Doc, join_path};
use crate::error::{LoadError, Note};
use crate::kinds;
use crate::manifest::{Origin, RawObject};

/// The compiler reads each kind by its family in the catalog, the one description of every kind.
pub(crate) use crate::kinds::catalog::Family as Kind;

// === impl Cx ===

impl Cx {
    /// Recognises the kind; counts (in `skipped`) and notes what is skipped.
    pub(crate) fn identify(&mut self, raw: RawObject, skipped: &mut usize) -> Option<Doc> {
        let errors = self.errors.len();
        let doc = self.recognise(raw);
        if doc.is_none() && self.errors.len() == errors {
            *skipped += 1;
        }
        doc
    }

    fn recognise(&mut self, raw: RawObject) -> Option<Doc> {
        let origin = raw.origin.clone();
        let kind_name = match raw.value.get("kind") {
            Some(Value::String(k)) => k.clone(),
            _ => {
                let message = if raw.value.is_mapping() {
                    "kind: missing; every resource needs a kind"
                } else {
                    "a resource must be a mapping with apiVersion, kind and metadata"
                };
                self.errors.push(LoadError {
                    origin,
                    line: None,
                    resource: None,
                    field: None,
                    message: message.to_owned(),
                });
                return None;
            }
        };
        let api_version = raw
            .value
            .get("apiVersion")
            .and_then(Value::as_str)
            .map(str::to_owned);
        let (group, version) = self.group_version(&origin, api_version.as_deref(), &kind_name)?;

        if let Some(instead) = istio_replacement(&group, &kind_name) {
            self.notes.push(Note {
                origin: Some(origin),
                resource: Some(format!("{kind_name} ({group})")),
                message: format!("Istio kind skipped; {instead}"),
            });
            return None;
        }

        let Some((kind, served)) = known_kind(&group, &kind_name) else {
            // Pods are `v1`; Linkerd's injector reads one under any apiVersion, and so do we.
            if kind_name == "Pod" {
                let doc = self.doc(raw, Kind::Pod, String::new(), kind_name, version)?;
                let av = api_version.unwrap_or_default();
                self.note(
                    &doc,
                    format!("apiVersion {av} is wrong for a Pod (Pods are v1); read as v1"),
                );
                return Some(doc);
            }
            let what = if group.is_empty() {
                version.clone()
            } else {
                format!("{group}/{version}")
            };
            self.notes.push(Note {
                origin: Some(origin),
                resource: Some(format!("{kind_name} ({what})")),
                message: "not a kind the mesh reads; skipped".to_owned(),
            });
            return None;
        };
        if !served.contains(&version.as_str()) {
            let mut doc = self.doc(raw, kind, group.clone(), kind_name, version.clone())?;
            doc.version = version.clone();
            self.err(
                &doc,
                "apiVersion",
                format!(
                    "{group}/{version} is not a served version of {} (served: {})",
                    doc.kind_name,
                    served.join(", ")
                ),
            );
            return None;
        }
        self.doc(raw, kind, group, kind_name, version)
    }

    /// The group and version of `apiVersion`, or inferred (with a note) for a kind the mesh
    /// reads when it is missing.
    fn group_version(
        &mut self,
        origin: &Origin,
        api_version: Option<&str>,
        kind_name: &str,
    ) -> Option<(String, String)> {
        if let Some(v) = api_version {
            return Some(match v.rsplit_once('/') {
                Some((g, v)) => (g.to_owned(), v.to_owned()),
                None => (String::new(), v.to_owned()),
            });
        }
        let inferred = infer_group(kind_name);
        self.notes.push(Note {
            origin: Some(origin.clone()),
            resource: Some(kind_name.to_owned()),
            message: match inferred {
                Some((g, v)) => format!("no apiVersion; read as {g}/{v}"),
                None => "no apiVersion and not a kind the mesh reads; skipped".to_owned(),
            },
        });
        inferred.map(|(g, v)| (g.to_owned(), v.to_owned()))
    }

    fn doc(
        &mut self,
        raw: RawObject,
        kind: Kind,
        group: String,
        kind_name: String,
        version: String,
    ) -> Option<Doc> {
        let meta: kinds::ObjectMeta = match raw.value.get("metadata") {
            None | Some(Value::Null) => kinds::ObjectMeta::default(),
            Some(m) => match serde_path_to_error::deserialize(m) {
                Ok(m) => m,
                Err(e) => {
                    self.errors.push(LoadError {
                        origin: raw.origin.clone(),
                        line: None,
                        resource: Some(kind_name),
                        field: Some(join_path("metadata", &e.path().to_string())),
                        message: e.into_inner().to_string(),
                    });
                    return None;
                }
            },
        };
        let Some(name) = meta.name.clone().filter(|n| !n.is_empty()) else {
            self.errors.push(LoadError {
                origin: raw.origin.clone(),
                line: None,
                resource: Some(kind_name),
                field: Some("metadata.name".to_owned()),
                message: "missing; every resource needs a name".to_owned(),
            });
            return None;
        };
        let namespace = meta
            .namespace
            .clone()
            .filter(|n| !n.is_empty())
            .unwrap_or_else(|| "default".to_owned());
        Some(Doc {
            kind,
            group,
            kind_name,
            version,
            meta,
            name,
            namespace,
            raw,
        })
    }
}

/// The group and version of a manifest that names only its kind.
pub(crate) fn infer_group(kind: &str) -> Option<(&'static str, &'static str)> {
    kinds::catalog::infer(kind)
}

/// The kind's family and every version the compiler reads (served or not, so old manifests
/// still load in CI), in the order error messages list them.
pub(crate) fn known_kind(group: &str, kind: &str) -> Option<(Kind, Vec<&'static str>)> {
    let info = kinds::catalog::by_group_kind(group, kind)?;
    Some((info.family, info.versions.iter().map(|v| v.name).collect()))
}

pub(crate) fn istio_replacement(group: &str, kind: &str) -> Option<&'static str> {
    if !group.ends_with("istio.io") {
        return None;
    }
    Some(match kind {
        "VirtualService" => {
            "use a Gateway API HTTPRoute with a Service parentRef (weighted backendRefs, matches, timeouts)"
        }
        "DestinationRule" => {
            "load balancing (EWMA) and failure accrual are built in; express subsets as separate Services"
        }
        "PeerAuthentication" => {
            "mesh mTLS is automatic; require it with a Server and AuthorizationPolicy (or the all-authenticated default policy)"
        }
        "AuthorizationPolicy" => {
            "use policy.linkerd.io AuthorizationPolicy with a MeshTLSAuthentication or NetworkAuthentication"
        }
        "ServiceEntry" => "describe external destinations as a Service with EndpointSlices",
        "Gateway" => "use a Gateway API Gateway",
        _ => "the mesh reads Gateway API, SMI and Linkerd kinds instead",
    })
}

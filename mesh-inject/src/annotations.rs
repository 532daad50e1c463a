//! The annotations a pod (or its namespace) carries to ask for injection and configure the
//! proxy, read as Linkerd reads its own: `mesh.io/*` and `config.mesh.io/*` first, then
//! `linkerd.io/*` and `config.linkerd.io/*`; the pod's before its namespace's.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::ResourceRequirements;
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;

use crate::pod::{AnnotationError, INJECT_ANNOTATION, LINKERD_INJECT_ANNOTATION};

/// Annotations of the pod and of its namespace, pod first: Linkerd reads its `config.*`
/// annotations from both, and the pod's win.
pub(crate) struct Annotations<'a> {
    pub(crate) pod: Option<&'a BTreeMap<String, String>>,
    pub(crate) namespace: &'a BTreeMap<String, String>,
}

// === impl Annotations ===

impl Annotations<'_> {
    /// Whether an inject annotation decides, which one, and whether it sat on the namespace.
    /// Ours wins over Linkerd's; the pod's over its namespace's.
    pub(crate) fn inject_decision(
        &self,
    ) -> Result<Option<(bool, &'static str, bool)>, AnnotationError> {
        let scopes = [(self.pod, false), (Some(self.namespace), true)];
        for (scope, on_namespace) in scopes {
            let Some(scope) = scope else { continue };
            for key in [INJECT_ANNOTATION, LINKERD_INJECT_ANNOTATION] {
                let Some(value) = scope.get(key) else {
                    continue;
                };
                // Linkerd's `ingress` mode is a proxy configuration we do not have; the
                // workload still asked for the mesh, so it gets the ordinary proxy.
                return match value.as_str() {
                    "enabled" | "ingress" => Ok(Some((true, key, on_namespace))),
                    "disabled" => Ok(Some((false, key, on_namespace))),
                    _ => Err(AnnotationError {
                        key: key.to_owned(),
                        value: value.clone(),
                        why: "is neither enabled nor disabled",
                    }),
                };
            }
        }
        Ok(None)
    }

    /// `config.mesh.io/<name>`, else Linkerd's `config.linkerd.io/<name>`; pod, then namespace.
    fn config(&self, name: &str) -> Option<(String, &str)> {
        let keys = [
            format!("config.mesh.io/{name}"),
            format!("config.linkerd.io/{name}"),
        ];
        for scope in [self.pod, Some(self.namespace)].into_iter().flatten() {
            for key in &keys {
                if let Some(v) = scope.get(key) {
                    return Some((key.clone(), v.as_str()));
                }
            }
        }
        None
    }

    /// A port list as Linkerd writes it: `25,443,4000-5000`. Normalised (spaces dropped).
    pub(crate) fn ports(&self, name: &str) -> Result<Option<String>, AnnotationError> {
        let Some((key, value)) = self.config(name) else {
            return Ok(None);
        };
        let err = |why| AnnotationError {
            key: key.clone(),
            value: value.to_owned(),
            why,
        };
        let mut out = Vec::new();
        for item in value.split(',').map(str::trim).filter(|s| !s.is_empty()) {
            let (lo, hi) = item.split_once('-').unwrap_or((item, item));
            let parse = |s: &str| s.trim().parse::<u16>().ok().filter(|p| *p != 0);
            match (parse(lo), parse(hi)) {
                (Some(lo), Some(hi)) if lo <= hi => out.push(item.replace(' ', "")),
                _ => return Err(err("is not a list of ports and port ranges (1–65535)")),
            }
        }
        Ok((!out.is_empty()).then(|| out.join(",")))
    }

    pub(crate) fn resources(&self) -> Result<Option<ResourceRequirements>, AnnotationError> {
        let mut requests = BTreeMap::new();
        let mut limits = BTreeMap::new();
        for (resource, which) in [("cpu", "request"), ("cpu", "limit")]
            .into_iter()
            .chain([("memory", "request"), ("memory", "limit")])
        {
            let Some((key, value)) = self.config(&format!("proxy-{resource}-{which}")) else {
                continue;
            };
            if !is_quantity(value) {
                return Err(AnnotationError {
                    key,
                    value: value.to_owned(),
                    why: "is not a Kubernetes quantity",
                });
            }
            let map = if which == "request" {
                &mut requests
            } else {
                &mut limits
            };
            map.insert(resource.to_owned(), Quantity(value.trim().to_owned()));
        }
        if requests.is_empty() && limits.is_empty() {
            return Ok(None);
        }
        Ok(Some(ResourceRequirements {
            requests: (!requests.is_empty()).then_some(requests),
            limits: (!limits.is_empty()).then_some(limits),
            ..ResourceRequirements::default()
        }))
    }
}

/// `<signed number><suffix>` as Kubernetes' Quantity grammar has it: `100m`, `1.5`, `64Mi`, `1e3`.
fn is_quantity(s: &str) -> bool {
    let s = s.trim();
    let s = s.strip_prefix(['+', '-']).unwrap_or(s);
    let digits_end = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(s.len());
    let (number, suffix) = s.split_at(digits_end);
    let number_ok =
        !number.is_empty() && number != "." && number.chars().filter(|c| *c == '.').count() <= 1;
    let suffix_ok = matches!(
        suffix,
        "" | "Ki"
            | "Mi"
            | "Gi"
            | "Ti"
            | "Pi"
            | "Ei"
            | "n"
            | "u"
            | "m"
            | "k"
            | "M"
            | "G"
            | "T"
            | "P"
            | "E"
    ) || suffix
        .strip_prefix(['e', 'E'])
        .map(|exp| exp.strip_prefix(['+', '-']).unwrap_or(exp))
        .is_some_and(|exp| !exp.is_empty() && exp.chars().all(|c| c.is_ascii_digit()));
    number_ok && suffix_ok
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantities() {
        for ok in ["1", "100m", "1.5", "64Mi", "1e3", "+2", ".5", "2E-2"] {
            assert!(is_quantity(ok), "{ok}");
        }
        for bad in ["", "m", "lots", "1.2.3", "64MB", "1e"] {
            assert!(!is_quantity(bad), "{bad}");
        }
    }
}

//! SMI: TrafficSplit (weighted backends of an apex Service) and HTTPRouteGroup (the matches
//! a split may be limited to).

use std::sync::Arc;

use super::doc::{Cx, Doc};
use super::fields::service_ref;
use crate::authz::ResourceId;
use crate::kinds::{self, IntOrString};
use crate::route::{self, HttpMatch, PathMatch, ValueMatch, ValuePattern};
use crate::split::{Backends, WeightedBackend};
use crate::values::parse_milli_quantity;

/// A TrafficSplit after its own checks.
#[derive(Clone, Debug)]
pub(crate) struct ParsedSplit {
    pub(crate) id: ResourceId,
    /// The apex Service's name, in the split's namespace.
    pub(crate) apex: String,
    pub(crate) backends: Arc<Backends>,
    /// The HTTPRouteGroups (in the split's namespace) it is limited to; none: every request.
    pub(crate) groups: Vec<String>,
}

pub(crate) fn parse_split(cx: &mut Cx, doc: &Doc) -> Option<ParsedSplit> {
    let spec = cx.typed::<kinds::TrafficSplitSpec>(doc, "spec")?;
    let quantities = spec
        .backends
        .iter()
        .any(|b| matches!(b.weight, Some(IntOrString::String(_))));
    let mut list = Vec::new();
    for (i, b) in spec.backends.iter().enumerate() {
        let weight = split_weight(&b.weight, quantities)
            .map_err(|e| cx.err(doc, format!("spec.backends[{i}].weight"), e))
            .ok();
        if b.service.is_empty() {
            cx.err(doc, format!("spec.backends[{i}].service"), "empty");
            continue;
        }
        if let Some(weight) = weight {
            list.push(WeightedBackend {
                backend: service_ref(&b.service, &doc.namespace, None),
                weight,
            });
        }
    }
    if spec.backends.is_empty() {
        cx.err(doc, "spec.backends", "at least one backend is required");
    }
    if spec.service.is_empty() {
        cx.err(doc, "spec.service", "empty; name the apex Service");
        return None;
    }
    // Checked here, with the split alone, so that linking only links.
    let mut groups = Vec::new();
    for (i, r) in spec.matches.iter().enumerate() {
        if r.kind.as_deref().is_some_and(|k| k != "HTTPRouteGroup") {
            cx.err(
                doc,
                format!("spec.matches[{i}].kind"),
                "only HTTPRouteGroup matches are supported",
            );
        } else {
            groups.push(r.name.clone());
        }
    }
    let apex = spec
        .service
        .split('.')
        .next()
        .unwrap_or(&spec.service)
        .to_owned();
    Some(ParsedSplit {
        id: doc.id(),
        apex,
        backends: Arc::new(Backends::new(list)),
        groups,
    })
}

pub(crate) fn parse_route_group(cx: &mut Cx, doc: &Doc) -> Option<Vec<HttpMatch>> {
    let spec: kinds::HttpRouteGroupSpec = match doc.raw.value.get("spec") {
        Some(_) => cx.typed(doc, "spec")?,
        None => {
            // smi-spec's own examples put `matches` beside `spec`; read it there too.
            let matches = cx.typed::<Option<Vec<kinds::HttpRouteGroupMatch>>>(doc, "matches")?;
            if matches.is_some() {
                cx.note(doc, "`matches` is outside `spec`; read as spec.matches");
            }
            kinds::HttpRouteGroupSpec {
                matches: matches.unwrap_or_default(),
            }
        }
    };
    let mut group = Vec::new();
    for (i, m) in spec.matches.iter().enumerate() {
        let field = format!("spec.matches[{i}]");
        let path = match &m.path_regex {
            Some(r) => match route::full_regex(r) {
                Ok(r) => PathMatch::Regex(r),
                Err(e) => {
                    cx.err(doc, format!("{field}.pathRegex"), e);
                    continue;
                }
            },
            None => PathMatch::Prefix("/".to_owned()),
        };
        let mut headers = Vec::new();
        let pairs: Vec<(String, String)> = match &m.headers {
            None => Vec::new(),
            Some(kinds::SmiHeaders::Map(map)) => map.clone().into_iter().collect(),
            Some(kinds::SmiHeaders::List(l)) => l.iter().flat_map(|m| m.clone()).collect(),
        };
        for (name, value) in pairs {
            match route::full_regex(&value) {
                Ok(r) => headers.push(ValueMatch {
                    name: name.to_ascii_lowercase(),
                    value: ValuePattern::Regex(r),
                }),
                Err(e) => cx.err(doc, format!("{field}.headers.{name}"), e),
            }
        }
        let methods: Vec<Option<String>> =
            if m.methods.is_empty() || m.methods.iter().any(|x| x == "*") {
                vec![None]
            } else {
                m.methods
                    .iter()
                    .map(|x| Some(x.to_ascii_uppercase()))
                    .collect()
            };
        for method in methods {
            group.push(HttpMatch {
                path: path.clone(),
                method,
                headers: headers.clone(),
                query: Vec::new(),
            });
        }
    }
    Some(group)
}

/// A backend's weight; when any weight of the split is a quantity (`900m`), every weight is
/// in milli-units.
fn split_weight(weight: &Option<IntOrString>, quantities: bool) -> Result<u64, String> {
    match weight {
        None => Ok(if quantities { 1000 } else { 1 }),
        Some(IntOrString::Int(n)) if *n < 0 => {
            Err(format!("{n} is negative; weights are 0 or more"))
        }
        Some(IntOrString::Int(n)) => {
            let n = n.unsigned_abs();
            let weight = if quantities {
                n.checked_mul(1000)
            } else {
                Some(n)
            };
            weight.ok_or_else(|| format!("{n} is too large a weight"))
        }
        Some(IntOrString::String(q)) => parse_milli_quantity(q),
    }
}

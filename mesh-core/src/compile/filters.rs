//! A route rule's `filters`, read into [`Filter`]s with the checks Gateway API's CRDs make
//! (as CEL rules the API server runs, so a file checked in CI gets them too): each
//! type's own field present, header modifiers, redirect and rewrite at most once per rule,
//! not a redirect and a rewrite together, `ReplacePrefixMatch` only on a rule with exactly one
//! `PathPrefix` match, and on a GRPCRoute only the filter types GRPCRoute defines. A
//! backendRef's filters are read the same way, limited to the types the proxy applies after
//! the split (header modifiers and `FaultInjection`s).

use super::delivery::GROUP;
use super::doc::{Cx, Doc};
use super::fields::port;
use super::gateway::backend_ref;
use crate::filter::{FaultRef, Filter, HeaderModifier, Mirror, PathModifier, Redirect, Rewrite};
use crate::kinds;
use crate::route::{HttpMatch, PathMatch};

/// Redirect status codes Gateway API v1 allows.
const REDIRECT_STATUSES: [u16; 5] = [301, 302, 303, 307, 308];

/// What a rule's filters are read against.
#[derive(Clone, Copy)]
pub(super) struct RuleCx<'a> {
    /// The rule's matches as compiled (an empty list reads as one `PathPrefix /`).
    pub(super) matches: &'a [HttpMatch],
    /// A GRPCRoute rule.
    pub(super) grpc: bool,
    /// The filters of one of the rule's backendRefs rather than the rule's own.
    pub(super) backend: bool,
}

pub(super) fn filters(
    cx: &mut Cx,
    doc: &Doc,
    field: &str,
    list: &[kinds::HttpRouteFilter],
    rule: &RuleCx<'_>,
) -> Vec<Filter> {
    let mut out = Vec::new();
    let mut seen: Vec<&str> = Vec::new();
    for (i, f) in list.iter().enumerate() {
        let fi = format!("{field}[{i}]");
        let kind = f.kind.as_str();
        if rule.grpc && matches!(kind, "RequestRedirect" | "URLRewrite") {
            cx.err(
                doc,
                format!("{fi}.type"),
                format!("{kind} is not a GRPCRoute filter (RequestHeaderModifier, ResponseHeaderModifier, RequestMirror, ExtensionRef)"),
            );
            continue;
        }
        // Gateway API leaves a backendRef's filters implementation-specific; the proxy applies
        // what changes or fails the request to the chosen backend, and nothing that would
        // send it elsewhere.
        if rule.backend && matches!(kind, "RequestRedirect" | "URLRewrite" | "RequestMirror") {
            cx.err(
                doc,
                format!("{fi}.type"),
                format!("{kind} is not supported on a backendRef (RequestHeaderModifier, ResponseHeaderModifier and ExtensionRef to a FaultInjection are); put it in the rule's filters"),
            );
            continue;
        }
        if kind != "RequestMirror" && kind != "ExtensionRef" && seen.contains(&kind) {
            cx.err(
                doc,
                format!("{fi}.type"),
                format!("{kind} may appear only once in a rule"),
            );
            continue;
        }
        let clash = match kind {
            "RequestRedirect" => seen.contains(&"URLRewrite"),
            "URLRewrite" => seen.contains(&"RequestRedirect"),
            _ => false,
        };
        if clash {
            cx.err(
                doc,
                format!("{fi}.type"),
                "a rule may have a RequestRedirect or a URLRewrite, not both",
            );
            continue;
        }
        seen.push(kind);
        if let Some(filter) = one(cx, doc, &fi, f, rule) {
            out.push(filter);
        }
    }
    out
}

/// One filter; `None` after reporting why it cannot be read.
fn one(
    cx: &mut Cx,
    doc: &Doc,
    fi: &str,
    f: &kinds::HttpRouteFilter,
    rule: &RuleCx<'_>,
) -> Option<Filter> {
    let missing = |cx: &mut Cx, what: &str| {
        cx.err(
            doc,
            format!("{fi}.{what}"),
            format!("missing for type {}", f.kind),
        );
    };
    match f.kind.as_str() {
        "RequestHeaderModifier" => match &f.request_header_modifier {
            Some(m) => Some(Filter::RequestHeaders(modifier(m))),
            None => {
                missing(cx, "requestHeaderModifier");
                None
            }
        },
        "ResponseHeaderModifier" => match &f.response_header_modifier {
            Some(m) => Some(Filter::ResponseHeaders(modifier(m))),
            None => {
                missing(cx, "responseHeaderModifier");
                None
            }
        },
        "RequestRedirect" => match &f.request_redirect {
            Some(r) => redirect(cx, doc, &format!("{fi}.requestRedirect"), r, rule),
            None => {
                missing(cx, "requestRedirect");
                None
            }
        },
        "URLRewrite" => match &f.url_rewrite {
            Some(r) => {
                let field = format!("{fi}.urlRewrite.path");
                let path = match &r.path {
                    Some(p) => Some(path_modifier(cx, doc, &field, p, rule)?),
                    None => None,
                };
                Some(Filter::Rewrite(Rewrite {
                    hostname: r.hostname.clone(),
                    path,
                }))
            }
            None => {
                missing(cx, "urlRewrite");
                None
            }
        },
        "RequestMirror" => match &f.request_mirror {
            Some(m) => mirror(cx, doc, &format!("{fi}.requestMirror"), m),
            None => {
                missing(cx, "requestMirror");
                None
            }
        },
        "ExtensionRef" => match &f.extension_ref {
            Some(r) if r.group == GROUP && r.kind == "FaultInjection" && !r.name.is_empty() => {
                // Resolved while linking, so that the FaultInjection may come and change alone.
                Some(Filter::Fault(FaultRef {
                    name: r.name.clone(),
                    fault: None,
                }))
            }
            Some(r) => {
                cx.err(
                    doc,
                    format!("{fi}.extensionRef"),
                    format!(
                        "{} {:?} of group {:?} is not an extension this mesh implements (FaultInjection of {GROUP})",
                        r.kind, r.name, r.group
                    ),
                );
                None
            }
            None => {
                missing(cx, "extensionRef");
                None
            }
        },
        other => {
            cx.err(
                doc,
                format!("{fi}.type"),
                format!("{other:?} is not a filter type this mesh knows"),
            );
            None
        }
    }
}

fn modifier(m: &kinds::HeaderModifier) -> HeaderModifier {
    let pairs = |list: &[kinds::HeaderValue]| {
        list.iter()
            .map(|h| (h.name.clone(), h.value.clone()))
            .collect()
    };
    HeaderModifier {
        set: pairs(&m.set),
        add: pairs(&m.add),
        remove: m.remove.clone(),
    }
}

/// A `RequestRedirect`: 302 when no status is given.
fn redirect(
    cx: &mut Cx,
    doc: &Doc,
    field: &str,
    r: &kinds::RequestRedirect,
    rule: &RuleCx<'_>,
) -> Option<Filter> {
    let status = r.status_code.unwrap_or(302);
    let Some(status) = u16::try_from(status)
        .ok()
        .filter(|s| REDIRECT_STATUSES.contains(s))
    else {
        cx.err(
            doc,
            format!("{field}.statusCode"),
            format!(
                "{status} is not a redirect status Gateway API allows (301, 302, 303, 307, 308)"
            ),
        );
        return None;
    };
    let port = match r.port.map(port) {
        Some(Err(e)) => {
            cx.err(doc, format!("{field}.port"), e);
            return None;
        }
        Some(Ok(p)) => Some(p),
        None => None,
    };
    if let Some(s) = r
        .scheme
        .as_deref()
        .filter(|s| !matches!(*s, "http" | "https"))
    {
        cx.err(
            doc,
            format!("{field}.scheme"),
            format!("{s:?} is not http or https"),
        );
        return None;
    }
    let path = match &r.path {
        Some(p) => Some(path_modifier(cx, doc, &format!("{field}.path"), p, rule)?),
        None => None,
    };
    Some(Filter::Redirect(Redirect {
        scheme: r.scheme.clone(),
        hostname: r.hostname.clone(),
        path,
        port,
        status,
    }))
}

fn path_modifier(
    cx: &mut Cx,
    doc: &Doc,
    field: &str,
    p: &kinds::PathModifier,
    rule: &RuleCx<'_>,
) -> Option<PathModifier> {
    match p.kind.as_str() {
        "ReplaceFullPath" => match &p.replace_full_path {
            Some(v) => Some(PathModifier::ReplaceFullPath(v.clone())),
            None => {
                cx.err(
                    doc,
                    format!("{field}.replaceFullPath"),
                    "missing for type ReplaceFullPath",
                );
                None
            }
        },
        "ReplacePrefixMatch" => {
            let Some(replacement) = &p.replace_prefix_match else {
                cx.err(
                    doc,
                    format!("{field}.replacePrefixMatch"),
                    "missing for type ReplacePrefixMatch",
                );
                return None;
            };
            match rule.matches {
                [
                    HttpMatch {
                        path: PathMatch::Prefix(prefix),
                        ..
                    },
                ] => Some(PathModifier::ReplacePrefixMatch {
                    prefix: prefix.clone(),
                    replacement: replacement.clone(),
                }),
                _ => {
                    cx.err(
                        doc,
                        field.to_owned(),
                        "ReplacePrefixMatch needs a rule with exactly one match, of type PathPrefix",
                    );
                    None
                }
            }
        }
        other => {
            cx.err(
                doc,
                format!("{field}.type"),
                format!("{other:?} is not ReplaceFullPath or ReplacePrefixMatch"),
            );
            None
        }
    }
}

/// A `RequestMirror`: all requests unless `percent` or `fraction` (not both) says fewer.
fn mirror(cx: &mut Cx, doc: &Doc, field: &str, m: &kinds::RequestMirror) -> Option<Filter> {
    let b = backend_ref(cx, doc, &format!("{field}.backendRef"), &m.backend_ref)?;
    let fraction = match (m.percent, &m.fraction) {
        (Some(_), Some(_)) => {
            cx.err(doc, field.to_owned(), "percent and fraction are exclusive");
            return None;
        }
        (Some(p), None) => match u32::try_from(p).ok().filter(|p| *p <= 100) {
            Some(p) => (p, 100),
            None => {
                cx.err(
                    doc,
                    format!("{field}.percent"),
                    format!("{p} is not within 0–100"),
                );
                return None;
            }
        },
        (None, Some(f)) => {
            let den = f.denominator.unwrap_or(100);
            match (u32::try_from(f.numerator), u32::try_from(den)) {
                (Ok(num), Ok(den)) if den > 0 && num <= den => (num, den),
                _ => {
                    cx.err(
                        doc,
                        format!("{field}.fraction"),
                        format!("{}/{den} is not a fraction within 0–1", f.numerator),
                    );
                    return None;
                }
            }
        }
        (None, None) => (100, 100),
    };
    Some(Filter::Mirror(Mirror {
        backend: b.backend,
        fraction,
    }))
}

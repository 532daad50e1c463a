//! Gateway API route filters as data, and what a request becomes after them.
//!
//! A route rule's filters are compiled into [`Filter`]s. [`plan`] is the pure decision the
//! data plane (and `mesh policy explain`) takes from them for one request: answer it with a
//! redirect, or forward it with a rewritten host or path, header changes and mirrors.
//! Header changes have one meaning, [`HeaderModifier::apply`], over any [`HeaderEdit`]
//! (an `http::HeaderMap` in mesh-tower, a list of pairs here).
//!
//! ```
//! use mesh_core::filter::{self, Filter, Outcome, PathModifier, RequestLine, Rewrite};
//!
//! let filters = [Filter::Rewrite(Rewrite {
//!     hostname: None,
//!     path: Some(PathModifier::ReplacePrefixMatch { prefix: "/api".into(), replacement: "/v2".into() }),
//! })];
//! let line = RequestLine { scheme: "http", host: "web.shop", port: 80, path: "/api/users", query: Some("page=2") };
//! let Outcome::Forward(f) = filter::plan(&filters, &line) else { panic!() };
//! assert_eq!(f.path.as_deref(), Some("/v2/users"));
//! ```

use std::fmt;

use crate::split::BackendRef;

pub mod fault;

pub use fault::FaultRef;

/// A Gateway API filter of a route rule.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Filter {
    /// `RequestHeaderModifier`.
    RequestHeaders(HeaderModifier),
    /// `ResponseHeaderModifier`.
    ResponseHeaders(HeaderModifier),
    /// `RequestRedirect`: the proxy answers the client itself.
    Redirect(Redirect),
    /// `URLRewrite`: the host or path the backend sees.
    Rewrite(Rewrite),
    /// `RequestMirror`: a copy of (some) requests goes to another backend, answer ignored.
    Mirror(Mirror),
    /// `ExtensionRef` to mesh's `FaultInjection`: aborts and delays.
    Fault(FaultRef),
}

/// Header changes of a `*HeaderModifier` filter. Names are case-insensitive.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct HeaderModifier {
    /// Headers to set, replacing any values they had.
    pub set: Vec<(String, String)>,
    /// Headers to add, after any values they had.
    pub add: Vec<(String, String)>,
    /// Headers to remove.
    pub remove: Vec<String>,
}

/// A path change of a redirect or rewrite.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PathModifier {
    /// `ReplaceFullPath`: the whole path (the query is kept).
    ReplaceFullPath(String),
    /// `ReplacePrefixMatch`: the part the rule's one `PathPrefix` match matched.
    ReplacePrefixMatch {
        /// The rule's `PathPrefix` value (a rule with this filter has exactly one match).
        prefix: String,
        /// What replaces it.
        replacement: String,
    },
}

/// A `RequestRedirect` filter. Unset parts keep the request's.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Redirect {
    /// `http` or `https`.
    pub scheme: Option<String>,
    /// The host of the location.
    pub hostname: Option<String>,
    /// The path of the location.
    pub path: Option<PathModifier>,
    /// The port of the location.
    pub port: Option<u16>,
    /// 301, 302, 303, 307 or 308.
    pub status: u16,
}

/// A `URLRewrite` filter.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rewrite {
    /// The host the backend sees (the `Host` header, or `:authority`).
    pub hostname: Option<String>,
    /// The path the backend sees.
    pub path: Option<PathModifier>,
}

/// A `RequestMirror` filter.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Mirror {
    /// Where copies go.
    pub backend: BackendRef,
    /// The share of requests mirrored: numerator over denominator (`percent: 10` is 10/100).
    pub fraction: (u32, u32),
}

/// The parts of a request that redirects and rewrites read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RequestLine<'a> {
    /// `http` or `https`, as the client asked.
    pub scheme: &'a str,
    /// The host the client asked for, without a port.
    pub host: &'a str,
    /// The port the client asked for (the Service port).
    pub port: u16,
    /// The path, without the query.
    pub path: &'a str,
    /// The query, without `?`.
    pub query: Option<&'a str>,
}

/// What to do with a request, after its route's filters.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome<'f> {
    /// Answer the client with this redirect; nothing is forwarded.
    Redirect {
        /// The status code.
        status: u16,
        /// The `Location` header.
        location: String,
    },
    /// Forward the request, changed as described.
    Forward(Forward<'f>),
    /// A custom filter's reference is not resolved: Gateway API says the request gets an
    /// error (500) rather than the filter being skipped.
    Unresolved {
        /// The filter, as `Kind/name`.
        filter: String,
    },
}

/// How a forwarded request and its response change.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Forward<'f> {
    /// The host the backend sees instead of the client's (the port is kept).
    pub host: Option<String>,
    /// The path the backend sees instead of the client's (the query is kept).
    pub path: Option<String>,
    /// Changes to the request's headers, in order.
    pub request_headers: Vec<&'f HeaderModifier>,
    /// Changes to the response's headers, in order.
    pub response_headers: Vec<&'f HeaderModifier>,
    /// Where copies of the request go (each sampled by its fraction).
    pub mirrors: Vec<&'f Mirror>,
    /// Faults to inject (each drawn by its shares).
    pub faults: Vec<&'f fault::Fault>,
}

/// Something whose headers a [`HeaderModifier`] can change.
pub trait HeaderEdit {
    /// Replaces every value of `name` with `value`.
    fn set_header(&mut self, name: &str, value: &str);
    /// Adds `value` after the values `name` has.
    fn add_header(&mut self, name: &str, value: &str);
    /// Removes every value of `name`.
    fn remove_header(&mut self, name: &str);
}

// === impl Outcome ===

/// What `filters` do to the request `line`.
pub fn plan<'f>(filters: &'f [Filter], line: &RequestLine<'_>) -> Outcome<'f> {
    let mut forward = Forward::default();
    for f in filters {
        match f {
            Filter::Redirect(r) => {
                return Outcome::Redirect {
                    status: r.status,
                    location: r.location(line),
                };
            }
            Filter::Rewrite(r) => {
                if let Some(h) = &r.hostname {
                    forward.host = Some(h.clone());
                }
                if let Some(p) = &r.path {
                    forward.path = Some(p.apply(line.path));
                }
            }
            Filter::RequestHeaders(m) => forward.request_headers.push(m),
            Filter::ResponseHeaders(m) => forward.response_headers.push(m),
            Filter::Mirror(m) => forward.mirrors.push(m),
            Filter::Fault(r) => match &r.fault {
                Some(f) => forward.faults.push(f),
                None => {
                    return Outcome::Unresolved {
                        filter: format!("FaultInjection/{}", r.name),
                    };
                }
            },
        }
    }
    Outcome::Forward(forward)
}

// === impl HeaderModifier ===

impl HeaderModifier {
    /// Applies the changes in the order Gateway API gives them: set, add, remove.
    pub fn apply(&self, headers: &mut impl HeaderEdit) {
        for (name, value) in &self.set {
            headers.set_header(name, value);
        }
        for (name, value) in &self.add {
            headers.add_header(name, value);
        }
        for name in &self.remove {
            headers.remove_header(name);
        }
    }
}

impl HeaderEdit for Vec<(String, String)> {
    fn set_header(&mut self, name: &str, value: &str) {
        self.remove_header(name);
        self.push((name.to_owned(), value.to_owned()));
    }

    fn add_header(&mut self, name: &str, value: &str) {
        self.push((name.to_owned(), value.to_owned()));
    }

    fn remove_header(&mut self, name: &str) {
        self.retain(|(n, _)| !n.eq_ignore_ascii_case(name));
    }
}

// === impl PathModifier ===

impl PathModifier {
    /// The new path for `path`.
    pub fn apply(&self, path: &str) -> String {
        match self {
            Self::ReplaceFullPath(p) => p.clone(),
            Self::ReplacePrefixMatch {
                prefix,
                replacement,
            } => replace_prefix(path, prefix, replacement),
        }
    }
}

/// Gateway API's `ReplacePrefixMatch`: the element-wise prefix `prefix` of `path` becomes
/// `replacement`; trailing slashes of both are not elements (`/foo/` matches as `/foo`).
fn replace_prefix(path: &str, prefix: &str, replacement: &str) -> String {
    let prefix = prefix.trim_end_matches('/');
    let rest = path.strip_prefix(prefix).unwrap_or(path);
    let base = replacement.trim_end_matches('/');
    let mut out = format!("{base}{rest}");
    if rest.is_empty() && replacement.ends_with('/') {
        out.push('/');
    }
    if out.is_empty() {
        out.push('/');
    }
    out
}

// === impl Redirect ===

impl Redirect {
    /// The `Location` for `line`. A port is written only when it is not the scheme's own
    /// (80 for http, 443 for https); with a scheme and no port, the scheme's own port.
    pub fn location(&self, line: &RequestLine<'_>) -> String {
        let scheme = self.scheme.as_deref().unwrap_or(line.scheme);
        let host = self.hostname.as_deref().unwrap_or(line.host);
        let port = match (self.port, &self.scheme) {
            (Some(p), _) => Some(p),
            (None, Some(s)) => well_known_port(s),
            (None, None) => Some(line.port),
        };
        let path = match &self.path {
            Some(p) => p.apply(line.path),
            None => line.path.to_owned(),
        };
        let mut out = format!("{scheme}://{host}");
        if let Some(p) = port.filter(|p| Some(*p) != well_known_port(scheme)) {
            out.push_str(&format!(":{p}"));
        }
        out.push_str(&path);
        if let Some(q) = line.query {
            out.push('?');
            out.push_str(q);
        }
        out
    }
}

fn well_known_port(scheme: &str) -> Option<u16> {
    match scheme {
        "http" => Some(80),
        "https" => Some(443),
        _ => None,
    }
}

// === impl Mirror ===

impl Mirror {
    /// Whether the request whose random draw is `draw` (uniform over `u64`) is mirrored.
    pub fn sampled(&self, draw: u64) -> bool {
        let (num, den) = self.fraction;
        if num == 0 || den == 0 {
            return false;
        }
        // The bias of a u64 draw modulo a u32 is below 2^-32.
        num >= den || draw % u64::from(den) < u64::from(num)
    }
}

// === impl Filter ===

impl Filter {
    /// The Gateway API filter type, as manifests name it.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::RequestHeaders(_) => "RequestHeaderModifier",
            Self::ResponseHeaders(_) => "ResponseHeaderModifier",
            Self::Redirect(_) => "RequestRedirect",
            Self::Rewrite(_) => "URLRewrite",
            Self::Mirror(_) => "RequestMirror",
            Self::Fault(_) => "ExtensionRef",
        }
    }
}

// === Display, for `mesh policy explain` ===

impl fmt::Display for Filter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::RequestHeaders(m) => write!(f, "RequestHeaderModifier {m}"),
            Self::ResponseHeaders(m) => write!(f, "ResponseHeaderModifier {m}"),
            Self::Redirect(r) => {
                write!(f, "RequestRedirect {}", r.status)?;
                if let Some(s) = &r.scheme {
                    write!(f, " scheme={s}")?;
                }
                if let Some(h) = &r.hostname {
                    write!(f, " hostname={h}")?;
                }
                if let Some(p) = r.port {
                    write!(f, " port={p}")?;
                }
                if let Some(p) = &r.path {
                    write!(f, " path {p}")?;
                }
                Ok(())
            }
            Self::Rewrite(r) => {
                f.write_str("URLRewrite")?;
                if let Some(h) = &r.hostname {
                    write!(f, " hostname={h}")?;
                }
                if let Some(p) = &r.path {
                    write!(f, " path {p}")?;
                }
                Ok(())
            }
            Self::Mirror(m) => {
                let (num, den) = m.fraction;
                write!(
                    f,
                    "RequestMirror to {}.{}",
                    m.backend.name(),
                    m.backend.namespace()
                )?;
                if let Some(p) = m.backend.port() {
                    write!(f, ":{p}")?;
                }
                write!(f, " ({num}/{den} of requests)")
            }
            Self::Fault(r) => write!(f, "{r}"),
        }
    }
}

impl fmt::Display for HeaderModifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut parts = Vec::new();
        parts.extend(self.set.iter().map(|(n, v)| format!("set {n}: {v}")));
        parts.extend(self.add.iter().map(|(n, v)| format!("add {n}: {v}")));
        parts.extend(self.remove.iter().map(|n| format!("remove {n}")));
        f.write_str(&parts.join(", "))
    }
}

impl fmt::Display for PathModifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::ReplaceFullPath(p) => write!(f, "ReplaceFullPath {p}"),
            Self::ReplacePrefixMatch {
                prefix,
                replacement,
            } => {
                write!(f, "ReplacePrefixMatch {prefix} → {replacement}")
            }
        }
    }
}

#[cfg(test)]
mod tests;

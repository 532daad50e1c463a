//! Request matching: the facts a decision reads from a request, and route matches with
//! Gateway API precedence.

use std::cmp::Ordering;

use regex::Regex;

/// Why a method and URL do not describe a request ([`Request::new`]).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum InvalidRequest {
    /// The URL has no `scheme://`.
    #[error("{url:?} is not an absolute URL (http://host:port/path)")]
    NotAbsolute {
        /// The URL.
        url: String,
    },
    /// The scheme is neither `http` nor `https`.
    #[error("unsupported URL scheme {scheme:?} in {url:?}")]
    Scheme {
        /// The scheme.
        scheme: String,
        /// The URL.
        url: String,
    },
    /// The URL's `host[:port]` is malformed.
    #[error(transparent)]
    Authority(#[from] InvalidAuthority),
    /// The method is empty or holds something other than letters.
    #[error("{method:?} is not an HTTP method")]
    Method {
        /// The method.
        method: String,
    },
}

/// Why a `host[:port]` is malformed.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum InvalidAuthority {
    /// `[` with no `]`.
    #[error("unclosed '[' in {authority:?}")]
    UnclosedBracket {
        /// The authority.
        authority: String,
    },
    /// Something other than `:port` after `]`.
    #[error("unexpected {after:?} after the IPv6 address")]
    AfterIpv6 {
        /// What follows the `]`.
        after: String,
    },
    /// Nothing before the port.
    #[error("{authority:?} has no host")]
    NoHost {
        /// The authority.
        authority: String,
    },
    /// The port is not a number from 1 to 65535.
    #[error("{port:?} is not a port (1–65535) in {authority:?}")]
    Port {
        /// The port as written.
        port: String,
        /// The authority.
        authority: String,
    },
}

/// A pattern that does not compile as a regular expression.
#[derive(Clone, Debug, thiserror::Error)]
#[error("{pattern:?} is not a valid regular expression: {error}")]
pub(crate) struct InvalidRegex {
    pattern: String,
    // Not a `#[source]`: the message already carries it, and a chain would print it twice.
    error: regex::Error,
}

/// What routing and authorization read from a request. Implemented by [`Request`] for tests and
/// tools, and by the Tower layers for `http::Request` without copying anything.
pub trait RequestFacts {
    /// The method, upper case (`GET`).
    fn method(&self) -> &str;
    /// The path, without the query (`/api/vote`).
    fn path(&self) -> &str;
    /// The raw query string, without `?`.
    fn query(&self) -> Option<&str>;
    /// The first value of a header; `name` is lower case.
    fn header(&self, name: &str) -> Option<&str>;
}

/// A request described as plain data, for tests, `mesh policy explain` and tools.
///
/// ```
/// use mesh_core::route::{Request, RequestFacts};
///
/// let r = Request::new("get", "http://web-svc.emojivoto:80/api/vote?choice=🍩")?
///     .header("X-Canary", "1");
/// assert_eq!(r.method(), "GET");
/// assert_eq!(r.authority(), "web-svc.emojivoto:80");
/// assert_eq!(r.path(), "/api/vote");
/// assert_eq!(RequestFacts::header(&r, "x-canary"), Some("1"));
/// # Ok::<(), mesh_core::route::InvalidRequest>(())
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Request {
    method: String,
    /// `http` or `https`, lower case.
    scheme: String,
    host: String,
    port: u16,
    path: String,
    query: Option<String>,
    headers: Vec<(String, String)>,
}

/// A compiled HTTP match: all of its parts must hold.
#[derive(Clone, Debug)]
pub struct HttpMatch {
    pub(crate) path: PathMatch,
    pub(crate) method: Option<String>,
    pub(crate) headers: Vec<ValueMatch>,
    pub(crate) query: Vec<ValueMatch>,
}

/// A path match.
#[derive(Clone, Debug)]
pub enum PathMatch {
    /// The whole path equals the value.
    Exact(String),
    /// The path starts with the value, element-wise (`/foo` matches `/foo/bar`, not `/foobar`).
    Prefix(String),
    /// The whole path matches the regular expression.
    Regex(Regex),
}

/// A header or query parameter match.
#[derive(Clone, Debug)]
pub struct ValueMatch {
    pub(crate) name: String,
    pub(crate) value: ValuePattern,
}

/// How a header or query value is compared.
#[derive(Clone, Debug)]
pub enum ValuePattern {
    /// Equal to the string.
    Exact(String),
    /// Wholly matched by the regular expression.
    Regex(Regex),
}

// === impl Request ===

impl Request {
    /// Describes a request from a method and an absolute URL (`http://host:port/path?query`).
    /// The port defaults to 80 for `http` and 443 for `https`.
    pub fn new(method: &str, url: &str) -> Result<Self, InvalidRequest> {
        let (scheme, rest) = url
            .split_once("://")
            .ok_or_else(|| InvalidRequest::NotAbsolute {
                url: url.to_owned(),
            })?;
        let default_port = match scheme.to_ascii_lowercase().as_str() {
            "http" => 80,
            "https" => 443,
            other => {
                return Err(InvalidRequest::Scheme {
                    scheme: other.to_owned(),
                    url: url.to_owned(),
                });
            }
        };
        let (authority, path_query) = match rest.find(['/', '?']) {
            Some(i) => rest.split_at(i),
            None => (rest, "/"),
        };
        let (host, port) = split_authority(authority, default_port)?;
        let (path, query) = match path_query.split_once('?') {
            Some((p, q)) => (p, Some(q.to_owned())),
            None => (path_query, None),
        };
        let path = if path.is_empty() { "/" } else { path };
        if method.is_empty() || !method.bytes().all(|b| b.is_ascii_alphabetic()) {
            return Err(InvalidRequest::Method {
                method: method.to_owned(),
            });
        }
        Ok(Self {
            method: method.to_ascii_uppercase(),
            scheme: scheme.to_ascii_lowercase(),
            host: host.to_ascii_lowercase(),
            port,
            path: path.to_owned(),
            query,
            headers: Vec::new(),
        })
    }

    /// Adds a header (the name is compared case-insensitively).
    #[must_use]
    pub fn header(mut self, name: &str, value: &str) -> Self {
        self.headers
            .push((name.trim().to_ascii_lowercase(), value.trim().to_owned()));
        self
    }

    /// The host, lower case, without the port.
    pub fn host(&self) -> &str {
        &self.host
    }

    /// The destination port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// `host:port`.
    pub fn authority(&self) -> String {
        format!("{}:{}", self.host, self.port)
    }

    /// The headers added, names lower case, in order.
    pub fn headers(&self) -> &[(String, String)] {
        &self.headers
    }

    /// What route filters read of it (see [`crate::filter::plan`]).
    pub fn line(&self) -> crate::filter::RequestLine<'_> {
        crate::filter::RequestLine {
            scheme: &self.scheme,
            host: &self.host,
            port: self.port,
            path: &self.path,
            query: self.query.as_deref(),
        }
    }
}

/// Splits `host[:port]`, accepting bracketed IPv6 literals.
pub(crate) fn split_authority(
    authority: &str,
    default_port: u16,
) -> Result<(&str, u16), InvalidAuthority> {
    let bad_port = |p: &str| InvalidAuthority::Port {
        port: p.to_owned(),
        authority: authority.to_owned(),
    };
    let (host, port) = if let Some(rest) = authority.strip_prefix('[') {
        let (h, after) = rest
            .split_once(']')
            .ok_or_else(|| InvalidAuthority::UnclosedBracket {
                authority: authority.to_owned(),
            })?;
        match after.strip_prefix(':') {
            Some(p) => (h, Some(p)),
            None if after.is_empty() => (h, None),
            None => {
                return Err(InvalidAuthority::AfterIpv6 {
                    after: after.to_owned(),
                });
            }
        }
    } else {
        match authority.rsplit_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (authority, None),
        }
    };
    if host.is_empty() {
        return Err(InvalidAuthority::NoHost {
            authority: authority.to_owned(),
        });
    }
    let port = match port {
        Some(p) => match p.parse::<u16>() {
            Ok(0) | Err(_) => return Err(bad_port(p)),
            Ok(n) => n,
        },
        None => default_port,
    };
    Ok((host, port))
}

impl RequestFacts for Request {
    fn method(&self) -> &str {
        &self.method
    }

    fn path(&self) -> &str {
        &self.path
    }

    fn query(&self) -> Option<&str> {
        self.query.as_deref()
    }

    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

// === impl HttpMatch ===

impl HttpMatch {
    /// A match on every request (a rule with no matches).
    pub(crate) fn any() -> Self {
        Self {
            path: PathMatch::Prefix("/".to_owned()),
            method: None,
            headers: Vec::new(),
            query: Vec::new(),
        }
    }

    /// Whether every part of this match holds for the request.
    pub fn matches(&self, req: &impl RequestFacts) -> bool {
        if let Some(m) = &self.method
            && !m.eq_ignore_ascii_case(req.method())
        {
            return false;
        }
        if !self.path.matches(req.path()) {
            return false;
        }
        if !self
            .headers
            .iter()
            .all(|h| req.header(&h.name).is_some_and(|v| h.value.matches(v)))
        {
            return false;
        }
        if self.query.is_empty() {
            return true;
        }
        let query = req.query().unwrap_or("");
        self.query
            .iter()
            .all(|q| query_value(query, &q.name).is_some_and(|v| q.value.matches(v)))
    }

    /// Gateway API precedence between two matches: `Less` means `self` wins.
    /// Exact path, then the longest prefix (regex sits between exact and prefix, longer
    /// first), then a method match, then more header matches, then more query matches.
    pub(crate) fn precedence(&self, other: &Self) -> Ordering {
        let rank = |p: &PathMatch| match p {
            PathMatch::Exact(v) => (0, v.len()),
            PathMatch::Regex(r) => (1, r.as_str().len()),
            PathMatch::Prefix(v) => (2, v.len()),
        };
        let (ka, la) = rank(&self.path);
        let (kb, lb) = rank(&other.path);
        ka.cmp(&kb)
            .then(lb.cmp(&la))
            .then(other.method.is_some().cmp(&self.method.is_some()))
            .then(other.headers.len().cmp(&self.headers.len()))
            .then(other.query.len().cmp(&self.query.len()))
    }

    /// The method this match names explicitly, if any.
    pub(crate) fn method(&self) -> Option<&str> {
        self.method.as_deref()
    }
}

/// The first value of a query parameter; names compare exactly, values are not decoded.
fn query_value<'a>(query: &'a str, name: &str) -> Option<&'a str> {
    query.split('&').find_map(|pair| {
        let (n, v) = pair.split_once('=').unwrap_or((pair, ""));
        (n == name).then_some(v)
    })
}

// === impl PathMatch ===

impl PathMatch {
    /// Whether `path` matches.
    pub fn matches(&self, path: &str) -> bool {
        match self {
            Self::Exact(v) => path == v,
            Self::Prefix(v) => {
                let v = v.trim_end_matches('/');
                if v.is_empty() {
                    return true;
                }
                path.strip_prefix(v)
                    .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
            }
            Self::Regex(r) => r.is_match(path),
        }
    }
}

// === impl ValuePattern ===

impl ValuePattern {
    fn matches(&self, v: &str) -> bool {
        match self {
            Self::Exact(e) => e == v,
            Self::Regex(r) => r.is_match(v),
        }
    }
}

/// Compiles a regular expression that must match the whole value, as Gateway API, Linkerd
/// and SMI mean it.
pub(crate) fn full_regex(pattern: &str) -> Result<Regex, InvalidRegex> {
    regex::RegexBuilder::new(&format!("^(?:{pattern})$"))
        .size_limit(1 << 20)
        .build()
        .map_err(|error| InvalidRegex {
            pattern: pattern.to_owned(),
            error,
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(method: &str, url: &str) -> Request {
        Request::new(method, url).unwrap()
    }

    #[test]
    fn prefix_matches_whole_path_elements() {
        let cases = [
            ("/foo", "/foo", true),
            ("/foo", "/foo/", true),
            ("/foo", "/foo/bar", true),
            ("/foo", "/foobar", false),
            ("/foo/", "/foo", true),
            ("/", "/anything", true),
            ("/foo", "/", false),
        ];
        for (prefix, path, want) in cases {
            assert_eq!(
                PathMatch::Prefix(prefix.into()).matches(path),
                want,
                "{prefix} vs {path}"
            );
        }
    }

    #[test]
    fn all_parts_of_a_match_must_hold() {
        let m = HttpMatch {
            path: PathMatch::Exact("/api".into()),
            method: Some("GET".into()),
            headers: vec![ValueMatch {
                name: "x-canary".into(),
                value: ValuePattern::Exact("1".into()),
            }],
            query: vec![ValueMatch {
                name: "v".into(),
                value: ValuePattern::Regex(full_regex("[0-9]+").unwrap()),
            }],
        };
        let base = "http://a:80/api?v=12";
        let cases = [
            (req("GET", base).header("X-Canary", "1"), true),
            (req("POST", base).header("x-canary", "1"), false),
            (req("GET", base), false),
            (req("GET", base).header("x-canary", "2"), false),
            (
                req("GET", "http://a/api?v=x").header("x-canary", "1"),
                false,
            ),
            (req("GET", "http://a/api").header("x-canary", "1"), false),
            (req("GET", "http://a/api/").header("x-canary", "1"), false),
        ];
        for (r, want) in cases {
            assert_eq!(m.matches(&r), want, "{r:?}");
        }
    }

    #[test]
    fn regexes_match_the_whole_value() {
        let r = full_regex("/api/v[0-9]").unwrap();
        assert!(PathMatch::Regex(r.clone()).matches("/api/v1"));
        assert!(!PathMatch::Regex(r).matches("/api/v1/x"));
    }

    #[test]
    fn urls_parse_with_default_ports_and_ipv6() {
        let r = req("get", "https://[::1]/x?y");
        assert_eq!(
            (r.host(), r.port(), r.path(), r.query()),
            ("::1", 443, "/x", Some("y"))
        );
        let r = req("GET", "http://web:8080");
        assert_eq!((r.host(), r.port(), r.path()), ("web", 8080, "/"));
        let cases = [
            (
                "GET",
                "web:80/",
                r#""web:80/" is not an absolute URL (http://host:port/path)"#,
            ),
            (
                "GET",
                "ftp://web/",
                r#"unsupported URL scheme "ftp" in "ftp://web/""#,
            ),
            (
                "GET",
                "http://web:0/",
                r#""0" is not a port (1–65535) in "web:0""#,
            ),
            ("GET", "http://[::1/", r#"unclosed '[' in "[::1""#),
            ("GET", "http://:80/", r#"":80" has no host"#),
            ("G E T", "http://web/", r#""G E T" is not an HTTP method"#),
        ];
        for (method, url, want) in cases {
            let e = Request::new(method, url).unwrap_err();
            assert_eq!(e.to_string(), want, "{method} {url}");
        }
    }
}

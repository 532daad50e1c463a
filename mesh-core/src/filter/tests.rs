use super::*;

fn line<'a>(path: &'a str, query: Option<&'a str>) -> RequestLine<'a> {
    RequestLine {
        scheme: "http",
        host: "web.shop",
        port: 80,
        path,
        query,
    }
}

#[test]
fn replace_prefix_match_follows_the_gateway_api_table() {
    // (match prefix, replacement, request path, result), from Gateway API's
    // HTTPPathModifier documentation.
    let table = [
        ("/foo/bar", "/xyz", "/foo/bar", "/xyz"),
        ("/foo/bar", "/xyz/", "/foo/bar", "/xyz/"),
        ("/foo/bar", "/xyz", "/foo/bar/", "/xyz/"),
        ("/foo/bar", "/xyz/", "/foo/bar/", "/xyz/"),
        ("/foo/bar", "/xyz", "/foo/bar/baz", "/xyz/baz"),
        ("/foo/bar", "/xyz/", "/foo/bar/baz", "/xyz/baz"),
        ("/foo/bar/", "/xyz", "/foo/bar", "/xyz"),
        ("/foo/bar/", "/xyz", "/foo/bar/baz", "/xyz/baz"),
        ("/", "/xyz", "/foo/bar", "/xyz/foo/bar"),
        ("/", "/", "/foo/bar", "/foo/bar"),
        ("/foo", "/", "/foo", "/"),
        ("/foo", "/", "/foo/bar", "/bar"),
        ("/strip-prefix", "/", "/strip-prefix/three", "/three"),
        ("/prefix/one", "/one", "/prefix/one/two", "/one/two"),
    ];
    for (prefix, replacement, path, want) in table {
        let got = PathModifier::ReplacePrefixMatch {
            prefix: prefix.to_owned(),
            replacement: replacement.to_owned(),
        }
        .apply(path);
        assert_eq!(got, want, "prefix {prefix} → {replacement}, request {path}");
    }
}

#[test]
fn full_path_rewrite_keeps_the_query_and_sets_the_host() {
    let filters = [Filter::Rewrite(Rewrite {
        hostname: Some("api.internal".to_owned()),
        path: Some(PathModifier::ReplaceFullPath("/one".to_owned())),
    })];
    let Outcome::Forward(f) = plan(&filters, &line("/a/b", Some("x=1"))) else {
        panic!("a rewrite forwards");
    };
    assert_eq!(f.host.as_deref(), Some("api.internal"));
    assert_eq!(f.path.as_deref(), Some("/one"));
}

#[test]
fn redirect_locations_take_what_is_set_and_keep_the_rest() {
    let redirect =
        |scheme: Option<&str>, host: Option<&str>, port: Option<u16>, status: u16| Redirect {
            scheme: scheme.map(str::to_owned),
            hostname: host.map(str::to_owned),
            path: None,
            port,
            status,
        };
    let l = RequestLine {
        scheme: "http",
        host: "web.shop",
        port: 8080,
        path: "/p",
        query: Some("q=1"),
    };
    let cases = [
        // The request's own port stays unless a scheme is set.
        (
            redirect(None, None, None, 302),
            "http://web.shop:8080/p?q=1",
        ),
        (
            redirect(Some("https"), None, None, 301),
            "https://web.shop/p?q=1",
        ),
        (
            redirect(Some("https"), None, Some(8443), 308),
            "https://web.shop:8443/p?q=1",
        ),
        (
            redirect(None, Some("example.com"), Some(80), 307),
            "http://example.com/p?q=1",
        ),
        (
            redirect(Some("http"), Some("example.com"), None, 303),
            "http://example.com/p?q=1",
        ),
    ];
    for (r, want) in cases {
        let status = r.status;
        let filters = [Filter::Redirect(r)];
        assert_eq!(
            plan(&filters, &l),
            Outcome::Redirect {
                status,
                location: want.to_owned()
            }
        );
    }
}

#[test]
fn a_redirect_answers_before_any_other_filter_forwards() {
    let m = HeaderModifier {
        set: vec![("x-a".to_owned(), "1".to_owned())],
        ..HeaderModifier::default()
    };
    let filters = [
        Filter::RequestHeaders(m),
        Filter::Redirect(Redirect {
            scheme: None,
            hostname: None,
            path: Some(PathModifier::ReplacePrefixMatch {
                prefix: "/old".to_owned(),
                replacement: "/new".to_owned(),
            }),
            port: None,
            status: 301,
        }),
    ];
    assert_eq!(
        plan(&filters, &line("/old/page", None)),
        Outcome::Redirect {
            status: 301,
            location: "http://web.shop/new/page".to_owned()
        }
    );
}

#[test]
fn header_modifiers_set_then_add_then_remove_ignoring_case() {
    let m = HeaderModifier {
        set: vec![("X-Env".to_owned(), "prod".to_owned())],
        add: vec![("x-tag".to_owned(), "b".to_owned())],
        remove: vec!["X-Secret".to_owned()],
    };
    let mut headers = vec![
        ("x-env".to_owned(), "dev".to_owned()),
        ("x-tag".to_owned(), "a".to_owned()),
        ("x-secret".to_owned(), "s".to_owned()),
    ];
    m.apply(&mut headers);
    let pairs: Vec<(&str, &str)> = headers
        .iter()
        .map(|(n, v)| (n.as_str(), v.as_str()))
        .collect();
    assert_eq!(pairs, [("x-tag", "a"), ("X-Env", "prod"), ("x-tag", "b")]);
}

#[test]
fn mirrors_sample_their_fraction() {
    let mirror = |num, den| Mirror {
        backend: BackendRef::new("shadow", "shop", Some(80)),
        fraction: (num, den),
    };
    let count = |m: &Mirror| {
        (0..10_000u64)
            .filter(|d| m.sampled(d.wrapping_mul(0x9E37_79B9_7F4A_7C15)))
            .count()
    };
    assert_eq!(count(&mirror(0, 100)), 0);
    assert_eq!(count(&mirror(100, 100)), 10_000);
    let some = count(&mirror(10, 100));
    assert!((800..1_200).contains(&some), "{some} of 10,000 at 10%");
}

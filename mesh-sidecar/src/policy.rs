//! `mesh policy check` and `mesh policy explain`.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Subcommand, ValueEnum};
use mesh_core::filter;
use mesh_core::policy::OutboundDecision;
use mesh_core::{Destination, Identity, MeshPolicy, NameContext, Peer, Request, RequestFacts};
use serde_json::{Value, json};

mod canary;
mod table;

/// Check manifests and explain the decisions the mesh takes on them.
#[derive(Debug, Args)]
pub(crate) struct PolicyArgs {
    #[command(subcommand)]
    command: PolicyCommand,
}

#[derive(Debug, Subcommand)]
enum PolicyCommand {
    /// Check each file as its own stream: exit 0 when all are valid, 1 with every error if not.
    Check {
        /// YAML files or directories (read recursively: *.yaml, *.yml).
        #[arg(required = true)]
        paths: Vec<PathBuf>,
    },
    /// Compile all files into one stream and print the decisions for one request.
    Explain(ExplainArgs),
}

#[derive(Debug, Args)]
struct ExplainArgs {
    /// YAML files or directories (read recursively: *.yaml, *.yml).
    #[arg(required = true)]
    paths: Vec<PathBuf>,
    /// The request, as "METHOD URL" (e.g. "GET http://web-svc.emojivoto:80/api/vote"). The
    /// host may be a short name (`web`, `web.shop`) or an address (a Service's ClusterIP, a
    /// pod's IP), as a transparent proxy sees it.
    #[arg(long)]
    request: String,
    /// The caller's namespace, from which short names resolve (default: the namespace of the
    /// Service the name means, when only one namespace has it; else `default`).
    #[arg(long, value_name = "NS")]
    from_namespace: Option<String>,
    /// A request header, "Name: value" (repeatable).
    #[arg(long = "header", value_name = "K:V")]
    headers: Vec<String>,
    /// The client's mesh identity, SPIFFE or DNS form (inbound).
    #[arg(long, value_name = "IDENTITY")]
    from: Option<String>,
    /// The client's IP address (inbound).
    #[arg(long, value_name = "IP")]
    client_ip: Option<std::net::IpAddr>,
    /// The request arrives at the workload behind the URL's Service: explain authorization.
    #[arg(long)]
    inbound: bool,
    /// Simulate this many requests and count the backends chosen.
    #[arg(long, value_name = "N")]
    samples: Option<u64>,
    /// Seed for --samples; the same seed gives the same counts.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Show how the route classifies these response statuses (repeatable; default 200, 404,
    /// 500 and 503).
    #[arg(long = "status", value_name = "CODE", value_parser = clap::value_parser!(u16).range(100..=599))]
    statuses: Vec<u16>,
    /// Output format.
    #[arg(short = 'o', long = "output", value_enum, default_value_t = Output::Table)]
    output: Output,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum Output {
    Table,
    Json,
}

/// A usage error: exit 2.
struct Usage(String);

pub(crate) fn run(args: PolicyArgs) -> ExitCode {
    let res = match args.command {
        PolicyCommand::Check { paths } => check(&paths),
        PolicyCommand::Explain(a) => explain(&a),
    };
    match res {
        Ok(code) => code,
        Err(Usage(msg)) => {
            eprintln!("error: {msg}");
            ExitCode::from(2)
        }
    }
}

/// The YAML files named or found under `paths`; usage errors where a path cannot be read.
fn collect(paths: &[PathBuf]) -> Result<Vec<PathBuf>, Usage> {
    let out = crate::files::yaml_files(paths).map_err(|e| Usage(e.to_string()))?;
    if out.is_empty() {
        return Err(Usage(
            "no YAML files (*.yaml, *.yml) in the paths given".to_owned(),
        ));
    }
    Ok(out)
}

fn check(paths: &[PathBuf]) -> Result<ExitCode, Usage> {
    let files = collect(paths)?;
    let mut failed = 0;
    for f in &files {
        let text = match crate::files::read(f) {
            Ok(t) => t,
            Err(e) => {
                crate::out::outln!("{}: error: {e}", f.display());
                failed += 1;
                continue;
            }
        };
        match MeshPolicy::from_yaml(&text) {
            Ok(p) => {
                crate::out::outln!("{}: {}", f.display(), summary(&p));
                for n in p.notes() {
                    crate::out::outln!("  note: {n}");
                }
            }
            Err(errs) => {
                failed += 1;
                let n = errs.errors().len();
                crate::out::outln!(
                    "{}: {n} error{}",
                    f.display(),
                    if n == 1 { "" } else { "s" }
                );
                for e in errs.errors() {
                    crate::out::outln!("  error: {e}");
                }
            }
        }
    }
    if failed > 0 {
        // On stdout with the rest, set apart: on stderr it ran into the last file's errors.
        crate::out::outln!("\n{failed} of {} files invalid", files.len());
        Ok(ExitCode::from(1))
    } else {
        Ok(ExitCode::SUCCESS)
    }
}

/// One valid file's line: what it applies, by kind, then what it skipped and noted. An empty
/// file is valid (as `kubectl apply` says "no objects passed to apply" without failing a
/// pipeline that generates manifests), but says so, since in CI it is often a mistake.
fn summary(p: &MeshPolicy) -> String {
    let plural = |n: usize, what: &str| format!("{n} {what}{}", if n == 1 { "" } else { "s" });
    let total: usize = p.resource_counts().values().sum();
    let skipped = p.skipped_count();
    if total == 0 && skipped == 0 {
        return "empty: no resources".to_owned();
    }
    let mut out = format!("ok, {}", plural(total, "resource"));
    if total > 0 {
        let kinds: Vec<String> = (p.resource_counts().iter())
            .map(|(k, n)| format!("{n} {k}"))
            .collect();
        out.push_str(&format!(" ({})", kinds.join(", ")));
    }
    if skipped > 0 {
        out.push_str(&format!(", {skipped} skipped"));
    }
    if !p.notes().is_empty() {
        out.push_str(&format!(", {}", plural(p.notes().len(), "note")));
    }
    out
}

fn explain(a: &ExplainArgs) -> Result<ExitCode, Usage> {
    let (method, url) = a
        .request
        .trim()
        .split_once(char::is_whitespace)
        .ok_or_else(|| Usage(format!("--request {:?} is not \"METHOD URL\"", a.request)))?;
    let mut req = Request::new(method, url.trim()).map_err(|e| Usage(format!("--request: {e}")))?;
    for h in &a.headers {
        let (k, v) = h
            .split_once(':')
            .ok_or_else(|| Usage(format!("--header {h:?} is not \"Name: value\"")))?;
        if k.trim().is_empty() {
            return Err(Usage(format!("--header {h:?} has no name")));
        }
        req = req.header(k, v);
    }
    let from = a
        .from
        .as_deref()
        .map(Identity::parse)
        .transpose()
        .map_err(|e| Usage(format!("--from: {e}")))?;

    // Check each file alone first, so errors name the file they are in.
    let files = collect(&a.paths)?;
    let mut stream = String::new();
    let mut bad = false;
    for f in &files {
        let text = match crate::files::read(f) {
            Ok(t) => t,
            Err(e) => {
                eprintln!("error: {e}");
                bad = true;
                continue;
            }
        };
        if let Err(errs) = MeshPolicy::from_yaml(&text) {
            bad = true;
            for e in errs.errors() {
                eprintln!("{}: error: {e}", f.display());
            }
        }
        stream.push_str("\n---\n");
        stream.push_str(&text);
    }
    if bad {
        return Ok(ExitCode::from(1));
    }
    let policy = match MeshPolicy::from_yaml(&stream) {
        Ok(p) => p,
        Err(errs) => {
            eprintln!("{errs}");
            return Ok(ExitCode::from(1));
        }
    };

    let out = if a.inbound {
        inbound(&policy, &req, from, a.client_ip)
    } else {
        if from.is_some() || a.client_ip.is_some() {
            eprintln!("note: --from and --client-ip matter for --inbound only");
        }
        outbound(&policy, &req, a)
    };
    match a.output {
        Output::Json => crate::out::outln!(
            "{}",
            serde_json::to_string_pretty(&out)
                .unwrap_or_else(|e| format!("{{\"error\": \"{e}\"}}"))
        ),
        Output::Table => crate::out::print(&table::table(&req, &out)),
    }
    Ok(ExitCode::SUCCESS)
}

fn ms(d: Option<std::time::Duration>) -> Value {
    d.map_or(Value::Null, |d| json!(d.as_millis() as u64))
}

/// The decision for `req`, and how its destination was found: by address as a transparent
/// proxy does, or by name from a namespace (given or assumed).
fn decide<'a>(
    policy: &'a MeshPolicy,
    req: &Request,
    from: Option<&str>,
) -> (OutboundDecision<'a>, Value) {
    let host = req.host().trim_start_matches('[').trim_end_matches(']');
    if let Ok(ip) = host.parse() {
        let addr = std::net::SocketAddr::new(ip, req.port());
        return match policy.lookup_addr(addr) {
            Destination::Service { service, port } => (
                service.decide_from(from.unwrap_or(service.namespace()), port, req),
                json!({"by": "address", "kind": "service ClusterIP"}),
            ),
            Destination::Endpoint(p) => (
                OutboundDecision::forward(addr),
                json!({"by": "address", "kind": "pod", "service": format!("{}.{}", p.service, p.namespace), "pod": p.pod}),
            ),
            Destination::Unknown => (
                OutboundDecision::forward(addr),
                json!({"by": "address", "kind": "unknown: forwarded as addressed"}),
            ),
        };
    }
    let (ns, assumed) = match from {
        Some(ns) => (ns.to_owned(), false),
        None => match policy.namespaces_with_service(host).as_slice() {
            [only] => ((*only).to_owned(), true),
            _ => ("default".to_owned(), true),
        },
    };
    let cx = NameContext::new(&ns);
    let d = policy.route_from(&cx, host, req.port(), req);
    (
        d,
        json!({"by": "name", "from_namespace": ns, "assumed": assumed}),
    )
}

/// Statuses `explain` classifies when no `--status` is given.
const DEFAULT_STATUSES: [u16; 4] = [200, 404, 500, 503];

fn outbound(policy: &MeshPolicy, req: &Request, a: &ExplainArgs) -> Value {
    let (d, destination) = decide(policy, req, a.from_namespace.as_deref());
    let statuses = if a.statuses.is_empty() {
        &DEFAULT_STATUSES[..]
    } else {
        &a.statuses[..]
    };
    let classification: serde_json::Map<String, Value> = (statuses.iter())
        .map(|s| (s.to_string(), json!(d.classify(*s, None).as_str())))
        .collect();
    let route = d.route().and_then(|r| r.source().map(|s| (r, s))).map_or(
        Value::Null,
        |(r, s)| json!({"name": r.name(), "source": s.to_string(), "rule": r.rule()}),
    );
    let backends: Vec<Value> = d
        .backends()
        .map(|b| {
            let mut out = json!({"service": b.backend.service(), "port": b.backend.port(), "weight": b.weight});
            let filters = d.route().map_or(&[][..], |r| r.backend_filters(&b.backend));
            if !filters.is_empty() {
                out["filters"] = json!(described(filters));
            }
            out
        })
        .collect();
    let t = d.timeouts();
    let retry = d.retry();
    let retryable = retry.is_some_and(|r| r.method_allowed(req.method()));
    let mut out = json!({
        "request": {"method": req.method(), "authority": req.authority(), "path": req.path()},
        "destination": destination,
        "service": d.service().map(|s| format!("{}.{}", s.name(), s.namespace())),
        "route": route,
        "no_route": d.is_no_route(),
        "backends": backends,
        "filters": described(outbound_filters(&d)),
        "after_filters": after_filters(outbound_filters(&d), req),
        "timeout_ms": {"request": ms(t.request), "backend_request": ms(t.backend_request)},
        "retry": {
            "retryable": retryable,
            "limit": if retryable { retry.map_or(0, |r| r.limit) } else { 0 },
            "conditions": retry.map(|r| describe_conditions(&r.conditions)),
            "per_try_timeout_ms": ms(retry.and_then(|r| r.per_try_timeout)),
            "budget": retry.map(|r| json!({
                "retry_ratio": r.budget.retry_ratio,
                "min_retries_per_second": r.budget.min_retries_per_second,
                "ttl_ms": r.budget.ttl.as_millis() as u64,
            })),
        },
        "classification": classification,
        "canaries": canary::explain(policy, &d),
        "authorization": Value::Null,
        "notes": policy.notes().iter().map(ToString::to_string).collect::<Vec<_>>(),
    });
    if let Some(n) = a.samples {
        let s = d.sample(n, a.seed);
        out["samples"] = json!(s.counts());
    }
    out
}

fn outbound_filters<'a>(d: &'a OutboundDecision<'_>) -> &'a [filter::Filter] {
    d.route().map_or(&[], |r| r.filters())
}

fn described(filters: &[filter::Filter]) -> Vec<String> {
    filters.iter().map(ToString::to_string).collect()
}

/// What the matched rule's filters make of the request: a redirect, or the request the
/// backend (inbound: the application) sees (host, path, headers), the response header
/// changes and the mirrors.
fn after_filters(filters: &[filter::Filter], req: &Request) -> Value {
    if filters.is_empty() {
        return Value::Null;
    }
    let line = req.line();
    match filter::plan(filters, &line) {
        filter::Outcome::Redirect { status, location } => {
            json!({"redirect": {"status": status, "location": location}})
        }
        filter::Outcome::Forward(f) => {
            let mut headers = req.headers().to_vec();
            for m in &f.request_headers {
                m.apply(&mut headers);
            }
            let path = f.path.as_deref().unwrap_or(line.path);
            json!({
                "authority": format!("{}:{}", f.host.as_deref().unwrap_or(line.host), line.port),
                "path": match line.query {
                    Some(q) => format!("{path}?{q}"),
                    None => path.to_owned(),
                },
                "headers": headers.iter().map(|(n, v)| format!("{n}: {v}")).collect::<Vec<_>>(),
                "response_headers": f.response_headers.iter().map(ToString::to_string).collect::<Vec<_>>(),
                "mirrors": f.mirrors.iter().map(|m| filter::Filter::Mirror((*m).clone()).to_string()).collect::<Vec<_>>(),
                "faults": f.faults.iter().map(ToString::to_string).collect::<Vec<_>>(),
            })
        }
        // Gateway API: an unresolved custom filter fails the request rather than being skipped.
        filter::Outcome::Unresolved { filter } => {
            json!({"error": {"status": 500, "unresolved": filter}})
        }
    }
}

fn describe_conditions(c: &mesh_core::retry::RetryConditions) -> String {
    let mut parts: Vec<String> = c
        .http
        .iter()
        .map(|&(lo, hi)| match (lo, hi) {
            (500, 599) => "5xx".to_owned(),
            (lo, hi) if lo == hi => lo.to_string(),
            (lo, hi) => format!("{lo}-{hi}"),
        })
        .collect();
    parts.extend(c.grpc.iter().map(|g| format!("grpc-status {g}")));
    if c.on_failure_class {
        parts.push("failures (response classes)".to_owned());
    }
    parts.join(", ")
}

fn inbound(
    policy: &MeshPolicy,
    req: &Request,
    from: Option<Identity>,
    ip: Option<std::net::IpAddr>,
) -> Value {
    let (target, why) = policy.inbound_target(req.host(), req.port());
    let peer = Peer { identity: from, ip };
    let decision = policy.decide_inbound(&target, &peer, req);
    let d = &decision.authz;
    let route = d.route.as_ref().map_or(
        Value::Null,
        |r| json!({"name": r.name, "source": r.to_string()}),
    );
    let rate = d.rate_limit.as_ref().map(|r| {
        json!({
            "source": r.source.to_string(),
            "total_rps": r.total,
            "per_identity_rps": r.per_identity_limit(peer.identity.as_ref()),
        })
    });
    // Filters apply to what the Server admits; a denied request gets its 403 unchanged.
    let filters = decision.filters.as_deref().unwrap_or(&[]);
    json!({
        "request": {"method": req.method(), "authority": req.authority(), "path": req.path()},
        "target": {
            "namespace": target.namespace,
            "port": target.port,
            "port_name": target.port_name,
            "labels": target.labels,
            "probe_paths": target.probe_paths,
        },
        "server": d.server.as_ref().map(ToString::to_string),
        "route": route,
        "filters": described(filters),
        "after_filters": after_filters(filters, req),
        "backends": [],
        "timeout_ms": {"request": null, "backend_request": null},
        "retry": {"retryable": false, "limit": 0},
        "authorization": {"allowed": d.allowed, "by": d.by.to_string(), "reason": d.reason.to_string()},
        "rate_limit": rate,
        "notes": why.into_iter().chain(policy.notes().iter().map(ToString::to_string)).collect::<Vec<_>>(),
    })
}

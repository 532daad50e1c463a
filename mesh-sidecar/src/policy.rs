//! `mesh policy check` and `mesh policy explain`.

use std::fmt::Write as _;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Subcommand, ValueEnum};
use mesh_core::policy::OutboundDecision;
use mesh_core::{Destination, Identity, MeshPolicy, NameContext, Peer, Request, RequestFacts};
use serde_json::{Value, json};

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
                println!("{}: error: {e}", f.display());
                failed += 1;
                continue;
            }
        };
        match MeshPolicy::from_yaml(&text) {
            Ok(p) => {
                let total: usize = p.resource_counts().values().sum();
                let kinds = p
                    .resource_counts()
                    .iter()
                    .map(|(k, n)| format!("{n} {k}"))
                    .collect::<Vec<_>>()
                    .join(", ");
                let notes = p.notes().len();
                println!(
                    "{}: ok, {total} resource{} ({kinds}){}",
                    f.display(),
                    if total == 1 { "" } else { "s" },
                    if notes > 0 {
                        format!(", {notes} note{}", if notes == 1 { "" } else { "s" })
                    } else {
                        String::new()
                    }
                );
                for n in p.notes() {
                    println!("  note: {n}");
                }
            }
            Err(errs) => {
                failed += 1;
                let n = errs.errors().len();
                println!(
                    "{}: {n} error{}",
                    f.display(),
                    if n == 1 { "" } else { "s" }
                );
                for e in errs.errors() {
                    println!("  error: {e}");
                }
            }
        }
    }
    if failed > 0 {
        eprintln!("{failed} of {} files invalid", files.len());
        Ok(ExitCode::from(1))
    } else {
        Ok(ExitCode::SUCCESS)
    }
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
        outbound(
            &policy,
            &req,
            a.from_namespace.as_deref(),
            a.samples,
            a.seed,
        )
    };
    match a.output {
        Output::Json => println!(
            "{}",
            serde_json::to_string_pretty(&out)
                .unwrap_or_else(|e| format!("{{\"error\": \"{e}\"}}"))
        ),
        Output::Table => print!("{}", table(&req, &out)),
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
                service.decide(port, req),
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

fn outbound(
    policy: &MeshPolicy,
    req: &Request,
    from: Option<&str>,
    samples: Option<u64>,
    seed: u64,
) -> Value {
    let (d, destination) = decide(policy, req, from);
    let route = d.route().and_then(|r| r.source().map(|s| (r, s))).map_or(
        Value::Null,
        |(r, s)| json!({"name": r.name(), "source": s.to_string(), "rule": r.rule()}),
    );
    let backends: Vec<Value> = d
        .backends()
        .map(
            |b| json!({"service": b.backend.service(), "port": b.backend.port, "weight": b.weight}),
        )
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
        "classification": {
            "200": d.classify(200, None).as_str(),
            "404": d.classify(404, None).as_str(),
            "500": d.classify(500, None).as_str(),
            "503": d.classify(503, None).as_str(),
        },
        "authorization": Value::Null,
        "notes": policy.notes().iter().map(ToString::to_string).collect::<Vec<_>>(),
    });
    if let Some(n) = samples {
        let s = d.sample(n, seed);
        out["samples"] = json!(s.counts());
    }
    out
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
    let d = policy.authorize(&target, &peer, req);
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
        "backends": [],
        "timeout_ms": {"request": null, "backend_request": null},
        "retry": {"retryable": false, "limit": 0},
        "authorization": {"allowed": d.allowed, "by": d.by.to_string(), "reason": d.reason.to_string()},
        "rate_limit": rate,
        "notes": why.into_iter().chain(policy.notes().iter().map(ToString::to_string)).collect::<Vec<_>>(),
    })
}

/// How the destination was found, in words.
fn describe_destination(d: &Value) -> String {
    let text = |k: &str| d[k].as_str().unwrap_or("").to_owned();
    match d["by"].as_str() {
        Some("name") => format!(
            "by name, from namespace {}{}",
            text("from_namespace"),
            if d["assumed"] == json!(true) {
                " (assumed; set --from-namespace)"
            } else {
                ""
            }
        ),
        _ if d["kind"] == json!("pod") => format!(
            "by address: pod {} of {}",
            d["pod"].as_str().unwrap_or("(unnamed)"),
            text("service")
        ),
        _ => format!("by address: {}", text("kind")),
    }
}

/// The human form of the same object.
fn table(req: &Request, v: &Value) -> String {
    let mut s = String::new();
    let line = |s: &mut String, k: &str, val: String| {
        let _ = writeln!(s, "{k:<15} {val}");
    };
    line(
        &mut s,
        "request",
        format!("{} {}{}", req.method(), req.authority(), req.path()),
    );
    if let Some(t) = v.get("target") {
        line(
            &mut s,
            "target",
            format!(
                "pod in {} port {}{}",
                t["namespace"].as_str().unwrap_or(""),
                t["port"],
                t["port_name"]
                    .as_str()
                    .map(|n| format!(" ({n})"))
                    .unwrap_or_default()
            ),
        );
        line(
            &mut s,
            "server",
            v["server"]
                .as_str()
                .unwrap_or("none (default policy)")
                .to_owned(),
        );
    } else {
        line(
            &mut s,
            "destination",
            describe_destination(&v["destination"]),
        );
        line(
            &mut s,
            "service",
            v["service"]
                .as_str()
                .unwrap_or("unknown (not in the input)")
                .to_owned(),
        );
    }
    let route = &v["route"];
    line(
        &mut s,
        "route",
        if route.is_null() {
            if v["no_route"] == json!(true) {
                "none matches: routes are attached and none matches (404)".to_owned()
            } else {
                "default".to_owned()
            }
        } else {
            format!(
                "{} ({})",
                route["name"].as_str().unwrap_or(""),
                route["source"].as_str().unwrap_or("")
            )
        },
    );
    if let Some(bs) = v["backends"].as_array().filter(|b| !b.is_empty()) {
        let total: u64 = bs.iter().filter_map(|b| b["weight"].as_u64()).sum();
        for (i, b) in bs.iter().enumerate() {
            let w = b["weight"].as_u64().unwrap_or(0);
            let pct = if total > 0 {
                w as f64 * 100.0 / total as f64
            } else {
                0.0
            };
            line(
                &mut s,
                if i == 0 { "backends" } else { "" },
                format!(
                    "{}:{}  weight {w} ({pct:.1}%)",
                    b["service"].as_str().unwrap_or(""),
                    b["port"]
                ),
            );
        }
    }
    if let Some(samples) = v.get("samples").and_then(Value::as_object) {
        let total: u64 = samples.values().filter_map(Value::as_u64).sum();
        for (i, (k, c)) in samples.iter().enumerate() {
            let c = c.as_u64().unwrap_or(0);
            let pct = if total > 0 {
                c as f64 * 100.0 / total as f64
            } else {
                0.0
            };
            line(
                &mut s,
                if i == 0 { "samples" } else { "" },
                format!("{k}  {c} ({pct:.1}%)"),
            );
        }
    }
    let t = &v["timeout_ms"];
    let show = |x: &Value| x.as_u64().map_or("none".to_owned(), |m| format!("{m}ms"));
    line(
        &mut s,
        "timeouts",
        format!(
            "request {}, backend request {}",
            show(&t["request"]),
            show(&t["backend_request"])
        ),
    );
    let r = &v["retry"];
    line(
        &mut s,
        "retry",
        if r["retryable"] == json!(true) {
            let mut x = format!(
                "up to {} on {}",
                r["limit"],
                r["conditions"].as_str().unwrap_or("")
            );
            if let Some(b) = r["budget"].as_object() {
                let _ = write!(
                    x,
                    "; budget {}% + {}/s over {}s",
                    b["retry_ratio"].as_f64().unwrap_or(0.0) * 100.0,
                    b["min_retries_per_second"],
                    b["ttl_ms"].as_u64().unwrap_or(0) / 1000
                );
            }
            x
        } else {
            "no".to_owned()
        },
    );
    if let Some(c) = v.get("classification").and_then(Value::as_object) {
        let failing: Vec<&str> = c
            .iter()
            .filter(|(_, x)| x.as_str() == Some("failure"))
            .map(|(k, _)| k.as_str())
            .collect();
        line(
            &mut s,
            "failures",
            format!(
                "of 200/404/500/503: {}",
                if failing.is_empty() {
                    "none".to_owned()
                } else {
                    failing.join(", ")
                }
            ),
        );
    }
    let a = &v["authorization"];
    if !a.is_null() {
        line(
            &mut s,
            "authorization",
            format!(
                "{} by {}: {}",
                if a["allowed"] == json!(true) {
                    "allowed"
                } else {
                    "DENIED"
                },
                a["by"].as_str().unwrap_or(""),
                a["reason"].as_str().unwrap_or("")
            ),
        );
        if let Some(rl) = v["rate_limit"].as_object() {
            line(
                &mut s,
                "rate limit",
                format!(
                    "{} total {} rps, this client {} rps",
                    rl["source"].as_str().unwrap_or(""),
                    rl["total_rps"],
                    rl["per_identity_rps"]
                ),
            );
        }
    }
    for n in v["notes"].as_array().into_iter().flatten() {
        line(&mut s, "note", n.as_str().unwrap_or("").to_owned());
    }
    s
}

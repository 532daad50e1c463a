//! Where the numbers come from: a Prometheus server (PromQL over its HTTP API) or the proxies'
//! admin endpoints scraped directly, twice, a window apart. Both answer the same three
//! questions, so every table is computed by the same code whichever source fed it.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use serde::Deserialize;

use super::StatError;
use super::series::{self, Labels, Sample, Selector};

/// How long one HTTP exchange (a scrape or a query) may take.
const HTTP_TIMEOUT: Duration = Duration::from_secs(10);

/// A plain HTTP/1 client for scrapes and queries.
pub(crate) type HttpClient = Client<HttpConnector, Empty<Bytes>>;

/// See the [module docs](self).
#[derive(Debug)]
pub(crate) enum Source {
    Prometheus(Box<Prometheus>),
    Scraped(Scraped),
}

/// PromQL over a Prometheus server's `/api/v1/query`.
#[derive(Clone, Debug)]
pub(crate) struct Prometheus {
    client: HttpClient,
    base: String,
    window: Duration,
}

/// A proxy's admin address and the labels that name its workload (`namespace`, `deployment`,
/// `pod`), as Prometheus's relabelling would attach them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Target {
    pub(crate) labels: Labels,
    pub(crate) addr: SocketAddr,
}

/// Two scrapes of each target, `window` apart; a target that failed either scrape is left out.
#[derive(Debug)]
pub(crate) struct Scraped {
    pairs: Vec<(Labels, Vec<Sample>, Vec<Sample>)>,
    window: Duration,
}

#[derive(Debug, Deserialize)]
struct ApiResponse {
    status: String,
    #[serde(default)]
    data: Option<ApiData>,
    #[serde(default)]
    error: Option<String>,
}

#[derive(Debug, Deserialize)]
struct ApiData {
    #[serde(rename = "resultType")]
    result_type: String,
    result: Vec<ApiSample>,
}

#[derive(Debug, Deserialize)]
struct ApiSample {
    metric: Labels,
    /// `[unix seconds, "value"]`.
    value: (f64, String),
}

/// The most of an answer read, from a proxy's `/metrics` or Prometheus: a server that sends
/// more is refused rather than held in memory (a proxy's metrics are bounded by its series
/// limit, well under this).
const MAX_BODY: usize = 64 * 1024 * 1024;

pub(crate) fn http_client() -> HttpClient {
    Client::builder(TokioExecutor::new()).build_http()
}

/// GETs `uri` and returns the body as text, failing on any status but 200.
pub(crate) async fn fetch(client: &HttpClient, uri: &str) -> Result<String, StatError> {
    let http = |e: String| StatError::Http {
        uri: uri.to_owned(),
        reason: e,
    };
    let parsed: http::Uri = uri.parse().map_err(|e| http(format!("{e}")))?;
    let rsp = tokio::time::timeout(HTTP_TIMEOUT, client.get(parsed))
        .await
        .map_err(|_| http("timed out".into()))?
        .map_err(|e| http(format!("{e}")))?;
    let status = rsp.status();
    let limited = http_body_util::Limited::new(rsp.into_body(), MAX_BODY);
    let body = tokio::time::timeout(HTTP_TIMEOUT, limited.collect())
        .await
        .map_err(|_| http("timed out".into()))?
        .map_err(|e| http(format!("{e} (at most {MAX_BODY} bytes are read)")))?
        .to_bytes();
    let text = String::from_utf8_lossy(&body).into_owned();
    if status != http::StatusCode::OK {
        return Err(http(format!("{status}: {}", text.trim())));
    }
    Ok(text)
}

// === impl Source ===

impl Source {
    /// The span that rates are taken over.
    pub(crate) fn window(&self) -> Duration {
        match self {
            Self::Prometheus(p) => p.window,
            Self::Scraped(s) => s.window,
        }
    }

    /// `sum(increase(sel[window])) by (by)`: how much each counter grew in the window.
    pub(crate) async fn increase(
        &self,
        sel: &Selector,
        by: &[&str],
    ) -> Result<Vec<Sample>, StatError> {
        match self {
            Self::Prometheus(p) => {
                let w = p.window_promql();
                p.query(&format!(
                    "sum(increase({}[{w}])) by ({})",
                    sel.promql(""),
                    by.join(",")
                ))
                .await
            }
            Self::Scraped(s) => Ok(series::sum_by(&s.increases(sel, ""), by)),
        }
    }

    /// `sum(sel) by (by)`: a gauge's value now.
    pub(crate) async fn current(
        &self,
        sel: &Selector,
        by: &[&str],
    ) -> Result<Vec<Sample>, StatError> {
        match self {
            Self::Prometheus(p) => {
                p.query(&format!("sum({}) by ({})", sel.promql(""), by.join(",")))
                    .await
            }
            Self::Scraped(s) => Ok(series::sum_by(&s.latest(sel), by)),
        }
    }

    /// The `q` quantile of histogram `sel` over the window, by (by). Prometheus's
    /// `histogram_quantile` over `increase` rather than Linkerd's `irate`: the whole window
    /// counts, so a quiet last second does not blank the latencies.
    pub(crate) async fn quantile(
        &self,
        q: f64,
        sel: &Selector,
        by: &[&str],
    ) -> Result<Vec<Sample>, StatError> {
        match self {
            Self::Prometheus(p) => {
                let w = p.window_promql();
                let mut keys = by.to_vec();
                keys.push("le");
                let rows = p
                    .query(&format!(
                        "histogram_quantile({q}, sum(increase({}[{w}])) by ({}))",
                        sel.promql("_bucket"),
                        keys.join(",")
                    ))
                    .await?;
                Ok(rows.into_iter().filter(|s| s.value.is_finite()).collect())
            }
            Self::Scraped(s) => Ok(series::quantiles_by(q, &s.increases(sel, "_bucket"), by)),
        }
    }

    /// How many proxies answered, by (by): Prometheus's `up` series of targets that carry a
    /// `pod` label, or the targets scraped twice.
    pub(crate) async fn proxies(&self, by: &[&str]) -> Result<Vec<Sample>, StatError> {
        match self {
            Self::Prometheus(p) => {
                p.query(&format!("sum(up{{pod!=\"\"}}) by ({})", by.join(",")))
                    .await
            }
            Self::Scraped(s) => {
                let up: Vec<Sample> = s
                    .pairs
                    .iter()
                    .map(|(labels, _, _)| Sample {
                        name: "up".into(),
                        labels: labels.clone(),
                        value: 1.0,
                    })
                    .collect();
                Ok(series::sum_by(&up, by))
            }
        }
    }
}

// === impl Prometheus ===

impl Prometheus {
    pub(crate) fn new(base: &str, window: Duration) -> Self {
        Self {
            client: http_client(),
            base: base.trim_end_matches('/').to_owned(),
            window,
        }
    }

    fn window_promql(&self) -> String {
        let ms = self.window.as_millis().max(1);
        if ms.is_multiple_of(1000) {
            format!("{}s", ms / 1000)
        } else {
            format!("{ms}ms")
        }
    }

    /// An instant query; its vector as samples.
    async fn query(&self, promql: &str) -> Result<Vec<Sample>, StatError> {
        let q: String = form_urlencoded::Serializer::new(String::new())
            .append_pair("query", promql)
            .finish();
        let uri = format!("{}/api/v1/query?{q}", self.base);
        // The query is in the error below; the long encoded URI would only hide it.
        let text = fetch(&self.client, &uri).await.map_err(|e| match e {
            StatError::Http { reason, .. } => StatError::Prometheus {
                query: promql.to_owned(),
                reason: format!("{}: {reason}", self.base),
            },
            e => e,
        })?;
        parse_api(&text).map_err(|reason| StatError::Prometheus {
            query: promql.to_owned(),
            reason,
        })
    }
}

/// An `/api/v1/query` answer as samples; only vectors are expected.
fn parse_api(text: &str) -> Result<Vec<Sample>, String> {
    let rsp: ApiResponse = serde_json::from_str(text).map_err(|e| e.to_string())?;
    if rsp.status != "success" {
        return Err(rsp.error.unwrap_or(rsp.status));
    }
    let data = rsp.data.ok_or("no data")?;
    if data.result_type != "vector" {
        return Err(format!(
            "a {} where a vector was expected",
            data.result_type
        ));
    }
    data.result
        .into_iter()
        .map(|s| {
            let value = series::parse_value(&s.value.1).ok_or(format!("value {}", s.value.1))?;
            Ok(Sample {
                name: String::new(),
                labels: s.metric,
                value,
            })
        })
        .collect()
}

// === impl Scraped ===

impl Scraped {
    /// Scrapes every target, waits `window`, scrapes again. `on_first` runs after the first
    /// round (to tell a person how long to wait).
    pub(crate) async fn collect(
        targets: &[Target],
        window: Duration,
        on_first: impl FnOnce(usize),
    ) -> Result<Self, StatError> {
        let client = http_client();
        let first = scrape_all(&client, targets).await;
        let answered = first.iter().filter(|s| s.is_some()).count();
        if answered == 0 {
            return Err(StatError::NoProxy);
        }
        on_first(answered);
        let start = Instant::now();
        tokio::time::sleep(window).await;
        let second = scrape_all(&client, targets).await;
        Ok(Self::from_scrapes(targets, first, second, start.elapsed()))
    }

    /// Pairs two rounds of scrapes of `targets` taken `window` apart.
    pub(crate) fn from_scrapes(
        targets: &[Target],
        before: Vec<Option<Vec<Sample>>>,
        after: Vec<Option<Vec<Sample>>>,
        window: Duration,
    ) -> Self {
        let pairs = targets
            .iter()
            .zip(before.into_iter().zip(after))
            .filter_map(|(t, (b, a))| Some((t.labels.clone(), b?, a?)))
            .collect();
        Self { pairs, window }
    }

    /// Each selected counter's growth between the scrapes, with its target's labels. A
    /// series that is new counts from zero; one that went down restarted and counts from zero.
    fn increases(&self, sel: &Selector, suffix: &str) -> Vec<Sample> {
        let name = format!("{}{suffix}", sel.metric);
        let mut out = Vec::new();
        for (target, before, after) in &self.pairs {
            for s in after.iter().filter(|s| s.name == name) {
                let labels = with_target(&s.labels, target);
                if !sel.matches(sel.metric, &labels) {
                    continue;
                }
                let prev = before
                    .iter()
                    .find(|b| b.name == name && b.labels == s.labels)
                    .map_or(0.0, |b| b.value);
                let value = if s.value >= prev {
                    s.value - prev
                } else {
                    s.value
                };
                out.push(Sample {
                    name: name.clone(),
                    labels,
                    value,
                });
            }
        }
        out
    }

    /// Each selected series' value at the second scrape, with its target's labels.
    fn latest(&self, sel: &Selector) -> Vec<Sample> {
        self.pairs
            .iter()
            .flat_map(|(target, _, after)| {
                after.iter().filter_map(move |s| {
                    let labels = with_target(&s.labels, target);
                    sel.matches(&s.name, &labels).then(|| Sample {
                        name: s.name.clone(),
                        labels,
                        value: s.value,
                    })
                })
            })
            .collect()
    }
}

/// A series' labels plus its target's (the target's win, as Prometheus's `honor_labels: false`).
fn with_target(labels: &Labels, target: &Labels) -> Labels {
    let mut l = labels.clone();
    l.extend(target.iter().map(|(k, v)| (k.clone(), v.clone())));
    l
}

/// One scrape of each target, in order; `None` for a target that did not answer.
pub(crate) async fn scrape_all(
    client: &HttpClient,
    targets: &[Target],
) -> Vec<Option<Vec<Sample>>> {
    let mut out = Vec::with_capacity(targets.len());
    for t in targets {
        let text = fetch(client, &format!("http://{}/metrics", t.addr)).await;
        out.push(text.ok().map(|t| series::parse(&t)));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn target(name: &str) -> Target {
        Target {
            labels: [("deployment".to_owned(), name.to_owned())].into(),
            addr: SocketAddr::from(([127, 0, 0, 1], 4191)),
        }
    }

    #[test]
    fn scraped_increases_are_differences_and_restarts_count_from_zero() {
        let before = series::parse("request_total{direction=\"inbound\"} 10\nold_total 7\n");
        let after = series::parse(
            "request_total{direction=\"inbound\"} 25\nold_total 2\nnew_total{a=\"b\"} 4\n",
        );
        let s = Scraped::from_scrapes(
            &[target("web"), target("gone")],
            vec![Some(before), None],
            vec![Some(after), Some(vec![])],
            Duration::from_secs(5),
        );
        let inc = |m: &'static str| {
            s.increases(&Selector::new(m).eq("deployment", "web"), "")
                .iter()
                .map(|x| x.value)
                .sum::<f64>()
        };
        assert_eq!(inc("request_total"), 15.0);
        assert_eq!(inc("old_total"), 2.0);
        assert_eq!(inc("new_total"), 4.0);
        assert_eq!(
            s.pairs.len(),
            1,
            "a target that missed a scrape is left out"
        );
    }

    #[test]
    fn api_vectors_parse() {
        let text = r#"{"status":"success","data":{"resultType":"vector","result":[
            {"metric":{"deployment":"web"},"value":[1700000000.1,"12.5"]},
            {"metric":{},"value":[1700000000.1,"NaN"]}]}}"#;
        let s = parse_api(text).unwrap();
        assert_eq!(s[0].label("deployment"), "web");
        assert_eq!(s[0].value, 12.5);
        assert!(s[1].value.is_nan());
        let err = r#"{"status":"error","errorType":"bad_data","error":"parse error"}"#;
        assert_eq!(parse_api(err).unwrap_err(), "parse error");
    }
}

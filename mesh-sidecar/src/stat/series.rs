//! Samples as data: the Prometheus text format parsed, summed by labels, and histogram
//! quantiles computed as Prometheus's `histogram_quantile` does.

use std::collections::BTreeMap;

/// A series' labels, sorted by name.
pub(crate) type Labels = BTreeMap<String, String>;

/// One series and its value: a line of a scrape, or one element of a PromQL vector.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Sample {
    pub(crate) name: String,
    pub(crate) labels: Labels,
    pub(crate) value: f64,
}

/// Which series a query reads: a metric name and label values that must be equal.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct Selector {
    pub(crate) metric: &'static str,
    pub(crate) matchers: Vec<(&'static str, String)>,
}

// === impl Sample ===

impl Sample {
    /// The value of label `key`, empty when absent (as PromQL treats a missing label).
    pub(crate) fn label(&self, key: &str) -> &str {
        self.labels.get(key).map_or("", String::as_str)
    }
}

// === impl Selector ===

impl Selector {
    pub(crate) fn new(metric: &'static str) -> Self {
        Self {
            metric,
            matchers: Vec::new(),
        }
    }

    /// Adds `key="value"`.
    pub(crate) fn eq(mut self, key: &'static str, value: impl Into<String>) -> Self {
        self.matchers.push((key, value.into()));
        self
    }

    /// Whether a series of `name` with `labels` is selected.
    pub(crate) fn matches(&self, name: &str, labels: &Labels) -> bool {
        name == self.metric
            && self
                .matchers
                .iter()
                .all(|(k, v)| labels.get(*k).map_or("", String::as_str) == v)
    }

    /// `metric{k="v",…}` in PromQL, for `suffix` (`_bucket`) of the metric.
    pub(crate) fn promql(&self, suffix: &str) -> String {
        let matchers: Vec<String> = self
            .matchers
            .iter()
            .map(|(k, v)| format!("{k}=\"{}\"", escape(v)))
            .collect();
        format!("{}{suffix}{{{}}}", self.metric, matchers.join(","))
    }
}

fn escape(v: &str) -> String {
    v.replace('\\', "\\\\").replace('"', "\\\"")
}

/// Parses the Prometheus text format; comments and lines that are not samples are skipped.
pub(crate) fn parse(text: &str) -> Vec<Sample> {
    text.lines().filter_map(parse_line).collect()
}

fn parse_line(line: &str) -> Option<Sample> {
    let line = line.trim();
    if line.is_empty() || line.starts_with('#') {
        return None;
    }
    let name_end = line.find(['{', ' '])?;
    let name = &line[..name_end];
    let (labels, rest) = if line[name_end..].starts_with('{') {
        parse_labels(&line[name_end + 1..])?
    } else {
        (Labels::new(), &line[name_end..])
    };
    // A timestamp may follow the value.
    let value = rest.split_whitespace().next()?;
    Some(Sample {
        name: name.to_owned(),
        labels,
        value: parse_value(value)?,
    })
}

/// Label pairs up to the closing `}`; returns them and what follows.
fn parse_labels(mut s: &str) -> Option<(Labels, &str)> {
    let mut labels = Labels::new();
    loop {
        s = s.trim_start_matches([',', ' ']);
        if let Some(rest) = s.strip_prefix('}') {
            return Some((labels, rest));
        }
        let (key, rest) = s.split_once('=')?;
        let rest = rest.strip_prefix('"')?;
        let mut value = String::new();
        let mut chars = rest.char_indices();
        let end = loop {
            match chars.next()? {
                (i, '"') => break i,
                (_, '\\') => match chars.next()?.1 {
                    'n' => value.push('\n'),
                    c => value.push(c),
                },
                (_, c) => value.push(c),
            }
        };
        labels.insert(key.trim().to_owned(), value);
        s = &rest[end + 1..];
    }
}

/// A sample value, including Prometheus's spellings of the infinities and NaN.
pub(crate) fn parse_value(v: &str) -> Option<f64> {
    match v {
        "+Inf" | "Inf" => Some(f64::INFINITY),
        "-Inf" => Some(f64::NEG_INFINITY),
        "NaN" => Some(f64::NAN),
        _ => v.parse().ok(),
    }
}

/// Sums `samples` by the values of the labels `by`, as PromQL's `sum(…) by (…)`: the result's
/// labels are only those of `by` (absent ones left out).
pub(crate) fn sum_by<'a>(
    samples: impl IntoIterator<Item = &'a Sample>,
    by: &[&str],
) -> Vec<Sample> {
    let mut groups: BTreeMap<Labels, f64> = BTreeMap::new();
    for s in samples {
        let key: Labels = by
            .iter()
            .filter_map(|k| Some(((*k).to_owned(), s.labels.get(*k)?.clone())))
            .collect();
        *groups.entry(key).or_default() += s.value;
    }
    groups
        .into_iter()
        .map(|(labels, value)| Sample {
            name: String::new(),
            labels,
            value,
        })
        .collect()
}

/// `histogram_quantile(q, …)` of bucket samples (labelled `le`) grouped by `by`: one sample per
/// group that saw any observation.
pub(crate) fn quantiles_by(q: f64, buckets: &[Sample], by: &[&str]) -> Vec<Sample> {
    let mut keys: Vec<&str> = by.to_vec();
    keys.push("le");
    let mut groups: BTreeMap<Labels, Vec<(f64, f64)>> = BTreeMap::new();
    for b in sum_by(buckets, &keys) {
        let Some(le) = b.labels.get("le").and_then(|le| parse_value(le)) else {
            continue;
        };
        let mut labels = b.labels;
        labels.remove("le");
        groups.entry(labels).or_default().push((le, b.value));
    }
    groups
        .into_iter()
        .filter_map(|(labels, mut bs)| {
            bs.sort_by(|a, b| a.0.total_cmp(&b.0));
            Some(Sample {
                name: String::new(),
                labels,
                value: quantile(q, &bs)?,
            })
        })
        .collect()
}

/// A quantile of cumulative `(le, count)` buckets sorted by `le`, interpolating linearly within
/// the bucket as Prometheus does: a rank in the `+Inf` bucket reads as the highest finite bound.
/// `None` when nothing was observed.
pub(crate) fn quantile(q: f64, buckets: &[(f64, f64)]) -> Option<f64> {
    let total = buckets.last()?.1;
    if total <= 0.0 || !(0.0..=1.0).contains(&q) {
        return None;
    }
    let rank = q * total;
    let mut prev = (0.0, 0.0);
    for &(le, count) in buckets {
        if count >= rank {
            if le.is_infinite() {
                return Some(prev.0);
            }
            let span = count - prev.1;
            let frac = if span > 0.0 {
                (rank - prev.1) / span
            } else {
                1.0
            };
            return Some(prev.0 + (le - prev.0) * frac);
        }
        prev = (le, count);
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEXT: &str = r#"# HELP response_total Total count of HTTP responses.
# TYPE response_total counter
response_total{direction="inbound",tls="true",client_id="web.default.serviceaccount.identity.linkerd.cluster.local",status_code="200",classification="success"} 90
response_total{direction="inbound",tls="true",client_id="web.default.serviceaccount.identity.linkerd.cluster.local",status_code="500",classification="failure"} 10
response_latency_ms_bucket{direction="inbound",le="1"} 50
response_latency_ms_bucket{direction="inbound",le="2"} 90
response_latency_ms_bucket{direction="inbound",le="+Inf"} 100
odd{a="q\"uo\\te",b="x,y}"} 1 1700000000000
bare 3
"#;

    #[test]
    fn parses_the_text_format() {
        let s = parse(TEXT);
        assert_eq!(s.len(), 7);
        assert_eq!(s[0].name, "response_total");
        assert_eq!(s[0].label("status_code"), "200");
        assert_eq!(s[0].value, 90.0);
        assert_eq!(s[4].label("le"), "+Inf");
        assert_eq!(s[5].label("a"), "q\"uo\\te");
        assert_eq!(s[5].label("b"), "x,y}");
        assert_eq!(s[5].value, 1.0);
        assert_eq!((s[6].name.as_str(), s[6].value), ("bare", 3.0));
    }

    #[test]
    fn sums_by_labels() {
        let s = parse(TEXT);
        let sel = Selector::new("response_total").eq("direction", "inbound");
        let by = sum_by(
            s.iter().filter(|x| sel.matches(&x.name, &x.labels)),
            &["classification"],
        );
        let get = |c: &str| {
            by.iter()
                .find(|x| x.label("classification") == c)
                .map(|x| x.value)
        };
        assert_eq!(get("success"), Some(90.0));
        assert_eq!(get("failure"), Some(10.0));
        let all = sum_by(s.iter().filter(|x| sel.matches(&x.name, &x.labels)), &[]);
        assert_eq!(all.len(), 1);
        assert_eq!(all[0].value, 100.0);
    }

    #[test]
    fn quantiles_interpolate_as_prometheus_does() {
        let b = [(1.0, 50.0), (2.0, 90.0), (f64::INFINITY, 100.0)];
        assert_eq!(quantile(0.5, &b), Some(1.0));
        assert_eq!(quantile(0.25, &b), Some(0.5));
        assert_eq!(quantile(0.7, &b), Some(1.5));
        // In the +Inf bucket: the highest finite bound.
        assert_eq!(quantile(0.99, &b), Some(2.0));
        assert_eq!(quantile(0.5, &[(1.0, 0.0), (f64::INFINITY, 0.0)]), None);
        assert_eq!(quantile(0.5, &[]), None);
    }

    #[test]
    fn quantiles_by_group_the_buckets() {
        let buckets = parse(TEXT)
            .into_iter()
            .filter(|s| s.name == "response_latency_ms_bucket")
            .collect::<Vec<_>>();
        let q = quantiles_by(0.5, &buckets, &["direction"]);
        assert_eq!(q.len(), 1);
        assert_eq!(q[0].label("direction"), "inbound");
        assert_eq!(q[0].value, 1.0);
    }

    #[test]
    fn selectors_print_as_promql() {
        let sel = Selector::new("response_total")
            .eq("direction", "inbound")
            .eq("deployment", "we\"b");
        assert_eq!(
            sel.promql(""),
            "response_total{direction=\"inbound\",deployment=\"we\\\"b\"}"
        );
        assert_eq!(Selector::new("x").promql("_bucket"), "x_bucket{}");
    }
}

//! Check results as data, and the two ways they are printed: Linkerd's `✓`/`‼`/`×` lines with
//! hints for people, and JSON for scripts.

use serde::Serialize;

/// How one check came out. Only a failure makes `mesh check` exit non-zero.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Outcome {
    Success,
    /// Works now, but will not for long or not everywhere.
    Warning(Problem),
    /// Broken: the mesh does not work as installed.
    Error(Problem),
}

/// What is wrong and what to run or read to fix it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Problem {
    pub(crate) error: String,
    pub(crate) hint: String,
}

/// One line of the report: what was checked, and how it came out.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Check {
    pub(crate) description: String,
    pub(crate) outcome: Outcome,
}

/// The checks under one heading (`kubernetes-api`, `mesh-identity`, ...).
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Category {
    pub(crate) name: &'static str,
    pub(crate) checks: Vec<Check>,
}

/// Every category, in the order it was checked.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct Report {
    pub(crate) categories: Vec<Category>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct JsonReport<'a> {
    success: bool,
    categories: Vec<JsonCategory<'a>>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct JsonCategory<'a> {
    category_name: &'a str,
    checks: Vec<JsonCheck<'a>>,
}

#[derive(Serialize)]
struct JsonCheck<'a> {
    description: &'a str,
    result: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    hint: Option<&'a str>,
}

// === impl Outcome ===

impl Outcome {
    pub(crate) fn warning(error: impl Into<String>, hint: impl Into<String>) -> Self {
        Self::Warning(Problem {
            error: error.into(),
            hint: hint.into(),
        })
    }

    pub(crate) fn error(error: impl Into<String>, hint: impl Into<String>) -> Self {
        Self::Error(Problem {
            error: error.into(),
            hint: hint.into(),
        })
    }

    pub(crate) fn is_error(&self) -> bool {
        matches!(self, Self::Error(_))
    }

    fn symbol(&self) -> &'static str {
        match self {
            Self::Success => "✓",
            Self::Warning(_) => "‼",
            Self::Error(_) => "×",
        }
    }

    fn result(&self) -> &'static str {
        match self {
            Self::Success => "success",
            Self::Warning(_) => "warning",
            Self::Error(_) => "error",
        }
    }

    fn problem(&self) -> Option<&Problem> {
        match self {
            Self::Success => None,
            Self::Warning(p) | Self::Error(p) => Some(p),
        }
    }
}

// === impl Check ===

impl Check {
    pub(crate) fn new(description: impl Into<String>, outcome: Outcome) -> Self {
        Self {
            description: description.into(),
            outcome,
        }
    }
}

// === impl Category ===

impl Category {
    pub(crate) fn new(name: &'static str) -> Self {
        Self {
            name,
            checks: Vec::new(),
        }
    }

    pub(crate) fn push(&mut self, description: impl Into<String>, outcome: Outcome) {
        self.checks.push(Check::new(description, outcome));
    }

    /// Whether a check here failed, so that the checks depending on this category are skipped
    /// (as `linkerd check` stops when it cannot reach the API server).
    pub(crate) fn failed(&self) -> bool {
        self.checks.iter().any(|c| c.outcome.is_error())
    }
}

// === impl Report ===

impl Report {
    pub(crate) fn success(&self) -> bool {
        !self.categories.iter().any(Category::failed)
    }

    /// The report for people: a heading per category, a line per check, the error and hint
    /// indented under each warning and failure, and a summary line.
    pub(crate) fn to_text(&self) -> String {
        let mut out = String::new();
        for c in &self.categories {
            out.push_str(&format!("{}\n{}\n", c.name, "-".repeat(c.name.len())));
            for check in &c.checks {
                out.push_str(&format!(
                    "{} {}\n",
                    check.outcome.symbol(),
                    check.description
                ));
                if let Some(p) = check.outcome.problem() {
                    out.push_str(&format!("    {}\n    hint: {}\n", p.error, p.hint));
                }
            }
            out.push('\n');
        }
        let summary = if self.success() { "✓" } else { "×" };
        out.push_str(&format!("Status check results are {summary}\n"));
        out
    }

    /// The report for scripts, shaped as `linkerd check -o json`'s.
    pub(crate) fn to_json(&self) -> Result<String, serde_json::Error> {
        let categories = (self.categories.iter())
            .map(|c| JsonCategory {
                category_name: c.name,
                checks: (c.checks.iter())
                    .map(|check| {
                        let p = check.outcome.problem();
                        JsonCheck {
                            description: &check.description,
                            result: check.outcome.result(),
                            error: p.map(|p| p.error.as_str()),
                            hint: p.map(|p| p.hint.as_str()),
                        }
                    })
                    .collect(),
            })
            .collect();
        serde_json::to_string_pretty(&JsonReport {
            success: self.success(),
            categories,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report() -> Report {
        let mut c = Category::new("mesh-identity");
        c.push("trust anchors are valid", Outcome::Success);
        c.push(
            "issuer certificate is valid",
            Outcome::warning("expires in 3 days", "rotate the issuer"),
        );
        Report {
            categories: vec![c],
        }
    }

    #[test]
    fn warnings_pass_and_are_shown_with_their_hint() {
        let r = report();
        assert!(r.success());
        assert_eq!(
            r.to_text(),
            "mesh-identity\n-------------\n✓ trust anchors are valid\n\
             ‼ issuer certificate is valid\n    expires in 3 days\n    hint: rotate the issuer\n\n\
             Status check results are ✓\n"
        );
    }

    #[test]
    fn an_error_fails_the_report_and_json_says_so() {
        let mut r = report();
        r.categories[0].push("x", Outcome::error("broken", "fix it"));
        assert!(!r.success());
        let v: serde_json::Value = serde_json::from_str(&r.to_json().unwrap()).unwrap();
        assert_eq!(v["success"], false);
        let checks = &v["categories"][0]["checks"];
        assert_eq!(checks[0]["result"], "success");
        assert!(checks[0].get("hint").is_none());
        assert_eq!(checks[2]["result"], "error");
        assert_eq!(checks[2]["hint"], "fix it");
        assert!(r.to_text().ends_with("Status check results are ×\n"));
    }
}

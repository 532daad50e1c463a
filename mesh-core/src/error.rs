//! Errors and notes from loading a stream.

use std::fmt;

use crate::manifest::Origin;

/// Something wrong with one resource of the stream.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LoadError {
    /// Where in the stream.
    pub origin: Origin,
    /// The line of the offending value, when the YAML parser could tell.
    pub line: Option<usize>,
    /// `Kind/namespace/name`, when the document got that far.
    pub resource: Option<String>,
    /// The field path (`spec.rules[0].backendRefs[0].port`), when one field is at fault.
    pub field: Option<String>,
    /// Why.
    pub message: String,
}

/// Every error found in a stream. Compiling is all-or-nothing, so one is enough to refuse it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LoadErrors(pub Vec<LoadError>);

/// Something worth knowing about the input that is not an error: a skipped kind, a replaced
/// duplicate, a resource that has no effect.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Note {
    /// Where in the stream.
    pub origin: Option<Origin>,
    /// `Kind/namespace/name`, when known.
    pub resource: Option<String>,
    /// What to know.
    pub message: String,
}

// === impl LoadError ===

impl fmt::Display for LoadError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "document {}", self.origin.document)?;
        match self.line {
            Some(l) => write!(f, " (line {l})")?,
            None => write!(f, " (starting at line {})", self.origin.line)?,
        }
        if let Some(i) = self.origin.item {
            write!(f, " item {i}")?;
        }
        if let Some(r) = &self.resource {
            write!(f, ", {r}")?;
        }
        f.write_str(": ")?;
        if let Some(field) = &self.field {
            write!(f, "{field}: ")?;
        }
        f.write_str(&self.message)
    }
}

impl std::error::Error for LoadError {}

// === impl LoadErrors ===

impl LoadErrors {
    /// The errors, in stream order.
    pub fn errors(&self) -> &[LoadError] {
        &self.0
    }
}

impl fmt::Display for LoadErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let n = self.0.len();
        write!(
            f,
            "{n} error{} in the policy stream",
            if n == 1 { "" } else { "s" }
        )?;
        for e in &self.0 {
            write!(f, "\n  {e}")?;
        }
        Ok(())
    }
}

impl std::error::Error for LoadErrors {}

// === impl Note ===

impl fmt::Display for Note {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(o) = &self.origin {
            write!(f, "{o}")?;
            if self.resource.is_some() {
                f.write_str(", ")?;
            } else {
                f.write_str(": ")?;
            }
        }
        if let Some(r) = &self.resource {
            write!(f, "{r}: ")?;
        }
        f.write_str(&self.message)
    }
}

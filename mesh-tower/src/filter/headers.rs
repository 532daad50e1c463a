//! Header edits applied to a request's or a response's header map.

use http::{HeaderMap, HeaderName, HeaderValue};
use mesh_core::filter::HeaderEdit;

use super::HeaderEdits;

// === impl HeaderEdits ===

impl<'a> HeaderEdits<'a> {
    /// Edits `headers`.
    pub fn new(headers: &'a mut HeaderMap) -> Self {
        Self {
            headers,
            invalid: 0,
        }
    }

    /// How many names or values were left out.
    pub fn invalid(&self) -> u64 {
        self.invalid
    }

    fn parse(&mut self, name: &str, value: &str) -> Option<(HeaderName, HeaderValue)> {
        match (HeaderName::try_from(name), HeaderValue::from_str(value)) {
            (Ok(n), Ok(v)) => Some((n, v)),
            _ => {
                self.invalid += 1;
                None
            }
        }
    }
}

impl HeaderEdit for HeaderEdits<'_> {
    fn set_header(&mut self, name: &str, value: &str) {
        if let Some((n, v)) = self.parse(name, value) {
            self.headers.insert(n, v);
        }
    }

    fn add_header(&mut self, name: &str, value: &str) {
        if let Some((n, v)) = self.parse(name, value) {
            self.headers.append(n, v);
        }
    }

    fn remove_header(&mut self, name: &str) {
        match HeaderName::try_from(name) {
            Ok(n) => {
                self.headers.remove(n);
            }
            Err(_) => self.invalid += 1,
        }
    }
}

//! Reading a multi-document YAML stream into Kubernetes-shaped objects.
//!
//! The stream is split on document markers by hand, so that each document is parsed on its own:
//! a syntax error in one document is reported with its own line and does not hide errors in the
//! others. `kind: List` is expanded into its items (null items skipped), and null documents
//! (a trailing `---`) are dropped.
//!
//! Hostile input is refused before the YAML parser sees it: a stream over
//! [`MAX_STREAM_BYTES`] as a whole, a document nesting deeper than [`MAX_DEPTH`] on its own
//! (the parser's cost grows with the square of the depth).

use std::fmt;

use serde_norway::Value;

mod depth;

pub use depth::MAX_DEPTH;

/// The largest stream read. Parsed YAML takes several times its text in memory, and the
/// largest real policy (every object of a big cluster) is a few MiB.
pub const MAX_STREAM_BYTES: usize = 64 * 1024 * 1024;

/// Where in the stream a resource came from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Origin {
    /// 1-based index of the document in the stream (documents that hold only comments or
    /// nothing are not counted).
    pub document: usize,
    /// 1-based line of the document's first line in the stream.
    pub line: usize,
    /// Index of the item inside a `kind: List`, if the resource came from one.
    pub item: Option<usize>,
}

/// One object of the stream, before it is interpreted.
#[derive(Clone, Debug)]
pub(crate) struct RawObject {
    pub(crate) origin: Origin,
    pub(crate) value: Value,
    /// The document's text, kept to re-parse with line numbers when an error needs them.
    pub(crate) text: Option<String>,
}

/// A document that could not be read as YAML, or was refused before it was.
#[derive(Clone, Debug)]
pub(crate) struct SyntaxError {
    pub(crate) origin: Origin,
    pub(crate) line: Option<usize>,
    pub(crate) message: String,
}

// === impl Origin ===

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "document {} (line {})", self.document, self.line)?;
        if let Some(i) = self.item {
            write!(f, " item {i}")?;
        }
        Ok(())
    }
}

/// Splits `input` into documents and parses each, expanding `kind: List`.
pub(crate) fn read_stream(input: &str) -> (Vec<RawObject>, Vec<SyntaxError>) {
    let mut objects = Vec::new();
    let mut errors = Vec::new();
    if input.len() > MAX_STREAM_BYTES {
        errors.push(SyntaxError {
            origin: Origin {
                document: 1,
                line: 1,
                item: None,
            },
            line: None,
            message: format!(
                "the stream is {} bytes; at most {MAX_STREAM_BYTES} are read",
                input.len()
            ),
        });
        return (objects, errors);
    }
    for (document, (line, text)) in split_documents(input).into_iter().enumerate() {
        let origin = Origin {
            document: document + 1,
            line,
            item: None,
        };
        if let Some(i) = depth::too_deep(text, MAX_DEPTH) {
            errors.push(SyntaxError {
                line: Some(line + i),
                message: format!("nested more than {MAX_DEPTH} levels deep"),
                origin,
            });
            continue;
        }
        match serde_norway::from_str::<Value>(text) {
            Ok(Value::Null) => {}
            Ok(value) => expand_list(origin, value, text, &mut objects, &mut errors),
            Err(e) => errors.push(SyntaxError {
                line: e.location().map(|l| line + l.line() - 1),
                message: format!("not valid YAML: {}", strip_location(&e.to_string())),
                origin,
            }),
        }
    }
    (objects, errors)
}

fn expand_list(
    origin: Origin,
    value: Value,
    text: &str,
    objects: &mut Vec<RawObject>,
    errors: &mut Vec<SyntaxError>,
) {
    let is_list = value.get("kind").and_then(Value::as_str) == Some("List")
        || value
            .get("kind")
            .and_then(Value::as_str)
            .is_some_and(|k| k.ends_with("List") && value.get("items").is_some());
    if !is_list {
        objects.push(RawObject {
            origin,
            value,
            text: Some(text.to_owned()),
        });
        return;
    }
    match value.get("items") {
        None | Some(Value::Null) => {}
        Some(Value::Sequence(items)) => {
            for (i, item) in items.iter().enumerate() {
                if item.is_null() {
                    continue;
                }
                objects.push(RawObject {
                    origin: Origin {
                        item: Some(i),
                        ..origin.clone()
                    },
                    value: item.clone(),
                    text: None,
                });
            }
        }
        Some(_) => errors.push(SyntaxError {
            origin,
            line: None,
            message: "items: a List's items must be a sequence".to_owned(),
        }),
    }
}

/// serde_norway appends " at line L column C" to its messages; callers that print the line
/// themselves strip it.
pub fn strip_location(msg: &str) -> String {
    match msg.find(" at line ") {
        Some(i) => msg[..i].to_owned(),
        None => msg.to_owned(),
    }
}

/// One document of a YAML stream, as text.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Segment<'a> {
    /// 1-based line of the document's first line in the stream.
    pub line: usize,
    /// The document's text, markers excluded.
    pub text: &'a str,
    /// Whether it holds anything but comments and blank lines.
    pub has_content: bool,
}

/// Splits a YAML stream on `---` and `...` markers, as the loader does. Pieces that hold only
/// comments are kept (with `has_content: false`) for tools that pass a stream through;
/// whitespace-only pieces are dropped.
pub fn split_stream(input: &str) -> Vec<Segment<'_>> {
    let mut docs = Vec::new();
    let mut start = 0; // byte offset of the current document
    let mut start_line = 1;
    let mut offset = 0;
    for (idx, line) in input.split_inclusive('\n').enumerate() {
        let trimmed = line.trim_end_matches(['\n', '\r']);
        let is_marker = |m: &str| {
            trimmed == m
                || trimmed
                    .strip_prefix(m)
                    .is_some_and(|rest| rest.starts_with([' ', '\t']))
        };
        if is_marker("---") || is_marker("...") {
            push_segment(&mut docs, start_line, &input[start..offset]);
            // Content after `--- ` on the same line belongs to the next document.
            if trimmed.starts_with("---") && trimmed.len() > 3 {
                start = offset + 3;
                start_line = idx + 1;
            } else {
                start = offset + line.len();
                start_line = idx + 2;
            }
        }
        offset += line.len();
    }
    push_segment(&mut docs, start_line, &input[start..]);
    docs
}

fn push_segment<'a>(docs: &mut Vec<Segment<'a>>, line: usize, text: &'a str) {
    if text.trim().is_empty() {
        return;
    }
    let has_content = text.lines().any(|l| {
        let t = l.trim();
        !t.is_empty() && !t.starts_with('#')
    });
    docs.push(Segment {
        line,
        text,
        has_content,
    });
}

/// The documents of a stream that hold something: (first line, text).
fn split_documents(input: &str) -> Vec<(usize, &str)> {
    split_stream(input)
        .into_iter()
        .filter(|s| s.has_content)
        .map(|s| (s.line, s.text))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_on_markers_and_keeps_line_numbers() {
        let s = "# banner\n---\na: 1\n---\n# only a comment\n---\nb: 2\n---\n";
        let docs = split_documents(s);
        assert_eq!(docs.len(), 2);
        assert_eq!(docs[0].0, 3);
        assert_eq!(docs[1].0, 7);
    }

    #[test]
    fn marker_needs_to_stand_alone() {
        let s = "a: |\n  ---x\nb: ---\n";
        assert_eq!(split_documents(s).len(), 1);
    }

    #[test]
    fn lists_expand_and_null_items_are_skipped() {
        let s = "kind: List\napiVersion: v1\nitems:\n- kind: A\n- null\n- kind: B\n";
        let (objs, errs) = read_stream(s);
        assert!(errs.is_empty());
        assert_eq!(objs.len(), 2);
        assert_eq!(objs[1].origin.item, Some(2));
    }

    #[test]
    fn syntax_errors_name_the_line_in_the_stream() {
        let s = "a: 1\n---\nb:\n  c: 1\n d: 2\n";
        let (_, errs) = read_stream(s);
        assert_eq!(errs.len(), 1);
        assert_eq!(errs[0].origin.document, 2);
        assert!(errs[0].line.is_some_and(|l| l >= 3), "{:?}", errs[0]);
    }
}

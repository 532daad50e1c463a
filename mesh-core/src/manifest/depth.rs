//! A bound on how deeply a YAML document nests, checked on its text before it is parsed.
//!
//! The YAML parser's time grows with the square of the nesting depth (100,000 levels, 200 KB,
//! took a minute), and the parse happens before any schema could refuse the document. No
//! Kubernetes object nests anywhere near [`MAX_DEPTH`], so one linear pass over the text
//! refuses such a document at once.
//!
//! The count follows what opens a level in YAML: a deeper indentation, a `- ` or `? ` indicator
//! (several may stand on one line: `- - - x`), and a flow `[` or `{` where a node starts or
//! inside a flow collection. Quoted text, comments and block scalars' contents open nothing.

/// The deepest nesting a document may have.
pub const MAX_DEPTH: usize = 64;

/// Where a scan stands between lines.
#[derive(Debug, Default)]
struct Scan {
    /// Indentation of each open block level.
    indents: Vec<usize>,
    /// Open flow collections (they may span lines).
    flow: usize,
    /// Inside a block scalar (`|`, `>`) whose header line had this indentation.
    scalar_of: Option<usize>,
}

/// The 0-based index of the first line of `text` where nesting passes `limit`, if any.
pub(crate) fn too_deep(text: &str, limit: usize) -> Option<usize> {
    let mut scan = Scan::default();
    for (i, line) in text.lines().enumerate() {
        if scan.line(line) > limit {
            return Some(i);
        }
    }
    None
}

// === impl Scan ===

impl Scan {
    /// Takes one line; returns the deepest nesting on it.
    fn line(&mut self, line: &str) -> usize {
        let body = line.trim_start_matches([' ', '\t']);
        let indent = line.len() - body.len();
        if body.is_empty() || body.starts_with('#') {
            return 0;
        }
        if let Some(of) = self.scalar_of {
            if indent > of {
                return 0;
            }
            self.scalar_of = None;
        }
        if self.flow > 0 {
            // Indentation and indicators mean nothing inside a flow collection.
            let (flow, deepest) = flow_depth(body, self.flow);
            self.flow = flow;
            return self.indents.len() + deepest;
        }
        while self.indents.last().is_some_and(|&top| top >= indent) {
            self.indents.pop();
        }
        self.indents.push(indent);
        let mut rest = body;
        let mut inline = 0;
        while let Some(r) = strip_indicator(rest) {
            inline += 1;
            rest = r;
        }
        let value = node_start(rest);
        let (flow, deepest) = match value.chars().next() {
            Some('[' | '{') => flow_depth(value, 0),
            _ => (0, 0),
        };
        self.flow = flow;
        if flow == 0 && opens_block_scalar(value) {
            self.scalar_of = Some(indent);
        }
        self.indents.len() + inline + deepest
    }
}

/// `rest` after a leading `- ` or `? ` indicator (or a lone `-`/`?`), if it has one.
fn strip_indicator(rest: &str) -> Option<&str> {
    let after = rest.strip_prefix('-').or_else(|| rest.strip_prefix('?'))?;
    if after.is_empty() {
        return Some(after);
    }
    after
        .strip_prefix([' ', '\t'])
        .map(|r| r.trim_start_matches([' ', '\t']))
}

/// Where the value node of a block line starts: after `key: `, or the line itself.
fn node_start(rest: &str) -> &str {
    if rest.starts_with(['"', '\'', '[', '{']) {
        return rest;
    }
    match rest.find(": ") {
        Some(i) => rest[i + 2..].trim_start_matches([' ', '\t']),
        None => rest,
    }
}

/// The flow depth after `s` and the deepest reached on it, starting at `depth`.
fn flow_depth(s: &str, mut depth: usize) -> (usize, usize) {
    let mut deepest = depth;
    let mut quote: Option<char> = None;
    let mut prev = ' ';
    let mut escaped = false;
    for c in s.chars() {
        match quote {
            Some('"') if escaped => escaped = false,
            Some('"') if c == '\\' => escaped = true,
            Some(q) if c == q => quote = None,
            Some(_) => {}
            None => match c {
                // A quote opens only where a scalar may start, not inside a plain one (`it's`).
                '"' | '\'' if matches!(prev, ' ' | '\t' | '[' | '{' | ',' | ':') => quote = Some(c),
                '#' if matches!(prev, ' ' | '\t') => break,
                '[' | '{' => {
                    depth += 1;
                    deepest = deepest.max(depth);
                }
                ']' | '}' => depth = depth.saturating_sub(1),
                _ => {}
            },
        }
        prev = c;
    }
    (depth, deepest)
}

/// Whether a value is a block scalar header: `|` or `>`, chomping and indentation indicators,
/// an optional comment.
fn opens_block_scalar(value: &str) -> bool {
    let Some(rest) = value.strip_prefix(['|', '>']) else {
        return false;
    };
    let rest =
        rest.trim_start_matches(['+', '-', '0', '1', '2', '3', '4', '5', '6', '7', '8', '9']);
    let rest = rest.trim_start_matches([' ', '\t']);
    rest.is_empty() || rest.starts_with('#')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn depth(text: &str) -> usize {
        (0..200).find(|&d| too_deep(text, d).is_none()).unwrap()
    }

    #[test]
    fn counts_block_flow_and_inline_levels() {
        assert_eq!(depth("a: 1\n"), 1);
        assert_eq!(depth("a:\n  b:\n    c: 1\n"), 3);
        assert_eq!(depth("- - - x\n"), 4);
        assert_eq!(depth("a: [[1], {b: [2]}]\n"), 4);
        assert_eq!(depth("a: [\n  [\n    [1]\n  ]\n]\n"), 4);
    }

    #[test]
    fn quotes_comments_and_block_scalars_open_nothing() {
        assert_eq!(depth("a: \"[[[[\"\nb: '{{{{' # [[[[\n"), 1);
        assert_eq!(depth("path: /api/[a-z]+/[[x\n"), 1);
        let script = "a: |\n  [[[[[[\n      {{{{{\n        - - - - -\nb: 1\n";
        assert_eq!(depth(script), 1);
        assert_eq!(depth("a: [\"]]]\", 'it''s', x]\n"), 2);
    }

    #[test]
    fn real_manifests_stay_far_below_the_limit() {
        let route = "apiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\nspec:\n  \
                     rules:\n  - matches:\n    - path:\n        type: PathPrefix\n        \
                     value: /\n      headers:\n      - {name: x, value: \"y\"}\n";
        assert!(depth(route) < 10, "{}", depth(route));
    }

    #[test]
    fn deep_nesting_is_found_on_its_line() {
        let flow = format!("a: 1\nb: {}{}\n", "[".repeat(100_000), "]".repeat(100_000));
        assert_eq!(too_deep(&flow, MAX_DEPTH), Some(1));
        let dashes = format!("{}x\n", "- ".repeat(100_000));
        assert_eq!(too_deep(&dashes, MAX_DEPTH), Some(0));
        let block: String = (0..100)
            .map(|i| format!("{}k{i}:\n", " ".repeat(i)))
            .collect();
        assert_eq!(too_deep(&block, MAX_DEPTH), Some(MAX_DEPTH));
    }
}

//! Reading the YAML inputs of commands.

use std::path::{Path, PathBuf};

/// A path a command was given that cannot be read.
#[derive(Debug, thiserror::Error)]
#[error("cannot read {}: {error}", path.display())]
pub(crate) struct CannotRead {
    path: PathBuf,
    // Not a `#[source]`: the message carries it already, and `{:#}` would print it twice.
    error: std::io::Error,
}

/// Reads a whole file as text.
pub(crate) fn read(path: &Path) -> Result<String, CannotRead> {
    std::fs::read_to_string(path).map_err(|error| CannotRead {
        path: path.to_owned(),
        error,
    })
}

/// The files named in `paths`, with directories expanded (recursively) into their `*.yaml` and
/// `*.yml` files, sorted so output is stable.
pub(crate) fn yaml_files(paths: &[PathBuf]) -> Result<Vec<PathBuf>, CannotRead> {
    fn walk(dir: &Path, out: &mut Vec<PathBuf>) -> std::io::Result<()> {
        let mut entries: Vec<_> = std::fs::read_dir(dir)?.collect::<Result<_, _>>()?;
        entries.sort_by_key(|e| e.path());
        for e in entries {
            let p = e.path();
            if e.file_type()?.is_dir() {
                walk(&p, out)?;
            } else if p.extension().is_some_and(|x| x == "yaml" || x == "yml") {
                out.push(p);
            }
        }
        Ok(())
    }
    let mut out = Vec::new();
    for p in paths {
        let cannot = |error| CannotRead {
            path: p.clone(),
            error,
        };
        if std::fs::metadata(p).map_err(cannot)?.is_dir() {
            walk(p, &mut out).map_err(cannot)?;
        } else {
            out.push(p.clone());
        }
    }
    Ok(out)
}

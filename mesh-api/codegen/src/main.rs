//! Regenerates `mesh-api/src/gen` from `mesh-api/proto` with `protoc`, so that building
//! mesh never needs it. `--check` generates into a temporary directory and fails when the
//! checked-in code differs (CI runs that).

use std::path::{Path, PathBuf};
use std::process::ExitCode;

const PROTO: &str = "proto/mesh/controller/v1/controller.proto";

fn main() -> ExitCode {
    let check = std::env::args().any(|a| a == "--check");
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let checked_in = root.join("src/gen");
    let out = if check {
        std::env::temp_dir().join(format!("mesh-api-gen-{}", std::process::id()))
    } else {
        checked_in.clone()
    };
    if let Err(e) = generate(&root, &out) {
        eprintln!("error: {e}");
        return ExitCode::FAILURE;
    }
    if !check {
        println!("generated {}", out.display());
        return ExitCode::SUCCESS;
    }
    let stale = compare(&out, &checked_in);
    let _ = std::fs::remove_dir_all(&out);
    match stale {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}; run `cargo run --manifest-path mesh-api/codegen/Cargo.toml`");
            ExitCode::FAILURE
        }
    }
}

fn generate(root: &Path, out: &PathBuf) -> Result<(), String> {
    std::fs::create_dir_all(out).map_err(|e| format!("{}: {e}", out.display()))?;
    tonic_prost_build::configure()
        .build_transport(false)
        .emit_rerun_if_changed(false)
        .out_dir(out)
        .compile_protos(&[root.join(PROTO)], &[root.join("proto")])
        .map_err(|e| format!("cannot generate from {PROTO}: {e}"))
}

fn compare(generated: &Path, checked_in: &Path) -> Result<(), String> {
    let entries = std::fs::read_dir(generated).map_err(|e| e.to_string())?;
    for entry in entries {
        let entry = entry.map_err(|e| e.to_string())?;
        let name = entry.file_name();
        let fresh = std::fs::read(entry.path()).map_err(|e| e.to_string())?;
        let old = std::fs::read(checked_in.join(&name)).unwrap_or_default();
        if fresh != old {
            return Err(format!(
                "mesh-api/src/gen/{} is not what {PROTO} generates",
                name.to_string_lossy()
            ));
        }
    }
    Ok(())
}

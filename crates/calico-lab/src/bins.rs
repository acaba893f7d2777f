//! Where the lab finds the project's binaries: next to its own executable (a cargo target
//! directory), else on PATH.

use std::path::PathBuf;

use crate::error::LabError;

/// The path of binary `name`, or `None`.
pub fn find(name: &str) -> Option<PathBuf> {
    if let Ok(exe) = std::env::current_exe()
        && let Some(dir) = exe.parent()
    {
        // Integration tests run from target/<profile>/deps; the binaries sit one level up.
        for d in [Some(dir), dir.parent()].into_iter().flatten() {
            let p = d.join(name);
            if p.is_file() {
                return Some(p);
            }
        }
    }
    let paths = std::env::var_os("PATH")?;
    std::env::split_paths(&paths)
        .map(|d| d.join(name))
        .find(|p| p.is_file())
}

/// Like [`find`], but a missing binary is an error.
pub fn require(name: &str) -> Result<PathBuf, LabError> {
    find(name).ok_or_else(|| LabError::MissingBinary {
        name: name.to_string(),
    })
}

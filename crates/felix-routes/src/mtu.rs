//! The MTU file the CNI plugin reads (`/var/lib/calico/mtu` upstream; `calico-cni` reads that
//! fixed path). Where several nodes share one machine (the lab), the caller points
//! [`crate::RoutesConfig::mtu_file`] at a per-node path such as `$CALICO_RUN_DIR/mtu`.

use std::io::Write;
use std::path::Path;

use crate::RoutesError;

/// Upstream's MTU file.
pub const DEFAULT_MTU_FILE: &str = "/var/lib/calico/mtu";

/// Writes `mtu` to `path` atomically (temp file in the same directory, then rename), only when
/// the content differs. Returns whether the file changed.
pub fn write_mtu_file(path: &Path, mtu: u32) -> Result<bool, RoutesError> {
    let want = mtu.to_string();
    if std::fs::read_to_string(path).is_ok_and(|s| s.trim() == want) {
        return Ok(false);
    }
    let err = |source| RoutesError::MtuFile {
        path: path.to_path_buf(),
        source,
    };
    let dir = path.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir).map_err(err)?;
    let tmp = dir.join(format!(
        ".{}.tmp{}",
        path.file_name().and_then(|n| n.to_str()).unwrap_or("mtu"),
        std::process::id()
    ));
    let mut f = std::fs::File::create(&tmp).map_err(err)?;
    f.write_all(want.as_bytes()).map_err(err)?;
    f.sync_all().map_err(err)?;
    std::fs::rename(&tmp, path).map_err(err)?;
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_once_and_rewrites_on_change() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("sub/mtu");
        assert!(write_mtu_file(&p, 1450).unwrap());
        assert_eq!(std::fs::read_to_string(&p).unwrap(), "1450");
        assert!(!write_mtu_file(&p, 1450).unwrap());
        assert!(write_mtu_file(&p, 1480).unwrap());
        assert_eq!(std::fs::read_to_string(&p).unwrap(), "1480");
    }
}

//! Paths that hold secrets (the signing secret, the TLS key, the database of
//! password hashes and emails): directories created readable by the owner
//! only, and a startup check that warns when one is readable by other users.

use std::path::Path;

/// Creates `dir` and any missing parents with mode 0700 on Unix; parents that
/// already exist keep their mode.
pub(crate) fn create_dir_all(dir: &Path) -> std::io::Result<()> {
    let mut builder = std::fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::DirBuilderExt;
        builder.mode(0o700);
    }
    builder.create(dir)
}

/// Takes read and write access from group and others on the files and
/// directories directly inside `dir` and one level below (sled's `blobs`).
/// For a database just created: sled creates its files with the umask.
pub(crate) fn restrict_contents(dir: &Path) -> std::io::Result<()> {
    #[cfg(unix)]
    for entry in std::fs::read_dir(dir)? {
        use std::os::unix::fs::PermissionsExt;
        let entry = entry?;
        let meta = entry.metadata()?;
        let mut permissions = meta.permissions();
        permissions.set_mode(permissions.mode() & 0o700);
        std::fs::set_permissions(entry.path(), permissions)?;
        if meta.is_dir() {
            restrict_contents(&entry.path())?;
        }
    }
    #[cfg(not(unix))]
    let _ = dir;
    Ok(())
}

/// Logs a warning when `path` can be read by users other than its owner and
/// group: a file readable by others, or a directory others may list or enter.
/// `what` names the setting, so the operator knows what to `chmod`.
pub(crate) fn warn_if_readable_by_others(what: &str, path: &Path) {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let Ok(meta) = std::fs::metadata(path) else {
            return; // Whoever needed it has already reported it missing.
        };
        let mode = meta.permissions().mode();
        let (exposed, fix) = if meta.is_dir() {
            (mode & 0o005 != 0, "chmod 700")
        } else {
            (mode & 0o004 != 0, "chmod 600")
        };
        if exposed {
            tracing::warn!(
                path = %path.display(),
                mode = format!("{:o}", mode & 0o7777),
                "{what} is readable by other users of this machine; {fix} it"
            );
        }
    }
    #[cfg(not(unix))]
    let _ = (what, path);
}

#[cfg(test)]
#[cfg(unix)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    fn mode(path: &Path) -> u32 {
        std::fs::metadata(path).unwrap().permissions().mode() & 0o777
    }

    #[test]
    fn new_directories_are_private_and_contents_are_restricted() {
        let temp = tempfile::tempdir().unwrap();
        let nested = temp.path().join("a/b");
        create_dir_all(&nested).unwrap();
        assert_eq!(mode(&temp.path().join("a")), 0o700);
        assert_eq!(mode(&nested), 0o700);
        let file = nested.join("db");
        std::fs::write(&file, b"x").unwrap();
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o644)).unwrap();
        let sub = nested.join("blobs");
        std::fs::create_dir(&sub).unwrap();
        std::fs::set_permissions(&sub, std::fs::Permissions::from_mode(0o755)).unwrap();
        restrict_contents(&nested).unwrap();
        assert_eq!(mode(&file), 0o600);
        assert_eq!(mode(&sub), 0o700);
    }
}

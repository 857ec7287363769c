//! Opening a sled database: the process lock, corruption and a foreign
//! directory told apart, and the format marker checked.

use super::*;

/// Turns sled's open failures into the errors an operator can act on.
pub(super) fn classify_open_error(path: &Path, source: sled::Error) -> StoreError {
    match source {
        // sled reports a held lock as a plain io error with this wording.
        sled::Error::Io(ref io) if io.to_string().contains("could not acquire lock") => {
            StoreError::InUse {
                path: path.to_owned(),
            }
        }
        sled::Error::Corruption { at, .. } => StoreError::CorruptDatabase {
            path: path.to_owned(),
            detail: match at {
                Some(at) => format!("sled found corruption at {at:?}"),
                None => "sled found corruption".to_owned(),
            },
        },
        source => StoreError::Open {
            path: path.to_owned(),
            source,
        },
    }
}

/// Opens sled itself, turning every failure into an error naming `path`.
pub(super) fn open_db(path: &Path) -> Result<sled::Db, StoreError> {
    let config = sled::Config::new().path(path).cache_capacity(CACHE_BYTES);
    // sled 0.34 can panic on some damaged files instead of returning
    // Corruption; an operator needs an error naming the file, not a crash.
    match catch_unwind(AssertUnwindSafe(|| config.open())) {
        Ok(Ok(db)) => Ok(db),
        Ok(Err(source)) => Err(classify_open_error(path, source)),
        Err(panic) => {
            let detail = panic
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| panic.downcast_ref::<&str>().map(|s| (*s).to_owned()))
                .unwrap_or_else(|| "sled panicked while recovering".to_owned());
            Err(StoreError::CorruptDatabase {
                path: path.to_owned(),
                detail,
            })
        }
    }
}

/// Checks the format marker of an existing database, or writes (and
/// flushes) it into a new one.
pub(super) fn check_format(
    path: &Path,
    db: &sled::Db,
    meta: &Tree,
    existed: bool,
) -> Result<(), StoreError> {
    let corrupt = |detail: String| StoreError::CorruptDatabase {
        path: path.to_owned(),
        detail,
    };
    let marker = meta
        .get(FORMAT_KEY)
        .map_err(|source| classify_open_error(path, source))?;
    match marker {
        Some(format) if format == FORMAT => Ok(()),
        Some(other) => Err(corrupt(format!(
            "written in format {:?}, this version reads {:?}",
            String::from_utf8_lossy(&other),
            String::from_utf8_lossy(FORMAT)
        ))),
        None if existed => Err(corrupt(
            "sled recovered no data from the existing files: its log is damaged, \
             truncated or missing"
                .to_owned(),
        )),
        None => {
            // Durable at once: a crash before the first flush would
            // otherwise look like a damaged database at the next start.
            meta.insert(FORMAT_KEY, FORMAT)
                .and_then(|_| db.flush())
                .map_err(|source| classify_open_error(path, source))?;
            Ok(())
        }
    }
}

/// A non-empty directory without sled's files is somebody else's data (a
/// mistyped `[store] path`); sled would quietly start a new database in it.
pub(super) fn refuse_foreign_directory(path: &Path) -> Result<(), StoreError> {
    let Ok(mut entries) = std::fs::read_dir(path) else {
        return Ok(()); // Missing (sled creates it) or not a directory (sled reports it).
    };
    let non_empty = entries.next().is_some();
    if non_empty && !path.join("conf").exists() && !path.join("db").exists() {
        return Err(StoreError::CorruptDatabase {
            path: path.to_owned(),
            detail: "the directory holds files but no sled database".to_owned(),
        });
    }
    Ok(())
}

//! What only the embedded store has: its file lock, its group-commit flush,
//! and the refusal of a damaged or foreign database directory.

use super::*;

#[test]
fn a_second_open_reports_database_in_use() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("db");
    let _first = SledStore::open(&path).unwrap();
    let error = match SledStore::open(&path) {
        Err(error) => error,
        Ok(_) => panic!("opened a locked database"),
    };
    let message = error.to_string();
    assert!(matches!(error, StoreError::InUse { .. }), "{message}");
    assert!(message.contains("database in use"), "{message}");
    assert!(message.contains(&path.display().to_string()), "{message}");
}

#[tokio::test]
async fn flushed_writes_survive_reopening() {
    let dir = tempfile::tempdir().unwrap();
    // The parent directory does not exist yet.
    let path = dir.path().join("nested").join("db");
    {
        let store = SledStore::open(&path).unwrap();
        store.create_user(&user("u1", "a@x.io")).unwrap();
        let store = Arc::new(store);
        let flushes: Vec<_> = (0..20)
            .map(|_| {
                let store = Arc::clone(&store);
                tokio::spawn(async move { store.flush().await })
            })
            .collect();
        for flush in flushes {
            flush.await.unwrap().unwrap();
        }
    }
    let store = super::reopen_sled(&path);
    assert_eq!(store.user_by_email("a@x.io").unwrap().unwrap().id, "u1");
}

/// Damage that sled 0.34 itself would recover from as an empty database.
fn assert_refused_after(damage: impl Fn(&std::path::Path)) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("db");
    {
        let store = SledStore::open(&path).unwrap();
        store.create_user(&user("u1", "a@x.io")).unwrap();
    }
    damage(&path);
    match SledStore::open(&path) {
        Err(error @ StoreError::CorruptDatabase { .. }) => {
            let message = error.to_string();
            assert!(message.contains(&path.display().to_string()), "{message}");
        }
        Err(other) => panic!("unexpected error: {other}"),
        Ok(_) => panic!("opened a corrupt database"),
    }
}

#[test]
fn a_corrupt_database_is_refused_with_its_path() {
    assert_refused_after(|path| {
        let data = path.join("db");
        let mut garbage = vec![0xA5u8; 4096];
        garbage.extend_from_slice(&std::fs::read(&data).unwrap());
        std::fs::write(&data, garbage).unwrap();
    });
    assert_refused_after(|path| {
        let data = std::fs::OpenOptions::new()
            .write(true)
            .open(path.join("db"))
            .unwrap();
        data.set_len(0).unwrap();
    });
    assert_refused_after(|path| std::fs::remove_file(path.join("db")).unwrap());
}

#[test]
fn a_foreign_directory_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("notes.txt"), b"not a database").unwrap();
    assert!(matches!(
        SledStore::open(dir.path()),
        Err(StoreError::CorruptDatabase { .. })
    ));
}

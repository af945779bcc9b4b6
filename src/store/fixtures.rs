//! Helpers shared by the store's unit tests: a fresh SQLite file per test and row defaults.

use super::RowDefaults;

pub fn temp_url(name: &str) -> (std::path::PathBuf, String) {
    let dir = std::env::temp_dir().join(format!("uacreg-store-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let url = format!("sqlite://{}", dir.join("sub/uacreg.db").display());
    (dir, url)
}

pub fn defaults() -> RowDefaults {
    RowDefaults {
        contact_addr: "127.0.0.1:5062".into(),
        sockets: Vec::new(),
    }
}

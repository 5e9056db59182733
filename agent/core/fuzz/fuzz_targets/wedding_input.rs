//! Fuzzes the wedding inputs a caller controls: an API body (`POST /v1/weddings`, JSON) and a
//! calendar file (TOML). Any input is a wedding that holds the engine's rules (its window is
//! finite and ordered, its identifiers cannot forge a log line) or is refused with a reason;
//! nothing panics, and the engine takes every accepted wedding.
#![no_main]

use libfuzzer_sys::fuzz_target;
use wedsync_agent::calendar::{WeddingInput, load_file};
use wedsync_core::engine::{Engine, EngineSettings};

fuzz_target!(|data: &[u8]| {
    if let Ok(input) = serde_json::from_slice::<WeddingInput>(data)
        && let Ok(wedding) = input.into_wedding()
    {
        assert!(wedding.end_unix_ms > wedding.start_unix_ms, "{wedding:?}");
        assert!(!wedding.id.contains(['\n', '\r']), "{wedding:?}");
        let mut engine = Engine::new(EngineSettings::default(), Vec::new());
        assert!(engine.handle_wedding_upsert(wedding).is_ok());
    }
    let dir = std::env::temp_dir().join(format!("wedsync-fuzz-calendar-{}", std::process::id()));
    let _ = std::fs::create_dir_all(&dir);
    let path = dir.join("calendar.toml");
    if std::fs::write(&path, data).is_ok() {
        let _ = load_file(&path);
    }
});

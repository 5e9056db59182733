//! Fuzzes the agent's configuration file as `config check` reads it: any text is a valid
//! configuration or a list of field errors, never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let dir = std::env::temp_dir().join(format!("wedsync-fuzz-config-{}", std::process::id()));
    let _ = std::fs::create_dir_all(&dir);
    let path = dir.join("agent.toml");
    if std::fs::write(&path, data).is_ok() {
        let _ = wedsync_agent::config::check_file(&path, Some(std::collections::HashMap::new()));
    }
});

//! The embedded guests are valid components of plausible sizes with the imports they claim.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use wasmparser::{ComponentTypeRef, Parser, Payload, Validator, WasmFeatures};
use wedsync_test_guests::*;

/// The policy world's own imports: the log, and the types interface its functions use.
const POLICY_IMPORTS: [&str; 2] = ["wedsync:policy/log@0.1.0", "wedsync:policy/types@0.1.0"];

const PREAMBLE: [u8; 8] = [0x00, 0x61, 0x73, 0x6d, 0x0d, 0x00, 0x01, 0x00];

/// Top-level import names of a component.
fn imports(bytes: &[u8]) -> Vec<String> {
    let mut imports = Vec::new();
    let mut depth = 0i32;
    for payload in Parser::new(0).parse_all(bytes) {
        match payload.unwrap() {
            Payload::ModuleSection { .. } | Payload::ComponentSection { .. } => depth += 1,
            Payload::End(_) => depth -= 1,
            Payload::ComponentImportSection(reader) if depth == 0 => {
                // Type imports (the world's `use types.{…}`) are not capabilities; instances and
                // functions are.
                for import in reader {
                    let import = import.unwrap();
                    if !matches!(import.ty, ComponentTypeRef::Type(_)) {
                        imports.push(import.name.name.to_owned());
                    }
                }
            }
            _ => {}
        }
    }
    imports
}

#[test]
fn every_guest_is_a_valid_component() {
    for (name, bytes) in ALL {
        assert!(bytes.starts_with(&PREAMBLE), "{name} is not a component: {:02x?}", &bytes[..8.min(bytes.len())]);
        assert!(bytes.len() > 1_000 && bytes.len() < 1_000_000, "{name}: {} bytes", bytes.len());
        Validator::new_with_features(WasmFeatures::all())
            .validate_all(bytes)
            .unwrap_or_else(|e| panic!("{name} does not validate: {e}"));
    }
}

#[test]
fn only_extra_import_imports_something_else() {
    for (name, bytes) in ALL {
        let imports = imports(bytes);
        let foreign: Vec<&String> =
            imports.iter().filter(|i| !i.starts_with("wasi:") && !POLICY_IMPORTS.contains(&i.as_str())).collect();
        if *name == "extra-import" {
            assert_eq!(foreign, ["wedsync:evil/net"], "{imports:?}");
        } else {
            assert!(foreign.is_empty(), "{name} imports {foreign:?}");
        }
    }
}

#[test]
fn large_is_about_200_kb_and_bigger_than_empty() {
    assert!((150_000..=300_000).contains(&LARGE.len()), "LARGE is {} bytes", LARGE.len());
    assert!(EMPTY.len() < LARGE.len() / 2);
}

#[test]
fn versions_differ_and_messages_match() {
    assert_ne!(VERSION_A, VERSION_B);
    for (bytes, version) in [(VERSION_A, b"1.0.0"), (VERSION_B, b"2.0.0")] {
        assert!(bytes.windows(5).any(|w| w == version));
    }
    let message = FAILS_CONFIGURE_MESSAGE.as_bytes();
    assert!(FAILS_CONFIGURE.windows(message.len()).any(|w| w == message));
}

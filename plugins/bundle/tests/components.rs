//! The embedded components are valid WASI 0.2 components that export the policy world and import
//! nothing but the log and WASI.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use wasmparser::{ComponentTypeRef, Parser, Payload, Validator, WasmFeatures};
use wedsync_plugins::{BUNDLED, find};

/// The policy world's own imports: the log, and the types interface its functions use.
const POLICY_IMPORTS: [&str; 2] = ["wedsync:policy/log@0.1.0", "wedsync:policy/types@0.1.0"];

const PREAMBLE: [u8; 8] = [0x00, 0x61, 0x73, 0x6d, 0x0d, 0x00, 0x01, 0x00];

/// Top-level (import names, export names) of a component.
fn interface(bytes: &[u8]) -> (Vec<String>, Vec<String>) {
    let (mut imports, mut exports) = (Vec::new(), Vec::new());
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
            Payload::ComponentExportSection(reader) if depth == 0 => {
                for export in reader {
                    exports.push(export.unwrap().name.name.to_owned());
                }
            }
            _ => {}
        }
    }
    (imports, exports)
}

#[test]
fn bundled_plugins_are_components_of_sane_size() {
    assert_eq!(BUNDLED.len(), 4);
    for plugin in BUNDLED {
        assert!(plugin.wasm.starts_with(&PREAMBLE), "{}: {:02x?}", plugin.name, &plugin.wasm[..8]);
        assert!((10_000..2_000_000).contains(&plugin.wasm.len()), "{}: {} bytes", plugin.name, plugin.wasm.len());
        // Its name is in its data (describe() returns it): the bytes really are that plugin.
        let name = plugin.name.as_bytes();
        assert!(plugin.wasm.windows(name.len()).any(|w| w == name), "{} not found in its component", plugin.name);
    }
}

#[test]
fn bundled_plugins_validate_and_export_the_policy_world() {
    for plugin in BUNDLED {
        Validator::new_with_features(WasmFeatures::all())
            .validate_all(plugin.wasm)
            .unwrap_or_else(|e| panic!("{} does not validate: {e}", plugin.name));
        let (imports, exports) = interface(plugin.wasm);
        eprintln!("{} ({} bytes): imports {imports:?}; exports {exports:?}", plugin.name, plugin.wasm.len());
        for func in ["describe", "configure", "decide"] {
            assert!(exports.iter().any(|e| e == func), "{} does not export {func}: {exports:?}", plugin.name);
        }
        assert!(imports.iter().any(|i| i == "wedsync:policy/log@0.1.0"), "{}: {imports:?}", plugin.name);
        for import in &imports {
            assert!(
                import.starts_with("wasi:") || POLICY_IMPORTS.contains(&import.as_str()),
                "{} imports {import}",
                plugin.name
            );
        }
    }
}

#[test]
fn default_order_and_lookup() {
    let names: Vec<&str> = BUNDLED.iter().map(|p| p.name).collect();
    assert_eq!(names, ["wedding-day-guard", "regional-seasons", "data-residency", "cost-guard"]);
    assert_eq!(find("cost-guard").map(|p| p.name), Some("cost-guard"));
    assert!(find("nope").is_none());
}

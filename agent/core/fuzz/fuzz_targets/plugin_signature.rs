//! Fuzzes the plugin signing formats read from a plugins directory and the config: a `.sig`
//! file (v1 or v2 text, or raw bytes), a public key, a secret key. Any input decodes or is refused; a
//! decoded signature never verifies against a key it was not made with.
#![no_main]

use libfuzzer_sys::fuzz_target;
use wedsync_plugin_host::signing;

fuzz_target!(|data: &[u8]| {
    if let Ok(signature) = signing::decode_signature(data) {
        let key = signing::decode_secret_key(
            "wedsync-plugin-key-v1 0101010101010101010101010101010101010101010101010101010101010101",
        )
        .expect("a fixed valid key");
        let digest = signing::sha256(data);
        // Fuzzed bytes forging a signature of themselves under a fixed key: a broken verifier.
        assert!(signing::verify_digest(&[key.verifying_key()], &digest, &signature).is_err());
        let text = signing::encode_signature(&signature);
        assert_eq!(signing::decode_signature(text.as_bytes()).ok().map(|s| s.to_bytes()), Some(signature.to_bytes()));
    }
    if let Ok(file) = signing::decode_signature_file(data) {
        let key = signing::decode_secret_key(
            "wedsync-plugin-key-v1 0101010101010101010101010101010101010101010101010101010101010101",
        )
        .expect("a fixed valid key");
        assert!(signing::verify_file_digest(&[key.verifying_key()], &signing::sha256(data), &file).is_err());
        if let Some(identity) = &file.identity {
            let text = signing::encode_bound_signature(identity, &file.signature);
            assert_eq!(signing::decode_signature_file(text.as_bytes()).ok(), Some(file.clone()));
        }
    }
    let text = String::from_utf8_lossy(data);
    if let Ok(key) = signing::decode_public_key(&text) {
        let again = signing::decode_public_key(&signing::encode_public_key(&key)).ok();
        assert_eq!(again.map(|k| k.to_bytes()), Some(key.to_bytes()));
    }
    let _ = signing::decode_secret_key(&text);
});

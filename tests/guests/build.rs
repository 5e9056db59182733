//! Builds every test guest under `crates/` into a WASI 0.2 component (see `wedsync-guest-build`).

use wedsync_guest_build::{Guest, build_components, fail};

const GUESTS: &[Guest] = &[
    Guest { package: "wedsync-guest-empty", dir: "tests/guests/crates/empty" },
    Guest { package: "wedsync-guest-infinite-loop", dir: "tests/guests/crates/infinite-loop" },
    Guest { package: "wedsync-guest-memory-bomb", dir: "tests/guests/crates/memory-bomb" },
    Guest { package: "wedsync-guest-trap", dir: "tests/guests/crates/trap" },
    Guest { package: "wedsync-guest-panic", dir: "tests/guests/crates/panic" },
    Guest { package: "wedsync-guest-huge-output", dir: "tests/guests/crates/huge-output" },
    Guest { package: "wedsync-guest-extra-import", dir: "tests/guests/crates/extra-import" },
    Guest { package: "wedsync-guest-large", dir: "tests/guests/crates/large" },
    Guest { package: "wedsync-guest-fails-configure", dir: "tests/guests/crates/fails-configure" },
    Guest { package: "wedsync-guest-version-a", dir: "tests/guests/crates/version-a" },
    Guest { package: "wedsync-guest-version-b", dir: "tests/guests/crates/version-b" },
];

fn main() {
    if let Err(message) = build_components(GUESTS) {
        fail(&message);
    }
}

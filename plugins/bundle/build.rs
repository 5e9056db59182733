//! Builds the four bundled policy plugins into WASI 0.2 components (see `wedsync-guest-build`).

use wedsync_guest_build::{Guest, build_components, fail};

const PLUGINS: &[Guest] = &[
    Guest { package: "wedding-day-guard", dir: "plugins/wedding-day-guard" },
    Guest { package: "regional-seasons", dir: "plugins/regional-seasons" },
    Guest { package: "data-residency", dir: "plugins/data-residency" },
    Guest { package: "cost-guard", dir: "plugins/cost-guard" },
];

fn main() {
    if let Err(message) = build_components(PLUGINS) {
        fail(&message);
    }
}

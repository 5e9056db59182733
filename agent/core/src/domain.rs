//! Words of the domain shared by every part of the agent.

use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;

/// A traffic class, in priority order: `WeddingCritical` is served first and never shed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum TrafficClass {
    /// Active wedding-day operations: timeline, vendor-couple coordination, emergencies.
    WeddingCritical,
    /// Planning work ahead of a wedding.
    WeddingPlanning,
    /// Guest and couple registration.
    Registration,
    /// Photo and video uploads.
    Media,
    /// Analytics and batch work.
    Background,
}

impl TrafficClass {
    /// Every class, highest priority first.
    pub const ALL: [TrafficClass; 5] = [
        TrafficClass::WeddingCritical,
        TrafficClass::WeddingPlanning,
        TrafficClass::Registration,
        TrafficClass::Media,
        TrafficClass::Background,
    ];

    /// The class's name as it appears in tags, config and labels.
    pub const fn as_str(self) -> &'static str {
        match self {
            TrafficClass::WeddingCritical => "wedding-critical",
            TrafficClass::WeddingPlanning => "wedding-planning",
            TrafficClass::Registration => "registration",
            TrafficClass::Media => "media",
            TrafficClass::Background => "background",
        }
    }
}

impl fmt::Display for TrafficClass {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The text was not the name of a traffic class.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "{0:?} is not a traffic class (expected one of wedding-critical, wedding-planning, registration, media, background)"
)]
pub struct UnknownTrafficClass(pub String);

impl FromStr for TrafficClass {
    type Err = UnknownTrafficClass;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        TrafficClass::ALL.into_iter().find(|class| class.as_str() == s).ok_or_else(|| UnknownTrafficClass(s.to_owned()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn class_names_round_trip() {
        for class in TrafficClass::ALL {
            assert_eq!(class.as_str().parse::<TrafficClass>(), Ok(class));
        }
        assert!("critical".parse::<TrafficClass>().is_err());
    }

    #[test]
    fn priority_order_puts_wedding_critical_first() {
        let mut classes = TrafficClass::ALL;
        classes.reverse();
        classes.sort();
        assert_eq!(classes[0], TrafficClass::WeddingCritical);
        assert_eq!(classes[4], TrafficClass::Background);
    }
}

//! Where an API is in its lifecycle, as stored and as the API shows it. What moves an API
//! from one status to another is [`super::lifecycle`]'s.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// Where an API is in its lifecycle.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "UPPERCASE")]
pub enum ApiStatus {
    /// Being designed; not visible to subscribers, cannot be deployed.
    Created,
    /// Visible and subscribable; can be deployed.
    Published,
    /// Still served, but new subscriptions are discouraged.
    Deprecated,
    /// No longer served; may be deleted.
    Retired,
    /// Temporarily not served.
    Blocked,
}

impl ApiStatus {
    /// As stored.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Created => "CREATED",
            Self::Published => "PUBLISHED",
            Self::Deprecated => "DEPRECATED",
            Self::Retired => "RETIRED",
            Self::Blocked => "BLOCKED",
        }
    }

    /// From its stored form.
    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "CREATED" => Some(Self::Created),
            "PUBLISHED" => Some(Self::Published),
            "DEPRECATED" => Some(Self::Deprecated),
            "RETIRED" => Some(Self::Retired),
            "BLOCKED" => Some(Self::Blocked),
            _ => None,
        }
    }

    /// Whether a revision of an API in this status may be deployed.
    pub fn deployable(self) -> bool {
        matches!(self, Self::Published | Self::Deprecated)
    }
}

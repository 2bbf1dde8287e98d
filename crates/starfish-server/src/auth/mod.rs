//! Who is calling: the caller's identity and roles, and the clock auth checks use.

mod clock;

pub use clock::{Clock, ManualClock, SystemClock};

use std::sync::Arc;

/// A caller after authentication: anonymous, or an identity with roles.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Caller {
    identity: Option<Arc<str>>,
    roles: Vec<Arc<str>>,
}

impl Caller {
    /// An anonymous caller; it holds only the `public` role.
    pub fn anonymous() -> Self {
        Self::default()
    }

    /// A caller verified as `identity` holding `roles`.
    pub fn verified(identity: impl Into<Arc<str>>, roles: Vec<Arc<str>>) -> Self {
        Self {
            identity: Some(identity.into()),
            roles,
        }
    }

    /// The bound identity, `None` for anonymous callers.
    pub fn identity(&self) -> Option<&str> {
        self.identity.as_deref()
    }

    /// The roles granted regardless of the collection (`self` is decided per request).
    pub fn roles(&self) -> &[Arc<str>] {
        &self.roles
    }
}

//! The `server: projections:` section: indexes kept as their source collections are
//! written (docs/extensions.md, "Projections"):
//!
//! ```yaml
//! server:
//!   projections:
//!     - source: cards                  # a collection, in every scope that has one
//!       target: boards/{board}/index   # filled from each card's parameters
//!       fields: [title, status]        # copied from each card's data
//!       maxItems: 1000
//! ```

use serde::{Deserialize, Serialize};
use starfish_server::projections::{DEFAULT_MAX_ITEMS, IndexProjection, Projections};
use std::sync::Arc;

/// One projection.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub(crate) struct ProjectionSection {
    source: String,
    target: String,
    #[serde(default)]
    fields: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    max_items: Option<usize>,
}

/// The projections, built.
///
/// # Errors
/// A target that is not a storage path template.
pub(crate) fn build(sections: &[ProjectionSection]) -> Result<Projections, String> {
    let mut projections = Projections::new();
    for (n, p) in sections.iter().enumerate() {
        let index = IndexProjection::new(&p.source, &p.target, p.fields.clone())
            .map_err(|e| format!("server.projections[{n}].target: {e}"))?
            .with_max_items(p.max_items.unwrap_or(DEFAULT_MAX_ITEMS));
        projections = projections.with(Arc::new(index));
    }
    Ok(projections)
}

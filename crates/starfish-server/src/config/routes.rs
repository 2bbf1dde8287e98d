//! The route table of one scope (the root, or one namespace), built once when the
//! config is loaded. Route conflicts and collections that can address the same
//! objects are load errors, so `check-config` finds them without a router.

use super::{Collection, Segment, is_reserved};
use std::collections::HashMap;
use std::sync::Arc;

/// What a matched route leads to.
#[derive(Debug, Clone)]
pub(crate) enum Target {
    /// One document, log or blob of a collection; `member` is a bundle member's name,
    /// appended to the resolved storage path.
    Document {
        collection: Arc<Collection>,
        member: bool,
    },
    /// Every readable member of a bundle, pulled together.
    Bundle(Arc<[Arc<Collection>]>),
    /// Keys under the template without its last segment.
    List(Arc<Collection>),
}

impl Target {
    /// The collection whose template the route's parameters belong to (a bundle's
    /// first readable member: members share the template).
    pub(crate) fn collection(&self) -> Option<&Arc<Collection>> {
        match self {
            Self::Document { collection, .. } | Self::List(collection) => Some(collection),
            Self::Bundle(members) => members.first(),
        }
    }
}

/// The routes of one scope.
#[derive(Debug, Clone, Default)]
pub(crate) struct RouteTable {
    pub(crate) pull: matchit::Router<Target>,
    pub(crate) push: matchit::Router<Target>,
    pub(crate) list: matchit::Router<Target>,
    /// Collections by name, for batch pulls.
    pub(crate) by_name: HashMap<String, Arc<Collection>>,
    /// Collections in config order.
    pub(crate) ordered: Vec<Arc<Collection>>,
}

/// The key template of a collection: its storage path, plus the member name for a
/// bundle member.
fn key_segments(c: &Collection) -> Vec<Segment> {
    let mut segments = c.storage_path.segments().to_vec();
    if c.bundle.is_some() {
        segments.push(Segment::Static(c.name.to_string()));
    }
    segments
}

/// True when some parameter values make both key templates the same key. A
/// parameter never takes a reserved name (`_keyring`), so it cannot meet one.
pub(crate) fn segments_overlap(a: &[Segment], b: &[Segment]) -> bool {
    a.len() == b.len()
        && a.iter().zip(b).all(|pair| match pair {
            (Segment::Static(x), Segment::Static(y)) => x == y,
            (Segment::Static(s), Segment::Param(_)) | (Segment::Param(_), Segment::Static(s)) => {
                !is_reserved(s)
            }
            (Segment::Param(_), Segment::Param(_)) => true,
        })
}

/// True when the two collections' templates can resolve to the same object key.
pub(crate) fn keys_overlap(a: &Collection, b: &Collection) -> bool {
    segments_overlap(&key_segments(a), &key_segments(b))
}

impl RouteTable {
    /// Builds the table of one scope; `label` prefixes error messages (`""` at the root).
    ///
    /// # Errors
    /// One message per conflicting route or overlapping pair of collections.
    pub(crate) fn build(collections: &[Arc<Collection>], label: &str) -> Result<Self, Vec<String>> {
        let mut table = Self::default();
        let mut errors = overlap_errors(collections, label);
        let mut insert = |router: &mut matchit::Router<Target>, pattern: String, target: Target| {
            let Some(c) = target.collection().cloned() else {
                return;
            };
            if let Err(e) = router.insert(pattern, target) {
                errors.push(format!(
                    "{label}Collection \"{}\": storagePath \"{}\" conflicts with another route ({e})",
                    c.name, c.storage_path
                ));
            }
        };
        let mut bundles: Vec<(&str, Vec<Arc<Collection>>)> = Vec::new();
        for c in collections {
            table.by_name.insert(c.name.to_string(), c.clone());
            table.ordered.push(c.clone());
            let pattern = c.storage_path.route_pattern();
            let document = || Target::Document {
                collection: c.clone(),
                member: c.bundle.is_some(),
            };
            if let Some(bundle) = &c.bundle {
                match bundles.iter_mut().find(|(b, _)| b == bundle) {
                    Some((_, members)) => members.push(c.clone()),
                    None => bundles.push((bundle, vec![c.clone()])),
                }
                if !c.pull_only {
                    insert(&mut table.push, format!("{pattern}/{}", c.name), document());
                }
            } else {
                if !c.push_only {
                    insert(&mut table.pull, pattern.clone(), document());
                }
                if !c.pull_only {
                    insert(&mut table.push, pattern, document());
                }
            }
            if c.listable {
                let parent = c.storage_path.parent_route_pattern();
                insert(&mut table.list, parent, Target::List(c.clone()));
            }
        }
        for (_, members) in bundles {
            let pattern = members[0].storage_path.route_pattern();
            let readable: Arc<[Arc<Collection>]> =
                members.into_iter().filter(|m| !m.push_only).collect();
            insert(&mut table.pull, pattern, Target::Bundle(readable));
        }
        if errors.is_empty() {
            Ok(table)
        } else {
            Err(errors)
        }
    }
}

/// Two collections of one scope whose keys can coincide would share documents under
/// different roles, and a parameter value could pick the other one's key.
fn overlap_errors(collections: &[Arc<Collection>], label: &str) -> Vec<String> {
    let mut errors = Vec::new();
    for (i, a) in collections.iter().enumerate() {
        for b in &collections[i + 1..] {
            if keys_overlap(a, b) {
                errors.push(format!(
                    "{label}Collection \"{}\" and collection \"{}\" can address the same objects (\"{}\" / \"{}\")",
                    a.name, b.name, a.storage_path, b.storage_path
                ));
            }
        }
    }
    errors
}

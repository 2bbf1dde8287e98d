//! Routing: a request path becomes one typed [`Endpoint`] carrying its scope and the
//! resolved, checked object key(s). Paths are percent-decoded segment by segment
//! before they are matched, so an escape selects exactly the template its decoded
//! value would; no string path travels past this module.

use crate::config::{Collection, Target};
use crate::routes::error::ApiError;
use crate::store::{KeyError, ObjectKey, PathParams};
use crate::sync::DocRef;
use crate::tenants::Scope;
use crate::util::text::{has_ascii, split_ascii};
use axum::http::Method;
use percent_encoding::percent_decode_str;
use std::borrow::Cow;
use std::sync::Arc;

/// Most path segments a request may have (templates are far shorter); past it the
/// path is not decoded at all.
const MAX_SEGMENTS: usize = 64;

/// One object of a collection, its key resolved and checked.
#[derive(Debug)]
pub(crate) struct Doc {
    pub(crate) collection: Arc<Collection>,
    pub(crate) key: ObjectKey,
    pub(crate) params: PathParams,
}

impl Doc {
    /// The borrowed form the sync core takes.
    pub(crate) fn as_ref(&self) -> DocRef<'_> {
        DocRef {
            collection: &self.collection,
            key: &self.key,
            params: &self.params,
        }
    }

    /// Resolves `collection`'s key (its first `segments` segments, plus the member
    /// name of a bundle member) from checked `params`.
    pub(crate) fn resolve(
        collection: &Arc<Collection>,
        segments: usize,
        params: &PathParams,
        member: bool,
    ) -> Result<Self, KeyError> {
        let suffix = member.then(|| collection.name.as_str());
        let key = ObjectKey::resolve(&collection.storage_path, segments, params, suffix)?;
        Ok(Self {
            collection: collection.clone(),
            key,
            params: params.clone(),
        })
    }
}

/// What a request asks for.
#[derive(Debug)]
pub(crate) enum Endpoint<'s> {
    /// `GET /[ns/]pull/<path>`: a document, a log or a blob.
    Pull(&'s Scope, Doc),
    /// `POST /[ns/]push/<path>`: a document, an append or a blob.
    Push(&'s Scope, Doc),
    /// `GET /[ns/]pull/<bundle path>`: every readable member.
    Bundle(&'s Scope, Vec<Doc>),
    /// `GET /[ns/]list/<prefix>`: the key is the prefix.
    List(&'s Scope, Doc),
    /// `GET /[ns/]batch/pull`: entries come from the query.
    Batch(&'s Scope),
    /// `GET /<ns>/config`: one namespace's collections (the root's is its own route).
    Config(&'s Scope),
    /// `GET /[ns/]events?paths=…`: live changes (crate::live).
    Events(&'s Scope),
}

impl Endpoint<'_> {
    /// The scope the request was routed to.
    pub(crate) fn scope(&self) -> &Scope {
        match self {
            Self::Pull(s, _)
            | Self::Push(s, _)
            | Self::Bundle(s, _)
            | Self::List(s, _)
            | Self::Batch(s)
            | Self::Config(s)
            | Self::Events(s) => s,
        }
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Verb {
    Pull,
    Push,
    List,
}

impl Verb {
    fn parse(segment: &str) -> Option<Self> {
        match segment {
            "pull" => Some(Self::Pull),
            "push" => Some(Self::Push),
            "list" => Some(Self::List),
            _ => None,
        }
    }
}

/// A path's segments: on the stack up to eight (every route of a sane config).
type Segments<'a> = smallvec::SmallVec<[Cow<'a, str>; 8]>;

/// Percent-decodes each segment of `path` (a malformed escape is left raw and later
/// fails the parameter rule). A decoded `/` can never be part of a parameter.
fn decode_segments(path: &str) -> Result<Segments<'_>, ApiError> {
    let path = path.strip_prefix('/').ok_or(ApiError::NotFound)?;
    if path.bytes().filter(|b| *b == b'/').count() >= MAX_SEGMENTS {
        return Err(ApiError::NotFound);
    }
    let mut segments = Segments::new();
    for raw in split_ascii(path, b'/') {
        // Only an escape can decode to anything but the segment itself.
        if !has_ascii(raw, b'%') {
            segments.push(Cow::Borrowed(raw));
            continue;
        }
        let decoded = percent_decode_str(raw)
            .decode_utf8()
            .unwrap_or(Cow::Borrowed(raw));
        if has_ascii(&decoded, b'/') {
            return Err(ApiError::InvalidPathParameter);
        }
        segments.push(decoded);
    }
    Ok(segments)
}

/// The namespace a path names, if its first segment is not one of the root's own
/// routes (decoded as [`Endpoint::parse`] decodes it).
pub(crate) fn namespace_segment(path: &str) -> Option<Cow<'_, str>> {
    let mut segments = split_ascii(path.strip_prefix('/')?, b'/');
    let first = segments.next()?;
    let decoded = percent_decode_str(first).decode_utf8().ok()?;
    // `/events` alone is the root's live changes; `/events/…` a namespace's routes.
    let root_events = decoded == EVENTS && segments.next().is_none();
    (decoded != "batch" && Verb::parse(&decoded).is_none() && !root_events).then_some(decoded)
}

/// The live-changes route's segment.
const EVENTS: &str = "events";

impl<'s> Endpoint<'s> {
    /// Parses a request. `namespace` finds a namespace's scope by name.
    ///
    /// # Errors
    /// `404` for no route (or the wrong method), `400 Invalid path parameter` for a
    /// parameter or key that breaks the rules.
    pub(crate) fn parse(
        root: &'s Scope,
        namespace: impl Fn(&str) -> Option<&'s Scope>,
        method: &Method,
        path: &str,
    ) -> Result<Self, ApiError> {
        let segments = decode_segments(path)?;
        let (scope, rest) = match segments.first().map(Cow::as_ref) {
            Some(first)
                if first == "batch"
                    || Verb::parse(first).is_some()
                    || (first == EVENTS && segments.len() == 1) =>
            {
                (root, &segments[..])
            }
            Some(first) => (namespace(first).ok_or(ApiError::NotFound)?, &segments[1..]),
            None => return Err(ApiError::NotFound),
        };
        if let Some(fixed) = Self::fixed(scope, rest, method) {
            return Ok(fixed);
        }
        let (verb, rest) = rest
            .split_first()
            .and_then(|(v, rest)| Some((Verb::parse(v)?, rest)))
            .ok_or(ApiError::NotFound)?;
        let expected = if verb == Verb::Push {
            Method::POST
        } else {
            Method::GET
        };
        if *method != expected || rest.is_empty() {
            return Err(ApiError::NotFound);
        }
        let table = match verb {
            Verb::Pull => &scope.routes.pull,
            Verb::Push => &scope.routes.push,
            Verb::List => &scope.routes.list,
        };
        let route = route_tail(path, &segments, rest);
        let matched = table.at(&route).map_err(|_| ApiError::NotFound)?;
        let params = PathParams::checked(
            matched
                .params
                .iter()
                .map(|(name, value)| (name, value.to_owned())),
        )
        .map_err(|_| ApiError::InvalidPathParameter)?;
        Self::of_target(scope, verb, matched.value, &params)
    }

    /// The routes that are not a collection's: a namespace's `config`, `events`,
    /// and `batch/pull`.
    fn fixed(scope: &'s Scope, rest: &[Cow<'_, str>], method: &Method) -> Option<Self> {
        if *method != Method::GET {
            return None;
        }
        match rest {
            [config] if config == "config" && scope.namespace.is_some() => {
                Some(Self::Config(scope))
            }
            [events] if events == EVENTS => Some(Self::Events(scope)),
            [batch, pull] if batch == "batch" && pull == "pull" => Some(Self::Batch(scope)),
            _ => None,
        }
    }

    /// The endpoint of a matched route: its documents' keys resolved from `params`.
    fn of_target(
        scope: &'s Scope,
        verb: Verb,
        target: &Target,
        params: &PathParams,
    ) -> Result<Self, ApiError> {
        let invalid = |_: KeyError| ApiError::InvalidPathParameter;
        Ok(match (verb, target) {
            (Verb::List, Target::List(c)) => {
                let parent = c.storage_path.segments().len() - 1;
                Self::List(
                    scope,
                    Doc::resolve(c, parent, params, false).map_err(invalid)?,
                )
            }
            (_, Target::Bundle(members)) => {
                let docs = members
                    .iter()
                    .map(|m| Doc::resolve(m, m.storage_path.segments().len(), params, true))
                    .collect::<Result<_, _>>()
                    .map_err(invalid)?;
                Self::Bundle(scope, docs)
            }
            (_, Target::Document { collection, member }) => {
                let n = collection.storage_path.segments().len();
                let doc = Doc::resolve(collection, n, params, *member).map_err(invalid)?;
                if verb == Verb::Push {
                    Self::Push(scope, doc)
                } else {
                    Self::Pull(scope, doc)
                }
            }
            (_, Target::List(_)) => return Err(ApiError::NotFound),
        })
    }
}

/// The rest of the path (its last `rest.len()` decoded segments) as the route
/// table matches it: the path's own tail unless a segment of it was decoded.
fn route_tail<'p>(path: &'p str, segments: &[Cow<'_, str>], rest: &[Cow<'_, str>]) -> Cow<'p, str> {
    let skipped = segments.len() - rest.len();
    let slash = path
        .bytes()
        .enumerate()
        .filter(|(_, b)| *b == b'/')
        .nth(skipped);
    match slash {
        Some((at, _)) if rest.iter().all(|s| matches!(s, Cow::Borrowed(_))) => {
            Cow::Borrowed(&path[at..])
        }
        _ => {
            let mut route = String::with_capacity(path.len());
            for segment in rest {
                route.push('/');
                route.push_str(segment);
            }
            Cow::Owned(route)
        }
    }
}

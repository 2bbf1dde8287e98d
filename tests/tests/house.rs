//! The house rules a newcomer relies on when reading the workspace, checked on its own
//! sources (every crate under `crates/`, `examples/` and `tests/chaos`):
//!
//! - no function outside tests is longer than [`MAX_FN_LINES`] lines;
//! - no modules of a crate form a circle, neither its top-level modules nor the
//!   submodules inside one top-level module;
//! - the wire format (`starfish-protocol`) depends on no runtime, HTTP or store crate.
//!
//! The checker reads each crate from its roots (`src/lib.rs`, `src/main.rs`,
//! `src/bin/*.rs`) along its `mod` declarations, so it knows which files are test
//! modules (`#[cfg(test)] mod tests;`) and where each file sits in the module tree.
//! Test code is never measured: a `#[cfg(test)]` module or item, and a `#[test]` (or
//! `#[tokio::test]`) function, are skipped with everything inside them.
//!
//! **Function length** is counted from the line of the `fn` keyword to the line of the
//! function's closing brace, both included: attributes and doc comments above the
//! signature do not count. Free functions, methods, trait default methods and functions
//! nested in other functions are measured; closures are not functions and are part of
//! the function around them.
//!
//! **The module graph** has one node per module written in a file of its own (inline
//! modules belong to the file they are written in), named by its path from the crate
//! root and collapsed to its first two segments: `routes`, `routes::pull`,
//! `tenants::admin`. An edge `a -> b` is a reference written in `a`'s non-test code to
//! an item of `b`: a `use` of `crate::…`, `super::…`, `self::…` or a child module, or a
//! path of that kind anywhere in the code (types, calls, patterns, macros). Paths are
//! resolved by name to the longest module they name, without following re-exports.
//! Two graphs are checked for circles:
//!
//! - between the crate's top-level modules (each with all its submodules), and
//! - between the submodules of one top-level module (`routes::pull`, `routes::push`).
//!
//! A parent module's own file (the crate root, a `mod.rs`) is not a node of the graph
//! it is the parent of: it declares its children and hands out their work, and they
//! use what it declares, which is the tree a reader expects rather than a circle.
//! References between a module and its own parent are therefore not edges.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::path::{Path, PathBuf};

use syn::punctuated::Punctuated;
use syn::visit::{self, Visit};
use syn::{Attribute, Block, ImplItem, Item, Meta, Signature, TraitItem, UseTree};

/// The longest a function outside tests may be, in lines.
const MAX_FN_LINES: usize = 80;

/// A module's path from its crate root (`["routes", "pull"]`); the root is empty.
type ModPath = Vec<String>;

// ---------------------------------------------------------------------------------------
// Reading crates
// ---------------------------------------------------------------------------------------

/// One file of a crate, parsed, and the module it is.
struct ModuleFile {
    /// The file's path, relative to the repository root.
    path: String,
    /// The module the file is, from the crate root.
    module: ModPath,
    /// The file's syntax tree.
    syntax: syn::File,
}

/// A crate read from its root file along its non-test `mod` declarations.
struct LoadedCrate {
    /// The root file (`crates/x/src/lib.rs`), naming the crate in reports.
    root: String,
    /// Every non-test file of the crate.
    files: Vec<ModuleFile>,
    /// Every non-test module of the crate (inline ones included, the root as `[]`),
    /// with the module of the file it is written in.
    modules: BTreeMap<ModPath, ModPath>,
    /// Files and directories of `#[cfg(test)]` modules, which are not read.
    test_paths: Vec<String>,
}

/// Where `mod` declarations are being read: which file, which module, and the
/// directory where the files of its child modules are.
#[derive(Clone)]
struct Place {
    /// The module the declarations are in (inline modules included).
    module: ModPath,
    /// The module of the file the declarations are written in.
    file_module: ModPath,
    /// The directory holding the files of the module's children.
    child_dir: String,
}

/// Reads the crate whose root file is `root` from `sources` (paths relative to the
/// repository root, with `/`). Fails on a file that does not parse and on a `mod x;`
/// without a file.
fn load_crate(root: &str, sources: &BTreeMap<String, String>) -> Result<LoadedCrate, String> {
    let mut loaded = LoadedCrate {
        root: root.to_owned(),
        files: Vec::new(),
        modules: BTreeMap::from([(ModPath::new(), ModPath::new())]),
        test_paths: Vec::new(),
    };
    let root_place = Place {
        module: vec![],
        file_module: vec![],
        child_dir: parent_dir(root),
    };
    let mut queue = VecDeque::from([(root.to_owned(), root_place)]);
    while let Some((path, place)) = queue.pop_front() {
        let source = sources
            .get(&path)
            .ok_or_else(|| format!("{path}: not found"))?;
        let syntax = syn::parse_file(source).map_err(|error| {
            let at = error.span().start();
            format!(
                "{path}:{}:{}: does not parse: {error}",
                at.line,
                at.column + 1
            )
        })?;
        declare_modules(&syntax.items, &place, sources, &mut loaded, &mut queue)?;
        loaded.files.push(ModuleFile {
            path,
            module: place.module,
            syntax,
        });
    }
    Ok(loaded)
}

/// Records the modules declared in `items` (at `place`), queueing the files of `mod x;`
/// declarations and skipping `#[cfg(test)]` modules.
fn declare_modules(
    items: &[Item],
    place: &Place,
    sources: &BTreeMap<String, String>,
    loaded: &mut LoadedCrate,
    queue: &mut VecDeque<(String, Place)>,
) -> Result<(), String> {
    for item in items {
        let Item::Mod(declared) = item else { continue };
        let name = ident_name(&declared.ident);
        let mut module = place.module.clone();
        module.push(name.clone());
        let child_dir = format!("{}/{name}", place.child_dir);
        if is_test_code(&declared.attrs) {
            loaded.test_paths.push(format!("{child_dir}.rs"));
            loaded.test_paths.push(format!("{child_dir}/"));
            continue;
        }
        match &declared.content {
            Some((_, inner)) => {
                loaded
                    .modules
                    .insert(module.clone(), place.file_module.clone());
                let inline = Place {
                    module,
                    file_module: place.file_module.clone(),
                    child_dir,
                };
                declare_modules(inner, &inline, sources, loaded, queue)?;
            }
            None => {
                let file = module_file(&child_dir, sources).ok_or_else(|| {
                    format!("{}: `mod {name};` has no file {child_dir}.rs", loaded.root)
                })?;
                let child_dir = if file.ends_with("/mod.rs") {
                    parent_dir(&file)
                } else {
                    child_dir
                };
                loaded.modules.insert(module.clone(), module.clone());
                queue.push_back((
                    file,
                    Place {
                        module: module.clone(),
                        file_module: module,
                        child_dir,
                    },
                ));
            }
        }
    }
    Ok(())
}

/// The file of the module whose files would be `stem.rs` or `stem/mod.rs`.
fn module_file(stem: &str, sources: &BTreeMap<String, String>) -> Option<String> {
    [format!("{stem}.rs"), format!("{stem}/mod.rs")]
        .into_iter()
        .find(|file| sources.contains_key(file))
}

/// `a/b/c.rs` -> `a/b`.
fn parent_dir(path: &str) -> String {
    path.rsplit_once('/')
        .map_or_else(String::new, |(dir, _)| dir.to_owned())
}

/// An identifier as written, without `r#`.
fn ident_name(ident: &syn::Ident) -> String {
    let name = ident.to_string();
    name.strip_prefix("r#").map_or(name.clone(), str::to_owned)
}

/// Whether these attributes make an item test code: `#[test]`, `#[tokio::test]`, or a
/// `#[cfg(...)]` that holds only when testing.
fn is_test_code(attrs: &[Attribute]) -> bool {
    attrs.iter().any(|attr| {
        let path = attr.path();
        if path
            .segments
            .last()
            .is_some_and(|segment| segment.ident == "test")
        {
            return true;
        }
        path.is_ident("cfg")
            && attr
                .parse_args::<Meta>()
                .is_ok_and(|cfg| cfg_needs_test(&cfg))
    })
}

/// Whether a `cfg` predicate can hold only when testing: `test`, `all(.., test, ..)`,
/// or `any(..)` of such predicates.
fn cfg_needs_test(cfg: &Meta) -> bool {
    match cfg {
        Meta::Path(path) => path.is_ident("test"),
        Meta::List(list) => {
            let Ok(inner) =
                list.parse_args_with(Punctuated::<Meta, syn::Token![,]>::parse_terminated)
            else {
                return false;
            };
            if list.path.is_ident("all") {
                inner.iter().any(cfg_needs_test)
            } else if list.path.is_ident("any") {
                !inner.is_empty() && inner.iter().all(cfg_needs_test)
            } else {
                false
            }
        }
        Meta::NameValue(_) => false,
    }
}

/// The attributes of an item, for the kinds that can hold functions or paths.
fn item_attrs(item: &Item) -> &[Attribute] {
    match item {
        Item::Const(item) => &item.attrs,
        Item::Enum(item) => &item.attrs,
        Item::Fn(item) => &item.attrs,
        Item::Impl(item) => &item.attrs,
        Item::Macro(item) => &item.attrs,
        Item::Mod(item) => &item.attrs,
        Item::Static(item) => &item.attrs,
        Item::Struct(item) => &item.attrs,
        Item::Trait(item) => &item.attrs,
        Item::Type(item) => &item.attrs,
        Item::Union(item) => &item.attrs,
        Item::Use(item) => &item.attrs,
        _ => &[],
    }
}

/// The attributes of an item of an `impl` block.
fn impl_item_attrs(item: &ImplItem) -> &[Attribute] {
    match item {
        ImplItem::Const(item) => &item.attrs,
        ImplItem::Fn(item) => &item.attrs,
        ImplItem::Type(item) => &item.attrs,
        ImplItem::Macro(item) => &item.attrs,
        _ => &[],
    }
}

/// The attributes of an item of a trait.
fn trait_item_attrs(item: &TraitItem) -> &[Attribute] {
    match item {
        TraitItem::Const(item) => &item.attrs,
        TraitItem::Fn(item) => &item.attrs,
        TraitItem::Type(item) => &item.attrs,
        TraitItem::Macro(item) => &item.attrs,
        _ => &[],
    }
}

// ---------------------------------------------------------------------------------------
// Long functions
// ---------------------------------------------------------------------------------------

/// A function longer than the house allows.
#[derive(Debug, PartialEq)]
struct LongFn {
    /// `path:line` of the `fn` keyword.
    at: String,
    /// `Type::method`, `function`, or `outer::nested`.
    name: String,
    /// Lines from the `fn` keyword to the closing brace.
    lines: usize,
}

/// Walks one file's syntax tree for functions longer than [`MAX_FN_LINES`], skipping
/// test code.
struct LongFnFinder<'a> {
    /// The file's path, for reports.
    path: &'a str,
    /// The names around the current point (impl types, traits, enclosing functions).
    names: Vec<String>,
    /// What was found.
    found: Vec<LongFn>,
}

impl LongFnFinder<'_> {
    /// Measures a function with a body, and looks inside it with its name pushed.
    fn function(&mut self, sig: &Signature, body: &Block, inside: impl FnOnce(&mut Self)) {
        let first = sig.fn_token.span.start().line;
        let last = body.brace_token.span.close().end().line;
        let lines = last + 1 - first;
        let name = ident_name(&sig.ident);
        if lines > MAX_FN_LINES {
            let mut qualified = self.names.clone();
            qualified.push(name.clone());
            let at = format!("{}:{first}", self.path);
            self.found.push(LongFn {
                at,
                name: qualified.join("::"),
                lines,
            });
        }
        self.within(name, inside);
    }

    /// Runs `inside` with `name` pushed onto the names around it.
    fn within(&mut self, name: String, inside: impl FnOnce(&mut Self)) {
        self.names.push(name);
        inside(self);
        self.names.pop();
    }
}

impl<'ast> Visit<'ast> for LongFnFinder<'_> {
    fn visit_item(&mut self, item: &'ast Item) {
        if !is_test_code(item_attrs(item)) {
            visit::visit_item(self, item);
        }
    }

    fn visit_impl_item(&mut self, item: &'ast ImplItem) {
        if !is_test_code(impl_item_attrs(item)) {
            visit::visit_impl_item(self, item);
        }
    }

    fn visit_trait_item(&mut self, item: &'ast TraitItem) {
        if !is_test_code(trait_item_attrs(item)) {
            visit::visit_trait_item(self, item);
        }
    }

    fn visit_item_fn(&mut self, item: &'ast syn::ItemFn) {
        self.function(&item.sig, &item.block, |finder| {
            visit::visit_item_fn(finder, item)
        });
    }

    fn visit_impl_item_fn(&mut self, item: &'ast syn::ImplItemFn) {
        self.function(&item.sig, &item.block, |finder| {
            visit::visit_impl_item_fn(finder, item)
        });
    }

    fn visit_trait_item_fn(&mut self, item: &'ast syn::TraitItemFn) {
        match &item.default {
            Some(body) => self.function(&item.sig, body, |finder| {
                visit::visit_trait_item_fn(finder, item)
            }),
            None => visit::visit_trait_item_fn(self, item),
        }
    }

    fn visit_item_impl(&mut self, item: &'ast syn::ItemImpl) {
        self.within(type_name(&item.self_ty), |finder| {
            visit::visit_item_impl(finder, item)
        });
    }

    fn visit_item_trait(&mut self, item: &'ast syn::ItemTrait) {
        self.within(ident_name(&item.ident), |finder| {
            visit::visit_item_trait(finder, item)
        });
    }
}

/// The name of an `impl` block's type (`AppState` for `impl<T> Trait for AppState<T>`).
fn type_name(ty: &syn::Type) -> String {
    match ty {
        syn::Type::Path(path) => path
            .path
            .segments
            .last()
            .map_or_else(String::new, |segment| ident_name(&segment.ident)),
        syn::Type::Reference(reference) => type_name(&reference.elem),
        _ => "impl".to_owned(),
    }
}

/// The functions outside tests longer than [`MAX_FN_LINES`] in a crate's files.
fn long_functions(loaded: &LoadedCrate) -> Vec<LongFn> {
    let mut found = Vec::new();
    for file in &loaded.files {
        let mut finder = LongFnFinder {
            path: &file.path,
            names: Vec::new(),
            found: Vec::new(),
        };
        finder.visit_file(&file.syntax);
        found.append(&mut finder.found);
    }
    found
}

// ---------------------------------------------------------------------------------------
// Module graph
// ---------------------------------------------------------------------------------------

/// References between modules: for each edge `(from, to)` (node names such as
/// `routes::pull`), the `path:line` of every reference making it.
type Edges = BTreeMap<(String, String), Vec<String>>;

/// Walks one file's non-test code for paths naming modules of the crate.
struct ReferenceFinder<'a> {
    /// The crate the file belongs to.
    loaded: &'a LoadedCrate,
    /// The module at the current point (inline modules included).
    module: ModPath,
    /// Each module referred to, with the line of the reference.
    found: Vec<(ModPath, usize)>,
}

impl ReferenceFinder<'_> {
    /// Records the module `segments` names, seen from the current module, if it names one.
    fn refer(&mut self, segments: &[String], line: usize) {
        if let Some(target) = resolve(&self.loaded.modules, &self.module, segments) {
            self.found.push((target, line));
        }
    }

    /// Records the paths of a `use` tree under `prefix`.
    fn use_tree(&mut self, prefix: &mut Vec<String>, tree: &UseTree) {
        match tree {
            UseTree::Path(path) => {
                prefix.push(ident_name(&path.ident));
                self.use_tree(prefix, &path.tree);
                prefix.pop();
            }
            UseTree::Name(name) => self.use_leaf(prefix, Some(&name.ident), line_of(&name.ident)),
            UseTree::Rename(rename) => {
                self.use_leaf(prefix, Some(&rename.ident), line_of(&rename.ident))
            }
            UseTree::Glob(glob) => self.use_leaf(prefix, None, glob.star_token.span.start().line),
            UseTree::Group(group) => {
                for tree in &group.items {
                    self.use_tree(prefix, tree);
                }
            }
        }
    }

    /// Records one imported name (or a glob, `None`) under `prefix`.
    fn use_leaf(&mut self, prefix: &[String], name: Option<&syn::Ident>, line: usize) {
        let mut segments = prefix.to_vec();
        segments.extend(name.map(ident_name).filter(|name| name != "self"));
        self.refer(&segments, line);
    }
}

/// The line a token starts on.
fn line_of(ident: &syn::Ident) -> usize {
    ident.span().start().line
}

impl<'ast> Visit<'ast> for ReferenceFinder<'_> {
    fn visit_item(&mut self, item: &'ast Item) {
        if !is_test_code(item_attrs(item)) {
            visit::visit_item(self, item);
        }
    }

    fn visit_impl_item(&mut self, item: &'ast ImplItem) {
        if !is_test_code(impl_item_attrs(item)) {
            visit::visit_impl_item(self, item);
        }
    }

    fn visit_trait_item(&mut self, item: &'ast TraitItem) {
        if !is_test_code(trait_item_attrs(item)) {
            visit::visit_trait_item(self, item);
        }
    }

    fn visit_item_mod(&mut self, item: &'ast syn::ItemMod) {
        self.module.push(ident_name(&item.ident));
        visit::visit_item_mod(self, item);
        self.module.pop();
    }

    /// `pub(super)` and `pub(in crate::x)` say who may see an item, not what it uses.
    fn visit_visibility(&mut self, _: &'ast syn::Visibility) {}

    fn visit_item_use(&mut self, item: &'ast syn::ItemUse) {
        if item.leading_colon.is_none() {
            self.use_tree(&mut Vec::new(), &item.tree);
        }
    }

    fn visit_path(&mut self, path: &'ast syn::Path) {
        if path.leading_colon.is_none() {
            let segments: Vec<String> = path
                .segments
                .iter()
                .map(|segment| ident_name(&segment.ident))
                .collect();
            if let Some(first) = path.segments.first() {
                self.refer(&segments, line_of(&first.ident));
            }
        }
        visit::visit_path(self, path);
    }
}

/// The module of `modules` that `segments` names, seen from module `here`: the longest
/// run of module names after `crate`, `self`, `super` or a child module of `here`. A
/// path starting with any other name (a type, a variable, another crate) names none.
fn resolve(
    modules: &BTreeMap<ModPath, ModPath>,
    here: &[String],
    segments: &[String],
) -> Option<ModPath> {
    let (first, rest) = segments.split_first()?;
    let mut module: ModPath = match first.as_str() {
        "crate" => Vec::new(),
        "self" => here.to_vec(),
        "super" => here.split_last()?.1.to_vec(),
        _ => {
            let child = [here, std::slice::from_ref(first)].concat();
            if rest.is_empty() || !modules.contains_key(&child) {
                return None;
            }
            child
        }
    };
    for segment in rest {
        if segment == "super" {
            module.pop()?;
            continue;
        }
        module.push(segment.clone());
        if !modules.contains_key(&module) {
            module.pop();
            break;
        }
    }
    Some(module)
}

/// A module's node in the graph: its first two segments.
fn node(module: &[String]) -> ModPath {
    module[..module.len().min(2)].to_vec()
}

/// The edges between the nodes (two-segment module paths) of a crate, each with the
/// places of its references.
fn module_edges(loaded: &LoadedCrate) -> BTreeMap<(ModPath, ModPath), Vec<String>> {
    let mut edges: BTreeMap<(ModPath, ModPath), Vec<String>> = BTreeMap::new();
    for file in &loaded.files {
        let mut finder = ReferenceFinder {
            loaded,
            module: file.module.clone(),
            found: Vec::new(),
        };
        finder.visit_file(&file.syntax);
        let from = node(&file.module);
        for (target, line) in finder.found {
            let to = node(&loaded.modules[&target]);
            if from != to {
                edges
                    .entry((from.clone(), to))
                    .or_default()
                    .push(format!("{}:{line}", file.path));
            }
        }
    }
    edges
}

/// The graph between a crate's top-level modules: an edge `a -> b` for every reference
/// from `a` or its submodules to `b` or its submodules. The crate root is not a node.
fn top_level_graph(edges: &BTreeMap<(ModPath, ModPath), Vec<String>>) -> Edges {
    let mut graph = Edges::new();
    for ((from, to), places) in edges {
        let (Some(from), Some(to)) = (from.first(), to.first()) else {
            continue;
        };
        if from != to {
            graph
                .entry((from.clone(), to.clone()))
                .or_default()
                .extend(places.iter().cloned());
        }
    }
    graph
}

/// The graphs between the submodules of each top-level module (`routes::pull ->
/// routes::body`), by top-level module. The top-level module's own file is not a node.
fn second_level_graphs(
    edges: &BTreeMap<(ModPath, ModPath), Vec<String>>,
) -> BTreeMap<String, Edges> {
    let mut graphs: BTreeMap<String, Edges> = BTreeMap::new();
    for ((from, to), places) in edges {
        if from.len() == 2 && to.len() == 2 && from[0] == to[0] {
            let graph = graphs.entry(from[0].clone()).or_default();
            graph.insert((from.join("::"), to.join("::")), places.clone());
        }
    }
    graphs
}

/// Every circle of a graph that is the shortest one through one of its edges, each
/// starting at its smallest node (`["a", "b"]` for `a -> b -> a`).
fn circles(graph: &Edges) -> Vec<Vec<String>> {
    let mut next: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    for (from, to) in graph.keys() {
        next.entry(from).or_default().push(to);
    }
    let mut found = BTreeSet::new();
    for (from, to) in graph.keys() {
        let Some(back) = shortest_path(&next, to, from) else {
            continue;
        };
        let mut circle: Vec<String> = vec![from.clone()];
        circle.extend(back[..back.len() - 1].iter().map(|node| node.to_string()));
        let smallest = (0..circle.len()).min_by_key(|&at| &circle[at]).unwrap_or(0);
        circle.rotate_left(smallest);
        found.insert(circle);
    }
    found.into_iter().collect()
}

/// The nodes of a shortest path from `start` to `goal`, both included.
fn shortest_path<'a>(
    next: &BTreeMap<&'a str, Vec<&'a str>>,
    start: &'a str,
    goal: &str,
) -> Option<Vec<&'a str>> {
    let mut came_from: BTreeMap<&str, &str> = BTreeMap::new();
    let mut queue = VecDeque::from([start]);
    while let Some(at) = queue.pop_front() {
        if at == goal {
            let mut path = vec![at];
            while let Some(&before) = came_from.get(path[path.len() - 1]) {
                path.push(before);
            }
            path.reverse();
            return Some(path);
        }
        for &to in next.get(at).into_iter().flatten() {
            if to != start && !came_from.contains_key(to) {
                came_from.insert(to, at);
                queue.push_back(to);
            }
        }
    }
    None
}

/// A circle as `a -> b -> a`, then one line per edge with a reference making it.
fn describe_circle(circle: &[String], graph: &Edges) -> String {
    let mut text = format!("{} -> {}", circle.join(" -> "), circle[0]);
    for (at, from) in circle.iter().enumerate() {
        let to = &circle[(at + 1) % circle.len()];
        let places = &graph[&(from.clone(), to.clone())];
        let example = places.iter().min().map_or("", String::as_str);
        let more = match places.len() {
            1 => String::new(),
            count => format!(" (and {} more)", count - 1),
        };
        text.push_str(&format!("\n      {from} -> {to}: {example}{more}"));
    }
    text
}

/// The circles of a crate's module graphs, described: top-level ones first, then
/// those inside each top-level module.
fn module_circles(loaded: &LoadedCrate) -> Vec<String> {
    let edges = module_edges(loaded);
    let top = top_level_graph(&edges);
    let mut found: Vec<String> = circles(&top)
        .iter()
        .map(|circle| describe_circle(circle, &top))
        .collect();
    for graph in second_level_graphs(&edges).values() {
        found.extend(
            circles(graph)
                .iter()
                .map(|circle| describe_circle(circle, graph)),
        );
    }
    found
}

// ---------------------------------------------------------------------------------------
// The workspace
// ---------------------------------------------------------------------------------------

/// The workspace's crates, read from disk.
struct Workspace {
    /// Every crate (a package with a library and a binary gives two).
    crates: Vec<LoadedCrate>,
    /// Source files no crate reaches and no test module owns: the checker cannot tell
    /// what they are.
    unreached: Vec<String>,
}

impl Workspace {
    /// Reads the packages under `crates/` and `examples/`, and `tests/chaos`, from the
    /// repository root (this package's parent directory).
    fn read() -> Workspace {
        let repository = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
        let mut packages = Vec::new();
        for parent in ["crates", "examples"] {
            packages.extend(
                sorted_entries(&repository.join(parent))
                    .into_iter()
                    .map(|dir| {
                        format!(
                            "{parent}/{}",
                            dir.file_name().unwrap_or_default().to_string_lossy()
                        )
                    }),
            );
        }
        packages.push("tests/chaos".to_owned());
        let mut sources = BTreeMap::new();
        for package in &packages {
            read_sources(&repository, &format!("{package}/src"), &mut sources);
        }
        let crates: Vec<LoadedCrate> = packages
            .iter()
            .flat_map(|package| crate_roots(package, &sources))
            .map(|root| load_crate(&root, &sources).unwrap_or_else(|error| panic!("{error}")))
            .collect();
        let unreached = unreached_files(&crates, &sources);
        Workspace { crates, unreached }
    }
}

/// The entries of a directory, sorted; none when it cannot be read.
fn sorted_entries(dir: &Path) -> Vec<PathBuf> {
    let mut entries: Vec<PathBuf> = std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .filter_map(|entry| entry.ok())
                .map(|entry| entry.path())
                .collect()
        })
        .unwrap_or_default();
    entries.sort();
    entries
}

/// Reads every `.rs` file under `repository/dir` into `sources`, by path from the
/// repository root.
fn read_sources(repository: &Path, dir: &str, sources: &mut BTreeMap<String, String>) {
    for entry in sorted_entries(&repository.join(dir)) {
        let name = entry
            .file_name()
            .unwrap_or_default()
            .to_string_lossy()
            .into_owned();
        let path = format!("{dir}/{name}");
        if entry.is_dir() {
            read_sources(repository, &path, sources);
        } else if name.ends_with(".rs") {
            let source = std::fs::read_to_string(&entry)
                .unwrap_or_else(|error| panic!("{path}: cannot read: {error}"));
            sources.insert(path, source);
        }
    }
}

/// A package's crate roots among `sources`: `src/lib.rs`, `src/main.rs`, `src/bin/*.rs`.
fn crate_roots(package: &str, sources: &BTreeMap<String, String>) -> Vec<String> {
    let bins = format!("{package}/src/bin/");
    let mut roots: Vec<String> = [
        format!("{package}/src/lib.rs"),
        format!("{package}/src/main.rs"),
    ]
    .into_iter()
    .filter(|root| sources.contains_key(root))
    .collect();
    roots.extend(
        sources
            .keys()
            .filter(|path| {
                path.strip_prefix(&bins)
                    .is_some_and(|name| !name.contains('/'))
            })
            .cloned(),
    );
    roots
}

/// The files of `sources` that no crate reads and no test module owns.
fn unreached_files(crates: &[LoadedCrate], sources: &BTreeMap<String, String>) -> Vec<String> {
    let read: BTreeSet<&str> = crates
        .iter()
        .flat_map(|loaded| &loaded.files)
        .map(|file| file.path.as_str())
        .collect();
    let tests: Vec<&str> = crates
        .iter()
        .flat_map(|loaded| &loaded.test_paths)
        .map(String::as_str)
        .collect();
    sources
        .keys()
        .filter(|path| !read.contains(path.as_str()))
        .filter(|path| {
            !tests
                .iter()
                .any(|test| *path == test || (test.ends_with('/') && path.starts_with(test)))
        })
        .cloned()
        .collect()
}

// ---------------------------------------------------------------------------------------
// The house rules
// ---------------------------------------------------------------------------------------

#[test]
fn no_function_outside_tests_is_longer_than_80_lines() {
    let workspace = Workspace::read();
    let mut problems: Vec<String> = workspace
        .unreached
        .iter()
        .map(|path| {
            format!("{path}: no crate root reaches it; cannot tell whether it is test code")
        })
        .collect();
    let mut long: Vec<LongFn> = workspace.crates.iter().flat_map(long_functions).collect();
    long.sort_by(|a, b| a.at.cmp(&b.at));
    long.dedup();
    problems.extend(
        long.iter()
            .map(|f| format!("{} {} ({} lines)", f.at, f.name, f.lines)),
    );
    assert!(
        problems.is_empty(),
        "{} functions are longer than {MAX_FN_LINES} lines (from `fn` to the closing brace); \
         split them into steps a reader can name:\n  {}",
        long.len(),
        problems.join("\n  ")
    );
}

#[test]
fn no_modules_of_a_crate_form_a_circle() {
    let workspace = Workspace::read();
    let mut problems = Vec::new();
    for loaded in &workspace.crates {
        for circle in module_circles(loaded) {
            problems.push(format!("{}: {circle}", loaded.root));
        }
    }
    assert!(
        problems.is_empty(),
        "modules form circles (each edge with one of its references); move what both \
         sides need to a module both may use:\n  {}",
        problems.join("\n  ")
    );
}

// ---------------------------------------------------------------------------------------
// The checker's own tests, on small crates written inline
// ---------------------------------------------------------------------------------------

/// A crate of inline files, its root `src/lib.rs`.
fn inline_crate(files: &[(&str, &str)]) -> LoadedCrate {
    let sources = files
        .iter()
        .map(|(path, source)| (path.to_string(), source.to_string()))
        .collect();
    load_crate("src/lib.rs", &sources).unwrap_or_else(|error| panic!("{error}"))
}

/// A function `name` of exactly `lines` lines, from `fn` to the closing brace.
fn function_of(name: &str, lines: usize) -> String {
    let body = "    let _step = 1;\n".repeat(lines - 2);
    format!("fn {name}() {{\n{body}}}\n")
}

/// The names of the long functions of a one-file crate.
fn long_names(source: &str) -> Vec<String> {
    long_functions(&inline_crate(&[("src/lib.rs", source)]))
        .into_iter()
        .map(|f| f.name)
        .collect()
}

#[test]
fn a_function_of_81_lines_is_long() {
    let found = long_functions(&inline_crate(&[("src/lib.rs", &function_of("long", 81))]));
    assert_eq!(
        found,
        [LongFn {
            at: "src/lib.rs:1".into(),
            name: "long".into(),
            lines: 81
        }]
    );
}

#[test]
fn a_function_of_80_lines_is_not() {
    assert!(long_names(&function_of("fits", 80)).is_empty());
}

#[test]
fn attributes_and_doc_comments_do_not_count() {
    let source = format!(
        "/// Doc.\n/// More.\n#[inline]\n{}",
        function_of("fits", 80)
    );
    assert!(long_names(&source).is_empty());
}

#[test]
fn methods_trait_defaults_and_nested_functions_are_measured() {
    let method = function_of("method", 81);
    let default = function_of("default", 81);
    let nested = function_of("inner", 81);
    let source = format!(
        "struct Thing;\nimpl Thing {{\n{method}}}\ntrait Act {{\n{default}}}\nfn outer() {{\n{nested}}}\n"
    );
    // `outer` holds `inner`, so it is as long as `inner` and more.
    assert_eq!(
        long_names(&source),
        ["Thing::method", "Act::default", "outer", "outer::inner"]
    );
}

#[test]
fn test_code_of_200_lines_is_skipped() {
    let long = function_of("long", 200);
    let source = format!(
        "#[cfg(test)]\n{long}#[test]\n{long}#[tokio::test]\n{long}#[cfg(all(test, unix))]\n{long}\
         #[cfg(test)]\nmod tests {{\n{long}}}\nstruct S;\n#[cfg(test)]\nimpl S {{\n{long}}}\n"
    );
    assert!(long_names(&source).is_empty());
}

#[test]
fn a_test_module_file_is_not_read() {
    let long = function_of("long", 200);
    let loaded = inline_crate(&[
        ("src/lib.rs", "#[cfg(test)]\nmod tests;\n"),
        ("src/tests.rs", &long),
    ]);
    assert!(long_functions(&loaded).is_empty());
    assert_eq!(loaded.files.len(), 1);
}

#[test]
fn other_cfgs_are_measured() {
    let source = format!("#[cfg(not(test))]\n{}", function_of("long", 81));
    assert_eq!(long_names(&source), ["long"]);
}

/// The described circles of an inline crate.
fn circles_of(files: &[(&str, &str)]) -> Vec<String> {
    module_circles(&inline_crate(files))
}

#[test]
fn a_circle_between_two_modules_is_found() {
    let found = circles_of(&[
        ("src/lib.rs", "mod a;\nmod b;\n"),
        ("src/a.rs", "use crate::b::B;\npub struct A;\n"),
        (
            "src/b.rs",
            "pub struct B;\nfn make() -> super::a::A { todo!() }\n",
        ),
    ]);
    assert_eq!(
        found,
        ["a -> b -> a\n      a -> b: src/a.rs:1\n      b -> a: src/b.rs:2"]
    );
}

#[test]
fn a_chain_is_not_a_circle() {
    let found = circles_of(&[
        ("src/lib.rs", "mod a;\nmod b;\nmod c;\n"),
        ("src/a.rs", "use crate::b::B;\n"),
        ("src/b.rs", "pub struct B;\nfn c() { crate::c::run() }\n"),
        ("src/c.rs", "pub fn run() {}\n"),
    ]);
    assert!(found.is_empty(), "{found:?}");
}

#[test]
fn a_circle_through_submodules_is_found_between_their_top_level_modules() {
    let found = circles_of(&[
        ("src/lib.rs", "mod routes;\nmod tenants;\n"),
        ("src/routes/mod.rs", "mod pull;\n"),
        (
            "src/routes/pull.rs",
            "use crate::tenants::admin::Admin;\npub struct Pull;\n",
        ),
        ("src/tenants.rs", "mod admin;\n"),
        (
            "src/tenants/admin.rs",
            "pub struct Admin(crate::routes::pull::Pull);\n",
        ),
    ]);
    assert_eq!(found.len(), 1, "{found:?}");
    assert!(
        found[0].starts_with("routes -> tenants -> routes\n"),
        "{found:?}"
    );
}

#[test]
fn a_circle_between_sibling_submodules_is_found() {
    let found = circles_of(&[
        ("src/lib.rs", "mod store;\n"),
        ("src/store/mod.rs", "mod blob;\nmod seal;\n"),
        ("src/store/blob.rs", "use super::seal::{self, Seal};\n"),
        (
            "src/store/seal.rs",
            "pub struct Seal;\nfn f() { super::blob::g() }\n",
        ),
    ]);
    assert_eq!(found.len(), 1, "{found:?}");
    assert!(
        found[0].starts_with("store::blob -> store::seal -> store::blob\n"),
        "{found:?}"
    );
}

#[test]
fn parents_test_code_and_visibility_make_no_edges() {
    let found = circles_of(&[
        (
            "src/lib.rs",
            "mod a;\nmod b;\npub struct Root;\nfn run() { a::go() }\n",
        ),
        (
            "src/a.rs",
            "use crate::Root;\npub(in crate::b) fn go() { crate::b::B; }\n",
        ),
        (
            "src/b.rs",
            "pub struct B;\n#[cfg(test)]\nmod tests {\n    use crate::a::go;\n}\n",
        ),
    ]);
    assert!(found.is_empty(), "{found:?}");
}

#[test]
fn inline_modules_belong_to_their_file() {
    let found = circles_of(&[
        ("src/lib.rs", "mod a;\nmod b;\n"),
        (
            "src/a.rs",
            "mod inner {\n    use super::super::b::B;\n}\npub struct A;\n",
        ),
        (
            "src/b.rs",
            "pub struct B;\nmod deep {\n    fn f(_: &crate::a::A) {}\n}\n",
        ),
    ]);
    assert_eq!(found.len(), 1, "{found:?}");
    assert!(
        found[0].starts_with("a -> b -> a\n      a -> b: src/a.rs:2"),
        "{found:?}"
    );
}

/// The packages `package` depends on, as `Cargo.lock` records them for the whole
/// workspace (every feature any member turns on: a superset of what it builds with).
fn locked_dependencies(lock: &str, package: &str) -> BTreeSet<String> {
    let mut deps: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for block in lock.split("[[package]]").skip(1) {
        let Some(name) = block
            .lines()
            .find_map(|l| l.strip_prefix("name = \""))
            .and_then(|l| l.strip_suffix('"'))
        else {
            continue;
        };
        let listed = block
            .split_once("dependencies = [")
            .map(|(_, rest)| rest.split(']').next().unwrap_or(""))
            .unwrap_or("");
        let names = listed
            .split(',')
            .filter_map(|d| d.trim().trim_matches('"').split(' ').next())
            .filter(|d| !d.is_empty())
            .map(str::to_owned);
        deps.entry(name.to_owned()).or_default().extend(names);
    }
    let mut seen = BTreeSet::new();
    let mut next = vec![package.to_owned()];
    while let Some(name) = next.pop() {
        for dep in deps.get(&name).into_iter().flatten() {
            if seen.insert(dep.clone()) {
                next.push(dep.clone());
            }
        }
    }
    seen
}

#[test]
fn the_protocol_crate_holds_no_runtime_http_or_store() {
    let lock = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../Cargo.lock"))
        .expect("Cargo.lock");
    let deps = locked_dependencies(&lock, "starfish-protocol");
    assert!(
        deps.contains("ed25519-dalek"),
        "read the lock file: {deps:?}"
    );
    let server = locked_dependencies(&lock, "starfish-server");
    assert!(
        server.contains("tokio"),
        "the check can see tokio: {server:?}"
    );
    let forbidden: Vec<_> = [
        "tokio",
        "axum",
        "axum-core",
        "hyper",
        "object_store",
        "tower",
        "mio",
    ]
    .into_iter()
    .filter(|f| deps.contains(*f))
    .collect();
    assert!(
        forbidden.is_empty(),
        "starfish-protocol depends on {forbidden:?}: the wire format must build without a runtime, HTTP or a store"
    );
}

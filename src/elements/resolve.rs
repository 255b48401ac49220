//! Dependency expansion: the element closure of a build.
//!
//! DIB walks `element-deps` breadth-first and treats a name as virtual only if
//! an element providing it was reached *earlier* in that walk; otherwise it looks
//! the name up as a real element and fails ("Element 'x' not found") or, worse,
//! pulls in a real element that a provider was meant to replace. We compute a
//! fixpoint instead: walk, collect every name the closure provides, walk again
//! treating those names as satisfied, until the provided set stops growing. A
//! provider anywhere in the closure therefore satisfies a virtual name, and the
//! result does not depend on the order of the walk.
//!
//! Circular and self dependencies are not errors (DIB allows them). The result
//! is sorted by name.

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::fmt;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use super::{parse_name_list, ElementDir, ElementSet, ListError};

/// The virtual element every build needs a provider for.
pub const OPERATING_SYSTEM: &str = "operating-system";
/// Elements with this prefix lay out the block device; `vm` gets a default one.
const BLOCK_DEVICE_PREFIX: &str = "block-device-";

/// Who asked for an element: used to say where a bad name came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Requester {
    CommandLine,
    Element(String),
    /// Added because `vm` is in the build without a block-device element.
    DefaultBlockDevice {
        arch: String,
    },
}

impl fmt::Display for Requester {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Requester::CommandLine => f.write_str("requested on the command line"),
            Requester::Element(e) => write!(f, "required by '{e}'"),
            Requester::DefaultBlockDevice { arch } => {
                write!(f, "the default block device of 'vm' on {arch}")
            }
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ResolveError {
    #[error("Element '{name}' not found ({requester}); searched {searched}. Add the directory that holds it to ELEMENTS_PATH")]
    NotFound {
        name: String,
        requester: Requester,
        searched: String,
    },
    #[error("{name}: already provided by [{first}], and '{second}' provides it too; include only one of them")]
    AlreadyProvided {
        name: String,
        first: String,
        second: String,
    },
    #[error("Element '{name}' was requested explicitly but is already provided by [{provider}]; request only one of them")]
    ExplicitlyProvided { name: String, provider: String },
    #[error("'{name}' is provided by an element that is only reached through '{name}' itself, so whether it is virtual has no consistent answer; depend on its provider directly")]
    ProvideCycle { name: String },
    #[error("Please include an operating system element (one whose element-provides lists '{OPERATING_SYSTEM}', such as debian-minimal)")]
    MissingOs,
    #[error(transparent)]
    BadList(#[from] ListError),
    #[error("reading {path:?} (element '{element}')")]
    Read {
        element: String,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

/// An element of the closure, with its real (canonical) path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResolvedElement {
    pub name: String,
    pub path: PathBuf,
}

/// The expanded element set of a build.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resolution {
    /// Sorted by name.
    pub elements: Vec<ResolvedElement>,
    /// Virtual name -> the element that provides it.
    pub provided: BTreeMap<String, String>,
}

impl Resolution {
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.elements.iter().map(|e| e.name.as_str())
    }

    pub fn contains(&self, name: &str) -> bool {
        self.elements.iter().any(|e| e.name == name)
    }
}

/// Expand `requested` over `set`. `arch` picks `vm`'s default block device.
pub fn resolve(
    set: &ElementSet,
    requested: &[String],
    arch: &str,
) -> Result<Resolution, ResolveError> {
    let mut meta = MetaCache::default();
    let mut wanted: Vec<(String, Requester)> = requested
        .iter()
        .map(|n| (n.clone(), Requester::CommandLine))
        .collect();
    let mut walk = fixpoint(set, &mut meta, &wanted)?;

    let has_block_device = |w: &Walk| {
        w.included
            .keys()
            .chain(w.providers.keys())
            .any(|n| n.starts_with(BLOCK_DEVICE_PREFIX))
    };
    if walk.included.contains_key("vm") && !has_block_device(&walk) {
        let default = if arch == "arm64" || arch == "armhf" {
            "block-device-efi"
        } else {
            "block-device-mbr"
        };
        wanted.push((
            default.to_string(),
            Requester::DefaultBlockDevice {
                arch: arch.to_string(),
            },
        ));
        walk = fixpoint(set, &mut meta, &wanted)?;
    }

    check(set, &walk, &wanted)?;

    let elements = walk
        .included
        .keys()
        .map(|name| {
            let dir = set
                .get(name)
                .expect("included elements were found in the set");
            ResolvedElement {
                name: name.clone(),
                path: dir.real_path.clone(),
            }
        })
        .collect();
    let provided = walk
        .providers
        .into_iter()
        .map(|(virt, mut by)| (virt, by.swap_remove(0)))
        .collect();
    Ok(Resolution { elements, provided })
}

/// The expansion errors (docs/elements.md), in a fixed order so the first message is stable.
fn check(
    set: &ElementSet,
    walk: &Walk,
    wanted: &[(String, Requester)],
) -> Result<(), ResolveError> {
    if let Some((name, requester)) = walk.missing.first() {
        let searched = set
            .search_path()
            .iter()
            .map(|p| p.display().to_string())
            .collect::<Vec<_>>()
            .join(":");
        return Err(ResolveError::NotFound {
            name: name.clone(),
            requester: requester.clone(),
            searched,
        });
    }
    if let Some((name, by)) = walk.providers.iter().find(|(_, by)| by.len() > 1) {
        return Err(ResolveError::AlreadyProvided {
            name: name.clone(),
            first: by[0].clone(),
            second: by[1].clone(),
        });
    }
    for (name, requester) in wanted {
        if *requester != Requester::CommandLine {
            continue;
        }
        if let Some(by) = walk.providers.get(name) {
            return Err(ResolveError::ExplicitlyProvided {
                name: name.clone(),
                provider: by[0].clone(),
            });
        }
    }
    if !walk.providers.contains_key(OPERATING_SYSTEM) {
        return Err(ResolveError::MissingOs);
    }
    Ok(())
}

/// One breadth-first walk.
#[derive(Debug, Default)]
struct Walk {
    /// Real elements reached, with who first asked for them.
    included: BTreeMap<String, Requester>,
    /// Virtual name -> providers, in walk order.
    providers: BTreeMap<String, Vec<String>>,
    /// Names neither provided nor found, first requester only.
    missing: Vec<(String, Requester)>,
}

/// Walk again and again, each time treating the names the previous walk saw
/// provided as satisfied, until a walk provides exactly the names it assumed.
/// The hint is not accumulated: a provider that drops out of the closure (it
/// was only reached through a name that turned out virtual) takes its names
/// with it. The iteration is a function on a finite set of hints, so it ends
/// in a fixed point or a cycle; a cycle means no consistent answer exists.
fn fixpoint(
    set: &ElementSet,
    meta: &mut MetaCache,
    wanted: &[(String, Requester)],
) -> Result<Walk, ResolveError> {
    let mut hint: BTreeSet<String> = BTreeSet::new();
    let mut seen: Vec<BTreeSet<String>> = Vec::new();
    loop {
        let walk = walk(set, meta, wanted, &hint)?;
        let provided: BTreeSet<String> = walk.providers.keys().cloned().collect();
        if provided == hint {
            return Ok(walk);
        }
        if seen.contains(&provided) {
            let name = provided
                .symmetric_difference(&hint)
                .next()
                .expect("the sets differ")
                .clone();
            return Err(ResolveError::ProvideCycle { name });
        }
        seen.push(hint);
        hint = provided;
    }
}

fn walk(
    set: &ElementSet,
    meta: &mut MetaCache,
    wanted: &[(String, Requester)],
    hint: &BTreeSet<String>,
) -> Result<Walk, ResolveError> {
    let mut out = Walk::default();
    let mut missing_seen = BTreeSet::new();
    let mut queue: VecDeque<(String, Requester)> = wanted.iter().cloned().collect();
    while let Some((name, requester)) = queue.pop_front() {
        if out.included.contains_key(&name) {
            continue;
        }
        // A name provided in the closure is not looked up, except that a
        // requested element that exists is always taken at its word (the
        // explicitly-provided check then reports the clash).
        let explicit = requester == Requester::CommandLine && set.get(&name).is_some();
        if hint.contains(&name) && !explicit {
            continue;
        }
        let Some(dir) = set.get(&name) else {
            if missing_seen.insert(name.clone()) {
                out.missing.push((name, requester));
            }
            continue;
        };
        let m = meta.load(dir)?;
        for p in &m.provides {
            out.providers
                .entry(p.clone())
                .or_default()
                .push(name.clone());
        }
        for d in &m.deps {
            if !out.included.contains_key(d) && *d != name {
                queue.push_back((d.clone(), Requester::Element(name.clone())));
            }
        }
        out.included.insert(name, requester);
    }
    Ok(out)
}

#[derive(Debug)]
struct Meta {
    deps: Vec<String>,
    provides: Vec<String>,
}

/// Each element's lists are read once per resolution, however many walks.
#[derive(Debug, Default)]
struct MetaCache(HashMap<String, std::rc::Rc<Meta>>);

impl MetaCache {
    fn load(&mut self, dir: &ElementDir) -> Result<std::rc::Rc<Meta>, ResolveError> {
        if let Some(m) = self.0.get(&dir.name) {
            return Ok(m.clone());
        }
        let m = std::rc::Rc::new(Meta {
            deps: read_list(dir, "element-deps")?,
            provides: read_list(dir, "element-provides")?,
        });
        self.0.insert(dir.name.clone(), m.clone());
        Ok(m)
    }
}

fn read_list(dir: &ElementDir, file: &str) -> Result<Vec<String>, ResolveError> {
    let path: PathBuf = Path::new(&dir.path).join(file);
    match fs::read_to_string(&path) {
        Ok(text) => {
            // DIB reads these files as sets: a repeated line is one name.
            let mut names = parse_name_list(&path, &text)?;
            let mut seen = BTreeSet::new();
            names.retain(|n| seen.insert(n.clone()));
            Ok(names)
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(Vec::new()),
        Err(source) => Err(ResolveError::Read {
            element: dir.name.clone(),
            path,
            source,
        }),
    }
}

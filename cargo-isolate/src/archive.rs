//! Archives of built tests, to build once and run anywhere: `cargo isolate
//! archive` packs a build's test binaries with what running them needs,
//! and `--archive-file` runs them, on this machine or another, without
//! cargo.
//!
//! An archive is a zstd-compressed tar. Its first member is the manifest,
//! `isolate-archive.json` (see [`Manifest`]); then come the test binaries,
//! the shared libraries of the build they need, and the files an
//! `archive.include` of the configuration names, each at its path in the
//! build's target directory under `target/`.
//!
//! # Paths
//!
//! The manifest records paths as the build saw them, with the two roots
//! they lie under: the workspace's root and the target directory (cargo's
//! build directory, where one is set apart). Where the archive is unpacked,
//! a path under the target directory is rewritten under the unpacked
//! `target/`, and one under the workspace's root under `--workspace-remap`
//! (by default the workspace's root as recorded: the sources a test reads
//! through `CARGO_MANIFEST_DIR` are not archived). That holds for the
//! directory a binary runs in, every variable whose value is such a path
//! (`CARGO_MANIFEST_DIR`, `OUT_DIR`, ...) and each directory of the library
//! search path. The rest of the search path is the unpacking machine's
//! own `LD_LIBRARY_PATH`, not the building machine's.
//!
//! # Shared libraries
//!
//! A binary that needs a shared library built into the target directory
//! (a `dylib` crate, a `-C prefer-dynamic` build, a native library a build
//! script made) finds it in the archive: the `DT_NEEDED` entries of each
//! binary, and of each library so found, are looked up in the binary's
//! library directories under the target directory, as nextest archives
//! them. The toolchain's own library directory, where `libstd` is, is not
//! archived (it is the toolchain's, and large): where the recorded one does
//! not exist on the machine that runs the tests, the `rustc` there (`RUSTC`,
//! else `rustc` on the `PATH`) is asked for its sysroot, and the directory
//! for the same target under it is used instead.
//!
//! # Not archived
//!
//! The workspace's sources, and the executables of `[[bin]]` targets that
//! an integration test finds through `CARGO_BIN_EXE_*`: that path is
//! compiled into the test, and points into the building machine's target
//! directory.

use std::collections::BTreeSet;
use std::ffi::{OsStr, OsString};
use std::fmt;
use std::fs::{self, File};
use std::io::{self, Read};
use std::os::unix::fs::PermissionsExt;
use std::path::{Component, Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, OnceLock};

use serde::{Deserialize, Serialize};

use crate::build::{BinaryKind, PackageGraph, TestBinary, Workspace};
use crate::environment::{Launch, LaunchParts, needed_libraries};

/// The version of the manifest's format. A reader refuses any other: a
/// manifest of another version may mean other things by the same fields.
pub(crate) const FORMAT_VERSION: u32 = 1;

/// The manifest's name: the archive's first member.
const MANIFEST_NAME: &str = "isolate-archive.json";

/// The directory of the archive that stands for the target directory.
const TARGET_MEMBER: &str = "target";

/// The largest manifest read: far more than any workspace needs, and a
/// bound on what a damaged archive can make this process allocate.
const MAX_MANIFEST_BYTES: u64 = 64 << 20;

/// The zstd level: the `zstd` tool's default, which packs test binaries
/// to about a fifth at hundreds of megabytes a second.
const ZSTD_LEVEL: i32 = 3;

/// The default `depth` of an [`ArchiveInclude`], as nextest's.
const DEFAULT_DEPTH: u32 = 16;

/// An entry of `archive.include` in a profile of the configuration: files
/// the tests read at run time, to be archived with them. Nextest's schema:
///
/// ```toml
/// [profile.default.archive]
/// include = [
///     { path = "fixtures", relative-to = "target", depth = 2, on-missing = "error" },
/// ]
/// ```
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub(crate) struct ArchiveInclude {
    /// The path, relative to `relative-to`: no `..`, no root.
    path: RelativePath,
    /// What `path` is relative to.
    relative_to: RelativeTo,
    /// How deep into a directory to go: 0 takes the directory alone, 1
    /// the files in it, and so on; `"infinite"` for no limit. 16 by
    /// default.
    #[serde(default)]
    depth: Depth,
    /// What a path that does not exist makes of the archiving.
    #[serde(default)]
    on_missing: OnMissing,
}

impl fmt::Display for ArchiveInclude {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let depth = match self.depth {
            Depth::Levels(levels) => levels.to_string(),
            Depth::Infinite => "\"infinite\"".to_owned(),
        };
        write!(
            f,
            "{{ path = {:?}, relative-to = \"target\", depth = {depth}, on-missing = \"{}\" }}",
            self.path.0.display().to_string(),
            format!("{:?}", self.on_missing).to_lowercase()
        )
    }
}

/// A relative path that stays below its base: normal components only.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(try_from = "PathBuf")]
struct RelativePath(PathBuf);

impl TryFrom<PathBuf> for RelativePath {
    type Error = String;

    fn try_from(path: PathBuf) -> Result<Self, String> {
        let normal = path
            .components()
            .all(|component| matches!(component, Component::Normal(_) | Component::CurDir));
        if normal && path.components().next().is_some() {
            Ok(RelativePath(path))
        } else {
            Err(format!(
                "{} is not a relative path below its base (no `..`, no leading `/`)",
                path.display()
            ))
        }
    }
}

/// What an [`ArchiveInclude`]'s path is relative to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
enum RelativeTo {
    /// The target directory: where build scripts and tests leave files.
    Target,
}

/// How deep an [`ArchiveInclude`] goes into a directory.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Depth {
    /// At most this many levels below the path.
    Levels(u32),
    /// Every level.
    Infinite,
}

impl Default for Depth {
    fn default() -> Self {
        Depth::Levels(DEFAULT_DEPTH)
    }
}

impl Depth {
    /// Whether what lies `level` levels below the path is taken.
    fn reaches(self, level: u32) -> bool {
        match self {
            Depth::Levels(levels) => level <= levels,
            Depth::Infinite => true,
        }
    }
}

impl<'de> Deserialize<'de> for Depth {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        /// Takes a count of levels or `"infinite"`.
        struct DepthVisitor;

        impl serde::de::Visitor<'_> for DepthVisitor {
            type Value = Depth;

            fn expecting(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
                formatter.write_str("a count of levels or \"infinite\"")
            }

            fn visit_i64<E: serde::de::Error>(self, value: i64) -> Result<Depth, E> {
                u32::try_from(value)
                    .map(Depth::Levels)
                    .map_err(|_| E::invalid_value(serde::de::Unexpected::Signed(value), &self))
            }

            fn visit_u64<E: serde::de::Error>(self, value: u64) -> Result<Depth, E> {
                u32::try_from(value)
                    .map(Depth::Levels)
                    .map_err(|_| E::invalid_value(serde::de::Unexpected::Unsigned(value), &self))
            }

            fn visit_str<E: serde::de::Error>(self, value: &str) -> Result<Depth, E> {
                match value {
                    "infinite" => Ok(Depth::Infinite),
                    _ => Err(E::invalid_value(serde::de::Unexpected::Str(value), &self)),
                }
            }
        }

        deserializer.deserialize_any(DepthVisitor)
    }
}

/// What a missing `archive.include` path does.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
enum OnMissing {
    /// Nothing.
    Ignore,
    /// A warning, and the archive is made without it.
    #[default]
    Warn,
    /// No archive: an error.
    Error,
}

/// The manifest of an archive: what running its binaries needs, without
/// cargo. Written as JSON with kebab-case keys:
///
/// ```json
/// {
///   "format-version": 1,
///   "workspace-root": "/src/project",
///   "target-dir": "/src/project/target",
///   "packages": { "app": ["tool"], "tool": [] },
///   "binaries": [{
///     "id": "app::flow", "package": "app", "target": "flow", "kind": "test",
///     "selector": "--test flow", "path": "target/debug/deps/flow-0a1b",
///     "launch": {
///       "runner": [], "cwd": "/src/project/app", "config-env": [],
///       "library-dirs": ["/src/project/target/debug", "/src/project/target/debug/deps"],
///       "toolchain-libdir": null,
///       "env": [["CARGO_MANIFEST_DIR", "/src/project/app"], ...]
///     }
///   }]
/// }
/// ```
#[derive(Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
struct Manifest {
    /// [`FORMAT_VERSION`].
    format_version: u32,
    /// The workspace's root, as built.
    workspace_root: PathBuf,
    /// The target directory, as built.
    target_dir: PathBuf,
    /// Each package of the workspace and those of its packages it depends
    /// on: what filtersets' `deps()` and `rdeps()` follow.
    packages: PackageGraph,
    /// The test binaries, by id.
    binaries: Vec<ArchivedBinary>,
}

/// The manifest's version alone, read first: a manifest of another
/// version may not parse as this one.
#[derive(Deserialize)]
#[serde(rename_all = "kebab-case")]
struct Versioned {
    format_version: u32,
}

/// A test binary, as the manifest records it.
#[derive(Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
struct ArchivedBinary {
    id: String,
    package: String,
    target: String,
    kind: BinaryKind,
    selector: String,
    /// Its path in the archive: under `target/`.
    path: PathBuf,
    launch: ArchivedLaunch,
}

/// How a binary starts: a [`LaunchParts`] in text, its paths as built.
#[derive(Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
struct ArchivedLaunch {
    runner: Vec<String>,
    cwd: PathBuf,
    config_env: Vec<(String, String)>,
    library_dirs: Vec<PathBuf>,
    toolchain_libdir: Option<PathBuf>,
    env: Vec<(String, String)>,
}

/// Why an archive could not be made.
#[derive(Debug, thiserror::Error)]
pub(crate) enum PackError {
    #[error("failed to write the archive {}", path.display())]
    Write {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("failed to add {} to the archive", path.display())]
    Add {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("{} is not under the target directory {}, so it cannot be archived", path.display(), target_dir.display())]
    OutsideTarget { path: PathBuf, target_dir: PathBuf },
    #[error("{what} of {binary} is not UTF-8, as an archive's manifest needs it: {value:?}")]
    NotUtf8 {
        binary: String,
        what: &'static str,
        value: OsString,
    },
    #[error("the archive.include path {} does not exist (on-missing = \"error\")", path.display())]
    MissingInclude { path: PathBuf },
    #[error("failed to read the archive.include path {}", path.display())]
    Include {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

/// Why an archive could not be unpacked and read.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ExtractError {
    #[error("failed to open the archive {}", path.display())]
    Open {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("failed to read the archive {}: it is damaged, or not a zstd-compressed tar", path.display())]
    Corrupt {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("the archive {} does not start with {MANIFEST_NAME}: it is not an archive of cargo isolate", path.display())]
    NoManifest { path: PathBuf },
    #[error("the manifest of the archive {} cannot be read", path.display())]
    Manifest {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
    #[error(
        "the archive {} is of format version {found}, and this cargo-isolate reads version \
         {FORMAT_VERSION} only: run it with the cargo-isolate that made it",
        path.display()
    )]
    Version { path: PathBuf, found: u32 },
    #[error("the archive {} holds {member}, which is not a file or directory below its root", path.display())]
    BadMember { path: PathBuf, member: String },
    #[error("failed to unpack the archive {} into {}", path.display(), dir.display())]
    Unpack {
        path: PathBuf,
        dir: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("the archive {} lists the test binary {binary} as {}, but does not hold it", path.display(), member.display())]
    MissingBinary {
        path: PathBuf,
        binary: String,
        member: PathBuf,
    },
    #[error("the workspace directory {} (--workspace-remap) cannot be used", dir.display())]
    WorkspaceRemap {
        dir: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("failed to make the library search path of {binary}")]
    LibraryPath {
        binary: String,
        #[source]
        source: std::env::JoinPathsError,
    },
}

/// What [`pack`] put in an archive.
#[derive(Debug)]
pub(crate) struct Packed {
    /// Its members, the manifest among them.
    pub(crate) members: usize,
    /// The archive's size.
    pub(crate) bytes: u64,
}

/// A file or directory to archive.
#[derive(Debug, PartialEq, Eq, PartialOrd, Ord)]
struct Member {
    /// Its path relative to the target directory.
    name: PathBuf,
    /// Where it is.
    source: PathBuf,
    /// Whether it is a directory (archived alone, without its contents).
    is_dir: bool,
}

/// Archives `binaries`, built in `workspace`, with the files of
/// `includes`, into a zstd-compressed tar at `file`. The archive is
/// written beside `file` and renamed onto it, so that a failure leaves no
/// half archive, nor an existing one damaged.
///
/// Warnings (an `archive.include` path that is missing) are printed.
///
/// # Errors
///
/// When a file cannot be read or the archive written, a binary is outside
/// the target directory, something the manifest records is not UTF-8, or
/// an `archive.include` path with `on-missing = "error"` is missing.
pub(crate) fn pack(
    binaries: &[TestBinary],
    workspace: &Workspace,
    includes: &[ArchiveInclude],
    file: &Path,
) -> Result<Packed, PackError> {
    let target_dir = &workspace.build_dir;
    let manifest = Manifest::of(binaries, workspace)?;
    let manifest = serde_json::to_vec_pretty(&manifest).expect("a manifest serializes");
    let mut members = BTreeSet::new();
    let binary_files = binaries.iter().map(|binary| binary.path.clone());
    for source in binary_files.chain(shared_libraries(binaries)) {
        members.insert(Member {
            name: below(&source, target_dir)?.to_owned(),
            source,
            is_dir: false,
        });
    }
    let (included, warnings) = collect_includes(includes, target_dir)?;
    for warning in warnings {
        eprintln!("warning: {warning}");
    }
    members.extend(included);
    let write_error = |source| PackError::Write {
        path: file.to_owned(),
        source,
    };
    let dir = match file.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => Path::new("."),
    };
    let temporary = tempfile::NamedTempFile::new_in(dir).map_err(write_error)?;
    let mut encoder = zstd::Encoder::new(temporary, ZSTD_LEVEL).map_err(write_error)?;
    // Compression runs on worker threads while this one reads the files.
    let workers = std::thread::available_parallelism().map_or(1, |cores| cores.get());
    encoder
        .multithread(u32::try_from(workers).unwrap_or(1))
        .map_err(write_error)?;
    let mut builder = tar::Builder::new(encoder);
    let mut header = tar::Header::new_gnu();
    header.set_size(manifest.len() as u64);
    header.set_mode(0o644);
    header.set_cksum();
    builder
        .append_data(&mut header, MANIFEST_NAME, manifest.as_slice())
        .map_err(write_error)?;
    for member in &members {
        let name = Path::new(TARGET_MEMBER).join(&member.name);
        let added = if member.is_dir {
            builder.append_dir(&name, &member.source)
        } else {
            builder.append_path_with_name(&member.source, &name)
        };
        added.map_err(|source| PackError::Add {
            path: member.source.clone(),
            source,
        })?;
    }
    let temporary = builder
        .into_inner()
        .and_then(zstd::Encoder::finish)
        .map_err(write_error)?;
    temporary
        .as_file()
        .set_permissions(fs::Permissions::from_mode(0o644))
        .map_err(write_error)?;
    let bytes = temporary.as_file().metadata().map_err(write_error)?.len();
    temporary
        .persist(file)
        .map_err(|error| write_error(error.error))?;
    Ok(Packed {
        members: members.len() + 1,
        bytes,
    })
}

/// `path` relative to `target_dir`.
fn below<'a>(path: &'a Path, target_dir: &Path) -> Result<&'a Path, PackError> {
    path.strip_prefix(target_dir)
        .map_err(|_| PackError::OutsideTarget {
            path: path.to_owned(),
            target_dir: target_dir.to_owned(),
        })
}

/// The shared libraries `binaries` need from their library directories
/// under the target directory, and those these need in turn.
fn shared_libraries(binaries: &[TestBinary]) -> BTreeSet<PathBuf> {
    let mut found = BTreeSet::new();
    for binary in binaries {
        let dirs = &binary.launch.parts().library_dirs;
        let mut needing = vec![binary.path.clone()];
        while let Some(file) = needing.pop() {
            let names = needed_libraries(&file).unwrap_or_default();
            for name in names {
                let library = dirs
                    .iter()
                    .map(|dir| dir.join(&name))
                    .find(|path| path.is_file());
                if let Some(library) = library
                    && found.insert(library.clone())
                {
                    needing.push(library);
                }
            }
        }
    }
    found
}

/// The files and directories that `includes` name under `target_dir`, and
/// a warning for each missing path whose `on-missing` says to warn.
///
/// # Errors
///
/// When a path cannot be read, or is missing with `on-missing = "error"`.
fn collect_includes(
    includes: &[ArchiveInclude],
    target_dir: &Path,
) -> Result<(Vec<Member>, Vec<String>), PackError> {
    let mut members = Vec::new();
    let mut warnings = Vec::new();
    for include in includes {
        let RelativeTo::Target = include.relative_to;
        let path = target_dir.join(&include.path.0);
        match fs::metadata(&path) {
            Err(error) if error.kind() == io::ErrorKind::NotFound => match include.on_missing {
                OnMissing::Ignore => {}
                OnMissing::Warn => warnings.push(format!(
                    "the archive.include path {} does not exist: the archive is made without it",
                    path.display()
                )),
                OnMissing::Error => return Err(PackError::MissingInclude { path }),
            },
            Err(source) => return Err(PackError::Include { path, source }),
            Ok(metadata) => walk(
                &path,
                &include.path.0,
                &metadata,
                0,
                include.depth,
                &mut members,
            )?,
        }
    }
    Ok((members, warnings))
}

/// Adds `source`, `level` levels below an include's path, to `members` as
/// `name`, and what a directory holds as deep as `depth` reaches.
/// Symbolic links are followed: what they point to is archived.
fn walk(
    source: &Path,
    name: &Path,
    metadata: &fs::Metadata,
    level: u32,
    depth: Depth,
    members: &mut Vec<Member>,
) -> Result<(), PackError> {
    if metadata.is_file() {
        members.push(Member {
            name: name.to_owned(),
            source: source.to_owned(),
            is_dir: false,
        });
    } else if metadata.is_dir() {
        members.push(Member {
            name: name.to_owned(),
            source: source.to_owned(),
            is_dir: true,
        });
        if depth.reaches(level + 1) {
            let mut entries: Vec<OsString> = fs::read_dir(source)
                .and_then(|entries| {
                    entries
                        .map(|entry| entry.map(|entry| entry.file_name()))
                        .collect()
                })
                .map_err(|error| PackError::Include {
                    path: source.to_owned(),
                    source: error,
                })?;
            entries.sort();
            for entry in entries {
                let path = source.join(&entry);
                let metadata = fs::metadata(&path).map_err(|source| PackError::Include {
                    path: path.clone(),
                    source,
                })?;
                walk(
                    &path,
                    &name.join(&entry),
                    &metadata,
                    level + 1,
                    depth,
                    members,
                )?;
            }
        }
    }
    Ok(())
}

impl Manifest {
    /// The manifest of `binaries`, built in `workspace`.
    fn of(binaries: &[TestBinary], workspace: &Workspace) -> Result<Manifest, PackError> {
        let binaries = binaries
            .iter()
            .map(|binary| {
                let member = below(&binary.path, &workspace.build_dir)?;
                Ok(ArchivedBinary {
                    id: binary.id.clone(),
                    package: binary.package.clone(),
                    target: binary.target.clone(),
                    kind: binary.kind,
                    selector: binary.selector.clone(),
                    path: Path::new(TARGET_MEMBER).join(member),
                    launch: ArchivedLaunch::of(binary)?,
                })
            })
            .collect::<Result<_, PackError>>()?;
        Ok(Manifest {
            format_version: FORMAT_VERSION,
            workspace_root: workspace.root.clone(),
            target_dir: workspace.build_dir.clone(),
            packages: workspace.packages.clone(),
            binaries,
        })
    }
}

impl ArchivedLaunch {
    /// How `binary` starts, in text.
    fn of(binary: &TestBinary) -> Result<ArchivedLaunch, PackError> {
        let text = |what, value: &OsStr| {
            value
                .to_str()
                .map(str::to_owned)
                .ok_or_else(|| PackError::NotUtf8 {
                    binary: binary.id.clone(),
                    what,
                    value: value.to_owned(),
                })
        };
        let path = |what, value: &Path| text(what, value.as_os_str()).map(PathBuf::from);
        let vars = |what, vars: &[(OsString, OsString)]| {
            vars.iter()
                .map(|(name, value)| Ok((text(what, name)?, text(what, value)?)))
                .collect::<Result<Vec<_>, PackError>>()
        };
        let parts = binary.launch.parts();
        Ok(ArchivedLaunch {
            runner: parts
                .runner
                .iter()
                .map(|word| text("the target runner", word))
                .collect::<Result<_, _>>()?,
            cwd: path("the working directory", &parts.dir)?,
            config_env: vars("a variable of [env]", &parts.config_env)?,
            library_dirs: parts
                .library_dirs
                .iter()
                .map(|dir| path("a library directory", dir))
                .collect::<Result<_, _>>()?,
            toolchain_libdir: parts
                .toolchain_libdir
                .as_deref()
                .map(|dir| path("the toolchain's library directory", dir))
                .transpose()?,
            env: vars("an environment variable", &parts.env)?,
        })
    }

    /// The launch parts this records, with the paths under the build's
    /// roots rewritten by `remap`.
    fn remapped(self, remap: &Remap) -> LaunchParts {
        let vars = |vars: Vec<(String, String)>| {
            vars.into_iter()
                .map(|(name, value)| (name.into(), remap.value(value)))
                .collect()
        };
        LaunchParts {
            // A runner of the workspace's (a script in it) is found in
            // its checkout.
            runner: self
                .runner
                .into_iter()
                .map(|word| remap.value(word))
                .collect(),
            dir: remap.path(&self.cwd),
            config_env: vars(self.config_env),
            library_dirs: self
                .library_dirs
                .iter()
                .map(|dir| remap.path(dir))
                .collect(),
            toolchain_libdir: self.toolchain_libdir.map(|dir| remap.toolchain(dir)),
            env: vars(self.env),
        }
    }
}

/// How the paths a manifest records map to where the archive is run.
#[derive(Debug)]
struct Remap {
    /// The target directory as built, and where it was unpacked.
    target_dir: (PathBuf, PathBuf),
    /// The workspace's root as built, and where it is now.
    workspace: (PathBuf, PathBuf),
    /// The sysroot of the `rustc` here, once asked (see the module's
    /// docs); `None` where it could not say.
    sysroot: OnceLock<Option<PathBuf>>,
}

impl Remap {
    /// `path`, rewritten where it lies under one of the roots (the target
    /// directory first: it is often inside the workspace).
    fn path(&self, path: &Path) -> PathBuf {
        for (from, to) in [&self.target_dir, &self.workspace] {
            if let Ok(rest) = path.strip_prefix(from) {
                return if rest.as_os_str().is_empty() {
                    to.clone()
                } else {
                    to.join(rest)
                };
            }
        }
        path.to_owned()
    }

    /// The value of a variable: rewritten where it is an absolute path.
    fn value(&self, value: String) -> OsString {
        if value.starts_with('/') {
            self.path(Path::new(&value)).into_os_string()
        } else {
            value.into()
        }
    }

    /// The toolchain's library directory `recorded` (of
    /// `<sysroot>/lib/rustlib/<target>/lib`), or the same target's under
    /// the sysroot of the `rustc` here where `recorded` does not exist.
    fn toolchain(&self, recorded: PathBuf) -> PathBuf {
        if recorded.is_dir() {
            return recorded;
        }
        let target = recorded.parent().and_then(Path::file_name);
        let sysroot = self.sysroot.get_or_init(|| {
            let rustc = std::env::var_os("RUSTC").unwrap_or_else(|| "rustc".into());
            let output = Command::new(rustc)
                .args(["--print", "sysroot"])
                .stderr(std::process::Stdio::null())
                .output()
                .ok()
                .filter(|output| output.status.success())?;
            let text = String::from_utf8(output.stdout).ok()?;
            Some(PathBuf::from(text.trim_end()))
        });
        match (sysroot, target) {
            (Some(sysroot), Some(target)) => {
                let here = sysroot.join("lib/rustlib").join(target).join("lib");
                if here.is_dir() { here } else { recorded }
            }
            _ => recorded,
        }
    }
}

/// Where to unpack an archive and where its workspace is now.
#[derive(Debug, Default)]
pub(crate) struct ExtractOptions<'a> {
    /// The directory to unpack into (kept); `None` for a temporary one,
    /// removed when the [`Extracted`] is dropped.
    pub(crate) extract_to: Option<&'a Path>,
    /// Where the workspace's sources are now; `None` for where they were
    /// built.
    pub(crate) workspace_remap: Option<&'a Path>,
}

/// An unpacked archive: its test binaries, ready to run where they were
/// unpacked, and its workspace's packages.
#[derive(Debug)]
pub(crate) struct Extracted {
    /// The binaries, by id.
    pub(crate) binaries: Vec<TestBinary>,
    /// The workspace's packages.
    pub(crate) packages: PackageGraph,
    /// How many members were unpacked, the manifest among them.
    pub(crate) members: usize,
    /// Where.
    pub(crate) dir: PathBuf,
    /// The temporary directory unpacked into, removed on drop.
    _temporary: Option<tempfile::TempDir>,
}

/// Unpacks the archive `file` as `options` say, and reads its manifest.
///
/// # Errors
///
/// When the archive cannot be opened or read (missing, damaged, not an
/// archive of cargo isolate, of another format version), holds a member
/// outside its root, lacks a binary its manifest lists, or cannot be
/// unpacked; or when `--workspace-remap` names no directory.
pub(crate) fn extract(
    file: &Path,
    options: &ExtractOptions<'_>,
) -> Result<Extracted, ExtractError> {
    let workspace_remap = options
        .workspace_remap
        .map(|dir| {
            let remap_error = |source| ExtractError::WorkspaceRemap {
                dir: dir.to_owned(),
                source,
            };
            let metadata = fs::metadata(dir).map_err(remap_error)?;
            if !metadata.is_dir() {
                return Err(remap_error(io::Error::new(
                    io::ErrorKind::NotADirectory,
                    "not a directory",
                )));
            }
            std::path::absolute(dir).map_err(remap_error)
        })
        .transpose()?;
    let path = file.to_owned();
    let archive = File::open(file).map_err(|source| ExtractError::Open {
        path: path.clone(),
        source,
    })?;
    let unpack_error = |dir: &Path, source| ExtractError::Unpack {
        path: path.clone(),
        dir: dir.to_owned(),
        source,
    };
    let (dir, temporary) = match options.extract_to {
        Some(dir) => {
            fs::create_dir_all(dir).map_err(|source| unpack_error(dir, source))?;
            let dir = std::path::absolute(dir).map_err(|source| unpack_error(dir, source))?;
            (dir, None)
        }
        None => {
            let temporary = tempfile::Builder::new()
                .prefix("cargo-isolate-archive-")
                .tempdir()
                .map_err(|source| unpack_error(&std::env::temp_dir(), source))?;
            (temporary.path().to_owned(), Some(temporary))
        }
    };
    let corrupt = |source| ExtractError::Corrupt {
        path: path.clone(),
        source,
    };
    let decoder = zstd::Decoder::new(archive).map_err(corrupt)?;
    let mut archive = tar::Archive::new(decoder);
    let mut entries = archive.entries().map_err(corrupt)?;
    let manifest = match entries.next() {
        Some(entry) => {
            let entry = entry.map_err(corrupt)?;
            if entry.path().map_err(corrupt)?.as_ref() != Path::new(MANIFEST_NAME) {
                return Err(ExtractError::NoManifest { path });
            }
            let mut text = Vec::new();
            entry
                .take(MAX_MANIFEST_BYTES)
                .read_to_end(&mut text)
                .map_err(corrupt)?;
            read_manifest(&text, &path)?
        }
        None => return Err(ExtractError::NoManifest { path }),
    };
    let mut members = 1;
    for entry in entries {
        let mut entry = entry.map_err(corrupt)?;
        let member = String::from_utf8_lossy(&entry.path_bytes()).into_owned();
        let kind = entry.header().entry_type();
        // A file with holes, as a linker may leave an executable, is
        // archived as a GNU sparse file.
        let expected = kind.is_file() || kind.is_gnu_sparse() || kind.is_dir();
        if !expected
            || !entry
                .unpack_in(&dir)
                .map_err(|source| unpack_error(&dir, source))?
        {
            return Err(ExtractError::BadMember { path, member });
        }
        members += 1;
    }
    let remap = Remap {
        target_dir: (manifest.target_dir, dir.join(TARGET_MEMBER)),
        workspace: (
            manifest.workspace_root.clone(),
            workspace_remap.unwrap_or(manifest.workspace_root),
        ),
        sysroot: OnceLock::new(),
    };
    let binaries = manifest
        .binaries
        .into_iter()
        .map(|binary| binary.unpacked(&dir, &remap, &path))
        .collect::<Result<_, _>>()?;
    Ok(Extracted {
        binaries,
        packages: manifest.packages,
        members,
        dir,
        _temporary: temporary,
    })
}

impl ArchivedBinary {
    /// The binary, unpacked into `dir` from the archive at `archive`,
    /// ready to run with its paths rewritten by `remap`.
    fn unpacked(
        self,
        dir: &Path,
        remap: &Remap,
        archive: &Path,
    ) -> Result<TestBinary, ExtractError> {
        let executable = dir.join(&self.path);
        if !executable.is_file() {
            return Err(ExtractError::MissingBinary {
                path: archive.to_owned(),
                binary: self.id,
                member: self.path,
            });
        }
        let launch = Launch::new(self.launch.remapped(remap)).map_err(|source| {
            ExtractError::LibraryPath {
                binary: self.id.clone(),
                source,
            }
        })?;
        Ok(TestBinary {
            id: self.id,
            package: self.package,
            target: self.target,
            kind: self.kind,
            selector: self.selector,
            path: executable,
            launch: Arc::new(launch),
        })
    }
}

/// The manifest in `text`, of the archive at `path`: of this format
/// version, or an error that says which it is.
fn read_manifest(text: &[u8], path: &Path) -> Result<Manifest, ExtractError> {
    let invalid = |source| ExtractError::Manifest {
        path: path.to_owned(),
        source,
    };
    let versioned: Versioned = serde_json::from_slice(text).map_err(invalid)?;
    if versioned.format_version != FORMAT_VERSION {
        return Err(ExtractError::Version {
            path: path.to_owned(),
            found: versioned.format_version,
        });
    }
    serde_json::from_slice(text).map_err(invalid)
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    /// An `archive.include` entry, parsed from TOML as the configuration
    /// writes it.
    fn include(toml_text: &str) -> Result<ArchiveInclude, toml::de::Error> {
        toml::from_str(toml_text)
    }

    #[test]
    fn includes_read_in_nextest_s_schema() {
        let full = include(
            "path = \"fixtures/data\"\nrelative-to = \"target\"\ndepth = 2\non-missing = \"error\"\n",
        )
        .unwrap();
        assert_eq!(full.path.0, Path::new("fixtures/data"));
        assert_eq!(full.depth, Depth::Levels(2));
        assert_eq!(full.on_missing, OnMissing::Error);
        let defaults = include("path = \"data\"\nrelative-to = \"target\"\n").unwrap();
        assert_eq!(defaults.depth, Depth::Levels(16));
        assert_eq!(defaults.on_missing, OnMissing::Warn);
        let infinite = include("path = \"a\"\nrelative-to = \"target\"\ndepth = \"infinite\"\n");
        assert_eq!(infinite.unwrap().depth, Depth::Infinite);
        for bad in [
            "path = \"../up\"\nrelative-to = \"target\"\n",
            "path = \"/root\"\nrelative-to = \"target\"\n",
            "path = \"a\"\nrelative-to = \"workspace\"\n",
            "path = \"a\"\nrelative-to = \"target\"\ndepth = -1\n",
            "path = \"a\"\nrelative-to = \"target\"\ndepth = \"deep\"\n",
            "path = \"a\"\nrelative-to = \"target\"\non-missing = \"shout\"\n",
            "path = \"a\"\n",
        ] {
            assert!(include(bad).is_err(), "{bad}");
        }
    }

    /// A target directory holding `data/top`, `data/one/mid` and
    /// `data/one/two/deep`.
    fn target_with_data() -> tempfile::TempDir {
        let target = tempfile::tempdir().unwrap();
        let data = target.path().join("data");
        fs::create_dir_all(data.join("one/two")).unwrap();
        for file in ["top", "one/mid", "one/two/deep"] {
            fs::write(data.join(file), file).unwrap();
        }
        target
    }

    /// What `includes` (TOML entries) take from [`target_with_data`], as
    /// names (directories with a trailing `/`), and the warnings.
    fn collected(includes: &[&str]) -> Result<(Vec<String>, Vec<String>), PackError> {
        let target = target_with_data();
        let includes: Vec<ArchiveInclude> =
            includes.iter().map(|text| include(text).unwrap()).collect();
        let (members, warnings) = collect_includes(&includes, target.path())?;
        let names = members
            .iter()
            .map(|member| {
                assert_eq!(member.source, target.path().join(&member.name));
                let slash = if member.is_dir { "/" } else { "" };
                format!("{}{slash}", member.name.display())
            })
            .collect();
        Ok((names, warnings))
    }

    #[test]
    fn an_include_goes_as_deep_as_its_depth() {
        let at = |depth: &str| {
            collected(&[&format!(
                "path = \"data\"\nrelative-to = \"target\"\ndepth = {depth}\n"
            )])
            .unwrap()
            .0
        };
        assert_eq!(at("0"), ["data/"]);
        assert_eq!(at("1"), ["data/", "data/one/", "data/top"]);
        assert_eq!(
            at("2"),
            [
                "data/",
                "data/one/",
                "data/one/mid",
                "data/one/two/",
                "data/top"
            ]
        );
        let all = [
            "data/",
            "data/one/",
            "data/one/mid",
            "data/one/two/",
            "data/one/two/deep",
            "data/top",
        ];
        assert_eq!(at("3"), all);
        assert_eq!(at("\"infinite\""), all);
        let file = collected(&["path = \"data/one/mid\"\nrelative-to = \"target\"\ndepth = 0\n"]);
        assert_eq!(file.unwrap().0, ["data/one/mid"]);
    }

    #[test]
    fn a_missing_include_is_ignored_warned_about_or_an_error_as_on_missing_says() {
        let missing = |on_missing: &str| {
            collected(&[
                "path = \"data/top\"\nrelative-to = \"target\"\n",
                &format!(
                    "path = \"gone\"\nrelative-to = \"target\"\non-missing = \"{on_missing}\"\n"
                ),
            ])
        };
        let (names, warnings) = missing("ignore").unwrap();
        assert_eq!((names, warnings.len()), (vec!["data/top".to_owned()], 0));
        let (names, warnings) = missing("warn").unwrap();
        assert_eq!(names, ["data/top"]);
        assert_eq!(warnings.len(), 1);
        assert!(warnings[0].contains("gone does not exist"), "{warnings:?}");
        let error = missing("error").unwrap_err();
        assert!(matches!(error, PackError::MissingInclude { .. }), "{error}");
        assert!(error.to_string().contains("gone does not exist"), "{error}");
    }

    /// A build of one fake binary in a workspace at `root`, target
    /// directory `root/target`, with an include file `data/top`.
    fn fake_build(root: &Path) -> (Vec<TestBinary>, Workspace) {
        let target = root.join("target");
        let deps = target.join("debug/deps");
        fs::create_dir_all(&deps).unwrap();
        fs::create_dir_all(root.join("app")).unwrap();
        let executable = deps.join("flow-0a1b");
        fs::write(&executable, "#!/bin/sh\n").unwrap();
        fs::set_permissions(&executable, fs::Permissions::from_mode(0o755)).unwrap();
        fs::create_dir_all(target.join("data")).unwrap();
        fs::write(target.join("data/top"), "top").unwrap();
        let parts = LaunchParts {
            runner: vec!["qemu".into(), "-L".into()],
            dir: root.join("app"),
            config_env: vec![("RELATIVE".into(), root.join("config").into())],
            library_dirs: vec![target.join("debug"), deps.clone()],
            toolchain_libdir: None,
            env: vec![
                ("CARGO_MANIFEST_DIR".into(), root.join("app").into()),
                ("OUT_DIR".into(), target.join("debug/build/out").into()),
                ("NOT_A_PATH".into(), "1.0".into()),
            ],
        };
        let binary = TestBinary {
            id: "app::flow".to_owned(),
            package: "app".to_owned(),
            target: "flow".to_owned(),
            kind: BinaryKind::Test,
            selector: "--test flow".to_owned(),
            path: executable,
            launch: Arc::new(Launch::new(parts).unwrap()),
        };
        let workspace = Workspace {
            packages: PackageGraph::from_dependencies([("app", vec!["tool"]), ("tool", vec![])]),
            root: root.to_owned(),
            build_dir: target,
        };
        (vec![binary], workspace)
    }

    #[test]
    fn an_archive_runs_where_it_is_unpacked_with_its_paths_remapped() {
        let built = tempfile::tempdir().unwrap();
        let (binaries, workspace) = fake_build(built.path());
        let file = built.path().join("tests.tar.zst");
        let includes = [include("path = \"data\"\nrelative-to = \"target\"\n").unwrap()];
        let packed = pack(&binaries, &workspace, &includes, &file).unwrap();
        // The manifest, the binary, `data/` and `data/top`.
        assert_eq!(packed.members, 4);
        let moved = tempfile::tempdir().unwrap();
        let unpacked = moved.path().join("unpacked");
        let extracted = extract(
            &file,
            &ExtractOptions {
                extract_to: Some(&unpacked),
                workspace_remap: Some(moved.path()),
            },
        )
        .unwrap();
        assert_eq!(extracted.members, 4);
        assert_eq!(extracted.packages, workspace.packages);
        assert_eq!(
            fs::read_to_string(unpacked.join("target/data/top")).unwrap(),
            "top"
        );
        let [binary] = &extracted.binaries[..] else {
            panic!("{:?}", extracted.binaries);
        };
        assert_eq!(
            (binary.id.as_str(), binary.kind, binary.selector.as_str()),
            ("app::flow", BinaryKind::Test, "--test flow")
        );
        assert_eq!(binary.path, unpacked.join("target/debug/deps/flow-0a1b"));
        let mode = fs::metadata(&binary.path).unwrap().permissions().mode();
        assert_eq!(mode & 0o111, 0o111, "still executable");
        let parts = binary.launch.parts();
        let here = moved.path();
        assert_eq!(parts.runner, ["qemu", "-L"]);
        assert_eq!(parts.dir, here.join("app"));
        assert_eq!(
            parts.config_env,
            [("RELATIVE".into(), here.join("config").into())]
        );
        assert_eq!(
            parts.library_dirs,
            [
                unpacked.join("target/debug"),
                unpacked.join("target/debug/deps")
            ]
        );
        let env: BTreeMap<String, OsString> = parts
            .env
            .iter()
            .map(|(name, value)| (name.to_string_lossy().into_owned(), value.clone()))
            .collect();
        assert_eq!(env["CARGO_MANIFEST_DIR"], here.join("app").into_os_string());
        assert_eq!(
            env["OUT_DIR"],
            unpacked.join("target/debug/build/out").into_os_string()
        );
        assert_eq!(env["NOT_A_PATH"], "1.0");
    }

    #[test]
    fn a_missing_toolchain_directory_is_found_under_the_sysroot_here() {
        let sysroot = tempfile::tempdir().unwrap();
        let here = sysroot
            .path()
            .join("lib/rustlib/x86_64-unknown-linux-gnu/lib");
        fs::create_dir_all(&here).unwrap();
        let remap = Remap {
            target_dir: (PathBuf::from("/built/target"), PathBuf::from("/run/target")),
            workspace: (PathBuf::from("/built"), PathBuf::from("/run")),
            sysroot: OnceLock::from(Some(sysroot.path().to_owned())),
        };
        let elsewhere = PathBuf::from(
            "/home/builder/.rustup/toolchains/x/lib/rustlib/x86_64-unknown-linux-gnu/lib",
        );
        assert_eq!(remap.toolchain(elsewhere), here);
        // One that exists here is kept, as is one rustc does not know.
        assert_eq!(remap.toolchain(sysroot.path().to_owned()), sysroot.path());
        let unknown = PathBuf::from("/toolchain/lib/rustlib/no-such-target/lib");
        assert_eq!(remap.toolchain(unknown.clone()), unknown);
        // Paths under the target directory first, then the workspace's.
        assert_eq!(
            remap.path(Path::new("/built/target/debug")),
            Path::new("/run/target/debug")
        );
        assert_eq!(remap.path(Path::new("/built")), Path::new("/run"));
        assert_eq!(remap.path(Path::new("/builtin/x")), Path::new("/builtin/x"));
        assert_eq!(remap.value("/built/app".to_owned()), "/run/app");
        assert_eq!(remap.value("built/app".to_owned()), "built/app");
    }

    /// Writes a zstd-compressed tar of `members` (name, contents) to `file`.
    fn write_archive(file: &Path, members: &[(&str, &[u8])]) {
        let encoder = zstd::Encoder::new(File::create(file).unwrap(), 3).unwrap();
        let mut builder = tar::Builder::new(encoder);
        for (name, contents) in members {
            let mut header = tar::Header::new_gnu();
            header.set_size(contents.len() as u64);
            header.set_mode(0o644);
            header.set_cksum();
            builder.append_data(&mut header, name, *contents).unwrap();
        }
        builder.into_inner().unwrap().finish().unwrap();
    }

    /// What extracting `file` fails with.
    fn extract_error(file: &Path) -> ExtractError {
        extract(file, &ExtractOptions::default()).unwrap_err()
    }

    #[test]
    fn an_archive_that_cannot_be_used_is_a_clear_error() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("tests.tar.zst");
        assert!(matches!(extract_error(&file), ExtractError::Open { .. }));
        fs::write(&file, b"not an archive at all").unwrap();
        assert!(matches!(extract_error(&file), ExtractError::Corrupt { .. }));
        write_archive(&file, &[("README", b"hello")]);
        assert!(matches!(
            extract_error(&file),
            ExtractError::NoManifest { .. }
        ));
        write_archive(&file, &[(MANIFEST_NAME, b"{\"format-version\": 99}")]);
        let error = extract_error(&file);
        assert!(
            matches!(error, ExtractError::Version { found: 99, .. }),
            "{error}"
        );
        write_archive(&file, &[(MANIFEST_NAME, b"{\"format-version\": 1}")]);
        assert!(matches!(
            extract_error(&file),
            ExtractError::Manifest { .. }
        ));

        let built = tempfile::tempdir().unwrap();
        let (binaries, workspace) = fake_build(built.path());
        let manifest = serde_json::to_vec(&Manifest::of(&binaries, &workspace).unwrap()).unwrap();
        write_archive(&file, &[(MANIFEST_NAME, &manifest)]);
        let error = extract_error(&file);
        assert!(
            matches!(error, ExtractError::MissingBinary { .. }),
            "{error}"
        );
        assert!(
            error
                .to_string()
                .contains("lists the test binary app::flow"),
            "{error}"
        );
        let error = extract(
            &file,
            &ExtractOptions {
                extract_to: None,
                workspace_remap: Some(&dir.path().join("nowhere")),
            },
        )
        .unwrap_err();
        assert!(
            matches!(error, ExtractError::WorkspaceRemap { .. }),
            "{error}"
        );
    }
}

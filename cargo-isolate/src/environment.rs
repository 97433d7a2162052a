//! The environment `cargo test` gives a test process, and the one place
//! where the command that starts a test binary is made, for its listing
//! and for its runs alike ([`Launch::command`]).
//!
//! As under `cargo test` (and `cargo nextest run`), a test binary starts:
//!
//! - through the target runner, where one is configured
//!   (`CARGO_TARGET_<TRIPLE>_RUNNER`, `target.<triple>.runner`,
//!   `target.'cfg(..)'.runner`): `RUNNER ARGS… BINARY ARGS…`;
//! - in its package's directory;
//! - with the `[env]` table of cargo's configuration (see
//!   [`crate::cargo_config`]);
//! - with `LD_LIBRARY_PATH` led by the native library directories that
//!   build scripts named inside the profile's output directory, that
//!   directory and its `deps`, and the toolchain's library directory for
//!   the target, where a binary built with `-C prefer-dynamic` finds
//!   `libstd` (see below for when);
//! - with what its package's build script set: `OUT_DIR` and its
//!   `cargo::rustc-env` variables;
//! - with `CARGO` and its package's variables: `CARGO_MANIFEST_DIR`,
//!   `CARGO_MANIFEST_PATH`, `CARGO_PKG_NAME`, `CARGO_PKG_VERSION` and its
//!   `_MAJOR`, `_MINOR`, `_PATCH` and `_PRE`, `CARGO_PKG_AUTHORS` (joined
//!   by `:`), `_DESCRIPTION`, `_HOMEPAGE`, `_REPOSITORY`, `_LICENSE`,
//!   `_LICENSE_FILE`, `_README` and `_RUST_VERSION`, empty when unset.
//!   These win over `[env]`, `force` or not, as cargo's own do.
//!
//! What cargo knows is read from cargo: the packages from `cargo
//! metadata`, what build scripts set from the build's messages, the
//! toolchain's library directory and the target's `cfg` from the rustc
//! cargo runs. Only cargo's configuration is read from its files, as
//! cargo has no stable way to print it.
//!
//! Rustc is asked only where its answer is needed, as asking costs tens
//! of milliseconds of every run:
//!
//! - where a runner may be configured (a `target.*.runner` key or a
//!   `CARGO_TARGET_*_RUNNER` variable), for every binary, the host's
//!   question asked while `cargo metadata` runs;
//! - otherwise, only for a binary that needs a `libstd-*.so` (a
//!   `DT_NEEDED` entry of its ELF dynamic section names one) or whose ELF
//!   headers cannot be read.
//!
//! Each target is asked about once.
//!
//! Not matched: where no runner is configured, a binary that needs no
//! `libstd-*.so` itself is started without the toolchain's library
//! directory on its `LD_LIBRARY_PATH`, so a library it loads that does
//! finds `libstd` only on the inherited path; a binary listed while cargo
//! still builds others gets the native library directories of the build
//! scripts that ran before it (its own dependencies' among them), where
//! cargo names those of the whole build; `target.'cfg(..)'` keys are matched against rustc's `cfg`
//! for the target without the build's `RUSTFLAGS`.

use std::collections::{BTreeSet, HashMap};
use std::ffi::{OsStr, OsString};
use std::fs::File;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::Arc;

use cargo_metadata::cargo_platform::Cfg;
use cargo_metadata::semver::Version;
use cargo_metadata::{BuildScript, MetadataCommand, PackageId};
use object::elf::{DT_NEEDED, FileHeader32, FileHeader64};
use object::read::elf::FileHeader;
use object::{Endianness, FileKind, ReadCache, ReadRef};
use serde::Deserialize;

use crate::build::PackageGraph;
use crate::cargo_config::{CargoConfig, ConfigError};
use crate::cli::CargoOptions;

/// The variable of the dynamic linker's search path.
const LIBRARY_PATH: &str = "LD_LIBRARY_PATH";

/// How `cargo test` starts a test binary: shared by all its tests.
#[derive(Debug, Default)]
pub(crate) struct Launch {
    /// What it is made of, as built or as an archive recorded it.
    parts: LaunchParts,
    /// The value of `LD_LIBRARY_PATH`: the parts' directories, then the
    /// inherited path; worked out once, not for every test.
    library_path: OsString,
}

/// What a [`Launch`] is made of, apart so that an archive can record it
/// and rewrite its paths on another machine (see [`crate::archive`]).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct LaunchParts {
    /// The target runner and its arguments, before the binary's path.
    pub(crate) runner: Vec<OsString>,
    /// The package's directory: tests run there.
    pub(crate) dir: PathBuf,
    /// The `[env]` variables of cargo's configuration, set first.
    pub(crate) config_env: Vec<(OsString, OsString)>,
    /// The build's directories that lead `LD_LIBRARY_PATH`: native
    /// library directories build scripts named inside the profile's
    /// output directory, that directory and its `deps`.
    pub(crate) library_dirs: Vec<PathBuf>,
    /// The toolchain's library directory for the binary's target, after
    /// them, where the binary needs the toolchain's `libstd` or a runner
    /// may be configured.
    pub(crate) toolchain_libdir: Option<PathBuf>,
    /// The variables set after `LD_LIBRARY_PATH`, in this order, a later
    /// one winning: what the package's build script set, then cargo's.
    pub(crate) env: Vec<(OsString, OsString)>,
}

impl Launch {
    /// The launch made of `parts`, with the library search path of this
    /// process after the parts' directories.
    ///
    /// # Errors
    ///
    /// When a directory holds the path separator `:`.
    pub(crate) fn new(parts: LaunchParts) -> Result<Launch, std::env::JoinPathsError> {
        let mut search = parts.library_dirs.clone();
        search.extend(parts.toolchain_libdir.clone());
        let inherited: Vec<PathBuf> = std::env::var_os(LIBRARY_PATH)
            .map(|paths| std::env::split_paths(&paths).collect())
            .unwrap_or_default();
        // Where this process runs under cargo (a test of a test runner,
        // say), the inherited path may lead with these already: as cargo
        // does, they are not repeated.
        if inherited.starts_with(&search) {
            search = inherited;
        } else {
            search.extend(inherited);
        }
        let library_path = std::env::join_paths(search)?;
        Ok(Launch {
            parts,
            library_path,
        })
    }

    /// What the launch is made of.
    pub(crate) fn parts(&self) -> &LaunchParts {
        &self.parts
    }

    /// The command that starts `binary` as `cargo test` starts it: through
    /// the target runner, in the package's directory, with cargo's
    /// environment for it. Arguments, output and the rest are the
    /// caller's.
    pub(crate) fn command(&self, binary: &Path) -> Command {
        let parts = &self.parts;
        let mut command = match parts.runner.split_first() {
            Some((runner, args)) => {
                let mut command = Command::new(runner);
                command.args(args).arg(binary);
                command
            }
            None => Command::new(binary),
        };
        command
            .current_dir(&parts.dir)
            .envs(parts.config_env.iter().map(|(name, value)| (name, value)))
            .env(LIBRARY_PATH, &self.library_path)
            .envs(parts.env.iter().map(|(name, value)| (name, value)));
        command
    }
}

/// Why the environment of the tests could not be worked out.
#[derive(Debug, thiserror::Error)]
pub(crate) enum EnvironmentError {
    #[error("failed to read cargo's configuration")]
    Config(#[from] ConfigError),
    #[error("failed to read the workspace's metadata")]
    Metadata(#[source] cargo_metadata::Error),
    #[error("failed to ask {} about the target {target}", rustc.to_string_lossy())]
    Rustc {
        rustc: OsString,
        target: String,
        #[source]
        source: io::Error,
    },
    #[error("failed to make {LIBRARY_PATH} for {}", binary.display())]
    LibraryPath {
        binary: PathBuf,
        #[source]
        source: std::env::JoinPathsError,
    },
}

/// What the launches of a run's test binaries are made of, gathered from
/// cargo as it builds.
pub(crate) struct Environment {
    config: CargoConfig,
    /// The `[env]` variables every test gets.
    config_env: Vec<(String, OsString)>,
    /// The value of `CARGO`.
    cargo: OsString,
    rustc: OsString,
    packages: HashMap<PackageId, Package>,
    /// The workspace's root directory.
    workspace_root: PathBuf,
    /// The directory host artifacts are built under, beside those of
    /// each `--target`.
    build_dir: PathBuf,
    /// By package: what its build script set for its tests.
    build_scripts: HashMap<PackageId, Vec<(OsString, OsString)>>,
    /// The library directories build scripts named.
    native_dirs: BTreeSet<PathBuf>,
    /// Whether a target runner may be configured: where none is, rustc is
    /// asked only for a binary that needs the toolchain's `libstd`.
    may_have_runner: bool,
    /// By target (`None` for the host), once rustc was asked.
    platforms: HashMap<Option<String>, Arc<Platform>>,
}

/// What a target's tests run with.
#[derive(Debug)]
struct Platform {
    /// The toolchain's libraries for it: `libstd` and the rest.
    target_libdir: PathBuf,
    /// Its runner and the runner's arguments; empty for none.
    runner: Vec<OsString>,
}

/// The part of `cargo metadata` read here.
///
/// Read into types of its own because `cargo_metadata::Package` makes
/// `rust-version = "1.80"` a three-part version, and cargo sets
/// `CARGO_PKG_RUST_VERSION` to the text as written.
#[derive(Deserialize)]
struct Metadata {
    packages: Vec<Package>,
    workspace_root: PathBuf,
    target_directory: PathBuf,
    #[serde(default)]
    build_directory: Option<PathBuf>,
}

#[derive(Deserialize)]
struct Package {
    id: PackageId,
    name: String,
    version: Version,
    #[serde(default)]
    authors: Vec<String>,
    description: Option<String>,
    homepage: Option<String>,
    repository: Option<String>,
    license: Option<String>,
    license_file: Option<String>,
    readme: Option<String>,
    rust_version: Option<String>,
    manifest_path: PathBuf,
    #[serde(default)]
    dependencies: Vec<Dependency>,
}

/// A dependency of a package, as far as the package graph needs it.
#[derive(Deserialize)]
struct Dependency {
    /// The directory of a path dependency.
    path: Option<PathBuf>,
}

impl Package {
    /// Cargo's variables for the package, but for its manifest's paths.
    fn vars(&self) -> [(&'static str, String); 14] {
        let text = |value: &Option<String>| value.clone().unwrap_or_default();
        [
            ("CARGO_PKG_NAME", self.name.clone()),
            ("CARGO_PKG_VERSION", self.version.to_string()),
            ("CARGO_PKG_VERSION_MAJOR", self.version.major.to_string()),
            ("CARGO_PKG_VERSION_MINOR", self.version.minor.to_string()),
            ("CARGO_PKG_VERSION_PATCH", self.version.patch.to_string()),
            ("CARGO_PKG_VERSION_PRE", self.version.pre.to_string()),
            ("CARGO_PKG_AUTHORS", self.authors.join(":")),
            ("CARGO_PKG_DESCRIPTION", text(&self.description)),
            ("CARGO_PKG_HOMEPAGE", text(&self.homepage)),
            ("CARGO_PKG_REPOSITORY", text(&self.repository)),
            ("CARGO_PKG_LICENSE", text(&self.license)),
            ("CARGO_PKG_LICENSE_FILE", text(&self.license_file)),
            ("CARGO_PKG_README", text(&self.readme)),
            ("CARGO_PKG_RUST_VERSION", text(&self.rust_version)),
        ]
    }
}

impl Environment {
    /// Reads cargo's configuration, the workspace's metadata and, where a
    /// target runner may be configured, what the host's rustc says, for a
    /// build with `options` by `cargo`.
    ///
    /// # Errors
    ///
    /// When one of them cannot be read.
    pub(crate) fn new(options: &CargoOptions, cargo: &Path) -> Result<Self, EnvironmentError> {
        let config = CargoConfig::load()?;
        let rustc = config.rustc();
        let may_have_runner = config.may_have_runner(std::env::vars_os().map(|(name, _)| name));
        // Asked while `cargo metadata` runs, where every binary needs it.
        let host = may_have_runner.then(|| ask_rustc(&rustc, None));
        let metadata = read_metadata(options, cargo);
        let host = host.map(|host| host.and_then(Child::wait_with_output));
        let metadata = metadata?;
        let config_env = config.env_vars(|name| std::env::var_os(name).is_some());
        let mut environment = Environment {
            config,
            config_env,
            cargo: on_path(cargo),
            rustc,
            packages: metadata
                .packages
                .into_iter()
                .map(|package| (package.id.clone(), package))
                .collect(),
            workspace_root: metadata.workspace_root,
            build_dir: metadata
                .build_directory
                .unwrap_or(metadata.target_directory),
            build_scripts: HashMap::new(),
            native_dirs: BTreeSet::new(),
            may_have_runner,
            platforms: HashMap::new(),
        };
        if let Some(host) = host {
            let host = environment.platform_from(host, None)?;
            environment.platforms.insert(None, Arc::new(host));
        }
        Ok(environment)
    }

    /// The workspace's packages and the path dependencies between them.
    pub(crate) fn package_graph(&self) -> PackageGraph {
        let by_dir: HashMap<&Path, &str> = self
            .packages
            .values()
            .filter_map(|package| Some((package.manifest_path.parent()?, package.name.as_str())))
            .collect();
        PackageGraph::from_dependencies(self.packages.values().map(|package| {
            let dependencies = package
                .dependencies
                .iter()
                .filter_map(|dependency| by_dir.get(dependency.path.as_deref()?).copied())
                .collect();
            (package.name.as_str(), dependencies)
        }))
    }

    /// The workspace's root directory.
    pub(crate) fn workspace_root(&self) -> &Path {
        &self.workspace_root
    }

    /// The directory the build's artifacts are under: cargo's target
    /// directory, or its build directory where one is set apart.
    pub(crate) fn build_dir(&self) -> &Path {
        &self.build_dir
    }

    /// The name of package `id`, if it is one of the workspace's.
    pub(crate) fn package_name(&self, id: &PackageId) -> Option<&str> {
        self.packages.get(id).map(|package| package.name.as_str())
    }

    /// Takes in what a build script set, for the tests built after it.
    pub(crate) fn build_script_ran(&mut self, script: BuildScript) {
        for path in &script.linked_paths {
            let path = path.as_str();
            let dir = match path.split_once('=') {
                Some(("native" | "crate" | "dependency" | "framework" | "all", dir)) => dir,
                _ => path,
            };
            self.native_dirs.insert(PathBuf::from(dir));
        }
        let vars = std::iter::once(("OUT_DIR".into(), script.out_dir.into_std_path_buf().into()))
            .chain(
                script
                    .env
                    .into_iter()
                    .map(|(name, value)| (name.into(), value.into())),
            )
            .collect();
        self.build_scripts.insert(script.package_id, vars);
    }

    /// How to start `executable`, a test binary of package `id` whose
    /// manifest is `manifest`.
    ///
    /// # Errors
    ///
    /// When rustc, asked, cannot say where the toolchain's libraries for
    /// its target are, or its runner names no program.
    pub(crate) fn launch(
        &mut self,
        id: &PackageId,
        manifest: &Path,
        executable: &Path,
    ) -> Result<Launch, EnvironmentError> {
        // `<build dir>[/<target>]/<profile>/deps/<executable>`
        let deps = executable.parent().unwrap_or(Path::new("/"));
        let output = deps.parent().unwrap_or(deps);
        let target = output
            .parent()
            .filter(|dir| *dir != self.build_dir)
            .and_then(Path::file_name)
            .map(|target| target.to_string_lossy().into_owned());
        let platform = if self.may_have_runner || needs_shared_std(executable) {
            Some(self.platform(target)?)
        } else {
            None
        };
        let mut library_dirs: Vec<PathBuf> = self
            .native_dirs
            .iter()
            .filter(|dir| dir.starts_with(output))
            .cloned()
            .collect();
        library_dirs.extend([output.to_owned(), deps.to_owned()]);
        let dir = manifest.parent().unwrap_or(Path::new("/"));
        let mut env: Vec<(OsString, OsString)> = self
            .build_scripts
            .get(id)
            .into_iter()
            .flatten()
            .cloned()
            .collect();
        env.extend([
            ("CARGO".into(), self.cargo.clone()),
            ("CARGO_MANIFEST_DIR".into(), dir.into()),
            ("CARGO_MANIFEST_PATH".into(), manifest.into()),
        ]);
        if let Some(package) = self.packages.get(id) {
            env.extend(
                package
                    .vars()
                    .into_iter()
                    .map(|(name, value)| (name.into(), value.into())),
            );
        }
        Launch::new(LaunchParts {
            runner: platform
                .as_ref()
                .map(|platform| platform.runner.clone())
                .unwrap_or_default(),
            dir: dir.to_owned(),
            config_env: self
                .config_env
                .iter()
                .map(|(name, value)| (name.into(), value.clone()))
                .collect(),
            library_dirs,
            toolchain_libdir: platform.map(|platform| platform.target_libdir.clone()),
            env,
        })
        .map_err(|source| EnvironmentError::LibraryPath {
            binary: executable.to_owned(),
            source,
        })
    }

    /// The platform of `target` (`None` for the host), asking rustc the
    /// first time.
    fn platform(&mut self, target: Option<String>) -> Result<Arc<Platform>, EnvironmentError> {
        if let Some(platform) = self.platforms.get(&target) {
            return Ok(Arc::clone(platform));
        }
        let answer = ask_rustc(&self.rustc, target.as_deref()).and_then(Child::wait_with_output);
        let platform = Arc::new(self.platform_from(answer, target.as_deref())?);
        self.platforms.insert(target, Arc::clone(&platform));
        Ok(platform)
    }

    /// The platform of `target` (`None` for the host) from rustc's
    /// `answer` to [`ask_rustc`].
    fn platform_from(
        &self,
        answer: io::Result<Output>,
        target: Option<&str>,
    ) -> Result<Platform, EnvironmentError> {
        let failed = |source| EnvironmentError::Rustc {
            rustc: self.rustc.clone(),
            target: target.unwrap_or("of the host").to_owned(),
            source,
        };
        let told = answer
            .and_then(|output| RustcAnswer::read(&output, target))
            .map_err(failed)?;
        Ok(Platform {
            runner: self
                .config
                .runner(&told.triple, &told.cfg, |name| std::env::var(name).ok())?,
            target_libdir: told.target_libdir,
        })
    }
}

/// What rustc says of a target, answering [`ask_rustc`].
pub(crate) struct RustcAnswer {
    pub(crate) triple: String,
    pub(crate) target_libdir: PathBuf,
    pub(crate) cfg: Vec<Cfg>,
}

impl RustcAnswer {
    /// Asks `rustc` about `target` (`None` for the host), and waits.
    pub(crate) fn ask(rustc: &OsStr, target: Option<&str>) -> io::Result<RustcAnswer> {
        let output = ask_rustc(rustc, target)?.wait_with_output()?;
        RustcAnswer::read(&output, target)
    }

    /// Reads rustc's `output` for `target` (`None` for the host).
    fn read(output: &Output, target: Option<&str>) -> io::Result<RustcAnswer> {
        if !output.status.success() {
            return Err(io::Error::other(format!(
                "{}: {}",
                output.status,
                String::from_utf8_lossy(&output.stderr).trim_end()
            )));
        }
        let text = String::from_utf8_lossy(&output.stdout);
        let mut lines = text.lines();
        let triple = match target {
            Some(target) => Some(target),
            None => lines.next(),
        };
        let (Some(triple), Some(target_libdir)) = (triple, lines.next()) else {
            return Err(io::Error::other("it printed too few lines"));
        };
        Ok(RustcAnswer {
            triple: triple.to_owned(),
            target_libdir: PathBuf::from(target_libdir),
            cfg: lines.filter_map(|line| line.parse().ok()).collect(),
        })
    }
}

/// Starts `rustc` printing, for `target` (`None` for the host), the host's
/// triple (for the host only), the toolchain's library directory and the
/// target's `cfg`, a line each.
fn ask_rustc(rustc: &OsStr, target: Option<&str>) -> io::Result<Child> {
    let mut command = Command::new(rustc);
    match target {
        Some(target) => command.args(["--target", target]),
        None => command.args(["--print", "host-tuple"]),
    };
    command
        .args(["--print", "target-libdir", "--print", "cfg"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
}

/// Whether `executable` needs a `libstd-*.so`, as a binary built with `-C
/// prefer-dynamic` does: a `DT_NEEDED` entry of its dynamic section names
/// one. Also where it cannot be read as an ELF file, so that the toolchain's
/// library directory is not left out for want of knowing.
fn needs_shared_std(executable: &Path) -> bool {
    needed_libraries(executable).is_none_or(|names| {
        names.iter().any(|name| {
            let name = name.as_bytes();
            name.starts_with(b"libstd-") && name.ends_with(b".so")
        })
    })
}

/// The shared libraries the ELF file at `path` needs: its `DT_NEEDED`
/// entries, such as `libstd-1a2b.so` or `libmy_dylib.so`. `None` where it
/// cannot be read or its headers cannot be parsed, or it has no section
/// headers to find its dynamic section by.
///
/// Only the headers and the dynamic section are read, not the whole file.
pub(crate) fn needed_libraries(path: &Path) -> Option<Vec<OsString>> {
    let file = File::open(path).ok()?;
    let data = &ReadCache::new(file);
    let names = match FileKind::parse(data) {
        Ok(FileKind::Elf32) => needed_entries::<FileHeader32<Endianness>, _>(data),
        Ok(FileKind::Elf64) => needed_entries::<FileHeader64<Endianness>, _>(data),
        _ => None,
    }?;
    Some(
        names
            .into_iter()
            .map(|name| OsStr::from_bytes(name).to_owned())
            .collect(),
    )
}

/// The `DT_NEEDED` entries of the ELF file `data`; `None` where its
/// headers cannot be read, or it has no section headers to find its
/// dynamic section by.
fn needed_entries<'data, Elf: FileHeader, R: ReadRef<'data>>(data: R) -> Option<Vec<&'data [u8]>> {
    let header = Elf::parse(data).ok()?;
    let endian = header.endian().ok()?;
    let sections = header.sections(endian, data).ok()?;
    if sections.is_empty() {
        return None;
    }
    let dynamic = sections.dynamic_table(endian, data).ok()?;
    dynamic
        .iter()
        .filter(|entry| entry.tag == DT_NEEDED)
        .map(|entry| dynamic.string(entry).ok())
        .collect()
}

/// `cargo metadata` of the workspace's packages.
fn read_metadata(options: &CargoOptions, cargo: &Path) -> Result<Metadata, EnvironmentError> {
    let mut metadata = MetadataCommand::new();
    metadata.cargo_path(cargo);
    if let Some(manifest) = &options.manifest_path {
        metadata.manifest_path(manifest);
    }
    // `cargo metadata` takes no `--target-dir`: where the build puts the
    // binaries is said as cargo's variable says it.
    if let Some(dir) = &options.target_dir {
        metadata.env("CARGO_TARGET_DIR", dir);
    }
    let mut flags = Vec::new();
    if options.offline || options.frozen {
        flags.push("--offline".to_owned());
    }
    if options.locked || options.frozen {
        flags.push("--locked".to_owned());
    }
    let output = metadata
        .no_deps()
        .other_options(flags)
        .cargo_command()
        .stderr(Stdio::piped())
        .output()
        .map_err(|error| EnvironmentError::Metadata(error.into()))?;
    if !output.status.success() {
        return Err(EnvironmentError::Metadata(
            cargo_metadata::Error::CargoMetadata {
                stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
            },
        ));
    }
    let stdout = String::from_utf8_lossy(&output.stdout);
    let json = stdout
        .lines()
        .find(|line| line.starts_with('{'))
        .ok_or(EnvironmentError::Metadata(cargo_metadata::Error::NoJson))?;
    serde_json::from_str(json).map_err(|error| EnvironmentError::Metadata(error.into()))
}

/// `program` as a path: found on the `PATH` when it is a bare name, as
/// cargo's own path is one.
fn on_path(program: &Path) -> OsString {
    if program.components().count() > 1 {
        return std::path::absolute(program)
            .map_or_else(|_| program.into(), PathBuf::into_os_string);
    }
    std::env::var_os("PATH")
        .iter()
        .flat_map(std::env::split_paths)
        .map(|dir| dir.join(program))
        .find(|path| path.is_file())
        .map_or_else(|| program.into(), PathBuf::into_os_string)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An environment without packages whose rustc is `rustc`.
    fn environment(rustc: &Path, may_have_runner: bool) -> Environment {
        Environment {
            config: CargoConfig::default(),
            config_env: Vec::new(),
            cargo: OsString::from("cargo"),
            rustc: rustc.into(),
            packages: HashMap::new(),
            workspace_root: PathBuf::from("/"),
            build_dir: PathBuf::from("/"),
            build_scripts: HashMap::new(),
            native_dirs: BTreeSet::new(),
            may_have_runner,
            platforms: HashMap::new(),
        }
    }

    fn launch(
        environment: &mut Environment,
        executable: &Path,
    ) -> Result<Launch, EnvironmentError> {
        let id = PackageId {
            repr: "package".to_owned(),
        };
        environment.launch(&id, Path::new("/package/Cargo.toml"), executable)
    }

    #[test]
    fn a_binary_linked_statically_with_std_needs_no_shared_libstd() {
        assert!(!needs_shared_std(&std::env::current_exe().unwrap()));
    }

    #[test]
    fn a_prefer_dynamic_binary_needs_the_shared_libstd() {
        let dir = tempfile::tempdir().unwrap();
        let source = dir.path().join("main.rs");
        std::fs::write(&source, "fn main() {}\n").unwrap();
        let binary = dir.path().join("main");
        let status = Command::new("rustc")
            .args(["-C", "prefer-dynamic", "-o"])
            .arg(&binary)
            .arg(&source)
            .status()
            .unwrap();
        assert!(status.success());
        assert!(needs_shared_std(&binary));
    }

    #[test]
    fn a_binary_that_cannot_be_read_as_elf_may_need_it() {
        let dir = tempfile::tempdir().unwrap();
        let script = dir.path().join("script");
        std::fs::write(&script, "#!/bin/sh\n").unwrap();
        assert!(needs_shared_std(&script));
        assert!(needs_shared_std(&dir.path().join("missing")));
    }

    #[test]
    fn rustc_is_asked_only_where_a_runner_or_libstd_needs_it() {
        let dir = tempfile::tempdir().unwrap();
        let rustc = dir.path().join("no-rustc");
        let executable = std::env::current_exe().unwrap();
        let started = launch(&mut environment(&rustc, false), &executable).unwrap();
        assert!(started.parts().runner.is_empty());
        let asked = |result: Result<Launch, EnvironmentError>| {
            matches!(result, Err(EnvironmentError::Rustc { .. }))
        };
        assert!(asked(launch(&mut environment(&rustc, true), &executable)));
        assert!(asked(launch(
            &mut environment(&rustc, false),
            &dir.path().join("missing")
        )));
    }
}

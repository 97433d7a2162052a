//! Building the tests: `cargo test --no-run` with the pass-through options,
//! its JSON message stream parsed with `cargo_metadata`, and, from what
//! cargo says as it builds, how each test binary is to be started (see
//! [`crate::environment`]).

use std::collections::BTreeMap;
use std::io::{self, BufReader};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::Arc;

use cargo_metadata::{Message, TargetKind};

use crate::cli::CargoOptions;
use crate::environment::{Environment, EnvironmentError, Launch};

/// A test executable cargo built.
#[derive(Clone, Debug)]
pub(crate) struct TestBinary {
    /// A name for the binary that says where it comes from: `package` for
    /// a library's unit tests, `package::target` for a test target,
    /// `package::bin/target` and so on for the others.
    pub(crate) id: String,
    /// The package's name.
    pub(crate) package: String,
    /// The target's name.
    pub(crate) target: String,
    /// The target's kind.
    pub(crate) kind: BinaryKind,
    /// The `cargo test` selection flag for the target (`--lib`,
    /// `--test NAME`, ...), for the commands that rerun one test.
    pub(crate) selector: String,
    /// The executable.
    pub(crate) path: PathBuf,
    /// How `cargo test` starts it.
    pub(crate) launch: Arc<Launch>,
}

impl TestBinary {
    /// The command that starts the binary as `cargo test` starts it (see
    /// [`Launch::command`]).
    pub(crate) fn command(&self) -> Command {
        self.launch.command(&self.path)
    }

    /// A binary of target `target` of `package`, of `kind`, with the id
    /// cargo isolate gives it, for tests of what reads binaries.
    #[cfg(test)]
    pub(crate) fn for_tests(package: &str, target: &str, kind: BinaryKind) -> TestBinary {
        let id = match kind {
            BinaryKind::Lib | BinaryKind::ProcMacro => package.to_owned(),
            BinaryKind::Test => format!("{package}::{target}"),
            other => format!("{package}::{}/{target}", other.as_str()),
        };
        TestBinary {
            id,
            package: package.to_owned(),
            target: target.to_owned(),
            kind,
            selector: String::new(),
            path: PathBuf::new(),
            launch: Arc::default(),
        }
    }
}

/// The kind of target a test binary is built from, named as nextest names
/// it (filtersets' `kind()`), and as an archive's manifest records it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub(crate) enum BinaryKind {
    /// A library's unit tests (whatever its crate type, but a proc-macro).
    Lib,
    /// A proc-macro library's unit tests, which run on the host.
    ProcMacro,
    Bin,
    /// An integration test (`tests/`, `[[test]]`).
    Test,
    Bench,
    Example,
}

impl BinaryKind {
    /// The kind of a target whose first kind cargo says is `kind`.
    fn of(kind: Option<&TargetKind>) -> BinaryKind {
        match kind {
            Some(
                TargetKind::Lib
                | TargetKind::RLib
                | TargetKind::CDyLib
                | TargetKind::DyLib
                | TargetKind::StaticLib,
            ) => BinaryKind::Lib,
            Some(TargetKind::ProcMacro) => BinaryKind::ProcMacro,
            Some(TargetKind::Bin) => BinaryKind::Bin,
            Some(TargetKind::Example) => BinaryKind::Example,
            Some(TargetKind::Bench) => BinaryKind::Bench,
            _ => BinaryKind::Test,
        }
    }

    /// The kind's name, which is also cargo's flag for one target of it
    /// (`--bin NAME`) and the middle of the binary's id
    /// (`package::bin/NAME`).
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            BinaryKind::Lib => "lib",
            BinaryKind::ProcMacro => "proc-macro",
            BinaryKind::Bin => "bin",
            BinaryKind::Test => "test",
            BinaryKind::Bench => "bench",
            BinaryKind::Example => "example",
        }
    }
}

/// The workspace's packages, by name, and the dependencies between them:
/// what filtersets' `deps()` and `rdeps()` follow. An archive records it
/// as it is: each package with its dependencies.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(transparent)]
pub(crate) struct PackageGraph {
    /// Each package, and the workspace's packages it depends on directly
    /// (as a normal, build or dev-dependency); ordered, so that an archive
    /// made twice of one build is the same.
    dependencies: BTreeMap<String, Vec<String>>,
}

/// What a build says of the workspace, beside its test binaries.
#[derive(Debug)]
pub(crate) struct Workspace {
    /// Its packages and their dependencies.
    pub(crate) packages: PackageGraph,
    /// Its root directory.
    pub(crate) root: PathBuf,
    /// The directory the build's artifacts are under (see
    /// [`Environment::build_dir`]).
    pub(crate) build_dir: PathBuf,
}

impl PackageGraph {
    /// The graph of `packages`, each with its direct dependencies.
    pub(crate) fn from_dependencies<P: Into<String>, D: Into<String>>(
        packages: impl IntoIterator<Item = (P, Vec<D>)>,
    ) -> PackageGraph {
        PackageGraph {
            dependencies: packages
                .into_iter()
                .map(|(package, dependencies)| {
                    (
                        package.into(),
                        dependencies.into_iter().map(Into::into).collect(),
                    )
                })
                .collect(),
        }
    }

    /// Every package of the workspace.
    pub(crate) fn packages(&self) -> impl Iterator<Item = &str> {
        self.dependencies.keys().map(String::as_str)
    }

    /// The packages `package` depends on directly.
    pub(crate) fn dependencies(&self, package: &str) -> Vec<String> {
        self.dependencies.get(package).cloned().unwrap_or_default()
    }

    /// The packages that depend on `package` directly.
    pub(crate) fn dependents(&self, package: &str) -> Vec<String> {
        self.dependencies
            .iter()
            .filter(|(_, dependencies)| dependencies.iter().any(|name| name == package))
            .map(|(dependent, _)| dependent.clone())
            .collect()
    }
}

/// Why the tests could not be built.
#[derive(Debug, thiserror::Error)]
pub(crate) enum BuildError {
    /// cargo could not be started.
    #[error("failed to run cargo")]
    Spawn(#[source] io::Error),
    /// The tests' environment could not be worked out.
    #[error(transparent)]
    Environment(#[from] EnvironmentError),
    /// The build failed; cargo has shown why.
    #[error("the build failed")]
    Failed,
}

/// The cargo to run: the one that ran us, as cargo subcommands do.
pub(crate) fn cargo_path() -> PathBuf {
    std::env::var_os("CARGO").map_or_else(|| PathBuf::from("cargo"), PathBuf::from)
}

/// Builds the tests, handing each executable to `built` as soon as cargo
/// reports it, while cargo goes on with the others; returns what cargo
/// said of the workspace.
///
/// # Errors
///
/// When cargo cannot run or the build fails (cargo has then printed the
/// compiler's messages, as it prints them). Executables handed over before
/// are not to be run then.
pub(crate) fn build(
    options: &CargoOptions,
    mut built: impl FnMut(TestBinary),
) -> Result<Workspace, BuildError> {
    let mut child = Command::new(cargo_path())
        .args([
            "test",
            "--no-run",
            "--message-format",
            "json-render-diagnostics",
        ])
        .args(options.to_cargo_args())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .map_err(BuildError::Spawn)?;
    // Worked out while the build (or its no-op check) runs.
    let mut environment = Environment::new(options, &cargo_path());
    // Why a binary could not be handed over; the first such error.
    let mut failure = None;
    let stdout = child.stdout.take().expect("stdout is piped");
    for message in Message::parse_stream(BufReader::new(stdout)) {
        let Ok(environment) = &mut environment else {
            continue;
        };
        let artifact = match message {
            Ok(Message::BuildScriptExecuted(script)) => {
                environment.build_script_ran(script);
                continue;
            }
            Ok(Message::CompilerArtifact(artifact)) => artifact,
            _ => continue,
        };
        let (Some(executable), true) = (artifact.executable, artifact.profile.test) else {
            continue;
        };
        let executable = executable.into_std_path_buf();
        let launch = match environment.launch(
            &artifact.package_id,
            artifact.manifest_path.as_std_path(),
            &executable,
        ) {
            Ok(launch) => Arc::new(launch),
            Err(error) => {
                failure.get_or_insert(error);
                continue;
            }
        };
        let package = environment
            .package_name(&artifact.package_id)
            .map_or_else(|| artifact.target.name.clone(), str::to_owned);
        let target = artifact.target.name.clone();
        let kind = BinaryKind::of(artifact.target.kind.first());
        let (id, selector) = match kind {
            BinaryKind::Lib | BinaryKind::ProcMacro => (package.clone(), "--lib".to_owned()),
            BinaryKind::Test => (format!("{package}::{target}"), format!("--test {target}")),
            other => (
                format!("{package}::{}/{target}", other.as_str()),
                format!("--{} {target}", other.as_str()),
            ),
        };
        built(TestBinary {
            id,
            package,
            target,
            kind,
            selector,
            path: executable,
            launch,
        });
    }
    let status = child.wait().map_err(BuildError::Spawn)?;
    if !status.success() {
        return Err(BuildError::Failed);
    }
    let environment = environment?;
    let workspace = Workspace {
        packages: environment.package_graph(),
        root: environment.workspace_root().to_owned(),
        build_dir: environment.build_dir().to_owned(),
    };
    failure.map_or(Ok(workspace), |error| Err(error.into()))
}

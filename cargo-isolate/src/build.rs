//! Building the tests: `cargo test --no-run` with the pass-through options,
//! its JSON message stream parsed with `cargo_metadata`, and, from what
//! cargo says as it builds, how each test binary is to be started (see
//! [`crate::environment`]).

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
fn cargo_path() -> PathBuf {
    std::env::var_os("CARGO").map_or_else(|| PathBuf::from("cargo"), PathBuf::from)
}

/// Builds the tests, handing each executable to `built` as soon as cargo
/// reports it, while cargo goes on with the others.
///
/// # Errors
///
/// When cargo cannot run or the build fails (cargo has then printed the
/// compiler's messages, as it prints them). Executables handed over before
/// are not to be run then.
pub(crate) fn build(
    options: &CargoOptions,
    mut built: impl FnMut(TestBinary),
) -> Result<(), BuildError> {
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
        let kind = artifact.target.kind.first().cloned();
        let (id, selector) = match kind {
            Some(
                TargetKind::Lib
                | TargetKind::RLib
                | TargetKind::ProcMacro
                | TargetKind::CDyLib
                | TargetKind::DyLib
                | TargetKind::StaticLib,
            ) => (package.clone(), "--lib".to_owned()),
            Some(TargetKind::Bin) => (
                format!("{package}::bin/{target}"),
                format!("--bin {target}"),
            ),
            Some(TargetKind::Example) => (
                format!("{package}::example/{target}"),
                format!("--example {target}"),
            ),
            Some(TargetKind::Bench) => (
                format!("{package}::bench/{target}"),
                format!("--bench {target}"),
            ),
            _ => (format!("{package}::{target}"), format!("--test {target}")),
        };
        built(TestBinary {
            id,
            package,
            selector,
            path: executable,
            launch,
        });
    }
    let status = child.wait().map_err(BuildError::Spawn)?;
    if !status.success() {
        return Err(BuildError::Failed);
    }
    environment?;
    failure.map_or(Ok(()), |error| Err(error.into()))
}

//! Building the tests: `cargo test --no-run` with the pass-through options,
//! its JSON message stream parsed with `cargo_metadata`, and the package
//! names from `cargo metadata`.

use std::collections::HashMap;
use std::io::{self, BufReader};
use std::path::PathBuf;
use std::process::{Command, Stdio};

use cargo_metadata::{Message, MetadataCommand, PackageId, TargetKind};

use crate::cli::CargoOptions;

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
    /// The `cargo test` selection flag for the target (`--lib`,
    /// `--test NAME`, ...), for the commands that rerun one test.
    pub(crate) selector: String,
    /// The executable.
    pub(crate) path: PathBuf,
    /// The package's directory: tests run there, as under `cargo test`.
    pub(crate) package_dir: PathBuf,
}

/// Why the tests could not be built.
#[derive(Debug, thiserror::Error)]
pub(crate) enum BuildError {
    /// cargo could not be started.
    #[error("failed to run cargo")]
    Spawn(#[source] io::Error),
    /// `cargo metadata` failed.
    #[error("failed to read the workspace's metadata")]
    Metadata(#[source] cargo_metadata::Error),
    /// The build failed; cargo has shown why.
    #[error("the build failed")]
    Failed,
}

/// The name of every package of the workspace, by id, from `cargo
/// metadata`.
fn package_names(options: &CargoOptions) -> Result<HashMap<PackageId, String>, BuildError> {
    let mut metadata = MetadataCommand::new();
    metadata.cargo_path(cargo_path());
    if let Some(manifest) = &options.manifest_path {
        metadata.manifest_path(manifest);
    }
    let mut flags = Vec::new();
    if options.offline || options.frozen {
        flags.push("--offline".to_owned());
    }
    if options.locked || options.frozen {
        flags.push("--locked".to_owned());
    }
    let metadata = metadata
        .no_deps()
        .other_options(flags)
        .exec()
        .map_err(BuildError::Metadata)?;
    Ok(metadata
        .packages
        .into_iter()
        .map(|package| (package.id, package.name.to_string()))
        .collect())
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
    // The package names, read while the build (or its no-op check) runs.
    let names = package_names(options);
    let stdout = child.stdout.take().expect("stdout is piped");
    for message in Message::parse_stream(BufReader::new(stdout)) {
        let Ok(Message::CompilerArtifact(artifact)) = message else {
            continue;
        };
        let (Some(executable), true) = (artifact.executable, artifact.profile.test) else {
            continue;
        };
        let package = names
            .as_ref()
            .ok()
            .and_then(|names| names.get(&artifact.package_id))
            .cloned()
            .unwrap_or_else(|| artifact.target.name.clone());
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
            target,
            selector,
            path: executable.into_std_path_buf(),
            package_dir: artifact
                .manifest_path
                .parent()
                .map(|dir| dir.as_std_path().to_owned())
                .unwrap_or_default(),
        });
    }
    let status = child.wait().map_err(BuildError::Spawn)?;
    if !status.success() {
        return Err(BuildError::Failed);
    }
    names?;
    Ok(())
}

//! `cargo isolate`: run every test of a cargo workspace in its own process.
//!
//! The stages of a run, one module each: [`cli`] parses, [`config`] reads
//! the configuration file's profile, [`build`] runs
//! `cargo test --no-run` and works out, with [`environment`] and
//! [`cargo_config`], how `cargo test` would start each test binary (or
//! [`archive`] packs what a build made, and unpacks it to run elsewhere),
//! [`list`] asks each binary for its tests and chooses which run (by name
//! and by [`filterset`]), [`run`]
//! runs them (with a [`guard`] process so nothing outlives the run),
//! [`report`] tells people and CI; [`exit_code`] says how the process ends.

// One function sets a test's memory limit between fork and exec; nothing
// else here is unsafe.
#![deny(unsafe_code)]

mod archive;
mod build;
mod cargo_config;
mod cli;
mod config;
mod environment;
mod exit_code;
mod filterset;
mod guard;
mod list;
mod procfs;
mod report;
mod run;

use std::error::Error;
use std::process::ExitCode;

use cli::{Cargo, Command};

fn main() -> ExitCode {
    let Cargo::Isolate(command) = Cargo::parse_args();
    let code = match command {
        Command::Test(args) if args.select.libtest.list => list_tests(&args.into_listing()),
        Command::Test(args) if args.run.no_run => build_tests(&args.cargo),
        Command::Test(args) => test(&args),
        Command::List(args) => list_tests(&args),
        Command::ShowConfig(args) => show_config(&args),
        Command::Archive(args) => archive_tests(&args),
        Command::Guard => guard::serve(),
    };
    ExitCode::from(u8::try_from(code).unwrap_or(1))
}

/// Prints `error` for people: its message, then each cause on a line.
fn print_error(error: &dyn Error) {
    eprintln!("error: {error}");
    let mut source = error.source();
    while let Some(cause) = source {
        eprintln!("  caused by: {cause}");
        source = cause.source();
    }
}

/// Where the test binaries of a run or a listing come from.
enum Source<'a> {
    /// A build, with these options.
    Build(&'a cli::CargoOptions),
    /// An unpacked archive.
    Archive(&'a mut archive::Extracted),
}

/// The exit code for a build that failed, once said.
fn build_failed(error: &build::BuildError) -> i32 {
    print_error(error);
    match error {
        build::BuildError::Failed => exit_code::BUILD_FAILED,
        _ => exit_code::RUNNER_FAILED,
    }
}

/// Unpacks the archive that `from` names, if any, saying so unless
/// `quiet`; the exit code on failure, the error said.
fn open_archive(from: &cli::FromArchive, quiet: bool) -> Result<Option<archive::Extracted>, i32> {
    let Some(file) = &from.archive_file else {
        return Ok(None);
    };
    let started = std::time::Instant::now();
    let options = archive::ExtractOptions {
        extract_to: from.extract_to.as_deref(),
        workspace_remap: from.workspace_remap.as_deref(),
    };
    match archive::extract(file, &options) {
        Ok(extracted) => {
            if !quiet {
                eprintln!(
                    "   Extracted {} files from {} to {} in {:.3}s",
                    extracted.members,
                    file.display(),
                    extracted.dir.display(),
                    started.elapsed().as_secs_f64()
                );
            }
            Ok(Some(extracted))
        }
        Err(error) => {
            print_error(&error);
            Err(exit_code::RUNNER_FAILED)
        }
    }
}

/// Lists the binaries of `source`, reporting failures; the listed
/// binaries on success.
fn list_binaries(
    source: Source<'_>,
    select: &cli::SelectOptions,
    profile: &config::Profile,
    partition: Option<list::Partition>,
) -> Result<(Vec<list::BinaryTests>, list::Selection), i32> {
    // Each binary is listed as soon as cargo reports it built, while cargo
    // builds the others or, after a no-op build, winds up: a listing is
    // mostly process start-up. Those of an archive are listed at once.
    let (packages, listed) = std::thread::scope(|scope| {
        let mut listings = Vec::new();
        let mut listed = Vec::new();
        let mut hand_over = |binary: build::TestBinary| {
            // Listed here and now where no thread can be made for it.
            let here = binary.clone();
            match std::thread::Builder::new().spawn_scoped(scope, move || list::list(binary)) {
                Ok(listing) => listings.push(listing),
                Err(_) => listed.push(list::list(here)),
            }
        };
        let packages = match source {
            Source::Build(cargo) => build::build(cargo, &mut hand_over)
                .map(|workspace| workspace.packages)
                .map_err(|error| build_failed(&error)),
            Source::Archive(extracted) => {
                std::mem::take(&mut extracted.binaries)
                    .into_iter()
                    .for_each(&mut hand_over);
                Ok(std::mem::take(&mut extracted.packages))
            }
        };
        listed.extend(
            listings
                .into_iter()
                .map(|listing| listing.join().expect("listing does not panic")),
        );
        (packages, listed)
    });
    let packages = packages?;
    let mut listed = listed
        .into_iter()
        .collect::<Result<Vec<_>, _>>()
        .map_err(|error| {
            print_error(&error);
            exit_code::RUNNER_FAILED
        })?;
    // Cargo reports binaries in the order they finish building; shards
    // (`--partition count:K/N`) need the same order on every machine.
    listed.sort_by(|a, b| a.binary.id.cmp(&b.binary.id));
    let default_filter = profile.default_filter.value.as_ref();
    let selection = list::Selection::new(
        select,
        default_filter.map(|(_, filterset)| filterset),
        partition,
        packages,
    );
    Ok((listed, selection))
}

/// The profile `config` picks, for the workspace of `manifest_path`; a
/// warning for the keys of its file that were not understood.
fn load_profile(
    config: &config::ConfigArgs,
    manifest_path: Option<&std::path::Path>,
) -> Result<config::Profile, i32> {
    let profile = config::workspace_root(manifest_path)
        .and_then(|root| config::load(&root, config))
        .map_err(|error| {
            print_error(&error);
            exit_code::USAGE
        })?;
    if !profile.unknown_keys.is_empty() {
        eprintln!(
            "warning: {}: ignoring what cargo isolate does not understand: {}",
            profile.file.as_deref().unwrap_or("configuration"),
            profile.unknown_keys.join(", ")
        );
    }
    Ok(profile)
}

fn show_config(args: &cli::ShowConfigArgs) -> i32 {
    match load_profile(&args.config, args.manifest_path.as_deref()) {
        Ok(profile) => {
            print!("{}", profile.describe());
            exit_code::SUCCESS
        }
        Err(code) => code,
    }
}

/// Where the JUnit report goes: `--junit`, else the profile's `path`,
/// under `<target-dir>/isolate/<profile>/`.
fn junit_path(
    args: &cli::TestArgs,
    profile: &config::Profile,
) -> Result<Option<std::path::PathBuf>, Box<dyn Error>> {
    if let Some(path) = &args.report.junit {
        return Ok(Some(path.clone()));
    }
    let Some(path) = &profile.junit_path.value else {
        return Ok(None);
    };
    let target_dir = match &args.cargo.target_dir {
        Some(dir) => std::path::absolute(dir)?,
        // No cargo to ask where an archive's run is: its workspace's
        // `target`.
        None if args.archive.archive_file.is_some() => {
            config::workspace_root(config_start(&args.cargo, &args.archive).as_deref())?
                .join("target")
        }
        None => {
            let mut metadata = cargo_metadata::MetadataCommand::new();
            metadata.cargo_path(build::cargo_path()).no_deps();
            if let Some(manifest) = &args.cargo.manifest_path {
                metadata.manifest_path(manifest);
            }
            metadata.exec()?.target_directory.into_std_path_buf()
        }
    };
    Ok(Some(
        target_dir.join("isolate").join(&profile.name).join(path),
    ))
}

/// Lists the tests of the archive `from` names (saying so unless `quiet`)
/// or, without one, of a build with `cargo`; with the unpacked archive,
/// which must outlive every use of its binaries.
fn list_from(
    cargo: &cli::CargoOptions,
    from: &cli::FromArchive,
    quiet: bool,
    select: &cli::SelectOptions,
    profile: &config::Profile,
    partition: Option<list::Partition>,
) -> Result<Listed, i32> {
    let Some(mut extracted) = open_archive(from, quiet)? else {
        let (binaries, selection) =
            list_binaries(Source::Build(cargo), select, profile, partition)?;
        return Ok((binaries, selection, None));
    };
    let (binaries, selection) =
        list_binaries(Source::Archive(&mut extracted), select, profile, partition)?;
    Ok((binaries, selection, Some(extracted)))
}

/// What [`list_from`] lists: the binaries, the selection, and the unpacked
/// archive they come from, if any.
type Listed = (
    Vec<list::BinaryTests>,
    list::Selection,
    Option<archive::Extracted>,
);

/// Builds the tests and runs none, as `cargo test --no-run`, printing each
/// test executable as it does.
fn build_tests(cargo: &cli::CargoOptions) -> i32 {
    let mut binaries = Vec::new();
    if let Err(error) = build::build(cargo, |binary| binaries.push(binary)) {
        return build_failed(&error);
    }
    if !cargo.quiet {
        binaries.sort_by(|a, b| a.id.cmp(&b.id));
        for binary in binaries {
            eprintln!("  Executable {} ({})", binary.id, binary.path.display());
        }
    }
    exit_code::SUCCESS
}

/// Builds the tests and archives them.
fn archive_tests(args: &cli::ArchiveArgs) -> i32 {
    let profile = match load_profile(&args.config, args.cargo.manifest_path.as_deref()) {
        Ok(profile) => profile,
        Err(code) => return code,
    };
    let started = std::time::Instant::now();
    let mut binaries = Vec::new();
    let workspace = match build::build(&args.cargo, |binary| binaries.push(binary)) {
        Ok(workspace) => workspace,
        Err(error) => return build_failed(&error),
    };
    binaries.sort_by(|a, b| a.id.cmp(&b.id));
    let built = started.elapsed();
    match archive::pack(
        &binaries,
        &workspace,
        &profile.archive_include.value,
        &args.archive_file,
    ) {
        Ok(packed) => {
            if !args.cargo.quiet {
                eprintln!(
                    "    Archived {} files ({} bytes) to {} in {:.3}s",
                    packed.members,
                    packed.bytes,
                    args.archive_file.display(),
                    (started.elapsed() - built).as_secs_f64()
                );
            }
            exit_code::SUCCESS
        }
        Err(error) => {
            print_error(&error);
            exit_code::RUNNER_FAILED
        }
    }
}

/// Where the workspace whose configuration applies is found: the
/// manifest of `--manifest-path`, or, running an archive, the workspace of
/// `--workspace-remap`; else the current directory's.
fn config_start(
    cargo: &cli::CargoOptions,
    archive: &cli::FromArchive,
) -> Option<std::path::PathBuf> {
    archive
        .workspace_remap
        .as_ref()
        .map(|dir| dir.join("Cargo.toml"))
        .or_else(|| cargo.manifest_path.clone())
}

fn test(args: &cli::TestArgs) -> i32 {
    let mut profile = match load_profile(
        &args.config,
        config_start(&args.cargo, &args.archive).as_deref(),
    ) {
        Ok(profile) => profile,
        Err(code) => return code,
    };
    args.apply_to(&mut profile);
    let junit = match junit_path(args, &profile) {
        Ok(path) => path,
        Err(error) => {
            eprintln!("error: failed to find where the JUnit report goes: {error}");
            return exit_code::RUNNER_FAILED;
        }
    };
    // A report that could not be written would be found out only after
    // the run: the path is tried before the build.
    if let Some(junit) = &junit
        && let Err(error) = report::prepare_junit(junit)
    {
        print_error(&error);
        return exit_code::USAGE;
    }
    // Overrides for a platform need to know the platforms: rustc is asked
    // while cargo builds (here, after it, where no thread can be made).
    let target = args.cargo.target.clone();
    let ask_platforms = move || {
        let rustc = cargo_config::CargoConfig::load()
            .map(|config| config.rustc())
            .unwrap_or_else(|_| "rustc".into());
        config::Platforms::ask_rustc(&rustc, target.as_deref())
    };
    let asking = profile
        .needs_platforms()
        .then(|| std::thread::Builder::new().spawn(ask_platforms.clone()));
    // So is the directory of the run's scratch files: where none can be
    // created, the run fails here rather than every test with it.
    if let Err(error) = run::choose_scratch_dir() {
        print_error(&error);
        return exit_code::RUNNER_FAILED;
    }
    let cores = std::thread::available_parallelism().map_or(1, usize::from);
    let threads = args.test_threads(&profile, cores);
    // What confines the run is made while cargo checks the build: a lane
    // per test thread, and one for harness binaries.
    let confinement = std::thread::Builder::new()
        .spawn(move || run::Confinement::prepare(threads + 1))
        .map_err(|_| threads + 1);
    let listed = list_from(
        &args.cargo,
        &args.archive,
        args.quiet(),
        &args.select,
        &profile,
        args.run.partition,
    );
    let confinement = match confinement {
        Ok(preparing) => preparing.join().expect("preparing the run does not panic"),
        Err(lanes) => run::Confinement::prepare(lanes),
    };
    // The unpacked archive, if any, lives until the run's end.
    let (binaries, selection, _extracted) = match listed {
        Ok(listed) => listed,
        Err(code) => return code,
    };
    let runs_any = selection
        .select(&binaries)
        .iter()
        .any(|(_, test)| selection.runs(test));
    if !runs_any {
        let message = "no tests to run (--no-tests says what then: pass, warn or fail)";
        match args.run.no_tests {
            cli::NoTests::Pass => {}
            cli::NoTests::Warn => eprintln!("warning: {message}"),
            cli::NoTests::Fail => {
                eprintln!("error: {message}");
                return exit_code::NO_TESTS;
            }
        }
    }
    let platforms = match asking {
        None => Ok(config::Platforms::default()),
        Some(Ok(thread)) => thread
            .join()
            .expect("asking rustc about the platforms does not panic"),
        Some(Err(_)) => ask_platforms(),
    };
    let platforms = match platforms {
        Ok(platforms) => platforms,
        Err(error) => {
            print_error(&error);
            return exit_code::RUNNER_FAILED;
        }
    };
    let rerun = args.rerun(&profile);
    let profile = std::sync::Arc::new(profile);
    let plan = run::RunPlan {
        threads,
        nocapture: args.no_capture(),
        passing_output: args.passing_output(&profile),
        profile: std::sync::Arc::clone(&profile),
        platforms,
        cores,
    };
    // The first Ctrl-C (or SIGTERM) starts no more tests and ends the
    // running ones (SIGTERM, then SIGKILL after the grace period), and
    // every report is written. A second kills them at once and exits:
    // the reports, written only at the end, are not written at all.
    let interrupt = std::sync::Arc::new(run::Interrupt::default());
    let handler = std::sync::Arc::clone(&interrupt);
    let _ = ctrlc::set_handler(move || {
        if handler.is_interrupted() {
            handler.kill();
            std::process::exit(exit_code::INTERRUPTED);
        }
        eprintln!(
            "cargo isolate: interrupted: ending the running tests (again to kill them at once)"
        );
        handler.stop();
    });
    let settings = report::ReportSettings {
        format: args.report.message_format,
        color: args.color(),
        verbose: args.verbose(),
        quiet: args.quiet(),
        junit: junit.as_deref().map(|path| report::Junit {
            path,
            report_name: &profile.junit_report_name.value,
            success_output: profile.junit_store_success_output.value,
            failure_output: profile.junit_store_failure_output.value,
        }),
        rerun: &rerun,
    };
    let (sender, receiver) = std::sync::mpsc::channel();
    let summary = std::thread::scope(|scope| {
        let reporter = std::thread::Builder::new()
            .spawn_scoped(scope, || report::report(receiver, &settings))
            .map_err(|error| std::io::Error::other(format!("cannot start its thread: {error}")))?;
        let confinement = run::run(
            &binaries,
            &selection,
            &plan,
            confinement,
            &sender,
            &interrupt,
        );
        drop(sender);
        // Released while the reporter writes the last of the reports: it
        // waits for the kernel (see the run's containment).
        let released = scope.spawn(|| confinement.release());
        let summary = reporter
            .join()
            .unwrap_or_else(|_| Err(std::io::Error::other("the reporter panicked")));
        let _ = released.join();
        summary
    });
    match summary {
        Ok(_) if interrupt.is_interrupted() => exit_code::INTERRUPTED,
        Ok(summary) if summary.has_failures() => exit_code::TESTS_FAILED,
        Ok(_) => exit_code::SUCCESS,
        Err(error) => {
            eprintln!("error: failed to write the report: {error}");
            exit_code::RUNNER_FAILED
        }
    }
}

fn list_tests(args: &cli::ListArgs) -> i32 {
    let profile = match load_profile(
        &args.config,
        config_start(&args.cargo, &args.archive).as_deref(),
    ) {
        Ok(profile) => profile,
        Err(code) => return code,
    };
    let listed = list_from(
        &args.cargo,
        &args.archive,
        args.cargo.quiet,
        &args.select,
        &profile,
        args.partition,
    );
    let (binaries, selection, _extracted) = match listed {
        Ok(listed) => listed,
        Err(code) => return code,
    };
    let selected = selection.select(&binaries);
    match args.message_format {
        cli::ListFormat::Human => {
            for (binary, test) in selected {
                let ignored = if test.ignored { " (ignored)" } else { "" };
                println!("{} {}{ignored}", binaries[binary].binary.id, test.name);
            }
        }
        cli::ListFormat::Json => println!("{}", report::listing_json(&binaries, &selected)),
    }
    exit_code::SUCCESS
}

//! The command line, as cargo hands it to a subcommand: `cargo isolate …`
//! runs `cargo-isolate isolate …`, so the first argument is the
//! subcommand's own name.

use clap::{Args, Parser};

/// Cargo's view of this binary.
#[derive(Debug, Parser)]
#[command(name = "cargo", bin_name = "cargo", version, propagate_version = true)]
pub(crate) enum Cargo {
    /// Run every test of a workspace in its own process, so that a crash
    /// fails one test instead of the whole run.
    Isolate(IsolateArgs),
}

/// The arguments of `cargo isolate`.
#[derive(Debug, Args)]
#[command(arg_required_else_help = true)]
pub(crate) struct IsolateArgs {}

impl Cargo {
    /// Parses the command line; on bad input, `--help` or `--version`, clap
    /// prints and exits (2 for a usage error, 0 otherwise).
    pub(crate) fn parse_args() -> Cargo {
        Cargo::parse()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn command_line_is_consistent() {
        Cargo::command().debug_assert();
    }

    #[test]
    fn runs_as_a_cargo_subcommand() {
        let error = Cargo::try_parse_from(["cargo-isolate", "isolate", "--version"]).unwrap_err();
        assert_eq!(error.kind(), clap::error::ErrorKind::DisplayVersion);
        let error = Cargo::try_parse_from(["cargo-isolate", "test"]).unwrap_err();
        assert_eq!(error.kind(), clap::error::ErrorKind::InvalidSubcommand);
    }
}

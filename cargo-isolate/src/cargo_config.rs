//! What a test run needs of cargo's configuration, read as cargo reads it:
//! the `[env]` table, the target runners (`target.<triple>.runner`,
//! `target.'cfg(..)'.runner`) and `build.rustc`.
//!
//! Cargo has no stable command that prints its configuration (`cargo
//! config get` is nightly-only), so the files are read here, where cargo
//! finds them: `.cargo/config.toml` (or the older `.cargo/config`, which
//! cargo prefers when both exist) in the current directory and in each of
//! its parents, then in `$CARGO_HOME`. Cargo merges them key by key, the
//! file nearer the current directory winning, and so does this module;
//! `CARGO_TARGET_<TRIPLE>_RUNNER` and `RUSTC` win over every file, as they
//! do for cargo. A relative path is resolved as cargo resolves it: against
//! the directory that holds the file's `.cargo` directory, or against the
//! current directory for a value from the environment.
//!
//! Not read: the `--config` option (`cargo isolate` takes none) and the
//! unstable `include` key. A configuration cargo rejects fails cargo's
//! build first, so this module does not repeat cargo's checks.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::io;
use std::path::{Path, PathBuf};

use cargo_metadata::cargo_platform::{Cfg, CfgExpr};

/// The part of cargo's configuration a test run needs, merged from every
/// file.
#[derive(Debug, Default)]
pub(crate) struct CargoConfig {
    /// The `[env]` table, by variable.
    env: BTreeMap<String, EnvEntry>,
    /// `target.<key>.runner`, by key: a triple or a `cfg(..)` expression.
    runners: BTreeMap<String, Program>,
    /// `build.rustc`.
    rustc: Option<Program>,
    /// The directory cargo runs in: the base of relative paths from the
    /// environment.
    cwd: PathBuf,
}

/// A variable of the `[env]` table: `NAME = "value"` or `NAME = { value =
/// "..", force = true, relative = true }`, its fields each from the nearest
/// file that sets it.
#[derive(Debug, Default)]
struct EnvEntry {
    /// The value, and the directory it is relative to with `relative`.
    value: Option<(String, PathBuf)>,
    force: Option<bool>,
    relative: Option<bool>,
}

/// A program and its arguments, and the directory a relative program path
/// is resolved against.
#[derive(Debug)]
struct Program {
    words: Vec<String>,
    root: PathBuf,
}

/// Why cargo's configuration could not be read.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ConfigError {
    #[error("failed to find the current directory")]
    CurrentDir(#[source] io::Error),
    #[error("failed to read {}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("failed to parse {}", path.display())]
    Parse {
        path: PathBuf,
        #[source]
        source: toml::de::Error,
    },
    #[error("`{key}` in {} is not {expected}", path.display())]
    Invalid {
        path: PathBuf,
        key: String,
        expected: &'static str,
    },
    #[error("the target runner `{0}` names no program")]
    EmptyRunner(String),
}

impl CargoConfig {
    /// The configuration cargo reads when it runs in the current directory.
    ///
    /// # Errors
    ///
    /// When a file cannot be read or parsed, or holds a value of the wrong
    /// type.
    pub(crate) fn load() -> Result<CargoConfig, ConfigError> {
        let cwd = std::env::current_dir().map_err(ConfigError::CurrentDir)?;
        let home = std::env::var_os("CARGO_HOME")
            .map(|home| cwd.join(home))
            .or_else(|| std::env::home_dir().map(|home| home.join(".cargo")));
        CargoConfig::load_from(&cwd, home.as_deref())
    }

    /// The configuration of the files found from `cwd` up, then in `home`
    /// (`$CARGO_HOME`).
    fn load_from(cwd: &Path, home: Option<&Path>) -> Result<CargoConfig, ConfigError> {
        let mut config = CargoConfig {
            cwd: cwd.to_owned(),
            ..CargoConfig::default()
        };
        let mut files: Vec<PathBuf> = cwd
            .ancestors()
            .filter_map(|dir| config_file(&dir.join(".cargo")))
            .collect();
        if let Some(file) = home.and_then(config_file)
            && !files.contains(&file)
        {
            files.push(file);
        }
        for path in files {
            let text = std::fs::read_to_string(&path).map_err(|source| ConfigError::Read {
                path: path.clone(),
                source,
            })?;
            let table: toml::Table =
                toml::from_str(&text).map_err(|source| ConfigError::Parse {
                    path: path.clone(),
                    source,
                })?;
            config.merge(&path, &table)?;
        }
        Ok(config)
    }

    /// Adds what `table`, from file `path`, sets and no nearer file did.
    fn merge(&mut self, path: &Path, table: &toml::Table) -> Result<(), ConfigError> {
        let root = path
            .parent()
            .and_then(Path::parent)
            .unwrap_or(Path::new("/"))
            .to_owned();
        let invalid = |key: &str, expected| ConfigError::Invalid {
            path: path.to_owned(),
            key: key.to_owned(),
            expected,
        };
        let tables = |key: &str, value: Option<&toml::Value>| match value {
            None => Ok(None),
            Some(toml::Value::Table(table)) => Ok(Some(table.clone())),
            Some(_) => Err(invalid(key, "a table")),
        };
        for (name, value) in tables("env", table.get("env"))?.unwrap_or_default() {
            let key = format!("env.{name}");
            let entry = self.env.entry(name).or_default();
            let (value, force, relative) = match value {
                toml::Value::String(value) => (Some(value), None, None),
                toml::Value::Table(fields) => {
                    let flag = |field: &str| match fields.get(field) {
                        None => Ok(None),
                        Some(toml::Value::Boolean(on)) => Ok(Some(*on)),
                        Some(_) => Err(invalid(&format!("{key}.{field}"), "a boolean")),
                    };
                    let value = match fields.get("value") {
                        None => None,
                        Some(toml::Value::String(value)) => Some(value.clone()),
                        Some(_) => return Err(invalid(&format!("{key}.value"), "a string")),
                    };
                    (value, flag("force")?, flag("relative")?)
                }
                _ => return Err(invalid(&key, "a string or a table")),
            };
            if entry.value.is_none() {
                entry.value = value.map(|value| (value, root.clone()));
            }
            entry.force = entry.force.or(force);
            entry.relative = entry.relative.or(relative);
        }
        for (target, settings) in tables("target", table.get("target"))?.unwrap_or_default() {
            let key = format!("target.{target}");
            let Some(settings) = tables(&key, Some(&settings))? else {
                continue;
            };
            if let Some(runner) = settings.get("runner")
                && !self.runners.contains_key(&target)
            {
                let words = program_words(runner).ok_or_else(|| {
                    invalid(&format!("{key}.runner"), "a string or an array of strings")
                })?;
                self.runners.insert(
                    target,
                    Program {
                        words,
                        root: root.clone(),
                    },
                );
            }
        }
        if let Some(rustc) = tables("build", table.get("build"))?
            .as_ref()
            .and_then(|build| build.get("rustc"))
            && self.rustc.is_none()
        {
            let toml::Value::String(rustc) = rustc else {
                return Err(invalid("build.rustc", "a string"));
            };
            self.rustc = Some(Program {
                words: vec![rustc.clone()],
                root,
            });
        }
        Ok(())
    }

    /// The variables of the `[env]` table that cargo sets for a test,
    /// where `is_set` says which variables the environment already has:
    /// those are left as they are unless `force`d. A `relative` value is a
    /// path made absolute.
    ///
    /// Cargo's own variables (`CARGO_PKG_NAME`, the library path, ...) are
    /// never overridden, `force` or not: the caller sets them after these.
    pub(crate) fn env_vars(&self, is_set: impl Fn(&str) -> bool) -> Vec<(String, OsString)> {
        self.env
            .iter()
            .filter(|(name, entry)| entry.force == Some(true) || !is_set(name))
            .filter_map(|(name, entry)| {
                let (value, root) = entry.value.as_ref()?;
                let value = if entry.relative == Some(true) {
                    root.join(value).into_os_string()
                } else {
                    OsString::from(value)
                };
                Some((name.clone(), value))
            })
            .collect()
    }

    /// The target runner for `triple`, whose `cfg` values rustc printed,
    /// as program and arguments; empty for none. `var` reads the
    /// environment.
    ///
    /// `CARGO_TARGET_<TRIPLE>_RUNNER` wins over `target.<triple>.runner`,
    /// which wins over a `target.'cfg(..)'.runner` that `cfg` matches (cargo
    /// refuses to build where several match).
    ///
    /// # Errors
    ///
    /// When the runner names no program.
    pub(crate) fn runner(
        &self,
        triple: &str,
        cfg: &[Cfg],
        var: impl Fn(&str) -> Option<String>,
    ) -> Result<Vec<OsString>, ConfigError> {
        let variable = format!(
            "CARGO_TARGET_{}_RUNNER",
            triple.to_uppercase().replace(['-', '.'], "_")
        );
        let from_environment;
        let (key, runner) = if let Some(words) = var(&variable) {
            from_environment = Program {
                words: words.split_whitespace().map(str::to_owned).collect(),
                root: self.cwd.clone(),
            };
            (variable, &from_environment)
        } else if let Some(runner) = self.runners.get(triple) {
            (format!("target.{triple}.runner"), runner)
        } else if let Some((key, runner)) = self
            .runners
            .iter()
            .find(|(key, _)| CfgExpr::matches_key(key, cfg))
        {
            (format!("target.{key}.runner"), runner)
        } else {
            return Ok(Vec::new());
        };
        runner.command().ok_or(ConfigError::EmptyRunner(key))
    }

    /// Whether a target runner may be configured for some target: a file
    /// sets `target.<triple>.runner` or `target.'cfg(..)'.runner`, or one
    /// of the environment's variables `names` is a
    /// `CARGO_TARGET_<TRIPLE>_RUNNER`. Where none is, [`CargoConfig::runner`]
    /// finds none whatever the target, and its triple and `cfg` are not
    /// needed.
    pub(crate) fn may_have_runner(&self, mut names: impl Iterator<Item = OsString>) -> bool {
        !self.runners.is_empty()
            || names.any(|name| {
                name.to_str().is_some_and(|name| {
                    name.starts_with("CARGO_TARGET_") && name.ends_with("_RUNNER")
                })
            })
    }

    /// The rustc cargo runs: `RUSTC`, or `build.rustc`, or `rustc`.
    pub(crate) fn rustc(&self) -> OsString {
        std::env::var_os("RUSTC")
            .filter(|rustc| !rustc.is_empty())
            .or_else(|| {
                self.rustc
                    .as_ref()
                    .and_then(Program::command)
                    .and_then(|words| words.into_iter().next())
            })
            .unwrap_or_else(|| OsString::from("rustc"))
    }
}

impl Program {
    /// The program and its arguments; `None` where there is no program. A
    /// program given as a path with a `/` is made absolute; a bare name is
    /// left to the `PATH`, as cargo leaves it.
    fn command(&self) -> Option<Vec<OsString>> {
        let (program, args) = self.words.split_first()?;
        let program = if program.contains('/') {
            self.root.join(program).into_os_string()
        } else {
            OsString::from(program)
        };
        Some(
            std::iter::once(program)
                .chain(args.iter().map(OsString::from))
                .collect(),
        )
    }
}

/// The configuration file of a `.cargo` directory, if it has one.
fn config_file(dir: &Path) -> Option<PathBuf> {
    ["config", "config.toml"]
        .into_iter()
        .map(|name| dir.join(name))
        .find(|path| path.is_file())
}

/// The words of a program setting: a string split at whitespace, or an
/// array of strings.
fn program_words(value: &toml::Value) -> Option<Vec<String>> {
    match value {
        toml::Value::String(words) => Some(words.split_whitespace().map(str::to_owned).collect()),
        toml::Value::Array(words) => words
            .iter()
            .map(|word| word.as_str().map(str::to_owned))
            .collect(),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A directory tree with a configuration file at `outer/.cargo` and at
    /// `outer/inner/.cargo`, and a `$CARGO_HOME` beside them.
    fn configs(outer: &str, inner: &str, home: &str) -> (tempfile::TempDir, PathBuf, PathBuf) {
        let root = tempfile::tempdir().unwrap();
        let inner_dir = root.path().join("outer/inner");
        std::fs::create_dir_all(inner_dir.join(".cargo")).unwrap();
        std::fs::create_dir_all(root.path().join("outer/.cargo")).unwrap();
        std::fs::create_dir_all(root.path().join("home")).unwrap();
        std::fs::write(root.path().join("outer/.cargo/config.toml"), outer).unwrap();
        std::fs::write(inner_dir.join(".cargo/config.toml"), inner).unwrap();
        std::fs::write(root.path().join("home/config.toml"), home).unwrap();
        let home = root.path().join("home");
        (root, inner_dir, home)
    }

    #[test]
    fn env_merges_field_by_field_the_nearest_file_winning() {
        let (root, cwd, home) = configs(
            r#"[env]
            FORCED = { value = "outer", force = true }
            RELATIVE = { value = "outer", relative = true }
            PLAIN = "outer"
            "#,
            r#"[env]
            FORCED = { value = "inner" }
            RELATIVE = { value = "data" }
            KEPT = "inner"
            "#,
            r#"[env]
            PLAIN = "home"
            HOME_ONLY = "home"
            "#,
        );
        let config = CargoConfig::load_from(&cwd, Some(&home)).unwrap();
        let vars: BTreeMap<String, OsString> = config
            .env_vars(|name| ["FORCED", "KEPT"].contains(&name))
            .into_iter()
            .collect();
        let expected: BTreeMap<String, OsString> = [
            ("FORCED", OsString::from("inner")),
            ("HOME_ONLY", OsString::from("home")),
            ("PLAIN", OsString::from("outer")),
            // Relative to the directory of the file that set the value.
            ("RELATIVE", cwd.join("data").into_os_string()),
        ]
        .into_iter()
        .map(|(name, value)| (name.to_owned(), value))
        .collect();
        assert_eq!(vars, expected);
        drop(root);
    }

    #[test]
    fn runners_by_triple_then_cfg() {
        let (root, cwd, home) = configs(
            r#"[target.x86_64-unknown-linux-gnu]
            runner = ["scripts/run", "--outer"]
            "#,
            r#"[target.'cfg(unix)']
            runner = "valgrind -q"
            "#,
            "",
        );
        let config = CargoConfig::load_from(&cwd, Some(&home)).unwrap();
        let unix: Vec<Cfg> = vec!["unix".parse().unwrap()];
        let unset = |_: &str| None;
        let outer = cwd.parent().unwrap().join("scripts/run").into_os_string();
        assert_eq!(
            config
                .runner("x86_64-unknown-linux-gnu", &unix, unset)
                .unwrap(),
            [outer, OsString::from("--outer")]
        );
        assert_eq!(
            config
                .runner("aarch64-unknown-linux-gnu", &unix, unset)
                .unwrap(),
            ["valgrind", "-q"]
        );
        assert!(
            config
                .runner("aarch64-unknown-linux-gnu", &[], unset)
                .unwrap()
                .is_empty()
        );
        // The environment wins, its relative paths from the current
        // directory.
        let set = |name: &str| {
            (name == "CARGO_TARGET_X86_64_UNKNOWN_LINUX_GNU_RUNNER")
                .then(|| "./qemu -L .".to_owned())
        };
        assert_eq!(
            config
                .runner("x86_64-unknown-linux-gnu", &unix, set)
                .unwrap(),
            [cwd.join("./qemu").into_os_string(), "-L".into(), ".".into()]
        );
        assert!(matches!(
            config.runner("x86_64-unknown-linux-gnu", &unix, |_| Some(String::new())),
            Err(ConfigError::EmptyRunner(_))
        ));
        drop(root);
    }

    #[test]
    fn a_runner_may_come_from_a_file_or_a_variable() {
        let (root, cwd, home) = configs("[env]\nPLAIN = \"outer\"\n", "", "");
        let config = CargoConfig::load_from(&cwd, Some(&home)).unwrap();
        let names = |names: &[&str]| names.iter().map(OsString::from).collect::<Vec<_>>();
        assert!(!config.may_have_runner(names(&["CARGO_TARGET_DIR", "PATH"]).into_iter()));
        assert!(
            config
                .may_have_runner(names(&["CARGO_TARGET_AARCH64_APPLE_DARWIN_RUNNER"]).into_iter())
        );
        let (root_cfg, cwd, home) = configs("", "[target.'cfg(unix)']\nrunner = \"run\"\n", "");
        let config = CargoConfig::load_from(&cwd, Some(&home)).unwrap();
        assert!(config.may_have_runner(std::iter::empty()));
        drop((root, root_cfg));
    }

    #[test]
    fn a_value_of_the_wrong_type_names_its_key() {
        let (root, cwd, home) = configs("[env]\nBAD = 3\n", "", "");
        let error = CargoConfig::load_from(&cwd, Some(&home)).unwrap_err();
        assert!(error.to_string().contains("`env.BAD`"), "{error}");
        drop(root);
    }
}

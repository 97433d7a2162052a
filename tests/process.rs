//! Behaviour that depends on the whole process (its threads, its
//! environment), checked by running this test binary again as a subprocess
//! per scenario, named by `ISOLATE_PROCESS_SCENARIO`. The checks are
//! libtest-mimic trials, so that any runner lists and filters them as it
//! does libtest's tests.

use std::process::{Command, Output};

use isolate_harness::{Error, Isolate};

#[expect(
    dead_code,
    reason = "the helpers of every end-to-end test; these tests use some"
)]
mod support;

fn add_one(n: u64) -> u64 {
    n + 1
}

fn panics_here(_: ()) {
    panic!("with a backtrace");
}

/// The scenarios, each run in a process of its own.
fn scenario(name: &str) {
    match name {
        "single-threaded" => {
            Isolate::fork().unwrap().call(add_one, 1).unwrap();
            isolate_harness::run(add_one, 1).unwrap();
        }
        "threaded" => {
            let _thread = std::thread::spawn(std::thread::park);
            Isolate::fork().unwrap().call(add_one, 1).unwrap();
            isolate_harness::run(add_one, 1).unwrap();
            isolate_harness::run(add_one, 1).unwrap();
        }
        "panic-backtrace" => {
            let Err(Error::Panicked(report)) = isolate_harness::run(panics_here, ()) else {
                panic!("expected a panic");
            };
            let backtrace = report
                .backtrace
                .expect("RUST_BACKTRACE asked for a backtrace");
            let first = backtrace.frames[0].function.as_deref().unwrap_or_default();
            assert_eq!(first, "process::panics_here", "{backtrace}");
        }
        other => panic!("unknown scenario {other}"),
    }
}

/// The variable that makes this binary run one scenario instead of its
/// checks.
const SCENARIO: &str = "ISOLATE_PROCESS_SCENARIO";

fn run_scenario(name: &str, env: &[(&str, &str)]) -> Output {
    let output = Command::new(std::env::current_exe().unwrap())
        .env(SCENARIO, name)
        .env_remove("RUST_BACKTRACE")
        .env_remove("RUST_LIB_BACKTRACE")
        .envs(env.iter().copied())
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "scenario {name} failed: {}\n{}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    output
}

fn warnings(output: &Output) -> usize {
    String::from_utf8_lossy(&output.stderr)
        .matches("isolate: warning: forking a process that runs")
        .count()
}

fn main() {
    if let Some(name) = std::env::var_os(SCENARIO) {
        scenario(&name.to_string_lossy());
        return;
    }
    let checks: [(&str, fn()); 3] = [
        ("no_warning_when_forking_a_single_threaded_process", || {
            assert_eq!(warnings(&run_scenario("single-threaded", &[])), 0);
        }),
        ("one_warning_when_forking_a_threaded_process", || {
            assert_eq!(warnings(&run_scenario("threaded", &[])), 1);
        }),
        (
            "a_panic_carries_its_backtrace_when_rust_backtrace_asks",
            || {
                run_scenario("panic-backtrace", &[("RUST_BACKTRACE", "1")]);
            },
        ),
    ];
    let trials = support::trials(checks);
    libtest_mimic::run(&libtest_mimic::Arguments::from_args(), trials).exit();
}

//! The first example of the Python library `process_isolation`, in Rust:
//!
//! ```python
//! sys = import_isolated('sys')
//! sys.stdout.write('Hello world\n')
//! ```
//!
//! The process forks; the child writes `Hello world` to the standard output
//! it shares with the parent.

use std::io::Write;

use isolate_harness::Isolate;

fn write_stdout(text: String) -> usize {
    let mut stdout = std::io::stdout();
    stdout
        .write_all(text.as_bytes())
        .expect("stdout is writable");
    text.len()
}

fn main() -> Result<(), isolate_harness::Error> {
    let sys = Isolate::fork()?;
    sys.call(write_stdout, "Hello world\n".to_owned())?;
    Ok(())
}

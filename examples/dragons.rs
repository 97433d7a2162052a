//! The second example of the Python library `process_isolation`, in Rust:
//!
//! ```python
//! buggy = import_isolated('buggy')
//! try:
//!     buggy.dragons_here()
//! except ProcessTerminationError as ex:
//!     print 'There be dragons!'
//! ```
//!
//! `buggy::dragons_here()` writes through a null pointer. Called directly,
//! it would end this process with "Segmentation fault"; called in an
//! isolate, it ends only the child, and the parent says what happened.

use isolate::buggy;
use isolate_harness::{Error, Isolate};

fn dragons_here(_: ()) {
    buggy::dragons_here();
}

fn main() -> Result<(), Error> {
    let buggy = Isolate::fork()?;
    match buggy.call(dragons_here, ()) {
        Err(Error::Terminated(termination)) => {
            println!("There be dragons!");
            println!("The child was {termination}.");
            if let Some(crash) = termination.crash() {
                print!("Crash site:\n{}", crash.backtrace);
            }
            Ok(())
        }
        Err(other) => Err(other),
        Ok(()) => {
            println!("No dragons today.");
            Ok(())
        }
    }
}

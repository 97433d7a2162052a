//! One error per function at fault, and the functions that can be proxied
//! are not reported.

struct Tally {
    name: String,
    total: u64,
}

#[isolate_harness::remote]
impl Tally {
    fn total(&self) -> u64 {
        self.total
    }

    fn name(&self) -> &str {
        &self.name
    }

    fn rename(&mut self, name: &mut String) {
        std::mem::swap(&mut self.name, name);
    }
}

fn main() {}

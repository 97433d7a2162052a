struct Tally(u64);

#[isolate_harness::remote(public)]
impl Tally {
    fn total(&self) -> u64 {
        self.0
    }
}

fn main() {}

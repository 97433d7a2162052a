struct Tally(u64);

#[isolate_harness::remote]
impl Tally {
    async fn total(&self) -> u64 {
        self.0
    }
}

fn main() {}

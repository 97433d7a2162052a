struct Tally {
    name: String,
}

#[isolate_harness::remote]
impl Tally {
    fn name(&self) -> &str {
        &self.name
    }
}

fn main() {}

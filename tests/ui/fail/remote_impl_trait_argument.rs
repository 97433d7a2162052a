struct Tally(Vec<String>);

#[isolate_harness::remote]
impl Tally {
    fn push(&mut self, item: impl ToString) {
        self.0.push(item.to_string());
    }
}

fn main() {}

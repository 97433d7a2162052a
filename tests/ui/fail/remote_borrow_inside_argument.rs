struct Tally(Vec<String>);

#[isolate_harness::remote]
impl Tally {
    fn push(&mut self, item: Option<&str>) {
        self.0.extend(item.map(String::from));
    }
}

fn main() {}

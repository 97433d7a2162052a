#[isolate_harness::isolated(memory_limit = "a lot")]
fn greedy() -> usize {
    vec![0_u8; 1 << 30].len()
}

fn main() {}

#[isolate_harness::isolated(timeout = "1s", retries = 3)]
fn flaky() -> u32 {
    3
}

fn main() {}

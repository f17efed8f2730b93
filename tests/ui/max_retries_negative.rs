#[refcache::cached(max_retries = -1)]
async fn f(n: u32) -> u32 {
    n
}

fn main() {}

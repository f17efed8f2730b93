#[refcache::cached(max_concurrent = 0)]
async fn f(n: u32) -> u32 {
    n
}

fn main() {}

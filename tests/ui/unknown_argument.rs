#[refcache::cached(async_timeout = 1.0, retries = 3)]
async fn f(n: u32) -> u32 {
    n
}

fn main() {}

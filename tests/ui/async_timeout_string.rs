#[refcache::cached(async_timeout = "abc")]
async fn f(n: u32) -> u32 {
    n
}

fn main() {}

#[refcache::cached(ttl = 60, ttl = 120)]
async fn f(n: u32) -> u32 {
    n
}

fn main() {}

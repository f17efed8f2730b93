#[refcache::cached(skip(pool))]
async fn f(n: u32) -> u32 {
    n
}

fn main() {}

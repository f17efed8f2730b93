#[refcache::cached(max_size = 0)]
async fn tiny(n: i64) -> i64 {
    n
}

fn main() {}

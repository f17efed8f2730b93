#[refcache::cached(preview = "head")]
async fn listing(n: i64) -> Vec<i64> {
    vec![n]
}

fn main() {}

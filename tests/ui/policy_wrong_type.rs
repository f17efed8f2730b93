#[refcache::cached(policy = 42)]
async fn secret(n: i64) -> i64 {
    n
}

fn main() {}

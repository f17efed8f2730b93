#[refcache::cached(policy = "private")]
async fn secret(n: i64) -> i64 {
    n
}

fn main() {}

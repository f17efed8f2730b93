#[refcache::cached(namespace = "user:{user id}")]
async fn spaced(n: i64) -> i64 {
    n
}

#[refcache::cached(namespace = "user:{user_id")]
async fn unclosed(n: i64) -> i64 {
    n
}

#[refcache::cached(namespace = "user:")]
async fn no_id(n: i64) -> i64 {
    n
}

fn main() {}

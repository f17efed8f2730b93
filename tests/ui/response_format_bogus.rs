#[refcache::cached(response_format = "bogus")]
async fn f(n: u32) -> u32 {
    n
}

fn main() {}

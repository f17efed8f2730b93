use refcache::cached;
use refcache::mcp::rmcp::{self, tool};

#[cached(async_timeout = 1.0)]
#[tool]
async fn square(n: i64) -> i64 {
    n * n
}

fn main() {}

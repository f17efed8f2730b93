use refcache::cached;
use refcache::mcp::rmcp::{self, tool};

#[derive(Clone)]
struct Server;

impl Server {
    #[tool]
    #[cached(async_timeout = 1.0)]
    async fn square(&self, n: i64) -> i64 {
        n * n
    }
}

fn main() {
    let _ = Server;
}

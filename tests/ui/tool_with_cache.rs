use refcache::mcp::rmcp::{self, tool};
use refcache::{RefCache, cached};

static CACHE: std::sync::LazyLock<RefCache> = std::sync::LazyLock::new(RefCache::new);

#[derive(Clone)]
struct Server;

impl Server {
    #[cached(async_timeout = 1.0, cache = CACHE)]
    #[tool]
    async fn square(&self, n: i64) -> i64 {
        n * n
    }
}

fn main() {
    let _ = Server;
}

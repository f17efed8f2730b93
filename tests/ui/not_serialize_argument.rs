struct Connection;

#[refcache::cached]
async fn f(conn: Connection) -> u32 {
    let _ = conn;
    1
}

fn main() {}

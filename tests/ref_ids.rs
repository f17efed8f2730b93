//! Ref ids are `<cache-name>:<32 lowercase hex>`, random, never derived from the arguments; the key index gives the
//! same ref id to every caller of the same key.

use std::sync::LazyLock;

use refcache::{RefCache, RefId, cached};

static ONE: LazyLock<RefCache> = LazyLock::new(|| RefCache::builder().name("one").build().unwrap());
static TWO: LazyLock<RefCache> = LazyLock::new(|| RefCache::builder().name("one").build().unwrap());

#[cached(cache = ONE, name = "ref_ids::same")]
async fn in_one(n: u32) -> u32 {
    n
}

#[cached(cache = TWO, name = "ref_ids::same")]
async fn in_two(n: u32) -> u32 {
    n
}

#[tokio::test]
async fn ids_have_the_documented_form() {
    let id = in_one(1).await.unwrap().ref_id().clone();
    let (name, hex) = id.as_str().split_once(':').unwrap();
    assert_eq!(name, "one");
    assert_eq!(hex.len(), 32);
    assert!(
        hex.chars()
            .all(|c| c.is_ascii_digit() || ('a'..='f').contains(&c))
    );
    assert_eq!(RefId::parse(id.as_str()).unwrap(), id);
}

#[tokio::test]
async fn ids_are_random_not_derived_from_the_arguments() {
    // Same cache name, same task, same arguments, two caches: two different ids.
    let a = in_one(2).await.unwrap();
    let b = in_two(2).await.unwrap();
    assert_ne!(a.ref_id(), b.ref_id());
}

#[tokio::test]
async fn every_caller_of_a_key_gets_the_same_id() {
    let first = in_one(3).await.unwrap();
    for _ in 0..5 {
        assert_eq!(in_one(3).await.unwrap().ref_id(), first.ref_id());
    }
}

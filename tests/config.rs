//! `RefCacheConfig` loads from a TOML file and `REFCACHE_*` variables; a bad value gets an error that names the
//! key and the value; `RefCache::from_config` builds the cache it describes.

use std::time::Duration;

use refcache::{
    ConfigError, PreviewStrategy, RefCache, RefCacheConfig, SizeMeasure, TokenEncoding, cached,
};

fn load(vars: &[(&str, &str)]) -> Result<RefCacheConfig, ConfigError> {
    RefCacheConfig::load_from_vars(vars.iter().copied())
}

#[test]
fn defaults() {
    let config = load(&[("PATH", "/bin")]).unwrap();
    assert_eq!(config, RefCacheConfig::default());
    assert_eq!(config.backend, "memory");
    assert_eq!(config.default_ttl, 3600);
    assert_eq!(config.task_ttl, 86_400);
    assert_eq!(config.name, "refcache");
}

#[test]
fn environment_variables_set_each_key() {
    let config = load(&[
        ("REFCACHE_NAME", "jobs"),
        ("REFCACHE_BACKEND", "memory"),
        ("REFCACHE_DEFAULT_TTL", "60"),
        ("REFCACHE_TASK_TTL", "120"),
        ("REFCACHE_MAX_WORKERS", "3"),
        ("REFCACHE_MAX_QUEUED", "7"),
        ("REFCACHE_MAX_TASK_RECORDS", "9"),
        ("REFCACHE_MAX_CAPACITY_BYTES", "1048576"),
        ("REFCACHE_CANCEL_GRACE", "0.5"),
    ])
    .unwrap();
    assert_eq!(
        (
            config.name.as_str(),
            config.default_ttl,
            config.task_ttl,
            config.max_workers,
            config.max_queued
        ),
        ("jobs", 60, 120, 3, 7)
    );
    assert_eq!(
        (
            config.max_task_records,
            config.max_capacity_bytes,
            config.cancel_grace
        ),
        (9, 1_048_576, 0.5)
    );
    let memory = config.memory_backend();
    assert_eq!(memory.cancel_grace, Duration::from_millis(500));
}

#[test]
fn a_bad_value_names_the_key_and_the_value() {
    let err = load(&[("REFCACHE_MAX_WORKERS", "lots")]).unwrap_err();
    assert_eq!(
        err.to_string(),
        "invalid value `lots` for `REFCACHE_MAX_WORKERS`: expected a positive whole number"
    );
    let err = load(&[("REFCACHE_MAX_WORKERS", "0")]).unwrap_err();
    assert!(
        err.to_string().contains("`max_workers`") && err.to_string().contains("`0`"),
        "{err}"
    );
    let err = load(&[("REFCACHE_DEFAULT_TTL", "-5")]).unwrap_err();
    assert!(
        err.to_string().contains("`-5`") && err.to_string().contains("REFCACHE_DEFAULT_TTL"),
        "{err}"
    );
    let err = load(&[("REFCACHE_NAME", "has space")]).unwrap_err();
    assert!(
        err.to_string().contains("`has space`") && err.to_string().contains("`name`"),
        "{err}"
    );
}

#[test]
fn an_unknown_variable_is_an_error_not_a_silent_typo() {
    let err = load(&[("REFCACHE_MAXWORKERS", "3")]).unwrap_err();
    assert!(matches!(err, ConfigError::UnknownVariable { .. }));
    assert!(
        err.to_string().contains("REFCACHE_MAXWORKERS")
            && err.to_string().contains("REFCACHE_MAX_WORKERS")
    );
}

#[test]
fn a_toml_file_then_variables_on_top() {
    let dir = std::env::temp_dir().join(format!("refcache-config-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("refcache.toml");
    std::fs::write(
        &path,
        "name = \"from-file\"\nmax_workers = 5\ndefault_ttl = 10\n",
    )
    .unwrap();
    let path_text = path.to_str().unwrap();
    let config = load(&[
        ("REFCACHE_CONFIG", path_text),
        ("REFCACHE_MAX_WORKERS", "6"),
    ])
    .unwrap();
    assert_eq!(
        (config.name.as_str(), config.max_workers, config.default_ttl),
        ("from-file", 6, 10)
    );

    std::fs::write(&path, "max_workers = \"five\"\n").unwrap();
    let err = load(&[("REFCACHE_CONFIG", path_text)])
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("max_workers") && err.contains(path_text),
        "{err}"
    );
    std::fs::write(&path, "max_wrokers = 5\n").unwrap();
    let err = load(&[("REFCACHE_CONFIG", path_text)])
        .unwrap_err()
        .to_string();
    assert!(err.contains("max_wrokers"), "unknown keys are named: {err}");
    let err = load(&[("REFCACHE_CONFIG", "/nonexistent/refcache.toml")])
        .unwrap_err()
        .to_string();
    assert!(err.contains("/nonexistent/refcache.toml"), "{err}");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn backends_that_are_not_built_in_say_which_feature_to_enable() {
    let config = load(&[("REFCACHE_BACKEND", "redis://127.0.0.1:6379/0")]).unwrap();
    #[cfg(not(feature = "redis"))]
    {
        let err = RefCache::from_config(&config).unwrap_err();
        assert!(matches!(err, ConfigError::BackendNotCompiled { .. }));
        assert!(err.to_string().contains("`redis` feature"), "{err}");
    }
    #[cfg(feature = "redis")]
    {
        // Built in: the URL alone selects it (it connects on first use).
        let cache = RefCache::from_config(&config).unwrap();
        assert_eq!(cache.backend().name(), "redis");
    }
    let config = load(&[("REFCACHE_BACKEND", "nats://127.0.0.1:4222")]).unwrap();
    let err = RefCache::from_config(&config).unwrap_err().to_string();
    assert!(
        err.contains("`nats://127.0.0.1:4222`") && err.contains("redis://"),
        "a scheme no backend provides yet names the ones there are: {err}"
    );
    let config = load(&[("REFCACHE_BACKEND", "carrier-pigeon")]).unwrap();
    let err = RefCache::from_config(&config).unwrap_err().to_string();
    assert!(
        err.contains("`carrier-pigeon`") && err.contains("`backend`"),
        "{err}"
    );
}

#[test]
fn from_config_builds_the_described_cache() {
    let config = load(&[("REFCACHE_NAME", "tools"), ("REFCACHE_MAX_WORKERS", "2")]).unwrap();
    let cache = RefCache::from_config(&config).unwrap();
    assert_eq!(cache.name(), "tools");
    assert_eq!(cache.backend().name(), "memory");
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let stats = rt.block_on(cache.stats()).unwrap();
    assert_eq!(stats.capacity, 2);
}

static CONFIGURED: std::sync::LazyLock<RefCache> = std::sync::LazyLock::new(|| {
    RefCache::from_config(&load(&[("REFCACHE_NAME", "configured")]).unwrap()).unwrap()
});

#[cached(cache = CONFIGURED)]
async fn named(n: u32) -> u32 {
    n
}

#[tokio::test]
async fn ref_ids_carry_the_configured_name() {
    assert!(
        named(1)
            .await
            .unwrap()
            .ref_id()
            .as_str()
            .starts_with("configured:")
    );
}

#[test]
fn preview_settings_come_from_variables_and_files() {
    let defaults = load(&[]).unwrap().previewer().unwrap();
    assert_eq!(
        (
            defaults.measure,
            defaults.max_size,
            defaults.page_size,
            defaults.strategy
        ),
        (
            SizeMeasure::Tokens(TokenEncoding::Cl100kBase),
            1000,
            20,
            PreviewStrategy::Sample
        ),
        "tokens, 1000, 20, sample by default"
    );
    let set = load(&[
        ("REFCACHE_SIZE_MEASURE", "tokens"),
        ("REFCACHE_TOKEN_ENCODING", "o200k_base"),
        ("REFCACHE_MAX_SIZE", "250"),
        ("REFCACHE_PAGE_SIZE", "5"),
        ("REFCACHE_PREVIEW_STRATEGY", "truncate"),
    ])
    .unwrap()
    .previewer()
    .unwrap();
    assert_eq!(
        (set.measure, set.max_size, set.page_size, set.strategy),
        (
            SizeMeasure::Tokens(TokenEncoding::O200kBase),
            250,
            5,
            PreviewStrategy::Truncate
        )
    );
    let chars = RefCacheConfig::from_toml_str(
        "size_measure = \"characters\"\nmax_size = 80\npreview_strategy = \"paginate\"\n",
    )
    .unwrap();
    let cache = RefCache::from_config(&chars).unwrap();
    assert_eq!(cache.previewer().measure, SizeMeasure::Characters);
    assert_eq!(cache.previewer().max_size, 80);
    assert_eq!(cache.previewer().strategy, PreviewStrategy::Paginate);

    for (var, value, expected) in [
        ("REFCACHE_SIZE_MEASURE", "bytes", "`tokens` or `characters`"),
        (
            "REFCACHE_TOKEN_ENCODING",
            "gpt2",
            "`cl100k_base` or `o200k_base`",
        ),
        ("REFCACHE_MAX_SIZE", "0", "a positive whole number"),
        ("REFCACHE_PAGE_SIZE", "0", "a positive whole number"),
        (
            "REFCACHE_PREVIEW_STRATEGY",
            "head",
            "`sample`, `paginate` or `truncate`",
        ),
    ] {
        let err = load(&[(var, value)]).unwrap_err().to_string();
        assert!(
            err.contains(&format!("`{value}`")) && err.contains(expected),
            "{var}={value}: {err}"
        );
    }
}

//! Opens the configured storage backend.

use std::path::Path;

use anyhow::{Context, bail};
use eventfleet_storage::{EmbeddedOptions, EmbeddedStore, Store};

use crate::config::{Backend, Config};

/// The store named by the configuration.
pub fn open(config: &Config, data_dir: &Path) -> anyhow::Result<Store> {
    match config.backend {
        Backend::Embedded => {
            let options = EmbeddedOptions {
                max_receive_count: config.worker.max_receive_count,
                durability: config.durability,
                ..EmbeddedOptions::default()
            };
            let store = EmbeddedStore::open_dir(data_dir, options)
                .with_context(|| format!("open the embedded store in {}", data_dir.display()))?;
            Ok(store.into_store())
        }
        Backend::Aws => {
            bail!("EVENTFLEET_BACKEND=aws: the AWS backend is not part of this build yet; use the embedded backend")
        }
    }
}

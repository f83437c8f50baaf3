//! Reading the settings: the compiled-in TOML files, then the config
//! directory's file for the environment, then `ORDERFLOW__SECTION__KEY`
//! variables; then [`Settings::validate`].

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use anyhow::Context;

use super::{Environment, Settings, DEFAULT_TOML};

impl Settings {
    /// Loads settings for the process: `ORDERFLOW_ENV`, the config directory
    /// (`ORDERFLOW_CONFIG_DIR`, default `./config`) and the process environment.
    pub fn load() -> anyhow::Result<Settings> {
        let environment = Environment::from_process_env()?;
        let config_dir = std::env::var_os("ORDERFLOW_CONFIG_DIR")
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from("config"));
        let vars: HashMap<String, String> = std::env::vars().collect();
        Settings::load_from(environment, &config_dir, vars)
    }

    /// Loads settings from explicit inputs; `vars` stands for the process
    /// environment, so tests can exercise overrides without touching it.
    pub fn load_from(
        environment: Environment,
        config_dir: &Path,
        vars: HashMap<String, String>,
    ) -> anyhow::Result<Settings> {
        let env_file = config_dir.join(format!("{}.toml", environment.as_str()));
        let raw = config::Config::builder()
            .add_source(config::File::from_str(
                DEFAULT_TOML,
                config::FileFormat::Toml,
            ))
            .add_source(config::File::from_str(
                environment.embedded_toml(),
                config::FileFormat::Toml,
            ))
            .add_source(config::File::from(env_file).required(false))
            .add_source(
                config::Environment::with_prefix("ORDERFLOW")
                    .prefix_separator("__")
                    .separator("__")
                    .source(Some(vars)),
            )
            .build()
            .context("reading configuration")?;
        let mut settings: Settings = raw
            .try_deserialize()
            .map_err(|e| anyhow::anyhow!("invalid configuration: {e}"))?;
        settings.environment = environment;
        settings.validate()?;
        Ok(settings)
    }
}

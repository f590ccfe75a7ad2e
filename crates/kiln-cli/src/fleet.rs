//! `workers.toml`: the fleet's configuration file.

use anyhow::Context;
use kiln_worker::WorkerConfig;
use serde::Deserialize;
use std::path::Path;

/// The parsed file.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FleetFile {
    /// Settings of every `kiln worker` started with this file.
    #[serde(default)]
    pub worker: WorkerConfig,
    /// Job images a worker may use, by name (directories under `images/`).
    #[serde(default)]
    pub images: Vec<String>,
    /// Cron schedules `kiln scheduler` creates or updates at start (`[[schedules]]`).
    #[serde(default)]
    pub schedules: Vec<kiln_scheduler::ScheduleSpec>,
    /// Pre-started containers kept per image for validation jobs (0: none; each job then
    /// creates its own container).
    #[serde(default)]
    pub warm_pool: usize,
    /// The kind modules' sections (`[validation]`, `[llm]`…), checked by their modules.
    #[serde(skip)]
    pub sections: toml::Table,
    /// Where outbound connections a request names may go (`[network]`: `allow_loopback`,
    /// `allow_private`; both false by default). Link-local and cloud-metadata addresses are
    /// refused whatever this says.
    #[serde(default)]
    pub network: kiln_artifacts::DestinationPolicy,
}

/// The top-level keys the fleet file itself owns; every other table belongs to a kind module.
const CORE_KEYS: [&str; 5] = ["worker", "images", "schedules", "warm_pool", "network"];

/// The `workers.toml` shipped with Kiln, compiled in: the configuration of a `kiln` started
/// where there is no `workers.toml` and no `--config`.
pub const BUILT_IN: &str = include_str!("../../../workers.toml");

impl FleetFile {
    /// `config` when given (it must exist); else `./workers.toml` when there is one; else the
    /// built-in defaults ([`BUILT_IN`]), saying so in the log.
    pub fn load_or_default(config: Option<&Path>) -> anyhow::Result<Self> {
        if let Some(path) = config {
            return Self::load(path);
        }
        let here = Path::new("workers.toml");
        if here.exists() {
            return Self::load(here);
        }
        let cwd = std::env::current_dir().unwrap_or_default();
        tracing::info!(
            "no workers.toml in {}: running on the built-in defaults (the workers.toml shipped with Kiln; --config FILE chooses another)",
            cwd.display()
        );
        Self::parse(BUILT_IN, "the built-in workers.toml")
    }

    /// Reads and validates `path`; errors name the file and the field.
    pub fn load(path: &Path) -> anyhow::Result<Self> {
        let text = std::fs::read_to_string(path).with_context(|| {
            format!(
                "read the fleet file {} (choose another with --config)",
                path.display()
            )
        })?;
        Self::parse(&text, &path.display().to_string())
    }

    /// Parses and validates a fleet file's text; `name` (its path) starts every error.
    pub fn parse(text: &str, name: &str) -> anyhow::Result<Self> {
        let mut table: toml::Table = toml::from_str(text).with_context(|| format!("parse {name}"))?;
        let module_keys: Vec<String> = table
            .keys()
            .filter(|k| !CORE_KEYS.contains(&k.as_str()))
            .cloned()
            .collect();
        let sections: toml::Table = module_keys
            .into_iter()
            .filter_map(|k| table.remove(&k).map(|v| (k, v)))
            .collect();
        let mut file: FleetFile = toml::Value::Table(table)
            .try_into()
            .with_context(|| format!("parse {name}"))?;
        crate::kinds::registry()
            .check(&sections)
            .map_err(|e| anyhow::anyhow!("{name}: {e}"))?;
        file.sections = sections;
        file.worker
            .validate_settings()
            .map_err(|e| anyhow::anyhow!("{name}: [worker] {e}"))?;
        for (i, image) in file.images.iter().enumerate() {
            anyhow::ensure!(
                kiln_images::JOB_IMAGES.contains(&image.as_str()),
                "{name}: images[{i}]: unknown image {image:?} (known: {})",
                kiln_images::JOB_IMAGES.join(", ")
            );
        }
        let mut names = std::collections::HashSet::new();
        for (i, s) in file.schedules.iter().enumerate() {
            s.clone()
                .validate()
                .map_err(|e| anyhow::anyhow!("{name}: schedules[{i}].{e}"))?;
            anyhow::ensure!(
                names.insert(s.name.as_str()),
                "{name}: schedules[{i}].name: {:?} is declared twice",
                s.name
            );
        }
        Ok(file)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_shipped_workers_toml_is_valid() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../workers.toml");
        let file = FleetFile::load(&path).unwrap();
        assert!(!file.worker.queues.is_empty());
        assert!(!file.schedules.is_empty());
    }

    #[test]
    fn a_bad_schedule_is_named_by_field() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("workers.toml");
        std::fs::write(
            &path,
            "[worker]\n[[worker.queues]]\nname = \"q\"\n\n[[schedules]]\nname = \"nightly\"\ncron = \"0 0 3 * * *\"\ntimezone = \"Europe/Nowhere\"\n[schedules.job]\nkind = \"lint\"\n",
        )
        .unwrap();
        let err = FleetFile::load(&path).unwrap_err().to_string();
        assert!(err.contains("schedules[0].invalid `timezone`"), "{err}");
    }

    #[test]
    fn a_file_with_only_a_module_section_is_complete_and_unknown_sections_are_named() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("workers.toml");
        std::fs::write(&path, "[validation]\nsettle_poll_secs = 1.5\n").unwrap();
        let file = FleetFile::load(&path).unwrap();
        assert!(file.worker.queues.is_empty() && file.worker.kinds.is_none());
        assert!(file.sections.contains_key("validation"));
        std::fs::write(&path, "[validaton]\nsettle_poll_secs = 1.5\n").unwrap();
        let err = FleetFile::load(&path).unwrap_err().to_string();
        assert!(err.contains("unknown section `validaton`"), "{err}");
        std::fs::write(&path, "[validation]\nsettle_pol = 1\n").unwrap();
        let err = FleetFile::load(&path).unwrap_err().to_string();
        assert!(
            err.contains("[validation]") && err.contains("settle_pol"),
            "{err}"
        );
    }

    #[test]
    fn a_file_with_only_an_llm_section_is_complete_and_its_keys_are_named() {
        let text = "[[llm.providers]]\nname = \"local\"\napi = \"openai\"\nbase_url = \"http://127.0.0.1:11434/v1\"\n\
                    [[llm.providers.models]]\nname = \"m\"\n[llm.routes]\nbalanced = [\"local/m\"]\n";
        let file = FleetFile::parse(text, "w.toml").unwrap();
        assert!(file.sections.contains_key("llm"));
        let err = FleetFile::parse("[llm.routes]\nbalanced = [\"nowhere/m\"]\n", "w.toml")
            .unwrap_err()
            .to_string();
        assert!(err.contains("[llm]") && err.contains("llm.routes"), "{err}");
        let err = FleetFile::parse("[llm.generation]\nmax_turns = 0\n", "w.toml")
            .unwrap_err()
            .to_string();
        assert!(err.contains("llm.generation.max_turns"), "{err}");
    }

    #[test]
    fn the_network_section_opens_loopback_or_private_destinations() {
        let file: FleetFile = toml::from_str("[network]\nallow_private = true\n").unwrap();
        assert!(file.network.allow_private && !file.network.allow_loopback);
        let strict: FleetFile = toml::from_str("").unwrap();
        assert_eq!(strict.network, kiln_artifacts::DestinationPolicy::default());
        let err = toml::from_str::<FleetFile>("[network]\nallow_metadata = true\n").unwrap_err();
        assert!(err.to_string().contains("allow_metadata"), "{err}");
    }

    #[test]
    fn unknown_fields_are_named() {
        let err = toml::from_str::<FleetFile>("[worker]\nleese = 3\n").unwrap_err();
        assert!(err.to_string().contains("leese"), "{err}");
    }

    #[test]
    fn the_built_in_defaults_are_the_shipped_workers_toml() {
        let shipped = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../workers.toml");
        assert_eq!(BUILT_IN, std::fs::read_to_string(shipped).unwrap());
        let file = FleetFile::parse(BUILT_IN, "built-in").unwrap();
        assert!(!file.worker.queues.is_empty());
    }

    #[test]
    fn an_unknown_image_is_named_by_field() {
        let text = "images = [\"python\", \"pyton\"]\n[worker]\n[[worker.queues]]\nname = \"q\"\n";
        let err = FleetFile::parse(text, "w.toml").unwrap_err().to_string();
        assert!(
            err.contains("w.toml: images[1]: unknown image \"pyton\""),
            "{err}"
        );
    }

    #[test]
    fn an_explicit_config_must_exist() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("nope.toml");
        let err = FleetFile::load_or_default(Some(&missing))
            .unwrap_err()
            .to_string();
        assert!(err.contains("nope.toml"), "{err}");
    }
}

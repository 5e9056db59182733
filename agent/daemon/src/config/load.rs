//! Configuration loading: embedded defaults, then an optional TOML file, then environment
//! variables (`WEDSYNC__SECTION__KEY`), merged with the `config` crate; then validation. And
//! the two commands that show it: `config print` ([`print()`]) and `config check` ([`check`]).

use super::{AgentConfig, ConfigErrors, FieldError, Settings};
use ::config::{Config, Environment, File, FileFormat};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

/// Prefix of the environment variables that override configuration.
pub const ENV_PREFIX: &str = "WEDSYNC";

/// Why a configuration could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// The config file does not exist or cannot be read.
    #[error("config file {path}: cannot be read: {reason}")]
    Unreadable {
        /// The file.
        path: PathBuf,
        /// What the OS said.
        reason: String,
    },
    /// A layer could not be parsed or merged (bad TOML, wrong type, unknown key).
    #[error("{origin}: {reason}")]
    Parse {
        /// Which layer: the file's path, or "environment".
        origin: String,
        /// What was wrong, with the key where the parser knows it.
        reason: String,
    },
    /// The merged configuration is not valid.
    #[error(transparent)]
    Invalid(#[from] ConfigErrors),
}

/// Where configuration comes from.
#[derive(Debug, Clone, Default)]
pub struct Sources {
    /// An optional TOML file layered over the defaults.
    pub file: Option<PathBuf>,
    /// Environment variables to read; `None` reads the process environment.
    pub env: Option<HashMap<String, String>>,
}

impl Sources {
    /// The process environment and, optionally, a file.
    pub fn from_process(file: Option<PathBuf>) -> Self {
        Sources { file, env: None }
    }
}

/// Merges the layers into the raw configuration (not yet validated). An empty `agent.node_id`
/// is replaced by the host name.
pub fn load(sources: &Sources) -> Result<AgentConfig, LoadError> {
    let defaults = Config::try_from(&AgentConfig::default())
        .map_err(|e| LoadError::Parse { origin: "embedded defaults".into(), reason: e.to_string() })?;
    let mut builder = Config::builder().add_source(defaults);
    if let Some(path) = &sources.file {
        let text = std::fs::read_to_string(path)
            .map_err(|e| LoadError::Unreadable { path: path.clone(), reason: e.to_string() })?;
        // Parse the file alone first so its errors name the file rather than the merge.
        toml::from_str::<AgentConfig>(&text).map_err(|e| LoadError::Parse {
            origin: format!("config file {}", path.display()),
            reason: e.to_string().trim_end().to_owned(),
        })?;
        builder = builder.add_source(File::from_str(&text, FileFormat::Toml));
    }
    let env = Environment::with_prefix(ENV_PREFIX)
        .prefix_separator("__")
        .separator("__")
        .try_parsing(true)
        // WEDSYNC__MESH__SEEDS="10.0.0.1:7946,10.0.0.2:7946"
        .list_separator(",")
        .with_list_parse_key("mesh.seeds")
        .source(sources.env.clone());
    let merged = builder
        .add_source(env)
        .build()
        .map_err(|e| LoadError::Parse { origin: "environment".into(), reason: e.to_string() })?;
    let mut config: AgentConfig = merged.try_deserialize().map_err(|e| LoadError::Parse {
        origin: format!("environment ({ENV_PREFIX}__SECTION__KEY variables)"),
        reason: e.to_string(),
    })?;
    if config.agent.node_id.is_empty() {
        config.agent.node_id = host_name();
    }
    Ok(config)
}

/// Loads and validates ([`AgentConfig::validate`], then `audit.fsync`, whose errors come last).
pub fn load_settings(sources: &Sources) -> Result<(AgentConfig, Settings), LoadError> {
    let config = load(sources)?;
    let daemon_errors: Vec<FieldError> = config.audit.fsync_error().into_iter().collect();
    match config.validate() {
        Ok(settings) if daemon_errors.is_empty() => Ok((config, settings)),
        Ok(_) => Err(ConfigErrors(daemon_errors).into()),
        Err(ConfigErrors(mut errors)) => {
            errors.extend(daemon_errors);
            Err(ConfigErrors(errors).into())
        }
    }
}

/// The host name, cut to a valid node id; `"node"` if the kernel does not say.
pub fn host_name() -> String {
    let raw = sysinfo::System::host_name().unwrap_or_default();
    let cleaned: String = raw
        .trim()
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.' { c } else { '-' })
        .take(64)
        .collect();
    if cleaned.is_empty() { "node".into() } else { cleaned }
}

/// The effective configuration as TOML, for `config print`; every secret set (the API token,
/// webhook secrets) is redacted.
pub fn to_toml(config: &AgentConfig) -> Result<String, toml::ser::Error> {
    const REDACTED: &str = "<redacted>";
    let mut shown = config.clone();
    if !shown.api.token.is_empty() {
        shown.api.token = REDACTED.into();
    }
    for token in &mut shown.api.tokens {
        token.token = REDACTED.into();
    }
    if !shown.audit.checkpoint_secret.is_empty() {
        shown.audit.checkpoint_secret = REDACTED.into();
    }
    for pool in &mut shown.pools {
        if let super::actuators::ActuatorConfig::Webhook { secret, .. } = &mut pool.actuator
            && !secret.is_empty()
        {
            *secret = REDACTED.into();
        }
    }
    toml::to_string_pretty(&shown)
}

/// Reads a file for `config check`, layered as `run --config FILE` would.
pub fn check_file(path: &Path, env: Option<HashMap<String, String>>) -> Result<Settings, LoadError> {
    load_settings(&Sources { file: Some(path.to_path_buf()), env }).map(|(_, s)| s)
}

/// Why `config print` could not print the configuration.
#[derive(Debug, thiserror::Error)]
pub enum PrintError {
    /// The layers could not be loaded.
    #[error(transparent)]
    Load(#[from] LoadError),
    /// The configuration could not be rendered as TOML.
    #[error("cannot render the configuration")]
    Render(#[source] toml::ser::Error),
}

/// `config print`: the effective configuration (defaults, `file`, environment) as TOML on
/// standard output; when it is not valid, every error on standard error and a failure.
pub fn print(file: Option<PathBuf>) -> Result<ExitCode, PrintError> {
    let raw = load(&Sources::from_process(file))?;
    print!("{}", to_toml(&raw).map_err(PrintError::Render)?);
    if let Err(errors) = raw.validate() {
        eprintln!("{errors}");
        return Ok(ExitCode::FAILURE);
    }
    Ok(ExitCode::SUCCESS)
}

/// `config check`: validates `file` layered as `run --config FILE` would; says `ok` on standard
/// output, or every error on standard error and a failure.
pub fn check(file: &Path) -> ExitCode {
    match check_file(file, None) {
        Ok(_) => {
            println!("{}: ok", file.display());
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("{}: {e}", file.display());
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::audit_config;
    use std::io::Write;
    use wedsync_audit::FsyncPolicy;

    fn env(pairs: &[(&str, &str)]) -> Option<HashMap<String, String>> {
        Some(pairs.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect())
    }

    fn temp_file(name: &str, text: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("wedsync-config-{}-{name}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("agent.toml");
        std::fs::File::create(&path).unwrap().write_all(text.as_bytes()).unwrap();
        path
    }

    #[test]
    fn defaults_alone_are_valid_and_use_the_host_name() {
        let (config, settings) = load_settings(&Sources { file: None, env: env(&[]) }).unwrap();
        assert_eq!(config.agent.node_id, host_name());
        assert_eq!(settings.region, "local");
        assert!(settings.api_listen.ip().is_loopback());
    }

    #[test]
    fn mesh_seeds_come_from_a_comma_separated_variable() {
        let sources = Sources {
            file: None,
            env: env(&[("WEDSYNC__MESH__SEEDS", "127.0.0.1:7001,127.0.0.2:7002"), ("WEDSYNC__MESH__PROFILE", "wan")]),
        };
        let (_, settings) = load_settings(&sources).unwrap();
        let mesh = settings.mesh.unwrap();
        assert_eq!(mesh.seeds, vec!["127.0.0.1:7001".parse().unwrap(), "127.0.0.2:7002".parse().unwrap()]);
        assert_eq!(mesh.profile, crate::config::MeshProfile::Wan);
    }

    #[test]
    fn file_overrides_defaults_and_env_overrides_file() {
        let file = temp_file(
            "layers",
            "[agent]\nnode_id = \"from-file\"\nregion = \"eu-west\"\n[statsd]\nlisten = \"127.0.0.1:9999\"\n",
        );
        let sources = Sources {
            file: Some(file),
            env: env(&[("WEDSYNC__AGENT__REGION", "us-east"), ("WEDSYNC__STORE__MAX_SERIES", "42")]),
        };
        let (config, settings) = load_settings(&sources).unwrap();
        assert_eq!(config.agent.node_id, "from-file", "file beats default");
        assert_eq!(settings.region, "us-east", "env beats file");
        assert_eq!(settings.statsd_listen, Some("127.0.0.1:9999".parse().unwrap()));
        assert_eq!(settings.store_limits.max_series, 42, "env numbers are parsed");
        assert_eq!(settings.host_interval.as_millis(), 250, "untouched keys keep defaults");
    }

    #[test]
    fn env_validation_error_names_the_field() {
        let sources = Sources { file: None, env: env(&[("WEDSYNC__API__LISTEN", "300.1.1.1:80")]) };
        let err = load_settings(&sources).unwrap_err();
        assert_eq!(
            err.to_string(),
            "invalid configuration (1 error):\n  api.listen: \"300.1.1.1:80\" is not a socket address (expected IP:PORT, e.g. \"127.0.0.1:8125\")"
        );
    }

    #[test]
    fn wrong_type_in_env_names_the_key() {
        let sources = Sources { file: None, env: env(&[("WEDSYNC__STORE__MAX_SERIES", "lots")]) };
        let err = load_settings(&sources).unwrap_err().to_string();
        assert!(err.contains("store.max_series"), "{err}");
    }

    #[test]
    fn unknown_key_in_file_names_file_and_key() {
        let file = temp_file("unknown", "[api]\nlisen = \"127.0.0.1:1\"\n");
        let err = load_settings(&Sources { file: Some(file.clone()), env: env(&[]) }).unwrap_err().to_string();
        assert!(err.contains(&file.display().to_string()) && err.contains("lisen"), "{err}");
    }

    #[test]
    fn audit_fsync_is_checked_with_the_rest() {
        let sources = Sources {
            file: None,
            env: env(&[("WEDSYNC__AUDIT__FSYNC", "sometimes"), ("WEDSYNC__API__LISTEN", "nowhere")]),
        };
        let LoadError::Invalid(errors) = load_settings(&sources).unwrap_err() else { panic!("not a validation error") };
        assert!(errors.names("audit.fsync") && errors.names("api.listen"), "{errors}");
        let sources = Sources { file: None, env: env(&[("WEDSYNC__AUDIT__FSYNC", "250ms")]) };
        let (_, settings) = load_settings(&sources).unwrap();
        let audit = audit_config(&settings).unwrap();
        assert_eq!(audit.fsync, FsyncPolicy::Interval(std::time::Duration::from_millis(250)));
        assert!(audit.path.ends_with("audit.jsonl"));
    }

    #[test]
    fn missing_file_is_a_clear_error() {
        let err = check_file(Path::new("/nonexistent/agent.toml"), env(&[])).unwrap_err().to_string();
        assert!(err.starts_with("config file /nonexistent/agent.toml: cannot be read"), "{err}");
    }

    #[test]
    fn example_file_documents_the_defaults() {
        let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("agent.example.toml");
        let text = std::fs::read_to_string(example).unwrap();
        let parsed: AgentConfig = toml::from_str(&text).unwrap();
        let mut defaults = AgentConfig::default();
        defaults.agent.node_id = parsed.agent.node_id.clone();
        assert_eq!(parsed, defaults, "agent.example.toml must show every default");
    }

    #[test]
    fn printed_config_redacts_the_token() {
        let sources = Sources { file: None, env: env(&[("WEDSYNC__API__TOKEN", "s3cret-s3cret-s3cret")]) };
        let text = to_toml(&load(&sources).unwrap()).unwrap();
        assert!(!text.contains("s3cret") && text.contains("<redacted>"), "{text}");
    }

    #[test]
    fn printed_config_redacts_webhook_secrets() {
        let dir = std::env::temp_dir().join(format!("wedsync-print-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("agent.toml");
        std::fs::write(
            &file,
            "[[pools]]\nname = \"web\"\nmin = 1\nmax = 4\ncapacity_per_unit = 10.0\n[pools.actuator]\nkind = \"webhook\"\nurl = \"https://scaler.example/hook\"\nsecret = \"hook-s3cret-hook-s3cret\"\n",
        )
        .unwrap();
        let text = to_toml(&load(&Sources { file: Some(file), env: env(&[]) }).unwrap()).unwrap();
        assert!(!text.contains("hook-s3cret") && text.contains("<redacted>"), "{text}");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn plain_http_webhooks_need_allow_http() {
        let dir = std::env::temp_dir().join(format!("wedsync-http-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("agent.toml");
        let pool = |extra: &str| {
            format!(
                "[[pools]]\nname = \"web\"\nmin = 1\nmax = 4\ncapacity_per_unit = 10.0\n[pools.actuator]\nkind = \"webhook\"\nurl = \"http://127.0.0.1:9000/hook\"\nsecret = \"hook-s3cret-hook-s3cret\"\n{extra}"
            )
        };
        std::fs::write(&file, pool("")).unwrap();
        let err = check_file(&file, env(&[])).unwrap_err().to_string();
        assert!(err.contains("pools[0].actuator.url") && err.contains("allow_http"), "{err}");
        std::fs::write(&file, pool("allow_http = true\n")).unwrap();
        assert!(check_file(&file, env(&[])).is_ok());
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn printed_config_round_trips() {
        let config = load(&Sources { file: None, env: env(&[]) }).unwrap();
        let text = to_toml(&config).unwrap();
        let back: AgentConfig = toml::from_str(&text).unwrap();
        assert_eq!(back, config);
    }
}

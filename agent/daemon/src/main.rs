//! `wedsync-agent`: the WedSync Edge agent.
#![forbid(unsafe_code)]

use anyhow::Context;
use clap::{Parser, Subcommand, ValueEnum};
use std::path::PathBuf;
use std::process::ExitCode;
use wedsync_agent::agent::{RunningAgent, ShutdownSignals};
use wedsync_agent::config::{self, LogFormat, Sources};
use wedsync_agent::logging;

#[derive(Debug, Parser)]
#[command(
    name = "wedsync-agent",
    version,
    about = "WedSync Edge agent: sub-second metrics, StatsD ingest and a local API"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum LogFormatArg {
    Text,
    Json,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the agent (on the embedded defaults unless --config or WEDSYNC__* say otherwise).
    Run {
        /// A TOML file layered over the defaults (environment variables override it).
        #[arg(long, value_name = "FILE")]
        config: Option<PathBuf>,
        /// Log format; overrides log.format.
        #[arg(long, value_enum)]
        log_format: Option<LogFormatArg>,
    },
    /// Inspect configuration.
    Config {
        #[command(subcommand)]
        command: ConfigCommand,
    },
    /// Work with the audit trail.
    Audit {
        #[command(subcommand)]
        command: AuditCommand,
    },
    /// Manage the fleet certificate authority that signs every node's mesh certificate.
    Ca {
        #[command(subcommand)]
        command: CaCommand,
    },
    /// Issue node certificates from the fleet CA.
    Cert {
        #[command(subcommand)]
        command: CertCommand,
    },
    /// Simulate a fleet under a scenario: one decision engine per node with the bundled WASM
    /// plugins, gossiping over real QUIC on loopback (or, with --virtual, in virtual time), fed by a load model and answered by a capacity model,
    /// beside the Kubernetes HPA baseline on the same traffic; writes report.md, report.json
    /// and plots (SVG and PNG). A single-pool trace (CSV, or a built-in trace name) runs the
    /// one-pool comparison instead.
    Sim {
        /// A built-in scenario (viral-saturday, wedding-day, region-outage, season-ramp, quick),
        /// a scenario file (TOML), a built-in single-pool trace (viral-spike, saturday-surge,
        /// april-ramp, wedding-day-trace, flash-crowd-during-wedding) or a trace file (CSV).
        #[arg(long, default_value = "viral-saturday")]
        scenario: String,
        /// Scale the scenario's node counts to about this many nodes (at least one per region).
        #[arg(long)]
        nodes: Option<u32>,
        /// Seeds the mesh's probes and the simulated network.
        #[arg(long, default_value_t = 1)]
        seed: u64,
        /// Run the mesh's state machines in virtual time in this thread instead of one QUIC
        /// endpoint per node: as fast as the machine goes, deterministic, up to thousands of nodes.
        #[arg(long = "virtual")]
        virtual_time: bool,
        /// Scenario seconds per wall-clock second over the real QUIC mesh (the mesh's timers
        /// run at the same pace) [default: 60].
        #[arg(long, conflicts_with = "virtual_time")]
        speed: Option<f64>,
        /// Run the nodes without their plugins (the engine's proposals stand).
        #[arg(long)]
        no_plugins: bool,
        /// Skip the plots.
        #[arg(long)]
        no_plots: bool,
        /// Exit with status 3 when the engine did not win (for CI).
        #[arg(long)]
        fail_unless_won: bool,
        /// Where the report goes.
        #[arg(long, value_name = "DIR", default_value = "sim-report")]
        out: PathBuf,
        /// Single-pool traces: the pool's minimum units (default: the trace's).
        #[arg(long)]
        min: Option<u32>,
        /// Single-pool traces: the pool's maximum units (default: the trace's).
        #[arg(long)]
        max: Option<u32>,
        /// Single-pool traces: time from asking for a unit to its serving, e.g. "60s".
        #[arg(long, value_parser = humantime::parse_duration)]
        provisioning_delay: Option<std::time::Duration>,
    },
    /// Sign, verify and inspect policy plugins.
    Plugin {
        #[command(subcommand)]
        command: PluginCommand,
    },
}

#[derive(Debug, Subcommand)]
enum PluginCommand {
    /// Make a signing key pair: OUT/plugin.key (secret; keep it off the agents) and OUT/plugin.pub
    /// (one line for plugins.trusted_keys). Refuses to overwrite an existing key.
    Keygen {
        /// Directory for the key files (created if missing).
        #[arg(long, value_name = "DIR")]
        out: PathBuf,
    },
    /// Sign a component: writes FILE.sig (an ed25519 signature over the component's SHA-256).
    Sign {
        /// The secret key (from `plugin keygen`).
        #[arg(long, value_name = "FILE")]
        key: PathBuf,
        /// The component.
        file: PathBuf,
    },
    /// Check a component's signature (FILE.sig unless --sig) against a public key.
    Verify {
        /// The public key (`plugin.pub`).
        #[arg(long, value_name = "FILE")]
        key: PathBuf,
        /// The signature file; default FILE.sig.
        #[arg(long, value_name = "FILE")]
        sig: Option<PathBuf>,
        /// The component.
        file: PathBuf,
    },
    /// Print what a component is: its world, name, version, hooks, imports, exports, size, SHA-256.
    Inspect {
        /// The component.
        file: PathBuf,
    },
}

#[derive(Debug, Subcommand)]
enum CaCommand {
    /// Make a new fleet CA: DIR/ca.pem (give it to every node as mesh.ca_cert) and DIR/ca.key
    /// (keep it off the nodes). Refuses to overwrite an existing CA.
    Init {
        /// Directory for the CA files (created if missing).
        #[arg(long, value_name = "DIR")]
        dir: PathBuf,
    },
}

#[derive(Debug, Subcommand)]
enum CertCommand {
    /// Issue a certificate for one node: OUT/NODE.pem and OUT/NODE.key (mesh.cert, mesh.key).
    Issue {
        /// The node id (agent.node_id of that node).
        #[arg(long)]
        node: String,
        /// The node's region (agent.region).
        #[arg(long)]
        region: String,
        /// Directory of the fleet CA (from `ca init`).
        #[arg(long, value_name = "DIR")]
        ca_dir: PathBuf,
        /// Where to write the files; default: the CA directory.
        #[arg(long, value_name = "DIR")]
        out: Option<PathBuf>,
    },
}

#[derive(Debug, Subcommand)]
enum AuditCommand {
    /// Verify the hash chain of an audit log and its rotated files; says where it breaks.
    Verify {
        /// The current log file (rotated files beside it are found). Default: the configured one.
        file: Option<PathBuf>,
        /// Config file used to find the default log.
        #[arg(long, value_name = "FILE")]
        config: Option<PathBuf>,
    },
}

#[derive(Debug, Subcommand)]
enum ConfigCommand {
    /// Print the effective configuration (defaults, file, environment) as TOML.
    Print {
        /// A TOML file layered over the defaults.
        #[arg(long, value_name = "FILE")]
        config: Option<PathBuf>,
    },
    /// Check a config file (layered over the defaults, with the environment applied).
    Check {
        /// The file to check.
        file: PathBuf,
    },
}

/// Scenario seconds per wall second of `sim` over real QUIC: viral-saturday's 45 minutes in 45 s.
const DEFAULT_SIM_SPEED: f64 = 60.0;

fn main() -> ExitCode {
    let cli = Cli::parse();
    match execute(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("wedsync-agent: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn execute(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Run { config, log_format } => run(config, log_format),
        Command::Config { command: ConfigCommand::Print { config } } => {
            let raw = config::load(&Sources::from_process(config))?;
            print!("{}", config::to_toml(&raw).context("cannot render the configuration")?);
            if let Err(errors) = raw.validate() {
                eprintln!("{errors}");
                return Ok(ExitCode::FAILURE);
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Audit { command: AuditCommand::Verify { file, config } } => {
            let file = match file {
                Some(file) => file,
                None => {
                    let (_, settings) = config::load_settings(&Sources::from_process(config))?;
                    config::audit_config(&settings).context("the audit trail is disabled (audit.enabled = false)")?.path
                }
            };
            let files = wedsync_audit::chain_files(&file).with_context(|| format!("{}", file.display()))?;
            match wedsync_audit::verify_files(&files) {
                Ok(summary) => {
                    println!(
                        "{}: ok: {} entries in {} file(s), seq {}..={}, last hash {}{}",
                        file.display(),
                        summary.entries,
                        summary.files,
                        summary.first_seq,
                        summary.last_seq,
                        summary.last_hash,
                        summary
                            .anchored_at_seq
                            .map(|s| format!(" (older files pruned; anchored at seq {s})"))
                            .unwrap_or_default()
                    );
                    Ok(ExitCode::SUCCESS)
                }
                Err(e) => {
                    eprintln!("{}: FAILED: {e}", file.display());
                    Ok(ExitCode::FAILURE)
                }
            }
        }
        Command::Ca { command: CaCommand::Init { dir } } => {
            let paths = wedsync_transport::pki::init_ca(&dir)?;
            println!("fleet CA certificate: {}", paths.cert.display());
            println!("fleet CA key:         {} (keep it off the nodes)", paths.key.display());
            Ok(ExitCode::SUCCESS)
        }
        Command::Cert { command: CertCommand::Issue { node, region, ca_dir, out } } => {
            let out = out.unwrap_or_else(|| ca_dir.clone());
            let paths = wedsync_transport::pki::issue_node_cert(&ca_dir, &node, &region, &out)?;
            println!("node certificate: {} (mesh.cert)", paths.cert.display());
            println!("node key:         {} (mesh.key)", paths.key.display());
            println!("fleet CA:         {} (mesh.ca_cert)", ca_dir.join("ca.pem").display());
            Ok(ExitCode::SUCCESS)
        }
        Command::Plugin { command } => plugin_command(command),
        Command::Sim {
            scenario,
            nodes,
            seed,
            virtual_time,
            speed,
            no_plugins,
            no_plots,
            fail_unless_won,
            out,
            min,
            max,
            provisioning_delay,
        } => {
            if wedsync_agent::fleet_sim::is_fleet_scenario(&scenario) {
                if min.is_some() || max.is_some() || provisioning_delay.is_some() {
                    anyhow::bail!(
                        "sim --scenario {scenario}: --min, --max and --provisioning-delay size the one pool of a \
                         trace (CSV); a fleet scenario sets each region's pool in its file"
                    );
                }
                let mesh = if virtual_time {
                    wedsync_agent::fleet_sim::MeshMode::Virtual
                } else {
                    wedsync_agent::fleet_sim::MeshMode::Quic { speed: speed.unwrap_or(DEFAULT_SIM_SPEED) }
                };
                let options = wedsync_agent::fleet_sim::FleetSimOptions {
                    scenario,
                    nodes,
                    seed,
                    out: out.clone(),
                    plugins: !no_plugins,
                    plots: !no_plots,
                    progress: true,
                    mesh,
                };
                let (result, verdict, _) = wedsync_agent::fleet_sim::run(&options)?;
                let plots: Vec<String> = if no_plots {
                    Vec::new()
                } else {
                    result
                        .regions
                        .iter()
                        .flat_map(|r| [format!("demand-{}", r.name), format!("latency-{}", r.name)])
                        .collect()
                };
                print!("{}", wedsync_sim::report::markdown(&result, &verdict, &plots));
                println!("\nreport: {} and {}", out.join("report.md").display(), out.join("report.json").display());
                if fail_unless_won && !verdict.won {
                    eprintln!("wedsync-agent sim: the engine did not win {}", result.scenario.name);
                    return Ok(ExitCode::from(3));
                }
                return Ok(ExitCode::SUCCESS);
            }
            if nodes.is_some() || speed.is_some() || virtual_time {
                anyhow::bail!(
                    "sim --scenario {scenario}: --nodes, --speed and --virtual shape a fleet; a trace (CSV) runs one \
                     pool"
                );
            }
            let options = wedsync_agent::sim::SimOptions { scenario, out, min, max, provisioning_delay };
            let report = wedsync_agent::sim::run(&options)?;
            print!("{}", wedsync_agent::sim::markdown(&report));
            println!(
                "\nreport: {} and {}",
                options.out.join("report.md").display(),
                options.out.join("report.json").display()
            );
            Ok(ExitCode::SUCCESS)
        }
        Command::Config { command: ConfigCommand::Check { file } } => match config::check_file(&file, None) {
            Ok(_) => {
                println!("{}: ok", file.display());
                Ok(ExitCode::SUCCESS)
            }
            Err(e) => {
                eprintln!("{}: {e}", file.display());
                Ok(ExitCode::FAILURE)
            }
        },
    }
}

fn run(config: Option<PathBuf>, log_format: Option<LogFormatArg>) -> anyhow::Result<ExitCode> {
    let (_, mut settings) = config::load_settings(&Sources::from_process(config))?;
    if let Some(format) = log_format {
        settings.log_format = match format {
            LogFormatArg::Text => LogFormat::Text,
            LogFormatArg::Json => LogFormat::Json,
        };
    }
    logging::init(settings.log_format, &settings.log_level)?;
    // Two workers: the agent must stay light on the hosts it protects.
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("wedsync-worker")
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(async {
        let mut signals = ShutdownSignals::install().context("cannot install signal handlers")?;
        let agent = RunningAgent::start(settings).await?;
        let signal = signals.recv().await;
        tracing::info!(signal, "stopping");
        let clean = agent.shutdown().await;
        tracing::info!(clean, "stopped");
        Ok(ExitCode::SUCCESS)
    })
}

fn signature_path(file: &std::path::Path) -> PathBuf {
    let mut sig = file.as_os_str().to_owned();
    sig.push(".sig");
    PathBuf::from(sig)
}

fn plugin_command(command: PluginCommand) -> anyhow::Result<ExitCode> {
    use wedsync_plugin_host::signing;
    match command {
        PluginCommand::Keygen { out } => {
            std::fs::create_dir_all(&out).with_context(|| format!("cannot create {}", out.display()))?;
            let (secret_path, public_path) = (out.join("plugin.key"), out.join("plugin.pub"));
            if secret_path.exists() {
                anyhow::bail!("{} exists; refusing to overwrite a signing key", secret_path.display());
            }
            let key = signing::generate_keypair()?;
            let mut options = std::fs::OpenOptions::new();
            options.write(true).create_new(true);
            #[cfg(unix)]
            std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
            let mut file =
                options.open(&secret_path).with_context(|| format!("cannot create {}", secret_path.display()))?;
            // The encodings are whole lines (newline included).
            std::io::Write::write_all(&mut file, signing::encode_secret_key(&key).as_bytes())
                .with_context(|| format!("cannot write {}", secret_path.display()))?;
            let public = signing::encode_public_key(&key.verifying_key());
            std::fs::write(&public_path, &public).with_context(|| format!("cannot write {}", public_path.display()))?;
            println!("secret key: {} (keep it off the agents)", secret_path.display());
            println!("public key: {} (key id {})", public_path.display(), signing::key_id(&key.verifying_key()));
            println!("trust it:   plugins.trusted_keys = [\"{}\"]", public.trim_end());
            Ok(ExitCode::SUCCESS)
        }
        PluginCommand::Sign { key, file } => {
            let text = std::fs::read_to_string(&key).with_context(|| format!("cannot read {}", key.display()))?;
            let secret = signing::decode_secret_key(&text).with_context(|| format!("{}", key.display()))?;
            let bytes = std::fs::read(&file).with_context(|| format!("cannot read {}", file.display()))?;
            let signature = signing::sign(&secret, &bytes);
            let sig_path = signature_path(&file);
            std::fs::write(&sig_path, format!("{}\n", signing::encode_signature(&signature)))
                .with_context(|| format!("cannot write {}", sig_path.display()))?;
            println!("{}: signed (sha256 {}) -> {}", file.display(), hex_digest(&bytes), sig_path.display());
            Ok(ExitCode::SUCCESS)
        }
        PluginCommand::Verify { key, sig, file } => {
            let text = std::fs::read_to_string(&key).with_context(|| format!("cannot read {}", key.display()))?;
            let public = signing::decode_public_key(&text).with_context(|| format!("{}", key.display()))?;
            let bytes = std::fs::read(&file).with_context(|| format!("cannot read {}", file.display()))?;
            let sig_path = sig.unwrap_or_else(|| signature_path(&file));
            let sig_bytes = std::fs::read(&sig_path).with_context(|| format!("cannot read {}", sig_path.display()))?;
            let verified = signing::decode_signature(&sig_bytes)
                .and_then(|signature| signing::verify(&[public], &bytes, &signature));
            match verified {
                Ok(_) => {
                    println!("{}: signature OK (key id {})", file.display(), signing::key_id(&public));
                    Ok(ExitCode::SUCCESS)
                }
                Err(e) => {
                    eprintln!("{}: signature does NOT verify: {e}", file.display());
                    Ok(ExitCode::FAILURE)
                }
            }
        }
        PluginCommand::Inspect { file } => {
            let bytes = std::fs::read(&file).with_context(|| format!("cannot read {}", file.display()))?;
            let inspection = wedsync_plugin_host::inspect(&bytes)?;
            let info = inspection.info.as_ref().map(|info| {
                serde_json::json!({
                    "name": info.name,
                    "version": info.version,
                    "description": info.description,
                    "hooks": {
                        "decide": info.hooks.contains(wedsync_plugin_host::policy::Hooks::DECIDE),
                        "failover": info.hooks.contains(wedsync_plugin_host::policy::Hooks::FAILOVER),
                    },
                })
            });
            let report = serde_json::json!({
                "file": file.display().to_string(),
                "size": inspection.size,
                "sha256": inspection.sha256,
                "world": match &inspection.world {
                    Ok(()) => "wedsync:policy/policy@0.1.0".to_owned(),
                    Err(why) => format!("does not fit wedsync:policy/policy@0.1.0: {why}"),
                },
                "plugin": info,
                "describe_error": inspection.describe_error,
                "imports": inspection.imports,
                "forbidden_imports": inspection.forbidden_imports,
                "exports": inspection.exports,
            });
            println!("{}", serde_json::to_string_pretty(&report)?);
            let fits = inspection.world.is_ok() && inspection.forbidden_imports.is_empty();
            Ok(if fits { ExitCode::SUCCESS } else { ExitCode::FAILURE })
        }
    }
}

fn hex_digest(bytes: &[u8]) -> String {
    hex::encode(wedsync_plugin_host::signing::sha256(bytes))
}

//! `wedsync-agent`: the WedSync Edge agent.
#![forbid(unsafe_code)]

use anyhow::Context;
use clap::{Parser, Subcommand, ValueEnum};
use std::path::PathBuf;
use std::process::ExitCode;
use wedsync_agent::agent::{RunningAgent, ShutdownSignals};
use wedsync_agent::configuration::{self, Sources};
use wedsync_agent::logging;
use wedsync_core::config::LogFormat;

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
            let raw = configuration::load(&Sources::from_process(config))?;
            print!("{}", configuration::to_toml(&raw).context("cannot render the configuration")?);
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
                    let (_, settings) = configuration::load_settings(&Sources::from_process(config))?;
                    configuration::audit_config(&settings)
                        .context("the audit trail is disabled (audit.enabled = false)")?
                        .path
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
        Command::Config { command: ConfigCommand::Check { file } } => match configuration::check_file(&file, None) {
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
    let (_, mut settings) = configuration::load_settings(&Sources::from_process(config))?;
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

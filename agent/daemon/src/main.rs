//! `wedsync-agent`: the WedSync Edge agent. This file parses the command line and hands each
//! command to the library (`wedsync_agent`), which does the work.
#![forbid(unsafe_code)]

use clap::{Parser, Subcommand, ValueEnum};
use std::path::PathBuf;
use std::process::ExitCode;
use wedsync_agent::config::{self, LogFormat};
use wedsync_agent::{agent, audit, pki, plugins, sim};

#[derive(Debug, Parser)]
#[command(
    name = "wedsync-agent",
    version,
    about = "WedSync Edge agent: sub-second metrics, scaling decisions with WASM policy plugins, a QUIC fleet mesh"
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
    /// Alert rules.
    Alerts {
        #[command(subcommand)]
        command: AlertsCommand,
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
    /// Internal: compiles one plugin component, read on stdin, into the compiled cache. `run`
    /// starts it as a short-lived child process of itself, so compiling leaves no memory
    /// behind in the agent.
    #[command(name = wedsync_agent::plugins::compiler::SUBCOMMAND, hide = true)]
    CompilePlugin {
        /// The compiled cache's directory.
        #[arg(long, value_name = "DIR")]
        cache_dir: PathBuf,
        /// plugins.memory_limit, bytes (the engine depends on it).
        #[arg(long, value_name = "BYTES")]
        memory_limit: usize,
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
enum AlertsCommand {
    /// Print the built-in alert rules as Prometheus alerting rules over the agent's own metrics
    /// (for teams that alert from Prometheus), with the configured `for` durations and rules.
    Rules {
        /// Config file, layered as `run --config` would.
        #[arg(long, value_name = "FILE")]
        config: Option<PathBuf>,
    },
}

#[derive(Debug, Subcommand)]
enum AuditCommand {
    /// Verify the hash chain of an audit log and its rotated files, and its signed checkpoints;
    /// says where it breaks.
    Verify {
        /// The current log file (rotated files beside it are found). Default: the configured one.
        file: Option<PathBuf>,
        /// Config file used to find the default log (and the signing key, checkpoint_every).
        #[arg(long, value_name = "FILE")]
        config: Option<PathBuf>,
        /// The trusted public key (from `audit keygen`): checkpoints must be signed by it.
        /// Default: the public half of the configured audit.signing_key, when readable.
        #[arg(long, value_name = "FILE")]
        public_key: Option<PathBuf>,
        /// With a trusted key, the most entries in a row without a checkpoint (0: no limit).
        /// Default: the configured audit.checkpoint_every.
        #[arg(long, value_name = "N")]
        max_unsigned: Option<u64>,
        /// A checkpoint shipped off the host (the JSON body the agent POSTed, or the checkpoint
        /// alone): the chain must hold the entry it signed, with that hash.
        #[arg(long, value_name = "FILE")]
        checkpoint: Option<PathBuf>,
    },
    /// Make a checkpoint signing key: FILE (secret, mode 0600; keep it outside the state
    /// directory) and FILE.pub (for `audit verify --public-key`). Refuses to overwrite.
    Keygen {
        /// The secret key file to write.
        #[arg(long, value_name = "FILE")]
        out: PathBuf,
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
    Ok(match cli.command {
        Command::Run { config, log_format } => {
            let log_format = log_format.map(|format| match format {
                LogFormatArg::Text => LogFormat::Text,
                LogFormatArg::Json => LogFormat::Json,
            });
            agent::run(config, log_format)?;
            ExitCode::SUCCESS
        }
        Command::Config { command: ConfigCommand::Print { config } } => config::print(config)?,
        Command::Config { command: ConfigCommand::Check { file } } => config::check(&file),
        Command::Audit { command: AuditCommand::Verify { file, config, public_key, max_unsigned, checkpoint } } => {
            audit::verify(&audit::VerifyArgs { file, config, public_key, max_unsigned, checkpoint })?
        }
        Command::Audit { command: AuditCommand::Keygen { out } } => audit::keygen(&out)?,
        Command::Alerts { command: AlertsCommand::Rules { config } } => wedsync_agent::alerts::print_rules(config)?,
        Command::Ca { command: CaCommand::Init { dir } } => pki::ca_init(&dir)?,
        Command::Cert { command: CertCommand::Issue { node, region, ca_dir, out } } => {
            pki::cert_issue(&node, &region, &ca_dir, out.as_deref())?
        }
        Command::Plugin { command } => match command {
            PluginCommand::Keygen { out } => plugins::tools::keygen(&out)?,
            PluginCommand::Sign { key, file } => plugins::tools::sign(&key, &file)?,
            PluginCommand::Verify { key, sig, file } => plugins::tools::verify(&key, sig.as_deref(), &file)?,
            PluginCommand::Inspect { file } => plugins::tools::inspect(&file)?,
        },
        Command::CompilePlugin { cache_dir, memory_limit } => plugins::compiler::child_main(&cache_dir, memory_limit),
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
        } => sim::SimCommand {
            scenario,
            nodes,
            seed,
            virtual_time,
            speed,
            plugins: !no_plugins,
            plots: !no_plots,
            fail_unless_won,
            out,
            min,
            max,
            provisioning_delay,
        }
        .run()?,
    })
}

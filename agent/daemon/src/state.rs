//! What the API and the agent's tasks share: settings, handles and snapshots, never a state
//! machine itself (each has one owner; see [`crate::engine`] and [`crate::fleet`]).

use crate::actuators::Actuators;
use crate::audit::AuditHandle;
use crate::calendar::StateDb;
use crate::clock::Clock;
use crate::config::Settings;
use crate::decisions::DecisionLog;
use crate::engine::EngineHandle;
use crate::store::Store;
use crate::telemetry::{HostView, Telemetry};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, RwLock};

/// State shared by the API and the agent's tasks.
#[derive(Debug)]
pub struct AgentState {
    /// The validated configuration.
    pub settings: Settings,
    /// The agent's monotonic clock.
    pub clock: Clock,
    /// The metric store.
    pub store: Arc<Store>,
    /// Latest host and process samples.
    pub host: Arc<RwLock<HostView>>,
    /// Metrics registry and counters.
    pub telemetry: Telemetry,
    /// Where the API actually listens.
    pub api_addr: SocketAddr,
    /// Where StatsD actually listens, when enabled.
    pub statsd_addr: Option<SocketAddr>,
    /// The bound StatsD demand address (`statsd.demand_listen`), when configured.
    pub statsd_demand_addr: Option<SocketAddr>,
    /// The decision engine: its latest view, and commands to the decision thread that owns it.
    pub engine: EngineHandle,
    /// Decisions taken.
    pub decisions: Arc<Mutex<DecisionLog>>,
    /// The embedded database (wedding calendar).
    pub db: Arc<StateDb>,
    /// The audit trail, when enabled.
    pub audit: Option<AuditHandle>,
    /// The exec and webhook actuators.
    pub actuators: Arc<Actuators>,
    /// The fleet mesh, when enabled.
    pub fleet: Option<Arc<crate::fleet::FleetHandle>>,
    /// What `/v1/plugins` serves, when plugins are enabled.
    pub plugins: Option<Arc<RwLock<crate::plugins::PluginsSnapshot>>>,
    /// Asks for a plugin directory reload, when plugins are enabled with a `plugins.dir`.
    pub plugin_reload: Option<crate::plugins::reload::ReloadHandle>,
    /// API calls refused for their token, by reason (`wedsync_api_auth_failures_total`).
    pub api_auth_failures:
        prometheus_client::metrics::family::Family<Vec<(String, String)>, prometheus_client::metrics::counter::Counter>,
    /// Refused calls logged, at most one a second.
    pub api_auth_log: Mutex<crate::logging::RateLimiter>,
    /// The alerts, as the decision thread published them last.
    pub alerts: Arc<RwLock<crate::alerts::AlertsView>>,
}

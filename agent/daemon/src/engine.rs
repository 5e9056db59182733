//! How the rest of the agent reaches the decision engine, which one thread owns (the decision
//! thread, `decisions::run`), as quinn's driver owns a `quinn-proto` connection.
//!
//! * Changes go in as [`EngineCommand`]s over a bounded channel ([`EngineHandle::try_send`],
//!   [`EngineHandle::send`]); the decision thread takes them as they come, between rounds, and
//!   answers those that ask (a wedding upsert) on a oneshot channel.
//! * Reads come from an [`EngineView`], a snapshot the decision thread publishes after every
//!   round and every calendar change ([`EngineHandle::view`]): no reader ever locks the engine,
//!   so neither the API, the mesh task nor `/metrics` can delay a round, and a round never waits
//!   for them.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use std::sync::Arc;
use std::sync::mpsc::{Receiver, SyncSender, TrySendError};
use std::time::{Duration, Instant};
use tokio::sync::{oneshot, watch};
use wedsync_core::Timestamp;
use wedsync_core::engine::pool::{Wedding, WeddingError};
use wedsync_core::engine::{Engine, EngineSettings, PoolStatus, RoundCounts};
use wedsync_mesh::FailoverShare;

/// Commands the decision thread holds at most before a sender is told to wait: far more than
/// the API and the mesh send between two rounds.
pub const COMMAND_QUEUE: usize = 256;

/// A change for the engine, handled by the decision thread between rounds.
#[derive(Debug)]
pub enum EngineCommand {
    /// Adds or replaces a wedding (already validated and stored); the answer says whether the
    /// engine took it.
    UpsertWedding {
        /// The wedding.
        wedding: Wedding,
        /// Where the outcome goes.
        reply: oneshot::Sender<Result<(), WeddingError>>,
    },
    /// Removes a wedding; the answer says whether the engine had it.
    RemoveWedding {
        /// The wedding's id.
        id: String,
        /// Where the outcome goes.
        reply: oneshot::Sender<bool>,
    },
    /// A pool's real size, as its actuator observed it (the `exec` actuator's `observe` command,
    /// a webhook's answer) at `at`.
    PoolSize {
        /// The pool's name.
        pool: String,
        /// Units running.
        units: u32,
        /// When it was observed (the agent's clock).
        at: Timestamp,
    },
    /// Acknowledges a firing alert (the alerts live on the decision thread): it escalates no
    /// further. The answer is the alert, or `None` when none with that fingerprint fires.
    AckAlert {
        /// The alert's fingerprint (hex).
        fingerprint: String,
        /// Who acknowledged it (the token's holder).
        by: String,
        /// Where the outcome goes.
        reply: oneshot::Sender<Option<wedsync_core::alerts::Alert>>,
    },
    /// This node's shares of failed regions' load, as its mesh computed them at `at`.
    Failover {
        /// When the mesh computed them (the agent's clock).
        at: Timestamp,
        /// The shares, by pool name.
        shares: Vec<FailoverShare>,
    },
}

impl EngineCommand {
    /// The command's name, for metrics and logs.
    pub fn name(&self) -> &'static str {
        match self {
            EngineCommand::UpsertWedding { .. } => "upsert_wedding",
            EngineCommand::RemoveWedding { .. } => "remove_wedding",
            EngineCommand::AckAlert { .. } => "ack_alert",
            EngineCommand::Failover { .. } => "failover",
            EngineCommand::PoolSize { .. } => "pool_size",
        }
    }
}

/// What the engine believed at its latest round (or calendar change).
#[derive(Debug, Clone)]
pub struct EngineView {
    /// The engine's settings (fixed for the agent's life).
    pub settings: Arc<EngineSettings>,
    /// Each pool, in configuration order.
    pub pools: Vec<PoolStatus>,
    /// Each pool's forecast peak demand over the forecast horizon, when its profile knows it
    /// (refreshed about once a second).
    pub forecasts: Vec<Option<f64>>,
    /// The wedding calendar, ordered by id (shared until the calendar changes).
    pub weddings: Arc<Vec<Wedding>>,
    /// Rounds run, late and skipped.
    pub rounds: RoundCounts,
}

impl EngineView {
    /// The first view of `engine`, before its first round.
    pub fn first(engine: &Engine) -> EngineView {
        EngineView {
            settings: Arc::new(engine.settings().clone()),
            pools: engine.status(),
            forecasts: vec![None; engine.pools().count()],
            weddings: Arc::new(engine.weddings().cloned().collect()),
            rounds: engine.rounds(),
        }
    }

    /// The view of `engine` now, sharing what did not change with this one: the settings, the
    /// forecasts unless new ones are given, the calendar unless `calendar_changed`.
    pub fn next(&self, engine: &Engine, forecasts: Option<Vec<Option<f64>>>, calendar_changed: bool) -> EngineView {
        EngineView {
            settings: self.settings.clone(),
            pools: engine.status(),
            forecasts: forecasts.unwrap_or_else(|| self.forecasts.clone()),
            weddings: if calendar_changed {
                Arc::new(engine.weddings().cloned().collect())
            } else {
                self.weddings.clone()
            },
            rounds: engine.rounds(),
        }
    }

    /// The index of the pool named `name`.
    pub fn pool_index(&self, name: &str) -> Option<usize> {
        self.pools.iter().position(|p| p.spec.name == name)
    }

    /// Whether `wedding` protects its region at `wall_ms` (the engine's own rule).
    pub fn is_active(&self, wedding: &Wedding, wall_ms: i64) -> bool {
        wedding.is_active(wall_ms, self.settings.wedding_lead, self.settings.wedding_trail)
    }

    /// Weddings active in `region` at `wall_ms` ([`Engine::active_weddings`] on the snapshot).
    pub fn active_weddings(&self, region: &str, wall_ms: i64) -> usize {
        self.weddings.iter().filter(|w| w.region == region && self.is_active(w, wall_ms)).count()
    }
}

/// Label set naming an engine command.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CommandLabel {
    /// The command ([`EngineCommand::name`]).
    pub command: &'static str,
}

/// Why a command did not reach the engine.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum CommandError {
    /// The queue stayed full (the decision thread is behind).
    #[error("the decision engine is busy: its command queue ({COMMAND_QUEUE}) stayed full")]
    Busy,
    /// The decision thread has stopped.
    #[error("the decision engine has stopped")]
    Stopped,
    /// The engine did not answer in time.
    #[error("the decision engine did not answer within {0:?}")]
    NoAnswer(Duration),
}

/// The API's and the mesh's way to the engine: cheap to clone.
#[derive(Debug, Clone)]
pub struct EngineHandle {
    commands: SyncSender<EngineCommand>,
    view: watch::Receiver<Arc<EngineView>>,
    refused: Family<CommandLabel, Counter>,
}

/// The decision thread's ends of the engine's channels.
#[derive(Debug)]
pub struct EngineInbox {
    /// Commands, in the order sent.
    pub commands: Receiver<EngineCommand>,
    /// Where the views go.
    pub views: watch::Sender<Arc<EngineView>>,
}

impl EngineInbox {
    /// The view published last.
    pub fn latest(&self) -> Arc<EngineView> {
        self.views.borrow().clone()
    }

    /// Publishes a new view: readers see it at their next look.
    pub fn publish(&self, view: EngineView) {
        self.views.send_replace(Arc::new(view));
    }
}

/// The channels between the decision thread and everyone else, starting from `engine`'s view.
/// `refused` counts commands that could not be queued, by command.
pub fn channel(engine: &Engine, refused: Family<CommandLabel, Counter>) -> (EngineHandle, EngineInbox) {
    let (tx, rx) = std::sync::mpsc::sync_channel(COMMAND_QUEUE);
    let (views, view) = watch::channel(Arc::new(EngineView::first(engine)));
    (EngineHandle { commands: tx, view, refused }, EngineInbox { commands: rx, views })
}

impl EngineHandle {
    /// The latest view (a cheap shared copy; hold it as long as you like).
    pub fn view(&self) -> Arc<EngineView> {
        self.view.borrow().clone()
    }

    /// Queues `command` if there is room now; a refusal is counted.
    pub fn try_send(&self, command: EngineCommand) -> Result<(), CommandError> {
        let name = command.name();
        match self.commands.try_send(command) {
            Ok(()) => Ok(()),
            Err(TrySendError::Full(_)) => {
                self.refused.get_or_create(&CommandLabel { command: name }).inc();
                Err(CommandError::Busy)
            }
            Err(TrySendError::Disconnected(_)) => Err(CommandError::Stopped),
        }
    }

    /// Queues `command`, waiting (without blocking the runtime) at most `patience` for room;
    /// a refusal is counted.
    pub async fn send(&self, command: EngineCommand, patience: Duration) -> Result<(), CommandError> {
        let name = command.name();
        let deadline = Instant::now() + patience;
        let mut command = command;
        loop {
            match self.commands.try_send(command) {
                Ok(()) => return Ok(()),
                Err(TrySendError::Disconnected(_)) => return Err(CommandError::Stopped),
                Err(TrySendError::Full(back)) if Instant::now() < deadline => {
                    command = back;
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
                Err(TrySendError::Full(_)) => {
                    self.refused.get_or_create(&CommandLabel { command: name }).inc();
                    return Err(CommandError::Busy);
                }
            }
        }
    }

    /// Sends the command `make` builds around a reply channel and waits for the answer, at most
    /// `patience` for room in the queue and again for the answer.
    pub async fn ask<T>(
        &self,
        make: impl FnOnce(oneshot::Sender<T>) -> EngineCommand,
        patience: Duration,
    ) -> Result<T, CommandError> {
        let (reply, answer) = oneshot::channel();
        self.send(make(reply), patience).await?;
        match tokio::time::timeout(patience, answer).await {
            Ok(Ok(answer)) => Ok(answer),
            Ok(Err(_)) => Err(CommandError::Stopped),
            Err(_) => Err(CommandError::NoAnswer(patience)),
        }
    }
}
